"""3d_lowres -> 3d_cascade_fullres end to end on a generated dataset whose plan has 3d_lowres.

Six 48-64 voxel volumes planned with a 0.05 GB budget: the full-resolution patch then covers
less than a quarter of the median image, so unetkit (like nnU-Net v2.8.1, see
tests/test_cascade_reference.py) plans 3d_lowres and 3d_cascade_fullres.
"""

from __future__ import annotations

from pathlib import Path

from unetkit.data.synthetic import write_raw_dataset

#: GPU memory target (GB) small enough for a 3d_lowres plan on CASCADE_SHAPES volumes.
CASCADE_MEMORY_GB = 0.05
CASCADE_SHAPES = (48, 64)


def cascade_raw(root: Path) -> Path:
    """The raw dataset (6 NIfTI cases, 1 channel, 2 foreground classes)."""
    return write_raw_dataset(root, num_cases=6, ndim=3, shape_range=CASCADE_SHAPES, seed=3)


FAST = {"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1, "num_workers": 0, "device": "cpu"}


def test_cascade_end_to_end(tmp_path, capsys):
    """Plan with 3d_lowres; the cascade refuses to train before the lowres predictions exist;
    `run -c 3d_cascade_fullres` trains all lowres folds first (their validation writes
    predicted_next_stage) and the cascade with one-hot extra channels; `select` ranks it beside
    3d_fullres and their ensembles; `predict -m CASCADE` runs both stages and says so."""
    import shutil

    import pytest

    from unetkit.cli import main as cli_main
    from unetkit.data.errors import DataError
    from unetkit.evaluation.selection import select_best_configuration
    from unetkit.inference.validation import predict_validation
    from unetkit.pipeline import run_pipeline
    from unetkit.planning import load_plans, plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.checkpoint import load_checkpoint
    from unetkit.training.trainer import train

    raw, work = cascade_raw(tmp_path / "CascadeRaw"), tmp_path / "work"
    plans = load_plans(plan_dataset(raw, work, memory_gb=CASCADE_MEMORY_GB, num_processes=1))
    assert plans["configurations"]["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    preprocess_dataset(raw, work, configurations=["3d_cascade_fullres"], num_processes=1, progress=False)
    with pytest.raises(DataError, match=r"needs the 3d_lowres predictions.*6 of 6 are missing \(case_0"):
        train(work, raw, "3d_cascade_fullres", 0, FAST, echo=False)

    result = run_pipeline(raw, work, configuration="3d_cascade_fullres", overrides=FAST, device="cpu",
                          memory_gb=CASCADE_MEMORY_GB, mirror=False, num_processes=1)
    models = work / "CascadeRaw" / "models"
    predicted = sorted(p.stem for p in (models / "3d_lowres__plain_unet" / "predicted_next_stage"
                                        / "3d_cascade_fullres").glob("*.npy"))
    assert predicted == [f"case_{i:03d}" for i in range(6)]
    assert result.validation_dice[0] is not None
    meta = load_checkpoint(result.fold_dirs[0], "checkpoint_final").meta
    assert meta["architecture"]["in_channels"] == 1 + 2  # the image + one channel per foreground label

    full = train(work, raw, "3d_fullres", 0, FAST, echo=False)
    predict_validation(full.output_dir, device="cpu", mirror=False, num_processes=1)
    best = select_best_configuration(work / "CascadeRaw", raw / "labelsTr", folds=[0], num_processes=1,
                                     postprocessing=False)
    ranked = {c["name"] for c in best["ranking"]}
    assert {"3d_cascade_fullres__plain_unet", "3d_fullres__plain_unet",
            "3d_cascade_fullres__plain_unet+3d_fullres__plain_unet"} <= ranked

    images = tmp_path / "test_images"
    images.mkdir()
    for name in ("case_000_0000.nii.gz", "case_001_0000.nii.gz"):
        shutil.copy(raw / "imagesTr" / name, images / name)
    capsys.readouterr()
    assert cli_main(["predict", "-i", str(images), "-o", str(tmp_path / "out"), "-m",
                     str(models / "3d_cascade_fullres__plain_unet"), "--no-mirror", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "predicting 3d_lowres first" in printed and "now 3d_cascade_fullres" in printed
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["case_000.nii.gz", "case_001.nii.gz"]
    assert len(list((tmp_path / "out" / "previous_stage_3d_lowres").glob("*.nii.gz"))) == 2

    # 3d_lowres predicted case_000 differently since (retrained): resuming the cascade stops and says so
    import numpy as np

    from unetkit.training.trainer import TrainingError
    prediction = models / "3d_lowres__plain_unet" / "predicted_next_stage" / "3d_cascade_fullres" / "case_000.npy"
    np.save(prediction, np.zeros_like(np.load(prediction)))
    with pytest.raises(TrainingError, match=r"changed: 3d_lowres prediction of case_000|3d_lowres prediction of case_000"):
        train(work, raw, "3d_cascade_fullres", 0, {**FAST, "epochs": 2}, resume=True, echo=False)


def test_replanning_without_lowres_drops_the_cascade_entry_and_bad_stage_names_are_refused(tmp_path):
    import json

    import pytest

    from unetkit.planning import PlansError, load_plans, plan_dataset, validate_plans
    from unetkit.utils.atomic import read_json

    raw, work = cascade_raw(tmp_path / "CascadeRaw"), tmp_path / "work"
    path = plan_dataset(raw, work, memory_gb=CASCADE_MEMORY_GB, num_processes=1)
    plans = read_json(path)
    assert {"3d_lowres", "3d_cascade_fullres"} <= set(plans["configurations"])
    resolved = load_plans(path)["configurations"]["3d_cascade_fullres"]
    assert resolved["patch_size"] == plans["configurations"]["3d_fullres"]["patch_size"]
    assert resolved["previous_stage"] == "3d_lowres"

    bad = json.loads(json.dumps(plans))
    bad["configurations"]["3d_cascade_fullres"]["previous_stage"] = "3d_lowres_typo"
    with pytest.raises(PlansError, match="previous_stage '3d_lowres_typo' is not a configuration"):
        validate_plans(bad)

    messages: list[str] = []
    path = plan_dataset(raw, work, memory_gb=0.2, num_processes=1, log=messages.append)  # no 3d_lowres now
    assert set(read_json(path)["configurations"]) == {"2d", "3d_fullres"}
    assert any("dropping ['3d_cascade_fullres', '3d_lowres']" in m for m in messages)
