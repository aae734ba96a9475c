"""Every metric against independent reference code written here (and MONAI when installed).

References: surface voxels found by looking at the 2*ndim face neighbours of padded arrays (no
erosion), distances by brute force with a k-d tree on surface coordinates times the spacing,
overlap metrics from float sums of products.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from references import require_module
from scipy.spatial import cKDTree

from unetkit.evaluation.metrics import (binary_metrics, compute_metrics, label_key, parse_label_key,
                                        surface_voxels)


def ref_surface(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    surface = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            neighbour = np.roll(padded, shift, axis=axis)[inner]
            surface |= mask & ~neighbour
    return surface


def ref_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    pa = np.argwhere(ref_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(ref_surface(b)) * np.asarray(spacing)
    distances, _ = cKDTree(pb).query(pa)
    return distances


def ref_metrics(pred: np.ndarray, ref: np.ndarray, spacing, tol: float) -> dict:
    p, g = pred.astype(np.float64), ref.astype(np.float64)
    inter = float((p * g).sum())
    out = {"Dice": 2 * inter / (p.sum() + g.sum()), "IoU": inter / float(np.maximum(p, g).sum()),
           "Precision": inter / p.sum() if p.sum() else math.nan, "Recall": inter / g.sum() if g.sum() else math.nan}
    d1, d2 = ref_directed(pred, ref, spacing), ref_directed(ref, pred, spacing)
    out["HD95"] = max(np.percentile(d1, 95), np.percentile(d2, 95))
    out["ASSD"] = float(np.concatenate([d1, d2]).mean())
    out["NSD"] = ((d1 <= tol).sum() + (d2 <= tol).sum()) / (d1.size + d2.size)
    return out


def blobs(shape, rng, n=3, p_noise=0.02) -> np.ndarray:
    """Random ellipsoid blobs plus salt noise: realistic and irregular surfaces."""
    grid = np.indices(shape).astype(np.float64)
    mask = np.zeros(shape, bool)
    for _ in range(n):
        centre = rng.uniform(0, shape)
        radii = rng.uniform(1.5, max(2.0, min(shape) / 3), size=len(shape))
        mask |= (((grid - centre.reshape((-1,) + (1,) * len(shape))) / radii.reshape((-1,) + (1,) * len(shape))) ** 2
                 ).sum(0) <= 1
    return mask ^ (rng.random(shape) < p_noise)


CASES = [((14, 17, 15), (2.5, 0.8, 0.6)), ((9, 20, 11), (1.0, 1.0, 1.0)), ((31, 27), (0.5, 1.7)), ((40, 33), (1.0, 1.0))]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape,spacing", CASES)
def test_random_masks_match_reference(shape, spacing, seed):
    rng = np.random.default_rng(seed)
    pred, ref = blobs(shape, rng), blobs(shape, rng)
    tol = float(rng.uniform(0.5, 3.0))
    got = binary_metrics(pred, ref, spacing, tol)
    want = ref_metrics(pred, ref, spacing, tol)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert got["TP"] + got["FP"] + got["FN"] + got["TN"] == pred.size
    np.testing.assert_array_equal(surface_voxels(pred), ref_surface(pred))


def test_small_objects_in_large_volume_crop_is_exact():
    """The bounding-box shortcut gives the same numbers as the brute-force reference."""
    rng = np.random.default_rng(5)
    pred = np.zeros((40, 50, 45), bool)
    ref = np.zeros_like(pred)
    pred[10:14, 20:26, 5:9] = True
    ref[11:15, 21:25, 6:11] = True
    pred[30, 40, 40] = True  # far-away stray voxel
    ref |= rng.random(ref.shape) < 0.0005
    spacing = (3.0, 0.7, 0.7)
    got, want = binary_metrics(pred, ref, spacing, 2.0), ref_metrics(pred, ref, spacing, 2.0)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


@pytest.mark.parametrize("ndim", [2, 3])
def test_masks_touching_the_border(ndim):
    shape = (12,) * ndim
    pred = np.zeros(shape, bool)
    ref = np.zeros(shape, bool)
    pred[:5] = True                     # a full slab on the array border
    ref[:4] = True
    ref[(slice(None),) * (ndim - 1) + (slice(0, 3),)] = True
    spacing = (2.0,) + (0.5,) * (ndim - 1)
    got, want = binary_metrics(pred, ref, spacing, 1.0), ref_metrics(pred, ref, spacing, 1.0)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    # the border counts as background: a full slab has a surface on the array's faces too
    assert surface_voxels(np.ones(shape, bool)).sum() == np.prod(shape) - 10 ** ndim


def test_single_voxels_distance_in_millimetres():
    pred = np.zeros((5, 6, 7), bool)
    ref = np.zeros_like(pred)
    pred[1, 2, 3] = True
    ref[4, 2, 1] = True
    spacing = (3.0, 1.0, 0.5)
    expected = math.hypot(3 * 3.0, 2 * 0.5)
    m = binary_metrics(pred, ref, spacing, tolerance=expected - 1e-6)
    assert m["HD95"] == pytest.approx(expected)
    assert m["ASSD"] == pytest.approx(expected)
    assert m["NSD"] == 0.0
    assert m["Dice"] == 0.0 and m["IoU"] == 0.0 and m["Precision"] == 0.0 and m["Recall"] == 0.0
    assert binary_metrics(pred, ref, spacing, tolerance=expected)["NSD"] == 1.0  # d <= tau counts
    same = binary_metrics(pred, pred, spacing, 0.0)
    assert same["Dice"] == 1.0 and same["HD95"] == 0.0 and same["NSD"] == 1.0


def test_both_empty_follows_nnunet_or_perfect():
    empty = np.zeros((4, 5, 6), bool)
    m = binary_metrics(empty, empty, (1, 1, 1))
    for key in ("Dice", "IoU", "Precision", "Recall", "NSD", "HD95", "ASSD"):
        assert math.isnan(m[key]), key
    assert m["TN"] == empty.size
    perfect = binary_metrics(empty, empty, (1, 1, 1), empty_value=1.0)
    assert perfect["Dice"] == perfect["IoU"] == perfect["NSD"] == 1.0
    assert perfect["HD95"] == perfect["ASSD"] == 0.0


def test_one_empty_gives_zero_overlap_and_infinite_distance():
    empty = np.zeros((4, 5), bool)
    full = empty.copy()
    full[1:3, 1:4] = True
    missed = binary_metrics(empty, full, (1.0, 1.0))   # structure missed
    assert missed["Dice"] == 0 and missed["NSD"] == 0 and missed["Recall"] == 0
    assert math.isinf(missed["HD95"]) and math.isinf(missed["ASSD"])
    assert math.isnan(missed["Precision"])
    spurious = binary_metrics(full, empty, (1.0, 1.0))  # false positive only
    assert spurious["Dice"] == 0 and spurious["Precision"] == 0 and math.isnan(spurious["Recall"])
    assert math.isinf(spurious["HD95"])


def test_regions_and_ignore_label():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 4, size=(10, 12, 9)).astype(np.int16)  # 3 = ignore
    pred = rng.integers(0, 3, size=gt.shape).astype(np.int16)
    spacing = (1.5, 1.0, 0.8)
    got = compute_metrics(pred, gt, spacing, [1, (1, 2)], tolerance={"1": 1.0, "(1, 2)": 2.0}, ignore_label=3)
    valid = gt != 3
    for key, values, tol in (("1", [1], 1.0), ("(1, 2)", [1, 2], 2.0)):
        p = np.isin(pred, values) & valid
        g = np.isin(gt, values) & valid
        want = ref_metrics(p, g, spacing, tol)
        for metric, value in want.items():
            assert got[key][metric] == pytest.approx(value, rel=1e-9), (key, metric)
        assert got[key]["TP"] + got[key]["FP"] + got[key]["FN"] + got[key]["TN"] == valid.sum()


def test_shape_and_spacing_mistakes_are_reported():
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(np.zeros((3, 4)), np.zeros((4, 3)), (1, 1), [1])
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(np.zeros((3, 4), bool), np.zeros((3, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        compute_metrics(np.zeros((3, 4)), np.zeros((3, 4)), (1, 1), [1, 2], tolerance={"1": 1.0})


def test_label_keys_round_trip():
    for label in (1, 12, (1, 2, 3)):
        assert parse_label_key(label_key(label)) == label
    assert parse_label_key("2,3") == (2, 3)
    assert label_key((4,)) == "4"


@pytest.mark.reference
def test_matches_monai():
    """MONAI is not a dependency of unetkit; the dev extra installs it so CI runs this reference."""
    metrics = require_module("monai.metrics", "pip install -e '.[dev]'")
    import torch

    rng = np.random.default_rng(11)
    for shape, spacing in CASES:
        pred, ref = blobs(shape, rng), blobs(shape, rng)

        def onehot(x):
            return torch.from_numpy(np.stack([~x, x])[None].astype(np.float32))

        hd = float(metrics.compute_hausdorff_distance(onehot(pred), onehot(ref), include_background=False,
                                                      percentile=95, spacing=list(spacing)))
        nsd = float(metrics.compute_surface_dice(onehot(pred), onehot(ref), class_thresholds=[1.5],
                                                 include_background=False, spacing=list(spacing)))
        got = binary_metrics(pred, ref, spacing, 1.5)
        assert got["HD95"] == pytest.approx(hd, rel=1e-5)
        assert got["NSD"] == pytest.approx(nsd, rel=1e-5)
