"""The benchmark report: one self-contained HTML file plus Markdown and CSV summaries.

``build_report(RESULTS)`` reads a results folder (docs/benchmark_results.md) and writes
``RESULTS/report/``:

- ``report.html``: leaderboards per dataset (mean with bootstrap CI, paired Wilcoxon tests
  against a baseline with Holm-adjusted p and effect sizes, efficiency, U-Score), average
  ranks with Friedman / Iman-Davenport and the critical-difference diagram, accuracy-vs-cost
  Pareto plots, per-case distributions, best/worst example overlays, zero-shot transfer and
  the failed runs with their errors. CSS and figures (base64 PNG) are inline; no network, no
  JS framework (a few lines of plain JS sort the tables).
- ``report.md``: the same numbers as Markdown tables.
- ``leaderboard.csv``, ``paired_tests.csv``, ``uscore.csv``; ``cd_METRIC.png/.svg`` when
  the diagram exists.

All statistics come from :mod:`unetkit.benchmark.stats` and :mod:`unetkit.benchmark.uscore`;
this module only chooses what to compute and lays it out. How to read it: docs/report.md.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.stats import rankdata

from unetkit.utils.atomic import atomic_write_text

from .conventions import apply_hd95_penalty, declared_baseline, empty_reference_counts
from .report_data import BenchmarkResults, load_results, machine_label, to_float
from .stats import (
    MIN_PAIRS,
    friedman_nemenyi,
    paired_tests,
    score_matrix,
    summarize,
    wilcoxon_over_datasets,
)
from .uscore import UBENCH_ANCHORS, anchors_from_suite, u_score_table

#: Metrics where a smaller value is better (distances).
LOWER_IS_BETTER = frozenset({"hd95", "hd", "assd", "masd"})
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "precision": "precision", "recall": "recall",
                 "hd95": "HD95 (mm)", "nsd": "NSD"}
EFFICIENCY = ("params_m", "gflops", "latency_ms", "fps")
ANCHOR_CHOICES = ("suite", "ubench")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


@dataclass
class Analysis:
    """Every number the report shows, computed once and rendered three ways."""

    results: BenchmarkResults
    metric: str
    higher_is_better: bool
    alpha: float
    confidence: float
    n_resamples: int
    seed: int
    models: list[str]
    datasets: list[str]
    machine: str
    summaries: dict[str, dict[tuple[str, str], dict[str, Any]]]
    efficiency: dict[tuple[str, str], dict[str, float]]
    baseline: str | None
    baseline_reason: str
    tests: list[dict[str, Any]]
    leaderboard: dict[str, list[dict[str, Any]]]
    overall: dict[str, Any]
    uscore: list[dict[str, Any]]
    uscore_note: str
    failed: list[dict[str, str]]
    zero_shot: list[dict[str, Any]]
    zero_shot_note: str
    min_pairs: int = MIN_PAIRS
    empty_references: dict[str, tuple[int, int]] | None = None
    conventions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ analysis

def _ordered_names(results: BenchmarkResults) -> tuple[list[str], list[str]]:
    """Models and datasets in first-seen order; datasets.json's order first, and datasets or
    models that only appear in runs.csv (every run failed) included."""
    in_domain = [r for r in results.runs if r.get("kind", "in_domain") != "zero_shot"]
    datasets = list(dict.fromkeys([*results.datasets, *(r["dataset"] for r in results.table),
                                   *(r["dataset"] for r in in_domain)]))
    models = list(dict.fromkeys([*(r["model"] for r in results.table), *(r["model"] for r in in_domain)]))
    return models, datasets


def _efficiency(table: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """Mean of each efficiency column over a (model, dataset)'s rows (they repeat one value)."""
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in table:
        entry = values.setdefault((row["model"], row["dataset"]), {c: [] for c in EFFICIENCY})
        for column in EFFICIENCY:
            entry[column].append(to_float(row.get(column)))
    out = {}
    for key, columns in values.items():
        out[key] = {}
        for column, numbers in columns.items():
            finite = [v for v in numbers if math.isfinite(v)]
            out[key][column] = float(np.mean(finite)) if finite else math.nan
    return out


def _oriented(value: float, higher_is_better: bool) -> float:
    """A sort key where smaller is better and NaN is last."""
    if value is None or math.isnan(value):
        return math.inf
    return -value if higher_is_better else value


def _hd95_finite(table: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, int]]:
    """(mean over finite cases, number of infinite cases) of the raw HD95 per (model, dataset),
    shown beside the penalised mean: how good the found structures are, and how many were missed."""
    values: dict[tuple[str, str], list[float]] = {}
    for row in table:
        values.setdefault((row["model"], row["dataset"]), []).append(to_float(row.get("hd95_raw", row.get("hd95"))))
    out = {}
    for key, numbers in values.items():
        array = np.asarray(numbers, dtype=float)
        finite = array[np.isfinite(array)]
        out[key] = (float(finite.mean()) if finite.size else math.nan, int(np.isinf(array).sum()))
    return out


def _overall(table: list[dict[str, Any]], models: list[str], datasets: list[str],
             means: dict[tuple[str, str], dict[str, Any]], metric: str, higher_is_better: bool,
             alpha: float) -> dict[str, Any]:
    """Average ranks across datasets with Friedman / Iman-Davenport and Nemenyi's CD, or the
    reason why they are not computed. Models lacking a dataset are left out (Friedman needs
    complete blocks) and listed."""
    with_results = [d for d in datasets if any((m, d) in means for m in models)]
    complete = [m for m in models
                if all((m, d) in means and math.isfinite(means[(m, d)]["mean"]) for d in with_results)]
    excluded = {}  # model -> why it is not ranked, in words
    for model in models:
        if model in complete:
            continue
        absent = [d for d in with_results if (model, d) not in means]
        infinite = [d for d in with_results if (model, d) in means and not math.isfinite(means[(model, d)]["mean"])]
        excluded[model] = "; ".join(([f"no results on {', '.join(absent)}"] if absent else [])
                                    + ([f"no finite mean {metric} on {', '.join(infinite)}"] if infinite else []))
    out: dict[str, Any] = {"available": False, "excluded": excluded, "datasets": with_results, "models": complete}
    if len(with_results) < 2:
        out["reason"] = (f"Only {len(with_results)} dataset has results, so there are no ranks across datasets "
                         "and no critical-difference diagram (they need at least 2 datasets); read the "
                         "dataset's leaderboard and paired tests instead." if with_results else
                         "No dataset has results.")
        return out
    if len(complete) < 2:
        out["reason"] = (f"{len(complete)} model has results on every dataset; ranks across datasets and the "
                         "critical-difference diagram need at least 2.")
        return out
    rows = [r for r in table if r["model"] in complete and r["dataset"] in with_results]
    names, columns, matrix = score_matrix(rows, metric)
    try:
        out.update(_across_datasets(matrix, names, columns, higher_is_better, alpha))
    except ValueError as exc:
        out["reason"] = f"The test across datasets could not be computed: {exc}."
        return out
    out["scores"] = matrix.tolist()
    out["available"] = True
    return out


def _across_datasets(matrix: np.ndarray, names: list[str], columns: list[str], higher_is_better: bool,
                     alpha: float) -> dict[str, Any]:
    """Demšar (2006): two models get the Wilcoxon signed-rank test over datasets; three or more
    get Friedman with Iman-Davenport, and Nemenyi's groups only when that rejects."""
    oriented = -matrix if higher_is_better else matrix
    per_dataset = rankdata(oriented, axis=0)
    if len(names) == 2:
        test = wilcoxon_over_datasets(matrix, names, columns, higher_is_better=higher_is_better, alpha=alpha)
        return {"models": names, "datasets": columns, "k": 2, "n": len(columns), "ranks": per_dataset.tolist(),
                "average_ranks": {m: float(r) for m, r in zip(names, per_dataset.mean(axis=1))},
                "alpha": alpha, "test": "wilcoxon", "wilcoxon": test, "friedman": False, "rejects": test["significant"]}
    ranks = friedman_nemenyi(matrix, names, columns, higher_is_better=higher_is_better, alpha=alpha)
    return {**ranks, "test": "friedman", "friedman": True}


def _uscore(results: BenchmarkResults, models: list[str], anchors: str) -> tuple[list[dict[str, Any]], str]:
    missing = [c for c in ("iou", "params_m", "gflops", "fps") if c not in results.columns]
    if missing:
        return [], f"No U-Score: table.csv lacks {', '.join(missing)}."
    if not results.table:
        return [], "No U-Score: table.csv has no rows."
    try:
        if anchors == "ubench":
            keys = {d: "".join(ch for ch in d.lower() if ch.isalnum()) for d in {r["dataset"] for r in results.table}}
            known = {d: UBENCH_ANCHORS[k] for d, k in keys.items() if k in UBENCH_ANCHORS}
            if not known:
                return [], ("No U-Score: U-Bench publishes anchors only for its datasets "
                            f"({', '.join(sorted(UBENCH_ANCHORS))}); none of these datasets is one of them.")
            rows = u_score_table([r for r in results.table if r["dataset"] in known], known)
            unknown = sorted(set(keys) - set(known))
            note = ("U-Score with U-Bench's published anchors (IoU per dataset; ln params, ln GFLOPs and FPS "
                    "from U-Bench's 100 variants, measured on its GPU)."
                    + (f" No anchors for {', '.join(unknown)}." if unknown else ""))
            return rows, note
        if len([m for m in models if any(r["model"] == m for r in results.table)]) < 2:
            return [], "No U-Score: anchors from the suite need at least 2 models with results."
        rows = u_score_table(results.table, anchors_from_suite(results.table))
        return rows, ("U-Score with anchors from this suite (10th/90th percentiles over its models): it says "
                      "where a model sits among the models compared and changes when models are added.")
    except (ValueError, KeyError) as exc:
        return [], f"No U-Score: {exc}"


def _zero_shot(zero_rows: list[dict[str, Any]] | None, metric: str, summaries: dict[tuple[str, str], dict[str, Any]],
               **bootstrap: Any) -> tuple[list[dict[str, Any]], str]:
    if zero_rows is None:
        return [], "zero_shot.csv is absent: no zero-shot transfer in these results."
    if not zero_rows:
        return [], "The suite has no zero-shot pairs (zero_shot.csv has no rows)."
    # One model may be trained on several sources and tested on one target: key by both.
    keyed, origin = [], {}
    for row in zero_rows:
        source = row.get("source_dataset") or "?"
        key = f"{row['model']} \u2190 {source}"
        origin[key] = (row["model"], source)
        keyed.append({**row, "model": key})
    out = []
    for entry in summarize(keyed, metric, **bootstrap):
        model, source = origin[entry["model"]]
        target = entry["dataset"]
        in_domain = summaries.get((model, target), {}).get("mean", math.nan)
        on_source = summaries.get((model, source), {}).get("mean", math.nan)
        out.append({"model": model, "source_dataset": source, "target_dataset": target, "n": entry["n"],
                    "mean": entry["mean"], "ci_low": entry["ci_low"], "ci_high": entry["ci_high"],
                    "in_domain_target": in_domain, "in_domain_source": on_source,
                    "drop": entry["mean"] - in_domain if math.isfinite(in_domain) else math.nan})
    return out, ""


def _leaderboard(analysis: Analysis, hd95: dict[tuple[str, str], tuple[float, int]]) -> dict[str, list[dict]]:
    """Per dataset: one row per model with results (sorted, ranked), then the failed runs."""
    metric = analysis.metric
    main = analysis.summaries[metric]
    tests = {(t["dataset"], t["model"]): t for t in analysis.tests}
    uscore = {(u["model"], u["dataset"]): u["u_score"] for u in analysis.uscore}
    board: dict[str, list[dict]] = {}
    for dataset in analysis.datasets:
        entries = [main[(m, dataset)] for m in analysis.models if (m, dataset) in main]
        keys = [_oriented(e["mean"], analysis.higher_is_better) for e in entries]
        ranks = rankdata(keys, method="min") if entries else []
        rows = []
        for entry, rank in sorted(zip(entries, ranks), key=lambda pair: (pair[1], analysis.models.index(pair[0]["model"]))):
            model = entry["model"]
            row: dict[str, Any] = {"dataset": dataset, "rank": int(rank), "model": model, "status": "done",
                                   "n": entry["n"], "n_nan": entry["n_nan"], "n_inf": entry["n_inf"],
                                   f"{metric}_mean": entry["mean"], f"{metric}_ci_low": entry["ci_low"],
                                   f"{metric}_ci_high": entry["ci_high"], f"{metric}_median": entry["median"],
                                   f"{metric}_std": entry["std"]}
            for other in ("iou", "nsd"):
                if other != metric and other in analysis.summaries:
                    row[f"{other}_mean"] = analysis.summaries[other][(model, dataset)]["mean"]
            if "hd95" in analysis.summaries:
                finite_mean, n_inf = hd95[(model, dataset)]
                hd95_summary = analysis.summaries["hd95"][(model, dataset)]
                row.update(hd95_mean=hd95_summary["mean"], hd95_mean_finite=finite_mean,
                           hd95_median=hd95_summary["median"], hd95_n_inf=n_inf)
            if analysis.empty_references is not None:
                row["n_empty_reference"] = analysis.empty_references.get(dataset, (0, 0))[0]
            test = tests.get((dataset, model))
            if test is not None:
                row.update(delta_mean=test["mean_diff"], delta_ci_low=test["ci_low"], delta_ci_high=test["ci_high"],
                           delta_median=test["median_diff"], n_pairs=test["n_pairs"], p_wilcoxon=test["p"],
                           p_holm=test["p_holm"], holm_family_size=test["family_size"],
                           rank_biserial=test["rank_biserial"], cohens_dz=test["cohens_dz"], mark=test["mark"],
                           test_note=test["note"])
            elif model == analysis.baseline:
                row["mark"] = "baseline"
            row.update({c: analysis.efficiency.get((model, dataset), {}).get(c, math.nan) for c in EFFICIENCY})
            row["u_score"] = uscore.get((model, dataset), math.nan)
            rows.append(row)
        for run in analysis.failed:
            if run["dataset"] == dataset and run.get("kind", "in_domain") != "zero_shot":
                rows.append({"dataset": dataset, "rank": "", "model": run["model"], "status": run["status"],
                             "error": run.get("error", "")})
        board[dataset] = rows
    return board


def _failed_runs(results: BenchmarkResults, summaries: dict[tuple[str, str], Any]) -> list[dict[str, str]]:
    failed = [r for r in results.runs if r.get("status") != "done"]
    # A run marked done whose cases never reached table.csv would vanish silently: list it too.
    for run in results.runs:
        if (run.get("status") == "done" and run.get("kind", "in_domain") != "zero_shot"
                and (run["model"], run["dataset"]) not in summaries):
            failed.append({**run, "status": "done, no cases", "error": "no rows in table.csv for this run"})
    return failed


def _empty_reference_statement(counts: dict[str, tuple[int, int]] | None) -> str:
    if counts is None:
        return ("table.csv has no n_empty_reference column (made before empty references were scored): cases "
                "where reference and prediction are both empty are NaN there and left out of means and paired "
                "tests, so false positives on empty cases never count. Run `unetkit bench` on the same folder "
                "again to rebuild the tables (finished runs are not repeated).")
    listed = ", ".join(f"{d} {n} of {total}" for d, (n, total) in counts.items())
    return ("Empty references are scored (MONAI's DiceMetric with ignore_empty=False): a case whose reference "
            "and prediction are both empty counts as Dice 1 (HD95 0), a prediction on an empty reference as Dice "
            "0, so false positives on empty cases count in means, ranks and paired tests. (unetkit evaluate's "
            f"summary.json keeps nnU-Net's NaN.) Cases with an empty reference: {listed}.")


def analyze(results: BenchmarkResults, baseline: str | None = None, metric: str = "dice", *, alpha: float = 0.05,
            confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0, anchors: str = "suite",
            min_pairs: int = MIN_PAIRS) -> Analysis:
    """Compute everything the report shows (see :func:`build_report` for the arguments)."""
    if anchors not in ANCHOR_CHOICES:
        raise ValueError(f"anchors must be one of {ANCHOR_CHOICES}, got {anchors!r}")
    higher = metric not in LOWER_IS_BETTER
    models, datasets = _ordered_names(results)
    bootstrap = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    table, conventions = apply_hd95_penalty(results.table, results.datasets)
    zero_rows = apply_hd95_penalty(results.zero_shot, results.datasets)[0] if results.zero_shot else results.zero_shot
    summaries = {}
    for column in dict.fromkeys([metric, "iou", "hd95", "nsd"]):
        if column in results.columns:
            summaries[column] = {(e["model"], e["dataset"]): e for e in summarize(table, column, **bootstrap)}
    present = sorted({m for m, _ in summaries[metric]})
    chosen, reason = declared_baseline(results, baseline, present, models)
    tests = []
    if chosen is not None:
        tests = paired_tests(table, chosen, metric, higher_is_better=higher, alpha=alpha, min_pairs=min_pairs,
                             **bootstrap)
    uscore, uscore_note = _uscore(results, models, anchors)
    zero_shot, zero_note = _zero_shot(zero_rows, metric, summaries[metric], **bootstrap)
    empty = empty_reference_counts(results.table, results.columns)
    analysis = Analysis(results=results, metric=metric, higher_is_better=higher, alpha=alpha, confidence=confidence,
                        n_resamples=n_resamples, seed=seed, models=models, datasets=datasets,
                        machine=machine_label(results.metadata), summaries=summaries,
                        efficiency=_efficiency(results.table), baseline=chosen, baseline_reason=reason, tests=tests,
                        leaderboard={}, overall=_overall(table, models, datasets, summaries[metric], metric, higher,
                                                         alpha),
                        uscore=uscore, uscore_note=uscore_note, failed=_failed_runs(results, summaries[metric]),
                        zero_shot=zero_shot, zero_shot_note=zero_note, min_pairs=min_pairs, empty_references=empty,
                        conventions=[_empty_reference_statement(empty), *conventions], notes=list(results.notes))
    analysis.leaderboard = _leaderboard(analysis, _hd95_finite(table) if "hd95" in summaries else {})
    return analysis


# ---------------------------------------------------------------------------------- CSV

def _csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _csv_cell(row.get(c, "")) for c in columns})
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else ("-inf" if value == -math.inf
                                                                                   else repr(value)))
    return value


# ------------------------------------------------------------------------------- build

def build_report(results_dir: str | Path, output: str | Path | None = None, baseline: str | None = None,
                 metric: str = "dice", *, alpha: float = 0.05, confidence: float = 0.95, n_resamples: int = 10000,
                 seed: int = 0, anchors: str = "suite", overlays: bool = True, min_pairs: int = MIN_PAIRS,
                 log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Write the report of a results folder and return ``{kind: path}`` of the files written.

    Args:
        results_dir: the folder ``unetkit bench`` wrote (docs/benchmark_results.md).
        output: report folder (default ``RESULTS/report``).
        baseline: model the others are compared with (default: the suite's ``baseline:``, else
            its first model; never chosen from the results).
        metric: table.csv column ranked and tested (``dice``; ``hd95`` ranks lower first).
        alpha: significance level of the Holm-adjusted tests and of Nemenyi's CD.
        confidence, n_resamples, seed: the bootstrap intervals (percentile method).
        anchors: U-Score anchors, ``"suite"`` (percentiles over these models) or ``"ubench"``
            (U-Bench's published constants; only for its datasets).
        overlays: draw the best/worst example overlays (reads image files).
        min_pairs: fewest paired cases for a significance mark (``stats.MIN_PAIRS``).

    Raises:
        DataError: a required file is missing or malformed (the message names it).
        ValueError: ``baseline`` has no results, or a bad argument.
    """
    from .cd_diagram import cd_diagram
    from .report_render import render_html, render_markdown, report_figures

    say = log or (lambda message: None)
    results = load_results(results_dir, metric)
    analysis = analyze(results, baseline, metric, alpha=alpha, confidence=confidence, n_resamples=n_resamples,
                       seed=seed, anchors=anchors, min_pairs=min_pairs)
    out = Path(output) if output is not None else results.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    overall = analysis.overall
    if overall["available"] and overall["test"] == "friedman":
        # Nemenyi's groups only when Friedman / Iman-Davenport rejects (Demšar 2006, sec. 3.2.2).
        title = (f"{metric_label(metric)}: {overall['k']} models, {overall['n']} datasets, "
                 f"alpha = {alpha:g}")
        for path in cd_diagram(overall["average_ranks"], overall["cd"], out / f"cd_{metric}", title=title, dpi=120,
                               significant=overall["rejects"]):
            written[f"cd_{path.suffix.lstrip('.')}"] = path
    else:
        for stale in (out / f"cd_{metric}.png", out / f"cd_{metric}.svg"):
            stale.unlink(missing_ok=True)  # a diagram of an earlier report would no longer match
    say("drawing figures")
    figures = report_figures(analysis, written.get("cd_png"), overlays=overlays)

    leaderboard_rows = [row for dataset in analysis.datasets for row in analysis.leaderboard[dataset]]
    atomic_write_text(out / "leaderboard.csv", _csv_text(leaderboard_rows))
    atomic_write_text(out / "paired_tests.csv", _csv_text(analysis.tests, None if analysis.tests else
                                                         ["dataset", "model", "baseline", "metric"]))
    atomic_write_text(out / "uscore.csv", _csv_text(analysis.uscore, None if analysis.uscore else
                                                   ["model", "dataset", "u_score"]))
    atomic_write_text(out / "report.md", render_markdown(analysis))
    atomic_write_text(out / "report.html", render_html(analysis, figures))
    written.update(html=out / "report.html", markdown=out / "report.md", leaderboard=out / "leaderboard.csv",
                   paired_tests=out / "paired_tests.csv", uscore=out / "uscore.csv")
    return written
