"""RU-Net and R2U-Net (family ``r2unet``): recurrent (and residual) convolutional units.

Alom, Hasan, Yakopcic, Taha, Asari, "Recurrent Residual Convolutional Neural Network based on U-Net
(R2U-Net) for Medical Image Segmentation", arXiv:1802.06955, 2018 (Fig. 3-4, Eq. 1-3; Sec. IV:
the retina-vessel network 1 -> 16 -> 32 -> 64 -> 128 -> 64 -> 32 -> 16 -> 1 with t = 2, about
1.037M parameters for RU-Net and R2U-Net alike).

A recurrent convolutional layer (RCL, Liang & Hu, CVPR 2015; the paper's Eq. 1) has a
feed-forward and a recurrent kernel: ``h(0) = ReLU(N(w_f * x))`` and
``h(t) = ReLU(N(w_f * x + w_r * h(t-1)))`` for t = 1..T (T = 2). A unit stacks two RCLs after a 1x1
convolution that sets the width; R2U-Net adds the unit's input to its output (residual, Eq. 3,
Fig. 4d), RU-Net does not (Fig. 4b). The popular PyTorch port (LeeJunHyun/Image_Segmentation)
shares one kernel for w_f and w_r; we keep the paper's two kernels, which is what makes the
count match: 1 input channel, 1 class, 16..128, T = 2, 2x2 transposed-conv upsampling, batch norm:
1,046,833 parameters for both (paper: 1.037M, +0.9%; 1,042,609 without the norms). No deep supervision in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class, same_padding, transposed_conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Shape, Topology
from unetkit.models.unet_classic import (TopologyNet, init_kaiming_relu_, max_pool, norm_layer, resolve_topology,
                                         topology_kwargs)

ALOM_PAPER = ("Alom et al., Recurrent Residual Convolutional Neural Network based on U-Net (R2U-Net) for Medical "
              "Image Segmentation, arXiv:1802.06955, 2018 (Fig. 3-4, Eq. 1-3; Sec. IV: ~1.037M, t=2)")
R2_FEATURES = (16, 32, 64, 128)


class RecurrentConv(nn.Module):
    """Recurrent convolutional layer, ``steps`` recurrences after the feed-forward pass (Eq. 1-2)."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: Shape, steps: int, norm: str) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        pad = same_padding(kernel_size)
        self.steps = steps
        self.feedforward = conv(channels, channels, kernel_size, padding=pad)
        self.recurrent = conv(channels, channels, kernel_size, padding=pad, bias=False)
        self.norms = nn.ModuleList([norm_layer(norm, spatial_dims, channels) for _ in range(steps + 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ff = self.feedforward(x)
        h = torch.relu(self.norms[0](ff))
        for t in range(1, self.steps + 1):
            h = torch.relu(self.norms[t](ff + self.recurrent(h)))
        return h


class RecurrentUnit(nn.Module):
    """1x1 conv to ``out_channels``, two RCLs, and (R2U-Net) the residual addition (Fig. 4b/4d)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Shape, steps: int,
                 norm: str, residual: bool) -> None:
        super().__init__()
        self.project = conv_class(spatial_dims)(in_channels, out_channels, 1)
        self.rcl = nn.Sequential(RecurrentConv(spatial_dims, out_channels, kernel_size, steps, norm),
                                 RecurrentConv(spatial_dims, out_channels, kernel_size, steps, norm))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        y = self.rcl(x)
        return x + y if self.residual else y


class R2UNet(TopologyNet):
    """U-Net of recurrent (RU-Net) or recurrent residual (R2U-Net) units.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: widths, kernels, strides per level.
        steps: recurrences T of each RCL (paper: 2).
        residual: R2U-Net (True) or RU-Net (False).
        norm: ``"batch"`` (default) or ``"instance"`` / ``"none"``.

    Example:
        >>> net = R2UNet(2, 1, 1, make_topology(2, 4, [16, 32, 64, 128]))
        >>> net(torch.zeros(1, 1, 48, 64)).shape
        torch.Size([1, 1, 48, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology, steps: int = 2,
                 residual: bool = True, norm: str = "batch") -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps (t) must be >= 1, got {steps}")
        self.topology = topology
        n = topology.n_stages
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        self.encoder = nn.ModuleList([RecurrentUnit(spatial_dims, in_channels if i == 0 else f[i - 1], f[i], k[i],
                                                    steps, norm, residual) for i in range(n)])
        self.pools = nn.ModuleList([max_pool(spatial_dims, s[i + 1]) for i in range(n - 1)])
        up = transposed_conv_class(spatial_dims)
        self.upsample = nn.ModuleList([up(f[i + 1], f[i], s[i + 1], s[i + 1]) for i in range(n - 2, -1, -1)])
        self.decoder = nn.ModuleList([RecurrentUnit(spatial_dims, 2 * f[i], f[i], k[i], steps, norm, residual)
                                      for i in range(n - 2, -1, -1)])
        self.head = conv_class(spatial_dims)(f[0], num_classes, 1)
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pools[i - 1](x))
            skips.append(x)
        x = skips.pop()
        for up, stage in zip(self.upsample, self.decoder):
            x = stage(torch.cat((skips.pop(), up(x)), dim=1))
        return self.head(x)


def _defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, R2_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "steps": 2, "norm": "batch"}


_EXTRA = {"divisible_by": 8, "paper_params": 1_037_000,
          "paper_setup": "2D, 1 input channel, 1 class, 16..128, t=2, BN"}
_TINY = {"n_stages": 3, "features_per_stage": [4, 8, 16]}


def _build(residual: bool, spatial_dims: int, in_channels: int, num_classes: int, n_stages: int | None,
           features_per_stage: IntOrSeq | None, kernel_sizes: Any, strides: Any, steps: int, norm: str) -> R2UNet:
    topo = resolve_topology(spatial_dims, R2_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return R2UNet(spatial_dims, in_channels, num_classes, topo, steps, residual, norm)


@register_model(family="r2unet", paper=ALOM_PAPER, deep_supervision=False, defaults=_defaults, tiny_kwargs=_TINY,
                extra={**_EXTRA, "tags": ["cnn", "recurrent", "residual"]})
def r2unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
           strides: Any = None, steps: int = 2, norm: str = "batch") -> R2UNet:
    """R2U-Net (Alom et al. 2018): recurrent residual convolutional units, t = 2.

    Default (paper Sec. IV): 4 levels 16, 32, 64, 128, batch norm; patches multiples of 8.
    1 input channel, 1 class: 1,046,833 parameters (paper ~1.037M, +0.9%).
    """
    return _build(True, spatial_dims, in_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
                  strides, steps, norm)


@register_model(family="r2unet", paper=ALOM_PAPER, deep_supervision=False, defaults=_defaults, tiny_kwargs=_TINY,
                extra={**_EXTRA, "tags": ["cnn", "recurrent"]})
def runet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
          n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
          strides: Any = None, steps: int = 2, norm: str = "batch") -> R2UNet:
    """RU-Net (Alom et al. 2018): recurrent convolutional units without the residual addition.

    Same layers and parameters as ``r2unet`` (1,046,833 for 1 in, 1 class; paper ~1.037M).
    """
    return _build(False, spatial_dims, in_channels, num_classes, n_stages, features_per_stage, kernel_sizes,
                  strides, steps, norm)
