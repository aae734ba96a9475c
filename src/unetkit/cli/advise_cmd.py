"""Rank benchmarked models for a new dataset, within cost limits, and say why.

Describes DATASET (a raw folder in nnU-Net v2 layout) by its fingerprint: dimensionality,
modality (from dataset.json channel_names), median size, anisotropy, foreground fraction,
classes and cases. The fingerprint is read from WORKDIR/NAME/fingerprint.json when `unetkit
plan` wrote it, else measured on at most --max-cases training cases (nothing is written).
It is then compared with every dataset of a benchmark results folder (written by `unetkit
bench`; docs/benchmark_results.md): the nearest get the most weight. A model's score is its
similarity-weighted mean Dice over the datasets where it ran; its costs are those measured
on the most similar of them, on the benchmark machine (metadata.json). Models over a limit,
or that do not support the dataset's dimensionality, are listed with the reason. Rules and
weights: docs/advise.md.

Exit status: 0 when at least one model fits, 1 when none does (the reasons are printed) or
on a data error.

examples:
  unetkit advise raw/MyLiver --results bench_results
  unetkit advise raw/Polyps --results bench_results --max-params 10 --max-latency-ms 50
  unetkit advise raw/MyLiver --results bench_results --workdir work --top 3 --json
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``unetkit advise``."""
    parser.add_argument("dataset", help="raw dataset folder (dataset.json, imagesTr/, labelsTr/)")
    parser.add_argument("--results", required=True,
                        help="benchmark results folder (unetkit bench --output; docs/benchmark_results.md)")
    parser.add_argument("--max-params", type=float, default=None, help="at most this many parameters, millions")
    parser.add_argument("--max-gflops", type=float, default=None, help="at most this many GFLOPs per patch")
    parser.add_argument("--max-latency-ms", type=float, default=None,
                        help="at most this forward latency per patch (ms), as measured on the benchmark machine")
    parser.add_argument("--metric", default="dice", choices=["dice", "iou", "nsd", "precision", "recall"],
                        help="per-case metric the score averages (default dice)")
    parser.add_argument("--top", type=int, default=10, help="show the best N models (0: all; default 10)")
    parser.add_argument("--max-cases", type=int, default=None,
                        help="without fingerprint.json, measure at most this many training cases "
                             "(default 100; 0: all)")
    parser.add_argument("-np", "--num-processes", type=int, default=None,
                        help="worker processes for measuring cases (default: 1 for up to 32 cases, else CPUs)")
    parser.add_argument("--workdir", default=None, help="work root holding NAME/fingerprint.json (default ./unetkit_work)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def run(args: argparse.Namespace) -> int:
    """Describe the dataset, load the results, rank, print."""
    from unetkit.benchmark.advisor import DEFAULT_MAX_CASES, advise, describe_raw_dataset, format_advice, load_results

    for option in ("max_params", "max_gflops", "max_latency_ms"):
        value = getattr(args, option)
        if value is not None and value <= 0:
            print(f"error: --{option.replace('_', '-')} must be positive, got {value:g}", file=sys.stderr)
            return 2
    if args.top < 0:
        print(f"error: --top must be 0 (all) or more, got {args.top}", file=sys.stderr)
        return 2
    # Read the results first: a wrong --results path should not wait for the dataset's measurement.
    results = load_results(args.results)
    max_cases = DEFAULT_MAX_CASES if args.max_cases is None else args.max_cases
    features, source = describe_raw_dataset(args.dataset, args.workdir, max_cases, args.num_processes)
    report = advise(features, results, max_params=args.max_params, max_gflops=args.max_gflops,
                    max_latency_ms=args.max_latency_ms, metric=args.metric, top=args.top or None)
    report["dataset_source"] = source
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(f"features from: {source}")
        print(format_advice(report))
    return 0 if report["ranking"] else 1
