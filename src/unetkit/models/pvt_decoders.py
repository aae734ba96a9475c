"""Attention decoders on a Pyramid Vision Transformer v2 encoder (family ``hybrid``).

Both models share one PVTv2 encoder, written here from its paper: Wang, Xie, Li, Fan, Song, Liang, Lu,
Luo, Shao, "PVT v2: Improved Baselines with Pyramid Vision Transformer", CVM 2022 (arXiv:2106.13797),
Sec. 3 and Table 1: overlapping patch embeddings (7x7 stride 4, then 3x3 stride 2), spatial-reduction
attention (keys and values from a k x k stride-k convolution + layer norm), a feed-forward network with a
3x3 depth-wise convolution between its linear layers; B2 = widths 64, 128, 320, 512, depths 3, 4, 6, 3,
heads 1, 2, 5, 8, reduction ratios 8, 4, 2, 1, MLP ratios 8, 8, 4, 4 (B0: widths 32, 64, 160, 256,
depths 2, 2, 2, 2). No position table, so any input that is a multiple of 32 works (others are
zero-padded and the logits cropped). Layout checked against the reference ``lib/pvtv2.py`` of
SLDGroup/CASCADE and SLDGroup/EMCAD (``PyramidVisionTransformerImpr``). Random initialization (the
papers start from ImageNet weights, which cannot be downloaded here).

- ``pvt_cascade``: Rahman & Marculescu, "Medical Image Segmentation via Cascaded Attention Decoding",
  WACV 2023 (arXiv:2210.09643), Fig. 1-2: CASCADE decoder = 1x1 conv, then per level a convolutional
  attention module (channel attention -> spatial attention -> two 3x3 conv + BN + ReLU), upsampling
  (nearest x2, 3x3 conv + BN + ReLU) and an attention gate on the skip before concatenation; four 1x1
  prediction heads (1/32 ... 1/4), whose upsampled sum is the prediction. Reference code:
  SLDGroup/CASCADE ``lib/networks.py`` (``PVT_CASCADE``) and ``lib/decoders.py`` (``CASCADE``).
- ``emcad``: Rahman, Munir, Marculescu, "EMCAD: Efficient Multi-scale Convolutional Attention Decoding for
  Medical Image Segmentation", CVPR 2024 (arXiv:2405.06880), Fig. 2-3, Table 1 (PVT-EMCAD-B2: 26.76M
  parameters, 5.60 GFLOPs; PVT-EMCAD-B0: 3.92M, 0.84 GFLOPs; 224x224, 9 classes): multi-scale
  convolutional attention modules (channel attention, spatial attention, multi-scale depth-wise
  convolution block with kernels 1, 3, 5 and expansion 2), efficient up-convolution (nearest x2,
  depth-wise 3x3 + BN + ReLU, 1x1), large-kernel grouped attention gates (3x3 grouped convolutions) and
  additive skip aggregation; the finest head (1/4, upsampled) is the prediction. Reference code:
  SLDGroup/EMCAD ``lib/networks.py`` (``EMCADNet``) and ``lib/decoders.py`` (``EMCAD``).
- ``fcbformer``: Sanderson & Matuszewski, "FCN-Transformer Feature Fusion for Polyp Segmentation", MIUA 2022
  (arXiv:2208.08352), Fig. 1-3: a transformer branch (PVT v2-B3: depths 3, 4, 18, 3) whose four levels pass
  two residual blocks each to 64 channels (local emphasis), are brought to 1/4 and fused from the deepest up
  (stepwise feature aggregation: concatenation + two residual blocks), a fully convolutional branch (a U-Net
  of residual blocks -- GroupNorm 32, SiLU, 3x3 conv, twice, plus a skip -- with 6 levels of widths
  32 x (1, 1, 2, 2, 4, 4), 2 blocks per level, strided 3x3 downsampling, nearest x2 + 3x3 upsampling and a
  skip into every decoder block) at full resolution, and a prediction head (two residual blocks on the
  concatenation of the upsampled transformer output and the FCB output, 1x1 conv). The paper prints no
  parameter count; the count is checked against the layout of the reference code (ESandML/FCBFormer
  ``Models/models.py``, read in U-Bench's copy ``models/Hybrid/FCBFormer/FCBFormer.py``). No deep supervision.

Deep supervision (unetkit contract: full resolution first, then each coarser level at its own
resolution; the papers upsample every head to full resolution before the loss): PVT-CASCADE returns the
aggregated prediction, then its heads at 1/4, 1/8, 1/16, 1/32; EMCAD its 1/4 head upsampled, then the
heads at 1/8, 1/16, 1/32. An input that has not 3 channels passes the references' 1x1 conv + BN + ReLU
to 3 channels first. Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, init_transformer_, pad_to_multiple
from unetkit.models.hybrid_cnn_transformer import PLAN_NOTE, ConvBNReLU, double_conv
from unetkit.models.registry import register_model

PVT_V2_B2 = {"embed_dims": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "num_heads": [1, 2, 5, 8],
             "sr_ratios": [8, 4, 2, 1], "mlp_ratios": [8, 8, 4, 4]}
PVT_V2_B0 = {**PVT_V2_B2, "embed_dims": [32, 64, 160, 256], "depths": [2, 2, 2, 2]}
PVT_V2_B3 = {**PVT_V2_B2, "depths": [3, 4, 18, 3]}
PVT_TINY = {"embed_dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "sr_ratios": [4, 2, 2, 1],
            "mlp_ratios": [2, 2, 2, 2]}
PVT_DIVISOR = 32  # overall stride of the encoder


# ============================================================================================ PVTv2
def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al., ECCV 2016): zero a sample's residual branch with probability p."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class SpatialReductionAttention(nn.Module):
    """PVT attention: queries from every token, keys and values from the map reduced by a stride-``sr``
    ``sr`` x ``sr`` convolution + layer norm (PVT v2 Sec. 3). Tokens channels-last (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        heads = self.num_heads
        q = self.q(x).view(b, h * w, heads, c // heads).transpose(1, 2)
        src = x
        if self.sr is not None:
            src = self.norm(self.sr(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        k, v = self.kv(src).view(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


class DepthwiseMlp(nn.Module):
    """PVT v2 feed-forward: linear, 3x3 depth-wise convolution, GELU, linear. Channels-last."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(F.gelu(x))


class PVTBlock(nn.Module):
    """Pre-norm block: ``x + SRA(LN(x))``, ``x + MLP(LN(x))``, with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = DepthwiseMlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: k x k convolution with stride s and padding k // 2, layer norm."""

    def __init__(self, cin: int, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel_size, stride, kernel_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def init_pvt_(module: nn.Module) -> None:
    """PVT's initialization: transformer linears and norms, convolutions normal(0, sqrt(2 / fan_out))."""
    init_transformer_(module)
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class PVTv2Encoder(nn.Module):
    """Four PVT v2 stages at 1/4, 1/8, 1/16, 1/32; returns their (B, C, H, W) feature maps."""

    def __init__(self, in_channels: int = 3, embed_dims: Sequence[int] = PVT_V2_B2["embed_dims"],
                 depths: Sequence[int] = PVT_V2_B2["depths"], num_heads: Sequence[int] = PVT_V2_B2["num_heads"],
                 sr_ratios: Sequence[int] = PVT_V2_B2["sr_ratios"], mlp_ratios: Sequence[float] = PVT_V2_B2["mlp_ratios"],
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(sr_ratios) == len(mlp_ratios) == 4:
            raise ValueError("PVT v2 has 4 stages: embed_dims, depths, num_heads, sr_ratios and mlp_ratios need 4 "
                             f"entries each, got {list(embed_dims)}, {list(depths)}, {list(num_heads)}, "
                             f"{list(sr_ratios)}, {list(mlp_ratios)}")
        total = sum(depths)  # stochastic depth grows linearly with depth, 0 to drop_path_rate
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        cins = [in_channels, *embed_dims[:-1]]
        self.embeds = nn.ModuleList([OverlapPatchEmbed(cin, d, 7 if i == 0 else 3, 4 if i == 0 else 2)
                                     for i, (cin, d) in enumerate(zip(cins, embed_dims))])
        self.stages = nn.ModuleList()
        for i, (d, n) in enumerate(zip(embed_dims, depths)):
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*[PVTBlock(d, num_heads[i], sr_ratios[i], mlp_ratios[i], rates[first + j])
                                               for j in range(n)]))
        self.norms = nn.ModuleList([nn.LayerNorm(d, eps=1e-6) for d in embed_dims])
        self.apply(init_pvt_)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for embed, stage, norm in zip(self.embeds, self.stages, self.norms):
            x = norm(stage(embed(x))).permute(0, 3, 1, 2).contiguous()
            features.append(x)
        return features


class PVTBackbone(nn.Module):
    """The references' input adapter (1x1 conv + BN + ReLU to 3 channels, for any other channel count)
    and the PVT v2 encoder."""

    def __init__(self, in_channels: int, encoder: dict[str, Any], drop_path_rate: float) -> None:
        super().__init__()
        self.to_rgb = ConvBNReLU(in_channels, 3, kernel_size=1) if in_channels != 3 else nn.Identity()
        self.encoder = PVTv2Encoder(3, drop_path_rate=drop_path_rate, **encoder)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(self.to_rgb(x))


# ============================================================================================ attention
class ChannelAttention(nn.Module):
    """CBAM channel attention (Woo et al., ECCV 2018): sigmoid of a shared bias-free MLP (reduction
    16, ReLU) over the global average and max pools. Returns the (B, C, 1, 1) weights."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        hidden = channels // min(ratio, channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        peak = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: sigmoid of a bias-free 7x7 convolution over the channel mean and max."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), dim=1)))


def cbam(x: torch.Tensor, channel: ChannelAttention, spatial: SpatialAttention) -> torch.Tensor:
    """Channel, then spatial attention, each multiplying the map (the decoders' attention step)."""
    x = channel(x) * x
    return spatial(x) * x


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): ``skip * sigmoid(BN(psi(ReLU(BN(W_g g) + BN(W_x skip)))))``.
    CASCADE: 1x1 projections; EMCAD's LGAG: 3x3 grouped projections."""

    def __init__(self, gate_channels: int, skip_channels: int, inner: int, kernel_size: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.w_g = nn.Sequential(nn.Conv2d(gate_channels, inner, kernel_size, padding=pad, groups=groups),
                                 nn.BatchNorm2d(inner))
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inner, kernel_size, padding=pad, groups=groups),
                                 nn.BatchNorm2d(inner))
        self.psi = nn.Sequential(nn.Conv2d(inner, 1, 1), nn.BatchNorm2d(1))

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * torch.sigmoid(self.psi(F.relu(self.w_g(gate) + self.w_x(skip))))


def upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def deep_supervision_outputs(heads: Sequence[torch.Tensor], full: torch.Tensor, size: Sequence[int],
                             scales: Sequence[int]) -> list[torch.Tensor]:
    """``full`` cropped to the input ``size``, then each head (finest first) cropped to its share of it."""
    out = [crop_to(full, size)]
    for head, s in zip(heads, scales):
        out.append(crop_to(head, [-(-n // s) for n in size]))
    return out


class PVTDecoderNet(nn.Module):
    """PVT v2 encoder, a decoder over its four levels (deepest first, returning one map per level) and a 1x1
    prediction head per decoder level: what PVT-CASCADE and EMCAD share."""

    def __init__(self, in_channels: int, num_classes: int, encoder: dict[str, Any], decoder: nn.Module,
                 drop_path_rate: float, deep_supervision: bool) -> None:
        super().__init__()
        self.backbone = PVTBackbone(in_channels, encoder, drop_path_rate)
        self.decoder = decoder
        self.heads = nn.ModuleList([nn.Conv2d(w, num_classes, 1) for w in list(encoder["embed_dims"])[::-1]])
        self.deep_supervision = deep_supervision

    def decoded_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs at 1/32, 1/16, 1/8, 1/4 of ``x`` (a multiple of 32)."""
        features = self.backbone(x)
        return self.decoder(features[-1], features[-2::-1])


# ============================================================================================ CASCADE
class CascadeDecoder(nn.Module):
    """CASCADE (Rahman & Marculescu 2023, Fig. 2): deepest first, widths ``channels`` (512, 320, 128, 64
    for PVT v2-B2). One spatial attention is shared by all levels, as in the reference."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c = list(channels)
        self.conv_1x1 = nn.Conv2d(c[0], c[0], 1)
        self.bottom = double_conv(c[0], c[0])
        self.ups = nn.ModuleList([nn.Sequential(nn.Upsample(scale_factor=2), ConvBNReLU(a, b)) for a, b in zip(c, c[1:])])
        self.gates = nn.ModuleList([AttentionGate(b, b, inner) for b, inner in zip(c[1:], [*c[2:], 32])])
        self.convs = nn.ModuleList([double_conv(2 * b, b) for b in c[1:]])
        self.channel_attn = nn.ModuleList([ChannelAttention(c[0])] + [ChannelAttention(2 * b) for b in c[1:]])
        self.spatial_attn = SpatialAttention()

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        d = self.bottom(cbam(self.conv_1x1(x), self.channel_attn[0], self.spatial_attn))
        outs = [d]
        for up, gate, conv, ca, skip in zip(self.ups, self.gates, self.convs, self.channel_attn[1:], skips):
            d = up(d)
            d = conv(cbam(torch.cat((gate(d, skip), d), dim=1), ca, self.spatial_attn))
            outs.append(d)
        return outs


class PVTCascade(PVTDecoderNet):
    """PVT v2 encoder + CASCADE decoder + four 1x1 heads; the prediction is the sum of the heads
    upsampled (bilinear) to the input size.

    Example:
        >>> PVTCascade(3, 9)(torch.zeros(1, 3, 224, 224))[0].shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, encoder: dict[str, Any] = PVT_V2_B2,
                 drop_path_rate: float = 0.1, deep_supervision: bool = True) -> None:
        super().__init__(in_channels, num_classes, encoder, CascadeDecoder(list(encoder["embed_dims"])[::-1]),
                         drop_path_rate, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = pad_to_multiple(x, PVT_DIVISOR)
        heads = [head(d) for head, d in zip(self.heads, self.decoded_levels(x))]  # 1/32 ... 1/4
        full = sum(F.interpolate(h, size=x.shape[2:], mode="bilinear") for h in heads)
        if not self.deep_supervision:
            return crop_to(full, size)
        return deep_supervision_outputs(heads[::-1], full, size, [4, 8, 16, 32])


def _encoder_kwargs(embed_dims, depths, num_heads, sr_ratios, mlp_ratios) -> dict[str, list]:
    return {"embed_dims": list(embed_dims), "depths": list(depths), "num_heads": list(num_heads),
            "sr_ratios": list(sr_ratios), "mlp_ratios": list(mlp_ratios)}


_PVT_NOTE = ("; embed_dims/depths/num_heads/sr_ratios/mlp_ratios describe the PVT v2 encoder (default B2); "
             "random initialization (the paper starts from ImageNet weights)")


@register_model(family="hybrid", spatial_dims=(2,), deep_supervision=True, defaults=lambda d: {**PVT_V2_B2,
                                                                                                "drop_path_rate": 0.1},
                paper="Rahman & Marculescu, Medical Image Segmentation via Cascaded Attention Decoding, WACV 2023, "
                      "arXiv:2210.09643 (Fig. 1-2; PVT-CASCADE with PVT v2-B2)",
                tiny_kwargs={**PVT_TINY, "drop_path_rate": 0.0},
                extra={"tags": ["hybrid", "transformer", "attention", "pretrainable-encoder", "multiscale"],
                       "paper_params": 35.28e6, "paper_gflops": 6.40, "paper_patch": [224, 224],
                       "paper_setup": "2D, 1 in (through the 1x1 adapter to 3), 9 classes (Synapse), 224x224, "
                                      "PVT v2-B2; figure as tabulated in EMCAD (CVPR 2024) Table 1",
                       "divisible_by": PVT_DIVISOR, "pads_input": True, "output_stride": 4, "kwargs_note": PLAN_NOTE + _PVT_NOTE})
def pvt_cascade(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                embed_dims: Sequence[int] = PVT_V2_B2["embed_dims"], depths: Sequence[int] = PVT_V2_B2["depths"],
                num_heads: Sequence[int] = PVT_V2_B2["num_heads"], sr_ratios: Sequence[int] = PVT_V2_B2["sr_ratios"],
                mlp_ratios: Sequence[float] = PVT_V2_B2["mlp_ratios"], drop_path_rate: float = 0.1,
                n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
                strides: Any = None) -> PVTCascade:
    """PVT-CASCADE: PVT v2-B2 encoder, cascaded attention decoder, four heads (2D, deep supervision)."""
    encoder = _encoder_kwargs(embed_dims, depths, num_heads, sr_ratios, mlp_ratios)
    return PVTCascade(in_channels, num_classes, encoder, drop_path_rate, deep_supervision)


# ============================================================================================ EMCAD
class MultiScaleConvBlock(nn.Module):
    """EMCAD's MSCB (Fig. 3a): 1x1 expansion (x ``expansion``) + BN + ReLU; parallel depth-wise k x k
    convolutions + BN + ReLU for each kernel in ``kernel_sizes``, summed; channel shuffle; 1x1 projection
    + BN; residual (1x1 projection of the input where the widths differ)."""

    def __init__(self, cin: int, cout: int, kernel_sizes: Sequence[int], expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBNReLU(cin, hidden, kernel_size=1, bias=False)
        self.dwconvs = nn.ModuleList([nn.Sequential(nn.Conv2d(hidden, hidden, k, padding=k // 2, groups=hidden, bias=False),
                                                    nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
                                      for k in kernel_sizes])
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.shuffle_groups = math.gcd(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)
        y = sum(conv(y) for conv in self.dwconvs)
        b, c, h, w = y.shape
        g = self.shuffle_groups  # channel shuffle (Zhang et al., ShuffleNet, CVPR 2018)
        y = y.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.shortcut(x) + self.project(y)


class EfficientUpConv(nn.Module):
    """EMCAD's EUCB (Fig. 3b): nearest x2, depth-wise 3x3 + BN + ReLU, 1x1 convolution (with bias). The
    reference's channel shuffle here has one channel per group, an identity, and is left out."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dwconv = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                    nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.pwconv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv(self.dwconv(x))


class EMCADDecoder(nn.Module):
    """EMCAD (Fig. 2): per level MSCAM = channel attention, spatial attention (one, shared), MSCB; EUCB up;
    LGAG on the skip (inner width C/2, groups C/2, 3x3); additive aggregation. Deepest first."""

    def __init__(self, channels: Sequence[int], kernel_sizes: Sequence[int], expansion: int, lgag_kernel: int) -> None:
        super().__init__()
        c = list(channels)
        self.mscbs = nn.ModuleList([MultiScaleConvBlock(w, w, kernel_sizes, expansion) for w in c])
        self.ups = nn.ModuleList([EfficientUpConv(a, b) for a, b in zip(c, c[1:])])
        self.gates = nn.ModuleList([AttentionGate(w, w, w // 2, lgag_kernel, w // 2) for w in c[1:]])
        self.channel_attn = nn.ModuleList([ChannelAttention(w) for w in c])
        self.spatial_attn = SpatialAttention()
        self.apply(_init_decoder_)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        d = self.mscbs[0](cbam(x, self.channel_attn[0], self.spatial_attn))
        outs = [d]
        for up, gate, mscb, ca, skip in zip(self.ups, self.gates, self.mscbs[1:], self.channel_attn[1:], skips):
            d = up(d)
            d = mscb(cbam(d + gate(d, skip), ca, self.spatial_attn))
            outs.append(d)
        return outs


def _init_decoder_(module: nn.Module) -> None:
    """EMCAD's decoder initialization: convolutions normal(0, 0.02) with zero biases, unit batch norms."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class EMCADNet(PVTDecoderNet):
    """PVT v2 encoder + EMCAD decoder + four 1x1 heads; the 1/4 head, upsampled (bilinear), is the prediction.

    Example:
        >>> EMCADNet(3, 9)(torch.zeros(1, 3, 224, 224))[0].shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, encoder: dict[str, Any] = PVT_V2_B2,
                 msdc_kernels: Sequence[int] = (1, 3, 5), expansion: int = 2, lgag_kernel: int = 3,
                 drop_path_rate: float = 0.1, deep_supervision: bool = True) -> None:
        decoder = EMCADDecoder(list(encoder["embed_dims"])[::-1], msdc_kernels, expansion, lgag_kernel)
        super().__init__(in_channels, num_classes, encoder, decoder, drop_path_rate, deep_supervision)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = pad_to_multiple(x, PVT_DIVISOR)
        decoded = self.decoded_levels(x)
        full = F.interpolate(self.heads[-1](decoded[-1]), size=x.shape[2:], mode="bilinear")
        if not self.deep_supervision:
            return crop_to(full, size)
        coarse = [head(d) for head, d in zip(self.heads[-2::-1], decoded[-2::-1])]  # 1/8, 1/16, 1/32
        return deep_supervision_outputs(coarse, full, size, [8, 16, 32])


@register_model(family="hybrid", spatial_dims=(2,), deep_supervision=True,
                defaults=lambda d: {**PVT_V2_B2, "msdc_kernels": [1, 3, 5], "expansion": 2, "lgag_kernel": 3,
                                    "drop_path_rate": 0.1},
                paper="Rahman et al., EMCAD: Efficient Multi-scale Convolutional Attention Decoding for Medical Image "
                      "Segmentation, CVPR 2024, arXiv:2405.06880 (Fig. 2-3; Table 1: PVT-EMCAD-B2 26.76M parameters, "
                      "5.60 GFLOPs at 224x224)",
                tiny_kwargs={**PVT_TINY, "drop_path_rate": 0.0},
                extra={"tags": ["hybrid", "transformer", "attention", "multiscale", "pretrainable-encoder"],
                       "paper_params": 26.76e6, "paper_gflops": 5.60, "paper_patch": [224, 224],
                       "paper_setup": "2D, 1 in (through the 1x1 adapter to 3), 9 classes (Synapse), 224x224, "
                                      "PVT v2-B2, kernels 1,3,5, expansion 2, LGAG 3x3",
                       "divisible_by": PVT_DIVISOR, "pads_input": True, "output_stride": 4,
                       "kwargs_note": PLAN_NOTE + _PVT_NOTE + "; PVT v2-B0 (PVT-EMCAD-B0) is embed_dims 32,64,160,256 "
                                                            "with depths 2,2,2,2"})
def emcad(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
          embed_dims: Sequence[int] = PVT_V2_B2["embed_dims"], depths: Sequence[int] = PVT_V2_B2["depths"],
          num_heads: Sequence[int] = PVT_V2_B2["num_heads"], sr_ratios: Sequence[int] = PVT_V2_B2["sr_ratios"],
          mlp_ratios: Sequence[float] = PVT_V2_B2["mlp_ratios"], msdc_kernels: Sequence[int] = (1, 3, 5),
          expansion: int = 2, lgag_kernel: int = 3, drop_path_rate: float = 0.1, n_stages: Any = None,
          features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> EMCADNet:
    """PVT-EMCAD: PVT v2-B2 encoder, efficient multi-scale convolutional attention decoder (2D, deep supervision)."""
    encoder = _encoder_kwargs(embed_dims, depths, num_heads, sr_ratios, mlp_ratios)
    return EMCADNet(in_channels, num_classes, encoder, tuple(msdc_kernels), expansion, lgag_kernel, drop_path_rate,
                    deep_supervision)


# ============================================================================================ FCBFormer
class ResidualBlock(nn.Module):
    """FCBFormer's RB: [GroupNorm(32) -> SiLU -> 3x3 conv] twice, plus the input (1x1 conv where widths differ)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(32, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
                                  nn.GroupNorm(32, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class FullyConvolutionalBranch(nn.Module):
    """FCB (FCBFormer Fig. 3): 3x3 input conv; per level ``blocks`` residual blocks and a strided 3x3 conv
    (not after the last level); two middle blocks; per level ``blocks + 1`` decoder blocks, each on the
    concatenation with the matching encoder output (last in, first out), and nearest x2 + 3x3 conv after
    each level but the last. Full resolution in and out."""

    def __init__(self, in_channels: int, channels: int, mults: Sequence[int], blocks: int) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([nn.Conv2d(in_channels, channels, 3, padding=1)])
        skips, ch = [channels], channels
        for level, mult in enumerate(mults):
            for _ in range(blocks):
                self.encoder.append(ResidualBlock(ch, mult * channels))
                ch = mult * channels
                skips.append(ch)
            if level < len(mults) - 1:
                self.encoder.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.middle = nn.Sequential(ResidualBlock(ch, ch), ResidualBlock(ch, ch))
        self.decoder = nn.ModuleList()
        for level, mult in enumerate(reversed(mults)):
            for block in range(blocks + 1):
                layers: list[nn.Module] = [ResidualBlock(ch + skips.pop(), mult * channels)]
                ch = mult * channels
                if level < len(mults) - 1 and block == blocks:
                    layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)]
                self.decoder.append(nn.Sequential(*layers))
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        x = self.middle(x)
        for layer in self.decoder:
            x = layer(torch.cat((x, skips.pop()), dim=1))
        return x


class TransformerBranch(nn.Module):
    """FCBFormer's TB: PVT v2 pyramid; local emphasis (two residual blocks to ``width``, nearest resize to
    1/4) per level; stepwise feature aggregation from the deepest level up (concatenation, two residual blocks)."""

    def __init__(self, in_channels: int, encoder: dict[str, Any], width: int, drop_path_rate: float) -> None:
        super().__init__()
        self.backbone = PVTBackbone(in_channels, encoder, drop_path_rate)
        self.emphasis = nn.ModuleList([nn.Sequential(ResidualBlock(c, width), ResidualBlock(width, width))
                                       for c in encoder["embed_dims"]])
        self.aggregate = nn.ModuleList([nn.Sequential(ResidualBlock(2 * width, width), ResidualBlock(width, width))
                                        for _ in range(len(encoder["embed_dims"]) - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quarter = [s // 4 for s in x.shape[2:]]
        levels = [F.interpolate(le(f), size=quarter, mode="nearest") for le, f in zip(self.emphasis, self.backbone(x))]
        y = levels[-1]
        for i in range(len(levels) - 2, -1, -1):
            y = self.aggregate[i](torch.cat((levels[i], y), dim=1))
        return y


class FCBFormer(nn.Module):
    """Transformer branch (1/4, upsampled nearest to the input size) and fully convolutional branch, fused by
    the prediction head.

    Example:
        >>> FCBFormer(3, 2)(torch.zeros(1, 3, 352, 352)).shape
        torch.Size([1, 2, 352, 352])
    """

    def __init__(self, in_channels: int, num_classes: int, encoder: dict[str, Any] = PVT_V2_B3, width: int = 64,
                 fcb_channels: int = 32, fcb_mults: Sequence[int] = (1, 1, 2, 2, 4, 4), fcb_blocks: int = 2,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.divisible_by = max(PVT_DIVISOR, 2 ** (len(fcb_mults) - 1))
        self.tb = TransformerBranch(in_channels, encoder, width, drop_path_rate)
        self.fcb = FullyConvolutionalBranch(in_channels, fcb_channels, fcb_mults, fcb_blocks)
        self.head = nn.Sequential(ResidualBlock(width + self.fcb.out_channels, width), ResidualBlock(width, width),
                                  nn.Conv2d(width, num_classes, 1))
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        tb = F.interpolate(self.tb(x), size=x.shape[2:], mode="nearest")
        return crop_to(self.head(torch.cat((tb, self.fcb(x)), dim=1)), size)


@register_model(family="hybrid", spatial_dims=(2,), deep_supervision=False,
                defaults=lambda d: {**PVT_V2_B3, "width": 64, "fcb_channels": 32, "fcb_mults": [1, 1, 2, 2, 4, 4],
                                    "fcb_blocks": 2, "drop_path_rate": 0.0},
                paper="Sanderson & Matuszewski, FCN-Transformer Feature Fusion for Polyp Segmentation, MIUA 2022, "
                      "arXiv:2208.08352 (Fig. 1-3; PVT v2-B3 transformer branch; no parameter count printed)",
                tiny_kwargs={"embed_dims": [32, 32, 64, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2],
                             "sr_ratios": [4, 2, 2, 1], "mlp_ratios": [2, 2, 2, 2], "width": 32, "fcb_channels": 32,
                             "fcb_mults": [1, 1, 1], "fcb_blocks": 1},
                extra={"tags": ["hybrid", "transformer", "cnn", "residual", "pretrainable-encoder"], "paper_params": None,
                       "paper_setup": "the paper prints no count; ours for the reference layout (3 in, 1 class, "
                                      "352x352, PVT v2-B3, FCB 32 x (1,1,2,2,4,4)): 52,962,337, pinned as a snapshot",
                       "divisible_by": PVT_DIVISOR, "pads_input": True, "kwargs_note": PLAN_NOTE + _PVT_NOTE})
def fcbformer(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              embed_dims: Sequence[int] = PVT_V2_B3["embed_dims"], depths: Sequence[int] = PVT_V2_B3["depths"],
              num_heads: Sequence[int] = PVT_V2_B3["num_heads"], sr_ratios: Sequence[int] = PVT_V2_B3["sr_ratios"],
              mlp_ratios: Sequence[float] = PVT_V2_B3["mlp_ratios"], width: int = 64, fcb_channels: int = 32,
              fcb_mults: Sequence[int] = (1, 1, 2, 2, 4, 4), fcb_blocks: int = 2, drop_path_rate: float = 0.0,
              n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
              strides: Any = None) -> FCBFormer:
    """FCBFormer: PVT v2-B3 transformer branch + fully convolutional branch, fused at full resolution (2D)."""
    encoder = _encoder_kwargs(embed_dims, depths, num_heads, sr_ratios, mlp_ratios)
    return FCBFormer(in_channels, num_classes, encoder, width, fcb_channels, tuple(fcb_mults), fcb_blocks,
                     drop_path_rate)
