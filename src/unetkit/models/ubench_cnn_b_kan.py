"""U-KAN and ResU-KAN: U-Nets with Kolmogorov-Arnold network layers on their tokens (family ``ubench_kan``).

- ``ukan``: Li, Liu, Hu, Xie, Lin, Wang, "U-KAN Makes Strong Backbone for Medical Image Segmentation and
  Generation", AAAI 2025 (arXiv:2406.02918), Fig. 2, Table 1 (6.35M parameters, 14.02 GFLOPs at
  256x256, 3 in, 1 class). Reference code: github.com/Zhaoyi-Yan/U-KAN (``Seg_UKAN/archs.py``, whose
  training script sets ``input_list = [128, 160, 256]``), as in U-Bench ``models/CNN/U_KAN``.
- ``resukan``: ResU-KAN as U-Bench builds it (``models/CNN/ResU_KAN``): U-KAN with residual conv stages
  carrying efficient multi-scale attention (EMA, Ouyang et al., ICASSP 2023) and an ASPP module at the
  bottleneck.

**KAN layer** (Liu et al., "KAN: Kolmogorov-Arnold Networks", arXiv:2404.19756, Eq. 2.10; the efficient
formulation U-KAN uses): every input-output pair has its own learnable function ``phi(x) = w_b silu(x) +
w_s * spline(x)``, the spline a sum of cubic B-splines on a uniform grid of ``grid_size`` intervals over
[-1, 1] extended by ``spline_order`` knots on each side. Computed as ``silu(x) @ W_b^T + B(x) @ (W_s *
s)^T`` with ``B(x)`` the ``grid_size + spline_order`` basis values per input (Cox-de Boor recursion).
Parameters per layer: ``in x out x (grid_size + spline_order + 2)`` (base weight, spline coefficients,
spline scale), no bias. The spline coefficients start as small noise (std ``0.1 / grid_size``) rather than
the reference's least-squares fit of noise; the grid is fixed (no grid updates, as U-KAN trains).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.lightweight import ChannelLayerNorm
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import (
    PLAN_NOTE,
    DoubleConv,
    TokenEmbed,
    WideningDoubleConv,
    crop_to,
    init_token_mixer_,
    max_pool2,
    pad_input,
    up2,
)


class KANLinear(nn.Module):
    """A Kolmogorov-Arnold layer from ``in_features`` to ``out_features`` on the last axis (module docstring)."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.spline_order = spline_order
        step = (grid_range[1] - grid_range[0]) / grid_size
        knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * step + grid_range[0]
        self.register_buffer("grid", knots, persistent=False)  # the same knots for every input
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters(grid_size)

    def reset_parameters(self, grid_size: int = 5) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5))
        nn.init.normal_(self.spline_weight, 0.0, 0.1 / grid_size)

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """B-spline basis values of ``x`` (N, in): (N, in, grid_size + spline_order)."""
        g = self.grid.to(x.dtype)
        x = x.unsqueeze(-1)
        bases = ((x >= g[:-1]) & (x < g[1:])).to(x.dtype)  # order 0: interval indicators
        for k in range(1, self.spline_order + 1):
            left = (x - g[:-(k + 1)]) / (g[k:-1] - g[:-(k + 1)]) * bases[..., :-1]
            right = (g[k + 1:] - x) / (g[k + 1:] - g[1:-k]) * bases[..., 1:]
            bases = left + right
        return bases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        base = F.linear(F.silu(flat), self.base_weight)
        coeff = (self.spline_weight * self.spline_scaler.unsqueeze(-1)).reshape(self.out_features, -1)
        spline = F.linear(self.b_splines(flat).reshape(flat.shape[0], -1), coeff)
        return (base + spline).reshape(*shape[:-1], self.out_features)


class KANTokenBlock(nn.Module):
    """U-KAN's tokenized KAN block on a (B, C, H, W) map: ``x + [KAN -> depthwise 3x3 conv (bias) -> BN ->
    ReLU] x 3 (LayerNorm(x))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(dim)
        self.kans = nn.ModuleList(KANLinear(dim, dim) for _ in range(3))
        self.convs = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.BatchNorm2d(dim),
                                                 nn.ReLU()) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        for kan, conv in zip(self.kans, self.convs):
            y = conv(kan(y.movedim(1, -1)).movedim(-1, 1))
        return x + y


class UKAN(nn.Module):
    """U-KAN (Fig. 2): three conv stages (double conv, max-pool, ReLU) to ``e0/8, e0/4, e0`` channels at
    1/2, 1/4, 1/8; two tokenized KAN stages (3x3 stride-2 patch embedding + LayerNorm, a KAN block,
    LayerNorm) to ``e1`` at 1/16 and ``e2`` at 1/32; the decoder mirrors it (double conv, bilinear x2,
    ReLU, add the skip; KAN blocks + LayerNorm on the two token levels); a 1x1 head at full resolution.

    ``conv_stage`` / ``decoder_stage`` build the conv stages (ResU-KAN swaps in residual EMA stages) and
    ``bottleneck`` an optional module on the 1/32 map (ResU-KAN's ASPP)."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], conv_stage: Any = None,
                 decoder_stage: Any = None, bottleneck: nn.Module | None = None) -> None:
        super().__init__()
        e = [int(w) for w in widths]
        if len(e) != 3 or e[0] % 8 or any(w < 1 for w in e):
            raise ValueError(f"U-KAN needs 3 widths (the first a multiple of 8), got {e}")
        conv_stage = conv_stage or (lambda cin, cout: DoubleConv(2, cin, cout))
        decoder_stage = decoder_stage or (lambda cin, cout: WideningDoubleConv(2, cin, cout))
        self.encoder = nn.ModuleList(conv_stage(cin, cout) for cin, cout in
                                     zip((in_channels, e[0] // 8, e[0] // 4), (e[0] // 8, e[0] // 4, e[0])))
        self.embed = nn.ModuleList([TokenEmbed(e[0], e[1], 2, gelu=False), TokenEmbed(e[1], e[2], 2, gelu=False)])
        self.enc_kan = nn.ModuleList([KANTokenBlock(e[1]), KANTokenBlock(e[2])])
        self.enc_norm = nn.ModuleList([ChannelLayerNorm(e[1]), ChannelLayerNorm(e[2])])
        self.bottleneck = bottleneck or nn.Identity()
        widths_up = [e[2], e[1], e[0], e[0] // 4, e[0] // 8, e[0] // 8]
        self.decoder = nn.ModuleList(decoder_stage(widths_up[i], widths_up[i + 1]) for i in range(5))
        self.dec_kan = nn.ModuleList([KANTokenBlock(e[1]), KANTokenBlock(e[0])])
        self.dec_norm = nn.ModuleList([ChannelLayerNorm(e[1]), ChannelLayerNorm(e[0])])
        self.head = nn.Conv2d(e[0] // 8, num_classes, 1)
        self.deep_supervision = False
        for part in (self.embed, self.enc_kan, self.dec_kan):
            part.apply(init_token_mixer_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, 32)
        skips = []
        for stage in self.encoder:
            x = F.relu(max_pool2(stage(x)))
            skips.append(x)
        for embed, kan, norm in zip(self.embed, self.enc_kan, self.enc_norm):
            x = norm(kan(embed(x)))
            skips.append(x)
        x = self.bottleneck(skips.pop())
        for i, stage in enumerate(self.decoder):
            x = F.relu(up2(stage(x)))
            if skips:
                x = x + skips.pop()
            if i < len(self.dec_kan):
                x = self.dec_norm[i](self.dec_kan[i](x))
        return crop_to(self.head(x), size)


UKAN_PAPER = ("Li et al., U-KAN Makes Strong Backbone for Medical Image Segmentation and Generation, AAAI 2025, "
              "arXiv:2406.02918 (Fig. 2; Table 1: 6.35M parameters, 14.02 GFLOPs at 256x256)")


@register_model(family="ubench_kan", spatial_dims=(2,), deep_supervision=False, paper=UKAN_PAPER,
                defaults=lambda d: {"widths": [128, 160, 256]},
                tiny_kwargs={"widths": [32, 32, 32]},
                extra={"tags": ["kan", "cnn", "mlp"], "divisible_by": 32, "pads_input": True,
                       "paper_params": 6.35e6, "paper_gflops": 14.02, "paper_patch": [256, 256],
                       "paper_setup": "2D, 3 in, 1 class (BUSI/GlaS/CVC), 256x256, embed dims 128,160,256 "
                                      "(U-Bench's copy defaults to 256,320,512: pass widths=[256, 320, 512])",
                       "kwargs_note": PLAN_NOTE})
def ukan(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
         widths: Sequence[int] | None = None, n_stages: Any = None, features_per_stage: Any = None,
         kernel_sizes: Any = None, strides: Any = None) -> UKAN:
    """U-KAN: conv stages, then tokenized KAN (Kolmogorov-Arnold) stages at 1/16 and 1/32 (2D)."""
    return UKAN(in_channels, num_classes, widths or (128, 160, 256))


# ============================================================================================ ResU-KAN
class EMA(nn.Module):
    """Efficient multi-scale attention (Ouyang et al., "Efficient Multi-Scale Attention Module with Cross-Spatial
    Learning", ICASSP 2023), 2D. The channels are split into ``groups``; in each group a 1x1 conv over the
    height- and width-pooled maps gives two sigmoid gates (then GroupNorm), a 3x3 conv gives a second branch;
    each branch's globally pooled softmax weights the other branch's map, and the sum gates the input."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"EMA: {channels} channels do not split into {groups} groups")
        self.groups = groups
        c = channels // groups
        self.norm = nn.GroupNorm(c, c)
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv3 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        g = x.reshape(b * self.groups, ch // self.groups, h, w)
        pooled = self.conv1(torch.cat((g.mean(3, keepdim=True), g.mean(2, keepdim=True).transpose(2, 3)), dim=2))
        gate_h, gate_w = torch.split(pooled, [h, w], dim=2)
        x1 = self.norm(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3(g)

        def pooled_softmax(t: torch.Tensor) -> torch.Tensor:  # (bg, 1, c)
            return torch.softmax(t.mean((2, 3)), dim=-1).unsqueeze(1)

        weights = pooled_softmax(x1) @ x2.flatten(2) + pooled_softmax(x2) @ x1.flatten(2)  # (bg, 1, h*w)
        return (g * weights.reshape(-1, 1, h, w).sigmoid()).reshape(b, ch, h, w)


class ResidualEMAStage(nn.Module):
    """ResU-KAN's residual conv stage: 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN -> EMA, plus the input (through a
    1x1 conv when the width changes). ``widen_first``: the decoder variant keeps the input width in the first
    conv. EMA uses 32 groups above 32 channels, else ``channels / 2`` (groups of 2), as the reference."""

    def __init__(self, cin: int, cout: int, widen_first: bool = True) -> None:
        super().__init__()
        mid = cout if widen_first else cin
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 3, 1, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                                  nn.Conv2d(mid, cout, 3, 1, 1), nn.BatchNorm2d(cout),
                                  EMA(cout, 32 if cout > 32 else max(cout // 2, 1)))
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al., DeepLab v3, 2017): 1x1 and dilated 3x3 (6, 12, 18) conv + BN +
    ReLU branches and an image-pooling branch (1x1 conv + BN + ReLU, upsampled), concatenated, 1x1 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, dilations: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()

        def branch(k: int, d: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, 1, d if k == 3 else 0, dilation=d), nn.BatchNorm2d(cout),
                                 nn.ReLU())

        self.branches = nn.ModuleList([branch(1, 1)] + [branch(3, d) for d in dilations])
        self.image_pool = branch(1, 1)
        self.project = nn.Sequential(nn.Conv2d(cout * (len(dilations) + 2), cout, 1), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x.mean((2, 3), keepdim=True)).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


@register_model(family="ubench_kan", spatial_dims=(2,), deep_supervision=False,
                paper="ResU-KAN: a medical image segmentation model integrating residual convolutional attention and "
                      "atrous spatial pyramid pooling, Applied Intelligence 2025 (doi:10.1007/s10489-025-06467-5); "
                      "layout of U-Bench models/CNN/ResU_KAN (the paper's count was not reachable)",
                defaults=lambda d: {"widths": [256, 320, 512]},
                tiny_kwargs={"widths": [32, 32, 32]},
                extra={"tags": ["kan", "cnn", "residual", "attention", "multiscale"], "divisible_by": 32,
                       "pads_input": True, "paper_params": None,
                       "paper_setup": "paper not reachable here; U-Bench's code (models/CNN/ResU_KAN, embed dims "
                                      "256,320,512, ASPP 512), 3 in / 1 class, counted by hand in the test",
                       "kwargs_note": PLAN_NOTE})
def resukan(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
            widths: Sequence[int] | None = None, n_stages: Any = None, features_per_stage: Any = None,
            kernel_sizes: Any = None, strides: Any = None) -> UKAN:
    """ResU-KAN: U-KAN with residual EMA-attention conv stages and an ASPP bottleneck (2D)."""
    w = list(widths or (256, 320, 512))
    return UKAN(in_channels, num_classes, w, conv_stage=lambda a, b: ResidualEMAStage(a, b),
                decoder_stage=lambda a, b: ResidualEMAStage(a, b, widen_first=False), bottleneck=ASPP(w[2], w[2]))
