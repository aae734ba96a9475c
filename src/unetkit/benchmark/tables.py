"""Rebuild the results tables (runs.csv, table.csv, zero_shot.csv, cases.csv) from ``runs/*/``.

The tables are never appended to: they are derived from every run's ``run.json``,
``summary.json`` and ``spec.json`` each time, so they always agree with the runs on disk
(after a resume, a retry or a crash of the driver). Formats: docs/benchmark_results.md.

**Empty references.** ``unetkit evaluate``'s summary.json keeps nnU-Net's convention (Dice is
NaN when reference and prediction are both empty, and such labels leave the foreground mean).
A paired test drops every pair with a NaN, so a correct empty prediction (NaN) against another
model's false positive (Dice 0) would never count. The benchmark tables therefore score empty
references (MONAI's ``DiceMetric(ignore_empty=False)``): both empty = 1 for Dice, IoU,
precision, recall and NSD and 0 mm for HD95; a prediction on an empty reference keeps Dice 0,
HD95 infinite. ``n_empty_reference`` counts a case's labels whose reference is empty.
``diagonal_mm`` (the reference image's diagonal) is the declared HD95 penalty for a miss.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from unetkit.utils.atomic import atomic_write_text, read_json

#: table.csv column <- unetkit evaluate's metric name.
METRICS = (("dice", "Dice"), ("iou", "IoU"), ("precision", "Precision"), ("recall", "Recall"), ("hd95", "HD95"),
           ("nsd", "NSD"))
EFFICIENCY = ("params_m", "gflops", "latency_ms", "fps")
#: Per-case facts beside the metrics: labels evaluated, labels with an empty reference, and the
#: reference image's diagonal in mm (the HD95 penalty of a missed structure).
CASE_FACTS = ("n_labels", "n_empty_reference", "diagonal_mm")
TABLE_COLUMNS = ("model", "dataset", "case", "source_dataset", "fold", "run_id", *(m for m, _ in METRICS),
                 *CASE_FACTS, *EFFICIENCY)
CASES_COLUMNS = ("run_id", "model", "dataset", "source_dataset", "fold", "case", "label", "label_name",
                 *(m for m, _ in METRICS), "reference_empty", "image_path", "reference_path", "prediction_path")
#: Metric values of a label whose reference and prediction are both empty: a perfect answer.
BOTH_EMPTY = {"Dice": 1.0, "IoU": 1.0, "Precision": 1.0, "Recall": 1.0, "NSD": 1.0, "HD95": 0.0}
RUNS_COLUMNS = ("run_id", "kind", "model", "dataset", "source_dataset", "configuration", "fold", "status", "error",
                "iterations", "train_seconds", "seconds_per_iteration", "predict_seconds_per_case", "num_test_cases",
                "mean_dice", "params_m", "gflops", "latency_ms", "fps", "patch_size", "device", "model_dir",
                "prediction_dir", "finished_at")


def _cell(value: Any) -> str:
    """CSV text: floats as repr (``nan``, ``inf``), None as empty, lists x-separated."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buffer.getvalue())


def foreground_mean(values: Sequence[float]) -> float:
    """Mean over labels with NaN labels left out (unetkit evaluate's foreground mean); inf stays inf."""
    defined = [float(v) for v in values if not math.isnan(float(v))]
    return sum(defined) / len(defined) if defined else math.nan


def load_runs(results: Path) -> list[dict[str, Any]]:
    """Every finished run's record (``runs/*/run.json``), sorted by run id."""
    records = []
    for path in sorted((results / "runs").glob("*/run.json")):
        record = read_json(path)
        record["_folder"] = str(path.parent)
        records.append(record)
    return records


def scored_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """One label's metrics from summary.json with empty references scored (see the module doc):
    both masks empty becomes :data:`BOTH_EMPTY`; everything else is unchanged."""
    if metrics.get("n_ref") == 0 and metrics.get("n_pred") == 0:
        return {**metrics, **BOTH_EMPTY}
    return dict(metrics)


def reference_diagonal_mm(path: Path, cache: dict[Path, float]) -> float:
    """Diagonal of the reference image in mm (array shape times spacing), read once per file;
    NaN when the file can no longer be read (the report then says the penalty is unknown)."""
    from unetkit.data.errors import DataError
    from unetkit.data.io import read_label

    if path not in cache:
        try:
            array, geometry = read_label(path)
        except (DataError, OSError):
            cache[path] = math.nan
        else:
            cache[path] = math.sqrt(sum((n * s) ** 2 for n, s in zip(array.shape, geometry.spacing)))
    return cache[path]


def _case_rows(record: dict[str, Any], diagonals: dict[Path, float]) -> tuple[list[dict], list[dict]]:
    """(table rows, cases.csv rows) of one finished run."""
    from unetkit.evaluation.evaluate import load_summary

    folder = Path(record["_folder"])
    summary = load_summary(folder / "summary.json")
    spec = read_json(folder / "spec.json")
    images = spec.get("test_case_images", {})
    pred_dir = Path(record["prediction_dir"])
    base = {"model": record["model"], "dataset": record["dataset"], "source_dataset": record["source_dataset"],
            "fold": record["fold"], "run_id": record["run_id"]}
    table, cases = [], []
    for entry in summary["metric_per_case"]:
        case = entry["case"]
        scored = {key: scored_metrics(entry["metrics"][key]) for key in summary["labels"]}
        reference = Path(entry["reference_file"]).resolve()
        row = {**base, "case": case, "n_labels": len(scored),
               "n_empty_reference": sum(1 for m in scored.values() if m.get("n_ref") == 0),
               "diagonal_mm": reference_diagonal_mm(reference, diagonals)}
        for column, metric in METRICS:
            row[column] = foreground_mean([m[metric] for m in scored.values()])
        for column in EFFICIENCY:
            row[column] = record.get(column)
        table.append(row)
        prediction = Path(entry["prediction_file"])
        for key, metrics in scored.items():
            crow = {**base, "case": case, "label": key, "label_name": summary["label_names"].get(key, key),
                    "reference_empty": metrics.get("n_ref") == 0,
                    "image_path": ";".join(images.get(case, [])), "reference_path": str(reference),
                    "prediction_path": str(pred_dir / prediction.name)}
            for column, metric in METRICS:
                crow[column] = metrics[metric]
            cases.append(crow)
    return table, cases


def rebuild_tables(results: str | Path) -> dict[str, int]:
    """Write runs.csv, table.csv, zero_shot.csv and cases.csv from ``runs/*/``; returns row counts."""
    results = Path(results)
    records = load_runs(results)
    table, zero_shot, cases, runs = [], [], [], []
    diagonals: dict[Path, float] = {}
    for record in records:
        row = dict(record)
        row["error"] = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
        runs.append(row)
        if record.get("status") != "done":
            continue
        t_rows, c_rows = _case_rows(record, diagonals)
        (zero_shot if record["kind"] == "zero_shot" else table).extend(t_rows)
        cases.extend(c_rows)
    write_csv(results / "runs.csv", RUNS_COLUMNS, runs)
    write_csv(results / "table.csv", TABLE_COLUMNS, table)
    write_csv(results / "zero_shot.csv", TABLE_COLUMNS, zero_shot)
    write_csv(results / "cases.csv", CASES_COLUMNS, cases)
    return {"runs": len(runs), "table": len(table), "zero_shot": len(zero_shot), "cases": len(cases)}
