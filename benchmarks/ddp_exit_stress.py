"""How often a two-process CPU DDP run dies at exit, with the CPU loaded (tests/test_ddp.py's run).

Each run is tests/test_ddp.py's driver (2 gloo processes under torchrun, 2 epochs x 2 iterations
on a tiny synthetic dataset) started afresh; ``--load N`` keeps N busy-looping processes beside
it, as a CI machine running other work would. A run fails when torchrun exits non-zero or a
process printed ``terminate called``. Prints one line per run, the failure count, and the command::

    python benchmarks/ddp_exit_stress.py --runs 24 --load 3

About 12 s per run on 2 CPU cores. Before ``training.distributed.shutdown`` waited for the peers
and collected the DDP objects ahead of ``destroy_process_group``, 4 of 28 runs under ``--load 3``
lost rank 1 to SIGABRT at interpreter exit ("terminate called without an active exception").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(index: int, keep: Path) -> bool:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_ddp import DRIVER
    from test_trainer import make_tiny_workdir

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        work = make_tiny_workdir(tmp, num_cases=6, batch=2)
        driver = tmp / "driver.py"
        driver.write_text(DRIVER)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node", "2", str(driver), str(work), str(tmp)],
                              check=False, env=env, capture_output=True, text=True, timeout=600)
    failed = proc.returncode != 0 or "terminate called" in proc.stderr
    print(f"run {index}: exit {proc.returncode}, {time.perf_counter() - start:.1f} s{'  FAILED' if failed else ''}",
          flush=True)
    if failed:
        (keep / f"failed_run{index}.txt").write_text(proc.stdout + proc.stderr)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--load", type=int, default=3, help="busy-looping processes beside the runs")
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "ddp_exit_stress",
                        help="folder for the output of failed runs")
    args = parser.parse_args(argv)
    args.keep.mkdir(parents=True, exist_ok=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        failures = sum(one_run(i, args.keep) for i in range(args.runs))
    finally:
        for hog in hogs:
            hog.kill()
    print(f"\n{failures} of {args.runs} runs failed (--load {args.load}; outputs of failed runs in {args.keep})")
    print(f"command: python {' '.join(sys.argv)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
