"""UNet 3+ (family ``unet3plus``): full-scale skip connections and full-scale deep supervision.

Huang, Lin, Tong, Hu, Zhang, Iwamoto, Han, Chen, Wu, "UNet 3+: A Full-Scale Connected UNet for
Medical Image Segmentation", ICASSP 2020 (Fig. 1-2; Table 1: UNet 3+ with the VGG-16-like
backbone, 26.97M parameters). Reference code: ZJUGiveLab/UNet-Version (``UNet_3Plus``,
``UNet_3Plus_DeepSup``): encoder of two conv-BN-ReLU per level, widths 64, 128, 256, 512, 1024;
each decoder level X_De^i gathers *every* encoder level at or above it (max-pooled down to its
size, ceil mode) and every deeper decoder level (bilinearly upsampled), maps each through a 3x3
conv-BN-ReLU to 64 channels ("CatChannels"), concatenates the five (320 = "UpChannels") and fuses
them with a 3x3 conv-BN-ReLU. Deep supervision: a 3x3 conv head on each decoder level and on the
bottleneck (X_En^5).

With 3 input channels and 1 class our count is 26,989,637 with the five deep-supervision heads
(``UNet_3Plus_DeepSup``), 26,971,777 with the single head of ``UNet_3Plus`` (paper: 26.97M; +0.07%
with the heads, which this model always builds).

Side outputs: the paper upsamples each head's logits to full resolution before the loss; we return
them at their own resolution, full resolution first (the unetkit contract: the trainer supervises
coarse outputs with a downsampled target). The classification-guided module (CGM) of the paper is
not implemented (it is an add-on for organ-free slices; the 26.97M excludes it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology
from unetkit.models.unet_classic import (ConvNormReLU, DoubleConv, TopologyNet, init_kaiming_relu_, max_pool,
                                         resize_to, resolve_topology, topology_kwargs)

UNET3P_PAPER = ("Huang et al., UNet 3+: A Full-Scale Connected UNet for Medical Image Segmentation, ICASSP 2020 "
                "(Fig. 1-2, Table 1: 26.97M)")
UNET3P_FEATURES = (64, 128, 256, 512, 1024)


class UNet3Plus(TopologyNet):
    """UNet 3+ over a topology of ``n`` levels (the paper: 5).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: widths, kernels, strides of the encoder levels.
        cat_channels: channels of each full-scale input of a decoder level (paper: 64).
        norm: ``"batch"`` (paper) or ``"instance"`` / ``"none"``.
        deep_supervision: return a head per decoder level and the bottleneck, full resolution first.

    Example:
        >>> net = UNet3Plus(2, 3, 1, make_topology(2, 5, [64, 128, 256, 512, 1024]))
        >>> [o.shape[2:] for o in net(torch.zeros(1, 3, 64, 64))]   # 64, 32, 16, 8, 4
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 cat_channels: int = 64, norm: str = "batch", deep_supervision: bool = True) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        up_channels = cat_channels * n
        self.encoder = nn.ModuleList([DoubleConv(spatial_dims, in_channels if i == 0 else f[i - 1], f[i], k[i], norm)
                                      for i in range(n)])
        self.pools = nn.ModuleList([max_pool(spatial_dims, s[i + 1]) for i in range(n - 1)])
        # cumulative stride of level i relative to level 0
        cum = [(1,) * spatial_dims]
        for i in range(1, n):
            cum.append(tuple(c * st for c, st in zip(cum[-1], s[i])))
        self.down = nn.ModuleDict()   # "k_i": encoder level k pooled to decoder level i (k < i)
        self.cat = nn.ModuleDict()    # "k_i": 3x3 conv to cat_channels of input k at decoder level i
        self.fuse = nn.ModuleList()
        for i in range(n - 2, -1, -1):  # decoder levels, deepest first
            for src in range(n):
                if src < i:
                    kernel = tuple(a // b for a, b in zip(cum[i], cum[src]))
                    self.down[f"{src}_{i}"] = max_pool(spatial_dims, kernel, ceil_mode=True)
                    cin = f[src]
                elif src == i or src == n - 1:
                    cin = f[src]
                else:
                    cin = up_channels
                self.cat[f"{src}_{i}"] = ConvNormReLU(spatial_dims, cin, cat_channels, k[i], norm)
            self.fuse.append(ConvNormReLU(spatial_dims, up_channels, up_channels, k[i], norm))
        conv = conv_class(spatial_dims)
        # heads: decoder levels 0..n-2 (from up_channels), bottleneck (from f[n-1]); 3x3 as the reference
        self.heads = nn.ModuleList([conv(up_channels, num_classes, 3, padding=1) for _ in range(n - 1)] +
                                   [conv(f[n - 1], num_classes, 3, padding=1)])
        self.deep_supervision = deep_supervision
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check(x)
        n = self.topology.n_stages
        enc = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pools[i - 1](x))
            enc.append(x)
        dec: dict[int, torch.Tensor] = {n - 1: enc[-1]}
        for d, i in enumerate(range(n - 2, -1, -1)):
            size = enc[i].shape[2:]
            parts = []
            for src in range(n):
                if src < i:
                    inp = self.down[f"{src}_{i}"](enc[src])
                elif src == i:
                    inp = enc[i]
                else:
                    inp = resize_to(dec[src], size)
                parts.append(self.cat[f"{src}_{i}"](inp))
            dec[i] = self.fuse[d](torch.cat(parts, dim=1))
        if not self.deep_supervision:
            return self.heads[0](dec[0])
        return [self.heads[i](dec[i]) for i in range(n)]


def _defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, UNET3P_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "cat_channels": 64, "norm": "batch"}


@register_model(family="unet3plus", paper=UNET3P_PAPER, defaults=_defaults,
                tiny_kwargs={"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "cat_channels": 4},
                extra={"tags": ["cnn", "multiscale"], "divisible_by": 16, "paper_params": 26_970_000,
                       "paper_setup": "2D, 3 input channels, 1 class, 64..1024, CatChannels 64, BN"})
def unet3plus(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
              n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
              strides: Any = None, cat_channels: int = 64, norm: str = "batch") -> UNet3Plus:
    """UNet 3+ (Huang et al. 2020): full-scale skips, a head per decoder level (deep supervision).

    Default (paper / reference code): 5 levels 64..1024, 64 channels per full-scale input (320 per
    decoder level), batch norm; patches multiples of 16. 3 input channels, 1 class: 26,989,637
    parameters with the five heads (paper Table 1: 26.97M, the single-head network: 26,971,777).
    """
    topo = resolve_topology(spatial_dims, UNET3P_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return UNet3Plus(spatial_dims, in_channels, num_classes, topo, cat_channels, norm, deep_supervision)
