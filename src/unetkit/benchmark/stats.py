"""Statistics for comparing segmentation models: confidence intervals, paired tests, ranks.

Everything here reads one **tidy table**: one row per model, dataset and case.

=============  ==========================================================================
column         meaning
=============  ==========================================================================
``model``      model name (string), e.g. ``"3d_fullres__plain_unet"``
``dataset``    dataset name (string), e.g. ``"Hippocampus"``
``case``       case name (string), e.g. ``"hippocampus_001"``
any other      a per-case metric, numeric: ``Dice``, ``IoU``, ``dice``, ``iou``, ``HD95``...
               (names are case-sensitive and used as given; ``nan``/empty = undefined)
=============  ==========================================================================

The table is a list of dicts or the path of a CSV file with a header row (``load_table``).
A (model, dataset, case) triple may appear only once: with several labels per case, average
them (or pick one) before building the table. Efficiency columns for the U-Score
(``params_m``, ``gflops``, ``fps``) may ride along; see :mod:`unetkit.benchmark.uscore`.

NaN values are left out, as ``unetkit evaluate`` does for cases where both masks are empty.
Infinite values (``HD95`` of a missed structure) have no mean difference and no bootstrap
interval: the summaries report them, the paired tests drop those pairs and count them.

Functions:

- :func:`bootstrap_ci`: percentile or BCa bootstrap interval of a statistic (mean by default);
  the same resamples as ``scipy.stats.bootstrap`` with ``rng=np.random.default_rng(seed)``.
- :func:`summarize`: per model and dataset, n, mean, median, std and the bootstrap interval.
- :func:`paired_tests`: each model against a baseline, over the cases both have: mean
  difference with its bootstrap interval, Wilcoxon signed-rank p, Holm-adjusted p, effect
  sizes (matched-pairs rank-biserial correlation, Cohen's d_z) and a significance mark.
- :func:`holm`: Holm's step-down adjustment of p-values.
- :func:`score_matrix` and :func:`friedman_nemenyi`: average ranks over datasets, Friedman
  test, Iman-Davenport F, Nemenyi critical difference and pairwise Nemenyi p-values
  (Demšar 2006, "Statistical comparisons of classifiers over multiple data sets", JMLR 7).

Why these: per-case metrics of two models on the same cases are paired and rarely normal
(bounded, skewed, with failures), so the signed-rank test and a bootstrap interval are used
rather than a t-test; across datasets only ranks are comparable, hence Friedman/Nemenyi.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats as sps
from scipy.special import ndtr, ndtri

KEY_COLUMNS = ("model", "dataset", "case")
BOOTSTRAP_METHODS = ("percentile", "BCa")
ZERO_METHODS = ("wilcox", "pratt", "zsplit")
#: Fewest paired cases for which a paired test may be marked significant. Below 6 pairs the exact
#: two-sided signed-rank test cannot reach p < 0.05 at all (its smallest p is 2 / 2^n); from 6 to 9
#: pairs only (nearly) unanimous signs reach it, so one case decides the verdict, and a percentile
#: bootstrap interval of a mean over so few cases is too narrow. docs/benchmark_statistics.md.
MIN_PAIRS = 10
# Resample-index blocks above this many elements are drawn in chunks to bound memory; below it
# the indices are exactly those scipy.stats.bootstrap draws for the same seed.
_MAX_BLOCK = 1 << 24

Table = list[dict[str, Any]]


# ----------------------------------------------------------------------------------------------
# The tidy table
# ----------------------------------------------------------------------------------------------

def load_table(source: str | os.PathLike | Iterable[Mapping[str, Any]]) -> Table:
    """Read a tidy table (CSV path or rows) and check its key columns and uniqueness.

    Returns a list of plain dicts (CSV values stay strings; metrics are converted to float when
    a function asks for them, so a stray text value is reported with its row). Raises
    ``ValueError`` naming the file/row when ``model``, ``dataset`` or ``case`` is missing or
    empty, or when a (model, dataset, case) triple occurs twice.
    """
    origin: str
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"tidy table {path} does not exist")
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise ValueError(f"{path}: empty file, expected a header row with "
                                 f"{', '.join(KEY_COLUMNS)} and metric columns")
            missing = [c for c in KEY_COLUMNS if c not in reader.fieldnames]
            if missing:
                raise ValueError(f"{path}: header lacks column(s) {missing}; found {reader.fieldnames}")
            rows = [dict(row) for row in reader]
    else:
        origin = "table"
        rows = [dict(row) for row in source]
    seen: dict[tuple[str, str, str], int] = {}
    for index, row in enumerate(rows):
        where = f"{origin} row {index + 1}" if origin == "table" else f"{origin} line {index + 2}"
        for column in KEY_COLUMNS:
            value = row.get(column)
            if value is None or str(value) == "":
                raise ValueError(f"{where}: column {column!r} is missing or empty ({row})")
            row[column] = str(value)
        key = (row["model"], row["dataset"], row["case"])
        if key in seen:
            raise ValueError(f"{where}: model {key[0]!r}, dataset {key[1]!r}, case {key[2]!r} already "
                             f"appears in row {seen[key] + 1}; one row per case is expected "
                             "(average or select labels first)")
        seen[key] = index
    return rows


def _as_float(row: Mapping[str, Any], metric: str, index: int) -> float:
    if metric not in row:
        raise KeyError(f"row {index + 1} ({row.get('model')}, {row.get('dataset')}, {row.get('case')}) "
                       f"has no column {metric!r}; columns: {sorted(row)}")
    value = row[metric]
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {index + 1} ({row.get('model')}, {row.get('dataset')}, {row.get('case')}): "
                         f"{metric}={value!r} is not a number") from None


def _by_model_dataset(table: Table, metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(model, dataset): {case: value}} in first-seen order."""
    grouped: dict[tuple[str, str], dict[str, float]] = {}
    for index, row in enumerate(table):
        grouped.setdefault((str(row["model"]), str(row["dataset"])), {})[str(row["case"])] = \
            _as_float(row, metric, index)
    return grouped


def _prepare(table: Table | str | os.PathLike) -> Table:
    """Rows of a table given as rows or as a CSV path, validated by :func:`load_table`."""
    return load_table(table)


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------

def _resample_statistics(values: np.ndarray, n_resamples: int, rng: np.random.Generator,
                         statistic: Callable[..., Any]) -> np.ndarray:
    n = values.size
    rows_per_block = max(1, _MAX_BLOCK // max(n, 1))
    out = []
    for start in range(0, n_resamples, rows_per_block):
        rows = min(rows_per_block, n_resamples - start)
        indices = rng.integers(0, n, (rows, n))
        out.append(np.asarray(statistic(values[indices], axis=-1), dtype=float))
    return np.concatenate(out)


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_resamples: int = 10000, confidence: float = 0.95,
                 seed: int = 0, method: str = "percentile",
                 statistic: Callable[..., Any] = np.mean) -> tuple[float, float]:
    """Two-sided bootstrap confidence interval of ``statistic(values)``.

    Args:
        values: finite per-case values (drop NaN first; an infinite value has no interval).
        n_resamples: bootstrap resamples B (cases drawn with replacement, n per resample).
        confidence: coverage of the interval, e.g. 0.95.
        seed: seeds ``numpy.random.default_rng``; the resample indices are those that
            ``scipy.stats.bootstrap(..., rng=np.random.default_rng(seed))`` draws (for
            ``B * n`` up to 16.7 million), so both give the same interval.
        method: ``"percentile"`` (quantiles alpha/2 and 1-alpha/2 of the B statistics) or
            ``"BCa"`` (bias-corrected and accelerated: the quantile levels are shifted by the
            bias z0 = Phi^-1(share of resampled statistics below the estimate, ties counted
            half) and the jackknife acceleration a; Efron & Tibshirani 1993, ch. 14.3).
        statistic: vectorized function with an ``axis`` argument (``np.mean``, ``np.median``).

    Returns:
        ``(low, high)``. With a single value, or all values equal, the interval is that value.
    """
    data = np.asarray(values, dtype=float).ravel()
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"method must be one of {BOOTSTRAP_METHODS}, got {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise ValueError(f"bootstrap_ci got {bad} non-finite value(s) among {data.size}; drop NaN "
                         "(undefined cases) and cap or report infinite values separately")
    if np.all(data == data[0]):
        estimate = float(statistic(data, axis=-1))
        return estimate, estimate
    rng = np.random.default_rng(seed)
    theta_b = _resample_statistics(data, n_resamples, rng, statistic)
    alpha = (1.0 - confidence) / 2.0
    if method == "percentile":
        levels = np.array([alpha, 1.0 - alpha])
    else:
        theta_hat = float(statistic(data, axis=-1))
        # Share of resampled statistics below the estimate, ties counted as half.
        share = (np.count_nonzero(theta_b < theta_hat) + np.count_nonzero(theta_b <= theta_hat)) / (2.0 * theta_b.size)
        z0 = ndtri(share)
        # Jackknife: the statistic without each case in turn.
        n = data.size
        leave_one_out = np.array([float(statistic(np.delete(data, i), axis=-1)) for i in range(n)])
        deviation = leave_one_out.mean() - leave_one_out
        denominator = np.sum(deviation ** 2) ** 1.5
        acceleration = float(np.sum(deviation ** 3) / (6.0 * denominator)) if denominator > 0 else 0.0
        z = ndtri(np.array([alpha, 1.0 - alpha]))
        levels = ndtr(z0 + (z0 + z) / (1.0 - acceleration * (z0 + z)))
        if not np.all(np.isfinite(levels)):
            raise ValueError("the BCa interval is undefined for these values (degenerate bootstrap "
                             "distribution); use method='percentile'")
    low, high = np.quantile(theta_b, levels)
    return float(low), float(high)


# ----------------------------------------------------------------------------------------------
# Per model and dataset
# ----------------------------------------------------------------------------------------------

def summarize(table: Table | str | os.PathLike, metric: str, *, n_resamples: int = 10000,
              confidence: float = 0.95, seed: int = 0, method: str = "percentile") -> list[dict[str, Any]]:
    """Per (model, dataset): case counts, mean, median, std and bootstrap CI of the mean.

    Returns one dict per pair, in first-seen order: ``model, dataset, metric, n`` (finite
    values used), ``n_nan`` (left out), ``n_inf``, ``mean``, ``median``, ``std`` (ddof=1),
    ``ci_low``, ``ci_high``, ``confidence``, ``method``. With an infinite value the mean is
    infinite and the interval NaN; with no finite value everything is NaN.
    """
    rows = _prepare(table)
    out = []
    for (model, dataset), cases in _by_model_dataset(rows, metric).items():
        values = np.array(list(cases.values()), dtype=float)
        nan = np.isnan(values)
        inf = np.isinf(values)
        finite = values[~nan & ~inf]
        entry: dict[str, Any] = {"model": model, "dataset": dataset, "metric": metric, "n": int(finite.size),
                                 "n_nan": int(nan.sum()), "n_inf": int(inf.sum()),
                                 "confidence": confidence, "method": method}
        if inf.any():
            kept = values[~nan]
            entry.update(mean=float(np.mean(kept)), median=float(np.median(kept)), std=math.nan,
                         ci_low=math.nan, ci_high=math.nan)
        elif finite.size == 0:
            entry.update(mean=math.nan, median=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan)
        else:
            low, high = bootstrap_ci(finite, n_resamples, confidence, seed, method)
            entry.update(mean=float(finite.mean()), median=float(np.median(finite)),
                         std=float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                         ci_low=low, ci_high=high)
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------
# Paired tests against a baseline
# ----------------------------------------------------------------------------------------------

def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max over j <= i of
    min(1, (m - j + 1) * p_(j)). Reject where adjusted p < alpha. NaN entries stay NaN and do
    not count in m. (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg, not this.)
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return adjusted
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[valid]}")
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (m - position) * p[index]))
        adjusted[index] = running
    return adjusted


def _signed_rank_sums(differences: np.ndarray, zero_method: str) -> tuple[float, float]:
    """(T+, T-): sums of the ranks of |d| over positive / negative differences."""
    d = np.asarray(differences, dtype=float)
    if zero_method == "wilcox":
        d = d[d != 0]
    if d.size == 0:
        return 0.0, 0.0
    ranks = sps.rankdata(np.abs(d))  # ties get the average rank
    plus = float(ranks[d > 0].sum())
    minus = float(ranks[d < 0].sum())
    if zero_method == "zsplit":
        half = float(ranks[d == 0].sum()) / 2.0
        plus, minus = plus + half, minus + half
    return plus, minus


def rank_biserial(differences: Sequence[float] | np.ndarray, zero_method: str = "wilcox") -> float:
    """Matched-pairs rank-biserial correlation r = (T+ - T-) / (T+ + T-).

    T+ and T- are the signed-rank sums of the Wilcoxon test (zero differences treated as
    ``zero_method`` treats them). r is the share of favourable minus unfavourable rank mass:
    +1 when every difference is positive, -1 when every one is negative, 0 when balanced
    (Kerby 2014, "The simple difference formula"). NaN when all differences are zero.
    """
    if zero_method not in ZERO_METHODS:
        raise ValueError(f"zero_method must be one of {ZERO_METHODS}, got {zero_method!r}")
    plus, minus = _signed_rank_sums(np.asarray(differences, dtype=float), zero_method)
    total = plus + minus
    return (plus - minus) / total if total > 0 else math.nan


def cohens_dz(differences: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z = mean(d) / sd(d) (ddof=1): the paired mean difference in standard deviations
    of the differences. 0 when all differences are 0, +/-inf when they are equal and non-zero,
    NaN with fewer than two differences."""
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return math.nan
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd


def _wilcoxon(d: np.ndarray, zero_method: str, seed: int) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test; deterministic version of scipy's method='auto'."""
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return 0.0, 1.0, "all differences zero"
    counted = nonzero if zero_method == "wilcox" else d
    has_ties = np.unique(np.abs(counted)).size < counted.size
    has_zeros = nonzero.size < d.size and zero_method != "wilcox"
    if counted.size > 50:
        method: Any = "asymptotic"
        name = "normal approximation"
    elif has_ties or has_zeros:
        method = sps.PermutationMethod(rng=np.random.default_rng(seed))
        name = "permutation" if 2 ** counted.size > method.n_resamples else "exact (enumerated sign flips)"
    else:
        method = "exact"
        name = "exact"
    result = sps.wilcoxon(d, zero_method=zero_method, alternative="two-sided", method=method)
    return float(result.statistic), float(result.pvalue), name


def paired_tests(table: Table | str | os.PathLike, baseline: str, metric: str, *, higher_is_better: bool = True,
                 alpha: float = 0.05, family: str = "dataset", zero_method: str = "wilcox",
                 n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0,
                 method: str = "percentile", min_pairs: int = MIN_PAIRS) -> list[dict[str, Any]]:
    """Compare every model with ``baseline`` on each dataset, over the cases both have.

    For each dataset where ``baseline`` has results and each other model there:

    - ``n_pairs``: cases with finite values for both (``n_dropped``: shared cases left out as
      NaN or infinite);
    - ``mean_diff`` = mean(model - baseline) in metric units, ``ci_low``/``ci_high`` its
      bootstrap interval (``method``, ``n_resamples``, ``seed``), ``median_diff`` the median;
    - ``wilcoxon_statistic``, ``p``: two-sided Wilcoxon signed-rank test on the differences
      (``zero_method``: ``"wilcox"`` drops zero differences, Wilcoxon's original; ``"pratt"``
      ranks then drops them; ``"zsplit"`` splits their ranks), ``wilcoxon_method`` says which
      null distribution was used: exact for up to 50 pairs without ties or zeros, a sign-flip
      permutation (seeded; enumerated when 2^n <= 9999) with ties or zeros, the normal
      approximation above 50 pairs; ``t_plus``/``t_minus`` the signed-rank sums;
    - ``p_holm``: Holm-adjusted across the comparisons of a ``family``: ``"dataset"`` (the
      models compared with the baseline on that dataset) or ``"all"`` (every comparison here);
      ``family_size`` is the number of p-values adjusted together;
    - ``rank_biserial`` and ``cohens_dz``: effect sizes of model - baseline (positive: model
      has higher values);
    - ``direction``: ``"higher"``/``"lower"``/``"none"``, the side the signed ranks lean to
      (T+ > T-: the model's values are higher). It is what the test tested, so the verdict
      follows it, not the mean difference: one catastrophic case can pull the mean below zero
      while the model is higher on almost every case;
    - ``significant`` (p_holm < alpha and at least ``min_pairs`` pairs) and ``mark``: ``"+"``
      significantly better, ``"-"`` significantly worse (``direction`` read with
      ``higher_is_better``), ``""`` otherwise; ``note`` says why a comparison with a small
      p is not marked (too few pairs).

    Returns the rows ordered by dataset, then model, in first-seen order. Raises ``ValueError``
    when the baseline appears in no dataset.
    """
    if family not in ("dataset", "all"):
        raise ValueError(f"family must be 'dataset' or 'all', got {family!r}")
    if zero_method not in ZERO_METHODS:
        raise ValueError(f"zero_method must be one of {ZERO_METHODS}, got {zero_method!r}")
    if min_pairs < 1:
        raise ValueError(f"min_pairs must be at least 1, got {min_pairs}")
    rows = _prepare(table)
    grouped = _by_model_dataset(rows, metric)
    datasets = list(dict.fromkeys(dataset for _, dataset in grouped))
    models = list(dict.fromkeys(model for model, _ in grouped))
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not in the table; models: {models}")
    bootstrap = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed, "method": method}
    results: list[dict[str, Any]] = []
    for dataset in datasets:
        if (baseline, dataset) not in grouped:
            continue
        for model in models:
            if model == baseline or (model, dataset) not in grouped:
                continue
            entry = _paired_comparison(grouped[(model, dataset)], grouped[(baseline, dataset)], zero_method,
                                       bootstrap)
            results.append({"dataset": dataset, "model": model, "baseline": baseline, "metric": metric, **entry})
    _adjust_and_mark(results, family, alpha, higher_is_better, min_pairs)
    return results


def _paired_comparison(other: dict[str, float], base: dict[str, float], zero_method: str,
                       bootstrap: dict[str, Any]) -> dict[str, Any]:
    """Differences, interval, signed-rank test and effect sizes of one model against the baseline."""
    shared = [case for case in base if case in other]
    pairs = np.array([(other[c], base[c]) for c in shared], dtype=float).reshape(-1, 2)
    keep = np.all(np.isfinite(pairs), axis=1)
    d = pairs[keep, 0] - pairs[keep, 1]
    entry: dict[str, Any] = {"n_pairs": int(d.size), "n_dropped": int((~keep).sum()),
                             "n_model_only": len(other) - len(shared), "n_baseline_only": len(base) - len(shared),
                             "zero_method": zero_method}
    if d.size == 0:
        entry.update(mean_diff=math.nan, median_diff=math.nan, ci_low=math.nan, ci_high=math.nan,
                     wilcoxon_statistic=math.nan, t_plus=math.nan, t_minus=math.nan, p=math.nan,
                     wilcoxon_method="no pairs", rank_biserial=math.nan, cohens_dz=math.nan, direction="none")
        return entry
    low, high = bootstrap_ci(d, bootstrap["n_resamples"], bootstrap["confidence"], bootstrap["seed"],
                             bootstrap["method"])
    statistic, p, test_method = _wilcoxon(d, zero_method, bootstrap["seed"])
    plus, minus = _signed_rank_sums(d, zero_method)
    direction = "higher" if plus > minus else ("lower" if minus > plus else "none")
    entry.update(mean_diff=float(d.mean()), median_diff=float(np.median(d)), ci_low=low, ci_high=high,
                 wilcoxon_statistic=statistic, t_plus=plus, t_minus=minus, p=p, wilcoxon_method=test_method,
                 rank_biserial=rank_biserial(d, zero_method), cohens_dz=cohens_dz(d), direction=direction)
    return entry


def _adjust_and_mark(results: list[dict[str, Any]], family: str, alpha: float, higher_is_better: bool,
                     min_pairs: int) -> None:
    """Holm within each family, then the significance mark from the signed ranks' direction."""
    families: dict[Any, list[int]] = {}
    for index, entry in enumerate(results):
        families.setdefault(entry["dataset"] if family == "dataset" else None, []).append(index)
    for members in families.values():
        adjusted = holm([results[i]["p"] for i in members])
        size = int(np.count_nonzero(~np.isnan(np.array([results[i]["p"] for i in members], dtype=float))))
        for i, value in zip(members, adjusted):
            results[i]["p_holm"] = float(value)
            results[i]["family_size"] = size
    for entry in results:
        below_alpha = bool(entry["p_holm"] < alpha) if not math.isnan(entry["p_holm"]) else False
        enough = entry["n_pairs"] >= min_pairs
        significant = below_alpha and enough and entry["direction"] != "none"
        better = (entry["direction"] == "higher") == higher_is_better
        entry.update(alpha=alpha, family=family, min_pairs=min_pairs, significant=significant,
                     mark=("+" if better else "-") if significant else "",
                     note="" if enough else f"too few pairs to mark ({entry['n_pairs']} < {min_pairs})")


# ----------------------------------------------------------------------------------------------
# Across datasets: Friedman and Nemenyi
# ----------------------------------------------------------------------------------------------

def score_matrix(table: Table | str | os.PathLike, metric: str) -> tuple[list[str], list[str], np.ndarray]:
    """Mean metric per model and dataset as a (models x datasets) matrix.

    NaN cases are left out of each mean. Every model must have results on every dataset
    (Friedman's test needs complete blocks): a missing pair raises ``ValueError`` listing them.
    """
    rows = _prepare(table)
    grouped = _by_model_dataset(rows, metric)
    models = list(dict.fromkeys(model for model, _ in grouped))
    datasets = list(dict.fromkeys(dataset for _, dataset in grouped))
    missing = [(m, d) for m in models for d in datasets if (m, d) not in grouped]
    if missing:
        raise ValueError(f"no {metric} results for (model, dataset) {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}; Friedman's test needs every model on every "
                         "dataset: run them or drop the model/dataset")
    matrix = np.empty((len(models), len(datasets)))
    for i, model in enumerate(models):
        for j, dataset in enumerate(datasets):
            values = np.array(list(grouped[(model, dataset)].values()), dtype=float)
            values = values[~np.isnan(values)]
            matrix[i, j] = values.mean() if values.size else math.nan
    return models, datasets, matrix


def nemenyi_q_alpha(k: int, alpha: float = 0.05) -> float:
    """Critical value q_alpha of the Nemenyi test for k models: the (1 - alpha) quantile of the
    studentized range of k means with infinite degrees of freedom, divided by sqrt(2)
    (Demšar 2006, Table 5a: k=6, alpha=0.05 gives 2.850)."""
    if k < 2:
        raise ValueError(f"the Nemenyi test needs at least 2 models, got {k}")
    return float(sps.studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks, CD = q_alpha * sqrt(k (k + 1) / (6 N)),
    for k models compared over N datasets."""
    if n < 1:
        raise ValueError(f"the critical difference needs at least one dataset, got {n}")
    return nemenyi_q_alpha(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def friedman_nemenyi(scores: np.ndarray | Sequence[Sequence[float]] | Mapping[str, Mapping[str, float]],
                     models: Sequence[str] | None = None, datasets: Sequence[str] | None = None, *,
                     higher_is_better: bool = True, alpha: float = 0.05) -> dict[str, Any]:
    """Friedman test with the Nemenyi post-hoc over a (models x datasets) score matrix.

    Args:
        scores: matrix with one row per model and one column per dataset (e.g. mean Dice from
            :func:`score_matrix`), or ``{model: {dataset: score}}``.
        models, datasets: names for the rows/columns of a matrix (default ``model_0``...).
        higher_is_better: rank 1 goes to the highest score (``False`` for HD95 and the like).
        alpha: level of the Nemenyi critical difference and of ``significant``.

    Returns a dict with ``models``, ``datasets``, ``k``, ``n``, ``ranks`` (k x N, ties
    averaged), ``average_ranks`` ({model: rank}, 1 = best), ``friedman_chi2`` and
    ``friedman_p`` (``scipy.stats.friedmanchisquare``, tie-corrected), ``iman_davenport_f``
    and ``iman_davenport_p`` (F with k-1 and (k-1)(N-1) degrees of freedom, less conservative
    than chi-square), ``q_alpha``, ``cd``, ``nemenyi_p`` (k x k list, 1 on the diagonal),
    ``significant`` (k x k, p < alpha, the same as |rank difference| > CD), ``alpha`` and
    ``rejects`` (Iman-Davenport p < alpha: only then may the Nemenyi comparisons be read,
    Demšar 2006 sec. 3.2.2). Needs at least 3 models (with 2, use a paired test over datasets) and 2 datasets.
    """
    if isinstance(scores, Mapping):
        names = list(scores)
        columns = list(dict.fromkeys(d for model in names for d in scores[model]))
        missing = [(m, d) for m in names for d in columns if d not in scores[m]]
        if missing:
            raise ValueError(f"scores lack (model, dataset) {missing[:10]}; every model needs every dataset")
        matrix = np.array([[float(scores[m][d]) for d in columns] for m in names], dtype=float)
        models, datasets = names, columns
    else:
        matrix = np.asarray(scores, dtype=float)
        if matrix.ndim != 2:
            raise ValueError(f"scores must be a (models x datasets) matrix, got shape {matrix.shape}")
        models = list(models) if models is not None else [f"model_{i}" for i in range(matrix.shape[0])]
        datasets = list(datasets) if datasets is not None else [f"dataset_{j}" for j in range(matrix.shape[1])]
        if len(models) != matrix.shape[0] or len(datasets) != matrix.shape[1]:
            raise ValueError(f"{len(models)} model and {len(datasets)} dataset names for a matrix of shape "
                             f"{matrix.shape}")
    k, n = matrix.shape
    if k < 3:
        raise ValueError(f"Friedman's test needs at least 3 models, got {k}; compare two models with a "
                         "paired test over datasets instead")
    if n < 2:
        raise ValueError(f"Friedman's test needs at least 2 datasets, got {n}")
    if not np.all(np.isfinite(matrix)):
        bad = [(models[i], datasets[j]) for i, j in zip(*np.nonzero(~np.isfinite(matrix)))]
        raise ValueError(f"non-finite scores for (model, dataset) {bad[:10]}; rank only defined scores")
    oriented = -matrix if higher_is_better else matrix
    ranks = sps.rankdata(oriented, axis=0)  # per dataset (column), ties averaged, 1 = best
    average = ranks.mean(axis=1)
    chi2, p = sps.friedmanchisquare(*matrix)
    chi2 = float(chi2)
    denominator = n * (k - 1) - chi2
    if denominator <= 1e-12 * n * (k - 1):  # complete agreement of all rankings
        f_stat, f_p = math.inf, 0.0
    else:
        f_stat = (n - 1) * chi2 / denominator
        f_p = float(sps.f.sf(f_stat, k - 1, (k - 1) * (n - 1)))
    q = nemenyi_q_alpha(k, alpha)
    se = math.sqrt(k * (k + 1) / (6.0 * n))
    cd = q * se
    gaps = np.abs(average[:, None] - average[None, :])
    pairwise = sps.studentized_range.sf(gaps / se * math.sqrt(2.0), k, np.inf)
    np.fill_diagonal(pairwise, 1.0)
    pairwise = np.clip(pairwise, 0.0, 1.0)
    return {
        "models": models, "datasets": datasets, "k": k, "n": n,
        "higher_is_better": higher_is_better,
        "ranks": ranks.tolist(),
        "average_ranks": {m: float(r) for m, r in zip(models, average)},
        "friedman_chi2": chi2, "friedman_p": float(p),
        "iman_davenport_f": float(f_stat), "iman_davenport_p": f_p,
        "df_friedman": k - 1, "df_iman_davenport": [k - 1, (k - 1) * (n - 1)],
        "alpha": alpha, "q_alpha": q, "cd": cd,
        "nemenyi_p": pairwise.tolist(),
        "significant": (pairwise < alpha).tolist(),
        "rejects": bool(f_p < alpha),
    }


def wilcoxon_over_datasets(scores: np.ndarray | Sequence[Sequence[float]], models: Sequence[str],
                           datasets: Sequence[str], *, higher_is_better: bool = True,
                           alpha: float = 0.05) -> dict[str, Any]:
    """Two models across datasets: Wilcoxon signed-rank test on their per-dataset scores.

    Demšar (2006, sec. 3.1.3) recommends this test, not ranks with a critical difference, for
    two models over N datasets: it uses how large the differences are, and with two models
    there is no family for Friedman and Nemenyi. ``scores`` is (2 x N); the differences are
    ``scores[0] - scores[1]``. Returns ``models``, ``datasets``, ``n``, ``differences``,
    ``t_plus``, ``t_minus``, ``statistic`` and ``p`` (two-sided, exact without ties or zeros,
    zero differences dropped), ``direction`` (``"higher"`` when the first model's scores lean
    higher), ``better`` (the model the signed ranks favour, or None), ``significant`` and
    ``alpha``. With fewer than 6 datasets p cannot fall below 0.05 (2 / 2^N).
    """
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != 2:
        raise ValueError(f"scores must have 2 rows (models), got shape {matrix.shape}")
    if len(models) != 2 or len(datasets) != matrix.shape[1]:
        raise ValueError(f"{len(models)} model and {len(datasets)} dataset names for a matrix of shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("non-finite scores; compare only defined scores")
    d = matrix[0] - matrix[1]
    statistic, p, method = _wilcoxon(d, "wilcox", 0)
    plus, minus = _signed_rank_sums(d, "wilcox")
    direction = "higher" if plus > minus else ("lower" if minus > plus else "none")
    better = None
    if direction != "none":
        first_better = (direction == "higher") == higher_is_better
        better = models[0] if first_better else models[1]
    return {"models": list(models), "datasets": list(datasets), "n": int(d.size), "differences": d.tolist(),
            "t_plus": plus, "t_minus": minus, "statistic": statistic, "p": p, "wilcoxon_method": method,
            "direction": direction, "better": better, "significant": bool(p < alpha and better is not None),
            "alpha": alpha}
