"""STU-Net S / B / L / H: nnU-Net scaled in width and depth (family ``stunet``).

Huang, Wang, Ye, Li, Zhou, Li, Wang, Xu, Zhou, Qiao, He, Zhang, "STU-Net: Scalable and Transferable
Medical Image Segmentation Models Empowered by Large-Scale Supervised Pre-training",
arXiv:2304.06716 (2023), Fig. 2 (architecture) and Table 1 (the four sizes: 14.60M, 58.26M,
440.30M and 1457.33M parameters). Reference code: github.com/uni-medical/STU-Net,
``nnUNet-2.2/nnunetv2/training/nnUNetTrainer/STUNetTrainer.py`` (class ``STUNet``), read through
the code search; this is our own implementation of the same layers.

The network is nnU-Net's U-Net (6 resolution stages, strides 1,2,2,2,2,2, kernels 3) with

- a residual block (``BasicResBlock``) as the unit of every encoder and decoder stage: conv(k,
  stride) -> instance norm -> leaky ReLU -> conv(k) -> instance norm, plus a shortcut that is the
  identity or, when the block changes width or resolution, a 1x1 convolution with that stride;
  the sum goes through a leaky ReLU;
- upsampling by nearest-neighbour interpolation followed by a 1x1 convolution (instead of a
  transposed convolution, so that the weights do not depend on the plan's strides and transfer
  between tasks);
- concatenation skips, a 1x1 head per decoder stage (deep supervision as nnU-Net).

The sizes differ only in width (``dims``) and depth (blocks per stage, the same in the encoder and
the decoder), Table 1::

    S: dims 16, 32, 64, 128, 256, 256     depth 1 per stage
    B: dims 32, 64, 128, 256, 512, 512    depth 1
    L: dims 64, 128, 256, 512, 1024, 1024 depth 2
    H: dims 96, 192, 384, 768, 1536, 1536 depth 3

Parameter counts (1 input channel, 105 classes as in the TotalSegmentator pre-training, 3D):
S 14,596,941; B 58,262,669; L 440,302,605; H 1,457,326,221 -- Table 1 within 0.03 % (the heads
are the only part that depends on the classes). Initialization: PyTorch's defaults, as the
reference code (which applies no initializer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import LEAKY_SLOPE, ConvNormAct, conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology, check_patch, make_topology, per_stage_ints

STUNET_PAPER = ("Huang et al., STU-Net: Scalable and Transferable Medical Image Segmentation Models Empowered by "
                "Large-Scale Supervised Pre-training, arXiv:2304.06716, 2023 (Fig. 2; Table 1: S 14.60M, "
                "B 58.26M, L 440.30M, H 1457.33M parameters)")

#: Table 1 of the paper: (dims per stage, residual blocks per stage) of each size.
STUNET_SIZES: dict[str, tuple[tuple[int, ...], int]] = {
    "s": ((16, 32, 64, 128, 256, 256), 1),
    "b": ((32, 64, 128, 256, 512, 512), 1),
    "l": ((64, 128, 256, 512, 1024, 1024), 2),
    "h": ((96, 192, 384, 768, 1536, 1536), 3),
}
#: Parameters reported in Table 1 (1 input channel; the pre-training had 105 output classes).
STUNET_PAPER_PARAMS = {"s": 14.60e6, "b": 58.26e6, "l": 440.30e6, "h": 1457.33e6}
STUNET_N_STAGES = 6


class STUResBlock(nn.Module):
    """STU-Net's ``BasicResBlock``: two ConvNormAct units (the second without activation) plus a
    shortcut (identity, or a strided 1x1 convolution with bias when width or size changes), then a
    leaky ReLU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int]) -> None:
        super().__init__()
        ones = (1,) * spatial_dims
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, ones, act=False)
        if in_channels != out_channels or any(s != 1 for s in stride):
            self.shortcut: nn.Module = conv_class(spatial_dims)(in_channels, out_channels, 1, tuple(stride))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out = out + self.shortcut(x)
        return self.act(out)


def _stage(spatial_dims: int, depth: int, in_channels: int, out_channels: int, kernel: Sequence[int],
           stride: Sequence[int]) -> nn.Sequential:
    ones = (1,) * spatial_dims
    return nn.Sequential(*[STUResBlock(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel,
                                       stride if i == 0 else ones) for i in range(depth)])


class NearestUpsample(nn.Module):
    """Nearest-neighbour upsampling by ``scale`` and a 1x1 convolution (STU-Net's
    ``Upsample_Layer_nearest``). The 1x1 convolution runs before the interpolation: a pointwise
    map commutes with nearest upsampling, so the numbers are the same with fewer operations."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Sequence[int]) -> None:
        super().__init__()
        self.conv = conv_class(spatial_dims)(in_channels, out_channels, 1)
        self.scale = tuple(int(s) for s in scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if all(s == 1 for s in self.scale):
            return x
        return F.interpolate(x, size=tuple(i * s for i, s in zip(x.shape[2:], self.scale)), mode="nearest")


class STUNet(nn.Module):
    """STU-Net: residual encoder and decoder, nearest+1x1 upsampling, concatenation skips.

    Args:
        spatial_dims: 2 or 3 (the paper is 3D; the same layers in 2D).
        in_channels: input channels.
        num_classes: output channels of each head.
        topology: widths (``dims``), kernels and strides per stage.
        depth: residual blocks per stage (encoder stage s and the decoder stage at the same
            resolution both have ``depth[s]``).
        deep_supervision: forward returns every decoder level, full resolution first.

    Example:
        >>> net = STUNet(3, 1, 3, make_topology(3, 4, [8, 16, 32, 32]), [1, 1, 1, 1])
        >>> [o.shape[2:] for o in net(torch.zeros(1, 1, 16, 16, 16))]
        [torch.Size([16, 16, 16]), torch.Size([8, 8, 8]), torch.Size([4, 4, 4])]
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 depth: Sequence[int], deep_supervision: bool = True) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        dims, kernels, strides = topology.features_per_stage, topology.kernel_sizes, topology.strides
        depth = per_stage_ints("depth", depth, n)
        conv = conv_class(spatial_dims)
        self.encoder = nn.ModuleList(
            _stage(spatial_dims, depth[s], in_channels if s == 0 else dims[s - 1], dims[s], kernels[s], strides[s])
            for s in range(n))
        ups, stages, heads = [], [], []
        for s in range(n - 2, -1, -1):  # deepest decoder stage first
            ups.append(NearestUpsample(spatial_dims, dims[s + 1], dims[s], strides[s + 1]))
            stages.append(_stage(spatial_dims, depth[s], 2 * dims[s], dims[s], kernels[s], (1,) * spatial_dims))
            heads.append(conv(dims[s], num_classes, 1))
        self.upsample = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_patch(self.topology, x.shape[2:])
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs: list[torch.Tensor] = []
        last = len(self.decoder) - 1
        for d, (up, stage, head) in enumerate(zip(self.upsample, self.decoder, self.heads)):
            x = stage(torch.cat((up(x), skips.pop()), dim=1))
            if self.deep_supervision or d == last:
                outputs.append(head(x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def stunet_defaults(size: str):
    """The ``defaults`` function of a size: its Table 1 widths and depth, nnU-Net's 6-stage topology."""

    def defaults(spatial_dims: int) -> dict[str, Any]:
        dims, depth = STUNET_SIZES[size]
        topo = make_topology(spatial_dims, STUNET_N_STAGES, list(dims))
        return {"n_stages": STUNET_N_STAGES, "dims": list(dims), "depth": [depth] * STUNET_N_STAGES,
                "kernel_sizes": [list(k) for k in topo.kernel_sizes], "strides": [list(s) for s in topo.strides]}

    return defaults


def _fit(values: Sequence[int], n: int) -> list[int]:
    """The first ``n`` entries of ``values``, the last repeated if ``n`` is larger."""
    return [values[min(i, len(values) - 1)] for i in range(n)]


def _build(size: str, spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool,
           n_stages: int | None, dims: IntOrSeq | None, depth: IntOrSeq | None, kernel_sizes: Any,
           strides: Any) -> STUNet:
    base_dims, base_depth = STUNET_SIZES[size]
    if n_stages is None:
        lengths = {len(v) for v in (kernel_sizes, strides) if isinstance(v, Sequence)}
        n_stages = lengths.pop() if len(lengths) == 1 else STUNET_N_STAGES
    if dims is None:
        dims = _fit(base_dims, int(n_stages))
    if depth is None:
        depth = base_depth
    topo = make_topology(spatial_dims, n_stages, dims, kernel_sizes, strides)
    return STUNet(spatial_dims, in_channels, num_classes, topo, per_stage_ints("depth", depth, topo.n_stages),
                  deep_supervision)


_TINY = {"n_stages": 4, "dims": [4, 8, 16, 16], "depth": [1, 1, 1, 1], "strides": [1, 2, 2, 2]}
_NOTE = ("Plan keywords: n_stages, kernel_sizes and strides are used (as the reference STUNetTrainer takes "
         "the plan's pool and conv kernels); the widths come from the size (first n_stages of its dims) "
         "unless 'dims' is given; the plan's 'features_per_stage' is accepted and ignored.")


def _register(size: str):
    dims, depth = STUNET_SIZES[size]
    return register_model(
        family="stunet", paper=STUNET_PAPER, spatial_dims=(2, 3), deep_supervision=True,
        defaults=stunet_defaults(size), tiny_kwargs=_TINY, name=f"stunet_{size}",
        extra={"tags": ["cnn", "residual"], "divisible_by": 32, "paper_params": STUNET_PAPER_PARAMS[size],
               "paper_setup": "3D, 1 input channel, 105 classes (TotalSegmentator), 6 stages, strides 1,2,2,2,2,2",
               "kwargs_note": _NOTE, "dims": list(dims), "depth": depth})


@_register("s")
def stunet_s(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
             n_stages: int | None = None, dims: IntOrSeq | None = None, depth: IntOrSeq | None = None,
             kernel_sizes: Any = None, strides: Any = None, features_per_stage: Any = None) -> STUNet:
    """STU-Net-S (Table 1: 14.60M parameters; dims 16..256, 1 block per stage)."""
    return _build("s", spatial_dims, in_channels, num_classes, deep_supervision, n_stages, dims, depth,
                  kernel_sizes, strides)


@_register("b")
def stunet_b(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
             n_stages: int | None = None, dims: IntOrSeq | None = None, depth: IntOrSeq | None = None,
             kernel_sizes: Any = None, strides: Any = None, features_per_stage: Any = None) -> STUNet:
    """STU-Net-B (Table 1: 58.26M parameters; dims 32..512, 1 block per stage)."""
    return _build("b", spatial_dims, in_channels, num_classes, deep_supervision, n_stages, dims, depth,
                  kernel_sizes, strides)


@_register("l")
def stunet_l(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
             n_stages: int | None = None, dims: IntOrSeq | None = None, depth: IntOrSeq | None = None,
             kernel_sizes: Any = None, strides: Any = None, features_per_stage: Any = None) -> STUNet:
    """STU-Net-L (Table 1: 440.30M parameters; dims 64..1024, 2 blocks per stage)."""
    return _build("l", spatial_dims, in_channels, num_classes, deep_supervision, n_stages, dims, depth,
                  kernel_sizes, strides)


@_register("h")
def stunet_h(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
             n_stages: int | None = None, dims: IntOrSeq | None = None, depth: IntOrSeq | None = None,
             kernel_sizes: Any = None, strides: Any = None, features_per_stage: Any = None) -> STUNet:
    """STU-Net-H (Table 1: 1457.33M parameters; dims 96..1536, 3 blocks per stage)."""
    return _build("h", spatial_dims, in_channels, num_classes, deep_supervision, n_stages, dims, depth,
                  kernel_sizes, strides)
