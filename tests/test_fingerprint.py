"""Fingerprint extraction: crop box, foreground statistics, class frequencies, errors, Hippocampus."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

from unetkit.data.dataset import Case, load_dataset
from unetkit.data.errors import DataError
from unetkit.data.fingerprint import (analyze_case, extract_fingerprint, intensity_statistics, load_fingerprint,
                                      nonzero_bbox, weighted_percentiles)
from unetkit.data.io import Geometry, write_image, write_label
from unetkit.utils.atomic import atomic_write_json

from conftest import shared_dataset


def _write_case(root, name, image, label, spacing=(2.0, 1.0, 1.0)):
    geo = Geometry(spacing=spacing, origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(image.shape[0]):
        p = root / "imagesTr" / f"{name}_{c:04d}.nii.gz"
        write_image(image[c:c + 1], p, geo)
        paths.append(p)
    lp = root / "labelsTr" / f"{name}.nii.gz"
    write_label(label, lp, geo)
    return Case(name=name, images=tuple(paths), label=lp)


def _dataset_json(root, n, channels=None, labels=None):
    atomic_write_json(root / "dataset.json", {"channel_names": channels or {"0": "MRI"},
                                              "labels": labels or {"background": 0, "a": 1, "b": 2},
                                              "numTraining": n, "file_ending": ".nii.gz"})


# ------------------------------------------------------------------------------------ crop box

def test_nonzero_bbox_single_and_multi_channel():
    data = np.zeros((2, 10, 12, 14), np.float32)
    data[0, 2:5, 3:4, 1:9] = 1
    data[1, 6, 10, 12] = -3  # a negative value counts as nonzero
    box = nonzero_bbox(data)
    assert box == (slice(2, 7), slice(3, 11), slice(1, 13))
    assert nonzero_bbox(data[:1]) == (slice(2, 5), slice(3, 4), slice(1, 9))


def test_nonzero_bbox_of_empty_image_is_whole_image():
    assert nonzero_bbox(np.zeros((1, 4, 5), np.uint8)) == (slice(0, 4), slice(0, 5))


def test_nonzero_bbox_equals_box_of_hole_filled_mask():
    # nnU-Net fills holes before taking the box; filling cannot move the box.
    rng = np.random.default_rng(3)
    for _ in range(20):
        data = (rng.random((1, 12, 13, 11)) > 0.93).astype(np.float32)
        data[0, 3:9, 4:10, 2:8] = 1
        data[0, 5:7, 6:8, 4:6] = 0  # an enclosed hole
        filled = binary_fill_holes(data[0] != 0)
        idx = np.argwhere(filled)
        expected = tuple(slice(int(a), int(b) + 1) for a, b in zip(idx.min(0), idx.max(0)))
        assert nonzero_bbox(data) == expected


# -------------------------------------------------------------------------------- statistics

def test_weighted_percentiles_match_numpy_for_equal_weights():
    rng = np.random.default_rng(0)
    values = rng.normal(size=20001)
    got = weighted_percentiles(values, np.ones_like(values), (0.5, 50, 99.5))
    np.testing.assert_allclose(got, np.percentile(values, (0.5, 50, 99.5)), atol=2e-3)


def test_weights_act_like_repetition():
    values = np.array([1.0, 2.0, 3.0])
    weighted = intensity_statistics(values, np.array([1.0, 1.0, 2.0]))
    repeated = np.array([1.0, 2.0, 3.0, 3.0])
    assert weighted["mean"] == pytest.approx(repeated.mean())
    assert weighted["std"] == pytest.approx(repeated.std())
    assert weighted["min"] == 1.0 and weighted["max"] == 3.0
    empty = intensity_statistics(np.empty(0, np.float32), np.empty(0))
    assert empty["mean"] is None and set(empty) == {"mean", "median", "std", "min", "max", "percentile_99_5",
                                                    "percentile_00_5"}


# ---------------------------------------------------------------------------------- one case

def test_analyze_case_crop_foreground_and_classes(tmp_path):
    image = np.zeros((1, 8, 10, 12), np.float32)
    image[0, 1:7, 2:8, 3:9] = 50.0
    label = np.zeros((8, 10, 12), np.int16)
    label[2:4, 3:5, 4:6] = 1        # 8 voxels of class 1 at intensity 50
    image[0, 2:4, 3:5, 4:6] = 100.0
    label[0, 0, 0] = 2              # class 2 outside the crop: counted, but no intensity sample
    case = _write_case(tmp_path, "c1", image, label)
    fp = analyze_case(case, samples_per_case=1000, allowed_labels=[0, 1, 2])
    assert fp.spacing == (2.0, 1.0, 1.0)
    assert fp.shape_before_crop == (8, 10, 12)
    assert fp.shape_after_crop == (6, 6, 6)
    assert fp.relative_size_after_crop == pytest.approx(216 / 960)
    assert fp.class_voxels == {0: 960 - 9, 1: 8, 2: 1}
    assert fp.foreground_values[0].size == 8 and np.all(fp.foreground_values[0] == 100.0)
    assert fp.foreground_weight == pytest.approx(1 / 8)


def test_analyze_case_subsamples_large_foreground_deterministically(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(100, 10, size=(1, 10, 10, 10)).astype(np.float32)
    label = np.ones((10, 10, 10), np.int16)
    case = _write_case(tmp_path, "c2", image, label)
    a = analyze_case(case, samples_per_case=50)
    b = analyze_case(case, samples_per_case=50)
    assert a.foreground_values[0].size == 50
    np.testing.assert_array_equal(a.foreground_values[0], b.foreground_values[0])
    assert a.foreground_weight == pytest.approx(1 / 50)


@pytest.mark.parametrize("problem", ["undeclared", "shape", "nan"])
def test_analyze_case_errors_name_case_and_file(tmp_path, problem):
    image = np.ones((1, 6, 6, 6), np.float32)
    label = np.zeros((6, 6, 6), np.int16)
    if problem == "undeclared":
        label[1, 1, 1] = 7
    if problem == "nan":
        image[0, 2, 2, 2] = np.nan
    case = _write_case(tmp_path, "bad", image, label)
    if problem == "shape":
        write_label(np.zeros((5, 6, 6), np.int16), case.label, Geometry(spacing=(1.0, 1.0, 1.0)))
    if problem == "nan":
        # SimpleITK's NIfTI reader turns NaN into 0; MetaImage keeps it.
        mha = tmp_path / "bad_0000.mha"
        write_image(image, mha, Geometry(spacing=(2.0, 1.0, 1.0)))
        case = Case(name="bad", images=(mha,), label=case.label)
    with pytest.raises(DataError) as info:
        analyze_case(case, samples_per_case=100, allowed_labels=[0, 1, 2])
    text = str(info.value)
    assert "'bad'" in text
    assert {"undeclared": "[7]", "shape": "differs", "nan": "NaN"}[problem] in text


# ------------------------------------------------------------------------------ whole dataset

def test_extract_fingerprint_synthetic_3d(raw3d):
    fp = extract_fingerprint(raw3d, num_processes=1)
    assert fp["format_version"] == 1
    assert fp["num_cases"] == 8 and fp["num_channels"] == 1
    assert len(fp["spacings"]) == 8 and all(len(s) == 3 for s in fp["spacings"])
    assert len(fp["shapes_after_crop"]) == 8
    # synthetic images are noise everywhere: nothing to crop
    assert fp["median_relative_size_after_cropping"] == pytest.approx(1.0)
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    assert stats["percentile_00_5"] <= stats["median"] <= stats["percentile_99_5"]
    assert stats["min"] <= stats["percentile_00_5"] and stats["max"] >= stats["percentile_99_5"]
    assert 100 < stats["mean"] < 200 and stats["std"] > 0
    assert set(fp["class_voxel_fraction"]) == {"1", "2"}
    assert all(0 < v < 0.5 for v in fp["class_voxel_fraction"].values())
    assert fp["class_case_fraction"] == {"1": 1.0, "2": 1.0}
    json.dumps(fp, allow_nan=False)  # plain JSON


def test_extract_fingerprint_pool_matches_serial(raw3d):
    serial = extract_fingerprint(raw3d, num_processes=1)
    pooled = extract_fingerprint(raw3d, num_processes=2)
    assert serial == pooled


def test_extract_fingerprint_2d_pictures(raw2d):
    fp = extract_fingerprint(raw2d, num_processes=1)
    assert all(s == [1.0, 1.0] for s in fp["spacings"])
    assert all(len(s) == 2 for s in fp["shapes_after_crop"])


def test_extract_fingerprint_refuses_unlabelled_cases(raw3d):
    (raw3d / "labelsTr" / "case_003.nii.gz").unlink()
    with pytest.raises(DataError, match="case_003"):
        extract_fingerprint(raw3d, num_processes=1)


def test_extract_fingerprint_channel_count_mismatch(tmp_path):
    image = np.ones((1, 6, 6, 6), np.float32)
    _write_case(tmp_path, "c", image, np.zeros((6, 6, 6), np.int16))
    _dataset_json(tmp_path, 1, channels={"0": "T1", "1": "T2"})
    with pytest.raises(DataError, match="declares 2"):
        extract_fingerprint(load_dataset(tmp_path), num_processes=1)


def test_load_fingerprint_names_missing_key(tmp_path):
    path = tmp_path / "fingerprint.json"
    atomic_write_json(path, {"format_version": 1, "spacings": [[1, 1, 1]]})
    with pytest.raises(DataError, match="num_cases"):
        load_fingerprint(path)
    with pytest.raises(DataError, match="not found"):
        load_fingerprint(tmp_path / "missing.json")


# -------------------------------------------------------------------------------- Hippocampus

def hippocampus_raw(tmp_path):
    """Hippocampus as an nnU-Net v2 raw dataset of symlinks (only stems with image and label)."""
    src = shared_dataset("Hippocampus") / "TrainingSet"
    root = tmp_path / "Hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    stems = sorted({p.name[:-7] for p in (src / "images").glob("*.nii.gz")}
                   & {p.name[:-7] for p in (src / "labels").glob("*.nii.gz")})
    for stem in stems:
        (root / "imagesTr" / f"{stem}_0000.nii.gz").symlink_to(src / "images" / f"{stem}.nii.gz")
        (root / "labelsTr" / f"{stem}.nii.gz").symlink_to(src / "labels" / f"{stem}.nii.gz")
    atomic_write_json(root / "dataset.json", {
        "name": "Hippocampus", "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": len(stems), "file_ending": ".nii.gz"})
    return root


@pytest.mark.reference
@pytest.mark.dataset
def test_hippocampus_fingerprint_matches_nnunet(tmp_path):
    fp = extract_fingerprint(hippocampus_raw(tmp_path), num_processes=2)
    assert fp["num_cases"] == 260
    assert np.median(fp["shapes_after_crop"], axis=0).tolist() == [36.0, 50.0, 35.0]
    assert np.median(fp["spacings"], axis=0).tolist() == [1.0, 1.0, 1.0]
    assert fp["median_relative_size_after_cropping"] == 1.0
    stats = fp["foreground_intensity_properties_per_channel"]["0"]
    # nnU-Net v2.8.1's fingerprint of the same 260 cases (its mean/std come from a random
    # draw, so they agree to sampling noise; percentiles, min and max agree exactly).
    assert stats["percentile_00_5"] == pytest.approx(28.0)
    assert stats["median"] == pytest.approx(362.88250732421875)
    assert stats["percentile_99_5"] == pytest.approx(277682.03125)
    assert stats["min"] == 0.0 and stats["max"] == pytest.approx(486420.21875)
    assert stats["mean"] == pytest.approx(22360.457, rel=2e-3)
    assert stats["std"] == pytest.approx(60654.62, rel=2e-3)
    assert fp["class_case_fraction"] == {"1": 1.0, "2": 1.0}
