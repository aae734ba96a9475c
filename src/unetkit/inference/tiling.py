"""Where sliding windows go, and how they are weighted: numpy and plain python, no torch.

Shared by :mod:`unetkit.inference.sliding_window` (PyTorch) and the torch-free ONNX predictor
(:mod:`unetkit.deploy.onnx_predict`), so both place the same windows with the same weights.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

#: Gaussian sigma as a fraction of the patch edge (nnU-Net's choice).
DEFAULT_SIGMA_SCALE = 1.0 / 8
#: Fraction of the patch between two neighbouring windows.
DEFAULT_STEP_SIZE = 0.5


def tile_starts(image_size: int, patch_size: int, step_size: float = DEFAULT_STEP_SIZE) -> list[int]:
    """Start offsets of the windows along one axis (voxels).

    The number of windows is the fewest whose stride is at most ``step_size * patch_size``; their
    starts are spread evenly from 0 to ``image_size - patch_size`` (rounded), so the first and
    the last window lie on the image's borders. ``image_size`` must be at least ``patch_size``.
    """
    if image_size < patch_size:
        raise ValueError(f"image size {image_size} is smaller than the patch {patch_size}; pad first")
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    span = image_size - patch_size
    if span == 0:
        return [0]
    stride = patch_size * step_size
    count = math.ceil(span / stride) + 1
    return [int(round(span * i / (count - 1))) for i in range(count)]


def tile_grid(image_shape: Sequence[int], patch_size: Sequence[int],
              step_size: float = DEFAULT_STEP_SIZE) -> list[tuple[int, ...]]:
    """Every window's start corner for an image of ``image_shape`` (same length as the patch)."""
    per_axis = [tile_starts(int(s), int(p), step_size) for s, p in zip(image_shape, patch_size)]
    return list(itertools.product(*per_axis))


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the empty one first): the test-time mirroring passes."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def gaussian_weights(patch_size: Sequence[int], sigma_scale: float = DEFAULT_SIGMA_SCALE) -> np.ndarray:
    """nnU-Net-style tile weights (float32): separable Gaussian, ``sigma = edge * sigma_scale``,
    computed in float64, peak 1, floor 1e-6. The torch path's ``gaussian_importance_map`` converts this."""
    weights = None
    for n in patch_size:
        n = int(n)
        sigma = max(n * sigma_scale, 1e-6)
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        g = np.exp(-0.5 * (x / sigma) ** 2)
        weights = g if weights is None else weights[..., None] * g
    assert weights is not None
    weights = weights / weights.max()
    return np.maximum(weights, 1e-6).astype(np.float32)


__all__ = ["DEFAULT_SIGMA_SCALE", "DEFAULT_STEP_SIZE", "tile_starts", "tile_grid", "mirror_combinations",
           "gaussian_weights"]
