"""Keep unetkit's models away from native kernels known to corrupt memory.

**oneDNN's strided 1x1 convolution, backward, channels-last.** PyTorch's CPU build (2.13, oneDNN
3.12) runs the weight gradient of a 1x1 convolution with stride > 1 on a channels-last (NHWC)
input through oneDNN's ``jit_1x1`` backward-weights kernel (``jit_1x1:avx512_core`` on AVX-512,
``jit_1x1:avx2`` on AVX2). For some shapes that kernel writes outside its buffers or never returns:
a wrong gradient, then "Segmentation fault", "double free or corruption" or a hang, depending on
the shape, the thread count and the CPU. Five lines of plain PyTorch reproduce it
(docs/known_issues.md). A channels-last tensor reaches such a convolution when a user trains with
``--channels-last``, and also without it: any layer that flattens voxels to tokens and reshapes a
transposed result back (U-Mamba's Mamba layer did) hands the next stage a channels-last tensor.

A 1x1 convolution with stride ``s`` (no padding) equals keeping every ``s``-th voxel and applying
the 1x1 convolution with stride 1, and that path never reaches the defective kernel. So
:func:`create_model` gives every such convolution of every model this forward; the module stays an
``nn.Conv2d`` / ``nn.Conv3d`` with the same parameters, names, ``stride`` attribute and output shape,
so checkpoints, initialization, FLOP counting and the ONNX export see no difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _subsample(x: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    return x[(Ellipsis, *(slice(None, None, s) for s in stride))]


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A 1x1 ``Conv2d`` with stride > 1 computed as subsampling, then a stride-1 1x1 convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(_subsample(x, self.stride), self.weight, self.bias, groups=self.groups)


class SubsampledPointwiseConv3d(nn.Conv3d):
    """A 1x1x1 ``Conv3d`` with stride > 1 computed as subsampling, then a stride-1 convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(_subsample(x, self.stride), self.weight, self.bias, groups=self.groups)


_REPLACEMENT = {nn.Conv2d: SubsampledPointwiseConv2d, nn.Conv3d: SubsampledPointwiseConv3d}


def is_strided_pointwise(module: nn.Module) -> bool:
    """A plain 1x1 (x1) convolution with some stride > 1 and no padding: the defective kernel's case."""
    return (type(module) in _REPLACEMENT and all(k == 1 for k in module.kernel_size)
            and any(s > 1 for s in module.stride) and all(p == 0 for p in module.padding)
            and module.padding_mode == "zeros")


def route_around_kernel_defects_(model: nn.Module) -> int:
    """Give every strided pointwise convolution of ``model`` the subsampling forward, in place.

    Returns:
        How many convolutions were changed.
    """
    changed = 0
    for module in model.modules():
        if is_strided_pointwise(module):
            module.__class__ = _REPLACEMENT[type(module)]
            changed += 1
    return changed
