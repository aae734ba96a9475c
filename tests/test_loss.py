"""Loss values against formulas written out independently here (numpy Dice, torch CE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unetkit.training.loss import (LossSpec, build_loss, deep_supervision_weights, dice_from_counts,
                                   downsample_target, online_tp_fp_fn)

SMOOTH = 1e-5


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _np_dice(probs: np.ndarray, onehot: np.ndarray, mask: np.ndarray | None, batch_dice: bool) -> float:
    """Mean soft Dice, classes (and samples unless batch_dice) separately, then averaged."""
    if mask is None:
        mask = np.ones_like(onehot[:, :1])
    dices = []
    samples = [slice(None)] if batch_dice else [slice(b, b + 1) for b in range(probs.shape[0])]
    for s in samples:
        for c in range(probs.shape[1]):
            p, g, m = probs[s, c], onehot[s, c], mask[s, 0]
            inter = float((p * g * m).sum())
            dices.append((2 * inter + SMOOTH) / (float((p * m).sum()) + float((g * m).sum()) + SMOOTH))
    return float(np.mean(dices))


def _make(batch=2, classes=3, shape=(6, 7, 5), seed=0, max_label=None):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64)
    hi = classes if max_label is None else max_label + 1
    target = torch.randint(0, hi, (batch, 1, *shape), generator=g).to(torch.int16)
    return logits, target


@pytest.mark.parametrize("batch_dice", [False, True])
def test_label_loss_matches_numpy_dice_and_torch_ce(batch_dice):
    logits, target = _make()
    loss = build_loss(LossSpec(batch_dice=batch_dice))(logits, target)
    probs = _softmax(logits.numpy())
    onehot = np.eye(3)[target.numpy()[:, 0]].transpose(0, 4, 1, 2, 3)
    dice = _np_dice(probs[:, 1:], onehot[:, 1:], None, batch_dice)
    ce = F.cross_entropy(logits, target[:, 0].long()).item()
    assert loss.item() == pytest.approx(ce - dice, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("batch_dice", [False, True])
def test_label_loss_hand_worked_example(batch_dice):
    """Two samples of two voxels, background/foreground, worked out by hand (nnU-Net's definition:
    mean cross-entropy over all voxels minus the soft Dice of the foreground, smooth 1e-5).

    Sample 0: voxel a logits (0, 0) -> p_fg 1/2, label fg; voxel b logits (0, ln 3) -> p_fg 3/4,
    label bg. Sample 1: both voxels logits (ln 3, 0) -> p_fg 1/4, label bg.
    CE per voxel: ln 2, ln 4, ln(4/3), ln(4/3); the loss takes their mean.
    Per-sample Dice: sample 0 intersection 1/2, prediction sum 5/4, truth 1 -> (1 + s) / (9/4 + s);
    sample 1 intersection 0, prediction 1/2, truth 0 -> s / (1/2 + s); averaged.
    Batch Dice pools the sums first: (1 + s) / (1 + 7/4 + s).
    """
    ln3 = math.log(3)
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, ln3]]],
                           [[[ln3, ln3]], [[0.0, 0.0]]]], dtype=torch.float64)  # (B=2, C=2, 1, 2)
    target = torch.tensor([[[[1, 0]]], [[[0, 0]]]], dtype=torch.int16)
    s = 1e-5
    ce = (math.log(2) + math.log(4) + 2 * math.log(4 / 3)) / 4
    if batch_dice:
        dice = (1 + s) / (2.75 + s)
    else:
        dice = ((1 + s) / (2.25 + s) + s / (0.5 + s)) / 2
    loss = build_loss(LossSpec(batch_dice=batch_dice, smooth=s))(logits, target)
    assert loss.item() == pytest.approx(ce - dice, rel=1e-12)


def test_ignore_label_removed_from_both_terms():
    logits, target = _make(max_label=3)  # 0..2 real classes, 3 = ignore
    spec = LossSpec(batch_dice=False, ignore_label=3)
    loss = build_loss(spec)(logits, target)
    t = target.numpy()[:, 0]
    mask = (t != 3)[:, None].astype(np.float64)
    t_dice = np.where(t == 3, 0, t)
    probs = _softmax(logits.numpy())
    onehot = np.eye(3)[t_dice].transpose(0, 4, 1, 2, 3)
    dice = _np_dice(probs[:, 1:], onehot[:, 1:], mask, False)
    # CE over the valid voxels only.
    flat_logits = logits.permute(0, 2, 3, 4, 1).reshape(-1, 3)
    valid = torch.from_numpy(t.reshape(-1) != 3)
    ce = F.cross_entropy(flat_logits[valid], torch.from_numpy(t.reshape(-1))[valid].long()).item()
    assert loss.item() == pytest.approx(ce - dice, rel=1e-9)
    # Changing the logits at ignored voxels changes nothing.
    logits2 = logits.clone()
    logits2[(target == 3).expand_as(logits)] += 5.0
    assert build_loss(spec)(logits2, target).item() == pytest.approx(loss.item(), rel=1e-12)


def test_all_voxels_ignored_gives_finite_loss():
    logits, _ = _make()
    target = torch.full((2, 1, 6, 7, 5), 3, dtype=torch.int16)
    loss = build_loss(LossSpec(ignore_label=3))(logits.requires_grad_(), target)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_region_loss_sigmoid_bce_and_dice():
    regions = ((1, 2), (2,))
    logits, target = _make(classes=2, max_label=2)
    spec = LossSpec(batch_dice=True, regions=regions)
    loss = build_loss(spec)(logits, target)
    t = target.numpy()[:, 0]
    reg = np.stack([np.isin(t, r) for r in regions], 1).astype(np.float64)
    probs = 1 / (1 + np.exp(-logits.numpy()))
    dice = _np_dice(probs, reg, None, True)
    bce = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(reg)).item()
    assert loss.item() == pytest.approx(bce - dice, rel=1e-9)


def test_region_loss_with_ignore_label():
    regions = ((1, 2), (2,))
    logits, target = _make(classes=2, max_label=3)
    loss = build_loss(LossSpec(regions=regions, ignore_label=3))(logits, target)
    t = target.numpy()[:, 0]
    m = (t != 3)
    reg = np.stack([np.isin(t, r) for r in regions], 1).astype(np.float64)
    probs = 1 / (1 + np.exp(-logits.numpy()))
    dice = _np_dice(probs, reg, m[:, None].astype(np.float64), False)
    per = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(reg), reduction="none").numpy()
    bce = per[np.broadcast_to(m[:, None], per.shape)].mean()
    assert loss.item() == pytest.approx(bce - dice, rel=1e-9)


def test_deep_supervision_weights_as_nnunet():
    w = deep_supervision_weights(4)
    raw = np.array([1, 0.5, 0.25, 0.0])
    assert np.allclose(w, raw / raw.sum())
    assert deep_supervision_weights(1) == [1.0]


def test_deep_supervision_loss_uses_downsampled_targets():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (2, 1, 8, 8, 8), generator=g).to(torch.int16)
    outs = [torch.randn(2, 3, *s, generator=g, dtype=torch.float64) for s in ((8, 8, 8), (4, 4, 4), (2, 2, 2))]
    spec = LossSpec()
    loss = build_loss(spec)(outs, target)
    single = build_loss(spec)
    t_half = F.interpolate(target.double(), size=(4, 4, 4), mode="nearest-exact").to(torch.int16)
    expected = (single(outs[0], target) * 1 + single(outs[1], t_half) * 0.5) / 1.5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    # nearest-exact of a 2x downsampling takes voxel (2i+1) -> centre-aligned choice
    assert torch.equal(t_half[0, 0], target[0, 0, 1::2, 1::2, 1::2])


def test_downsample_target_keeps_full_resolution_object():
    t = torch.zeros(1, 1, 4, 4, dtype=torch.int16)
    outs = downsample_target(t, [(4, 4), (2, 2)])
    assert outs[0] is t and outs[1].shape == (1, 1, 2, 2) and outs[1].dtype == torch.int16


def test_online_pseudo_dice_counts():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, :] = 5  # predict class 1 on the first row
    logits[0, 2, 1, 0] = 5  # class 2 at (1, 0)
    target = torch.tensor([[[[1, 0], [2, 2]]]], dtype=torch.int16)
    counts = online_tp_fp_fn(logits, target, LossSpec()).numpy()
    assert counts.tolist() == [[1, 1], [1, 0], [0, 1]]
    assert dice_from_counts(counts) == pytest.approx([2 / 3, 2 / 3])
