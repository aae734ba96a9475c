"""Write the report of a benchmark results folder: one self-contained HTML file plus Markdown and CSV.

RESULTS is the folder `unetkit bench` wrote (docs/benchmark_results.md). Writes RESULTS/report/
(or --output): report.html (leaderboards with bootstrap confidence intervals, paired Wilcoxon
tests against a baseline with Holm-adjusted p and effect sizes, average ranks with the
Friedman test and critical-difference diagram, accuracy-vs-cost Pareto plots, per-case
distributions, best/worst example overlays, zero-shot transfer, failed runs), report.md,
leaderboard.csv, paired_tests.csv, uscore.csv and cd_METRIC.png/.svg. How to read it:
docs/report.md.

The baseline of the paired tests is --baseline, else the suite's declared `baseline:`, else the
suite's first model: never one chosen after looking at the results. Significance is marked only
with at least --min-pairs paired cases (default 10).

examples:
  unetkit report bench_results
  unetkit report bench_results --baseline resenc_unet --output /tmp/report
  unetkit report bench_results --metric hd95 --anchors ubench
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="results folder written by `unetkit bench`")
    parser.add_argument("--output", "-o", default=None, help="report folder (default RESULTS/report)")
    parser.add_argument("--baseline", default=None,
                        help="model the others are compared with (default: the suite's baseline:, else its "
                             "first model)")
    parser.add_argument("--metric", default="dice",
                        help="table.csv column to rank and test (default dice; hd95 ranks lower first)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--confidence", type=float, default=0.95, help="bootstrap interval coverage (default 0.95)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--anchors", choices=("suite", "ubench"), default="suite",
                        help="U-Score anchors: percentiles over this suite's models (default) or U-Bench's "
                             "published constants (only for U-Bench's datasets)")
    parser.add_argument("--min-pairs", type=int, default=None,
                        help="fewest paired cases for a significance mark (default 10; below 6 the exact test "
                             "cannot reach p < 0.05)")
    parser.add_argument("--no-overlays", dest="overlays", action="store_false",
                        help="do not draw the example overlays (no image files read)")


def run(args: argparse.Namespace) -> int:
    from unetkit.benchmark.report import build_report

    try:
        written = build_report(args.results, args.output, baseline=args.baseline, metric=args.metric,
                               alpha=args.alpha, confidence=args.confidence, n_resamples=args.resamples,
                               seed=args.seed, anchors=args.anchors, overlays=args.overlays,
                               **({} if args.min_pairs is None else {"min_pairs": args.min_pairs}),
                               log=lambda message: print(message, file=sys.stderr))
    except ValueError as exc:  # a bad argument (unknown baseline, ...); file problems are DataErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind in ("html", "markdown", "leaderboard", "paired_tests", "uscore", "cd_png", "cd_svg"):
        if kind in written:
            print(written[kind])
    return 0
