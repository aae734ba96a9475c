"""`unetkit run` / run_pipeline: every stage's file lands where the docs say, the test Dice is the
evaluator's on the written files, and a rerun continues instead of starting over."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.data.io import read_label

torch.set_num_threads(1)

SHORT = {"epochs": 1, "iterations_per_epoch": 3, "val_iterations": 1, "num_workers": 0, "batch_size": 2}


@pytest.fixture
def raw_with_test(raw2d) -> Path:
    """The tiny 2D dataset with its last two cases moved to imagesTs/labelsTs."""
    for folder in ("imagesTs", "labelsTs"):
        (raw2d / folder).mkdir()
    spec = json.loads((raw2d / "dataset.json").read_text())
    for case in ("case_006", "case_007"):
        shutil.move(raw2d / "imagesTr" / f"{case}_0000.png", raw2d / "imagesTs" / f"{case}_0000.png")
        shutil.move(raw2d / "labelsTr" / f"{case}.png", raw2d / "labelsTs" / f"{case}.png")
    spec["numTraining"] -= 2
    (raw2d / "dataset.json").write_text(json.dumps(spec))
    return raw2d


def test_run_pipeline_writes_every_stage_and_evaluates_the_test_cases(raw_with_test, tmp_path) -> None:
    from unetkit.pipeline import run_pipeline

    raw = raw_with_test
    lines: list[str] = []
    result = run_pipeline(raw, tmp_path / "work", overrides=SHORT, device="cpu", mirror=False, num_processes=1,
                          log=lines.append)
    root = tmp_path / "work" / raw.name
    assert result.configuration == "2d" and result.plans == root / "plans.json"
    assert result.model_dir == root / "models" / "2d__plain_unet"
    assert (result.model_dir / "fold_0" / "checkpoint_final.safetensors").is_file()
    assert (result.model_dir / "fold_0" / "validation" / "summary.json").is_file()
    assert result.postprocessing == result.model_dir / "postprocessing.json" and result.postprocessing.is_file()
    assert result.predictions == root / "predictions" / "2d__plain_unet" and result.num_predicted == 2
    # The reported test Dice is the Dice of the written files against labelsTs.
    dices = []
    for case in ("case_006", "case_007"):
        pred, _ = read_label(result.predictions / f"{case}.png")
        ref, _ = read_label(raw / "labelsTs" / f"{case}.png")
        denominator = (pred == 1).sum() + (ref == 1).sum()
        dices.append(2 * np.logical_and(pred == 1, ref == 1).sum() / denominator)
    assert result.test_dice == pytest.approx(float(np.mean(dices)), abs=1e-9)
    steps = [line.split(":")[0] for line in lines if ":" in line]
    assert steps[-5:] == ["train", "validate", "postprocess", "predict", "evaluate"]

    # A rerun with the same settings trains nothing and keeps the predictions.
    stamp = (result.predictions / "case_006.png").stat().st_mtime_ns
    again = run_pipeline(raw, tmp_path / "work", overrides=SHORT, device="cpu", mirror=False, num_processes=1)
    assert (result.predictions / "case_006.png").stat().st_mtime_ns == stamp
    assert again.test_dice == pytest.approx(result.test_dice)
    # Training longer continues the fold and replaces the now stale predictions.
    longer = run_pipeline(raw, tmp_path / "work", overrides={**SHORT, "epochs": 2}, device="cpu", mirror=False,
                          num_processes=1)
    meta = json.loads((result.model_dir / "fold_0" / "checkpoint_final.json").read_text())
    assert meta["epoch"] == 2
    assert (result.predictions / "case_006.png").stat().st_mtime_ns != stamp
    assert longer.predictions == result.predictions


def test_run_cli_prints_where_everything_is(raw_with_test, tmp_path, capsys) -> None:
    from unetkit.cli import main

    code = main(["run", str(raw_with_test), "--workdir", str(tmp_path / "w"), "--epochs", "1",
                 "--iterations-per-epoch", "2", "--val-iterations", "1", "--num-workers", "0", "--device", "cpu",
                 "--no-mirror", "--no-validation", "-np", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "where everything is:" in out and "evaluation" in out and "summary.json" in out
    assert "postprocessing " not in out  # --no-validation: nothing decided
    assert main(["run", str(tmp_path / "nowhere")]) == 2
