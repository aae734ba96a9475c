"""End-of-training validation predictions, `select --folds`, and postprocessing applied by `predict`.

The validation predictions are made from the preprocessed cache; they are checked against an
independent route (predicting the raw image files) and their summary against Dice computed here
from the written files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from unetkit.data.io import read_label

torch.set_num_threads(1)


@pytest.fixture
def trained_fold(raw3d, tmp_path) -> tuple[Path, Path, Path]:
    """(raw dataset, work root WORK/NAME, trained fold folder): 1 epoch x 3 iterations, about 10 s."""
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import train

    work = tmp_path / "work"
    plan_dataset(raw3d, work, num_processes=1)
    preprocess_dataset(raw3d, work, configurations=["3d_fullres"], num_processes=1, progress=False)
    result = train(work, raw3d, "3d_fullres", 0, {"epochs": 1, "iterations_per_epoch": 3, "val_iterations": 1,
                                                  "num_workers": 0, "device": "cpu", "batch_size": 2}, echo=False)
    return raw3d, work / raw3d.name, result.output_dir


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    denominator = a.sum() + b.sum()
    return float("nan") if denominator == 0 else 2.0 * np.logical_and(a, b).sum() / denominator


def test_validation_predictions_are_written_evaluated_and_match_file_prediction(trained_fold, tmp_path) -> None:
    from unetkit.inference import Predictor
    from unetkit.inference.export import read_probabilities
    from unetkit.inference.validation import predict_validation

    raw, _, fold_dir = trained_fold
    val_cases = json.loads((fold_dir / "training_config.json").read_text())["val_cases"]
    result = predict_validation(fold_dir, device="cpu", mirror=False)
    out = fold_dir / "validation"
    assert sorted(result.cases) == sorted(val_cases) and result.folder == out

    # Geometry and the probabilities' argmax agree with the label file of each case.
    for case in val_cases:
        label, geometry = read_label(out / f"{case}.nii.gz")
        reference, ref_geometry = read_label(raw / "labelsTr" / f"{case}.nii.gz")
        assert label.shape == reference.shape and geometry.matches(ref_geometry)
        probs = read_probabilities(out / f"{case}.npz")
        assert probs.shape == (3, *label.shape)
        assert np.mean(probs.argmax(0) == label) > 0.999  # float16 ties may flip a voxel

    # The summary's Dice equals Dice computed here from the files.
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["metric_per_case"]:
        label, _ = read_label(out / f"{entry['case']}.nii.gz")
        reference, _ = read_label(raw / "labelsTr" / f"{entry['case']}.nii.gz")
        for value in (1, 2):
            expected = _dice(label == value, reference == value)
            got = entry["metrics"][str(value)]["Dice"]
            assert (got is None and np.isnan(expected)) or got == pytest.approx(expected, abs=1e-9)

    # Predicting the raw image files (read + preprocess again) gives the same label maps.
    images = [raw / "imagesTr" / f"{case}_0000.nii.gz" for case in val_cases]
    predictor = Predictor.from_model_dir(fold_dir, device="cpu", mirror=False, progress=False)
    predictor.predict_files(images, tmp_path / "from_files")
    for case in val_cases:
        a, _ = read_label(out / f"{case}.nii.gz")
        b, _ = read_label(tmp_path / "from_files" / f"{case}.nii.gz")
        assert np.mean(a == b) > 0.999


def test_train_cli_validates_and_select_uses_one_fold(trained_fold, capsys) -> None:
    from unetkit.cli import main

    raw, root, fold_dir = trained_fold
    # --validate-only: the fold is already trained; the CLI writes fold_0/validation.
    assert main(["train", str(raw), "--workdir", str(root.parent), "-c", "3d_fullres", "-f", "0",
                 "--validate-only", "--no-validation-mirroring", "--device", "cpu"]) == 0
    assert (fold_dir / "validation" / "summary.json").is_file()
    # Only fold 0 exists: select with --folds 0 finds the references through plans.json.
    assert main(["select", str(root), "-f", "0", "--quiet"]) == 0
    selection = json.loads((root / "best_configuration.json").read_text())
    assert selection["best"]["name"] == "3d_fullres__plain_unet" and selection["folds"] == [0]
    assert selection["inference_command"].endswith("-f 0")
    assert (root / "models" / "3d_fullres__plain_unet" / "postprocessing.json").is_file()
    # Without --folds, the missing folds 1-4 are reported.
    capsys.readouterr()
    assert main(["select", str(root)]) == 1
    assert "fold_1/validation/ is missing" in capsys.readouterr().err


def _components(mask: np.ndarray) -> int:
    return int(ndimage.label(mask, structure=np.ones((3,) * mask.ndim))[1])


def test_predict_applies_postprocessing_json_found_beside_the_model(tmp_path, capsys) -> None:
    from test_inference import make_model_dir, write_volume

    from unetkit.cli import main

    model_dir = make_model_dir(tmp_path / "models", seed=3)
    inputs = tmp_path / "in"
    for i in range(2):
        write_volume(inputs / f"case{i}_0000.nii.gz", shape=(20, 26, 22), seed=i)
    base = ["predict", "-i", str(inputs), "-m", str(model_dir), "--device", "cpu", "--no-mirror", "--quiet"]
    assert main([*base, "-o", str(tmp_path / "plain")]) == 0
    raw_labels = [read_label(tmp_path / "plain" / f"case{i}.nii.gz")[0] for i in range(2)]
    # Random weights give fragmented foreground: the postprocessing has something to remove.
    assert max(_components(lab > 0) for lab in raw_labels) > 1

    spec = {"format_version": 1, "connectivity": "full",
            "steps": [{"operation": "keep_largest_component", "labels": [1, 2]}]}
    (model_dir / "postprocessing.json").write_text(json.dumps(spec))
    assert main([*base, "-o", str(tmp_path / "pp")]) == 0
    assert main([*base, "-o", str(tmp_path / "off"), "--no-postprocessing"]) == 0
    for i in range(2):
        pp = read_label(tmp_path / "pp" / f"case{i}.nii.gz")[0]
        off = read_label(tmp_path / "off" / f"case{i}.nii.gz")[0]
        assert np.array_equal(off, raw_labels[i])
        assert _components(pp > 0) <= 1
        # Only voxels outside the largest component changed, and only to background.
        changed = pp != raw_labels[i]
        assert np.all(pp[changed] == 0)
        largest = raw_labels[i] > 0
        lab, n = ndimage.label(largest, structure=np.ones((3, 3, 3)))
        if n:
            sizes = np.bincount(lab.ravel())[1:]
            assert np.array_equal(pp > 0, lab == (np.argmax(sizes) + 1))

    # A malformed file is refused with its path.
    (model_dir / "postprocessing.json").write_text(json.dumps({"steps": [{"operation": "dilate"}]}))
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "postprocessing.json" in err and "unknown postprocessing operation 'dilate'" in err
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_find_postprocessing_for_an_ensemble(tmp_path) -> None:
    from unetkit.inference.predictor import find_postprocessing

    models = tmp_path / "W" / "models"
    a, b = models / "2d__plain_unet", models / "3d_fullres__plain_unet"
    for d in (a, b):
        (d / "fold_0").mkdir(parents=True)
    assert find_postprocessing([a]) is None
    spec = {"format_version": 1, "steps": [{"operation": "keep_largest_component", "labels": [1]}]}
    folder = tmp_path / "W" / "ensembles" / f"{a.name}+{b.name}"
    folder.mkdir(parents=True)
    (folder / "postprocessing.json").write_text(json.dumps(spec))
    assert find_postprocessing([b, a])["steps"] == spec["steps"]
    assert find_postprocessing([a / "fold_0"]) is None
    (a / "postprocessing.json").write_text(json.dumps(spec))
    assert find_postprocessing([a / "fold_0"])["steps"] == spec["steps"]



def test_models_needing_divisible_patches_get_the_plan_patch_rounded_up(raw2d, tmp_path) -> None:
    """CMUNeXt pools four times: a plan patch such as 40x56 becomes 48x64 for it (and only for it),
    training and the validation prediction both use that patch."""
    from unetkit.inference.validation import predict_validation
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import fit_patch_to_model, train

    entry = {"patch_size": [40, 56], "batch_size": 2}
    assert fit_patch_to_model(entry, "cmunext")["patch_size"] == [48, 64]
    assert fit_patch_to_model(entry, "plain_unet") is entry      # its topology comes from the plan
    assert fit_patch_to_model(entry, "unetr") is entry           # pads its input itself
    assert fit_patch_to_model({"patch_size": [32, 64]}, "cmunext")["patch_size"] == [32, 64]

    work = tmp_path / "work"
    plan_dataset(raw2d, work, num_processes=1)
    plans = json.loads((work / raw2d.name / "plans.json").read_text())
    planned = plans["configurations"]["2d"]["patch_size"]
    assert any(p % 16 for p in planned), planned   # otherwise this test would show nothing
    preprocess_dataset(raw2d, work, configurations=["2d"], num_processes=1, progress=False)
    result = train(work, raw2d, "2d", 0, {**{"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1,
                                             "num_workers": 0, "device": "cpu", "batch_size": 2},
                                          "arch": "cmunext"}, echo=False)
    meta = json.loads((result.output_dir / "checkpoint_final.json").read_text())
    assert meta["patch_size"] == [-(-p // 16) * 16 for p in planned]
    validation = predict_validation(result.output_dir, device="cpu", mirror=False)
    assert validation.summary is not None and len(validation.cases) >= 1
