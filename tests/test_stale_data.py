"""A rerun after the user fixed their data never keeps results made from the old files.

The reference for "changed" is the file system itself: a label rewritten in place (same path,
same inode, new bytes) as an editor or a script would. Each test checks the one stage output that
depends on the edited case: the fingerprint, the cache entry, the model, the predictions.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unetkit.data.io import read_label
from unetkit.data.synthetic import write_raw_dataset

torch.set_num_threads(1)

RUN_ARGS = ["--epochs", "1", "--iterations-per-epoch", "2", "--val-iterations", "1", "--num-workers", "0",
            "--batch-size", "2", "--device", "cpu", "--no-mirror", "-np", "1"]


def rewrite_png_in_place(path: Path, array: np.ndarray) -> None:
    """Overwrite ``path``'s bytes through the same inode (no rename), like an editor saving."""
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    with open(path, "r+b") as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(buffer.getvalue())


def erase_foreground(path: Path) -> np.ndarray:
    """Set a label file's foreground to background in place; returns the new label."""
    label, _ = read_label(path)
    assert (label > 0).any()
    fixed = np.zeros_like(label)
    rewrite_png_in_place(path, fixed)
    return fixed


@pytest.fixture
def raw(tmp_path) -> Path:
    """A tiny 2D dataset: 6 training cases and 2 labelled test cases (imagesTs/labelsTs)."""
    root = write_raw_dataset(tmp_path / "Tiny2D", num_cases=8, ndim=2, num_classes=1, shape_range=(40, 48))
    for folder in ("imagesTs", "labelsTs"):
        (root / folder).mkdir()
    for case in ("case_006", "case_007"):
        shutil.move(root / "imagesTr" / f"{case}_0000.png", root / "imagesTs" / f"{case}_0000.png")
        shutil.move(root / "labelsTr" / f"{case}.png", root / "labelsTs" / f"{case}.png")
    spec = json.loads((root / "dataset.json").read_text())
    spec["numTraining"] = 6
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_run_after_a_label_fix_redoes_cache_and_refuses_the_old_model(raw, tmp_path, capsys) -> None:
    from unetkit.cli import main

    work = tmp_path / "work"
    assert main(["run", str(raw), "--workdir", str(work), *RUN_ARGS]) == 0
    root = work / raw.name
    fold = root / "models" / "2d__plain_unet" / "fold_0"
    cache = root / "preprocessed" / "2d"
    predictions = root / "predictions" / "2d__plain_unet"
    old_props = json.loads((cache / "case_001.json").read_text())
    old_weights = (fold / "checkpoint_final.safetensors").read_bytes()
    prediction_stamp = (predictions / "case_006.png").stat().st_mtime_ns
    capsys.readouterr()

    erase_foreground(raw / "labelsTr" / "case_001.png")
    assert main(["run", str(raw), "--workdir", str(work), *RUN_ARGS]) == 1
    err = capsys.readouterr().err
    assert "case_001" in err and "--on-changed-data retrain" in err and "--on-changed-data reuse" in err
    # The fingerprint and the one changed cache entry are already the new ones.
    fingerprint = json.loads((root / "fingerprint.json").read_text())
    props = json.loads((cache / "case_001.json").read_text())
    assert props["raw_signature"] == fingerprint["case_signatures"]["case_001"] != old_props["raw_signature"]
    assert not np.load(cache / "case_001_seg.npy").any()  # the label without foreground
    # The old model was neither resumed nor used for predictions.
    assert (fold / "checkpoint_final.safetensors").read_bytes() == old_weights
    assert (predictions / "case_006.png").stat().st_mtime_ns == prediction_stamp

    assert main(["run", str(raw), "--workdir", str(work), *RUN_ARGS, "--on-changed-data", "retrain"]) == 0
    meta = json.loads((fold / "checkpoint_final.json").read_text())
    assert meta["data_signatures"]["case_001"] == props["raw_signature"]
    assert (fold / "checkpoint_final.safetensors").read_bytes() != old_weights
    assert "trained again from scratch" in (fold / "train.log").read_text()
    assert (predictions / "case_006.png").stat().st_mtime_ns != prediction_stamp


def test_predictions_of_an_edited_test_image_are_redone(raw, tmp_path) -> None:
    from unetkit.pipeline import run_pipeline

    overrides = {"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1, "num_workers": 0, "batch_size": 2}
    result = run_pipeline(raw, tmp_path / "w", overrides=overrides, device="cpu", mirror=False, num_processes=1,
                          validate=False)
    stamps = {c: (result.predictions / f"{c}.png").stat().st_mtime_ns for c in ("case_006", "case_007")}
    image = np.asarray(Image.open(raw / "imagesTs" / "case_006_0000.png"))
    rewrite_png_in_place(raw / "imagesTs" / "case_006_0000.png", np.flip(image, axis=0))
    run_pipeline(raw, tmp_path / "w", overrides=overrides, device="cpu", mirror=False, num_processes=1,
                 validate=False)
    assert (result.predictions / "case_006.png").stat().st_mtime_ns != stamps["case_006"]
    assert (result.predictions / "case_007.png").stat().st_mtime_ns == stamps["case_007"]


def test_preprocess_redoes_only_changed_cases_and_drops_removed_ones(raw, tmp_path) -> None:
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset

    work = tmp_path / "w"
    plan_dataset(raw, work, num_processes=1)
    first = preprocess_dataset(raw, work, num_processes=1, progress=False)
    assert first.processed["2d"] == 6
    erase_foreground(raw / "labelsTr" / "case_002.png")
    for f in (raw / "imagesTr" / "case_005_0000.png", raw / "labelsTr" / "case_005.png"):
        f.unlink()
    spec = json.loads((raw / "dataset.json").read_text())
    spec["numTraining"] = 5
    (raw / "dataset.json").write_text(json.dumps(spec))
    lines: list[str] = []
    plan_dataset(raw, work, num_processes=1, log=lines.append)
    assert any("out of date" in line and "changed: case_002" in line and "removed: case_005" in line
               for line in lines), lines
    again = preprocess_dataset(raw, work, num_processes=1, progress=False)
    assert again.processed["2d"] == 1 and again.skipped["2d"] == 4
    assert again.changed == ["case_002"] and again.removed == ["case_005"]
    cache = work / raw.name / "preprocessed" / "2d"
    assert not (cache / "case_005.json").exists() and not (cache / "case_005.npy").exists()
    assert not np.load(cache / "case_002_seg.npy").any()


def test_train_resume_refuses_a_checkpoint_of_other_data(raw, tmp_path) -> None:
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import TrainingError, train

    work = tmp_path / "w"
    plan_dataset(raw, work, num_processes=1)
    preprocess_dataset(raw, work, num_processes=1, progress=False)
    overrides = {"epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1, "num_workers": 0, "batch_size": 2,
                 "device": "cpu"}
    train(work, raw, "2d", 0, overrides, echo=False)
    erase_foreground(raw / "labelsTr" / "case_003.png")
    preprocess_dataset(raw, work, num_processes=1, progress=False)
    with pytest.raises(TrainingError, match="changed: case_003"):
        train(work, raw, "2d", 0, overrides, resume=True, echo=False)
    kept = train(work, raw, "2d", 0, overrides, resume=True, echo=False, on_changed_data="reuse")
    assert kept.seconds_per_iteration is None  # nothing trained: the old model was kept as asked
    assert "continuing with checkpoint_final although the training data changed since (changed: case_003)" \
        in (kept.output_dir / "train.log").read_text()


def test_bench_runs_again_when_a_training_label_changed(tmp_path) -> None:
    from unetkit.benchmark.runner import run_benchmark

    write_raw_dataset(tmp_path / "SynA", num_cases=6, ndim=2, num_classes=1, shape_range=(40, 48))
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: tiny\ndatasets:\n  SynA: {raw: SynA, test: {every: 3, offset: 2}}\n"
                     "models:\n  - {name: plain_unet, kwargs: {n_stages: 4, features_per_stage: [4, 8, 16, 32]}}\n"
                     "budget: {epochs: 1, iterations_per_epoch: 1, val_iterations: 1, batch_size: 2, "
                     "num_workers: 0, planner: {device: cpu}}\npredict: {mirror: false}\n"
                     "efficiency: {repeats: 1, warmup: 0}\n", encoding="utf-8")
    out = tmp_path / "results"
    run_benchmark(suite, out, jobs=1, threads=1, log=lambda m: None)
    run = out / "runs" / "SynA__plain_unet__test"
    first = json.loads((run / "run.json").read_text())
    assert first["status"] == "done"
    lines: list[str] = []
    run_benchmark(suite, out, jobs=1, threads=1, log=lines.append)
    assert json.loads((run / "run.json").read_text())["finished_at"] == first["finished_at"]  # nothing changed

    erase_foreground(tmp_path / "SynA" / "labelsTr" / "case_000.png")  # a training case (test: 2 and 5)
    lines.clear()
    run_benchmark(suite, out, jobs=1, threads=1, log=lines.append)
    assert any("data changed" in line and "changed: case_000" in line for line in lines), lines
    again = json.loads((run / "run.json").read_text())
    assert again["status"] == "done" and again["finished_at"] != first["finished_at"]
    meta = json.loads((Path(again["model_dir"]) / "checkpoint_final.json").read_text())
    view_cache = out / "work" / "SynA" / "preprocessed" / "2d" / "case_000.json"
    assert meta["data_signatures"]["case_000"] == json.loads(view_cache.read_text())["raw_signature"]


def test_train_refuses_a_cache_older_than_the_raw_files(raw, tmp_path) -> None:
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import TrainingError, train

    work = tmp_path / "w"
    plan_dataset(raw, work, num_processes=1)
    preprocess_dataset(raw, work, num_processes=1, progress=False)
    erase_foreground(raw / "labelsTr" / "case_004.png")
    overrides = {"epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1, "num_workers": 0, "batch_size": 2,
                 "device": "cpu"}
    with pytest.raises(TrainingError, match=r"case_004.*unetkit preprocess"):
        train(work, raw, "2d", 0, overrides, echo=False)
    preprocess_dataset(raw, work, num_processes=1, progress=False)
    assert train(work, raw, "2d", 0, overrides, echo=False).epochs_done == 1
