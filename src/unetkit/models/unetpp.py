"""UNet++ (family ``unetpp``): nested, dense skip pathways, deep supervision, inference-time pruning.

Zhou, Rahman Siddiquee, Tajbakhsh, Liang, "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation", DLMIA 2018 (Fig. 1; Table 1: U-Net 7.76M, wide U-Net 9.13M, UNet++ 9.04M
parameters), and "UNet++: Redesigning Skip Connections to Exploit Multiscale Features in Image
Segmentation", IEEE TMI 2019 (Fig. 1 and Sec. III-C: the "accurate" mode averages the
outputs of all branches, the "fast" mode takes one branch; pruning UNet++ L^i keeps only the nodes
X^{i,j} with i + j <= L). Reference code: MrGiovanni/UNetPlusPlus (Keras, ``Nest_Net``): nodes are
``standard_unit`` = two 3x3 conv + ReLU, each followed by drop-out 0.5, no norm; 2x2 transposed
convolutions; backbone widths 32, 64, 128, 256, 512; one 1x1 head on each X^{0,j}.

Node X^{i,j} (level i, j-th node of the skip pathway) for j >= 1 is
``H(cat(X^{i,0}, ..., X^{i,j-1}, U(X^{i+1,j-1})))`` (TMI Eq. 1). With that configuration, 1 input
channel and 1 class, our count is 9,041,700 (paper: 9.04M), and ``unet`` built the same way is
the paper's 7.76M.

Deep supervision: the four heads all sit at *full* resolution, which the unetkit contract (one
output per decoder level, each coarser than the one before) cannot express, so the model is
registered with ``deep_supervision=False``; :meth:`UNetPlusPlus.side_outputs` returns the heads
X^{0,1..L} for the paper's deep-supervised loss; the forward returns the mean of the heads
(``ensemble=True``, the paper's "accurate" mode and the default, so that every head is trained) or,
with ``ensemble=False``, the single head of the pruned UNet++ L^{prune_level} ("fast" mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class, transposed_conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology
from unetkit.models.unet_classic import (DoubleConv, TopologyNet, init_kaiming_relu_, max_pool, resolve_topology,
                                         topology_kwargs)

UNETPP_PAPER = ("Zhou et al., UNet++: A Nested U-Net Architecture for Medical Image Segmentation, DLMIA 2018 "
                "(Fig. 1, Table 1: 9.04M); Zhou et al., UNet++: Redesigning Skip Connections, IEEE TMI 2019 "
                "(pruning, Sec. III-C)")
UNETPP_FEATURES = (32, 64, 128, 256, 512)


class UNetPlusPlus(TopologyNet):
    """UNet++ L^{n-1} over a topology of ``n`` levels, prunable to L^1..L^{n-1} at inference.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels of every head.
        topology: widths, kernels, strides of the backbone levels X^{i,0}.
        norm: ``"none"`` (reference code), ``"batch"`` or ``"instance"``.
        dropout: drop-out after each convolution of a node (reference code: 0.5).
        prune_level: UNet++ L^i, 1..n-1: nodes deeper than it are not run.
        ensemble: return the mean of heads 1..prune_level (the paper's "accurate" mode, default:
            every head is trained); False returns the head X^{0,prune_level} alone ("fast" mode, the
            pruned network of TMI 2019 Sec. III-C).

    Example:
        >>> net = UNetPlusPlus(2, 1, 2, make_topology(2, 5, [32, 64, 128, 256, 512]), prune_level=2,
        ...                    ensemble=False)
        >>> net(torch.zeros(1, 1, 64, 64)).shape   # UNet++ L^2: runs X^{0..2,*} only
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 norm: str = "none", dropout: float = 0.5, prune_level: int | None = None,
                 ensemble: bool = True) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        self.depth = n - 1
        self.prune_level = self.depth if prune_level is None else int(prune_level)
        if not 1 <= self.prune_level <= self.depth:
            raise ValueError(f"prune_level must be in 1..{self.depth} (UNet++ L^1..L^{self.depth}), got {prune_level!r}")
        self.ensemble = bool(ensemble)
        self.pools = nn.ModuleList([max_pool(spatial_dims, s[i + 1]) for i in range(n - 1)])
        nodes, ups = {}, {}
        for i in range(n):
            nodes[f"x{i}_0"] = DoubleConv(spatial_dims, in_channels if i == 0 else f[i - 1], f[i], k[i], norm,
                                          dropout=dropout)
        upconv = transposed_conv_class(spatial_dims)
        for j in range(1, n):
            for i in range(n - j):
                ups[f"x{i}_{j}"] = upconv(f[i + 1], f[i], s[i + 1], s[i + 1])
                nodes[f"x{i}_{j}"] = DoubleConv(spatial_dims, f[i] * (j + 1), f[i], k[i], norm, dropout=dropout)
        self.nodes = nn.ModuleDict(nodes)
        self.ups = nn.ModuleDict(ups)
        self.heads = nn.ModuleList([conv_class(spatial_dims)(f[0], num_classes, 1) for _ in range(n - 1)])
        self.apply(init_kaiming_relu_)

    def side_outputs(self, x: torch.Tensor, level: int | None = None) -> list[torch.Tensor]:
        """Logits of the heads on X^{0,1}, ..., X^{0,level} (all at full resolution), computing only
        the nodes with i + j <= level (UNet++ L^level)."""
        self.check(x)
        level = self.depth if level is None else level
        feats: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(level + 1):
            feats[i, 0] = self.nodes[f"x{i}_0"](x if i == 0 else self.pools[i - 1](feats[i - 1, 0]))
            for j in range(1, i + 1):  # the nodes X^{i-j, j} that X^{i,0} completes
                a = i - j
                inputs = [feats[a, m] for m in range(j)] + [self.ups[f"x{a}_{j}"](feats[a + 1, j - 1])]
                feats[a, j] = self.nodes[f"x{a}_{j}"](torch.cat(inputs, dim=1))
        return [self.heads[j - 1](feats[0, j]) for j in range(1, level + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.side_outputs(x, self.prune_level)
        if self.ensemble:
            return torch.stack(outs).mean(0)
        return outs[-1]


def _defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, UNETPP_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "norm": "none", "dropout": 0.5, "prune_level": topo.n_stages - 1,
            "ensemble": True}


@register_model(family="unetpp", paper=UNETPP_PAPER, deep_supervision=False, defaults=_defaults,
                tiny_kwargs={"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "dropout": 0.0, "norm": "batch"},
                extra={"tags": ["cnn", "nested", "dense"], "divisible_by": 16, "paper_params": 9_040_000,
                       "paper_setup": "2D, 1 input channel, 1 class, 32..512, no norm (Keras Nest_Net)",
                       "paper_deep_supervision": "four full-resolution heads: model.side_outputs(x)"})
def unetpp(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
           strides: Any = None, norm: str = "none", dropout: float = 0.5, prune_level: int | None = None,
           ensemble: bool = True) -> UNetPlusPlus:
    """UNet++ (Zhou et al. 2018/2019): nested dense skip pathways, prunable (``prune_level``).

    Default (DLMIA 2018 / reference code): 5 levels 32..512, two 3x3 conv + ReLU + drop-out 0.5 per
    node, no norm, 2x2 transposed convs, the mean of the four heads of UNet++ L^4 (accurate mode;
    ``prune_level=i, ensemble=False`` for the pruned L^i); patches multiples of 16.
    1 input channel, 1 class: 9,041,700 parameters (paper Table 1: 9.04M).
    """
    topo = resolve_topology(spatial_dims, UNETPP_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return UNetPlusPlus(spatial_dims, in_channels, num_classes, topo, norm, dropout, prune_level, ensemble)
