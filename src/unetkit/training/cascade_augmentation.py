"""nnU-Net's cascade transforms: the previous stage's label map becomes one-hot input channels.

After spatial and intensity augmentation (which moved the previous stage's labels with the
target, see :mod:`unetkit.training.augmentation`), nnU-Net v2.8.1's ``nnUNetTrainer`` applies
to a cascade stage, per sample:

1. ``MoveSegAsOneHotToDataTransform``: target channel 1 becomes one channel per foreground label,
   appended to the image channels (validation batches get this step only);
2. ``ApplyRandomBinaryOperatorTransform`` with probability 0.4: for each of those channels with
   probability 0.5 (in random order) a dilation, erosion, opening or closing with a ball (disk in
   2D) of radius uniform in [1, 8]; voxels a channel gains are removed from the other channels;
3. ``RemoveRandomConnectedComponentFromOneHotEncodingTransform`` with probability 0.2: for each
   channel with probability 0.5, one random connected component smaller than 15% of the patch is
   erased (``fill_with_other_class_p=0``).

These make the full-resolution network robust to the low-resolution network's mistakes. The
morphology follows batchgeneratorsv2's FFT version: voxels outside the patch count as background
for a dilation and as foreground for an erosion (the erosion is the dilation of the complement).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

BINARY_OPERATOR_P = 0.4
REMOVE_COMPONENT_P = 0.2
P_PER_LABEL = 0.5
STREL_RADIUS = (1.0, 8.0)
MAX_COMPONENT_FRACTION = 0.15
OPERATORS = ("dilation", "erosion", "closing", "opening")


def _ball(radius: float, ndim: int) -> np.ndarray:
    """skimage's ``ball`` (3D) / ``disk`` (2D) for a real radius, as batchgeneratorsv2 calls them:
    ball samples ``floor(2r + 1)`` points evenly over [-r, r] per axis, disk the integers
    ``-r, -r + 1, ... < r + 1``; a point is in when its squared distance is <= r^2."""
    if ndim == 3:
        axis = np.mgrid[-radius:radius:(2 * radius + 1) * 1j]  # mgrid, not linspace: same rounding
    else:
        axis = np.arange(-radius, radius + 1)
    grids = np.meshgrid(*[axis] * ndim, indexing="ij")
    return sum(g ** 2 for g in reversed(grids)) <= radius * radius  # skimage adds x first


def _dilate(mask: np.ndarray, strel: np.ndarray) -> np.ndarray:
    """batchgeneratorsv2's FFT dilation: a correlation with ``strel`` ('same' padding puts
    ``(k - 1) // 2`` zeros before each axis, so even-sized disks sit one voxel off-centre), > 0."""
    origin = [(k - 1) // 2 - k // 2 for k in strel.shape]
    hits = ndimage.correlate(mask.astype(np.int32), strel.astype(np.int32), mode="constant", cval=0,
                             origin=origin)
    return hits > 0


def _erode(mask: np.ndarray, strel: np.ndarray) -> np.ndarray:
    return ~_dilate(~mask, strel)


def apply_operator(mask: np.ndarray, operator: str, radius: float) -> np.ndarray:
    """One of :data:`OPERATORS` on a boolean mask with a ball of ``radius`` voxels."""
    strel = _ball(radius, mask.ndim)
    if operator == "dilation":
        return _dilate(mask, strel)
    if operator == "erosion":
        return _erode(mask, strel)
    if operator == "closing":
        return _erode(_dilate(mask, strel), strel)
    if operator == "opening":
        return _dilate(_erode(mask, strel), strel)
    raise ValueError(f"unknown binary operator {operator!r}; one of {OPERATORS}")


def random_binary_operator(onehot: np.ndarray, rng: np.random.Generator) -> None:
    """Step 2 on one sample's one-hot channels ``(L, *spatial)`` (bool), in place."""
    order = rng.permutation(len(onehot))
    chosen = [int(c) for c in order if rng.random() < P_PER_LABEL]
    for c in chosen:
        operator = OPERATORS[int(rng.integers(len(OPERATORS)))]
        radius = float(rng.uniform(*STREL_RADIUS))
        before = onehot[c].copy()
        onehot[c] = apply_operator(before, operator, radius)
        added = onehot[c] & ~before
        for other in range(len(onehot)):
            if other != c:
                onehot[other][added] = False


def remove_random_component(onehot: np.ndarray, rng: np.random.Generator) -> None:
    """Step 3 on one sample's one-hot channels ``(L, *spatial)`` (bool), in place."""
    order = rng.permutation(len(onehot))
    chosen = [int(c) for c in order if rng.random() < P_PER_LABEL]
    structure = np.ones((3,) * (onehot.ndim - 1), dtype=bool)
    limit = onehot[0].size * MAX_COMPONENT_FRACTION
    for c in chosen:
        if not onehot[c].any():
            continue
        components, n = ndimage.label(onehot[c], structure)
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        valid = [i + 1 for i, size in enumerate(sizes) if size < limit]
        if valid:
            onehot[c][components == valid[int(rng.integers(len(valid)))]] = False


def previous_stage_to_data(batch: dict, labels: Sequence[int], rng: np.random.Generator | None) -> dict:
    """Move target channel 1 (previous stage) into ``data`` as one-hot channels, augmented unless ``rng`` is None.

    ``batch`` holds tensors ``data (B, C, *patch)`` and ``target (B, 2, *patch)``; the result has
    ``data (B, C + len(labels), *patch)`` and ``target (B, 1, *patch)`` on the same device.
    """
    data, target = batch["data"], batch["target"]
    previous = target[:, 1].cpu().numpy()
    onehot = np.stack([previous == v for v in labels], 1) if labels else np.zeros((len(previous), 0, *previous.shape[1:]), bool)
    if rng is not None:
        for sample in onehot:
            if rng.random() < BINARY_OPERATOR_P:
                random_binary_operator(sample, rng)
            if rng.random() < REMOVE_COMPONENT_P:
                remove_random_component(sample, rng)
    extra = torch.from_numpy(onehot).to(device=data.device, dtype=data.dtype)
    out = dict(batch)
    out["data"] = torch.cat([data, extra], 1)
    out["target"] = target[:, :1].contiguous()
    return out
