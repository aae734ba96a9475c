"""U-Net v2 with its PVT-v2-b2 encoder (family ``ubench_cnn``).

Peng, Sonka, Chen, "U-Net v2: Rethinking the Skip Connections of U-Net for Medical Image Segmentation",
arXiv:2311.17791 (2023), Fig. 1-2. Reference code: github.com/yaoppeng/U-Net_v2 (``UNetV2``, as in U-Bench
``models/CNN/UNet_v2``), read, not copied.

- **Encoder**: Pyramid Vision Transformer v2, B2 (Wang et al., "PVT v2: Improved Baselines with Pyramid
  Vision Transformer", CVMJ 2022, Table 1): overlapping patch embeddings (7x7 stride 4, then 3x3 stride
  2; conv + LayerNorm), widths 64, 128, 320, 512, depths 3, 4, 6, 3, heads 1, 2, 5, 8, MLP ratios 8, 8, 4, 4,
  spatial-reduction ratios 8, 4, 2, 1 (keys/values from a strided conv + LayerNorm), MLPs with a 3x3
  depthwise conv between the linear layers, LayerNorm (eps 1e-6) after each stage, stochastic depth up to
  0.1. Written here; no ImageNet weights are loaded (the paper starts from them).
- **Skips (SDI)**: each level's features get CBAM-style channel and spatial attention and a 1x1 conv + BN to
  ``channel`` (32); for every level i, the four levels are resized to level i (adaptive average pooling
  down, bilinear up), each through its own 3x3 conv, and multiplied (Hadamard product).
- **Decoder**: from the coarsest SDI output, a 4x4 stride-2 transposed conv and addition of the next SDI
  output, three times; a 1x1 head at each of the four levels. The paper trains all four heads (deep
  supervision); the finest (1/4) head upsampled x4 is the output.

The reference builds a fifth transposed convolution it never uses (16,384 parameters) and leaves the
ReLU of its 1x1 "translayers" unused; neither is built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import (
    PLAN_NOTE,
    crop_to,
    init_token_mixer_,
    pad_input,
)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., ECCV 2016): zero a residual branch per sample with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(1 - rate)
    return x * keep / (1 - rate)


class SpatialReductionAttention(nn.Module):
    """PVT's multi-head attention whose keys and values come from the map reduced by a ``sr x sr`` stride-``sr``
    conv + LayerNorm (``sr = 1``: plain attention). Tokens (B, N, C) on an H x W grid."""

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        self.heads, self.sr = heads, sr
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.reduce = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        source = x
        if self.sr > 1:
            source = self.norm(self.reduce(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(source).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ConvMlp(nn.Module):
    """PVT v2's feed-forward: linear to ``hidden``, 3x3 depthwise conv (bias) on the token grid, GELU, linear back."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        y = self.fc1(x)
        b, _, c = y.shape
        y = self.dwconv(y.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(y))


class PVTBlock(nn.Module):
    """``x + SRA(LN(x))``, then ``x + ConvMlp(LN(x))``, each branch with stochastic depth."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, sr: int, drop_path_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvMlp(dim, dim * mlp_ratio)
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x), h, w), self.drop_path_rate, self.training)


class PVTv2(nn.Module):
    """The PVT v2 backbone (module docstring): returns the four stage outputs (B, C_i, H / 2^(i+2), W / 2^(i+2))."""

    def __init__(self, in_channels: int, dims: Sequence[int], depths: Sequence[int], heads: Sequence[int],
                 mlp_ratios: Sequence[int], sr_ratios: Sequence[int], drop_path_rate: float = 0.1) -> None:
        super().__init__()
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear in depth, as PVT
        self.embeds, self.stages, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        start, cin = 0, in_channels
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            k, s = (7, 4) if i == 0 else (3, 2)
            self.embeds.append(nn.ModuleDict({"proj": nn.Conv2d(cin, dim, k, s, k // 2), "norm": nn.LayerNorm(dim)}))
            self.stages.append(nn.ModuleList(PVTBlock(dim, heads[i], mlp_ratios[i], sr_ratios[i], rates[start + j])
                                             for j in range(depth)))
            self.norms.append(nn.LayerNorm(dim, eps=1e-6))
            start, cin = start + depth, dim
        self.apply(init_token_mixer_)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms):
            x = embed["proj"](x)
            b, c, h, w = x.shape
            t = embed["norm"](x.flatten(2).transpose(1, 2))
            for block in blocks:
                t = block(t, h, w)
            x = norm(t).transpose(1, 2).reshape(b, c, h, w)
            outs.append(x)
        return outs


class ChannelSpatialAttention(nn.Module):
    """CBAM (Woo et al., ECCV 2018) as U-Net v2 applies it: ``x * channel_gate(x)``, then ``* spatial_gate``.
    Channel gate: a shared bias-free MLP (C -> C/16 -> C, ReLU) on the average- and max-pooled vectors, summed,
    sigmoid; spatial gate: a 7x7 bias-free conv on the channel mean and max, sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, channels // 16, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(channels // 16, channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, 7, 1, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.spatial(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), dim=1)))


class SDI(nn.Module):
    """Semantics and detail infusion: every level resized to the target level (adaptive average pooling down,
    bilinear with aligned corners up), a 3x3 conv per source level, and their product."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, 1, 1) for _ in range(levels))

    def forward(self, features: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        size = tuple(target.shape[2:])
        out = torch.ones_like(target)
        for conv, f in zip(self.convs, features):
            if f.shape[-1] > size[-1]:
                f = F.adaptive_avg_pool2d(f, size)
            elif f.shape[-1] < size[-1]:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=True)
            out = out * conv(f)
        return out


class UNetV2(nn.Module):
    """U-Net v2 (module docstring). Deep-supervision outputs: full resolution (the 1/4 head upsampled x4), then the
    1/8, 1/16 and 1/32 heads at their own resolution. Patches: multiples of 32."""

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int], depths: Sequence[int],
                 heads: Sequence[int], mlp_ratios: Sequence[int], sr_ratios: Sequence[int], channel: int,
                 drop_path_rate: float, deep_supervision: bool) -> None:
        super().__init__()
        if any(d < 16 for d in dims):
            raise ValueError(f"U-Net v2's channel attention needs widths of at least 16, got {list(dims)}")
        self.encoder = PVTv2(in_channels, dims, depths, heads, mlp_ratios, sr_ratios, drop_path_rate)
        self.attention = nn.ModuleList(ChannelSpatialAttention(d) for d in dims)
        self.translate = nn.ModuleList(nn.Sequential(nn.Conv2d(d, channel, 1, bias=False), nn.BatchNorm2d(channel))
                                       for d in dims)
        self.sdi = nn.ModuleList(SDI(channel, len(dims)) for _ in dims)
        self.up = nn.ModuleList(nn.ConvTranspose2d(channel, channel, 4, 2, 1, bias=False) for _ in dims[1:])
        self.heads = nn.ModuleList(nn.Conv2d(channel, num_classes, 1) for _ in dims)  # finest level first
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = pad_input(x, 32)
        feats = [t(a(f)) for f, a, t in zip(self.encoder(x), self.attention, self.translate)]
        fused = [sdi(feats, f) for sdi, f in zip(self.sdi, feats)]
        y = fused[-1]
        outs = [self.heads[-1](y)]
        for level in range(len(fused) - 2, -1, -1):
            y = self.up[level](y) + fused[level]
            outs.append(self.heads[level](y))
        full = crop_to(F.interpolate(outs[-1], scale_factor=4, mode="bilinear"), size)
        if not self.deep_supervision:
            return full
        return [full] + outs[-2::-1]


UNETV2_DEFAULTS: dict[str, Any] = {"dims": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "heads": [1, 2, 5, 8],
                                   "mlp_ratios": [8, 8, 4, 4], "sr_ratios": [8, 4, 2, 1], "channel": 32,
                                   "drop_path_rate": 0.1}


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=True,
                paper="Peng, Sonka, Chen, U-Net v2: Rethinking the Skip Connections of U-Net for Medical Image "
                      "Segmentation, arXiv:2311.17791, 2023 (Fig. 1-2); PVT v2-B2 encoder (Wang et al., CVMJ 2022)",
                defaults=lambda d: {k: (list(v) if isinstance(v, list) else v) for k, v in UNETV2_DEFAULTS.items()},
                tiny_kwargs={"dims": [16, 16, 32, 32], "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2],
                             "mlp_ratios": [2, 2, 2, 2], "sr_ratios": [8, 4, 2, 1], "channel": 8, "drop_path_rate": 0.0},
                extra={"tags": ["hybrid", "transformer", "attention", "pretrainable-encoder"], "divisible_by": 32,
                       "pads_input": True, "output_stride": 4, "paper_params": None,
                       "paper_setup": "paper count not located; reference code (yaoppeng/U-Net_v2 UNetV2, PVT v2-B2, "
                                      "channel 32), 3 in / 1 class, counted by hand in the test, less its unused "
                                      "fifth transposed conv",
                       "kwargs_note": PLAN_NOTE})
def unetv2(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
           dims: Sequence[int] | None = None, depths: Sequence[int] | None = None, heads: Sequence[int] | None = None,
           mlp_ratios: Sequence[int] | None = None, sr_ratios: Sequence[int] | None = None, channel: int | None = None,
           drop_path_rate: float | None = None, n_stages: Any = None, features_per_stage: Any = None,
           kernel_sizes: Any = None, strides: Any = None) -> UNetV2:
    """U-Net v2: PVT v2-B2 encoder, SDI skip connections (attention + multiplicative fusion), 4 heads."""
    d = UNETV2_DEFAULTS
    return UNetV2(in_channels, num_classes, dims or d["dims"], depths or d["depths"], heads or d["heads"],
                  mlp_ratios or d["mlp_ratios"], sr_ratios or d["sr_ratios"], channel or d["channel"],
                  d["drop_path_rate"] if drop_path_rate is None else drop_path_rate, deep_supervision)
