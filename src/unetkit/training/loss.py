"""Segmentation losses: soft Dice + cross-entropy with deep supervision, as in nnU-Net v2.

Label training (the usual case): ``loss = ce_weight * CE + dice_weight * (-softDice)`` where the
soft Dice is computed on softmax probabilities without the background channel, with smoothing
1e-5, either per sample and class (``batch_dice`` false) or pooled over the batch (true), and
averaged over classes. The Dice term is negative (as in nnU-Net), so a perfect prediction gives
a loss near -1.

Region training (``labels`` in plans.json maps a name to a list of label values, e.g. BraTS'
whole tumour ``[1, 2, 3]``): one sigmoid output per region, binary cross-entropy per region and
voxel, and the soft Dice over all region channels.

Ignore label (sparse annotation, as in Cicek et al.'s 3D U-Net): voxels carrying the ignore
value contribute to neither term. For region training the BCE is averaged over the valid voxels
and region channels (nnU-Net divides by the voxel count only, which scales the masked loss by
the number of regions; here masked and unmasked losses have the same scale).

Deep supervision: the network returns a list of logits, full resolution first. Targets for the
coarser outputs are made on the device with nearest-exact interpolation of the full-resolution
label map to each output's shape. Output ``i`` is weighted ``1 / 2**i``, the coarsest output 0,
and the weights are normalised to sum to 1.

Distributed training with batch Dice pools the Dice sums over all processes with a
differentiable all-reduce, so the loss equals the single-process loss on the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossSpec:
    """What the loss needs to know about the labels and the run.

    ``regions``: for region training, the label values of each region in output-channel order;
    ``None`` for label (softmax) training. ``ignore_label``: the label value to mask out, if any.
    """

    batch_dice: bool = False
    ignore_label: int | None = None
    regions: tuple[tuple[int, ...], ...] | None = None
    smooth: float = 1e-5
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    ddp: bool = False


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """nnU-Net's weights: ``1/2**i``, the lowest resolution 0, normalised to sum to 1."""
    if num_outputs < 1:
        raise ValueError("deep supervision needs at least one output")
    if num_outputs == 1:
        return [1.0]
    weights = [1.0 / 2 ** i for i in range(num_outputs)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Label map ``(B, 1, *spatial)`` resized to each spatial shape by nearest-exact interpolation.

    Runs on the target's device; the full-resolution target is returned unchanged (not copied)
    wherever a shape equals its own.
    """
    full = tuple(target.shape[2:])
    as_float = None
    out = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        if shape == full:
            out.append(target)
            continue
        if as_float is None:
            as_float = target.float()  # interpolate is not defined for integer tensors
        out.append(F.interpolate(as_float, size=shape, mode="nearest-exact").to(target.dtype))
    return out


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over processes with gradient (backward sums the gradients, as nnU-Net's AllGatherGrad)."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor | None, batch_dice: bool,
              smooth: float, ddp: bool = False) -> torch.Tensor:
    """Mean soft Dice of ``probs`` against ``onehot`` (both ``(B, C, *spatial)``).

    ``mask`` (``(B, 1, *spatial)``, 1 for valid voxels) removes voxels from every sum.
    Sums are accumulated in float32 even under mixed precision.
    """
    axes = tuple(range(2, probs.ndim))
    acc = torch.promote_types(probs.dtype, torch.float32)  # float32 sums under fp16/bf16 autocast
    if mask is not None:
        mask = mask.to(probs.dtype)
        with torch.no_grad():
            sum_gt = (onehot * mask).sum(axes, dtype=acc)
        intersect = (probs * onehot * mask).sum(axes, dtype=acc)
        sum_pred = (probs * mask).sum(axes, dtype=acc)
    else:
        with torch.no_grad():
            sum_gt = onehot.sum(axes, dtype=acc)
        intersect = (probs * onehot).sum(axes, dtype=acc)
        sum_pred = probs.sum(axes, dtype=acc)
    if batch_dice:
        intersect, sum_pred, sum_gt = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0)
        if ddp:
            intersect, sum_pred = _all_reduce_sum(intersect), _all_reduce_sum(sum_pred)
            sum_gt = _all_reduce_sum(sum_gt.detach())
    dice = (2 * intersect + smooth) / (sum_gt + sum_pred + smooth).clamp_min(1e-8)
    return dice.mean()


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, 1, *spatial)`` integer labels to ``(B, num_classes, *spatial)`` one-hot (no gradient)."""
    shape = (labels.shape[0], num_classes, *labels.shape[2:])
    out = torch.zeros(shape, device=labels.device, dtype=dtype)
    out.scatter_(1, labels.long(), 1)
    return out


def region_targets(labels: torch.Tensor, regions: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(B, 1, *spatial)`` labels to ``(B, R, *spatial)`` float 0/1: voxel label in region r."""
    chans = []
    for region in regions:
        values = torch.as_tensor(list(region), device=labels.device, dtype=labels.dtype)
        chans.append(torch.isin(labels[:, 0], values))
    return torch.stack(chans, 1).float()


def label_loss(logits: torch.Tensor, target: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """Softmax Dice (no background) + cross-entropy for one output. ``target``: ``(B, 1, *spatial)``."""
    mask = None
    target_dice = target
    if spec.ignore_label is not None:
        mask = target != spec.ignore_label
        target_dice = torch.where(mask, target, torch.zeros_like(target))
    loss = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
    if spec.dice_weight:
        probs = torch.softmax(logits, 1)
        with torch.no_grad():
            onehot = one_hot(target_dice, logits.shape[1], probs.dtype)[:, 1:]
        dice = soft_dice(probs[:, 1:], onehot, mask, spec.batch_dice, spec.smooth, spec.ddp)
        loss = loss - spec.dice_weight * dice
    if spec.ce_weight:
        labels = target[:, 0].long()
        if spec.ignore_label is None:
            ce = F.cross_entropy(logits, labels)
        else:
            # Mean over valid voxels; 0 (not NaN) when a batch has none.
            summed = F.cross_entropy(logits, labels, ignore_index=spec.ignore_label, reduction="sum")
            ce = summed / mask.sum().clamp_min(1)
        loss = loss + spec.ce_weight * ce
    return loss


def region_loss(logits: torch.Tensor, target: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """Sigmoid Dice (all regions) + binary cross-entropy for one output; ``target`` holds labels."""
    assert spec.regions is not None
    mask = None if spec.ignore_label is None else (target != spec.ignore_label)
    with torch.no_grad():
        regions = region_targets(target, spec.regions)
    loss = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
    if spec.dice_weight:
        probs = torch.sigmoid(logits)
        dice = soft_dice(probs, regions.to(probs.dtype), mask, spec.batch_dice, spec.smooth, spec.ddp)
        loss = loss - spec.dice_weight * dice
    if spec.ce_weight:
        if mask is None:
            bce = F.binary_cross_entropy_with_logits(logits, regions.to(logits.dtype))
        else:
            per_voxel = F.binary_cross_entropy_with_logits(logits, regions.to(logits.dtype), reduction="none")
            valid = mask.to(per_voxel.dtype)
            bce = (per_voxel * valid).sum() / (valid.sum() * logits.shape[1]).clamp_min(1)
        loss = loss + spec.ce_weight * bce
    return loss


def single_output_loss(logits: torch.Tensor, target: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """The loss of one output: region or label training according to ``spec``."""
    if spec.regions is not None:
        return region_loss(logits, target, spec)
    return label_loss(logits, target, spec)


def build_loss(spec: LossSpec) -> Callable[[torch.Tensor | Sequence[torch.Tensor], torch.Tensor], torch.Tensor]:
    """A function ``(outputs, target) -> loss`` handling one output or a deep-supervision list.

    ``target`` is the full-resolution label map ``(B, 1, *spatial)``; coarser targets are made
    by :func:`downsample_target` on the device. Zero-weighted outputs are skipped, except under
    DDP where they enter multiplied by 0 so that every parameter receives a gradient.
    """

    def loss_fn(outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return single_output_loss(outputs, target, spec)
        outputs = list(outputs)
        weights = deep_supervision_weights(len(outputs))
        targets = downsample_target(target, [o.shape[2:] for o in outputs])
        total = None
        for w, out, tgt in zip(weights, outputs, targets):
            if w == 0.0:
                if spec.ddp:
                    term = 0.0 * out.float().sum()
                    total = term if total is None else total + term
                continue
            term = w * single_output_loss(out, tgt, spec)
            total = term if total is None else total + term
        return total

    return loss_fn


@torch.no_grad()
def online_tp_fp_fn(logits: torch.Tensor, target: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """Hard true/false positives/negatives per foreground class or region, summed over the batch.

    Returns a float64 CPU-ready tensor ``(3, K)`` (rows tp, fp, fn) for the pseudo-Dice that
    nnU-Net reports each epoch: argmax (or sigmoid > 0.5 for regions), ignore label masked.
    """
    if spec.regions is not None:
        pred = (torch.sigmoid(logits.float()) > 0.5).float()
        gt = region_targets(target, spec.regions)
    else:
        labels = target
        if spec.ignore_label is not None:
            labels = torch.where(target != spec.ignore_label, target, torch.zeros_like(target))
        pred = one_hot(logits.argmax(1, keepdim=True), logits.shape[1])[:, 1:]
        gt = one_hot(labels, logits.shape[1])[:, 1:]
    if spec.ignore_label is not None:
        valid = (target != spec.ignore_label).float()
        pred = pred * valid
        gt = gt * valid
    axes = (0, *range(2, logits.ndim))
    tp = (pred * gt).sum(axes, dtype=torch.float64)
    fp = (pred * (1 - gt)).sum(axes, dtype=torch.float64)
    fn = ((1 - pred) * gt).sum(axes, dtype=torch.float64)
    return torch.stack([tp, fp, fn])


def dice_from_counts(counts) -> list[float]:
    """Per-class Dice ``2tp / (2tp + fp + fn)`` from a ``(3, K)`` array; NaN where a class is absent."""
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
    return [float(d) for d in dice]
