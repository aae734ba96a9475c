"""U-Net topology from spacing and patch size: how often to downsample each axis, and how.

The rules are nnU-Net's (``get_pool_and_conv_props``), re-derived here:

* Downsample (stride 2) only axes whose current feature map is at least ``2 * min_edge``
  voxels long, and whose current spacing is within a factor 2 of the finest spacing among
  those axes, so that a coarse through-plane axis waits until the in-plane axes have caught up.
* If only one axis still qualifies, it must be at least ``3 * min_edge`` long to be pooled
  alone; otherwise the encoder stops.
* An axis gets kernel size 3 once its spacing is within a factor 2 of the finest spacing,
  and 1 before that (no mixing across thick slices); the bottleneck always uses 3.
* The patch is padded up to a multiple of ``2 ** (pools on that axis)`` so every stage divides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

#: Shortest feature-map edge (voxels) allowed in the bottleneck; nnU-Net's value.
MIN_FEATURE_MAP_EDGE = 4


@dataclass(frozen=True)
class Topology:
    """The encoder's shape for one patch size.

    Attributes:
        num_pool_per_axis: how many stride-2 steps each axis takes.
        strides: per stage, the stride per axis (first stage all 1).
        kernel_sizes: per stage, the conv kernel size per axis (3 or 1).
        patch_size: the patch padded to a multiple of ``divisor`` (voxels).
        divisor: per axis, ``2 ** num_pool_per_axis``.
    """

    num_pool_per_axis: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]
    divisor: tuple[int, ...]

    @property
    def n_stages(self) -> int:
        return len(self.strides)


def pad_to_multiple(shape: Sequence[float], divisor: Sequence[int]) -> tuple[int, ...]:
    """Round each entry of ``shape`` up to the next multiple of ``divisor`` (voxels)."""
    return tuple(int(math.ceil(s / d - 1e-9) * d) for s, d in zip(shape, divisor))


def pool_and_conv_props(spacing: Sequence[float], patch_size: Sequence[float],
                        min_edge: int = MIN_FEATURE_MAP_EDGE, max_pool_per_axis: int = 999999) -> Topology:
    """Derive strides and kernel sizes for ``patch_size`` at ``spacing`` (see module docstring).

    Args:
        spacing: target spacing per axis (mm), same axis order as ``patch_size``.
        patch_size: patch edge lengths (voxels); may be fractional (a median shape).
        min_edge: smallest bottleneck feature-map edge (voxels).
        max_pool_per_axis: cap on stride-2 steps per axis.
    """
    dim = len(spacing)
    cur_spacing = [float(s) for s in spacing]
    cur_size = [float(s) for s in patch_size]
    strides: list[tuple[int, ...]] = [(1,) * dim]
    kernels: list[tuple[int, ...]] = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        candidates = [i for i in range(dim) if cur_size[i] >= 2 * min_edge]
        if not candidates:
            break
        finest = min(cur_spacing[i] for i in candidates)
        candidates = [i for i in candidates if cur_spacing[i] / finest < 2 and num_pool[i] < max_pool_per_axis]
        if not candidates:
            break
        if len(candidates) == 1 and cur_size[candidates[0]] < 3 * min_edge:
            break
        finest_all = min(cur_spacing)
        for d in range(dim):
            if kernel[d] != 3 and cur_spacing[d] / finest_all < 2:
                kernel[d] = 3
        stride = [1] * dim
        for i in candidates:
            stride[i] = 2
            num_pool[i] += 1
            cur_spacing[i] *= 2
            cur_size[i] = math.ceil(cur_size[i] / 2)
        strides.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append((3,) * dim)  # bottleneck
    divisor = tuple(2 ** n for n in num_pool)
    return Topology(num_pool_per_axis=tuple(num_pool), strides=tuple(strides), kernel_sizes=tuple(kernels),
                    patch_size=pad_to_multiple(patch_size, divisor), divisor=divisor)


def features_per_stage(n_stages: int, max_features: int, base: int = 32) -> tuple[int, ...]:
    """Feature channels per stage: ``base * 2**i``, capped at ``max_features``."""
    return tuple(min(max_features, base * 2 ** i) for i in range(n_stages))
