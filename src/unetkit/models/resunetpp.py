"""ResUNet++ (family ``resunetpp``): residual units, squeeze-and-excitation, ASPP and attention.

Jha, Smedsrud, Riegler, Johansen, de Lange, Halvorsen, Johansen, "ResUNet++: An Advanced
Architecture for Medical Image Segmentation", IEEE ISM 2019 (Fig. 1; Sec. III; Table: 4.07M
parameters for ResUNet++ on Kvasir-SEG, 3 input channels, 1 sigmoid output). Reference code:
DebeshJha/ResUNetPlusPlus (Keras, ``m_resunet.py``):

- stem: conv3x3-BN-ReLU-conv3x3 plus a 1x1 conv + BN shortcut, then SE;
- residual units (pre-activation): BN-ReLU-conv3x3 (strided) - BN-ReLU-conv3x3, 1x1 conv + BN
  shortcut, addition, SE (reduction 8, no bias); widths 16, 32, 64, 128;
- bridge: ASPP of four 3x3 convs (dilation 6, 12, 18, 1) each + BN, summed, then a 1x1 conv (256);
- decoder level: attention block (BN-ReLU-conv3x3 on the skip, max pooled to the coarser grid;
  BN-ReLU-conv3x3 on the decoder features; sum; BN-ReLU-conv3x3; times the decoder features),
  nearest x2 upsampling, concatenation with the skip, a residual unit (128, 64, 32);
- output: ASPP (16) and a 1x1 conv.

Our count with 3 input channels and 1 class is 4,062,993 parameters (paper 4.07M: -0.2%); with the
batch norms' 7,392 running statistics, which the Keras summary counts as "non-trainable params", it is
4,070,385, the paper's 4.07M exactly. No deep supervision.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Shape, Topology
from unetkit.models.unet_classic import (ConvNormReLU, TopologyNet, init_kaiming_relu_, max_pool, norm_layer,
                                         resolve_topology, topology_kwargs)

JHA_PAPER = ("Jha et al., ResUNet++: An Advanced Architecture for Medical Image Segmentation, IEEE ISM 2019 "
             "(Fig. 1, Sec. III; 4.07M parameters)")
RESUNETPP_FEATURES = (16, 32, 64, 128)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): channel weights from the global average."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean(dim=tuple(range(2, x.dim()))))
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))


class PreActConv(nn.Sequential):
    """norm -> ReLU -> conv ("same" padding), the pre-activation order of ResUNet++."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Shape, norm: str,
                 stride: Shape | int = 1) -> None:
        pad = tuple((k - 1) // 2 for k in kernel_size)
        super().__init__(norm_layer(norm, spatial_dims, in_channels), nn.ReLU(inplace=False),
                         conv_class(spatial_dims)(in_channels, out_channels, kernel_size, stride, pad))


class ResidualUnit(nn.Module):
    """ResUNet++ residual unit (pre-activation; ``stem`` is the first one, post-activation) + SE."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Shape, stride: Shape,
                 norm: str, stem: bool = False) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        pad = tuple((k - 1) // 2 for k in kernel_size)
        if stem:
            self.body = nn.Sequential(ConvNormReLU(spatial_dims, in_channels, out_channels, kernel_size, norm,
                                                   stride=stride),
                                      conv(out_channels, out_channels, kernel_size, padding=pad))
        else:
            self.body = nn.Sequential(PreActConv(spatial_dims, in_channels, out_channels, kernel_size, norm, stride),
                                      PreActConv(spatial_dims, out_channels, out_channels, kernel_size, norm))
        self.shortcut = nn.Sequential(conv(in_channels, out_channels, 1, stride),
                                      norm_layer(norm, spatial_dims, out_channels))
        self.se = SqueezeExcite(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.body(x) + self.shortcut(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as ResUNet++: 3x3 convs at dilations 6, 12, 18, 1, each with a
    norm, summed, then a 1x1 conv."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str,
                 rates: tuple[int, ...] = (6, 12, 18, 1)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvNormReLU(spatial_dims, in_channels, out_channels, 3, norm, dilation=r,
                                                    act=False) for r in rates])
        self.project = conv_class(spatial_dims)(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branches[0](x)
        for branch in self.branches[1:]:
            y = y + branch(x)
        return self.project(y)


class AttentionBlock(nn.Module):
    """ResUNet++ attention: skip features (pooled to the decoder grid) and decoder features, summed,
    mapped to weights that multiply the decoder features."""

    def __init__(self, spatial_dims: int, skip_channels: int, channels: int, kernel_size: Shape, stride: Shape,
                 norm: str) -> None:
        super().__init__()
        self.skip = nn.Sequential(PreActConv(spatial_dims, skip_channels, channels, kernel_size, norm),
                                  max_pool(spatial_dims, stride))
        self.features = PreActConv(spatial_dims, channels, channels, kernel_size, norm)
        self.mix = PreActConv(spatial_dims, channels, channels, kernel_size, norm)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.skip(skip) + self.features(x)) * x


class ResUNetPlusPlus(TopologyNet):
    """ResUNet++ over ``n`` encoder levels (paper: 4, widths 16..128, bridge 256).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: encoder widths, kernels, strides (the bridge has twice the last width).
        norm: ``"batch"`` (paper) or ``"instance"`` / ``"none"``.

    Example:
        >>> net = ResUNetPlusPlus(2, 3, 1, make_topology(2, 4, [16, 32, 64, 128]))
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 norm: str = "batch") -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        self.encoder = nn.ModuleList([ResidualUnit(spatial_dims, in_channels if i == 0 else f[i - 1], f[i], k[i],
                                                   s[i], norm, stem=i == 0) for i in range(n)])
        ch = 2 * f[-1]
        self.bridge = ASPP(spatial_dims, f[-1], ch, norm)
        att, dec = [], []
        for i in range(n - 2, -1, -1):
            att.append(AttentionBlock(spatial_dims, f[i], ch, k[i], s[i + 1], norm))
            dec.append(ResidualUnit(spatial_dims, ch + f[i], f[i + 1], k[i], (1,) * spatial_dims, norm))
            ch = f[i + 1]
        self.attention = nn.ModuleList(att)
        self.decoder = nn.ModuleList(dec)
        self.out_aspp = ASPP(spatial_dims, ch, f[0], norm)
        self.head = conv_class(spatial_dims)(f[0], num_classes, 1)
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = self.bridge(skips.pop())
        for att, stage in zip(self.attention, self.decoder):
            skip = skips.pop()
            x = F.interpolate(att(skip, x), size=skip.shape[2:], mode="nearest")
            x = stage(torch.cat((x, skip), dim=1))
        return self.head(self.out_aspp(x))


def _defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, RESUNETPP_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "norm": "batch"}


@register_model(family="resunetpp", paper=JHA_PAPER, deep_supervision=False, defaults=_defaults,
                tiny_kwargs={"n_stages": 4, "features_per_stage": [8, 8, 16, 16]},
                extra={"tags": ["cnn", "residual", "attention", "multiscale"],
                       "divisible_by": 8, "paper_params": 4_070_000,
                       "paper_setup": "2D, 3 input channels, 1 class, 16..128, bridge 256, BN"})
def resunetpp(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
              strides: Any = None, norm: str = "batch") -> ResUNetPlusPlus:
    """ResUNet++ (Jha et al. 2019): residual units with SE, ASPP bridge and head, attention in the decoder.

    Default (paper / reference code): 4 levels 16, 32, 64, 128 (strided convs), ASPP bridge 256,
    batch norm; patches multiples of 8. 3 input channels, 1 class: 4,062,993 parameters (paper 4.07M, -0.2%).
    """
    topo = resolve_topology(spatial_dims, RESUNETPP_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return ResUNetPlusPlus(spatial_dims, in_channels, num_classes, topo, norm)
