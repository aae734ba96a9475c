"""Read a benchmark results folder (docs/benchmark_results.md) for the report.

Only reads; every problem is a :class:`~unetkit.data.errors.DataError` naming the file (and the
line), so ``unetkit report`` answers with one actionable line. Required: ``metadata.json``,
``runs.csv`` and ``table.csv``; ``datasets.json``, ``zero_shot.csv`` and ``cases.csv`` are
optional (their sections say why they are absent).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetkit.data.errors import DataError

from .stats import load_table

#: Numeric columns of table.csv / zero_shot.csv the report reads when present.
NUMERIC_COLUMNS = ("dice", "iou", "precision", "recall", "hd95", "nsd", "n_labels", "n_empty_reference",
                   "diagonal_mm", "params_m", "gflops", "latency_ms", "fps")
RUNS_REQUIRED = ("run_id", "model", "dataset", "status")


@dataclass
class BenchmarkResults:
    """The parsed contents of a results folder (CSV rows stay dicts of strings)."""

    root: Path
    metadata: dict[str, Any]
    datasets: dict[str, Any]
    runs: list[dict[str, str]]
    table: list[dict[str, Any]]
    zero_shot: list[dict[str, Any]] | None
    cases: list[dict[str, str]] | None
    columns: list[str]
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise DataError("file not found; is this a results folder written by `unetkit bench`? "
                            "(docs/benchmark_results.md)", path)
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path) from exc
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, found {type(value).__name__}", path)
    return value


def _read_csv(path: Path, required_columns: tuple[str, ...]) -> tuple[list[dict[str, str]], list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV ({exc})", path) from exc
    if not columns:
        raise DataError(f"empty file; expected a header with {', '.join(required_columns)}", path)
    missing = [c for c in required_columns if c not in columns]
    if missing:
        raise DataError(f"header lacks column(s) {', '.join(missing)}; found {', '.join(columns)}", path)
    for index, row in enumerate(rows):
        if None in row:  # DictReader puts surplus cells under the key None
            raise DataError(f"line {index + 2} has more cells than the header", path)
    return rows, columns


def _read_tidy(path: Path, metric: str) -> tuple[list[dict[str, Any]], list[str]]:
    """A tidy table: keys checked by stats.load_table, numbers checked here (with the line)."""
    rows, columns = _read_csv(path, ("model", "dataset", "case", metric))
    try:
        table = load_table(rows)
    except ValueError as exc:
        # load_table counts data rows from 1; the file's line is one more (the header).
        raise DataError(f"{exc} (row N is line N + 1)", path) from exc
    for index, row in enumerate(table):
        for column in NUMERIC_COLUMNS:
            value = row.get(column)
            if value is None or str(value).strip() == "":
                continue
            try:
                float(value)
            except ValueError:
                raise DataError(f"line {index + 2}: {column}={value!r} is not a number (use nan for undefined, "
                                "inf for a missed structure)", path) from None
    return table, columns


def load_results(root: str | Path, metric: str = "dice") -> BenchmarkResults:
    """Read and check the files of a results folder; ``metric`` must be a table.csv column."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("results folder not found", root)
    metadata = _read_json(root / "metadata.json", required=True)
    notes = []
    datasets = _read_json(root / "datasets.json", required=False)
    if datasets is None:
        notes.append("datasets.json is absent: dataset descriptions are not shown.")
        datasets = {}
    runs_path = root / "runs.csv"
    if not runs_path.is_file():
        raise DataError("file not found; every results folder has runs.csv (docs/benchmark_results.md)", runs_path)
    runs, _ = _read_csv(runs_path, RUNS_REQUIRED)
    table_path = root / "table.csv"
    if not table_path.is_file():
        raise DataError("file not found; every results folder has table.csv (docs/benchmark_results.md)", table_path)
    table, columns = _read_tidy(table_path, metric)
    zero_shot = None
    if (root / "zero_shot.csv").is_file():
        zero_shot, _ = _read_tidy(root / "zero_shot.csv", metric)
    cases = None
    if (root / "cases.csv").is_file():
        cases, _ = _read_csv(root / "cases.csv", ("run_id", "model", "dataset", "case", "image_path",
                                                  "reference_path", "prediction_path"))
    else:
        notes.append("cases.csv is absent: no example overlays.")
    return BenchmarkResults(root=root, metadata=metadata, datasets=datasets, runs=runs, table=table,
                            zero_shot=zero_shot, cases=cases, columns=columns, notes=notes)


def to_float(value: Any) -> float:
    """A CSV cell as float; empty or missing is NaN."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    return float(value)


def machine_label(metadata: dict[str, Any]) -> str:
    """Where efficiency was measured, from metadata.json: the GPU on CUDA, else the CPU."""
    if metadata.get("device") == "cuda" and metadata.get("gpu"):
        return f"GPU {metadata['gpu']}"
    cpu = metadata.get("cpu") or "unknown CPU"
    cores = metadata.get("cores")
    return f"CPU {cpu}" + (f", {cores} cores" if cores else "")
