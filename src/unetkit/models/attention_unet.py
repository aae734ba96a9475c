"""Attention U-Net (family ``attention_unet``): additive attention gates on the skip connections.

Oktay, Schlemper, Le Folgoc, Lee, Heinrich, Misawa, Mori, McDonagh, Hammerla, Kainz, Glocker,
Rueckert, "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018 (Fig. 1-2, Eq. 1-2;
Table 1/2: 3D U-Net 5.88M, Attention U-Net 6.40M parameters). Reference code:
ozan-oktay/Attention-Gated-Networks (``unet_CT_multi_att_dsv_3D`` with ``feature_scale=4``):

- encoder: two 3x3x3 conv-BN-ReLU per level, widths 16, 32, 64, 128, 256, 2x2x2 max pooling;
- gating signal: 1x1x1 conv-BN-ReLU on the bottleneck;
- attention gate (Eq. 1-2, "grid attention"): ``q = psi(ReLU(theta(x) + phi(g)))``, theta a 2x2x2
  stride-2 conv without bias on the skip ``x`` (so the gate works at the coarser grid of ``g``),
  phi a 1x1 conv on the gating signal (resampled to theta's grid), psi a 1x1 conv to one channel,
  alpha = sigmoid(q) resampled to ``x``; output ``W(alpha * x)`` with W a 1x1 conv + BN. The reference
  runs two gates per level and combines them with a 1x1 conv-BN-ReLU (``MultiAttentionBlock``);
  levels 2..4 are gated, the first skip is not;
- decoder: trilinear x2 upsampling, concatenation with the gated skip, two conv-BN-ReLU;
- deep supervision: a 1x1 head on every decoder level, upsampled to full resolution, concatenated
  and fused by a 1x1 conv (the network's output).

With 1 input channel (CT) and 2 classes our count is 6,472,784 (paper 6.40M: +1.1%; one gate per
level, the reference's ``SingleAttentionBlock``, gives 6,213,613, -2.9%); ``gates_per_level=0``
(no gates, no gating signal: the paper's U-Net baseline) gives 5,887,466 (paper 5.88M: +0.1%).

Deep-supervision outputs (unetkit contract): the fused full-resolution output first, then the heads
of the coarser decoder levels at their own resolution; without deep supervision only the fused
output (the reference model's return value).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology
from unetkit.models.unet_classic import (ConvNormReLU, DoubleConv, TopologyNet, init_kaiming_relu_, max_pool,
                                         norm_layer, resize_to, resolve_topology, topology_kwargs)

OKTAY_PAPER = ("Oktay et al., Attention U-Net: Learning Where to Look for the Pancreas, MIDL 2018 "
               "(Fig. 1-2, Eq. 1-2; Tables 1-2: 6.40M vs U-Net 5.88M)")
ATT_FEATURES = (16, 32, 64, 128, 256)


class AttentionGate(nn.Module):
    """Additive grid attention gate (Oktay et al. 2018, Eq. 1-2, Fig. 2).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the skip ``x``.
        gating_channels: channels of the gating signal ``g``.
        inter_channels: channels of the joint space ``F_int``.
        sub_sample: stride (= kernel) of theta, the grid the gate works on.
        norm: norm of the output transform W.
        theta_bias: give theta a bias (CA-Net's copy of the gate has one; Oktay's reference has not).
    """

    def __init__(self, spatial_dims: int, in_channels: int, gating_channels: int, inter_channels: int,
                 sub_sample: tuple[int, ...], norm: str = "batch", theta_bias: bool = False) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.theta = conv(in_channels, inter_channels, sub_sample, sub_sample, bias=theta_bias)
        self.phi = conv(gating_channels, inter_channels, 1)
        self.psi = conv(inter_channels, 1, 1)
        self.out = nn.Sequential(conv(in_channels, in_channels, 1), norm_layer(norm, spatial_dims, in_channels))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x)
        q = self.psi(torch.relu(theta + resize_to(self.phi(g), theta.shape[2:])))
        alpha = resize_to(torch.sigmoid(q), x.shape[2:])
        return self.out(alpha * x)


class MultiAttention(nn.Module):
    """``n`` attention gates on the same skip, concatenated and fused by a 1x1 conv-norm-ReLU
    (the reference's ``MultiAttentionBlock``; with one gate, its ``SingleAttentionBlock``)."""

    def __init__(self, spatial_dims: int, in_channels: int, gating_channels: int, n_gates: int,
                 sub_sample: tuple[int, ...], norm: str, theta_bias: bool = False) -> None:
        super().__init__()
        self.gates = nn.ModuleList([AttentionGate(spatial_dims, in_channels, gating_channels, in_channels,
                                                  sub_sample, norm, theta_bias) for _ in range(n_gates)])
        self.combine = ConvNormReLU(spatial_dims, in_channels * n_gates, in_channels, 1, norm)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.combine(torch.cat([gate(x, g) for gate in self.gates], dim=1))


class AttentionUNet(TopologyNet):
    """Attention U-Net with deep supervision (the reference's ``unet_CT_multi_att_dsv``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: widths, kernels, strides of the encoder levels.
        gates_per_level: attention gates per gated skip (reference: 2); 0 gives the U-Net baseline.
        norm: ``"batch"`` (paper) or ``"instance"`` / ``"none"``.
        deep_supervision: return the fused output, then the coarser decoder heads.

    Example:
        >>> net = AttentionUNet(3, 1, 2, make_topology(3, 5, [16, 32, 64, 128, 256]))
        >>> [o.shape[2:] for o in net(torch.zeros(1, 1, 32, 32, 32))]   # 32^3, 16^3, 8^3, 4^3
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 gates_per_level: int = 2, norm: str = "batch", deep_supervision: bool = True) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        self.encoder = nn.ModuleList([DoubleConv(spatial_dims, in_channels if i == 0 else f[i - 1], f[i], k[i], norm)
                                      for i in range(n)])
        self.pools = nn.ModuleList([max_pool(spatial_dims, s[i + 1]) for i in range(n - 1)])
        self.gating = ConvNormReLU(spatial_dims, f[-1], f[-1], 1, norm) if gates_per_level else nn.Identity()
        att: dict[str, nn.Module] = {}
        dec = []
        for i in range(n - 2, -1, -1):
            if gates_per_level and i > 0:  # the gating signal comes from the level below
                att[str(i)] = MultiAttention(spatial_dims, f[i], f[i + 1], gates_per_level, s[i + 1], norm)
            dec.append(DoubleConv(spatial_dims, f[i + 1] + f[i], f[i], k[i], norm))
        self.attention = nn.ModuleDict(att)
        self.decoder = nn.ModuleList(dec)
        conv = conv_class(spatial_dims)
        self.heads = nn.ModuleList([conv(f[i], num_classes, 1) for i in range(n - 1)])  # level 0 first
        self.fuse = conv(num_classes * (n - 1), num_classes, 1)
        self.deep_supervision = deep_supervision
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        self.check(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pools[i - 1](x))
            skips.append(x)
        n = len(skips)
        x = skips[-1]
        g = self.gating(x)
        levels: list[torch.Tensor] = []
        for d, i in enumerate(range(n - 2, -1, -1)):
            skip = skips[i]
            if str(i) in self.attention:
                skip = self.attention[str(i)](skip, g)
            x = self.decoder[d](torch.cat((skip, resize_to(x, skip.shape[2:])), dim=1))
            g = x
            levels.insert(0, x)
        side = [head(level) for head, level in zip(self.heads, levels)]
        full = side[0].shape[2:]
        fused = self.fuse(torch.cat([resize_to(o, full) for o in side], dim=1))
        if not self.deep_supervision:
            return fused
        return [fused] + side[1:]


def _defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, ATT_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "gates_per_level": 2, "norm": "batch"}


@register_model(family="attention_unet", paper=OKTAY_PAPER, defaults=_defaults,
                tiny_kwargs={"n_stages": 4, "features_per_stage": [4, 8, 16, 32]},
                extra={"tags": ["cnn", "attention"], "divisible_by": 16, "paper_params": 6_400_000,
                       "paper_setup": "3D, 1 input channel, 2 classes, 16..256 (feature_scale 4), "
                                              "2 gates per level, BN"})
def attention_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                   n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
                   kernel_sizes: Any = None, strides: Any = None, gates_per_level: int = 2,
                   norm: str = "batch") -> AttentionUNet:
    """Attention U-Net (Oktay et al. 2018): additive attention gates, fused deep supervision.

    Default (paper / reference ``unet_CT_multi_att_dsv_3D``, feature_scale 4): 5 levels 16..256,
    two gates per gated skip, batch norm; patches multiples of 16. 1 input channel, 2 classes:
    6,472,784 parameters in 3D (paper 6.40M, +1.1%). The design carries over to 2D.
    """
    topo = resolve_topology(spatial_dims, ATT_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return AttentionUNet(spatial_dims, in_channels, num_classes, topo, gates_per_level, norm, deep_supervision)
