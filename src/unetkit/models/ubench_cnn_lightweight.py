"""Lightweight U-Bench CNNs: MALUNet, LV-UNet, LFU-Net (family ``ubench_cnn``).

- ``malunet``: Ruan, Xiang, Xie, Liu, Fu, "MALUNet: A Multi-Attention and Light-weight UNet for Skin
  Lesion Segmentation", IEEE BIBM 2022 (arXiv:2211.01784), Fig. 1-2, Table 1 (0.177M parameters,
  0.083 GFLOPs at 256x256, 3 in, 1 class; the abstract's 44x and 166x fewer than U-Net agree): EGE-UNet's predecessor by the same group, with the same
  skeleton (three 3x3 conv stages, then attention stages; GroupNorm(4), max pool /2 and GELU per
  level; bilinear x2 decoder with additive skips; head upsampled x2). Its attention stages are an
  external-attention block (EA: 1x1 conv, linear to 4C memory units, double normalization, linear
  back, 1x1 conv + GroupNorm, residual, GELU) and a dilated gated attention block (DGA: four channel
  groups through depthwise 3x3 convs of dilation 7, 5, 2, 1, GroupNorm, 1x1 conv, GELU, then a gated
  attention unit of depthwise-separable convs). The skips pass a spatial-then-channel attention bridge
  (SAB: one shared dilated 7x7 conv on channel mean and max; CAB: a 1D conv across the pooled
  channels of all levels and one linear layer per level). Reference code: github.com/JCruan519/MALUNet
  ``models/malunet.py`` (U-Bench ``models/CNN/MALUNet``).

- ``lvunet``: Jiang, Wang, Tian, Cheng, Liu, "LV-UNet: A Lightweight and Vanilla Model for Medical
  Image Segmentation", IEEE BIBM 2024 (arXiv:2408.16886), Fig. 1: the first ten feature layers of a
  MobileNetV3-Large (Howard et al., ICCV 2019; stem and inverted residuals 1-9, skips at 1/4, 1/8,
  1/16) then three "vanilla" stages (VanillaNet, Chen et al. 2023: 1x1 conv + BN, nonlinearity, 1x1
  conv + BN, max pool /2, a series-informed activation = ReLU then depthwise 3x3 conv + BN; widths
  160, 240, 480) down to 1/128, and a mirrored decoder of the same blocks with bilinear x2 and
  additive skips (widths 240, 160, 80, then 40, 24, 16, 16), 1x1 head. Official code:
  github.com/juntaoJianggavin/LV-UNet (U-Bench ``models/CNN/LV_UNet``). The paper's deep-training
  schedule raises the slope of the nonlinearity between the two 1x1 convs from 0 (ReLU) to 1
  (identity) over training, so that inference can fuse them (:meth:`LVUNet.set_nonlinearity_slope`);
  unetkit's trainer leaves it at 0, as U-Bench trains it. The fused deploy mode is not implemented.
  The paper's parameter table could not be read through our tools (its figures are also for the
  fused deploy mode); the count we give is that of the training-mode network of the official code,
  934,545 at 3 in, 1 class (torchvision's MobileNetV3-Large layers 0-9, as U-Bench builds it).
- ``lfunet``: LFU-Net as U-Bench ships it (``models/CNN/LFU_Net``; we found no paper text to read):
  a UNet++-like grid of nodes x(i, j) over 5 levels with full-scale skips. Encoder nodes x(i, 0) are
  two 3x3 conv-BN-ReLU of width 8 * 2**i (grouped, 8 groups, except the very first conv), max pool
  between levels; every nested node x(i, j) (i + j <= 4) is two grouped 3x3 conv-BN-ReLU of width 8
  on the concatenation of: the finer encoder nodes max-pooled to its level, its own level's encoder
  node and earlier nested nodes, the coarser encoder node x(i+j, 0) and the nested nodes
  x(i+m, j-m) bilinearly upsampled; each input first projected to 8 channels by a grouped 3x3 conv
  (one projection per source level for encoder nodes, two shared ones for nested nodes, as in the
  reference). A shared 1x1 head on x(0, 1) .. x(0, 4), averaged.

Differences: the reference initializes EA's second linear layer as a view of the first one's
weights (they share storage, so the optimizer updates both through one tensor); ours starts it as a
copy of their transpose and trains it on its own (same count). Logits, no sigmoid. 2D only, no deep
supervision (the paper has none). Reference code was read through the code search; all code here is
our own. LV-UNet's MobileNet is written here (no torchvision) and starts untrained (the paper
starts from ImageNet weights); its input is zero-padded to a multiple of 128 and the logits cropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.lightweight import _check_divisible, _egeunet_init, _egeunet_widths, _up2
from unetkit.models.registry import register_model

_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


# ============================================================================================ MALUNet
class SeparableConv(nn.Sequential):
    """Depthwise k x k conv, GroupNorm(4), 1x1 conv (MALUNet's ``DepthWiseConv2d``)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin), nn.GroupNorm(4, cin),
                         nn.Conv2d(cin, cout, 1))


class GatedAttentionUnit(nn.Module):
    """``wo(sigmoid(sep_k(x)) * gelu(sep_k+2(x))) + conv1x1(x)``, ``wo`` a separable conv + GELU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.gate = SeparableConv(cin, cin, kernel)
        self.value = SeparableConv(cin, cin, kernel + 2)
        self.out = SeparableConv(cin, cout, kernel)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.gate(x)) * F.gelu(self.value(x))
        return F.gelu(self.out(y)) + self.shortcut(x)


class DilatedGatedAttention(nn.Module):
    """MALUNet's DGA: four channel groups through depthwise 3x3 convs of dilation 7, 5, 2, 1,
    concatenated, GroupNorm(4), 1x1 conv, GELU; then a gated attention unit to ``cout``."""

    def __init__(self, cin: int, cout: int, dilations: Sequence[int] = (7, 5, 2, 1)) -> None:
        super().__init__()
        g = cin // 4
        self.branches = nn.ModuleList(nn.Conv2d(g, g, 3, padding=d, dilation=d, groups=g) for d in dilations)
        self.norm = nn.GroupNorm(4, cin)
        self.mix = nn.Conv2d(cin, cin, 1)
        self.gau = GatedAttentionUnit(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.chunk(x, len(self.branches), dim=1)
        y = torch.cat([branch(p) for branch, p in zip(self.branches, parts)], dim=1)
        return self.gau(F.gelu(self.mix(self.norm(y))))


class ExternalAttention(nn.Module):
    """External attention (Guo et al. 2021) as MALUNet uses it: 1x1 conv; the pixels attend to 4C
    learned memory units (softmax over pixels, then normalized over units), read back through a second
    linear layer; 1x1 conv (no bias), GroupNorm(4), plus the input, GELU."""

    def __init__(self, channels: int, memory_ratio: int = 4) -> None:
        super().__init__()
        k = memory_ratio * channels
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.to_memory = nn.Conv1d(channels, k, 1, bias=False)
        self.from_memory = nn.Conv1d(k, channels, 1, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(4, channels)

    def init_memory_(self) -> None:
        """Start the read-back weights as the transpose of the memory keys (the reference's init)."""
        with torch.no_grad():
            self.from_memory.weight.copy_(self.to_memory.weight.permute(1, 0, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        attn = F.softmax(self.to_memory(self.conv_in(x).flatten(2)), dim=-1)  # (B, k, N), over pixels
        attn = attn / (1e-9 + attn.sum(dim=1, keepdim=True))  # then over the memory units
        y = self.from_memory(attn).view(b, c, *x.shape[2:])
        return F.gelu(self.norm(self.conv_out(y)) + x)


class SpatialChannelBridge(nn.Module):
    """MALUNet's SC_Att_Bridge over the skips: spatial attention (channel mean and max -> one shared
    dilated 7x7 conv -> sigmoid), residual; then channel attention (global average of every level,
    concatenated, a 1D conv across channels, one linear layer per level -> sigmoid), plus the
    spatially attended features."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(2, 1, 7, padding=9, dilation=3)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.per_level = nn.ModuleList(nn.Linear(sum(widths), w) for w in widths)

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        spatial = []
        for t in skips:
            stats = torch.cat([t.mean(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)], dim=1)
            spatial.append(torch.sigmoid(self.spatial(stats)) * t)
        mixed = [s + t for s, t in zip(spatial, skips)]
        pooled = torch.cat([m.mean(dim=(2, 3)) for m in mixed], dim=1)[:, None]  # (B, 1, sum C)
        pooled = self.mix(pooled)
        out = []
        for fc, m, s in zip(self.per_level, mixed, spatial):
            out.append(torch.sigmoid(fc(pooled))[:, 0, :, None, None] * m + s)
        return out


class MALUNet(nn.Module):
    """MALUNet: ``n_conv`` 3x3 conv stages, then EA + DGA stages; GroupNorm(4), max pool, GELU per
    level (the deepest without pooling); the skips pass the spatial-channel bridge; the decoder mirrors
    the encoder (DGA + EA, then 3x3 convs) with bilinear x2 and additive skips; 1x1 head, bilinear x2.
    Published: c_list 8, 16, 24, 32, 48, 64, three conv stages, bridge on."""

    def __init__(self, in_channels: int, num_classes: int, c_list: Sequence[int], n_conv: int = 3,
                 bridge: bool = True) -> None:
        super().__init__()
        c = _egeunet_widths(c_list, n_conv)
        n = len(c)
        self.divisor = 2 ** (n - 1)
        self.encoder = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else c[i - 1], c[i], 3, 1, 1) if i < n_conv else
            nn.Sequential(ExternalAttention(c[i - 1]), DilatedGatedAttention(c[i - 1], c[i])) for i in range(n))
        self.enc_norm = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in range(n - 1))
        self.bridge = SpatialChannelBridge(c[:-1]) if bridge else None
        # decoder step j maps level i + 1 to level i, i = n-2 .. 0
        self.decoder = nn.ModuleList(
            nn.Conv2d(c[i + 1], c[i], 3, 1, 1) if i + 1 < n_conv else
            nn.Sequential(DilatedGatedAttention(c[i + 1], c[i]), ExternalAttention(c[i])) for i in range(n - 2, -1, -1))
        self.dec_norm = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in range(n - 2, -1, -1))
        self.head = nn.Conv2d(c[0], num_classes, 1)
        self.deep_supervision = False
        self.apply(_egeunet_init)  # the same initialization as EGE-UNet (same authors, same code base)
        for m in self.modules():
            if isinstance(m, ExternalAttention):
                m.init_memory_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.divisor, "MALUNet")
        skips = []
        for norm, enc in zip(self.enc_norm, self.encoder):
            x = F.gelu(F.max_pool2d(norm(enc(x)), 2))
            skips.append(x)
        if self.bridge is not None:
            skips = self.bridge(skips)
        x = F.gelu(self.encoder[-1](x))
        for j, (dec, norm) in enumerate(zip(self.decoder, self.dec_norm)):
            y = norm(dec(x))
            x = F.gelu(y if j == 0 else _up2(y, "bilinear")) + skips.pop()
        return _up2(self.head(x), "bilinear")


MALUNET_C_LIST = (8, 16, 24, 32, 48, 64)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Ruan et al., MALUNet: A Multi-Attention and Light-weight UNet for Skin Lesion Segmentation, "
                      "IEEE BIBM 2022, arXiv:2211.01784 (Fig. 1-2; Table 1: 0.177M parameters, 0.083 GFLOPs)",
                defaults=lambda d: {"c_list": list(MALUNET_C_LIST), "n_conv": 3, "bridge": True},
                tiny_kwargs={"c_list": [8, 8, 8, 8], "n_conv": 2},
                extra={"tags": ["cnn", "attention", "lightweight"], "paper_params": 0.177e6, "paper_gflops": 0.083,
                       "paper_patch": [256, 256],
                       "paper_setup": "3 in, 1 class (ISIC 2017/2018), 256x256, c_list 8,16,24,32,48,64, bridge on",
                       "divisible_by": 32, "output_stride": 2, "kwargs_note": _PLAN_NOTE})
def malunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
            c_list: Sequence[int] = MALUNET_C_LIST, n_conv: int = 3, bridge: bool = True, n_stages: Any = None,
            features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> MALUNet:
    """MALUNet: external and dilated gated attention stages, spatial-channel attention bridge, 2D."""
    return MALUNet(in_channels, num_classes, c_list, n_conv, bridge)


# ============================================================================================ LV-UNet
def _make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet's channel rounding: to the nearest multiple of ``divisor``, never below 90 %."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


class MobileSqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-and-excitation: global average, 1x1 conv to C/4 (rounded to 8) + ReLU,
    1x1 conv back + hard sigmoid, scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = _make_divisible(channels // 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.fc2(s))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = None) -> nn.Sequential:
    """Conv (no bias) + BN (eps 1e-3, MobileNetV3's) + optional activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV3's bottleneck: 1x1 expansion (skipped when the width stays), depthwise k x k
    (stride), optional squeeze-and-excitation, linear 1x1 projection; residual at stride 1 and equal
    widths. ``hard_swish`` picks the activation (else ReLU)."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, hard_swish: bool,
                 stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hard_swish else nn.ReLU
        layers: list[nn.Module] = [] if expanded == cin else [_conv_bn(cin, expanded, 1, act=act)]
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        if use_se:
            layers.append(MobileSqueezeExcite(expanded))
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# MobileNetV3-Large inverted residuals 1-9 (Howard et al. 2019, Table 1): input width, kernel, expanded
# width, output width, squeeze-excite, hard swish, stride; grouped as LV-UNet's encoder stages
MOBILENETV3_LARGE_STAGES = (
    ((16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2)),
    ((24, 3, 72, 24, False, False, 1), (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1)),
    ((40, 5, 120, 40, True, False, 1), (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1),
     (80, 3, 184, 80, False, True, 1)),
)


class SeriesActivation(nn.Module):
    """VanillaNet's series-informed activation: ReLU, then a depthwise (2n+1)^2 conv (no bias) + BN."""

    def __init__(self, channels: int, act_num: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 2 * act_num + 1, padding=act_num, groups=channels, bias=False)
        nn.init.trunc_normal_(self.conv.weight, std=0.02)
        self.norm = nn.BatchNorm2d(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(F.relu(x)))


class VanillaBlock(nn.Module):
    """LV-UNet's ``Block`` / ``UpBlock``: 1x1 conv + BN, leaky ReLU of slope ``self.slope`` (0 = ReLU),
    1x1 conv + BN to ``cout``, then max pool /2 (``resample`` "down"), bilinear x2 ("up") or nothing,
    then the series-informed activation."""

    def __init__(self, cin: int, cout: int, resample: str, act_num: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, cin, 1), nn.BatchNorm2d(cin, eps=1e-6))
        self.conv2 = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout, eps=1e-6))
        self.act = SeriesActivation(cout, act_num)
        self.resample = resample
        self.slope = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(F.leaky_relu(self.conv1(x), self.slope))
        if self.resample == "down":
            x = F.max_pool2d(x, 2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.act(x)


class LVUNet(nn.Module):
    """LV-UNet: MobileNetV3-Large stem and stages (1/2 .. 1/16), vanilla stages down to 1/16 / 2**k,
    a vanilla decoder back up with additive skips, 1x1 head. Published: dims 80, 160, 240, 480,
    dims2 80, 40, 24, 16 (k = 3: 1/128)."""

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int], dims2: Sequence[int],
                 act_num: int = 1) -> None:
        super().__init__()
        dims, dims2 = [int(d) for d in dims], [int(d) for d in dims2]
        if len(dims) < 2 or dims[0] != 80 or len(dims2) != 4 or dims2[:3] != [80, 40, 24]:
            raise ValueError(f"LV-UNet needs dims starting at MobileNet's 80 channels and dims2 = [80, 40, 24, "
                             f"width] (MobileNet's skip widths), got dims={dims}, dims2={dims2}")
        self.stem = _conv_bn(in_channels, 16, 3, 2, act=nn.Hardswish)
        self.encoder = nn.ModuleList(nn.Sequential(*(InvertedResidual(*cfg) for cfg in stage))
                                     for stage in MOBILENETV3_LARGE_STAGES)
        self.down = nn.ModuleList(VanillaBlock(a, b, "down", act_num) for a, b in zip(dims, dims[1:]))
        self.up = nn.ModuleList(VanillaBlock(b, a, "up", act_num) for a, b in zip(dims[-2::-1], dims[:0:-1]))
        self.up_mobile = nn.ModuleList(VanillaBlock(a, b, "up", act_num) for a, b in zip(dims2, dims2[1:]))
        self.head = nn.Sequential(VanillaBlock(dims2[-1], dims2[-1], "up", act_num),
                                  nn.Conv2d(dims2[-1], num_classes, 1))
        self.divisible_by = 16 * 2 ** (len(dims) - 1)
        self.deep_supervision = False

    def set_nonlinearity_slope(self, slope: float) -> None:
        """The deep-training schedule's knob: the leaky-ReLU slope between each block's two 1x1 convs
        (0 = ReLU at the start of training, 1 = identity at the end, where the convs can be fused)."""
        for m in self.modules():
            if isinstance(m, VanillaBlock):
                m.slope = float(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        e1 = self.encoder[0](self.stem(x))  # 1/4, 24
        e2 = self.encoder[1](e1)  # 1/8, 40
        y = self.encoder[2](e2)  # 1/16, 80
        skips = []
        for block in self.down:
            skips.append(y)
            y = block(y)
        for block in self.up:
            y = block(y) + skips.pop()
        y = self.up_mobile[0](y) + e2
        y = self.up_mobile[1](y) + e1
        y = self.up_mobile[2](y)
        return crop_to(self.head(y), size)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Jiang et al., LV-UNet: A Lightweight and Vanilla Model for Medical Image Segmentation, "
                      "IEEE BIBM 2024, arXiv:2408.16886 (Fig. 1; count: official code's training-mode network)",
                defaults=lambda d: {"dims": [80, 160, 240, 480], "dims2": [80, 40, 24, 16], "act_num": 1},
                tiny_kwargs={"dims": [80, 16], "dims2": [80, 40, 24, 8]},
                extra={"tags": ["cnn", "lightweight", "pretrainable-encoder"], "paper_params": None,
                       "paper_setup": "no count read from the paper (its table gives the fused deploy mode); "
                                      "official code (juntaoJianggavin/LV-UNet, as U-Bench ships it) in training "
                                      "mode, 3 in, 1 class, dims 80,160,240,480, dims2 80,40,24,16: 934,545",
                       "divisible_by": 128, "pads_input": True, "output_stride": 4,
                       "kwargs_note": _PLAN_NOTE})
def lvunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           dims: Sequence[int] = (80, 160, 240, 480), dims2: Sequence[int] = (80, 40, 24, 16), act_num: int = 1,
           n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
           strides: Any = None) -> LVUNet:
    """LV-UNet: MobileNetV3-Large encoder, VanillaNet-style stages and decoder, 2D."""
    return LVUNet(in_channels, num_classes, dims, dims2, act_num)


# ============================================================================================ LFU-Net
def _grouped_conv_bn_relu(cin: int, cout: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, groups=groups), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _resample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Max pool by ``1/factor`` (factor < 1 given as its inverse, negative) or bilinear x``factor``."""
    if factor < 0:
        return F.max_pool2d(x, -factor)
    if factor > 1:
        return F.interpolate(x, scale_factor=float(factor), mode="bilinear", align_corners=True)
    return x


class LFUNet(nn.Module):
    """LFU-Net: nested full-scale grid of ``levels`` levels, base width ``width``, grouped convs."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8, groups: int = 8, levels: int = 5) -> None:
        super().__init__()
        if width % groups or levels < 4:  # with 3 levels one projection (zp[1]) would never be used
            raise ValueError(f"LFU-Net needs a width divisible by groups and at least 4 levels, got width={width}, "
                             f"groups={groups}, levels={levels}")
        n, g, self.levels = width, groups, levels
        widths = [n * 2 ** i for i in range(levels)]
        self.encoder = nn.ModuleList(
            nn.Sequential(*_grouped_conv_bn_relu(in_channels if i == 0 else widths[i - 1], widths[i], 1 if i == 0 else g),
                          *_grouped_conv_bn_relu(widths[i], widths[i], g)) for i in range(levels))
        self.nodes = nn.ModuleDict({
            f"{i}_{j}": nn.Sequential(*_grouped_conv_bn_relu((i + 2 * j) * n, n, g), *_grouped_conv_bn_relu(n, n, g))
            for i in range(levels) for j in range(1, levels - i)})
        # projections to n channels: p[i] for an encoder node at its own level (or one level coarser,
        # first nested column), zp[i] for an encoder node resampled further; p[0] and zp[0] double as
        # the shared projections of nested nodes (next to / further from the node), as the reference
        self.p = nn.ModuleList(nn.Conv2d(w, n, 3, padding=1, groups=g) for w in widths)
        self.zp = nn.ModuleList(nn.Conv2d(w, n, 3, padding=1, groups=g) for w in widths)
        self.head = nn.Conv2d(n, num_classes, 1)
        self.divisible_by = 2 ** (levels - 1)
        self.deep_supervision = False

    def _node_inputs(self, i: int, j: int, enc: list[torch.Tensor],
                     nested: dict[tuple[int, int], torch.Tensor]) -> list[torch.Tensor]:
        inputs = [self.zp[k](_resample(enc[k], -(2 ** (i - k)))) for k in range(i)]  # finer encoder nodes
        inputs.append(self.p[i](enc[i]))
        inputs += [self.zp[0](nested[i, m]) for m in range(1, j)]  # same-level nested nodes
        coarse = _resample(enc[i + j], 2 ** j)
        inputs.append(self.p[i + 1](coarse) if j == 1 else self.zp[i + j](coarse))
        for m in range(j - 1, 0, -1):  # nested nodes x(i+m, j-m), upsampled 2**m
            proj = self.p[0] if m == 1 else self.zp[0]
            inputs.append(proj(_resample(nested[i + m, j - m], 2 ** m)))
        return inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.divisible_by, "LFU-Net")
        enc: list[torch.Tensor] = []
        nested: dict[tuple[int, int], torch.Tensor] = {}
        for level in range(self.levels):  # a new encoder level completes one anti-diagonal of the grid
            enc.append(self.encoder[level](x if level == 0 else F.max_pool2d(enc[-1], 2)))
            for j in range(1, level + 1):
                i = level - j
                nested[i, j] = self.nodes[f"{i}_{j}"](torch.cat(self._node_inputs(i, j, enc, nested), dim=1))
        outs = [self.head(nested[0, j]) for j in range(1, self.levels)]
        return sum(outs) / len(outs)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="LFU-Net as implemented in U-Bench (Tan et al., U-Bench, 2025; models/CNN/LFU_Net); no paper "
                      "text was found to read, the layout and count are the code's",
                defaults=lambda d: {"width": 8, "groups": 8, "levels": 5},
                tiny_kwargs={"width": 8, "groups": 2, "levels": 4},
                extra={"tags": ["cnn", "nested", "lightweight"], "paper_params": None,
                       "paper_setup": "no paper text found; U-Bench's code (models/CNN/LFU_Net), 3 in, 1 class, "
                                      "width 8, 8 groups, 5 levels: 47,849 (also summed by hand, layer by layer)",
                       "divisible_by": 16, "kwargs_note": _PLAN_NOTE})
def lfunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           width: int = 8, groups: int = 8, levels: int = 5, n_stages: Any = None, features_per_stage: Any = None,
           kernel_sizes: Any = None, strides: Any = None) -> LFUNet:
    """LFU-Net: a light nested U-Net with full-scale skips and grouped convolutions, 2D."""
    return LFUNet(in_channels, num_classes, width, groups, levels)
