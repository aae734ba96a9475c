"""A synthetic benchmark results folder, in the format of docs/benchmark_results.md.

``write_results_folder(root)`` writes what ``unetkit bench`` would: suite.yaml, metadata.json,
datasets.json, runs.csv (with one failed run), table.csv, zero_shot.csv, cases.csv and real
image / reference / prediction files (2D grey PNG, 2D RGB PNG, 3D NIfTI with two labels), so
that ``unetkit report`` and ``unetkit advise`` can be tested without training anything.

The per-case metrics are seeded random numbers with the structure real results have: a
per-case difficulty shared by all models (so paired tests see paired data), a per-model
quality offset, one missed structure (HD95 = inf) and one undefined precision (NaN). The
predictions are the reference shifted by a few pixels (more for lower Dice), so overlays look
like segmentations; they do not reproduce the table's numbers exactly.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from unetkit.data.io import Geometry, write_image, write_label

# model -> (Dice offset, params in millions, 2D GFLOPs, 2D latency ms). Values in the range of
# `unetkit models`; the offsets order the models clearly enough for the tests to see ranks.
MODELS: dict[str, tuple[float, float, float, float]] = {
    "plain_unet": (0.00, 7.77, 18.4, 21.0),
    "resenc_unet": (0.03, 37.7, 43.6, 48.0),
    "mednext_s": (0.01, 5.47, 13.5, 30.0),
    "attention_unet": (-0.02, 2.38, 5.91, 12.0),
    "egeunet": (-0.08, 0.05, 0.10, 4.0),
}

# dataset -> (dims, channels, foreground labels, file ending, base Dice)
DATASETS: dict[str, tuple[int, int, dict[str, int], str, float]] = {
    "Retina2D": (2, 1, {"vessel": 1}, ".png", 0.78),
    "Skin2D": (2, 3, {"lesion": 1}, ".png", 0.86),
    "Spleen3D": (3, 1, {"spleen": 1, "lesion": 2}, ".nii.gz", 0.90),
}

RUNS_COLUMNS = ["run_id", "kind", "model", "dataset", "source_dataset", "configuration", "fold", "status",
                "error", "iterations", "train_seconds", "seconds_per_iteration", "predict_seconds_per_case",
                "num_test_cases", "mean_dice", "params_m", "gflops", "latency_ms", "fps", "patch_size",
                "device", "model_dir", "prediction_dir", "finished_at"]
TABLE_COLUMNS = ["model", "dataset", "case", "source_dataset", "fold", "run_id", "dice", "iou", "precision",
                 "recall", "hd95", "nsd", "params_m", "gflops", "latency_ms", "fps"]
CASES_COLUMNS = ["run_id", "model", "dataset", "source_dataset", "fold", "case", "label", "label_name", "dice",
                 "iou", "precision", "recall", "hd95", "nsd", "image_path", "reference_path", "prediction_path"]
FAILED_ERROR = "RuntimeError: out of memory while allocating 2.1 GiB for the activations"


def write_csv(path: Path, columns: list[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as CSV; floats as repr (so nan/inf round-trip as 'nan'/'inf')."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(row.get(c, "")) for c in columns})


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else repr(value))
    return "" if value is None else str(value)


def _case_arrays(rng: np.random.Generator, dims: int, channels: int, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(image (C, *spatial), label) with an elliptic structure (label 2: its core)."""
    shape = (64, 64) if dims == 2 else (16, 40, 40)
    grids = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    centre = [s / 2 + rng.uniform(-s / 8, s / 8) for s in shape]
    radii = [s * rng.uniform(0.18, 0.3) for s in shape]
    distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    label = (distance <= 1.0).astype(np.int16)
    if n_labels > 1:
        label[distance <= 0.3] = 2
    noise = rng.normal(0.0, 12.0, (channels, *shape))
    if channels == 3:  # a reddish lesion on skin-coloured background
        skin = np.array([205.0, 160.0, 135.0]).reshape(3, *([1] * dims))
        lesion = np.array([120.0, 60.0, 50.0]).reshape(3, *([1] * dims))
        image = np.where(label[None] > 0, lesion, skin) + noise
    else:
        image = 60.0 + 120.0 * (label[None] > 0) + 40.0 * (label[None] == 2) + noise
    if dims == 2:
        image = np.clip(image, 0, 255).astype(np.uint8)
    else:
        image = image.astype(np.float32)
    return image, label


def _prediction(reference: np.ndarray, dice: float) -> np.ndarray:
    """The reference shifted along the last axis by more pixels the lower the Dice."""
    shift = int(round((1.0 - dice) * 10))
    return np.roll(reference, shift, axis=-1)


def write_results_folder(root: str | Path, *, models: Iterable[str] | None = None,
                         datasets: Iterable[str] | None = None, num_cases: int = 12, seed: int = 0,
                         failed: tuple[str, str] | None = ("Skin2D", "resenc_unet"),
                         zero_shot: bool = True, images: bool = True) -> Path:
    """Write a results folder at ``root`` and return it.

    Args:
        models: names from :data:`MODELS` (default: all five).
        datasets: names from :data:`DATASETS` (default: all three).
        num_cases: test cases per dataset.
        failed: ``(dataset, model)`` whose run failed (a runs.csv row with status ``failed`` and
            an error, runs/RUN_ID/error.txt, no table rows), or ``None``.
        zero_shot: write zero-shot rows (models trained on the first dataset evaluated on the
            second) when there are two datasets or more; otherwise zero_shot.csv has a header only.
        images: write image, reference and prediction files (cases.csv points at them).
    """
    root = Path(root)
    models = list(models) if models is not None else list(MODELS)
    datasets = list(datasets) if datasets is not None else list(DATASETS)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "suite.yaml").write_text(
        "name: synthetic\nmodels: [" + ", ".join(models) + "]\ndatasets:\n"
        + "".join(f"  {d}: raw/{d}\n" for d in datasets), encoding="utf-8")
    metadata = {"unetkit": "0.1.0", "torch": "2.13.0", "python": "3.11.2", "platform": "Linux-x86_64",
                "cpu": "Synthetic CPU @ 2.0GHz", "cores": 2, "memory_gb": 8.0, "gpu": None, "device": "cpu",
                "suite": "synthetic", "started_at": "2025-01-01T10:00:00", "finished_at": "2025-01-01T12:00:00",
                "command": "unetkit bench suite.yaml --output " + str(root)}
    (root / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")

    info: dict[str, Any] = {}
    cases_of: dict[str, list[tuple[str, list[str], str, np.ndarray, Geometry]]] = {}
    for dataset in datasets:
        dims, channels, labels, ending, _ = DATASETS[dataset]
        raw = root / "raw" / dataset
        geometry = Geometry(spacing=(1.0, 1.0)) if dims == 2 else \
            Geometry(spacing=(3.0, 0.8, 0.8), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel().tolist()))
        entries = []
        for i in range(num_cases):
            case = f"{dataset.lower()}_{i:03d}"
            image, label = _case_arrays(rng, dims, channels, len(labels))
            image_paths = []
            if images:
                if dims == 2:  # pictures keep their channels in one file
                    path = raw / "imagesTs" / f"{case}_0000{ending}"
                    write_image(image, path, geometry)
                    image_paths.append(str(path.resolve()))
                else:
                    for c in range(channels):
                        path = raw / "imagesTs" / f"{case}_{c:04d}{ending}"
                        write_image(image[c:c + 1], path, geometry)
                        image_paths.append(str(path.resolve()))
                reference = raw / "labelsTs" / f"{case}{ending}"
                write_label(label, reference, geometry)
            else:
                reference = raw / "labelsTs" / f"{case}{ending}"
            entries.append((case, image_paths, str(reference.resolve()), label, geometry))
        cases_of[dataset] = entries
        info[dataset] = {"raw": str(raw.resolve()), "configuration": "2d" if dims == 2 else "3d_fullres",
                         "dims": dims, "modality": ({"0": "R", "1": "G", "2": "B"} if channels == 3 else
                                      {"0": "fundus" if dims == 2 else "CT"}),
                         "num_cases": num_cases, "num_test_cases": num_cases,
                         "labels": {"background": 0, **labels}, "file_ending": ending,
                         "median_shape": [64, 64] if dims == 2 else [16, 40, 40],
                         "median_spacing": list(geometry.spacing), "foreground_fraction": 0.12,
                         "fingerprint": str((root / "work" / dataset / "fingerprint.json").resolve()),
                         "plans": str((root / "work" / dataset / "plans.json").resolve())}
    (root / "datasets.json").write_text(json.dumps(info, indent=2), encoding="utf-8")

    runs, table, zero_rows, case_rows = [], [], [], []

    def evaluate(run_id: str, model: str, dataset: str, source: str, difficulty: np.ndarray,
                 offset: float) -> tuple[list[dict], float]:
        """Per-case rows of one run (and the case-level rows of cases.csv)."""
        dims, _, labels, ending, base = DATASETS[dataset]
        _, params, gflops, latency = MODELS[model]
        scale = 1.0 if dims == 2 else 20.0  # 3D patches cost more
        efficiency = {"params_m": params, "gflops": gflops * scale, "latency_ms": latency * scale,
                      "fps": 1000.0 / (latency * scale)}
        rows = []
        for index, (case, image_paths, reference, label, geometry) in enumerate(cases_of[dataset]):
            dice = float(np.clip(base + offset + difficulty[index] + rng.normal(0, 0.02), 0.05, 0.99))
            hd95 = float((1.0 - dice) * 40.0 + rng.uniform(0, 2))
            if dims == 3 and index == 0 and model == "egeunet":
                hd95 = math.inf  # a missed structure
            precision = math.nan if (dims == 2 and index == 1 and model == "egeunet") else \
                float(np.clip(dice + rng.normal(0, 0.03), 0, 1))
            row = {"model": model, "dataset": dataset, "case": case, "source_dataset": source, "fold": "test",
                   "run_id": run_id, "dice": dice, "iou": dice / (2.0 - dice), "precision": precision,
                   "recall": float(np.clip(dice + rng.normal(0, 0.03), 0, 1)), "hd95": hd95,
                   "nsd": float(np.clip(dice + 0.05 + rng.normal(0, 0.02), 0, 1)), **efficiency}
            rows.append(row)
            prediction = root / "runs" / run_id / "predictions" / f"{case}{ending}"
            if images:
                write_label(_prediction(label, dice), prediction, geometry)
            for name, value in labels.items():
                case_rows.append({**{k: row[k] for k in ("run_id", "model", "dataset", "source_dataset", "fold",
                                                          "case", "dice", "iou", "precision", "recall", "hd95",
                                                          "nsd")},
                                  "label": value, "label_name": name, "image_path": ";".join(image_paths),
                                  "reference_path": reference, "prediction_path": str(prediction.resolve())})
        return rows, efficiency

    def run_row(run_id: str, kind: str, model: str, dataset: str, source: str, status: str, error: str,
                rows: list[dict], efficiency: Mapping[str, float]) -> dict:
        dims = DATASETS[source][0]
        dice = [r["dice"] for r in rows]
        return {"run_id": run_id, "kind": kind, "model": model, "dataset": dataset, "source_dataset": source,
                "configuration": "2d" if dims == 2 else "3d_fullres", "fold": "test", "status": status,
                "error": error, "iterations": 50, "train_seconds": 120.0, "seconds_per_iteration": 2.4,
                "predict_seconds_per_case": 0.3, "num_test_cases": len(rows),
                "mean_dice": float(np.mean(dice)) if dice else math.nan, **efficiency,
                "patch_size": "64x64" if dims == 2 else "16x40x40", "device": "cpu",
                "model_dir": str(root / "work" / source / "models" / f"x__{model}"),
                "prediction_dir": str(root / "runs" / run_id / "predictions"),
                "finished_at": "2025-01-01T11:00:00"}

    for dataset in datasets:
        difficulty = rng.normal(0, 0.05, num_cases)
        difficulty[-1] -= 0.25  # one hard case for everyone
        for model in models:
            run_id = f"{dataset}__{model}__test"
            (root / "runs" / run_id).mkdir(parents=True, exist_ok=True)
            if failed is not None and (dataset, model) == tuple(failed):
                (root / "runs" / run_id / "error.txt").write_text(
                    "Traceback (most recent call last):\n  ...\n" + FAILED_ERROR + "\n", encoding="utf-8")
                runs.append(run_row(run_id, "in_domain", model, dataset, dataset, "failed", FAILED_ERROR, [],
                                    {"params_m": MODELS[model][1], "gflops": math.nan, "latency_ms": math.nan,
                                     "fps": math.nan}))
                continue
            rows, efficiency = evaluate(run_id, model, dataset, dataset, difficulty, MODELS[model][0])
            table.extend(rows)
            runs.append(run_row(run_id, "in_domain", model, dataset, dataset, "done", "", rows, efficiency))
    if zero_shot and len(datasets) >= 2:
        source, target = datasets[0], datasets[1]
        difficulty = rng.normal(0, 0.08, num_cases)
        for model in models[:3]:
            run_id = f"{source}__{model}__test__on__{target}"
            rows, efficiency = evaluate(run_id, model, target, source, difficulty, MODELS[model][0] - 0.3)
            zero_rows.extend(rows)
            runs.append(run_row(run_id, "zero_shot", model, target, source, "done", "", rows, efficiency))

    write_csv(root / "runs.csv", RUNS_COLUMNS, runs)
    write_csv(root / "table.csv", TABLE_COLUMNS, table)
    write_csv(root / "zero_shot.csv", TABLE_COLUMNS, zero_rows)
    write_csv(root / "cases.csv", CASES_COLUMNS, case_rows)
    return root


def write_table_results(root: str | Path, rows: Iterable[Mapping[str, Any]], *, suite: str | None = None,
                        datasets: Mapping[str, Any] | None = None) -> Path:
    """A minimal results folder around a hand-made table: metadata.json, runs.csv (one done run
    per model and dataset), table.csv with the rows' columns, and optionally suite.yaml text and
    datasets.json. For tests whose right answer is worked out by hand from ``rows``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    metadata = {"suite": "hand_made", "cpu": "Synthetic CPU", "cores": 2, "device": "cpu",
                "started_at": "2025-01-01T10:00:00", "finished_at": "2025-01-01T10:01:00", "command": "hand-made"}
    (root / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    if suite is not None:
        (root / "suite.yaml").write_text(suite, encoding="utf-8")
    if datasets is not None:
        (root / "datasets.json").write_text(json.dumps(datasets), encoding="utf-8")
    pairs = list(dict.fromkeys((r["model"], r["dataset"]) for r in rows))
    runs = [{"run_id": f"{d}__{m}__test", "kind": "in_domain", "model": m, "dataset": d, "source_dataset": d,
             "fold": "test", "status": "done"} for m, d in pairs]
    write_csv(root / "runs.csv", RUNS_COLUMNS, runs)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv(root / "table.csv", columns, rows)
    return root
