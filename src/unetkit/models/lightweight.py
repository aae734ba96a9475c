"""Lightweight U-Nets from their papers: UNeXt, CMUNeXt, EGE-UNet, RITnet (family ``lightweight``).

Each is a fixed design with a published width list; these builders take that list (and the number
of stages it implies) as keywords so that a smaller instance can be built for tests, and default to
the published configuration. The plan keywords ``n_stages``, ``features_per_stage``,
``kernel_sizes`` and ``strides`` are accepted (so ``unetkit train --arch NAME`` can pass a plan's
topology) and ignored: these designs fix their own widths and halve every axis at every stage; the
patch must be a multiple of ``model_info(name).extra["divisible_by"]``.

- ``unext``: Valanarasu & Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
  MICCAI 2022 (arXiv:2203.04967), Fig. 2, Table 1 (1.47M parameters, 0.57 GFLOPs at 256x256).
  Reference code: github.com/jeya-maria-jose/UNeXt-pytorch ``archs.py`` (class ``UNext``).
- ``cmunext``: Tang, Zhang, Wang, Wang, Fan, "CMUNeXt: An Efficient Medical Image Segmentation Network
  based on Large Kernel and Skip Fusion", ISBI 2024 (arXiv:2308.01239), Fig. 1, Table 1 (3.14M
  parameters, 7.41 GFLOPs at 256x256). Reference code: github.com/FengheTan9/CMUNeXt
  ``network/CMUNeXt.py``.
- ``egeunet``: Ruan, Li, Xiang, Xie, Gao, "EGE-UNet: an Efficient Group Enhanced UNet for skin lesion
  segmentation", MICCAI 2023 (arXiv:2307.08473), Fig. 1, Table 1 (0.053M parameters, 0.072 GFLOPs at
  256x256). Reference code: github.com/JCruan519/EGE-UNet ``models/egeunet.py``.
- ``ritnet``: Chaudhary, Kothari, Acharya, Dangi, Nair, Bailey, Kanan, Diaz, Pelz, "RITnet: Real-time
  Semantic Segmentation of the Eye for Gaze Tracking", ICCVW 2019 (arXiv:1910.00694), Fig. 2, Sec. 3
  (248,900 parameters, under 1 MB). Reference code: github.com/AayushKrChaudhary/RITnet ``densenet.py``.

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model


def batch_norm_class(spatial_dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2) if x.dim() == 4 else F.max_pool3d(x, 2)


def _up2(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    size = tuple(2 * s for s in x.shape[2:])
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=True)


def _check_divisible(x: torch.Tensor, divisor: int, name: str) -> None:
    if any(s % divisor for s in x.shape[2:]):
        raise ValueError(f"{name}: patch size {tuple(x.shape[2:])} must be a multiple of {divisor} per axis")


def _widths(name: str, values: Sequence[int], minimum: int, multiple: int = 1) -> list[int]:
    out = [int(v) for v in values]
    if len(out) < minimum or any(v < 1 or v % multiple for v in out):
        raise ValueError(f"{name} needs at least {minimum} widths, each a positive multiple of {multiple}, got {out}")
    return out


def _egeunet_widths(c_list: Sequence[int], n_conv: int) -> list[int]:
    """EGE-UNet-style widths (at least 3, multiples of 4 for GroupNorm(4)) with ``n_conv`` plain
    convolution stages before the attention stages (shared with MALUNet, same authors' code base)."""
    c = _widths("c_list", c_list, 3, 4)
    if not 1 <= n_conv < len(c):
        raise ValueError(f"n_conv must be between 1 and len(c_list) - 1 = {len(c) - 1}, got {n_conv}")
    return c


# ============================================================================================ UNeXt
class ShiftedMLP(nn.Module):
    """UNeXt's tokenized MLP (``shiftmlp``): shift channel groups along the height, fc1, depthwise 3x3
    conv, GELU, shift along the width, fc2. The shift splits the channels into 5 groups rolled by
    -2..2 pixels (zero padded: ``pad = 2``)."""

    def __init__(self, dim: int, hidden: int, shift_size: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.shift_size = shift_size
        self.pad = shift_size // 2

    def _shift(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """``x``: (B, C, H, W); channel group g is rolled by ``g - pad`` along ``axis`` (2 or 3),
        with zeros coming in (not wrapping around)."""
        h, w = x.shape[2:]
        p = self.pad
        xp = F.pad(x, (p, p, p, p))
        groups = torch.chunk(xp, self.shift_size, 1)
        xp = torch.cat([torch.roll(g, s, axis) for g, s in zip(groups, range(-p, p + 1))], 1)
        return xp[:, :, p:p + h, p:p + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self._shift(x, 2)
        x = self.fc1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.act(self.dwconv(x))
        x = self._shift(x, 3)
        return self.fc2(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ShiftedBlock(nn.Module):
    """``x + MLP(LayerNorm(x))`` on tokens (UNeXt's ``shiftedBlock``, mlp_ratio 1)."""

    def __init__(self, dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = ShiftedMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + self.mlp(y)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, *spatial) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class TokenStage(nn.Module):
    """Overlapping patch embedding (3x3 conv, stride 2, + LayerNorm), shifted-MLP blocks, LayerNorm."""

    def __init__(self, in_channels: int, dim: int, n_blocks: int = 1) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 3, 2, 1)
        self.embed_norm = ChannelLayerNorm(dim)
        self.blocks = nn.Sequential(*[ShiftedBlock(dim) for _ in range(n_blocks)])
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.embed_norm(self.embed(x))))


class UNeXt(nn.Module):
    """UNeXt: ``n_conv`` convolutional stages (conv 3x3, BN, max-pool, ReLU), then tokenized-MLP
    stages (patch embedding with stride 2); the decoder mirrors it (conv 3x3, BN, bilinear x2, ReLU,
    add the skip), with a shifted-MLP block after the first ``n_tokenized`` decoder stages, and a last
    conv + x2 + ReLU before the 1x1 head. Published: dims 16, 32, 128, 160, 256, 3 conv stages.
    """

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int], n_conv: int = 3) -> None:
        super().__init__()
        dims = _widths("dims", dims, 2)
        n = len(dims)
        if not 1 <= n_conv <= n:
            raise ValueError(f"n_conv must be between 1 and len(dims)={n}, got {n_conv}")
        self.n_conv, self.divisor = n_conv, 2 ** n
        self.enc_conv = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else dims[i - 1], dims[i], 3, 1, 1)
                                      for i in range(n_conv))
        self.enc_bn = nn.ModuleList(nn.BatchNorm2d(dims[i]) for i in range(n_conv))
        self.enc_tok = nn.ModuleList(TokenStage(dims[i - 1], dims[i]) for i in range(n_conv, n))
        n_tok = n - n_conv
        self.dec_conv = nn.ModuleList(nn.Conv2d(dims[i], dims[i - 1], 3, 1, 1) for i in range(n - 1, 0, -1))
        self.dec_bn = nn.ModuleList(nn.BatchNorm2d(dims[i - 1]) for i in range(n - 1, 0, -1))
        self.dec_tok = nn.ModuleList(nn.Sequential(ShiftedBlock(dims[i - 1]), ChannelLayerNorm(dims[i - 1]))
                                     for i in range(n - 1, n - 1 - n_tok, -1))
        self.last = nn.Conv2d(dims[0], dims[0], 3, 1, 1)
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.apply(_unext_init)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.divisor, "UNeXt")
        skips = []
        for conv, bn in zip(self.enc_conv, self.enc_bn):
            x = F.relu(F.max_pool2d(bn(conv(x)), 2))
            skips.append(x)
        for stage in self.enc_tok:
            x = stage(x)
            skips.append(x)
        skips.pop()
        for d, (conv, bn) in enumerate(zip(self.dec_conv, self.dec_bn)):
            x = F.relu(_up2(bn(conv(x)), "bilinear")) + skips.pop()
            if d < len(self.dec_tok):
                x = self.dec_tok[d](x)
        x = F.relu(_up2(self.last(x), "bilinear"))
        return self.head(x)


def _unext_init(m: nn.Module) -> None:
    """UNeXt's ``_init_weights``: truncated-normal(0.02) linear layers, LayerNorm 1/0, convolutions
    normal(0, sqrt(2 / fan_out)) with zero bias."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


UNEXT_DIMS = (16, 32, 128, 160, 256)
_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


@register_model(family="lightweight", spatial_dims=(2,), deep_supervision=False,
                paper="Valanarasu & Patel, UNeXt: MLP-based Rapid Medical Image Segmentation Network, MICCAI 2022, "
                      "arXiv:2203.04967 (Fig. 2; Table 1: 1.47M parameters, 0.57 GFLOPs at 256x256)",
                defaults=lambda d: {"dims": list(UNEXT_DIMS), "n_conv": 3},
                tiny_kwargs={"dims": [16, 16, 32], "n_conv": 2},
                extra={"tags": ["hybrid", "cnn", "mlp", "lightweight"],
                       "divisible_by": 32, "paper_params": 1.47e6, "paper_gflops": 0.57, "paper_patch": [256, 256],
                       "paper_setup": "3 input channels, 1 class (ISIC 2018), dims 16,32,128,160,256",
                       "kwargs_note": _PLAN_NOTE})
def unext(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
          dims: Sequence[int] | None = None, n_conv: int | None = None, n_stages: Any = None,
          features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> UNeXt:
    """UNeXt: convolutional stages, then tokenized shifted-MLP stages (2D, no deep supervision)."""
    return UNeXt(in_channels, num_classes, dims or UNEXT_DIMS, 3 if n_conv is None else n_conv)


# ============================================================================================ CMUNeXt
class ConvBlock(nn.Sequential):
    """3x3 conv with bias -> BN -> ReLU (CMUNeXt's ``conv_block``: the stem and each stage's width change)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        super().__init__(conv(cin, cout, 3, 1, 1), bn(cout), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class CMUNeXtBlock(nn.Sequential):
    """``depth`` x [residual(depthwise k conv, GELU, BN), 1x1 to 4C, GELU, BN, 1x1 to C, GELU, BN], then a
    ConvBlock to the stage's width."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, depth: int, kernel: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [_Residual(nn.Sequential(conv(cin, cin, kernel, 1, kernel // 2, groups=cin), nn.GELU(), bn(cin))),
                       conv(cin, 4 * cin, 1), nn.GELU(), bn(4 * cin), conv(4 * cin, cin, 1), nn.GELU(), bn(cin)]
        super().__init__(*layers, ConvBlock(spatial_dims, cin, cout))


class SkipFusion(nn.Sequential):
    """CMUNeXt's ``fusion_conv``: 3x3 conv with 2 groups, GELU, BN, 1x1 to 4*out, GELU, BN, 1x1 to out, GELU, BN."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        super().__init__(conv(cin, cin, 3, 1, 1, groups=2), nn.GELU(), bn(cin),
                         conv(cin, 4 * cout, 1), nn.GELU(), bn(4 * cout),
                         conv(4 * cout, cout, 1), nn.GELU(), bn(cout))


class UpConv(nn.Sequential):
    """Bilinear (trilinear in 3D) x2, 3x3 conv with bias, BN, ReLU (CMUNeXt's ``up_conv``)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        super().__init__(nn.Upsample(scale_factor=2, mode=mode), conv(cin, cout, 3, 1, 1), bn(cout),
                         nn.ReLU(inplace=True))


class CMUNeXt(nn.Module):
    """CMUNeXt: ConvBlock stem, CMUNeXt blocks with large depthwise kernels (max-pool between stages),
    a decoder of up-convolutions and skip-fusion blocks (concatenate skip and upsampled), a 1x1 head.
    Published: dims 16, 32, 128, 160, 256, depths 1, 1, 1, 3, 1, kernels 3, 3, 7, 7, 7."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, dims: Sequence[int],
                 depths: Sequence[int], kernels: Sequence[int]) -> None:
        super().__init__()
        dims = _widths("dims", dims, 2, 2)
        n = len(dims)
        if len(depths) != n or len(kernels) != n:
            raise ValueError(f"dims, depths and kernels need the same length, got {dims}, {list(depths)}, {list(kernels)}")
        self.divisor = 2 ** (n - 1)
        self.stem = ConvBlock(spatial_dims, in_channels, dims[0])
        self.encoder = nn.ModuleList(CMUNeXtBlock(spatial_dims, dims[max(i - 1, 0)], dims[i], depths[i], kernels[i])
                                     for i in range(n))
        self.up = nn.ModuleList(UpConv(spatial_dims, dims[i], dims[i - 1]) for i in range(n - 1, 0, -1))
        self.fuse = nn.ModuleList(SkipFusion(spatial_dims, 2 * dims[i - 1], dims[i - 1]) for i in range(n - 1, 0, -1))
        self.head = conv_class(spatial_dims)(dims[0], num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.divisor, "CMUNeXt")
        x = self.stem(x)
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else _max_pool(x))
            skips.append(x)
        skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat((skips.pop(), up(x)), dim=1))
        return self.head(x)


CMUNEXT_DEFAULTS = {"dims": [16, 32, 128, 160, 256], "depths": [1, 1, 1, 3, 1], "kernels": [3, 3, 7, 7, 7]}


@register_model(family="lightweight", spatial_dims=(2, 3), deep_supervision=False,
                paper="Tang et al., CMUNeXt: An Efficient Medical Image Segmentation Network based on Large Kernel "
                      "and Skip Fusion, ISBI 2024, arXiv:2308.01239 (Fig. 1; Table 1: 3.14M parameters, "
                      "7.41 GFLOPs at 256x256)",
                defaults=lambda d: {k: list(v) for k, v in CMUNEXT_DEFAULTS.items()},
                tiny_kwargs={"dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1], "kernels": [3, 3, 5, 5]},
                extra={"tags": ["cnn", "lightweight"],
                       "divisible_by": 16, "paper_params": 3.14e6, "paper_gflops": 7.41, "paper_patch": [256, 256],
                       "paper_setup": "2D, 3 input channels, 1 class (BUSI/ISIC), dims 16,32,128,160,256",
                       "kwargs_note": _PLAN_NOTE + "; the 3D version is the same layers with 3D convolutions"})
def cmunext(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
            dims: Sequence[int] | None = None, depths: Sequence[int] | None = None,
            kernels: Sequence[int] | None = None, n_stages: Any = None, features_per_stage: Any = None,
            kernel_sizes: Any = None, strides: Any = None) -> CMUNeXt:
    """CMUNeXt: large-kernel depthwise ConvMixer encoder, skip-fusion decoder (no deep supervision)."""
    return CMUNeXt(spatial_dims, in_channels, num_classes, dims or CMUNEXT_DEFAULTS["dims"],
                   depths or CMUNEXT_DEFAULTS["depths"], kernels or CMUNEXT_DEFAULTS["kernels"])


# ============================================================================================ EGE-UNet
class GHPA(nn.Module):
    """Group multi-axis Hadamard Product Attention (EGE-UNet Fig. 2a): LayerNorm, split the channels in 4
    groups; three are multiplied by a learnable map on the (H, W), (C, W) and (C, H) planes (each
    resized bilinearly to the input and passed through depthwise conv, GELU, 1x1 conv), the fourth goes
    through 1x1 conv, GELU, depthwise 3x3; concatenate, LayerNorm, depthwise 3x3, GELU, 1x1 to
    ``dim_out``."""

    def __init__(self, dim_in: int, dim_out: int, x: int = 8, y: int = 8) -> None:
        super().__init__()
        c = dim_in // 4
        self.params_xy = nn.Parameter(torch.ones(1, c, x, y))
        self.conv_xy = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, groups=c), nn.GELU(), nn.Conv2d(c, c, 1))
        self.params_zx = nn.Parameter(torch.ones(1, 1, c, x))
        self.conv_zx = nn.Sequential(nn.Conv1d(c, c, 3, 1, 1, groups=c), nn.GELU(), nn.Conv1d(c, c, 1))
        self.params_zy = nn.Parameter(torch.ones(1, 1, c, y))
        self.conv_zy = nn.Sequential(nn.Conv1d(c, c, 3, 1, 1, groups=c), nn.GELU(), nn.Conv1d(c, c, 1))
        self.dw = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.Conv2d(c, c, 3, 1, 1, groups=c))
        self.norm1 = ChannelLayerNorm(dim_in, eps=1e-6)
        self.norm2 = ChannelLayerNorm(dim_in, eps=1e-6)
        self.ldw = nn.Sequential(nn.Conv2d(dim_in, dim_in, 3, 1, 1, groups=dim_in), nn.GELU(), nn.Conv2d(dim_in, dim_out, 1))

    @staticmethod
    def _axis_map(params: torch.Tensor, size: tuple[int, int], conv: nn.Module) -> torch.Tensor:
        """A learnable (1, 1, C, L) map resized to (C, size[1]) and filtered along L: (C, L')."""
        p = F.interpolate(params, size=size, mode="bilinear", align_corners=True)[0]  # (1, C, L')
        return conv(p)[0]  # (C, L')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x1, x2, x3, x4 = torch.chunk(x, 4, dim=1)
        c, h, w = x1.shape[1:]
        x1 = x1 * self.conv_xy(F.interpolate(self.params_xy, size=(h, w), mode="bilinear", align_corners=True))
        x2 = x2 * self._axis_map(self.params_zx, (c, h), self.conv_zx)[None, :, :, None]  # the (C, H) plane
        x3 = x3 * self._axis_map(self.params_zy, (c, w), self.conv_zy)[None, :, None, :]  # the (C, W) plane
        x4 = self.dw(x4)
        return self.ldw(self.norm2(torch.cat([x1, x2, x3, x4], dim=1)))


class GAB(nn.Module):
    """Group Aggregation Bridge (EGE-UNet Fig. 2b): the deeper feature (1x1 conv to the skip's width,
    resized), the skip and the decoder's mask prediction, split in 4 groups, each group [deep, skip,
    mask] through LayerNorm and a dilated depthwise 3x3 conv (dilations 1, 2, 5, 7); concatenate,
    LayerNorm, 1x1 conv."""

    def __init__(self, dim_xh: int, dim_xl: int, mask_channels: int = 1, dilations: Sequence[int] = (1, 2, 5, 7)) -> None:
        super().__init__()
        self.pre_project = nn.Conv2d(dim_xh, dim_xl, 1)
        g = dim_xl // 4 * 2 + mask_channels
        self.groups = nn.ModuleList(nn.Sequential(ChannelLayerNorm(g), nn.Conv2d(g, g, 3, 1, d, dilation=d, groups=g))
                                    for d in dilations)
        self.tail = nn.Sequential(ChannelLayerNorm(4 * g), nn.Conv2d(4 * g, dim_xl, 1))

    def forward(self, xh: torch.Tensor, xl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        xh = self.pre_project(xh)
        if xh.shape[2:] != xl.shape[2:]:
            xh = F.interpolate(xh, size=xl.shape[2:], mode="bilinear", align_corners=True)
        hs, ls = torch.chunk(xh, 4, dim=1), torch.chunk(xl, 4, dim=1)
        out = [g(torch.cat((a, b, mask), dim=1)) for g, a, b in zip(self.groups, hs, ls)]
        return self.tail(torch.cat(out, dim=1))


class EGEUNet(nn.Module):
    """EGE-UNet: encoder of 3 conv stages then GHPA stages (GroupNorm(4), max-pool, GELU; the deepest
    without pooling), decoder mirroring it with bilinear x2, GAB bridges on the skips fed by a per-level
    prediction (deep supervision), and a 1x1 head upsampled x2. Published c_list 8, 16, 24, 32, 48, 64.

    Deep-supervision outputs are logits with ``num_classes`` channels at each decoder level (the paper
    uses one sigmoid channel, upsampled to full size); the GAB mask input has ``num_classes`` channels.
    """

    def __init__(self, in_channels: int, num_classes: int, c_list: Sequence[int], n_conv: int = 3,
                 deep_supervision: bool = True) -> None:
        super().__init__()
        c = _egeunet_widths(c_list, n_conv)
        n = len(c)
        self.divisor = 2 ** (n - 1)

        def unit(cin: int, cout: int, level: int) -> nn.Module:  # level: the encoder level of cin's side
            return nn.Conv2d(cin, cout, 3, 1, 1) if level < n_conv else GHPA(cin, cout)

        self.encoder = nn.ModuleList(unit(in_channels if i == 0 else c[i - 1], c[i], i) for i in range(n))
        self.enc_norm = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in range(n - 1))
        # decoder step j maps level n-1-j to n-2-j (the width of encoder level n-2-j)
        self.decoder = nn.ModuleList(unit(c[i + 1], c[i], i + 1) for i in range(n - 2, -1, -1))
        self.dec_norm = nn.ModuleList(nn.GroupNorm(4, c[i]) for i in range(n - 2, -1, -1))
        self.gt_conv = nn.ModuleList(nn.Conv2d(c[i], num_classes, 1) for i in range(n - 2, -1, -1))
        self.bridges = nn.ModuleList(GAB(c[i + 1], c[i], num_classes) for i in range(n - 2, -1, -1))
        self.head = nn.Conv2d(c[0], num_classes, 1)
        self.deep_supervision = deep_supervision
        self.apply(_egeunet_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        _check_divisible(x, self.divisor, "EGE-UNet")
        skips = []
        for i, enc in enumerate(self.encoder):
            if i < len(self.enc_norm):
                x = F.gelu(F.max_pool2d(self.enc_norm[i](enc(x)), 2))
            else:
                x = F.gelu(enc(x))
            skips.append(x)
        deeper = skips.pop()
        preds = []
        for j, (dec, norm, gt, bridge) in enumerate(zip(self.decoder, self.dec_norm, self.gt_conv, self.bridges)):
            x = norm(dec(x))
            x = F.gelu(x if j == 0 else _up2(x, "bilinear"))
            pred = gt(x)
            skip = skips.pop()
            fused = bridge(deeper, skip, pred)
            x = x + fused
            deeper = fused
            preds.append(pred)
        out = _up2(self.head(x), "bilinear")
        if not self.deep_supervision:
            return out
        return [out] + preds[::-1]


def _egeunet_init(m: nn.Module) -> None:
    """EGE-UNet's ``_init_weights``: truncated-normal(0.02) linear layers; 1D convs normal(0, sqrt(2/n)) with
    n = kernel x out channels; 2D convs normal(0, sqrt(2/fan_out)); zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv1d):
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / (m.kernel_size[0] * m.out_channels)))
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


EGEUNET_C_LIST = (8, 16, 24, 32, 48, 64)


@register_model(family="lightweight", spatial_dims=(2,), deep_supervision=True,
                paper="Ruan et al., EGE-UNet: an Efficient Group Enhanced UNet for skin lesion segmentation, "
                      "MICCAI 2023, arXiv:2307.08473 (Fig. 1, 2; Table 1: 0.053M parameters, 0.072 GFLOPs at 256x256)",
                defaults=lambda d: {"c_list": list(EGEUNET_C_LIST), "n_conv": 3},
                tiny_kwargs={"c_list": [4, 8, 8, 8], "n_conv": 3},
                extra={"tags": ["cnn", "attention", "lightweight"],
                       "divisible_by": 32, "paper_params": 0.053e6, "paper_gflops": 0.072, "paper_patch": [256, 256],
                       "paper_setup": "3 input channels, 1 class (ISIC 2017/2018), c_list 8,16,24,32,48,64, "
                                       "bridge and gt_ds on", "kwargs_note": _PLAN_NOTE})
def egeunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
            c_list: Sequence[int] | None = None, n_conv: int | None = None, n_stages: Any = None,
            features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> EGEUNet:
    """EGE-UNet: GHPA attention stages and GAB bridges, deep supervision at every decoder level (2D)."""
    return EGEUNet(in_channels, num_classes, c_list or EGEUNET_C_LIST, 3 if n_conv is None else n_conv,
                   deep_supervision)


# ============================================================================================ RITnet
class DenseDown(nn.Module):
    """RITnet's down block: (average pool 2), then a 3-unit dense block: conv3x3 -> [cat, 1x1, 3x3] x 2,
    leaky ReLU after each unit (dropout 0.2 before it), BatchNorm at the end."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, pool: bool, dropout: float) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.pool = pool
        self.conv1 = conv(cin, cout, 3, 1, 1)
        self.conv21 = conv(cin + cout, cout, 1)
        self.conv22 = conv(cout, cout, 3, 1, 1)
        self.conv31 = conv(cin + 2 * cout, cout, 1)
        self.conv32 = conv(cout, cout, 3, 1, 1)
        self.drop = nn.Dropout(dropout)
        self.act = nn.LeakyReLU()
        self.bn = batch_norm_class(spatial_dims)(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool3d(x, 2)
        x1 = self.act(self.drop(self.conv1(x)))
        x21 = torch.cat((x, x1), dim=1)
        x22 = self.act(self.drop(self.conv22(self.conv21(x21))))
        out = self.act(self.drop(self.conv32(self.conv31(torch.cat((x21, x22), dim=1)))))
        return self.bn(out)


class DenseUp(nn.Module):
    """RITnet's up block: nearest x2, concatenate with the skip, [1x1, 3x3] -> cat -> [1x1, 3x3], leaky ReLU."""

    def __init__(self, spatial_dims: int, skip: int, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.conv11 = conv(skip + cin, cout, 1)
        self.conv12 = conv(cout, cout, 3, 1, 1)
        self.conv21 = conv(skip + cin + cout, cout, 1)
        self.conv22 = conv(cout, cout, 3, 1, 1)
        self.drop = nn.Dropout(dropout)
        self.act = nn.LeakyReLU()

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((_up2(x), skip), dim=1)
        x1 = self.act(self.drop(self.conv12(self.conv11(x))))
        return self.act(self.drop(self.conv22(self.conv21(torch.cat((x, x1), dim=1)))))


class RITnet(nn.Module):
    """RITnet (DenseNet2D): ``n_blocks`` dense down blocks of ``channels`` each (the first without
    pooling), ``n_blocks - 1`` dense up blocks, dropout 0.2 and a 1x1 head. Published: 5 blocks, 32
    channels (total downsampling 16)."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, channels: int = 32,
                 n_blocks: int = 5, dropout: float = 0.2) -> None:
        super().__init__()
        if n_blocks < 2:
            raise ValueError(f"RITnet needs at least 2 blocks, got {n_blocks}")
        self.divisor = 2 ** (n_blocks - 1)
        self.down = nn.ModuleList(DenseDown(spatial_dims, in_channels if i == 0 else channels, channels, i > 0, dropout)
                                  for i in range(n_blocks))
        self.up = nn.ModuleList(DenseUp(spatial_dims, channels, channels, channels, dropout) for _ in range(n_blocks - 1))
        self.drop = nn.Dropout(dropout)
        self.head = conv_class(spatial_dims)(channels, num_classes, 1)
        self.apply(_ritnet_init)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.divisor, "RITnet")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = block(skips.pop(), x)
        return self.head(self.drop(x))


def _ritnet_init(m: nn.Module) -> None:
    """RITnet's ``_initialize_weights``: convolutions normal(0, sqrt(2 / (k*k*out))), zero biases; BN 1/0."""
    if isinstance(m, (nn.Conv2d, nn.Conv3d)):
        n = math.prod(m.kernel_size) * m.out_channels
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@register_model(family="lightweight", spatial_dims=(2, 3), deep_supervision=False,
                paper="Chaudhary et al., RITnet: Real-time Semantic Segmentation of the Eye for Gaze Tracking, ICCVW "
                      "2019, arXiv:1910.00694 (Fig. 2, Sec. 3: 248,900 parameters, under 1 MB)",
                defaults=lambda d: {"channels": 32, "n_blocks": 5, "dropout": 0.2},
                tiny_kwargs={"channels": 4, "n_blocks": 4, "dropout": 0.0},
                extra={"tags": ["cnn", "dense", "lightweight"], "divisible_by": 16, "paper_params": 248_900,
                       "paper_setup": "2D, 1 input channel, 4 classes (OpenEDS), 32 channels, 5 down blocks",
                       "kwargs_note": _PLAN_NOTE + "; the 3D version is the same layers with 3D convolutions"})
def ritnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           channels: int | None = None, n_blocks: int | None = None, dropout: float | None = None,
           n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> RITnet:
    """RITnet: a DenseNet-style U-Net of 32-channel dense blocks (no deep supervision)."""
    return RITnet(spatial_dims, in_channels, num_classes, 32 if channels is None else channels,
                  5 if n_blocks is None else n_blocks, 0.2 if dropout is None else dropout)
