"""Scoring conventions the report applies before it ranks or tests anything, each stated in the report.

- **HD95 of a miss.** A missed structure (or a prediction on an empty reference) has an
  infinite HD95. Averaging only the finite values rewards missing the hard structures, and
  dropping infinite pairs hides the misses from the paired tests. The report ranks and tests
  HD95 with a declared penalty for a miss: the diagonal of the case's image in mm
  (``diagonal_mm`` of table.csv), as several challenges do, or, for tables without that
  column, the diagonal of the dataset's median image (datasets.json). The finite-only mean
  and the number of misses are shown beside it.
- **Empty references.** table.csv scores them already (docs/benchmark_results.md); this
  module counts the cases with an empty reference per dataset, or says the table predates it.
- **The baseline** is declared before the results: ``baseline:`` in the suite, else the
  suite's first model (:func:`declared_baseline`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .report_data import BenchmarkResults, to_float

#: table.csv columns of the conventions (written by unetkit.benchmark.tables).
EMPTY_COLUMN = "n_empty_reference"
DIAGONAL_COLUMN = "diagonal_mm"


def _median_diagonal(info: Any) -> float:
    """Diagonal in mm of a dataset's median image from its datasets.json entry, or NaN."""
    if not isinstance(info, Mapping):
        return math.nan
    shape, spacing = info.get("median_shape"), info.get("median_spacing")
    if not shape or not spacing or len(shape) != len(spacing):
        return math.nan
    return math.sqrt(sum((float(n) * float(s)) ** 2 for n, s in zip(shape, spacing)))


def apply_hd95_penalty(table: Sequence[dict[str, Any]], datasets: Mapping[str, Any]) -> tuple[list[dict], list[str]]:
    """Rows with ``hd95`` penalised for misses and the raw value kept as ``hd95_raw``.

    An infinite ``hd95`` becomes the case's ``diagonal_mm`` when finite, else the diagonal of
    the dataset's median image from ``datasets`` (datasets.json); with neither it stays
    infinite (and the returned notes say so). Returns ``(rows, notes)``; the notes state the
    penalty per dataset. Rows without an ``hd95`` value are copied unchanged.
    """
    rows: list[dict] = []
    used: dict[str, set[str]] = {}
    unknown: dict[str, int] = {}
    for row in table:
        out = dict(row)
        raw = to_float(row.get("hd95"))
        out["hd95_raw"] = raw
        if math.isinf(raw) and raw > 0:
            penalty = to_float(row.get(DIAGONAL_COLUMN))
            source = "the image diagonal"
            if not math.isfinite(penalty):
                penalty = _median_diagonal(datasets.get(row["dataset"]))
                source = f"the median image's diagonal ({penalty:.1f} mm, datasets.json)"
            if math.isfinite(penalty):
                out["hd95"] = penalty
                used.setdefault(row["dataset"], set()).add(source)
            else:
                unknown[row["dataset"]] = unknown.get(row["dataset"], 0) + 1
        rows.append(out)
    notes = []
    for dataset, sources in used.items():
        notes.append(f"HD95 on {dataset}: a missed structure counts as {' or '.join(sorted(sources))} in mm "
                     "for ranking and paired tests.")
    for dataset, count in unknown.items():
        notes.append(f"HD95 on {dataset}: {count} missed structure(s) have no known penalty (no diagonal_mm in "
                     "table.csv, no median shape in datasets.json); their HD95 stays infinite and paired tests "
                     "leave those pairs out.")
    return rows, notes


def empty_reference_counts(table: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, tuple[int, int]] | None:
    """``{dataset: (cases with an empty reference for some label, cases)}`` over the distinct
    cases of each dataset, or None when table.csv has no ``n_empty_reference`` column."""
    if EMPTY_COLUMN not in columns:
        return None
    empty: dict[str, set[str]] = {}
    cases: dict[str, set[str]] = {}
    for row in table:
        cases.setdefault(row["dataset"], set()).add(row["case"])
        if to_float(row.get(EMPTY_COLUMN)) > 0:
            empty.setdefault(row["dataset"], set()).add(row["case"])
    return {d: (len(empty.get(d, ())), len(c)) for d, c in cases.items()}


def _suite_models(results: BenchmarkResults) -> tuple[str | None, list[str]] | None:
    """(declared baseline, model labels in the suite's order) from the results' suite.yaml, or
    None when it is absent or unreadable."""
    import yaml

    path = Path(results.root) / "suite.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, Mapping) or not isinstance(data.get("models"), list):
        return None
    labels = []
    for item in data["models"]:
        if isinstance(item, Mapping):
            labels.append(str(item.get("label", item.get("name"))))
        else:
            labels.append(str(item))
    declared = data.get("baseline")
    return (str(declared) if declared is not None else None), labels


def declared_baseline(results: BenchmarkResults, requested: str | None, present: Sequence[str],
                      table_order: Sequence[str]) -> tuple[str | None, str]:
    """The baseline of the paired tests and why, chosen without looking at any result.

    ``requested`` (``--baseline``) first; then the suite's ``baseline:`` (metadata.json, else the
    results' suite.yaml); then the suite's first model; without suite.yaml, the first model of
    table.csv. ``present`` are the models with results. A declared baseline without results
    gives no baseline (and says so) rather than another model picked after the results; an
    unknown ``requested`` raises ``ValueError``.
    """
    if requested is not None:
        if requested not in present:
            raise ValueError(f"baseline {requested!r} has no results in table.csv; models with results: "
                             f"{', '.join(present) or 'none'}")
        return requested, "chosen with --baseline"
    if len(present) < 2:
        return None, "none (they need at least two models with results)"
    suite = _suite_models(results)
    declared = results.metadata.get("baseline") or (suite[0] if suite else None)
    if declared is not None:
        why = "declared in the suite (baseline:)"
    elif suite is not None and suite[1]:
        declared, why = suite[1][0], "the suite's first model (the suite declares no baseline:)"
    else:
        declared = next(m for m in table_order if m in present)
        why = "the first model of table.csv (no suite.yaml, so no declared baseline)"
    if declared not in present:
        # Its runs failed: testing against another model would be a choice made after the results.
        return None, (f"none: the baseline {declared} ({why}) has no results in table.csv, so there are no "
                      "paired tests; name another with --baseline")
    return declared, why
