"""Check a raw dataset (nnU-Net v2 layout) and report every problem at once.

Reads dataset.json and every image and label, and lists each problem with the file, the case
and what is wrong, grouped by kind, ending with a summary line. Exits 1 if any error was
found, 0 otherwise (warnings alone pass).

Examples:
  unetkit check raw/Hippocampus
  unetkit check raw/Hippocampus --num-processes 8 --json check.json
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``unetkit check``'s arguments."""
    parser.add_argument("dataset", type=Path, help="raw dataset folder (with dataset.json, imagesTr/, labelsTr/)")
    parser.add_argument("--num-processes", "-np", type=int, default=None, metavar="N",
                        help="processes reading files (default: min(4, CPU count); 1 reads in this process)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the report as JSON to OUT (written atomically)")


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the report grouped by kind, write JSON if asked; 1 on any error."""
    from rich.console import Console

    from unetkit.data.checks import check_dataset_report
    from unetkit.utils.atomic import atomic_write_json

    if args.num_processes is not None and args.num_processes < 1:
        raise SystemExit("error: --num-processes must be at least 1")
    report = check_dataset_report(args.dataset, num_processes=args.num_processes)
    console = Console(soft_wrap=True, highlight=False)

    # Errors first, then warnings; within each, kinds in order of first appearance.
    groups: dict[tuple[int, str], list] = {}
    for p in report.problems:
        groups.setdefault((0 if p.severity == "error" else 1, p.kind), []).append(p)
    for (rank, kind), problems in sorted(groups.items(), key=lambda item: item[0][0]):
        style = "bold red" if rank == 0 else "bold yellow"
        console.print(f"{kind} ({len(problems)})", style=style, markup=False)
        for p in problems:
            # Plain one-line form so that `grep` and log files see the whole problem.
            console.print(f"  {p}", markup=False)
    summary = f"{report.summary()} ({args.dataset})"
    console.print(summary, style="bold red" if report.errors else "bold green", markup=False)
    if args.json is not None:
        atomic_write_json(args.json, report.to_json())
    return 1 if report.errors else 0
