"""Choose the best configuration (or pair of configurations) on cross-validation.

Evaluates every trained models/CONFIG__ARCH/ whose folds all hold cross-validation predictions
(fold_F/validation/CASE.ext, optional CASE.npz probabilities) and every pairwise ensemble of
configurations with saved probabilities, ranks them by mean foreground Dice (nnU-Net's
find_best_configuration), decides connected-component postprocessing for the best, and writes
WORKDIR/NAME/best_configuration.json with the command that predicts with it.

DATASET is the raw dataset folder (its labelsTr are the references), a work folder WORKDIR/NAME,
or a dataset name (with --workdir); give --gt when the references are not found.

examples:
  unetkit select raw/Hippocampus
  unetkit select Hippocampus --workdir work --gt raw/Hippocampus/labelsTr
  unetkit select unetkit_work/Hippocampus --gt raw/Hippocampus/labelsTr --no-ensembles
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="raw dataset folder, work folder WORKDIR/NAME, or dataset name")
    parser.add_argument("--workdir", default=None, help="work root (default ./unetkit_work)")
    parser.add_argument("--gt", default=None, help="reference label maps (default: DATASET/labelsTr)")
    parser.add_argument("--file-ending", default=None, help="label file ending (default: found in the references)")
    parser.add_argument("-np", "--num-processes", type=int, default=None, help="worker processes (default: CPUs, <= 8)")
    parser.add_argument("-f", "--folds", nargs="+", type=int, default=None,
                        help="use only these folds' validation predictions (default: every fold of splits.json)")
    parser.add_argument("--no-ensembles", dest="ensembles", action="store_false", help="do not try ensembles")
    parser.add_argument("--no-postprocessing", dest="postprocessing", action="store_false",
                        help="do not decide postprocessing for the best candidate")
    parser.add_argument("--surface-metrics", action="store_true",
                        help="also compute HD95/ASSD/NSD in the cross-validation summaries (slower)")
    parser.add_argument("--quiet", action="store_true", help="print only the path of best_configuration.json")


def resolve_roots(dataset: str, workdir: str | None, gt: str | None) -> tuple[Path, Path | None]:
    """(work folder WORKDIR/NAME, reference folder or None) from the command's arguments."""
    from unetkit.utils.paths import WorkPaths

    path = Path(dataset)
    if (path / "dataset.json").is_file():  # a raw dataset
        return WorkPaths.for_dataset(path, workdir).root, Path(gt) if gt else path / "labelsTr"
    root = path if (path / "plans.json").is_file() else WorkPaths.for_dataset(dataset, workdir, name=path.name).root
    if gt:
        return root, Path(gt)
    return root, _raw_labels(root)


def _raw_labels(root: Path) -> Path | None:
    """RAW/labelsTr of the raw dataset plans.json was made from, when it is still there."""
    from unetkit.utils.atomic import read_json

    try:
        raw = read_json(root / "plans.json").get("raw_dataset")
    except (OSError, ValueError):
        return None
    return Path(raw) / "labelsTr" if raw and (Path(raw) / "labelsTr").is_dir() else None


def run(args: argparse.Namespace) -> int:
    from unetkit.evaluation.selection import SELECTION_FILE, select_best_configuration

    root, gt = resolve_roots(args.dataset, args.workdir, args.gt)
    if gt is None:
        print(f"error: no references for {root}: pass --gt RAW/labelsTr, or give the raw dataset folder as DATASET",
              file=sys.stderr)
        return 2

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    selection = select_best_configuration(root, gt, file_ending=args.file_ending, num_processes=args.num_processes,
                                          surface=args.surface_metrics, ensembles=args.ensembles,
                                          postprocessing=args.postprocessing, folds=args.folds, log=log)
    if args.quiet:
        print(root / SELECTION_FILE)
        return 0
    print(f"cross-validation on {selection['num_cases']} cases, mean foreground Dice:")
    for entry in selection["ranking"]:
        dice = entry["foreground_mean_dice"]
        print(f"  {'nan' if dice is None else f'{dice:.4f}':>8}  {entry['name']}")
    best = selection["best"]
    print(f"best: {best['name']}")
    if selection["postprocessing_file"]:
        after = best.get("foreground_mean_dice_postprocessed")
        print(f"postprocessing: {selection['postprocessing_file']} (mean foreground Dice after: "
              f"{'nan' if after is None else f'{after:.4f}'})")
    print(f"predict with:\n  {selection['inference_command']}")
    print(f"wrote {root / SELECTION_FILE}")
    return 0
