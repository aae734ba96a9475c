"""Attention-gated CNN U-Nets of the U-Bench zoo (family ``ubench_cnn``): CMU-Net.

- ``cmunet``: Tang, Liu, Zhang, Wang, Fan, "CMU-Net: A Strong ConvMixer-based Medical Ultrasound Image
  Segmentation Network", ISBI 2023 (arXiv:2210.13012), Fig. 1-2. A U-Net (double 3x3 conv + BN + ReLU
  per level, 64..1024) whose bottleneck is followed by a ConvMixer (``depth`` x [residual(depthwise k x k,
  GELU, BN), 1x1 conv, GELU, BN], depth 7, k 7), and whose skips pass through multi-scale attention
  gates (MSAG: 1x1, 3x3 and dilated 3x3 conv + BN branches, ReLU, a 1x1 "vote" conv + BN + sigmoid,
  ``x + x * gate``). Decoder: nearest x2 + 3x3 conv + BN + ReLU, concatenation, double conv; 1x1 head.
  The CMU-Net paper prints no parameter count; the figure checked is the authors' own table in the
  follow-up CMUNeXt paper (Tang et al., ISBI 2024, arXiv:2308.01239, Table 1: CMU-Net 49.93M, 3 in,
  1 class), which equals the official code (github.com/FengheTan9/CMU-Net ``src/network/CMUNet.py``).
  CMUNeXt (``cmunext`` in ``lightweight.py``) is the later, different network.

Reference code was read through the code search; all code here is our own. 2D as published; 3D is the
same layers with 3D convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.lightweight import _Residual
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import (
    PLAN_NOTE,
    DoubleConv,
    batch_norm_class,
    crop_to,
    pad_input,
    pooled_encoder,
    up2,
)

__all__ = ["MSAG", "CMUNet", "cmunet"]


class MSAG(nn.Module):
    """Multi-scale attention gate (CMU-Net Fig. 2): ``x + x * sigmoid(BN(1x1([ReLU(cat(b1, b3, b3d2))])))``
    with b1 = 1x1 conv + BN, b3 = 3x3 conv + BN, b3d2 = 3x3 conv with dilation 2 + BN (all with bias)."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        self.branches = nn.ModuleList([
            nn.Sequential(conv(channels, channels, 1), bn(channels)),
            nn.Sequential(conv(channels, channels, 3, 1, 1), bn(channels)),
            nn.Sequential(conv(channels, channels, 3, 1, 2, dilation=2), bn(channels)),
        ])
        self.vote = nn.Sequential(conv(3 * channels, channels, 1), bn(channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.vote(torch.relu(torch.cat([branch(x) for branch in self.branches], dim=1)))
        return x + x * gate


class ConvMixer(nn.Sequential):
    """``depth`` ConvMixer layers (Trockman & Kolter 2022): residual(depthwise k conv, GELU, BN), then
    1x1 conv, GELU, BN; the width never changes."""

    def __init__(self, spatial_dims: int, dim: int, depth: int, kernel: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [_Residual(nn.Sequential(conv(dim, dim, kernel, 1, kernel // 2, groups=dim), nn.GELU(), bn(dim))),
                       conv(dim, dim, 1), nn.GELU(), bn(dim)]
        super().__init__(*layers)


class UpConvNearest(nn.Sequential):
    """Nearest x2 -> 3x3 conv (bias) -> BN -> ReLU (CMU-Net's ``up_conv``)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        super().__init__(conv_class(spatial_dims)(cin, cout, 3, 1, 1), batch_norm_class(spatial_dims)(cout),
                         nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(up2(x, "nearest"))


class CMUNet(nn.Module):
    """CMU-Net (module docstring). ``widths`` = the 5 encoder widths (64..1024); patches multiples of 16."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, widths: Sequence[int],
                 mixer_depth: int, mixer_kernel: int) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) < 2 or any(v < 1 for v in w):
            raise ValueError(f"CMU-Net needs at least 2 positive widths, got {w}")
        self.divisor = 2 ** (len(w) - 1)
        self.encoder = nn.ModuleList(DoubleConv(spatial_dims, cin, cout) for cin, cout in zip([in_channels] + w[:-1], w))
        self.mixer = ConvMixer(spatial_dims, w[-1], mixer_depth, mixer_kernel)
        self.gates = nn.ModuleList(MSAG(spatial_dims, c) for c in w[:-1])
        self.up = nn.ModuleList(UpConvNearest(spatial_dims, w[i + 1], w[i]) for i in range(len(w) - 2, -1, -1))
        self.decoder = nn.ModuleList(DoubleConv(spatial_dims, 2 * w[i], w[i]) for i in range(len(w) - 2, -1, -1))
        self.head = conv_class(spatial_dims)(w[0], num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, self.divisor)
        skips = pooled_encoder(self.encoder, x)
        x = self.mixer(skips.pop())
        skips = [gate(s) for gate, s in zip(self.gates, skips)]
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat((skips.pop(), up(x)), dim=1))
        return crop_to(self.head(x), size)


CMUNET_DEFAULTS = {"widths": [64, 128, 256, 512, 1024], "mixer_depth": 7, "mixer_kernel": 7}


@register_model(family="ubench_cnn", spatial_dims=(2, 3), deep_supervision=False,
                paper="Tang et al., CMU-Net: A Strong ConvMixer-based Medical Ultrasound Image Segmentation Network, "
                      "ISBI 2023, arXiv:2210.13012 (Fig. 1-2; count from CMUNeXt, ISBI 2024, Table 1: 49.93M)",
                defaults=lambda d: {k: (list(v) if isinstance(v, list) else v) for k, v in CMUNET_DEFAULTS.items()},
                tiny_kwargs={"widths": [8, 16, 16, 32], "mixer_depth": 1, "mixer_kernel": 3},
                extra={"tags": ["cnn", "attention", "multiscale"], "divisible_by": 16, "pads_input": True,
                       "paper_params": 49.93e6,
                       "paper_setup": "2D, 3 in, 1 class (BUSI, 256x256), widths 64..1024, ConvMixer depth 7 k 7; "
                                      "figure printed in CMUNeXt (same authors) Table 1, the CMU-Net paper has none",
                       "kwargs_note": PLAN_NOTE + "; 3D: same layers with 3D convolutions"})
def cmunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           widths: Sequence[int] | None = None, mixer_depth: int | None = None, mixer_kernel: int | None = None,
           n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
           strides: Any = None) -> CMUNet:
    """CMU-Net: U-Net with a ConvMixer bottleneck and multi-scale attention gates on the skips."""
    return CMUNet(spatial_dims, in_channels, num_classes, widths or CMUNET_DEFAULTS["widths"],
                  7 if mixer_depth is None else mixer_depth, 7 if mixer_kernel is None else mixer_kernel)
