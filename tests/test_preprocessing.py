"""Preprocessing: normalization formulas, resampling rules, the cache's contract, resumability,
restoring predictions to the original grid, and smoke runs on real data."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_dataset
from references import require_nnunet_python
from unetkit.data.io import Geometry, read_image, read_label, write_image, write_label
from unetkit.preprocessing import (load_case, preprocess_case, preprocess_dataset, preprocessing_fingerprint,
                                   restore_to_original)
from unetkit.preprocessing import cache as cache_mod
from unetkit.preprocessing.cropping import crop_to_nonzero
from unetkit.preprocessing.normalization import normalize, normalize_channel
from unetkit.preprocessing.resampling import (compute_new_shape, resample_image, resample_label,
                                              separate_axis)
from unetkit.utils.atomic import TMP_PREFIX, atomic_write_json

RESAMPLING = {"image_order": 3, "label_order": 1, "anisotropy_threshold": 3.0, "separate_axis_order": 0}


def make_plans(ndim: int = 3, spacing3d=(1.0, 1.0, 1.0), spacing2d=(1.0, 1.0), schemes=("ZScore",),
               use_mask=None, labels=None, transpose=None) -> dict:
    """Plans in the documented plans.json format, written by hand (no planner needed)."""
    n = len(schemes)
    labels = labels or {"background": 0, "class_1": 1, "class_2": 2}
    tf = list(transpose or range(ndim))
    cfg = lambda ident, sp: {  # noqa: E731
        "data_identifier": ident, "spacing": list(sp), "median_image_size_in_voxels": [20] * len(sp),
        "patch_size": [16] * len(sp), "batch_size": 2, "batch_dice": False,
        "normalization_schemes": list(schemes), "use_mask_for_norm": list(use_mask or [False] * n),
        "resampling": dict(RESAMPLING),
        "architecture": {"name": "plain_unet", "kwargs": {"n_stages": 3}}}
    configs = {"2d": cfg("2d", spacing2d)}
    if ndim == 3:
        configs["3d_fullres"] = cfg("3d_fullres", spacing3d)
    return {
        "format_version": 1, "dataset_name": "test", "planner": "hand", "num_input_channels": n,
        "channel_names": {str(i): "x" for i in range(n)}, "labels": labels,
        "num_segmentation_heads": len(labels), "transpose_forward": tf,
        "transpose_backward": [int(i) for i in np.argsort(tf)],
        "foreground_intensity_properties_per_channel": {
            str(i): {"mean": 120.0, "median": 118.0, "std": 25.0, "min": 0.0, "max": 300.0,
                     "percentile_99_5": 200.0, "percentile_00_5": 60.0} for i in range(n)},
        "configurations": configs,
    }


def write_plans(raw: Path, workdir: Path, plans: dict) -> Path:
    path = workdir / raw.name / "plans.json"
    atomic_write_json(path, plans)
    return path


# ----------------------------------------------------------------------------------- normalization

def test_normalization_schemes_match_formulas():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 30, size=(12, 13, 14)).astype(np.float32)
    x = img.astype(np.float64)

    z = normalize_channel(img.copy(), "ZScore")
    np.testing.assert_allclose(z, (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-4)

    props = {"mean": 90.0, "std": 20.0, "percentile_00_5": 50.0, "percentile_99_5": 150.0}
    ct = normalize_channel(img.copy(), "CT", intensity=props)
    np.testing.assert_allclose(ct, (np.clip(x, 50, 150) - 90) / 20, rtol=1e-5, atol=1e-5)

    r = normalize_channel(img.copy(), "RescaleTo01")
    np.testing.assert_allclose(r, (x - x.min()) / (x.max() - x.min()), rtol=1e-5, atol=1e-6)

    np.testing.assert_array_equal(normalize_channel(img.copy(), "NoNorm"), img)

    rgb = rng.integers(0, 256, size=(10, 11)).astype(np.uint8)
    np.testing.assert_allclose(normalize_channel(rgb, "RGBTo01"), rgb / 255.0, rtol=1e-6)
    with pytest.raises(ValueError, match="0..255"):
        normalize_channel(np.array([[-1.0, 300.0]]), "RGBTo01")
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize_channel(img.copy(), "Bogus")


def test_masked_zscore_uses_mask_statistics_and_zeroes_outside():
    rng = np.random.default_rng(1)
    img = rng.normal(50, 5, size=(2, 20, 20)).astype(np.float32)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 4:16] = True
    img[:, ~mask] = 0
    out = normalize(img, ["ZScore", "ZScore"], [True, False], None, mask)
    inside = img[0][mask].astype(np.float64)
    np.testing.assert_allclose(out[0][mask], (inside - inside.mean()) / inside.std(), rtol=1e-4, atol=1e-4)
    assert np.all(out[0][~mask] == 0)
    whole = img[1].astype(np.float64)
    np.testing.assert_allclose(out[1], (whole - whole.mean()) / whole.std(), rtol=1e-4, atol=1e-4)
    assert out.dtype == np.float32 and img[0, 10, 10] != out[0, 10, 10]  # input untouched, new array


def test_crop_to_nonzero_fills_holes_and_uses_any_channel():
    data = np.zeros((2, 10, 12, 14), np.float32)
    data[0, 2:8, 3:9, 4:10] = 1
    data[0, 4, 5, 6] = 0          # a hole: stays inside the mask
    data[1, 1, 3, 4] = 5          # only channel 1 is nonzero here: widens the box
    cropped, _, mask, bbox = crop_to_nonzero(data)
    assert bbox == [[1, 8], [3, 9], [4, 10]]
    assert cropped.shape == (2, 7, 6, 6)
    assert mask[4 - 1, 5 - 3, 6 - 4]


# ----------------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("shape,old,new", [((30, 40, 50), (1.0, 1.0, 1.0), (1.5, 0.7, 1.0)),
                                           ((17, 33), (0.8, 0.8), (1.1, 0.5)),
                                           ((5, 64, 64), (5.0, 0.8, 0.8), (2.5, 1.6, 1.6))])
def test_resampled_shapes_follow_spacing_math(shape, old, new):
    expected = tuple(int(round(s * o / n)) for s, o, n in zip(shape, old, new))
    assert compute_new_shape(shape, old, new) == expected
    img = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    out = resample_image(img, expected, old, new)
    assert out.shape == (2, *expected) and out.dtype == np.float32
    assert out.min() >= img.min() - 1e-5 and out.max() <= img.max() + 1e-5  # clipped to the input range
    lab = np.random.default_rng(1).integers(0, 3, size=shape).astype(np.int16)
    assert resample_label(lab, expected, old, new).shape == expected


def test_identity_resampling_is_skipped():
    img = np.ones((1, 4, 5, 6), np.float32)
    assert resample_image(img, (4, 5, 6), (1, 1, 1), (1, 1, 1)) is img
    lab = np.zeros((4, 5, 6), np.int16)
    assert resample_label(lab, (4, 5, 6), (1, 1, 1), (1, 1, 1)) is lab


def test_anisotropic_axis_chosen_only_above_ratio_3():
    assert separate_axis((5.0, 1.0, 1.0), (5.0, 1.0, 1.0)) == 0
    assert separate_axis((1.0, 1.0, 3.0), (1.0, 1.0, 1.0)) is None      # ratio exactly 3: together
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 4.0, 1.0)) == 1         # target spacing decides next
    assert separate_axis((0.24, 1.25, 1.25), (0.24, 1.25, 1.25)) is None  # two coarse axes: no stack
    assert separate_axis((5.0, 1.0), (5.0, 1.0)) is None                # 2D data: never


def test_anisotropic_path_keeps_slices_and_uses_nearest_between_them():
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(1, 6, 20, 20)).astype(np.float32)
    # Out-of-plane: 6 slices at 4 mm -> 12 at 2 mm. With order 0 between slices, every output slice
    # must equal one in-plane-resampled input slice, never a blend of two.
    out = resample_image(vol, (12, 10, 10), (4.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    inplane = resample_image(vol, (6, 10, 10), (4.0, 1.0, 1.0), (4.0, 2.0, 2.0))
    for k in range(12):
        assert any(np.allclose(out[0, k], inplane[0, j], atol=1e-5) for j in range(6)), k
    # Isotropic data of the same shapes is interpolated across slices (a blend appears).
    iso = resample_image(vol, (12, 10, 10), (1.0, 1.0, 1.0), (0.5, 2.0, 2.0))
    assert not all(any(np.allclose(iso[0, k], inplane[0, j], atol=1e-5) for j in range(6)) for k in range(12))


def test_label_resampling_invents_no_class():
    rng = np.random.default_rng(3)
    lab = np.zeros((40, 40, 40), np.int16)
    lab[5:30, 5:30, 5:30] = 1
    lab[10:20, 10:20, 10:20] = 3
    lab[rng.random(lab.shape) < 0.01] = 2
    for order in (0, 1, 3):
        out = resample_label(lab, (20, 20, 20), (1, 1, 1), (2, 2, 2), order=order)
        assert set(np.unique(out)) <= set(np.unique(lab))
    up = resample_label(lab, (60, 60, 60), (1, 1, 1), (2 / 3, 2 / 3, 2 / 3))
    assert set(np.unique(up)) == set(np.unique(lab))


def test_label_resampling_ties_go_to_the_nearest_neighbour_as_in_nnunet():
    """Halving [0, 1, 1, 2] puts each new voxel exactly between two old ones: weights 0.5 / 0.5.
    nnU-Net (batchgenerators' resize_segmentation) gives such a tie to the nearest-neighbour
    sample, which scipy's order-0 zoom takes from the second voxel of each pair: [1, 2]. Ties are
    decided by geometry, not by class values: the mirrored row gives the mirrored answer, and a
    class thinner than the new voxels vanishes (0 in the first, nothing re-inserts it)."""
    from scipy import ndimage

    for row, expected in (([0, 1, 1, 2], [1, 2]), ([2, 1, 1, 0], [1, 0])):
        lab = np.array([row, row], np.int16)
        nearest = ndimage.zoom(lab.astype(float), (1, 0.5), order=0, grid_mode=True, mode="nearest")
        assert nearest[0].tolist() == expected   # the reference's nearest neighbour, from scipy alone
        assert resample_label(lab, (2, 2), (1, 1), (1, 2))[0].tolist() == expected
    lab = np.zeros((4, 4), np.int16)
    lab[1, 1] = 7                                 # one voxel: a quarter of a new voxel's weight at most
    assert 7 not in resample_label(lab, (2, 2), (1, 1), (2, 2))


def test_label_resampling_along_the_coarse_axis_thresholds_each_class():
    """Anisotropic data, ``separate_axis_order`` 1: along the coarse axis each class's interpolated
    one-hot is written where it exceeds 0.5, onto zeros (nnU-Net's resample_data_or_seg). Four
    slices of classes 1..4 halved to two: each new slice sits half-way between two old ones, every
    class reaches exactly 0.5 and none exceeds it, so nnU-Net writes 0 there. Order 0 takes the
    nearest slice instead."""
    lab = np.broadcast_to(np.arange(1, 5, dtype=np.int16)[:, None, None], (4, 3, 3)).copy()
    assert separate_axis((4.0, 1.0, 1.0), (8.0, 1.0, 1.0)) == 0
    linear = resample_label(lab, (2, 3, 3), (4.0, 1.0, 1.0), (8.0, 1.0, 1.0), order=1, separate_axis_order=1)
    assert not linear.any()
    nearest = resample_label(lab, (2, 3, 3), (4.0, 1.0, 1.0), (8.0, 1.0, 1.0), order=1, separate_axis_order=0)
    assert set(np.unique(nearest[0])) < {1, 2} and set(np.unique(nearest[1])) < {3, 4}
    # upsampled: 1 1 2 2 3 3 4 4 (each new slice's heavier neighbour passes 0.75 > 0.5)
    up = resample_label(lab, (8, 3, 3), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0), order=1, separate_axis_order=1)
    assert up[:, 0, 0].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


# ----------------------------------------------------------------------------------- one case

def test_preprocess_case_3d_properties_and_dtypes():
    rng = np.random.default_rng(4)
    img = np.zeros((1, 30, 32, 34), np.float32)
    img[0, 3:27, 2:30, 4:30] = rng.normal(100, 10, size=(24, 28, 26))
    lab = np.zeros((30, 32, 34), np.int16)
    lab[10:15, 10:20, 10:20] = 2
    geo = Geometry((2.0, 1.0, 0.5), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    plans = make_plans(spacing3d=(1.0, 1.0, 1.0), transpose=[2, 1, 0])
    data, seg, props = preprocess_case(img, geo, plans, "3d_fullres", lab, case="c1")
    assert props["bbox"] == [[3, 27], [2, 30], [4, 30]]
    assert props["shape_after_crop"] == [24, 28, 26]
    assert props["spacing_after_transpose"] == [0.5, 1.0, 2.0]
    expected = compute_new_shape([26, 28, 24], [0.5, 1.0, 2.0], [1.0, 1.0, 1.0])
    assert tuple(props["shape_after_resampling"]) == expected == data.shape[1:]
    assert data.dtype == np.float32 and seg.dtype == np.int16 and seg.shape == (1, *expected)
    assert props["foreground_classes"] == [2] and props["case"] == "c1"
    assert props["plans_fingerprint"] == preprocessing_fingerprint(plans, "3d_fullres")


def test_2d_configuration_of_3d_data_keeps_axis0_spacing():
    img = np.random.default_rng(5).normal(size=(1, 7, 40, 30)).astype(np.float32) + 5
    geo = Geometry((3.0, 0.5, 0.5))
    plans = make_plans(spacing2d=(1.0, 1.0))
    data, _, props = preprocess_case(img, geo, plans, "2d")
    assert props["target_spacing"] == [3.0, 1.0, 1.0]
    assert data.shape == (1, 7, 20, 15)


def test_2d_rgb_picture():
    rng = np.random.default_rng(6)
    img = rng.integers(1, 256, size=(3, 45, 50)).astype(np.uint8)
    img[:, :5] = 0  # a black frame is cropped away
    lab = (rng.random((45, 50)) > 0.7).astype(np.int16)
    plans = make_plans(ndim=2, schemes=("RGBTo01",) * 3, spacing2d=(1.0, 1.0),
                       labels={"background": 0, "vessel": 1})
    data, seg, props = preprocess_case(img, Geometry((1.0, 1.0)), plans, "2d", lab)
    assert data.shape == (3, 40, 50) and seg.shape == (1, 40, 50)
    np.testing.assert_allclose(data, img[:, 5:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(seg[0], lab[5:])


@pytest.mark.parametrize("spacing,target,exact", [((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), True),
                                                  ((1.0, 0.8, 0.8), (1.3, 1.1, 1.2), False),
                                                  ((4.0, 1.0, 1.0), (4.0, 1.5, 1.5), False)])
def test_restore_to_original_round_trip(spacing, target, exact):
    shape = (24, 40, 36)
    img = np.zeros((1, *shape), np.float32)
    img[0, 2:22, 4:36, 3:33] = 10 + np.random.default_rng(7).random((20, 32, 30))
    lab = np.zeros(shape, np.int16)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    lab[((zz - 12) / 8) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 18) / 10) ** 2 <= 1] = 1
    lab[((zz - 12) / 5) ** 2 + ((yy - 20) / 6) ** 2 + ((xx - 18) / 5) ** 2 <= 1] = 2
    plans = make_plans(spacing3d=target, transpose=[0, 2, 1])
    data, seg, props = preprocess_case(img, Geometry(spacing), plans, "3d_fullres", lab)
    props = json.loads(json.dumps(props))  # what CASE.json would give back
    restored = restore_to_original(seg[0], props, plans, "3d_fullres")
    assert restored.shape == shape
    if exact:
        np.testing.assert_array_equal(restored, lab)
    else:
        for k in (1, 2):
            a, b = restored == k, lab == k
            assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) > 0.9
    # Probabilities: one-hot of the cached labels, restored, argmax -> close to the original labels,
    # and outside the crop box the background gets probability 1.
    probs = np.stack([(seg[0] == k).astype(np.float32) for k in range(3)])
    back = restore_to_original(probs, props, plans, "3d_fullres")
    assert back.shape == (3, *shape)
    assert np.all(back[0, 0] == 1) and np.all(back[1:, 0] == 0)
    agree = np.mean(back.argmax(0) == lab)
    assert agree == 1.0 if exact else agree > 0.97
    with pytest.raises(ValueError, match="cache grid"):
        restore_to_original(np.zeros((3, 3, 3)), props, plans, "3d_fullres")


def test_class_locations_follow_sampling_rule():
    seg = np.zeros((60, 60, 60), np.int16)
    seg[:50, :50, :50] = 1           # 125 000 voxels -> max(10 000, 1250) = 10 000
    seg[55:, 55:, 55:] = 2           # 125 voxels -> all of them
    locs = cache_mod.sample_class_locations(seg, [1, 2, 3])
    assert locs["class_1"].shape == (10_000, 3) and locs["class_2"].shape == (125, 3)
    assert locs["class_3"].shape == (0, 3)
    assert np.all(seg[tuple(locs["class_1"].T)] == 1) and np.all(seg[tuple(locs["class_2"].T)] == 2)
    assert len(np.unique(locs["class_1"], axis=0)) == 10_000
    # 130^3 = 2 197 000 voxels: 1 % (21 970) exceeds the 10 000 cap, so 1 % wins.
    assert cache_mod.sample_class_locations(np.ones((130, 130, 130), np.int16), [1])["class_1"].shape[0] == 21970
    np.testing.assert_array_equal(cache_mod.sample_class_locations(seg, [1])["class_1"],
                                  cache_mod.sample_class_locations(seg, [1])["class_1"])  # seeded


# ----------------------------------------------------------------------------------- dataset runs

def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_preprocess_dataset_writes_contract_and_resumes(raw3d, tmp_path, monkeypatch):
    work = tmp_path / "work"
    plans = make_plans(spacing3d=(1.2, 1.0, 0.9))
    write_plans(raw3d, work, plans)
    summary = preprocess_dataset(raw3d, work, num_processes=1, progress=False)
    assert summary.processed == {"2d": 8, "3d_fullres": 8} and not summary.failed
    folder = work / raw3d.name / "preprocessed" / "3d_fullres"
    names = _listing(folder)
    assert len(names) == 32 and not any(n.startswith(TMP_PREFIX) for n in names)
    data, seg, locs, props = load_case(folder, "case_000")
    assert data.dtype == np.float32 and seg.dtype == np.int16 and seg.shape == (1, *data.shape[1:])
    assert sorted(locs) == ["class_1", "class_2"] and all(v.dtype == np.int64 for v in locs.values())
    for key in ("case", "configuration", "plans_fingerprint", "geometry", "original_shape", "bbox",
                "shape_after_crop", "spacing_after_transpose", "shape_after_resampling", "target_spacing",
                "foreground_classes"):
        assert key in props, key
    # Every .npy loads without pickle, memory-mapped.
    for name in names:
        if name.endswith(".npy"):
            np.load(folder / name, mmap_mode="r", allow_pickle=False)

    # Second run: everything skipped.
    again = preprocess_dataset(raw3d, work, num_processes=1, progress=False)
    assert again.processed == {"2d": 0, "3d_fullres": 0} and again.skipped == {"2d": 8, "3d_fullres": 8}

    # A case without CASE.json is redone; so is a truncated array.
    (folder / "case_003.json").unlink()
    with open(folder / "case_005.npy", "r+b") as fh:
        fh.truncate(100)
    third = preprocess_dataset(raw3d, work, num_processes=1, progress=False)
    assert third.processed == {"2d": 0, "3d_fullres": 2}

    # Changing a preprocessing key redoes that configuration; a training-only key does not.
    changed = copy.deepcopy(plans)
    changed["configurations"]["3d_fullres"]["batch_size"] = 7
    write_plans(raw3d, work, changed)
    assert preprocess_dataset(raw3d, work, num_processes=1, progress=False).processed["3d_fullres"] == 0
    changed["configurations"]["3d_fullres"]["spacing"] = [1.0, 1.0, 1.0]
    write_plans(raw3d, work, changed)
    fourth = preprocess_dataset(raw3d, work, num_processes=1, progress=False, configurations=["3d_fullres"])
    assert fourth.processed == {"3d_fullres": 8}


def test_crash_mid_case_leaves_no_marker_and_no_temporaries(raw3d, tmp_path, monkeypatch):
    work = tmp_path / "work"
    write_plans(raw3d, work, make_plans())
    real_save = cache_mod._save_npy

    def crash_after_data(path, array):
        real_save(path, array)
        if path.name == "case_002.npy":
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(cache_mod, "_save_npy", crash_after_data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        preprocess_dataset(raw3d, work, num_processes=1, progress=False, configurations=["3d_fullres"])
    folder = work / raw3d.name / "preprocessed" / "3d_fullres"
    names = _listing(folder)
    assert "case_002.npy" in names and "case_002.json" not in names
    assert not any(n.startswith(TMP_PREFIX) for n in names)
    assert "case_001.json" in names
    monkeypatch.setattr(cache_mod, "_save_npy", real_save)
    # A killed process can leave a temporary behind; the next run removes it and finishes the rest.
    (folder / f"{TMP_PREFIX}case_004.npy.abc.npy").write_bytes(b"partial")
    summary = preprocess_dataset(raw3d, work, num_processes=1, progress=False, configurations=["3d_fullres"])
    assert summary.skipped["3d_fullres"] == 2 and summary.processed["3d_fullres"] == 6
    assert not any(n.startswith(TMP_PREFIX) for n in _listing(folder))


def test_parallel_run_matches_inline_run(raw3d, tmp_path):
    plans = make_plans(spacing3d=(1.5, 1.5, 1.5))
    a, b = tmp_path / "a", tmp_path / "b"
    preprocess_dataset(raw3d, a, num_processes=1, progress=False, plans=plans)
    s = preprocess_dataset(raw3d, b, num_processes=2, progress=False, plans=plans)
    assert s.num_processes == 2 and s.processed["3d_fullres"] == 8
    for cfg in ("2d", "3d_fullres"):
        fa, fb = a / raw3d.name / "preprocessed" / cfg, b / raw3d.name / "preprocessed" / cfg
        assert _listing(fa) == _listing(fb)
        for name in _listing(fa):
            if name.endswith(".npy"):
                np.testing.assert_array_equal(np.load(fa / name), np.load(fb / name))


def test_errors_name_the_problem(raw3d, tmp_path):
    from unetkit.data.errors import DataError

    with pytest.raises(DataError, match="plans.json not found"):
        preprocess_dataset(raw3d, tmp_path / "none", num_processes=1, progress=False)
    work = tmp_path / "work"
    write_plans(raw3d, work, make_plans())
    with pytest.raises(DataError, match="'3d_lowres' is not in the plans"):
        preprocess_dataset(raw3d, work, configurations=["3d_lowres"], progress=False)
    # A label whose shape differs from its image: that case fails by name, the others are cached.
    lab, geo = read_label(raw3d / "labelsTr" / "case_001.nii.gz")
    write_label(lab[:-1], raw3d / "labelsTr" / "case_001.nii.gz", geo)
    with pytest.raises(DataError, match="case_001.*label shape"):
        preprocess_dataset(raw3d, work, num_processes=1, progress=False, configurations=["3d_fullres"])
    assert len(list((work / raw3d.name / "preprocessed" / "3d_fullres").glob("*.json"))) == 7


def test_cli_preprocess(raw2d, tmp_path, capsys):
    from unetkit.cli import main

    work = tmp_path / "work"
    write_plans(raw2d, work, make_plans(ndim=2, schemes=("ZScore",), labels={"background": 0, "class_1": 1}))
    assert main(["preprocess", str(raw2d), "--workdir", str(work), "--num-processes", "1"]) == 0
    assert "8 case(s) preprocessed" in capsys.readouterr().out
    assert len(list((work / raw2d.name / "preprocessed" / "2d").glob("*_seg.npy"))) == 8
    assert main(["preprocess", str(raw2d), "--workdir", str(tmp_path / "missing")]) == 1


# ----------------------------------------------------------------------------------- real data

def _hippocampus_raw(tmp_path: Path, n: int) -> Path:
    src = shared_dataset("Hippocampus") / "TrainingSet"
    stems = sorted({p.name[:-7] for p in (src / "images").glob("*.nii.gz")}
                   & {p.name[:-7] for p in (src / "labels").glob("*.nii.gz")})[:n]
    raw = tmp_path / "Hippocampus"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for s in stems:
        os.symlink(src / "images" / f"{s}.nii.gz", raw / "imagesTr" / f"{s}_0000.nii.gz")
        os.symlink(src / "labels" / f"{s}.nii.gz", raw / "labelsTr" / f"{s}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "numTraining": len(stems),
                                                  "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
                                                  "file_ending": ".nii.gz"}))
    return raw


def test_hippocampus_smoke(tmp_path):
    raw = _hippocampus_raw(tmp_path, 4)
    work = tmp_path / "work"
    plans = make_plans(labels={"background": 0, "Anterior": 1, "Posterior": 2})
    write_plans(raw, work, plans)
    summary = preprocess_dataset(raw, work, num_processes=2, progress=False)
    assert summary.processed == {"2d": 4, "3d_fullres": 4}
    folder = work / raw.name / "preprocessed" / "3d_fullres"
    for case in ("hippocampus_001", "hippocampus_003"):
        data, seg, locs, props = load_case(folder, case)
        img, _ = read_image(raw / "imagesTr" / f"{case}_0000.nii.gz")
        lab, _ = read_label(raw / "labelsTr" / f"{case}.nii.gz")
        assert props["target_spacing"] == [1.0, 1.0, 1.0] and props["foreground_classes"] == [1, 2]
        assert abs(float(data.mean())) < 1e-3 and abs(float(data.std()) - 1) < 1e-3
        np.testing.assert_array_equal(restore_to_original(np.asarray(seg[0]), props, plans, "3d_fullres"), lab)
        # 2d and 3d_fullres arrays are identical at 1 mm; they are stored once (hard links).
        twin = work / raw.name / "preprocessed" / "2d" / f"{case}.npy"
        np.testing.assert_array_equal(np.load(twin), data)
        assert json.loads((twin.with_suffix(".json")).read_text())["configuration"] == "2d"


def test_drive_rgb_smoke(tmp_path):
    src = shared_dataset("DRIVE") / "training"
    raw = tmp_path / "DRIVE"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for n in (21, 22):
        img, geo = read_image(src / "images" / f"{n}_training.tif")
        lab, _ = read_label(src / "1st_manual" / f"{n}_manual1.gif")
        write_image(img, raw / "imagesTr" / f"drive_{n}_0000.png", geo)
        write_label((lab > 0).astype(np.int16), raw / "labelsTr" / f"drive_{n}.png", geo)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "R", "1": "G", "2": "B"},
                                                  "labels": {"background": 0, "vessel": 1},
                                                  "numTraining": 2, "file_ending": ".png"}))
    work = tmp_path / "work"
    plans = make_plans(ndim=2, schemes=("RGBTo01",) * 3, spacing2d=(1.0, 1.0),
                       labels={"background": 0, "vessel": 1})
    write_plans(raw, work, plans)
    summary = preprocess_dataset(raw, work, num_processes=1, progress=False)
    assert summary.processed == {"2d": 2}
    data, seg, locs, props = load_case(work / raw.name / "preprocessed" / "2d", "drive_21")
    assert data.shape[0] == 3 and data.ndim == 3 and 0 <= data.min() and data.max() <= 1
    assert props["original_shape"] == [584, 565] and locs["class_1"].shape[1] == 2
    assert tuple(props["shape_after_crop"]) == data.shape[1:]


# ----------------------------------------------------------------------------------- nnU-Net parity

_NNUNET_SCRIPT = """
import sys, numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
folder = sys.argv[1]
x, lab = np.load(folder + '/x.npy'), np.load(folder + '/lab.npy')
for i, (cur, new, shape) in enumerate(eval(sys.argv[2])):
    np.save(f'{folder}/nn_img_{i}.npy', resample_data_or_seg_to_shape(x, shape, cur, new, False, 3, 0, None))
    np.save(f'{folder}/nn_lab_{i}.npy', resample_data_or_seg_to_shape(lab[None], shape, cur, new, True, 1, 0, None)[0])
"""


@pytest.mark.reference
def test_resampling_matches_nnunet(tmp_path):
    """Same shapes and values as nnU-Net v2's resampling; label maps voxel for voxel."""
    import subprocess

    from scipy.ndimage import gaussian_filter

    nnunet_python = require_nnunet_python()
    rng = np.random.default_rng(0)
    x = gaussian_filter(rng.normal(size=(12, 40, 44)), 1.5).astype(np.float32)[None]
    lab = np.zeros((12, 40, 44), np.int16)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in lab.shape], indexing="ij")
    lab[((zz - 6) / 4) ** 2 + ((yy - 20) / 12) ** 2 + ((xx - 22) / 14) ** 2 <= 1] = 1
    lab[((zz - 6) / 3) ** 2 + ((yy - 20) / 6) ** 2 + ((xx - 22) / 5) ** 2 <= 1] = 2
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "lab.npy", lab)
    cases = [((1.0, 1.0, 1.0), (0.8, 1.3, 0.9)), ((5.0, 1.0, 1.0), (3.0, 1.4, 1.4)), ((1.0, 1.0, 1.0), (4.0, 1.0, 1.0))]
    spec = [(c, n, compute_new_shape(x.shape[1:], c, n)) for c, n in cases]
    subprocess.run([str(nnunet_python), "-c", _NNUNET_SCRIPT, str(tmp_path), repr(spec)], check=True)
    for i, (cur, new, shape) in enumerate(spec):
        ours = resample_image(x, shape, cur, new)
        np.testing.assert_allclose(ours, np.load(tmp_path / f"nn_img_{i}.npy"), atol=1e-5)
        theirs = np.load(tmp_path / f"nn_lab_{i}.npy")
        np.testing.assert_array_equal(resample_label(lab, shape, cur, new), theirs)


_NNUNET_LABEL_SCRIPT = """
import sys, numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
folder = sys.argv[1]
for i, (case, cur, new, shape, order, order_z) in enumerate(eval(sys.argv[2])):
    lab = np.load(f'{folder}/{case}.npy')[None]
    np.save(f'{folder}/nn_{i}.npy', resample_data_or_seg_to_shape(lab, shape, cur, new, True, order, order_z, None)[0])
"""

# (current spacing, target spacing, label order, order along the coarse axis): together (up, down by
# exactly 2 - a tie at every boundary voxel -, uneven), a separate coarse axis from the current
# spacing (nearest slice, and linear + threshold) and from the target spacing, and order 0.
HIPPOCAMPUS_RESAMPLINGS = [((1.0, 1.0, 1.0), (0.8, 1.3, 0.9), 1, 0), ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0), 1, 0),
                           ((1.0, 1.0, 1.0), (0.5, 0.5, 0.5), 1, 0), ((5.0, 1.0, 1.0), (3.0, 1.4, 1.4), 1, 0),
                           ((5.0, 1.0, 1.0), (3.0, 1.4, 1.4), 1, 1), ((1.0, 1.0, 1.0), (4.0, 1.0, 1.0), 1, 0),
                           ((1.0, 1.0, 1.0), (0.8, 1.3, 0.9), 0, 0)]


@pytest.mark.reference
def test_label_resampling_matches_nnunet_on_hippocampus(tmp_path):
    """Real label maps (MSD Hippocampus, 3 classes) resampled by us and by nnU-Net v2.8.1's
    resample_data_or_seg_to_shape (its preprocessing and export path): every voxel agrees."""
    import subprocess

    source = shared_dataset("Hippocampus") / "TrainingSet" / "labels"
    nnunet_python = require_nnunet_python()
    cases = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    labels = {}
    for case in cases:
        labels[case] = read_label(source / f"{case}.nii.gz")[0]
        np.save(tmp_path / f"{case}.npy", labels[case])
    spec = [(case, cur, new, compute_new_shape(labels[case].shape, cur, new), order, order_z)
            for case in cases for cur, new, order, order_z in HIPPOCAMPUS_RESAMPLINGS]
    subprocess.run([str(nnunet_python), "-c", _NNUNET_LABEL_SCRIPT, str(tmp_path), repr(spec)], check=True)
    for i, (case, cur, new, shape, order, order_z) in enumerate(spec):
        ours = resample_label(labels[case], shape, cur, new, order, order_z)
        theirs = np.load(tmp_path / f"nn_{i}.npy")
        assert ours.shape == theirs.shape == shape
        disagree = int(np.count_nonzero(ours != theirs))
        assert disagree == 0, f"{case} {cur} -> {new} order {order}/{order_z}: {disagree} of {ours.size} voxels differ"
