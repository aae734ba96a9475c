"""How much activation memory a plain U-Net needs for one patch, in nnU-Net's units.

nnU-Net does not measure memory; it counts the elements of every convolution output of the
network for one sample (``compute_conv_feature_map_size`` in dynamic-network-architectures)
and compares that number with a reference value found to fit a given GPU. unetkit uses the
same count and the same references so that its plans match nnU-Net's, and scales the
reference linearly with the budget in GB.

The count, for a plain U-Net with ``n_stages`` stages:

* encoder stage ``s``: ``n_conv[s]`` convolutions with ``features[s]`` outputs at the stage's
  resolution (input size floor-divided by the cumulative stride);
* decoder stage at the resolution of encoder stage ``s`` (deepest first): its transposed
  convolution and ``n_conv_decoder`` convolutions, each with ``features[s]`` outputs, plus the
  segmentation output (``num_classes`` channels) at the full-resolution stage, and at every
  stage when deep supervision is counted.

nnU-Net's planner counts **without** deep supervision (it builds the network with the class
default ``deep_supervision=False``), so :func:`feature_map_elements` does the same by default.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: nnU-Net's references: feature-map elements that fit ``REFERENCE_GB`` with the reference
#: batch size (3D: batch 2, 2D: batch 12).
REFERENCE_ELEMENTS_3D = 560_000_000
REFERENCE_ELEMENTS_2D = 85_000_000
REFERENCE_BATCH_3D = 2
REFERENCE_BATCH_2D = 12
REFERENCE_GB = 8.0


def feature_map_elements(patch_size: Sequence[int], features_per_stage: Sequence[int],
                         strides: Sequence[Sequence[int]], n_conv_per_stage: Sequence[int],
                         n_conv_per_stage_decoder: Sequence[int], num_classes: int,
                         deep_supervision: bool = False) -> int:
    """Elements in all convolution outputs of a plain U-Net for one sample of ``patch_size``."""
    n_stages = len(features_per_stage)
    sizes: list[list[int]] = []
    size = [int(s) for s in patch_size]
    total = 0
    for s in range(n_stages):
        size = [a // b for a, b in zip(size, strides[s])]
        sizes.append(size)
        total += int(n_conv_per_stage[s]) * int(features_per_stage[s]) * int(np.prod(size, dtype=np.int64))
    # decoder: deepest first; decoder stage j works at encoder stage n_stages - 2 - j
    for j in range(n_stages - 1):
        s = n_stages - 2 - j
        voxels = int(np.prod(sizes[s], dtype=np.int64))
        total += (int(n_conv_per_stage_decoder[j]) + 1) * int(features_per_stage[s]) * voxels
        if deep_supervision or j == n_stages - 2:
            total += int(num_classes) * voxels
    return total


def reference_elements(ndim: int, memory_gb: float) -> float:
    """The element budget for ``memory_gb`` (linear in the budget), 2D or 3D reference."""
    ref = REFERENCE_ELEMENTS_3D if ndim == 3 else REFERENCE_ELEMENTS_2D
    return ref * float(memory_gb) / REFERENCE_GB


def reference_batch(ndim: int) -> int:
    """Batch size the reference element count was found for."""
    return REFERENCE_BATCH_3D if ndim == 3 else REFERENCE_BATCH_2D


def residual_encoder_feature_map_elements(patch_size: Sequence[int], features_per_stage: Sequence[int],
                                          strides: Sequence[Sequence[int]], n_blocks_per_stage: Sequence[int],
                                          n_conv_per_stage_decoder: Sequence[int], num_classes: int,
                                          deep_supervision: bool = False) -> int:
    """Elements in all convolution outputs of a residual-encoder U-Net for one sample.

    The count of dynamic-network-architectures' ``ResidualEncoderUNet``, which nnU-Net's ResEnc
    planners use: a stem convolution with ``features[0]`` outputs at full resolution; per encoder
    stage, two convolutions per residual block at the stage's resolution, plus the shortcut's
    1x1 convolution in the first block when that block changes resolution or width; the plain
    decoder counted exactly as in :func:`feature_map_elements`.
    """
    n_stages = len(features_per_stage)
    size = [int(s) for s in patch_size]
    total = int(features_per_stage[0]) * int(np.prod(size, dtype=np.int64))  # stem
    in_features = int(features_per_stage[0])
    for s in range(n_stages):
        after = [a // b for a, b in zip(size, strides[s])]
        voxels = int(np.prod(after, dtype=np.int64))
        total += 2 * int(n_blocks_per_stage[s]) * int(features_per_stage[s]) * voxels
        if in_features != int(features_per_stage[s]) or after != size:
            total += int(features_per_stage[s]) * voxels  # shortcut projection
        size, in_features = after, int(features_per_stage[s])
    # The decoder does not depend on the encoder's blocks: reuse the plain count with the
    # encoder part removed (n_conv_per_stage = 0).
    return total + feature_map_elements(patch_size, features_per_stage, strides, [0] * n_stages,
                                        n_conv_per_stage_decoder, num_classes, deep_supervision)
