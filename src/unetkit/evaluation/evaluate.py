"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files are paired by case name and file ending (``CASE.nii.gz`` in both folders). Every case
is evaluated with :func:`unetkit.evaluation.metrics.compute_metrics`, using the spacing of the
**reference** file (the prediction must lie on the same grid: same shape and geometry), in a
process pool. Results go to ``summary.json`` (per case and aggregated) and ``per_case.csv``
(one row per case and label), both written atomically.

JSON has no NaN or infinity: in ``summary.json`` an undefined value (NaN) is written as
``null`` and an infinite distance as the string ``"inf"``; :func:`load_summary` turns them back
into floats.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import SUPPORTED_ENDINGS, file_ending, read_label
from unetkit.evaluation.metrics import (ALL_METRICS, COUNT_KEYS, OVERLAP_METRICS, SURFACE_METRICS, LabelOrRegion,
                                        compute_metrics, label_key, normalize_label, parse_label_key)
from unetkit.utils.atomic import TMP_PREFIX, atomic_write_json, atomic_write_text, read_json

SUMMARY_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------- labels

def resolve_labels(labels: Mapping[str, Any] | Iterable[int | Sequence[int]],
                   ignore_label: int | None = None) -> tuple[list[LabelOrRegion], dict[str, str], int | None]:
    """Labels to evaluate, their names and the ignore label.

    ``labels`` is either a list of values/regions (``[1, 2, (1, 2)]``) or a dataset.json /
    plans.json ``labels`` mapping (``{"background": 0, "liver": 1, "ignore": 3}``), from which
    background (0) and ``ignore`` are dropped and the ignore value is taken.

    Returns:
        (labels or regions, ``{label_key: name}``, ignore label).
    """
    names: dict[str, str] = {}
    result: list[LabelOrRegion] = []
    if isinstance(labels, Mapping):
        for name, value in labels.items():
            if name == "ignore":
                if ignore_label is None:
                    ignore_label = int(value)
                continue
            label = normalize_label(value)
            if label == 0 or name == "background":
                continue
            result.append(label)
            names[label_key(label)] = str(name)
    else:
        for value in labels:
            label = normalize_label(value)
            result.append(label)
    if not result:
        raise ValueError("no foreground labels to evaluate (background 0 and the ignore label are never evaluated)")
    keys = [label_key(v) for v in result]
    duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)
    if duplicates:
        raise ValueError(f"labels listed twice: {duplicates}")
    return result, names, ignore_label


# ----------------------------------------------------------------------------------- pairing

def list_label_files(folder: str | Path, file_ending_: str | None = None) -> dict[str, Path]:
    """``{case: path}`` of the label files in ``folder`` with the given ending.

    Without an ending, the folder's files must share one supported ending (found by counting);
    hidden and temporary files are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("folder not found", folder)
    files = [f for f in sorted(folder.iterdir())
             if f.is_file() and not f.name.startswith(".") and not f.name.startswith(TMP_PREFIX)]
    if file_ending_ is None:
        endings = Counter(file_ending(f) for f in files if file_ending(f))
        if not endings:
            raise DataError(f"no label files found (supported endings: {', '.join(SUPPORTED_ENDINGS)})", folder)
        if len(endings) > 1:
            found = ", ".join(f"{e} ({n})" for e, n in endings.most_common())
            raise DataError(f"files with several endings found ({found}); choose one with --file-ending", folder)
        file_ending_ = next(iter(endings))
    ending = file_ending_.lower()
    return {f.name[: len(f.name) - len(ending)]: f for f in files if f.name.lower().endswith(ending)}


def pair_folders(pred_dir: str | Path, gt_dir: str | Path, file_ending_: str | None = None,
                 allow_missing: bool = False) -> tuple[list[tuple[str, Path, Path]], list[str], str]:
    """Pair predictions with references by case name.

    Returns:
        ``([(case, prediction, reference), ...], cases without a prediction, file ending)``.

    Raises:
        DataError: a prediction has no reference; or references lack a prediction and
            ``allow_missing`` is false (the message lists them).
    """
    gt_files = list_label_files(gt_dir, file_ending_)
    if not gt_files:
        raise DataError(f"no reference files ending in {file_ending_}", gt_dir)
    ending = file_ending_ or file_ending(next(iter(gt_files.values())))
    pred_files = list_label_files(pred_dir, ending)
    if not pred_files:
        raise DataError(f"no predictions ending in {ending} (the references end in {ending})", pred_dir)
    orphans = sorted(set(pred_files) - set(gt_files))
    if orphans:
        raise DataError(f"{len(orphans)} prediction(s) have no reference in {gt_dir}: "
                        f"{_list_some(orphans)}", pred_dir)
    missing = sorted(set(gt_files) - set(pred_files))
    if missing and not allow_missing:
        raise DataError(f"{len(missing)} of {len(gt_files)} reference cases have no prediction{ending} here: "
                        f"{_list_some(missing)}; predict them, or pass --allow-missing to evaluate the "
                        f"{len(pred_files)} present", pred_dir)
    pairs = [(case, pred_files[case], gt_files[case]) for case in sorted(pred_files)]
    return pairs, missing, ending


def _list_some(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ----------------------------------------------------------------------------------- one case

def evaluate_case(case: str, pred_path: str | Path, gt_path: str | Path, labels: Sequence[LabelOrRegion],
                  tolerance: float | Mapping[str, float] = 1.0, ignore_label: int | None = None,
                  empty_value: float = math.nan, surface: bool = True) -> dict[str, Any]:
    """Read one prediction and its reference and compute every metric (spacing: the reference's)."""
    gt, gt_geo = read_label(gt_path, case)
    pred, pred_geo = read_label(pred_path, case)
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from the reference's {tuple(gt.shape)} "
                        f"({gt_path}); predictions must be on the reference grid", pred_path, case)
    if not pred_geo.matches(gt_geo):
        raise DataError(f"prediction geometry (spacing {pred_geo.spacing}, origin {pred_geo.origin}) differs from "
                        f"the reference's (spacing {gt_geo.spacing}, origin {gt_geo.origin}, {gt_path})",
                        pred_path, case)
    metrics = compute_metrics(pred, gt, gt_geo.spacing, labels, tolerance, ignore_label, empty_value, surface)
    return {"case": case, "prediction_file": str(pred_path), "reference_file": str(gt_path),
            "spacing": list(gt_geo.spacing), "metrics": metrics}


def _evaluate_case_args(args: tuple) -> dict[str, Any]:
    return evaluate_case(*args)


def default_num_processes() -> int:
    """Worker processes for per-case work: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def map_cases(fn: Callable[[tuple], Any], jobs: list[tuple], num_processes: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``[fn(job) for job in jobs]``, in a spawn process pool when more than one process is asked.

    Spawn, not fork: the caller may hold torch/CUDA threads, which fork can deadlock.
    """
    n = default_num_processes() if num_processes is None else max(1, int(num_processes))
    n = min(n, len(jobs)) if jobs else 1
    results: list[Any] = []
    if n <= 1:
        for i, job in enumerate(jobs):
            results.append(fn(job))
            if progress:
                progress(i + 1, len(jobs))
        return results
    with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn")) as pool:
        for i, result in enumerate(pool.map(fn, jobs, chunksize=1)):
            results.append(result)
            if progress:
                progress(i + 1, len(jobs))
    return results


# ----------------------------------------------------------------------------------- aggregation

def summarize(per_case: list[dict[str, Any]], label_keys: Sequence[str],
              metrics: Sequence[str]) -> dict[str, Any]:
    """Mean, median and std over cases per label and metric, and the foreground mean.

    NaN values (undefined: e.g. Dice with both masks empty) are left out, as nnU-Net's
    ``np.nanmean``; ``count`` says how many cases each statistic is over. An infinite distance
    (one mask empty) is kept, so a mean HD95 of ``inf`` says a structure was missed entirely.
    Counts (TP, FP, ...) are summed over cases instead. ``foreground_mean`` is the mean over
    labels of the per-label means (NaN labels left out; nnU-Net takes a plain mean).
    """
    stats: dict[str, dict[str, dict[str, float]]] = {"mean": {}, "median": {}, "std": {}, "count": {}, "sum": {}}
    for key in label_keys:
        for name in stats:
            stats[name][key] = {}
        for metric in metrics:
            values = np.array([c["metrics"][key][metric] for c in per_case], dtype=np.float64)
            if metric in COUNT_KEYS:
                stats["sum"][key][metric] = float(values.sum())
                continue
            defined = values[~np.isnan(values)]
            stats["count"][key][metric] = int(defined.size)
            if defined.size == 0:
                mean = median = std = math.nan
            else:
                with np.errstate(invalid="ignore"):
                    mean = float(np.mean(defined))
                    median = float(np.median(defined))
                    std = float(np.std(defined)) if np.all(np.isfinite(defined)) else math.nan
            stats["mean"][key][metric] = mean
            stats["median"][key][metric] = median
            stats["std"][key][metric] = std
    foreground: dict[str, float] = {}
    for metric in metrics:
        if metric in COUNT_KEYS:
            continue
        values = np.array([stats["mean"][k][metric] for k in label_keys], dtype=np.float64)
        values = values[~np.isnan(values)]
        foreground[metric] = float(np.mean(values)) if values.size else math.nan
    return {**stats, "foreground_mean": foreground}


def evaluate_pairs(pairs: Sequence[tuple[str, str | Path, str | Path]], labels: Sequence[LabelOrRegion],
                   tolerance: float | Mapping[str, float] = 1.0, ignore_label: int | None = None,
                   empty_value: float = math.nan, surface: bool = True, num_processes: int | None = None,
                   label_names: Mapping[str, str] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate ``(case, prediction, reference)`` pairs; returns the summary dictionary.

    The summary holds ``labels``, ``label_names``, ``metric_per_case`` (one entry per case with
    ``metrics[label_key][metric]``) and the aggregates of :func:`summarize`.
    """
    labels = [normalize_label(v) for v in labels]
    keys = [label_key(v) for v in labels]
    if isinstance(tolerance, Mapping):
        tolerance = {label_key(parse_label_key(str(k))): float(v) for k, v in tolerance.items()}
        lacking = [k for k in keys if k not in tolerance]
        if lacking:
            raise ValueError(f"no NSD tolerance for labels {lacking}")
        tolerance_out: Any = {k: tolerance[k] for k in keys}
    else:
        tolerance_out = {k: float(tolerance) for k in keys}
    jobs = [(case, str(p), str(g), labels, tolerance, ignore_label, empty_value, surface) for case, p, g in pairs]
    per_case = map_cases(_evaluate_case_args, jobs, num_processes, progress)
    metrics = list(OVERLAP_METRICS + (SURFACE_METRICS if surface else ()) + COUNT_KEYS)
    summary: dict[str, Any] = {
        "format_version": SUMMARY_FORMAT_VERSION,
        "labels": keys,
        "label_names": {k: (label_names or {}).get(k, k) for k in keys},
        "ignore_label": ignore_label,
        "nsd_tolerance_mm": tolerance_out,
        "empty_value": "nan (nnU-Net: both-empty cases left out of the means)" if math.isnan(empty_value)
        else float(empty_value),
        "hd95_definition": "max of the two directed 95th percentiles of surface-voxel distances (MONAI)",
        "num_cases": len(per_case),
        "metric_per_case": per_case,
    }
    summary.update(summarize(per_case, keys, metrics))
    summary["metric_per_case"] = summary.pop("metric_per_case")  # the long list last, aggregates first
    return summary


# ----------------------------------------------------------------------------------- writing

def _json_value(value: Any) -> Any:
    """NaN -> None, +-inf -> "inf"/"-inf", recursively (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    return value


def _from_json_value(value: Any, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _from_json_value(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json_value(v, key) for v in value]
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    if value is None and key in ALL_METRICS:
        return math.nan
    return value


def write_summary(summary: dict[str, Any], path: str | Path) -> None:
    """Write a summary as strict JSON (NaN -> null, inf -> "inf"), atomically."""
    atomic_write_json(path, _json_value(summary))


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a ``summary.json``, turning ``null`` metrics back into NaN and ``"inf"`` into infinity."""
    return _from_json_value(read_json(path))


def per_case_csv(summary: dict[str, Any]) -> str:
    """The per-case table as CSV text: one row per case and label, NaN as ``nan``, inf as ``inf``."""
    per_case = summary["metric_per_case"]
    keys = summary["labels"]
    metrics = [m for m in ALL_METRICS if per_case and m in per_case[0]["metrics"][keys[0]]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "label", "name", *metrics])
    for entry in per_case:
        for key in keys:
            row = entry["metrics"][key]
            cells = []
            for m in metrics:
                v = row[m]
                cells.append(str(int(v)) if m in COUNT_KEYS else repr(float(v)))
            writer.writerow([entry["case"], key, summary["label_names"].get(key, key), *cells])
    return buffer.getvalue()


def write_results(summary: dict[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``per_case.csv`` into ``output_dir`` atomically; return both paths."""
    output_dir = Path(output_dir)
    csv_path = output_dir / "per_case.csv"
    json_path = output_dir / "summary.json"
    atomic_write_text(csv_path, per_case_csv(summary))
    write_summary(summary, json_path)
    return json_path, csv_path


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path,
                     labels: Mapping[str, Any] | Iterable[int | Sequence[int]], *,
                     tolerance: float | Mapping[str, float] = 1.0, ignore_label: int | None = None,
                     file_ending: str | None = None, num_processes: int | None = None,
                     output_dir: str | Path | None = None, allow_missing: bool = False,
                     empty_value: float = math.nan, surface: bool = True,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against ``gt_dir`` and write the results.

    Args:
        pred_dir: predicted label maps, ``CASE + file_ending``.
        gt_dir: reference label maps with the same names (e.g. ``RAW/labelsTr``).
        labels: values/regions to evaluate, or a dataset.json ``labels`` mapping.
        tolerance: NSD tolerance in mm (one for all, or keyed by label key such as ``"1"``).
        ignore_label: reference value excluded from evaluation (taken from ``labels`` when it
            is a mapping with ``ignore``).
        file_ending: e.g. ``".nii.gz"``; found from ``gt_dir`` when omitted.
        num_processes: worker processes (default: CPUs, at most 8; 1 = in this process).
        output_dir: where ``summary.json`` and ``per_case.csv`` go (default ``pred_dir``);
            pass ``False``-like ``""`` to write nothing.
        allow_missing: evaluate the predictions present even if some references lack one
            (they are listed under ``missing_predictions``); otherwise that is an error.
        empty_value: overlap metric when both masks are empty (NaN: nnU-Net's convention).
        surface: compute HD95, ASSD and NSD too.

    Returns:
        The summary dictionary (see :func:`evaluate_pairs`), with NaN/inf as floats.
    """
    label_list, names, ignore_label = resolve_labels(labels, ignore_label)
    pairs, missing, ending = pair_folders(pred_dir, gt_dir, file_ending, allow_missing)
    summary = evaluate_pairs(pairs, label_list, tolerance, ignore_label, empty_value, surface, num_processes,
                             names, progress)
    summary["prediction_folder"] = str(pred_dir)
    summary["reference_folder"] = str(gt_dir)
    summary["file_ending"] = ending
    summary["missing_predictions"] = missing
    summary["metric_per_case"] = summary.pop("metric_per_case")
    if output_dir is None:
        output_dir = pred_dir
    if output_dir != "":
        write_results(summary, output_dir)
    return summary
