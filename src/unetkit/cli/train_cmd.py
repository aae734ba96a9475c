"""Train a configuration on one cross-validation fold (or on all cases with -f all).

Reads WORKDIR/NAME/plans.json and the preprocessed cache, writes
WORKDIR/NAME/models/CONFIG__ARCH/fold_F/ (checkpoints, train.log, progress.json, progress.png,
training_config.json), then predicts the fold's validation cases in full into fold_F/validation/
(label maps, probabilities, summary.json; what `unetkit select` reads). Defaults are nnU-Net v2's (1000 epochs of 250 iterations, SGD lr 1e-2,
Nesterov momentum 0.99, polynomial decay); every value can be set in the plan's configuration
entry ("training": {...}) and on the command line, which wins.

examples:
  unetkit train Hippocampus -c 3d_fullres -f 0
  unetkit train Hippocampus -c 3d_fullres -f 0 --epochs 50 --iterations-per-epoch 100
  unetkit train DRIVE -c 2d -f all --device cpu --num-workers 2
  unetkit train Hippocampus -c 3d_fullres -f 0 --resume          # continue an interrupted run
  unetkit train DRIVE -c 2d -f 0 --pretrained work/Kvasir/models/2d__plain_unet --freeze-encoder-iterations 50 --lr 1e-3
  torchrun --nproc_per_node 2 -m unetkit.cli.train_cmd Hippocampus -c 3d_fullres -f 0   # DDP
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit train`` (no torch import here: ``--help`` must answer at once)."""
    parser.add_argument("dataset", help="dataset name (or raw dataset folder) whose work folder holds plans.json")
    parser.add_argument("-c", "--configuration", required=True, help="configuration in plans.json (2d, 3d_fullres, ...)")
    parser.add_argument("-f", "--fold", required=True, help="cross-validation fold (0-4) or 'all'")
    parser.add_argument("--workdir", default=None, help="work root (default ./unetkit_work)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from checkpoint_latest (or extend a finished run with a larger --epochs)")
    parser.add_argument("--on-changed-data", choices=["stop", "retrain", "reuse"], default="stop",
                        help="with --resume, when the checkpoint was trained on cases whose raw files changed "
                             "since: stop with a message naming them (default), retrain the fold from scratch, "
                             "or reuse the old model anyway")
    g = parser.add_argument_group("schedule (default: the plan's 'training' entry, else nnU-Net's values)")
    g.add_argument("--epochs", type=int, help="number of epochs (nnU-Net: 1000)")
    g.add_argument("--iterations-per-epoch", type=int, help="training iterations per epoch (250)")
    g.add_argument("--val-iterations", type=int, help="validation batches per epoch for the pseudo-Dice (50)")
    g.add_argument("--batch-size", type=int, help="global batch size, split across processes (the plan's)")
    g.add_argument("--lr", type=float, help="initial learning rate (1e-2)")
    g.add_argument("--arch", help="model registry name (default: the plan's); the plan's topology is kept")
    g.add_argument("--seed", type=int, help="seed of the network initialisation and of every batch")
    g.add_argument("--init-candidates", type=int, metavar="K",
                   help="draw K networks and train the one with the lowest loss on the first training batches "
                        "(4; 1: one draw, as nnU-Net; docs/training.md)")
    p = parser.add_argument_group("fine-tuning from a pretrained model (docs/training.md)")
    p.add_argument("--pretrained", metavar="MODEL_DIR_OR_CHECKPOINT",
                   help="start from this unetkit model: every weight whose name and shape match is loaded "
                        "(a model folder, a fold folder or a .safetensors checkpoint); not re-applied on --resume")
    p.add_argument("--pretrained-channels", choices=["average", "repeat"],
                   help="adapt a pretrained first convolution made for another number of input channels")
    p.add_argument("--freeze-encoder-iterations", type=int, metavar="N",
                   help="train with the encoder frozen for the first N iterations, then everything (0)")
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
    v = parser.add_argument_group("validation after training (nnU-Net's final validation)")
    v.add_argument("--no-validation", action="store_true",
                   help="do not predict the fold's validation cases into fold_F/validation after training")
    v.add_argument("--no-validation-probabilities", action="store_true",
                   help="write validation label maps only, no CASE.npz (saves disk; `select` then cannot ensemble)")
    v.add_argument("--no-validation-mirroring", action="store_true",
                   help="predict the validation cases without test-time mirroring (faster, slightly worse)")
    v.add_argument("--validate-only", action="store_true",
                   help="skip training; (re)predict the validation cases of an already trained fold")
    parser.add_argument("--quiet", action="store_true", help="log to train.log only, print nothing per epoch")


OVERRIDE_KEYS = ("epochs", "iterations_per_epoch", "val_iterations", "batch_size", "lr", "arch", "seed",
                 "init_candidates", "device",
                 "compile", "amp", "channels_last", "num_workers", "deterministic", "pretrained",
                 "pretrained_channels", "freeze_encoder_iterations")


def run(args: argparse.Namespace) -> int:
    """Parse the fold, gather the overrides the user gave and train."""
    from unetkit.training.checkpoint import CheckpointError
    from unetkit.training.config import ConfigError
    from unetkit.training.splits import SplitError, parse_fold
    from unetkit.training.trainer import TrainingError, train

    overrides = {k: getattr(args, k) for k in OVERRIDE_KEYS if getattr(args, k, None) is not None}
    if "pretrained" in overrides:  # recorded as an absolute path: the run may be resumed from elsewhere
        overrides["pretrained"] = str(Path(overrides["pretrained"]).expanduser().resolve())
    try:
        fold = parse_fold(args.fold)
        if args.validate_only:
            fold_dir = validation_fold_dir(args, fold, overrides)
        else:
            result = train(args.workdir, args.dataset, args.configuration, fold, overrides, resume=args.resume,
                           echo=not args.quiet, on_changed_data=args.on_changed_data)
            fold_dir = result.output_dir
            if not args.quiet:
                print(f"done: {result.output_dir}")
    except (ConfigError, SplitError, TrainingError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Under torchrun every process gets here; one predicts (the others' copies are identical).
    if args.no_validation or str(fold) == "all" or os.environ.get("RANK", "0") != "0":
        return 0
    return validate(fold_dir, args)


def validation_fold_dir(args: argparse.Namespace, fold, overrides: dict) -> Path:
    """The fold folder ``--validate-only`` works on (the one training would have written)."""
    from unetkit.training.trainer import prepare_run

    return prepare_run(args.workdir, args.dataset, args.configuration, fold, overrides, write=False).output_dir


def validate(fold_dir: Path, args: argparse.Namespace) -> int:
    """Predict and evaluate the fold's validation cases (nnU-Net's final validation)."""
    from unetkit.inference.validation import predict_validation

    say = (lambda message: None) if args.quiet else print
    result = predict_validation(fold_dir, device=args.device or "auto", mirror=not args.no_validation_mirroring,
                                save_probabilities=not args.no_validation_probabilities, log=say)
    say(f"validation: {len(result.cases)} case(s) in {result.seconds:.1f}s -> {result.folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m unetkit.cli.train_cmd`` (what torchrun launches)."""
    from unetkit.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
