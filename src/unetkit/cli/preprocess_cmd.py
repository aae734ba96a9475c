"""Crop, normalize and resample a raw dataset into the training cache.

Reads WORKDIR/NAME/plans.json (written by `unetkit plan`) and writes, for each configuration,
WORKDIR/NAME/preprocessed/<data_identifier>/CASE.npy, CASE_seg.npy, CASE_locations.npz and
CASE.json. Cases already finished with the same plans are skipped, so an interrupted run can
simply be started again.

Example:
  unetkit preprocess data/Hippocampus --workdir unetkit_work -c 3d_fullres --num-processes 4
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="raw dataset folder (dataset.json, imagesTr/, labelsTr/)")
    parser.add_argument("--workdir", default=None, help="work root holding NAME/plans.json (default ./unetkit_work)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None, metavar="CONFIG",
                        help="configurations to preprocess (default: all in plans.json)")
    parser.add_argument("--num-processes", "-np", type=int, default=None, metavar="N",
                        help="worker processes (default min(CPU count, 8))")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    from unetkit.preprocessing import preprocess_dataset

    if args.num_processes is not None and args.num_processes < 1:
        print("error: --num-processes must be at least 1")
        return 2
    summary = preprocess_dataset(args.dataset, workdir=args.workdir, configurations=args.configurations,
                                 num_processes=args.num_processes, progress=not args.no_progress)
    print(summary.describe())
    return 0
