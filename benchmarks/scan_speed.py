"""Selective-scan time before and after a change: ``python benchmarks/scan_speed.py B L D [--before REV]``.

The scan of revision REV (default 68729a8, the chunked T x T scan in ``umamba.py``) is loaded from
git, the current one from ``unetkit.models.ssm_blocks``; both run alternately in this process on
the same inputs (N = 16, 1 thread), forward and forward + backward; prints the median and minimum
of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from unetkit.models.ssm_blocks import selective_scan

REPO = Path(__file__).resolve().parents[1]


def scan_at(rev: str) -> types.FunctionType:
    """``selective_scan`` as it was in ``src/unetkit/models/umamba.py`` at ``rev``."""
    source = subprocess.run(["git", "show", f"{rev}:src/unetkit/models/umamba.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    namespace: dict = {"__name__": "scan_before"}
    exec(compile(source, f"umamba.py@{rev}", "exec"), namespace)  # noqa: S102 - our own file from our own history
    return namespace["selective_scan"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("batch", type=int)
    parser.add_argument("length", type=int)
    parser.add_argument("channels", type=int)
    parser.add_argument("--before", default="68729a8")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    b, length, d, n = args.batch, args.length, args.channels, 16
    inputs = (torch.randn(b, length, d), F.softplus(torch.randn(b, length, d) - 3),
              -torch.arange(1, n + 1.0).repeat(d, 1), torch.randn(b, length, n), torch.randn(b, length, n))
    scans = {"before": scan_at(args.before), "after": selective_scan}
    times: dict[tuple[str, bool], list[float]] = {(k, bwd): [] for k in scans for bwd in (False, True)}
    for rep in range(args.repeats + 1):
        for name, fn in scans.items():
            for backward in (False, True):
                leaves = [t.clone().requires_grad_(backward) for t in inputs]
                start = time.perf_counter()
                y = fn(*leaves)
                if backward:
                    y.sum().backward()
                if rep:
                    times[(name, backward)].append(time.perf_counter() - start)
    for (name, backward), ts in times.items():
        what = "forward + backward" if backward else "forward"
        print(f"B={b} L={length} D={d} N={n} {name:6s} {what:18s} median {statistics.median(ts):.3f} s, "
              f"min {min(ts):.3f} s")


if __name__ == "__main__":
    sys.exit(main())
