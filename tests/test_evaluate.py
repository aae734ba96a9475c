"""Folder evaluation, its files and CLI, and `unetkit select` on a fake work folder."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.data.errors import DataError
from unetkit.data.io import Geometry, write_label
from unetkit.evaluation import compute_metrics, evaluate_folders, load_summary

GEO = Geometry(spacing=(2.5, 0.8, 0.6), origin=(1.0, 2.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def _pair(rng, shape=(8, 14, 12)):
    gt = np.zeros(shape, np.int16)
    gt[2:6, 3:10, 2:9] = 1
    gt[3:5, 5:8, 4:7] = 2
    pred = gt.copy()
    pred[rng.random(shape) < 0.05] = 0
    pred[rng.random(shape) < 0.01] = 1
    return pred, gt


def _folders(tmp_path, n=3, ending=".nii.gz"):
    rng = np.random.default_rng(0)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    arrays = {}
    for i in range(n):
        pred, gt = _pair(rng)
        if i == 1:
            pred[pred == 2] = 1  # label 2 missed entirely: HD95 inf
        if i == 2:
            gt[gt == 2] = 1
            pred[pred == 2] = 1  # label 2 absent in both: Dice NaN
        write_label(pred, pred_dir / f"c{i}{ending}", GEO)
        write_label(gt, gt_dir / f"c{i}{ending}", GEO)
        arrays[f"c{i}"] = (pred, gt)
    return pred_dir, gt_dir, arrays


def test_evaluate_folders_matches_compute_metrics_and_writes_files(tmp_path):
    pred_dir, gt_dir, arrays = _folders(tmp_path)
    summary = evaluate_folders(pred_dir, gt_dir, [1, 2, (1, 2)], tolerance=1.0, num_processes=1)
    assert [c["case"] for c in summary["metric_per_case"]] == ["c0", "c1", "c2"]
    for entry in summary["metric_per_case"]:
        pred, gt = arrays[entry["case"]]
        want = compute_metrics(pred, gt, GEO.spacing, [1, 2, (1, 2)], 1.0)
        assert entry["metrics"].keys() == want.keys()
        for key in want:
            for metric, value in want[key].items():
                got = entry["metrics"][key][metric]
                assert (math.isnan(got) and math.isnan(value)) or got == pytest.approx(value), (key, metric)
    # nnU-Net's empty convention: c2 has no label 2 anywhere -> NaN, left out of the mean
    assert math.isnan(summary["metric_per_case"][2]["metrics"]["2"]["Dice"])
    assert summary["count"]["2"]["Dice"] == 2
    assert summary["mean"]["2"]["Dice"] == pytest.approx(
        np.mean([summary["metric_per_case"][i]["metrics"]["2"]["Dice"] for i in (0, 1)]))
    assert math.isinf(summary["metric_per_case"][1]["metrics"]["2"]["HD95"])
    assert summary["foreground_mean"]["Dice"] == pytest.approx(
        np.mean([summary["mean"][k]["Dice"] for k in ("1", "2", "(1, 2)")]))

    on_disk = json.loads((pred_dir / "summary.json").read_text())  # strict JSON: null and "inf"
    assert on_disk["metric_per_case"][2]["metrics"]["2"]["Dice"] is None
    assert on_disk["metric_per_case"][1]["metrics"]["2"]["HD95"] == "inf"
    back = load_summary(pred_dir / "summary.json")
    assert math.isnan(back["metric_per_case"][2]["metrics"]["2"]["Dice"])
    assert math.isinf(back["mean"]["2"]["HD95"])
    rows = list(csv.DictReader((pred_dir / "per_case.csv").open()))
    assert len(rows) == 3 * 3
    row = next(r for r in rows if r["case"] == "c0" and r["label"] == "1")
    assert float(row["Dice"]) == pytest.approx(summary["metric_per_case"][0]["metrics"]["1"]["Dice"])
    assert float(row["HD95"]) == pytest.approx(summary["metric_per_case"][0]["metrics"]["1"]["HD95"])
    assert not list(pred_dir.glob(".tmp-*"))


def test_parallel_equals_serial(tmp_path):
    pred_dir, gt_dir, _ = _folders(tmp_path)
    serial = evaluate_folders(pred_dir, gt_dir, [1, 2], num_processes=1, output_dir="")
    parallel = evaluate_folders(pred_dir, gt_dir, [1, 2], num_processes=2, output_dir="")
    assert json.dumps(serial["mean"], sort_keys=True) == json.dumps(parallel["mean"], sort_keys=True)


def test_missing_and_orphan_predictions_are_reported(tmp_path):
    pred_dir, gt_dir, _ = _folders(tmp_path)
    (pred_dir / "c1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"1 of 3 reference cases have no prediction.*c1.*--allow-missing"):
        evaluate_folders(pred_dir, gt_dir, [1], num_processes=1)
    summary = evaluate_folders(pred_dir, gt_dir, [1], num_processes=1, allow_missing=True)
    assert summary["missing_predictions"] == ["c1"] and summary["num_cases"] == 2
    write_label(np.zeros((8, 14, 12), np.int16), pred_dir / "stranger.nii.gz", GEO)
    with pytest.raises(DataError, match="no reference.*stranger"):
        evaluate_folders(pred_dir, gt_dir, [1], num_processes=1, allow_missing=True)


def test_wrong_grid_names_the_case(tmp_path):
    pred_dir, gt_dir, _ = _folders(tmp_path)
    write_label(np.zeros((8, 14, 11), np.int16), pred_dir / "c0.nii.gz", GEO)
    with pytest.raises(DataError, match=r"case 'c0'.*shape \(8, 14, 11\) differs"):
        evaluate_folders(pred_dir, gt_dir, [1], num_processes=1)


def test_pictures_use_unit_spacing(tmp_path):
    gt = np.zeros((20, 30), np.uint8)
    gt[5:15, 5:20] = 1
    pred = np.zeros_like(gt)
    pred[6:15, 5:22] = 1
    write_label(gt, tmp_path / "gt" / "a.png", Geometry((1.0, 1.0)))
    write_label(pred, tmp_path / "pred" / "a.png", Geometry((1.0, 1.0)))
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", {"background": 0, "vessel": 1}, num_processes=1)
    assert summary["label_names"] == {"1": "vessel"}
    assert summary["mean"]["1"]["HD95"] == pytest.approx(compute_metrics(pred, gt, (1, 1), [1])["1"]["HD95"])


def test_cli_writes_atomically(tmp_path, monkeypatch, capsys):
    pred_dir, gt_dir, _ = _folders(tmp_path)
    out = tmp_path / "results"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-l", "1", "2", "1,2", "--tolerance", "1:1", "2:2",
                 "1,2:1.5", "-np", "1", "-o", str(out)]) == 0
    summary = load_summary(out / "summary.json")
    assert summary["nsd_tolerance_mm"] == {"1": 1.0, "2": 2.0, "(1, 2)": 1.5}
    assert (out / "per_case.csv").is_file()
    assert "foreground mean" in capsys.readouterr().out
    # a failure while writing leaves the previous files whole, and no temporary files
    before = (out / "summary.json").read_bytes()
    import unetkit.utils.atomic as atomic

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        main(["evaluate", str(pred_dir), str(gt_dir), "-l", "1", "-np", "1", "-o", str(out)])
    assert (out / "summary.json").read_bytes() == before
    assert not list(out.glob(".tmp-*"))


def test_cli_labels_from_dataset_json_and_errors(tmp_path, capsys):
    pred_dir, gt_dir, _ = _folders(tmp_path)
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-np", "1"]) == 2
    assert "no labels given" in capsys.readouterr().err
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2}}))
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-np", "1", "--no-surface", "--quiet"]) == 0
    summary = load_summary(pred_dir / "summary.json")
    assert summary["labels"] == ["1", "2"] and "HD95" not in summary["mean"]["1"]


# ----------------------------------------------------------------------------------- select

def _work_folder(tmp_path):
    """Two configurations over 2 folds: 'good' is near the reference, 'bad' much worse."""
    rng = np.random.default_rng(4)
    root = tmp_path / "work" / "Toy"
    gt_dir = tmp_path / "raw" / "labelsTr"
    cases = [f"case_{i}" for i in range(4)]
    splits = [{"train": cases[2:], "val": cases[:2]}, {"train": cases[:2], "val": cases[2:]}]
    root.mkdir(parents=True)
    (root / "plans.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2}}))
    (root / "splits.json").write_text(json.dumps(splits))
    geo = Geometry(spacing=(1.0, 1.0, 1.0))
    for i, case in enumerate(cases):
        gt = np.zeros((8, 12, 12), np.int16)
        gt[2:6, 2:7, 2:7] = 1
        gt[2:6, 7:11, 6:11] = 2
        write_label(gt, gt_dir / f"{case}.nii.gz", geo)
        onehot = np.stack([gt == k for k in range(3)]).astype(np.float32)
        fold = 0 if i < 2 else 1
        for name, noise in (("3d_fullres__good", 0.3), ("2d__bad", 1.6)):
            probs = onehot + noise * rng.random(onehot.shape).astype(np.float32)
            probs /= probs.sum(0, keepdims=True)
            folder = root / "models" / name / f"fold_{fold}" / "validation"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(folder / f"{case}.npz", probabilities=probs.astype(np.float16))
            write_label(np.argmax(probs, 0), folder / f"{case}.nii.gz", geo)
    (root / "models" / "3d_lowres__unfinished" / "fold_0").mkdir(parents=True)
    return root, gt_dir


def test_select_ranks_configurations(tmp_path, capsys):
    root, gt_dir = _work_folder(tmp_path)
    assert main(["select", str(root), "--gt", str(gt_dir), "-np", "1"]) == 0
    result = json.loads((root / "best_configuration.json").read_text())
    names = [r["name"] for r in result["ranking"]]
    assert set(names) == {"3d_fullres__good", "2d__bad", "2d__bad+3d_fullres__good"}
    dice = {r["name"]: r["foreground_mean_dice"] for r in result["ranking"]}
    assert dice["3d_fullres__good"] > dice["2d__bad"]
    assert names[-1] == "2d__bad"
    assert result["best"]["name"] == names[0] and dice[names[0]] == max(dice.values())
    assert "3d_lowres__unfinished" in result["skipped"] and "fold_0/validation" in result["skipped"]["3d_lowres__unfinished"]
    assert result["postprocessing_file"] and (tmp_path / result["postprocessing_file"]).is_file()
    assert result["inference_command"].startswith("unetkit predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m ")
    assert (root / "models" / "2d__bad" / "crossval" / "summary.json").is_file()
    assert (root / "ensembles" / "2d__bad+3d_fullres__good" / "crossval" / "case_3.nii.gz").is_file()
    assert "best:" in capsys.readouterr().out


def test_select_explains_missing_predictions(tmp_path, capsys):
    root, gt_dir = _work_folder(tmp_path)
    for model in (root / "models").iterdir():
        for npz in model.glob("fold_1/validation/case_3.*"):
            npz.unlink()
    assert main(["select", str(root), "--gt", str(gt_dir), "-np", "1"]) == 1
    err = capsys.readouterr().err
    assert "lacks 1 of the fold's 2 validation cases (case_3)" in err
    assert main(["select", str(root), "-np", "1"]) == 2
    assert "--gt" in capsys.readouterr().err
