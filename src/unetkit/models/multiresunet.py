"""MultiResUNet (family ``multiresunet``): MultiRes blocks and Res paths.

Ibtehaz, Rahman, "MultiResUNet: Rethinking the U-Net Architecture for Multimodal Biomedical Image
Segmentation", Neural Networks 121, 2020 (Fig. 3, 4, 6; Table 2: MultiResUNet 7,262,750 vs U-Net
7,759,521 parameters). Reference code: nibtehaz/MultiResUNet (Keras ``MultiResUnet``):

- MultiRes block with U filters, W = alpha * U (alpha = 1.67): three chained 3x3 conv-BN-ReLU of
  int(W/6), int(W/3), int(W/2) filters (a factorised 3x3 / 5x5 / 7x7), concatenated, BN, plus a
  1x1 conv-BN shortcut, ReLU, BN; convolutions without bias, conv-BN "scale=False";
- Res path of length 4, 3, 2, 1 on the skips of levels 1..4: per step a 3x3 conv-BN-ReLU plus a
  1x1 conv-BN shortcut, ReLU, BN; U filters;
- U = 32, 64, 128, 256, 512; 2x2 max pooling; 2x2 transposed convolutions (with bias) to U of the
  level; a 1x1 head.

With 1 input channel and 1 class our count is 7,244,528 parameters (-0.25%); the Keras figure (7,262,750)
also counts the batch norms' running statistics and has no BN scale (gamma) in conv-BN units.
No deep supervision.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class, transposed_conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Shape, Topology
from unetkit.models.unet_classic import (ConvNormReLU, TopologyNet, init_kaiming_relu_, max_pool, norm_layer,
                                         resolve_topology, topology_kwargs)

IBTEHAZ_PAPER = ("Ibtehaz & Rahman, MultiResUNet: Rethinking the U-Net Architecture for Multimodal Biomedical "
                 "Image Segmentation, Neural Networks 121:74-87, 2020 (Fig. 3-6, Table 2: 7,262,750 vs U-Net "
                 "7,759,521)")
MULTIRES_FEATURES = (32, 64, 128, 256, 512)


def multires_widths(u: int, alpha: float = 1.67) -> tuple[int, int, int]:
    """Widths of the three chained convolutions of a MultiRes block with ``u`` filters."""
    w = alpha * u
    return max(int(w * 0.167), 1), max(int(w * 0.333), 1), max(int(w * 0.5), 1)


class MultiResBlock(nn.Module):
    """MultiRes block (Fig. 3c): three chained 3x3 convs concatenated, plus a 1x1 shortcut."""

    def __init__(self, spatial_dims: int, in_channels: int, u: int, kernel_size: Shape, norm: str,
                 alpha: float = 1.67) -> None:
        super().__init__()
        a, b, c = multires_widths(u, alpha)
        self.out_channels = a + b + c
        self.shortcut = ConvNormReLU(spatial_dims, in_channels, self.out_channels, 1, norm, bias=False, act=False)
        self.c1 = ConvNormReLU(spatial_dims, in_channels, a, kernel_size, norm, bias=False)
        self.c2 = ConvNormReLU(spatial_dims, a, b, kernel_size, norm, bias=False)
        self.c3 = ConvNormReLU(spatial_dims, b, c, kernel_size, norm, bias=False)
        self.norm_cat = norm_layer(norm, spatial_dims, self.out_channels)
        self.norm_out = norm_layer(norm, spatial_dims, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.c1(x)
        y2 = self.c2(y1)
        y3 = self.c3(y2)
        y = self.norm_cat(torch.cat((y1, y2, y3), dim=1)) + self.shortcut(x)
        return self.norm_out(torch.relu(y))


class ResPath(nn.Module):
    """Res path (Fig. 4): ``length`` residual 3x3 conv units on a skip connection."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, length: int, kernel_size: Shape,
                 norm: str) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(length):
            cin = in_channels if i == 0 else channels
            self.convs.append(ConvNormReLU(spatial_dims, cin, channels, kernel_size, norm, bias=False))
            self.shortcuts.append(ConvNormReLU(spatial_dims, cin, channels, 1, norm, bias=False, act=False))
            self.norms.append(norm_layer(norm, spatial_dims, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, shortcut, norm in zip(self.convs, self.shortcuts, self.norms):
            x = norm(torch.relu(conv(x) + shortcut(x)))
        return x


class MultiResUNet(TopologyNet):
    """MultiResUNet over ``n`` levels (paper: 5, U = 32..512); Res path lengths n-1, ..., 1.

    Args:
        spatial_dims: 2 or 3 (the paper has both; its 3D version uses the same blocks).
        in_channels: input channels.
        num_classes: output channels.
        topology: U per level, kernels, strides.
        alpha: width multiplier of the MultiRes blocks (paper: 1.67).
        norm: ``"batch"`` (paper) or ``"instance"`` / ``"none"``.

    Example:
        >>> net = MultiResUNet(2, 1, 1, make_topology(2, 5, [32, 64, 128, 256, 512]))
        >>> net(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    #: the block of every level (DC-UNet, ubench_cnn_multiscale.py, swaps in its dual-channel block)
    block_class: type[nn.Module] = MultiResBlock

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 alpha: float = 1.67, norm: str = "batch") -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        u, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        enc, paths, ch = [], [], in_channels
        for i in range(n):
            block = self.block_class(spatial_dims, ch, u[i], k[i], norm, alpha)
            enc.append(block)
            ch = block.out_channels
            if i < n - 1:
                paths.append(ResPath(spatial_dims, ch, u[i], n - 1 - i, k[i], norm))
        self.encoder = nn.ModuleList(enc)
        self.res_paths = nn.ModuleList(paths)
        self.pools = nn.ModuleList([max_pool(spatial_dims, s[i + 1]) for i in range(n - 1)])
        up = transposed_conv_class(spatial_dims)
        ups, dec = [], []
        for i in range(n - 2, -1, -1):
            ups.append(up(ch, u[i], s[i + 1], s[i + 1]))
            block = self.block_class(spatial_dims, 2 * u[i], u[i], k[i], norm, alpha)
            dec.append(block)
            ch = block.out_channels
        self.upsample = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(dec)
        self.head = conv_class(spatial_dims)(ch, num_classes, 1)
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pools[i - 1](x))
            if i < len(self.res_paths):
                skips.append(self.res_paths[i](x))
        for up, block in zip(self.upsample, self.decoder):
            x = block(torch.cat((up(x), skips.pop()), dim=1))
        return self.head(x)


def _defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, MULTIRES_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "alpha": 1.67, "norm": "batch"}


@register_model(family="multiresunet", paper=IBTEHAZ_PAPER, deep_supervision=False, defaults=_defaults,
                tiny_kwargs={"n_stages": 4, "features_per_stage": [6, 8, 16, 32]},
                extra={"tags": ["cnn", "residual", "multiscale"], "divisible_by": 16, "paper_params": 7_262_750,
                       "paper_setup": "2D, 1 input channel, 1 class, U = 32..512, alpha 1.67, BN"})
def multiresunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                 strides: Any = None, alpha: float = 1.67, norm: str = "batch") -> MultiResUNet:
    """MultiResUNet (Ibtehaz & Rahman 2020): MultiRes blocks and Res paths.

    Default (paper / reference code): 5 levels, U = 32, 64, 128, 256, 512, alpha 1.67, batch norm;
    patches multiples of 16. 1 input channel, 1 class: 7,244,528 parameters (paper 7,262,750, -0.25%).
    """
    topo = resolve_topology(spatial_dims, MULTIRES_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return MultiResUNet(spatial_dims, in_channels, num_classes, topo, alpha, norm)
