"""Inference: Gaussian map, sliding-window tiling and weighting, mirroring, geometry of the outputs,
fold/configuration ensembles, --continue, input checks, numpy API, CLI.

Models are tiny plain U-Nets with random weights saved with the trainer's ``save_checkpoint`` in a
fake model folder (no training), so each test takes well under a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.data.io import Geometry, read_image, read_label, write_image
from unetkit.inference import (LabelLayout, ModelInputError, Predictor, average_probabilities, collect_inputs,
                               count_forward_passes, ensemble_folders, gaussian_importance_map, probabilities_to_labels,
                               read_probabilities, sliding_window_logits, tile_grid, tile_starts)
from unetkit.training.checkpoint import save_checkpoint

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- fake models

def _plans(ndim_data: int, ndim_net: int, channels: int, spacing: list[float], patch: list[int],
           labels: dict | None = None, configuration: str = "3d_fullres") -> tuple[dict, dict]:
    stages = 3
    kernel = [[3] * ndim_net] * stages
    strides = [[1] * ndim_net] + [[2] * ndim_net] * (stages - 1)
    entry = {"data_identifier": configuration, "spacing": spacing, "patch_size": patch, "batch_size": 2,
             "batch_dice": False, "median_image_size_in_voxels": patch,
             "normalization_schemes": ["ZScore"] * channels, "use_mask_for_norm": [False] * channels,
             "resampling": {"image_order": 3, "label_order": 1, "anisotropy_threshold": 3.0, "separate_axis_order": 0},
             "architecture": {"name": "plain_unet", "kwargs": {
                 "n_stages": stages, "features_per_stage": [4, 8, 8], "kernel_sizes": kernel, "strides": strides,
                 "n_conv_per_stage": [1] * stages, "n_conv_per_stage_decoder": [1] * (stages - 1)}}}
    plans = {"format_version": 1, "dataset_name": "Fake", "planner": "unetkit", "num_input_channels": channels,
             "channel_names": {str(c): "MRI" for c in range(channels)},
             "labels": labels or {"background": 0, "a": 1, "b": 2},
             "transpose_forward": list(range(ndim_data)), "transpose_backward": list(range(ndim_data)),
             "foreground_intensity_properties_per_channel": {},
             "configurations": {configuration: entry}}
    return plans, entry


def make_model_dir(root: Path, *, ndim_data: int = 3, ndim_net: int | None = None, channels: int = 1,
                   spacing: list[float] | None = None, patch: list[int] | None = None, folds: int = 1,
                   seed: int = 0, configuration: str | None = None) -> Path:
    """A trained-configuration folder ``root/CONFIG__plain_unet`` with ``folds`` random-weight folds."""
    from unetkit.models import create_model

    ndim_net = ndim_net or ndim_data
    configuration = configuration or ("3d_fullres" if ndim_net == 3 else "2d")
    spacing = spacing or [1.0] * ndim_net
    patch = patch or [16] * ndim_net
    plans, entry = _plans(ndim_data, ndim_net, channels, spacing, patch, configuration=configuration)
    arch = entry["architecture"]
    model_dir = root / f"{configuration}__plain_unet"
    for f in range(folds):
        torch.manual_seed(seed + f)
        net = create_model("plain_unet", ndim_net, channels, 3, deep_supervision=True, **arch["kwargs"])
        meta = {"epoch": 1, "configuration": configuration, "fold": f, "plans": plans,
                "training_config": {"arch": "plain_unet"},
                "architecture": {"name": "plain_unet", "kwargs": arch["kwargs"], "spatial_dims": ndim_net,
                                 "in_channels": channels, "num_classes": 3, "deep_supervision": True},
                "labels": {"labels": plans["labels"], "ignore_label": None, "regions": None,
                           "regions_class_order": None, "names": ["a", "b"]},
                "patch_size": patch}
        save_checkpoint(model_dir / f"fold_{f}", "checkpoint_final", net, meta=meta)
    return model_dir


GEOMETRY_3D = Geometry(spacing=(2.0, 0.9, 1.1), origin=(10.0, -20.0, 5.5),
                       direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def write_volume(path: Path, shape=(14, 23, 19), seed: int = 0, geometry: Geometry = GEOMETRY_3D) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, size=(1, *shape)).astype(np.float32)
    write_image(image, path, geometry)
    return image


# ----------------------------------------------------------------------------- Gaussian and tiling

def test_gaussian_importance_map_properties() -> None:
    g = gaussian_importance_map((17, 24, 9)).double()
    assert g.shape == (17, 24, 9)
    assert g.max().item() == pytest.approx(1.0) and g.min().item() > 0
    assert g[8, :, 4].argmax().item() in (11, 12)                       # centre of the even axis
    for axes in ([0], [1], [2], [0, 1, 2]):                             # symmetric: mirroring keeps weights
        torch.testing.assert_close(g, torch.flip(g, axes))
    # separable with sigma = 17/8 along axis 0: g(x) / g(centre) = exp(-x^2 / (2 sigma^2))
    line = g[:, 11, 4] / g[8, 11, 4]
    x = torch.arange(17, dtype=torch.float64) - 8
    torch.testing.assert_close(line, torch.exp(-0.5 * (x / (17 / 8)) ** 2).clamp_min(1e-6), rtol=1e-6, atol=1e-6)
    # computed once per patch size and device (cached)
    from unetkit.inference.sliding_window import _cached_gaussian

    assert _cached_gaussian((8, 8), 0.125, "cpu", torch.float32) is _cached_gaussian((8, 8), 0.125, "cpu", torch.float32)


@pytest.mark.parametrize("size,patch", [(16, 16), (17, 16), (40, 16), (100, 24), (33, 7)])
def test_tile_starts_cover_every_voxel(size: int, patch: int) -> None:
    starts = tile_starts(size, patch, 0.5)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert all(b - a <= patch * 0.5 + 0.5 for a, b in zip(starts, starts[1:]))   # step at most half a patch
    assert all(b > a for a, b in zip(starts, starts[1:]))
    covered = np.zeros(size, int)
    for s in starts:
        covered[s:s + patch] += 1
    assert covered.min() >= 1


def test_tile_grid_and_pass_count() -> None:
    grid = tile_grid((40, 16, 17), (16, 16, 16))
    assert len(grid) == 4 * 1 * 2
    assert count_forward_passes((40, 16, 17), (16, 16, 16), 0.5, (0, 1, 2)) == (8, 8)
    assert count_forward_passes((5, 30, 8), (16, 16), 0.5, (0, 1)) == (5 * 3, 4)    # 2D net on 5 slices, padded


class _Copy(torch.nn.Module):
    """Returns its input channel repeated: the ideal identity network for checking the weighting."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1].repeat(1, self.k, *[1] * (x.ndim - 2))


@pytest.mark.parametrize("shape,patch,mirror", [((1, 37, 29, 20), (16, 12, 8), ()),
                                                ((1, 37, 29, 20), (16, 12, 8), (0, 1, 2)),
                                                ((1, 9, 7, 30), (16, 16, 16), (0, 2)),     # smaller than the patch
                                                ((1, 5, 33, 41), (16, 16), (0, 1))])      # 2D net on slices
def test_identity_network_is_reproduced_exactly(shape, patch, mirror) -> None:
    """Every voxel's weights sum to 1 whatever the overlap: an identity network gives back the image."""
    image = torch.randn(shape)
    out = sliding_window_logits(_Copy(2), image, patch, 2, mirror_axes=mirror, tile_batch=3)
    assert out.shape == (2, *shape[1:])
    torch.testing.assert_close(out[0], image[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], image[0], rtol=1e-5, atol=1e-5)
    const = sliding_window_logits(lambda x: torch.full((x.shape[0], 3, *x.shape[2:]), 7.0), image, patch, 3)
    torch.testing.assert_close(const, torch.full_like(const, 7.0))


def test_mirroring_changes_nothing_for_a_mirror_equivariant_network() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    with torch.no_grad():   # a kernel symmetric under every flip: the network commutes with mirroring
        w = conv.weight
        w.copy_((w + w.flip(2)) / 2)
        w.copy_((w + w.flip(3)) / 2)
        w.copy_((w + w.flip(4)) / 2)
    image = torch.randn(1, 30, 25, 21)
    with torch.inference_mode():
        plain = sliding_window_logits(conv, image, (16, 16, 16), 3)
        mirrored = sliding_window_logits(conv, image, (16, 16, 16), 3, mirror_axes=(0, 1, 2))
        batched = sliding_window_logits(conv, image, (16, 16, 16), 3, mirror_axes=(0, 1, 2), tile_batch=8)
    torch.testing.assert_close(plain, mirrored, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, batched, rtol=1e-5, atol=1e-5)


def test_mirroring_averages_flipped_passes() -> None:
    """A network that is *not* equivariant: the mirrored result is the mean of the flipped passes."""
    ramp = lambda x: x + torch.arange(x.shape[-1], dtype=x.dtype).expand_as(x)  # noqa: E731
    image = torch.zeros(1, 16, 16)
    out = sliding_window_logits(ramp, image, (16, 16), 1, mirror_axes=(1,))
    torch.testing.assert_close(out[0], torch.full((16, 16), 7.5))


def _nnunet_gaussian(patch: tuple[int, ...]) -> np.ndarray:
    """nnU-Net's importance map, written out from its definition: a unit impulse at the tile's
    centre voxel (index n // 2) blurred by scipy with sigma = n / 8 per axis, scaled to peak 1,
    zeros raised to the smallest positive weight. For odd sizes n // 2 is the geometric centre."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(patch)
    impulse[tuple(n // 2 for n in patch)] = 1
    g = gaussian_filter(impulse, [n / 8 for n in patch], order=0, mode="constant", cval=0)
    g /= g.max()
    g[g == 0] = g[g > 0].min()
    return g


class _TileCorner(torch.nn.Module):
    """Paints every output voxel of a tile with the tile's first input voxel: fed the image
    ``100 * row + column``, each tile's output is ``100 * start row + start column``, so
    overlapping tiles disagree and the blend at each voxel shows how the tiles were weighted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1, :1, :1].expand(-1, 1, *x.shape[2:])


def test_overlapping_tiles_are_blended_with_nnunets_gaussian_weights() -> None:
    """A 5 x 25 image and a 5 x 17 patch: one window along the rows, two along the columns, at 0
    and 8 (the border ones; 8 is within half a patch of 0), overlapping on columns 8..16. The
    expected value at each voxel is the weighted mean of the tiles covering it, the weight being
    nnU-Net's Gaussian at the voxel's offset inside each tile, computed here with scipy (not with
    unetkit). (The patch is odd-sized, where nnU-Net's centre voxel is the geometric centre, and
    small across the rows so that no weight reaches unetkit's floor of 1e-6.)"""
    rows, cols = np.meshgrid(np.arange(5.0), np.arange(25.0), indexing="ij")
    image = torch.from_numpy(100 * rows + cols).float()[None]
    weight = _nnunet_gaussian((5, 17))
    assert weight.min() > 1e-6
    num, den = np.zeros((5, 25)), np.zeros((5, 25))
    for start in (0, 8):                   # the tile at column ``start`` outputs ``start`` everywhere
        num[:, start:start + 17] += weight * start
        den[:, start:start + 17] += weight
    expected = torch.from_numpy(num / den).float()
    assert tile_grid((5, 25), (5, 17)) == [(0, 0), (0, 8)]
    out = sliding_window_logits(_TileCorner(), image, (5, 17), 1)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-4)
    # In the overlap the tiles say 0 and 8: a plain mean (uniform weights) says 4 everywhere there,
    # the Gaussian blend goes from 0.007 at column 8 to 7.993 at column 16.
    assert expected[0, 8] < 0.01 and expected[0, 16] > 7.99 and expected[0, 12] == pytest.approx(4, abs=1e-4)
    plain = sliding_window_logits(_TileCorner(), image, (5, 17), 1, use_gaussian=False)
    torch.testing.assert_close(plain[0, :, 8:17], torch.full((5, 9), 4.0))
    assert (plain[0] - expected).abs().max() > 3.9


def test_the_gaussian_blend_test_fails_with_uniform_tile_weights(monkeypatch) -> None:
    """The test above is not vacuous: with the importance map replaced by ones it fails."""
    from unetkit.inference import sliding_window

    monkeypatch.setattr(sliding_window, "_cached_gaussian", lambda patch, *a: torch.ones(patch))
    with pytest.raises(AssertionError):
        test_overlapping_tiles_are_blended_with_nnunets_gaussian_weights()


# ----------------------------------------------------------------------------- files, geometry

def test_nifti_prediction_keeps_geometry_and_affine(tmp_path) -> None:
    import nibabel as nib

    model_dir = make_model_dir(tmp_path / "models", spacing=[1.5, 1.0, 1.0])
    inp = tmp_path / "imagesTs"
    write_volume(inp / "case_a_0000.nii.gz", (14, 23, 19))
    write_volume(inp / "case_b_0000.nii.gz", (9, 40, 12), seed=1)
    out = tmp_path / "pred"
    predictor = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    summary = predictor.predict_files(inp, out, save_probabilities=True)
    assert sorted(summary.case_seconds) == ["case_a", "case_b"]
    for case, shape in (("case_a", (14, 23, 19)), ("case_b", (9, 40, 12))):
        label, geometry = read_label(out / f"{case}.nii.gz")
        assert label.shape == shape and geometry.matches(GEOMETRY_3D)
        src = nib.load(str(inp / f"{case}_0000.nii.gz"))
        dst = nib.load(str(out / f"{case}.nii.gz"))
        np.testing.assert_allclose(dst.affine, src.affine, atol=1e-5)
        assert set(np.unique(label)) <= {0, 1, 2}
        probs = read_probabilities(out / f"{case}.npz")
        assert probs.shape == (3, *shape)
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=3e-3)  # float16 storage
        np.testing.assert_array_equal(np.argmax(probs, 0)[probs.max(0) - np.sort(probs, 0)[-2] > 1e-2],
                                      label[probs.max(0) - np.sort(probs, 0)[-2] > 1e-2])
        info = json.loads((out / f"{case}.json").read_text())
        assert info["shape"] == [3, *shape] and info["label_file"] == f"{case}.nii.gz"
    assert not list(out.glob(".tmp-*"))


def test_png_pictures_predict_to_png_with_same_size(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models", ndim_data=2, channels=3, patch=[32, 32])
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, size=(3, 45, 70)).astype(np.uint8)
    write_image(picture, tmp_path / "in" / "photo.png", Geometry((1.0, 1.0)))
    predictor = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    predictor.predict_files(tmp_path / "in" / "photo.png", tmp_path / "out")
    label, geometry = read_image(tmp_path / "out" / "photo.png")
    assert label.shape == (1, 45, 70) and label.dtype == np.uint8
    # predicting the array directly gives the same labels
    labels, probs = predictor.predict_array(picture)
    np.testing.assert_array_equal(labels, label[0])
    assert probs.shape == (3, 45, 70)


def test_2d_configuration_on_volumes_predicts_slice_by_slice(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models", ndim_data=3, ndim_net=2, spacing=[1.0, 1.0], patch=[16, 16])
    image = np.random.default_rng(0).normal(size=(1, 6, 20, 18)).astype(np.float32)
    predictor = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    labels, probs = predictor.predict_array(image, Geometry((3.0, 1.0, 1.0)))
    assert labels.shape == (6, 20, 18) and probs.shape == (3, 6, 20, 18)
    assert predictor.models[0].mirror_axes == (0, 1)


def test_fold_ensemble_averages_probabilities(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models", folds=2, spacing=[1.5, 1.0, 1.0])
    image = np.random.default_rng(0).normal(size=(1, 12, 20, 17)).astype(np.float32)
    both = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    assert len(both.models[0].networks) == 2
    _, p_both = both.predict_array(image, GEOMETRY_3D)
    singles = [Predictor.from_model_dir(model_dir, folds=[f], device="cpu", progress=False).predict_array(
        image, GEOMETRY_3D)[1] for f in (0, 1)]
    assert not np.allclose(singles[0], singles[1], atol=1e-3)
    np.testing.assert_allclose(p_both, (singles[0] + singles[1]) / 2, atol=1e-5)
    one_fold = Predictor.from_model_dir(model_dir / "fold_1", device="cpu", progress=False)   # a fold folder
    np.testing.assert_allclose(one_fold.predict_array(image, GEOMETRY_3D)[1], singles[1], atol=1e-6)


def test_configuration_ensemble_and_saved_probability_ensemble(tmp_path) -> None:
    m3 = make_model_dir(tmp_path / "models", seed=3)
    m2 = make_model_dir(tmp_path / "models", ndim_net=2, spacing=[1.0, 1.0], patch=[16, 16], seed=5)
    inp = tmp_path / "in"
    write_volume(inp / "v_0000.nii.gz", (10, 18, 15))
    ens = Predictor.from_model_dir([m3, m2], device="cpu", progress=False)
    ens.predict_files(inp, tmp_path / "ens", save_probabilities=True)
    for i, m in enumerate((m3, m2)):
        Predictor.from_model_dir(m, device="cpu", progress=False).predict_files(inp, tmp_path / f"p{i}",
                                                                                save_probabilities=True)
    p = [read_probabilities(tmp_path / f"p{i}" / "v.npz") for i in range(2)]
    np.testing.assert_allclose(read_probabilities(tmp_path / "ens" / "v.npz"), average_probabilities(p), atol=2e-3)
    written = ensemble_folders([tmp_path / "p0", tmp_path / "p1"], tmp_path / "post")
    assert written == [tmp_path / "post" / "v.nii.gz"]
    assert read_label(written[0])[0].shape == (10, 18, 15)


def test_continue_skips_written_cases(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models")
    inp = tmp_path / "in"
    for i in range(2):
        write_volume(inp / f"c{i}_0000.nii.gz", (8, 16, 16), seed=i)
    predictor = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    out = tmp_path / "out"
    predictor.predict_files(inp, out)
    (out / "c1.nii.gz").unlink()
    before = (out / "c0.nii.gz").stat().st_mtime_ns
    summary = predictor.predict_files(inp, out, skip_existing=True)
    assert summary.skipped == ["c0"] and list(summary.case_seconds) == ["c1"]
    assert (out / "c0.nii.gz").stat().st_mtime_ns == before and (out / "c1.nii.gz").is_file()
    # with --save-probabilities a case without its .npz is redone
    summary = predictor.predict_files(inp, out, skip_existing=True, save_probabilities=True)
    assert summary.skipped == [] and (out / "c0.npz").is_file()


# ----------------------------------------------------------------------------- errors before work

def test_channel_mismatch_names_the_file_before_any_prediction(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models", channels=2)
    inp = tmp_path / "in"
    write_volume(inp / "good_0000.nii.gz", (8, 16, 16))
    write_volume(inp / "good_0001.nii.gz", (8, 16, 16))
    write_volume(inp / "bad_0000.nii.gz", (8, 16, 16))
    predictor = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    with pytest.raises(ModelInputError, match=r"case 'bad'.*bad_0000\.nii\.gz.*1 channel.*expects 3D volumes with 2"):
        predictor.predict_files(inp, tmp_path / "out")
    assert not (tmp_path / "out" / "good.nii.gz").exists()       # nothing was predicted
    with pytest.raises(ModelInputError, match="1 channel"):
        predictor.predict_array(np.zeros((1, 8, 16, 16), np.float32))


def test_dimension_and_file_type_errors(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models")
    write_image(np.zeros((1, 20, 20), np.uint8), tmp_path / "pic.png", Geometry((1.0, 1.0)))
    predictor = Predictor.from_model_dir(model_dir, device="cpu", progress=False)
    with pytest.raises(ModelInputError, match=r"pic\.png: file is 2D but the model .* expects 3D volumes"):
        predictor.predict_files(tmp_path / "pic.png", tmp_path / "out")
    (tmp_path / "scan.xyz").write_text("x")
    with pytest.raises(ModelInputError, match=r"scan\.xyz: unknown file type"):
        collect_inputs(tmp_path / "scan.xyz")
    with pytest.raises(ModelInputError, match="fold 7 not found; available: 0"):
        Predictor.from_model_dir(model_dir, folds=[7], device="cpu")
    with pytest.raises(ModelInputError, match="no checkpoint_best"):
        Predictor.from_model_dir(model_dir, checkpoint="best", device="cpu")


def test_collect_inputs_groups_channels_and_reads_lists(tmp_path) -> None:
    for name in ("a_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "lone.nii.gz"):
        write_volume(tmp_path / "in" / name, (4, 5, 6))
    (tmp_path / "in" / "dataset.json").write_text("{}")
    cases = collect_inputs(tmp_path / "in")
    assert [(c.name, [f.name for f in c.files]) for c in cases] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz"]), ("lone", ["lone.nii.gz"])]
    (tmp_path / "list.txt").write_text("in/b_0000.nii.gz\n# comment\nin/lone.nii.gz\n")
    assert [c.name for c in collect_inputs(tmp_path / "list.txt")] == ["b", "lone"]
    (tmp_path / "in" / "a_0003.nii.gz").write_bytes((tmp_path / "in" / "a_0000.nii.gz").read_bytes())
    with pytest.raises(ModelInputError, match="not numbered"):
        collect_inputs(tmp_path / "in")


# ----------------------------------------------------------------------------- labels, CLI, CUDA

def test_region_labels_are_painted_in_order() -> None:
    layout = LabelLayout(num_outputs=2, regions=((1, 2), (2,)), regions_class_order=(1, 2))
    probs = np.array([[0.9, 0.9, 0.1], [0.2, 0.8, 0.9]], np.float32)
    np.testing.assert_array_equal(probabilities_to_labels(probs, layout), [1, 2, 2])
    plain = LabelLayout(num_outputs=3)
    np.testing.assert_array_equal(probabilities_to_labels(np.eye(3, dtype=np.float32), plain), [0, 1, 2])


def test_cli_predict_and_errors(tmp_path, capsys) -> None:
    from unetkit.cli import main

    model_dir = make_model_dir(tmp_path / "models")
    write_volume(tmp_path / "in" / "x_0000.nii.gz", (8, 16, 16))
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir),
                 "--device", "cpu", "-f", "0", "--tile-batch", "2"]) == 0
    assert (tmp_path / "out" / "x.nii.gz").is_file()
    assert "predicted 1 case(s)" in capsys.readouterr().out
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir),
                 "--device", "cpu", "--continue"]) == 0
    assert "skipped 1" in capsys.readouterr().out
    write_image(np.zeros((1, 20, 20), np.uint8), tmp_path / "p.png", Geometry((1.0, 1.0)))
    assert main(["predict", "-i", str(tmp_path / "p.png"), "-o", str(tmp_path / "o2"), "-m", str(model_dir),
                 "--device", "cpu"]) == 1
    assert "p.png: file is 2D" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(tmp_path) -> None:
    model_dir = make_model_dir(tmp_path / "models")
    image = np.random.default_rng(0).normal(size=(1, 20, 24, 30)).astype(np.float32)
    cpu = Predictor.from_model_dir(model_dir, device="cpu", progress=False).predict_array(image, GEOMETRY_3D)[1]
    gpu = Predictor.from_model_dir(model_dir, device="cuda", amp=False, progress=False).predict_array(image, GEOMETRY_3D)[1]
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
    half = Predictor.from_model_dir(model_dir, device="cuda", progress=False).predict_array(image, GEOMETRY_3D)[1]
    np.testing.assert_allclose(half, cpu, atol=2e-2)


def test_predicts_with_a_checkpoint_from_the_real_trainer(raw3d, tmp_path) -> None:
    """plan -> preprocess -> train (1 epoch x 2 iterations) -> predict: the trainer's checkpoint
    metadata is what the predictor reads (about 10-15 s on 2 busy cores)."""
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import train

    work = tmp_path / "work"
    plan_dataset(raw3d, work, num_processes=1)
    preprocess_dataset(raw3d, work, configurations=["3d_fullres"], num_processes=1, progress=False)
    result = train(work, raw3d, "3d_fullres", 0, {"epochs": 1, "iterations_per_epoch": 2, "val_iterations": 1,
                                                  "num_workers": 0, "device": "cpu", "batch_size": 2}, echo=False)
    images = sorted((raw3d / "imagesTr").glob("*_0000.nii.gz"))[:2]
    predictor = Predictor.from_model_dir(result.output_dir.parent, device="cpu", progress=False, mirror=False)
    assert predictor.models[0].mirror_axes == (0, 1, 2)
    predictor.predict_files(images, tmp_path / "pred")
    for path in images:
        case = path.name[: -len("_0000.nii.gz")]
        label, geometry = read_label(tmp_path / "pred" / f"{case}.nii.gz")
        image, source = read_image(path)
        assert label.shape == image.shape[1:] and geometry.matches(source)


@pytest.mark.slow
def test_compiled_networks_give_the_same_prediction(tmp_path) -> None:
    """--compile (torch.compile, inductor) predicts what the eager networks predict (~30-60 s on
    2 busy cores, C++ compilation)."""
    model_dir = make_model_dir(tmp_path / "models", ndim_data=2, patch=[32, 32])
    image = np.random.default_rng(0).normal(size=(1, 40, 37)).astype(np.float32)
    eager = Predictor.from_model_dir(model_dir, device="cpu", progress=False).predict_array(image)[1]
    compiled = Predictor.from_model_dir(model_dir, device="cpu", progress=False, compile=True).predict_array(image)[1]
    np.testing.assert_allclose(compiled, eager, atol=1e-4)
