"""Evaluate predicted label maps against reference label maps.

PRED and GT are folders of label files paired by case name (CASE.nii.gz in both). Per case and
label: Dice, IoU, precision, recall, HD95 and ASSD (mm) and normalized surface Dice at
--tolerance mm, with distances from the reference files' voxel spacing (pictures: 1 unit per
pixel). Writes summary.json (per case; mean, median, std per label; foreground mean) and
per_case.csv into PRED (or -o). Both masks empty gives NaN Dice (nnU-Net; left out of the means)
unless --empty-as-perfect; one empty mask gives Dice 0, NSD 0, HD95 inf. See docs/evaluation.md.

Labels come from -l, else from --dataset-json, else from GT/../dataset.json (GT = RAW/labelsTr).

examples:
  unetkit evaluate pred raw/Hippocampus/labelsTr
  unetkit evaluate pred gt -l 1 2 --tolerance 2
  unetkit evaluate pred raw/BraTS/labelsTr -l 1,2,3 2,3 3 --tolerance 1,2,3:1 2,3:2 3:2
  unetkit evaluate pred gt -l 1 --no-surface -np 8 -o results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred", help="folder of predicted label maps (CASE.ext)")
    parser.add_argument("gt", help="folder of reference label maps (e.g. RAW/labelsTr)")
    parser.add_argument("-l", "--labels", nargs="+", default=None,
                        help="labels to evaluate; a comma-separated list is a region (1,2,3 = union of 1, 2, 3)")
    parser.add_argument("--dataset-json", default=None, help="take labels and the ignore label from this dataset.json")
    parser.add_argument("--ignore-label", type=int, default=None, help="reference value excluded from evaluation")
    parser.add_argument("--tolerance", nargs="+", default=["1.0"],
                        help="NSD tolerance in mm: one value, or LABEL:MM per label (default 1.0)")
    parser.add_argument("--file-ending", default=None, help="label file ending (default: found in GT)")
    parser.add_argument("-o", "--output", default=None, help="folder for summary.json and per_case.csv (default PRED)")
    parser.add_argument("-np", "--num-processes", type=int, default=None, help="worker processes (default: CPUs, <= 8)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate the predictions present even if some reference cases have none")
    parser.add_argument("--empty-as-perfect", action="store_true",
                        help="count both-empty cases as Dice/IoU/NSD 1 and HD95 0 instead of NaN (nnU-Net)")
    parser.add_argument("--no-surface", dest="surface", action="store_false",
                        help="skip HD95, ASSD and NSD (distance transforms are the slow part)")
    parser.add_argument("--quiet", action="store_true", help="print only the path of summary.json")


def parse_tolerance(values: list[str]) -> float | dict[str, float]:
    """``["2"]`` -> 2.0; ``["1:1", "2:0.5"]`` -> per-label mapping keyed by label key."""
    from unetkit.evaluation.metrics import label_key, parse_label_key

    if len(values) == 1 and ":" not in values[0]:
        return float(values[0])
    result: dict[str, float] = {}
    for item in values:
        if ":" not in item:
            raise ValueError(f"--tolerance {item!r}: with several values each must be LABEL:MM")
        key, mm = item.rsplit(":", 1)
        result[label_key(parse_label_key(key))] = float(mm)
    return result


def _labels(args: argparse.Namespace):
    from unetkit.evaluation.metrics import parse_label_key

    if args.labels:
        return [parse_label_key(v) for v in args.labels]
    candidate = Path(args.dataset_json) if args.dataset_json else Path(args.gt).resolve().parent / "dataset.json"
    if candidate.is_file():
        return json.loads(candidate.read_text(encoding="utf-8"))["labels"]
    raise ValueError(f"no labels given: pass -l 1 2 ... or --dataset-json (looked for {candidate})")


def run(args: argparse.Namespace) -> int:
    from unetkit.evaluation.evaluate import evaluate_folders

    try:
        labels = _labels(args)
        tolerance = parse_tolerance(args.tolerance)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        if not args.quiet and sys.stderr.isatty():
            print(f"\revaluated {done}/{total} cases", end="" if done < total else "\n", file=sys.stderr)

    try:
        summary = evaluate_folders(args.pred, args.gt, labels, tolerance=tolerance, ignore_label=args.ignore_label,
                                   file_ending=args.file_ending, num_processes=args.num_processes,
                                   output_dir=args.output or args.pred, allow_missing=args.allow_missing,
                                   empty_value=1.0 if args.empty_as_perfect else math.nan, surface=args.surface,
                                   progress=progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output or args.pred)
    if args.quiet:
        print(out / "summary.json")
        return 0
    metrics = ["Dice", "IoU", "Precision", "Recall"] + (["HD95", "ASSD", "NSD"] if args.surface else [])
    print(f"{summary['num_cases']} cases; mean over cases (NaN cases left out):")
    print(f"  {'label':<20}" + "".join(f"{m:>10}" for m in metrics))
    for key in summary["labels"]:
        name = summary["label_names"].get(key, key)
        title = key if name == key else f"{key} {name}"
        print(f"  {title[:20]:<20}" + "".join(f"{summary['mean'][key][m]:>10.4f}" for m in metrics))
    print(f"  {'foreground mean':<20}" + "".join(f"{summary['foreground_mean'][m]:>10.4f}" for m in metrics))
    if summary["missing_predictions"]:
        print(f"  {len(summary['missing_predictions'])} reference case(s) without a prediction were not evaluated")
    print(f"wrote {out / 'summary.json'} and {out / 'per_case.csv'}")
    return 0
