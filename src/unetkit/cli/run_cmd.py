"""Plan, preprocess, train, validate, predict and evaluate a raw dataset in one command.

Runs the stages in the data's order with sensible defaults and prints where each result is:
plans and cache, the trained fold(s) and their cross-validation predictions, the
postprocessing decided on them, the test predictions (RAW/imagesTs or -i) and their evaluation
(RAW/labelsTs or --gt). A rerun continues where it stopped: finished steps are reused.

The default schedule is nnU-Net's (1000 epochs x 250 iterations): give --epochs and
--iterations-per-epoch for a short run. Without a GPU, plans use the CPU budget preset.

examples:
  unetkit run raw/Hippocampus --epochs 10 --iterations-per-epoch 50
  unetkit run raw/DRIVE -c 2d --folds 0 1 2 3 4 --device cuda
  unetkit run raw/ISBI --epochs 5 -i new_images/ -o predictions/ --gt new_labels/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OVERRIDE_KEYS = ("epochs", "iterations_per_epoch", "val_iterations", "batch_size", "arch", "seed", "num_workers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="raw dataset folder (nnU-Net v2 layout; `unetkit import` makes one)")
    parser.add_argument("--workdir", default=None, help="work root (default ./unetkit_work)")
    parser.add_argument("-c", "--configuration", default=None,
                        help="plan configuration (default: 3d_fullres for volumes, 2d for pictures); "
                             "3d_cascade_fullres trains every 3d_lowres fold first")
    parser.add_argument("--folds", nargs="+", type=int, default=[0],
                        help="cross-validation folds to train (default 0; nnU-Net trains 0 1 2 3 4)")
    parser.add_argument("--memory-gb", type=float, default=None,
                        help="planning budget (default: 8 with a GPU, the CPU preset without)")
    t = parser.add_argument_group("training (default: nnU-Net's schedule, or the plan's 'training' entry)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--iterations-per-epoch", type=int)
    t.add_argument("--val-iterations", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--arch", help="model registry name (default: the plan's)")
    t.add_argument("--seed", type=int)
    t.add_argument("--num-workers", type=int, help="data-loading processes")
    p = parser.add_argument_group("prediction")
    p.add_argument("-i", "--input", default=None, help="images to predict (default RAW/imagesTs)")
    p.add_argument("-o", "--output", default=None, help="prediction folder (default WORK/NAME/predictions/CONFIG__ARCH)")
    p.add_argument("--gt", default=None, help="reference labels of the predicted images (default RAW/labelsTs)")
    p.add_argument("--no-mirror", dest="mirror", action="store_false", help="no test-time mirroring")
    p.add_argument("--no-validation", dest="validate", action="store_false",
                   help="skip the cross-validation predictions (and so the postprocessing)")
    parser.add_argument("--on-changed-data", choices=["stop", "retrain", "reuse"], default="stop",
                        help="when a trained fold was made from raw files that changed since: stop with a "
                             "message naming the cases (default), retrain it, or reuse it anyway")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("-np", "--num-processes", type=int, default=None, help="worker processes for data steps")


def run(args: argparse.Namespace) -> int:
    from unetkit.pipeline import run_pipeline

    raw = Path(args.dataset)
    if not (raw / "dataset.json").is_file():
        print(f"error: {raw}: no dataset.json; give a raw dataset folder (see `unetkit import --help`)",
              file=sys.stderr)
        return 2
    from unetkit.data.importing.records import partial_import_problem
    from unetkit.utils.atomic import read_json

    problem = partial_import_problem(read_json(raw / "dataset.json"))
    if problem:
        print(f"error: {raw}: {problem}", file=sys.stderr)
        return 2
    overrides = {k: getattr(args, k) for k in OVERRIDE_KEYS if getattr(args, k) is not None}
    from unetkit.training.trainer import TrainingError

    try:
        result = run_pipeline(raw, args.workdir, configuration=args.configuration, folds=args.folds,
                              overrides=overrides, device=args.device, memory_gb=args.memory_gb,
                              test_input=args.input, test_labels=args.gt, output=args.output, mirror=args.mirror,
                              validate=args.validate, num_processes=args.num_processes,
                              on_changed_data=args.on_changed_data, log=lambda m: print(m, flush=True))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\nwhere everything is:")
    print(f"  plans            {result.plans}")
    print(f"  trained model    {result.model_dir} (folds {', '.join(str(f) for f in args.folds)})")
    if result.postprocessing:
        print(f"  postprocessing   {result.postprocessing}")
    if result.predictions:
        print(f"  predictions      {result.predictions} ({result.num_predicted} cases)")
    if result.evaluation:
        print(f"  evaluation       {result.evaluation} and per_case.csv beside it")
    print(f"  predict more     unetkit predict -i IMAGES -o OUT -m {result.model_dir} -f "
          + " ".join(str(f) for f in args.folds))
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"  time             {timing}")
    return 0
