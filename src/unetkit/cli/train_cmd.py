"""Train a configuration on one cross-validation fold (or on all cases with -f all).

Reads WORKDIR/NAME/plans.json and the preprocessed cache, writes
WORKDIR/NAME/models/CONFIG__ARCH/fold_F/ (checkpoints, train.log, progress.json, progress.png,
training_config.json). Defaults are nnU-Net v2's (1000 epochs of 250 iterations, SGD lr 1e-2,
Nesterov momentum 0.99, polynomial decay); every value can be set in the plan's configuration
entry ("training": {...}) and on the command line, which wins.

examples:
  unetkit train Hippocampus -c 3d_fullres -f 0
  unetkit train Hippocampus -c 3d_fullres -f 0 --epochs 50 --iterations-per-epoch 100
  unetkit train DRIVE -c 2d -f all --device cpu --num-workers 2
  unetkit train Hippocampus -c 3d_fullres -f 0 --resume          # continue an interrupted run
  torchrun --nproc_per_node 2 -m unetkit.cli.train_cmd Hippocampus -c 3d_fullres -f 0   # DDP
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit train`` (no torch import here: ``--help`` must answer at once)."""
    parser.add_argument("dataset", help="dataset name (or raw dataset folder) whose work folder holds plans.json")
    parser.add_argument("-c", "--configuration", required=True, help="configuration in plans.json (2d, 3d_fullres, ...)")
    parser.add_argument("-f", "--fold", required=True, help="cross-validation fold (0-4) or 'all'")
    parser.add_argument("--workdir", default=None, help="work root (default ./unetkit_work)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from checkpoint_latest (or extend a finished run with a larger --epochs)")
    g = parser.add_argument_group("schedule (default: the plan's 'training' entry, else nnU-Net's values)")
    g.add_argument("--epochs", type=int, help="number of epochs (nnU-Net: 1000)")
    g.add_argument("--iterations-per-epoch", type=int, help="training iterations per epoch (250)")
    g.add_argument("--val-iterations", type=int, help="validation batches per epoch for the pseudo-Dice (50)")
    g.add_argument("--batch-size", type=int, help="global batch size, split across processes (the plan's)")
    g.add_argument("--lr", type=float, help="initial learning rate (1e-2)")
    g.add_argument("--arch", help="model registry name (default: the plan's); the plan's topology is kept")
    g.add_argument("--seed", type=int, help="seed of the network initialisation and of every batch")
    h = parser.add_argument_group("hardware")
    h.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train (auto: CUDA if available)")
    h.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile the network")
    h.add_argument("--amp", dest="amp", action="store_true", default=None, help="mixed precision on CUDA (default)")
    h.add_argument("--no-amp", dest="amp", action="store_false", help="train in float32 on CUDA")
    h.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="channels-last memory format (default: on the CPU only)")
    h.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep PyTorch's default memory format")
    h.add_argument("--num-workers", type=int, help="data-loading worker processes (0: in the training process)")
    h.add_argument("--deterministic", dest="deterministic", action="store_true", default=None,
                   help="deterministic kernels (slower); a resumed run then matches an uninterrupted one")
    parser.add_argument("--quiet", action="store_true", help="log to train.log only, print nothing per epoch")


OVERRIDE_KEYS = ("epochs", "iterations_per_epoch", "val_iterations", "batch_size", "lr", "arch", "seed", "device",
                 "compile", "amp", "channels_last", "num_workers", "deterministic")


def run(args: argparse.Namespace) -> int:
    """Parse the fold, gather the overrides the user gave and train."""
    from unetkit.training.checkpoint import CheckpointError
    from unetkit.training.config import ConfigError
    from unetkit.training.splits import SplitError, parse_fold
    from unetkit.training.trainer import TrainingError, train

    overrides = {k: getattr(args, k) for k in OVERRIDE_KEYS if getattr(args, k, None) is not None}
    try:
        fold = parse_fold(args.fold)
        result = train(args.workdir, args.dataset, args.configuration, fold, overrides, resume=args.resume,
                       echo=not args.quiet)
    except (ConfigError, SplitError, TrainingError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet and result is not None:
        print(f"done: {result.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m unetkit.cli.train_cmd`` (what torchrun launches)."""
    from unetkit.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
