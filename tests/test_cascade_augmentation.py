"""The cascade transforms (unetkit.training.cascade_augmentation) against batchgeneratorsv2.

The morphology of ApplyRandomBinaryOperatorTransform (dilation, erosion, opening, closing with
skimage's ball/disk of a real radius) is run by batchgeneratorsv2 itself in nnU-Net v2.8.1's venv
on the same masks; the random choices are unetkit's own (seeded numpy), so they are checked for
their rules (channel layout, what a gained voxel does to the other channels, the 15% limit).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from references import require_nnunet_python
from unetkit.training.cascade_augmentation import (OPERATORS, apply_operator, previous_stage_to_data,
                                                   random_binary_operator, remove_random_component)

_BG2_SCRIPT = """
import sys, numpy as np, torch
from skimage.morphology import ball, disk
from batchgeneratorsv2.transforms.nnunet import random_binary_operator as r
ops = {'dilation': r.binary_dilation_torch, 'erosion': r.binary_erosion_torch,
       'closing': r.binary_closing_torch, 'opening': r.binary_opening_torch}
folder = sys.argv[1]
for i, (ndim, op, radius) in enumerate(eval(sys.argv[2])):
    mask = torch.from_numpy(np.load(f'{folder}/mask{ndim}.npy'))
    strel = torch.from_numpy(ball(radius, dtype=bool) if ndim == 3 else disk(radius, dtype=bool))
    np.save(f'{folder}/out_{i}.npy', ops[op](mask, strel).numpy())
"""


def _masks() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for ndim, shape in ((3, (20, 22, 18)), (2, (40, 36))):
        grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
        mask = sum(((g - s / 2) / (s / 4)) ** 2 for g, s in zip(grids, shape)) <= 1
        mask |= rng.random(shape) < 0.03  # specks: erosion removes them, dilation grows them
        mask[(slice(0, 3),) * ndim] = True  # touches the border
        out[ndim] = mask
    return out


@pytest.mark.reference
def test_binary_operators_match_batchgeneratorsv2(tmp_path):
    nnunet_python = require_nnunet_python()
    masks = _masks()
    for ndim, mask in masks.items():
        np.save(tmp_path / f"mask{ndim}.npy", mask)
    cases = [(ndim, op, radius) for ndim in (3, 2) for op in OPERATORS for radius in (1.0, 2.6, 4.3)]
    subprocess.run([str(nnunet_python), "-c", _BG2_SCRIPT, str(tmp_path), repr(cases)], check=True)
    for i, (ndim, op, radius) in enumerate(cases):
        theirs = np.load(tmp_path / f"out_{i}.npy")
        np.testing.assert_array_equal(apply_operator(masks[ndim], op, radius), theirs, err_msg=f"{op} r={radius}")


def test_previous_stage_becomes_one_hot_channels_after_the_image():
    data = torch.rand(2, 1, 6, 7, 8)
    target = torch.zeros(2, 2, 6, 7, 8, dtype=torch.int16)
    target[:, 1, :3] = 1
    target[:, 1, 4:] = 2
    target[:, 0, 1] = 2
    out = previous_stage_to_data({"data": data, "target": target, "keys": ["a", "b"]}, [1, 2], rng=None)
    assert out["data"].shape == (2, 3, 6, 7, 8) and out["target"].shape == (2, 1, 6, 7, 8)
    assert torch.equal(out["data"][:, 0], data[:, 0])
    assert torch.equal(out["data"][:, 1], (target[:, 1] == 1).float())
    assert torch.equal(out["data"][:, 2], (target[:, 1] == 2).float())
    assert torch.equal(out["target"], target[:, :1])


def test_random_operator_keeps_channels_exclusive_and_component_removal_spares_large_ones():
    rng = np.random.default_rng(1)
    onehot = np.zeros((2, 16, 16, 16), dtype=bool)
    onehot[0, 2:8, 2:8, 2:8] = True
    onehot[1, 8:12, 8:12, 8:12] = True
    for _ in range(20):
        sample = onehot.copy()
        random_binary_operator(sample, rng)
        assert not (sample[0] & sample[1]).any()  # a voxel one channel gains leaves the others
    big = np.zeros((1, 10, 10, 10), dtype=bool)
    big[0, :6] = True  # 60% of the patch: above the 15% limit, never removed
    remove_random_component(big, np.random.default_rng(2))
    assert big[0, :6].all()
    small = np.zeros((1, 10, 10, 10), dtype=bool)
    small[0, :2, :2, :2] = True
    small[0, 6:8, 6:8, 6:8] = True
    removed = 0
    for seed in range(10):
        sample = small.copy()
        remove_random_component(sample, np.random.default_rng(seed))
        removed += 16 - int(sample.sum())
        assert sample.sum() in (8, 16)  # at most one whole component goes
    assert removed > 0


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_previous_stage_channel_moves_exactly_like_the_target(interpolation):
    """A previous-stage channel equal to the label map stays equal to it through rotation,
    scaling and mirroring (one resampling rule for both target channels)."""
    from dataclasses import replace

    from unetkit.training.augmentation import augment_batch, default_augmentation

    cfg = replace(default_augmentation((16, 20, 18)), p_rotation=1.0, p_scaling=1.0,
                  label_interpolation=interpolation)
    rng = np.random.default_rng(0)
    shape = cfg.initial_patch_size
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    label = np.zeros((3, *shape), dtype=np.int16)
    for b in range(3):
        centre = [rng.uniform(0.3 * s, 0.7 * s) for s in shape]
        label[b][sum(((g - c) / (s / 5)) ** 2 for g, c, s in zip(grids, centre, shape)) <= 1] = 1
        label[b][sum(((g - c) / (s / 9)) ** 2 for g, c, s in zip(grids, centre, shape)) <= 1] = 2
    batch = {"data": rng.normal(size=(3, 1, *shape)).astype(np.float32),
             "target": np.stack([label, label], 1), "keys": ["a", "b", "c"]}
    out = augment_batch(batch, cfg, np.random.default_rng(1))
    assert out["target"].shape == (3, 2, 16, 20, 18)
    assert torch.equal(out["target"][:, 0], out["target"][:, 1])
    assert set(torch.unique(out["target"]).tolist()) <= {0, 1, 2} and (out["target"] == 2).any()
