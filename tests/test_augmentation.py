"""nnU-Net augmentation set: parameters, geometry of the combined resampling, each transform's
effect and probability, 2D and 3D."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from unetkit.training.augmentation import (
    AugmentationConfig,
    augment_batch,
    compute_initial_patch_size,
    crop_batch,
    default_augmentation,
)

INTENSITY_OFF = dict(p_noise=0.0, p_blur=0.0, p_brightness=0.0, p_contrast=0.0, p_low_resolution=0.0,
                     p_gamma_inverted=0.0, p_gamma=0.0)


def make_batch(cfg: AugmentationConfig, b: int = 4, c: int = 2, seed: int = 0) -> dict:
    """Smooth images and blob labels (0, 1, 2) of the config's sampling patch size."""
    rng = np.random.default_rng(seed)
    shape = cfg.initial_patch_size
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grids))
    label = np.zeros(shape, np.int16)
    label[r < 0.6] = 1
    label[r < 0.3] = 2
    data = np.stack([np.stack([(1 + ch) * np.cos(3 * grids[0]) + grids[-1] + 0.1 * rng.normal(size=shape)
                               for ch in range(c)]) for _ in range(b)]).astype(np.float32)
    target = np.broadcast_to(label, (b, 1, *shape)).copy()
    return {"data": data, "target": target, "keys": [f"k{i}" for i in range(b)]}


def centre(batch: dict, cfg: AugmentationConfig) -> tuple[torch.Tensor, torch.Tensor]:
    out = crop_batch(batch, cfg.patch_size)
    return out["data"], out["target"]


# --------------------------------------------------------------------------- configuration

def test_initial_patch_size_matches_nnunet():
    assert compute_initial_patch_size((40, 56, 40), (-math.pi / 6, math.pi / 6)) == (73, 80, 64)
    assert compute_initial_patch_size((512, 512), (-math.pi, math.pi)) == (602, 602)
    assert compute_initial_patch_size((12, 256, 256), math.pi, dummy_2d=True)[0] == 12


def test_default_configuration_follows_nnunet():
    c3 = default_augmentation((40, 56, 40))
    assert c3.rotation == pytest.approx((-math.pi / 6, math.pi / 6)) and not c3.dummy_2d
    assert c3.mirror_axes == (0, 1, 2) and c3.initial_patch_size == (73, 80, 64)
    assert (c3.p_rotation, c3.p_scaling, c3.scaling) == (0.2, 0.2, (0.7, 1.4))
    assert (c3.p_noise, c3.p_blur, c3.p_brightness, c3.p_contrast) == (0.1, 0.2, 0.15, 0.15)
    assert (c3.p_low_resolution, c3.p_gamma_inverted, c3.p_gamma) == (0.25, 0.1, 0.3)
    c2 = default_augmentation((512, 512))
    assert c2.rotation == pytest.approx((-math.pi, math.pi)) and c2.mirror_axes == (0, 1)
    assert default_augmentation((256, 512)).rotation == pytest.approx((-math.pi / 12, math.pi / 12))
    aniso = default_augmentation((8, 128, 128))
    assert aniso.dummy_2d and aniso.rotation == pytest.approx((-math.pi, math.pi))
    assert default_augmentation((40, 56, 40), 3, anisotropic=True).dummy_2d
    with pytest.raises(ValueError):
        default_augmentation((40, 56, 40), 2)


# --------------------------------------------------------------------------- p = 0 / identity

@pytest.mark.parametrize("patch", [(20, 24, 16), (48, 40)])
def test_probability_zero_is_a_centre_crop(patch):
    cfg = default_augmentation(patch).without_augmentation()
    batch = make_batch(cfg)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    data, target = centre(batch, cfg)
    assert out["data"].dtype == torch.float32 and out["target"].dtype == torch.int16
    assert out["data"].shape == (4, 2, *patch) and out["target"].shape == (4, 1, *patch)
    assert torch.equal(out["data"], data) and torch.equal(out["target"], target)
    assert out["keys"] == batch["keys"]


@pytest.mark.parametrize("patch", [(20, 24, 16), (48, 40)])
@pytest.mark.parametrize("labels", ["linear", "nearest"])
def test_identity_resampling_equals_the_crop(patch, labels):
    """Rotation by 0 and scale 1 through the resampling path give exactly the plain crop."""
    cfg = replace(default_augmentation(patch).without_augmentation(), p_rotation=1.0, rotation=(0.0, 0.0),
                  p_scaling=1.0, scaling=(1.0, 1.0), label_interpolation=labels)
    batch = make_batch(cfg)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    data, target = centre(batch, cfg)
    assert torch.allclose(out["data"], data, atol=1e-5)
    assert torch.equal(out["target"], target)


def test_quarter_turn_in_2d_is_rot90():
    cfg = replace(default_augmentation((32, 32)).without_augmentation(), p_rotation=1.0,
                  rotation=(math.pi / 2, math.pi / 2))
    batch = make_batch(cfg, b=2)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    data, target = centre(batch, cfg)
    rotated = [torch.rot90(target, k, dims=(2, 3)) for k in (1, 3)]
    assert any(torch.equal(out["target"], r) for r in rotated)
    assert any(torch.allclose(out["data"], torch.rot90(data, k, dims=(2, 3)), atol=1e-4) for k in (1, 3))


def test_dummy_2d_rotates_in_plane_only():
    cfg = replace(default_augmentation((6, 32, 32), anisotropic=True).without_augmentation(), p_rotation=1.0,
                  rotation=(math.pi / 2, math.pi / 2))
    assert cfg.initial_patch_size[0] == 6
    batch = make_batch(cfg, b=1)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    _, target = centre(batch, cfg)
    assert any(torch.equal(out["target"], torch.rot90(target, k, dims=(3, 4))) for k in (1, 3))


# --------------------------------------------------------------------------- spatial

@pytest.mark.parametrize("patch", [(20, 24, 16), (48, 40)])
@pytest.mark.parametrize("labels", ["linear", "nearest"])
def test_rotation_and_scaling_keep_the_label_set(patch, labels):
    cfg = replace(default_augmentation(patch), **INTENSITY_OFF, p_rotation=1.0, p_scaling=1.0,
                  label_interpolation=labels)
    batch = make_batch(cfg, b=6)
    out = augment_batch(batch, cfg, np.random.default_rng(3))
    assert set(torch.unique(out["target"]).tolist()) <= {0, 1, 2}
    assert torch.isfinite(out["data"]).all()
    data, target = centre(batch, cfg)
    assert not torch.equal(out["target"], target)  # it did act


def test_zooming_out_shrinks_objects():
    cfg = replace(default_augmentation((24, 24, 24)).without_augmentation(), p_scaling=1.0, scaling=(1.4, 1.4))
    batch = make_batch(cfg, b=2)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    _, target = centre(batch, cfg)
    ratio = (out["target"] > 0).sum().item() / (target > 0).sum().item()
    assert ratio == pytest.approx(1.4 ** -3, rel=0.2)


@pytest.mark.parametrize("patch", [(20, 24, 16), (48, 40)])
def test_mirroring_flips_image_and_labels_together(patch):
    cfg = replace(default_augmentation(patch).without_augmentation(), p_mirror_per_axis=1.0, mirror_axes=(0,))
    batch = make_batch(cfg)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    data, target = centre(batch, cfg)
    assert torch.equal(out["data"], torch.flip(data, (2,)))
    assert torch.equal(out["target"], torch.flip(target, (2,)))


def test_mirroring_with_rotation_flips_too():
    base = replace(default_augmentation((32, 32)).without_augmentation(), p_rotation=1.0, rotation=(0.0, 0.0))
    batch = make_batch(base, b=2)
    out = augment_batch(batch, replace(base, p_mirror_per_axis=1.0, mirror_axes=(1,)), np.random.default_rng(0))
    _, target = centre(batch, base)
    assert torch.equal(out["target"], torch.flip(target, (3,)))


def test_mirroring_probability_is_half_per_axis():
    cfg = replace(default_augmentation((16, 16)).without_augmentation(), p_mirror_per_axis=0.5)
    batch = make_batch(cfg, b=64)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    data, _ = centre(batch, cfg)
    unchanged = [torch.equal(out["data"][i], data[i]) for i in range(64)]
    assert 0.1 < np.mean(unchanged) < 0.45  # P(no flip on either axis) = 0.25


# --------------------------------------------------------------------------- intensity

INTENSITY = ["p_noise", "p_blur", "p_brightness", "p_contrast", "p_low_resolution", "p_gamma_inverted", "p_gamma"]


@pytest.mark.parametrize("patch", [(20, 24, 16), (48, 40)])
@pytest.mark.parametrize("which", INTENSITY)
def test_intensity_transform_p1_changes_image_not_labels(patch, which):
    cfg = default_augmentation(patch).without_augmentation()
    extra = {"blur_p_per_channel": 1.0} if which == "p_blur" else {}
    if which == "p_low_resolution":
        extra = {"low_resolution_p_per_channel": 1.0, "low_resolution_zoom": (0.5, 0.5)}
    on = replace(cfg, **{which: 1.0}, **extra)
    batch = make_batch(cfg)
    out = augment_batch(batch, on, np.random.default_rng(1))
    data, target = centre(batch, cfg)
    assert torch.equal(out["target"], target)
    for i in range(4):  # every sample acted on
        assert not torch.allclose(out["data"][i], data[i])


def test_contrast_preserves_range_and_gamma_retains_stats():
    cfg = default_augmentation((24, 24)).without_augmentation()
    batch = make_batch(cfg, b=8)
    data, _ = centre(batch, cfg)
    out = augment_batch(batch, replace(cfg, p_contrast=1.0), np.random.default_rng(0))["data"]
    flat, ref = out.flatten(2), data.flatten(2)
    assert (flat.amin(2) >= ref.amin(2) - 1e-5).all() and (flat.amax(2) <= ref.amax(2) + 1e-5).all()
    for which in ("p_gamma", "p_gamma_inverted"):
        out = augment_batch(batch, replace(cfg, **{which: 1.0}), np.random.default_rng(0))["data"].flatten(2)
        assert torch.allclose(out.mean(2), ref.mean(2), atol=1e-4)
        assert torch.allclose(out.std(2), ref.std(2), rtol=1e-3)


def test_probability_is_per_sample():
    cfg = replace(default_augmentation((16, 16)).without_augmentation(), p_brightness=0.5)
    batch = make_batch(cfg, b=200)
    out = augment_batch(batch, cfg, np.random.default_rng(0))
    data, _ = centre(batch, cfg)
    changed = np.mean([not torch.equal(out["data"][i], data[i]) for i in range(200)])
    assert 0.38 < changed < 0.62


# --------------------------------------------------------------------------- full pipeline

@pytest.mark.parametrize("patch", [(20, 24, 16), (48, 40), (6, 32, 32)])
def test_full_pipeline_is_reproducible(patch):
    cfg = default_augmentation(patch)
    batch = make_batch(cfg, b=6)
    a = augment_batch(batch, cfg, np.random.default_rng(7))
    b = augment_batch(batch, cfg, np.random.default_rng(7))
    assert a["data"].shape == (6, 2, *patch) and a["target"].shape == (6, 1, *patch)
    assert torch.equal(a["data"], b["data"]) and torch.equal(a["target"], b["target"])
    assert set(torch.unique(a["target"]).tolist()) <= {0, 1, 2}
    assert np.array_equal(batch["data"], make_batch(cfg, b=6)["data"])  # input untouched


def test_wrong_patch_size_is_refused():
    cfg = default_augmentation((16, 16))
    with pytest.raises(ValueError, match="initial_patch_size"):
        augment_batch({"data": np.zeros((1, 1, 16, 16), np.float32), "target": np.zeros((1, 1, 16, 16), np.int16),
                       "keys": ["a"]}, cfg, np.random.default_rng(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_gpu_matches_shapes_and_labels():
    cfg = default_augmentation((40, 56, 40))
    batch = make_batch(cfg, b=7, c=1)
    out = augment_batch(batch, cfg, np.random.default_rng(0), device="cuda")
    assert out["data"].is_cuda and out["target"].is_cuda
    assert out["data"].shape == (7, 1, 40, 56, 40)
    assert set(torch.unique(out["target"]).tolist()) <= {0, 1, 2}
    none = cfg.without_augmentation()
    cpu = augment_batch(batch, none, np.random.default_rng(0))
    gpu = augment_batch(batch, none, np.random.default_rng(0), device="cuda")
    assert torch.equal(cpu["data"], gpu["data"].cpu())
