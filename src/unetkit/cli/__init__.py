"""The ``unetkit`` command: a thin dispatcher over the stage packages.

Each subcommand lives in its own module here with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; the module must stay cheap to import (no
torch at import time) so that ``unetkit --help`` answers at once. All real work is done by
the stage packages, which the command modules import inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from unetkit import __version__

# (name, module, one-line help). Order is the order of the data's way.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "unetkit.cli.demo_cmd", "generate a small demo dataset and run the whole pipeline on it"),
    ("import", "unetkit.cli.import_cmd", "convert a folder of images and masks into a raw (nnU-Net v2 layout) dataset"),
    ("check", "unetkit.cli.check_cmd", "check a raw dataset and report every problem at once"),
    ("plan", "unetkit.cli.plan_cmd", "extract the dataset fingerprint and write plans.json"),
    ("preprocess", "unetkit.cli.preprocess_cmd", "crop, normalize and resample a dataset into the training cache"),
    ("train", "unetkit.cli.train_cmd", "train a configuration on one cross-validation fold"),
    ("models", "unetkit.cli.models_cmd", "list the registered models with parameters and FLOPs"),
    ("profile", "unetkit.cli.profile_cmd", "parameters, FLOPs, latency and peak memory of one model"),
    ("predict", "unetkit.cli.predict_cmd", "predict new images with trained models (folds, ensembles)"),
    ("export", "unetkit.cli.export_cmd", "write a trained model as one shareable archive (a model package)"),
    ("install", "unetkit.cli.install_cmd", "check a model package and install it into a work folder"),
    ("evaluate", "unetkit.cli.evaluate_cmd", "evaluate predictions against references (Dice, HD95, NSD, ...)"),
    ("select", "unetkit.cli.select_cmd", "rank trained configurations and ensembles on cross-validation"),
    ("run", "unetkit.cli.run_cmd", "plan, preprocess, train, predict and evaluate a dataset in one go"),
    ("bench", "unetkit.cli.bench_cmd", "benchmark models x datasets from a suite file (local processes or Ray)"),
    ("report", "unetkit.cli.report_cmd", "write the HTML/Markdown/CSV report of a benchmark results folder"),
    ("advise", "unetkit.cli.advise_cmd", "rank benchmarked models for a new dataset under cost limits"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unetkit",
        description="Self-configuring U-Net segmentation for 2D and 3D images. "
                    "Run `unetkit COMMAND --help` for the options of each command.")
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the command exists but one of its imports is broken: show it
            continue  # command not part of this build (yet)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting made every torch op 10-20x slower whenever the
    # machine had other work (measured on 2 cores); sleeping waits cost nothing measurable when
    # it is idle. Must be set before torch is imported; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from unetkit.data.errors import DataError

    try:
        return int(args._module.run(args) or 0)
    except DataError as exc:
        # A user's data problem: one clear line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of the command. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
