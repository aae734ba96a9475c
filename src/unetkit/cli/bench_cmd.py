"""Benchmark models x datasets x splits from a suite file; every per-case metric is kept.

Every dataset of SUITE.yaml is planned and preprocessed once (the same plans for every model);
then each run (model, dataset, fold or fixed test split) trains with the suite's budget in its
own process, predicts its test cases from the raw images and is evaluated against the raw
labels. Zero-shot pairs evaluate a model trained on one dataset on another's test cases.
Results go to OUTPUT (docs/benchmark_results.md): runs.csv, table.csv (one row per model,
dataset and case), zero_shot.csv, cases.csv, metadata.json (hardware, versions), runs/RUN_ID/.

Rerunning the same command resumes: finished runs are skipped, failed ones are kept unless
--retry-failed, and the tables are rebuilt from runs/ at the end. A run that fails (a model
that does not fit the plan's patch, a crash, --timeout) is recorded with its error; the others go
on. Suite format: docs/benchmark.md.

examples:
  unetkit bench benchmarks/suites/shared_quick.yaml -o bench/shared_quick --raw-root raw
  unetkit bench suite.yaml -o results --jobs 2 --threads 1
  unetkit bench suite.yaml -o results --retry-failed
  unetkit bench suite.yaml -o results --backend ray                      # a local Ray instance
  unetkit bench suite.yaml -o /shared/results --backend ray --address HEAD:6379 --cpus-per-run 8
  unetkit bench suite.yaml -o results --list                             # the runs and their status
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite file (YAML; docs/benchmark.md)")
    parser.add_argument("-o", "--output", default=None,
                        help="results folder (default ./unetkit_bench/SUITE_NAME); rerun with the same to resume")
    parser.add_argument("--raw-root", default=None,
                        help="folder that relative dataset paths resolve against (overrides the suite's raw_root)")
    parser.add_argument("--backend", choices=["local", "ray"], default="local",
                        help="local: one subprocess per run (default); ray: one Ray task per run")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="local backend: runs at the same time (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: CPU cores / jobs; Ray: --cpus-per-run)")
    parser.add_argument("--address", default=None, help="Ray: cluster address to join (default: start a local instance)")
    parser.add_argument("--cpus-per-run", type=int, default=None, help="Ray: CPUs each run reserves (default: cores / jobs)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray: GPUs each run reserves (default 0)")
    parser.add_argument("--ray-num-cpus", type=int, default=None, help="Ray: CPUs of the local instance (default: all)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again (default: keep their failure)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which a run is killed and recorded as failed")
    parser.add_argument("--only", nargs="+", default=None, metavar="RUN_ID", help="run only these run ids")
    parser.add_argument("--list", action="store_true", help="list the suite's runs and their status, run nothing")


def _list(args: argparse.Namespace, output) -> int:
    from pathlib import Path

    from unetkit.benchmark.runner import run_ids
    from unetkit.benchmark.suite import load_suite
    from unetkit.utils.atomic import read_json

    suite = load_suite(args.suite, args.raw_root)
    for run_id in run_ids(suite):
        path = Path(output) / "runs" / run_id / "run.json"
        status = read_json(path).get("status", "?") if path.is_file() else "pending"
        print(f"{status:<8} {run_id}")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unetkit.benchmark.suite import SuiteError, load_suite

    try:
        name = load_suite(args.suite, args.raw_root).name
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else Path("unetkit_bench") / name
    if args.list:
        return _list(args, output)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        print("error: --jobs and --threads must be at least 1", file=sys.stderr)
        return 2
    from unetkit.benchmark.runner import run_benchmark

    command = "unetkit bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else None
    try:
        summary = run_benchmark(args.suite, output, backend=args.backend, address=args.address, jobs=args.jobs,
                                threads=args.threads, ray_cpus_per_run=args.cpus_per_run,
                                ray_gpus_per_run=args.gpus_per_run, ray_num_cpus=args.ray_num_cpus,
                                retry_failed=args.retry_failed, raw_root=args.raw_root, timeout=args.timeout,
                                only=args.only, command=command)
    except (SuiteError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = summary.counts
    print(f"{len(summary.ran)} run(s) executed, {len(summary.skipped)} already finished, "
          f"{len(summary.failed)} failed; table.csv {c['table']} rows, zero_shot.csv {c['zero_shot']} rows, "
          f"cases.csv {c['cases']} rows")
    print(f"results: {summary.results}")
    return 0  # failed runs are results too (runs.csv); the benchmark itself completed
