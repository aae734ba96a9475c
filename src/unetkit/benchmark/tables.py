"""Rebuild the results tables (runs.csv, table.csv, zero_shot.csv, cases.csv) from ``runs/*/``.

The tables are never appended to: they are derived from every run's ``run.json``,
``summary.json`` and ``spec.json`` each time, so they always agree with the runs on disk
(after a resume, a retry or a crash of the driver). Formats: docs/benchmark_results.md.
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
TABLE_COLUMNS = ("model", "dataset", "case", "source_dataset", "fold", "run_id", *(m for m, _ in METRICS),
                 *EFFICIENCY)
CASES_COLUMNS = ("run_id", "model", "dataset", "source_dataset", "fold", "case", "label", "label_name",
                 *(m for m, _ in METRICS), "image_path", "reference_path", "prediction_path")
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


def _case_rows(record: dict[str, Any]) -> tuple[list[dict], list[dict]]:
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
        row = {**base, "case": case}
        for column, metric in METRICS:
            row[column] = foreground_mean([entry["metrics"][k][metric] for k in summary["labels"]])
        for column in EFFICIENCY:
            row[column] = record.get(column)
        table.append(row)
        prediction = Path(entry["prediction_file"])
        for key in summary["labels"]:
            crow = {**base, "case": case, "label": key, "label_name": summary["label_names"].get(key, key),
                    "image_path": ";".join(images.get(case, [])), "reference_path": str(Path(entry["reference_file"]).resolve()),
                    "prediction_path": str(pred_dir / prediction.name)}
            for column, metric in METRICS:
                crow[column] = entry["metrics"][key][metric]
            cases.append(crow)
    return table, cases


def rebuild_tables(results: str | Path) -> dict[str, int]:
    """Write runs.csv, table.csv, zero_shot.csv and cases.csv from ``runs/*/``; returns row counts."""
    results = Path(results)
    records = load_runs(results)
    table, zero_shot, cases, runs = [], [], [], []
    for record in records:
        row = dict(record)
        row["error"] = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
        runs.append(row)
        if record.get("status") != "done":
            continue
        t_rows, c_rows = _case_rows(record)
        (zero_shot if record["kind"] == "zero_shot" else table).extend(t_rows)
        cases.extend(c_rows)
    write_csv(results / "runs.csv", RUNS_COLUMNS, runs)
    write_csv(results / "table.csv", TABLE_COLUMNS, table)
    write_csv(results / "zero_shot.csv", TABLE_COLUMNS, zero_shot)
    write_csv(results / "cases.csv", CASES_COLUMNS, cases)
    return {"runs": len(runs), "table": len(table), "zero_shot": len(zero_shot), "cases": len(cases)}
