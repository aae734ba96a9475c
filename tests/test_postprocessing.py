"""Largest-component postprocessing: the operation against scipy, and nnU-Net's decisions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from unetkit.data.io import Geometry, read_label, write_label
from unetkit.evaluation.postprocessing import (apply_postprocessing, determine_postprocessing, keep_largest_component,
                                               load_postprocessing, postprocess_folder, save_postprocessing)


def ref_keep_largest(seg: np.ndarray, values) -> np.ndarray:
    mask = np.isin(seg, values)
    labelled, n = ndimage.label(mask, structure=np.ones((3,) * seg.ndim))  # full connectivity
    out = seg.copy()
    if n:
        sizes = ndimage.sum_labels(mask, labelled, index=np.arange(1, n + 1))
        out[mask & (labelled != 1 + int(np.argmax(sizes)))] = 0
    return out


@pytest.mark.parametrize("shape", [(20, 23), (9, 11, 13)])
def test_keep_largest_component_matches_scipy(shape):
    rng = np.random.default_rng(0)
    for _ in range(5):
        seg = (rng.random(shape) < 0.3).astype(np.int16) * rng.integers(1, 4, size=shape).astype(np.int16)
        for values in ([1], [1, 2], [1, 2, 3]):
            np.testing.assert_array_equal(keep_largest_component(seg, values), ref_keep_largest(seg, values))


def test_diagonal_neighbours_are_connected():
    seg = np.zeros((4, 4, 4), np.int16)
    seg[0, 0, 0] = seg[1, 1, 1] = 1  # corner contact: one component with 26-connectivity
    seg[3, 3, 3] = 2
    out = keep_largest_component(seg, [1, 2])
    assert out[0, 0, 0] == out[1, 1, 1] == 1 and out[3, 3, 3] == 0


def test_apply_with_regions_and_no_spec():
    seg = np.zeros((10, 10), np.int16)
    seg[1:4, 1:4] = 1
    seg[2, 2] = 2
    seg[8, 8] = 2
    spec = {"format_version": 1, "steps": [{"operation": "keep_largest_component", "labels": [[1, 2]]}]}
    out = apply_postprocessing(seg, spec)
    assert out[8, 8] == 0 and out[2, 2] == 2 and (out[1:4, 1:4] > 0).all()
    np.testing.assert_array_equal(apply_postprocessing(seg, None), seg)
    with pytest.raises(ValueError, match="unknown postprocessing operation"):
        apply_postprocessing(seg, {"steps": [{"operation": "dilate", "labels": [1]}]})


def _write_cases(tmp_path, preds, gts, ending=".nii.gz"):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    geo = Geometry(spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    for i, (p, g) in enumerate(zip(preds, gts)):
        write_label(p, pred_dir / f"case_{i:03d}{ending}", geo)
        write_label(g, gt_dir / f"case_{i:03d}{ending}", geo)
    return pred_dir, gt_dir


def _case(rng, spurious: bool, second_gt_blob: bool):
    gt = np.zeros((12, 16, 16), np.int16)
    gt[3:8, 3:9, 3:9] = 1
    if second_gt_blob:
        gt[9:11, 12:15, 12:15] = 1
    pred = gt.copy()
    pred[3, 3:9, 3] = 0  # a little error so Dice < 1
    if spurious:
        pred[10, 1, 14] = pred[1, 14, 1] = 1
    return pred, gt


def test_spurious_components_are_removed_when_it_helps(tmp_path):
    rng = np.random.default_rng(1)
    preds, gts = zip(*[_case(rng, spurious=True, second_gt_blob=False) for _ in range(3)])
    pred_dir, gt_dir = _write_cases(tmp_path, preds, gts)
    spec = determine_postprocessing(pred_dir, gt_dir, [1], num_processes=1)
    assert spec["steps"] == [{"operation": "keep_largest_component", "labels": [1]}]
    assert spec["dice_after"]["foreground_mean"] > spec["dice_before"]["foreground_mean"]
    saved = load_postprocessing(pred_dir)
    assert saved["steps"] == spec["steps"]
    fixed = apply_postprocessing(preds[0], saved)
    assert fixed[10, 1, 14] == 0 and fixed[1, 14, 1] == 0 and fixed[5, 5, 5] == 1
    # applied to a folder, the written files are the postprocessed maps with their geometry
    out = postprocess_folder(pred_dir, tmp_path / "pp", saved, num_processes=1)
    back, geo = read_label(out[0])
    np.testing.assert_array_equal(back, apply_postprocessing(read_label(pred_dir / out[0].name)[0], saved))
    assert geo.spacing == (2.0, 1.0, 1.0)


def test_components_are_kept_when_removal_hurts(tmp_path):
    rng = np.random.default_rng(2)
    preds, gts = zip(*[_case(rng, spurious=False, second_gt_blob=True) for _ in range(3)])
    pred_dir, gt_dir = _write_cases(tmp_path, preds, gts)
    spec = determine_postprocessing(pred_dir, gt_dir, [1], num_processes=1)
    assert spec["steps"] == []
    assert spec["trials"][0]["applied"] is False
    assert spec["trials"][0]["dice_after"] < spec["trials"][0]["dice_before"]


def test_per_label_decisions(tmp_path):
    """Label 1 has stray voxels (remove), label 2 truly has two parts (keep); the whole-foreground
    step would delete a label and is refused."""
    preds, gts = [], []
    for _ in range(3):
        gt = np.zeros((12, 20, 20), np.int16)
        gt[2:9, 2:9, 2:9] = 1
        gt[2:5, 12:16, 12:16] = 2
        gt[8:11, 15:19, 12:16] = 2
        pred = gt.copy()
        pred[2, 2:9, 2] = 0
        pred[11, 1, 1] = 1
        pred[11, 10, 1] = 1
        preds.append(pred)
        gts.append(gt)
    pred_dir, gt_dir = _write_cases(tmp_path, preds, gts)
    spec = determine_postprocessing(pred_dir, gt_dir, {"background": 0, "a": 1, "b": 2}, num_processes=1,
                                    output=tmp_path / "model")
    assert spec["steps"] == [{"operation": "keep_largest_component", "labels": [1]}]
    applied = [t["applied"] for t in spec["trials"]]
    assert applied == [False, True, False]
    assert json.loads((tmp_path / "model" / "postprocessing.json").read_text())["steps"] == spec["steps"]


def test_load_postprocessing_absent_and_malformed(tmp_path):
    assert load_postprocessing(tmp_path) is None
    (tmp_path / "postprocessing.json").write_text('{"format_version": 1, "steps": [{"operation": '
                                                  '"keep_largest_component", "labels": "one"}]}')
    with pytest.raises(ValueError, match="postprocessing.json.*labels"):
        load_postprocessing(tmp_path)
    with pytest.raises(ValueError, match="format_version"):
        save_postprocessing({"format_version": 7, "steps": []}, tmp_path)
