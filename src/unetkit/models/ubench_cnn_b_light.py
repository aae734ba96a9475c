"""Plain and lightweight CNN U-Nets of the U-Bench zoo: TernausNet, TinyU-Net, U-Lite (family ``ubench_cnn``).

Each is a fixed design with its published widths as the default; the widths are keywords so that a
small instance can be built for tests. The plan keywords are accepted and ignored (``PLAN_NOTE``);
patches that are not a multiple of the total downsampling are zero-padded and the logits cropped.

- ``ternausnet``: Iglovikov & Shvets, "TernausNet: U-Net with VGG11 Encoder Pre-Trained on ImageNet for
  Image Segmentation", arXiv:1801.05746 (2018), Fig. 1. The encoder is VGG-11's convolutional part
  (Simonyan & Zisserman, ICLR 2015, Table 1 configuration A), written here; no ImageNet weights are
  loaded. The paper prints no parameter count: the count checked is the authors' code
  (github.com/ternaus/TernausNet ``UNet11``, ``num_filters=32``), 3 in, 1 class: 22,927,393.
- ``tinyunet``: Chen, Chen, Wang, Cheng, Zhang, Chen, "TinyU-Net: Lighter Yet Better U-Net with Cascaded
  Multi-receptive Fields", MICCAI 2024, Fig. 1 and abstract (0.48M parameters). Reference code:
  github.com/ChenJunren-Lab/TinyU-Net (as in U-Bench ``models/CNN/Tinyunet``).
- ``ulite``: Dinh, Nguyen, Tran, Nguyen, "1M parameters are enough? A lightweight CNN-based model for
  medical image segmentation", APSIPA ASC 2023 (arXiv:2306.16103), Fig. 2 (878K parameters, 3 in, 1
  class). Reference code: github.com/duong-db/U-Lite ``model/ULite.py``.

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import (
    PLAN_NOTE,
    batch_norm_class,
    crop_to,
    max_pool2,
    pad_input,
    pooled_encoder,
    up2,
)


def _check_widths(name: str, widths: Sequence[int], count: int, multiple: int = 1) -> list[int]:
    out = [int(w) for w in widths]
    if len(out) != count or any(w < 1 or w % multiple for w in out):
        raise ValueError(f"{name} needs {count} widths, each a positive multiple of {multiple}, got {out}")
    return out


# ============================================================================================ TernausNet
class TernausUp(nn.Sequential):
    """TernausNet's decoder block: 3x3 conv + ReLU, then a 3x3 transposed convolution with stride 2
    (padding 1, output padding 1: exactly twice the size) + ReLU."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, mid, 3, 1, 1), nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(mid, cout, 3, 2, 1, output_padding=1), nn.ReLU(inplace=True))


class TernausNet(nn.Module):
    """U-Net with a VGG-11 encoder (TernausNet, Fig. 1).

    Encoder: VGG-11 blocks of 1, 1, 2, 2, 2 3x3 convolutions (+ ReLU) with ``encoder_widths``
    (64, 128, 256, 512, 512), max-pooling between blocks and after the last. Centre: conv 3x3 to
    ``16 nf`` + transposed conv to ``8 nf``; decoder blocks concatenate the encoder block of their size
    and map to ``8, 4, 2, 1`` x ``nf`` (``nf = num_filters``, 32), the last one a plain 3x3 conv + ReLU;
    a 1x1 head. Patches are multiples of 32.
    """

    def __init__(self, in_channels: int, num_classes: int, encoder_widths: Sequence[int], num_filters: int) -> None:
        super().__init__()
        e = _check_widths("encoder_widths", encoder_widths, 5)
        nf = int(num_filters)
        convs_per_block = (1, 1, 2, 2, 2)  # VGG-11 (configuration A)
        self.encoder = nn.ModuleList()
        cin = in_channels
        for width, n in zip(e, convs_per_block):
            layers: list[nn.Module] = []
            for i in range(n):
                layers += [nn.Conv2d(cin if i == 0 else width, width, 3, 1, 1), nn.ReLU(inplace=True)]
            self.encoder.append(nn.Sequential(*layers))
            cin = width
        self.center = TernausUp(e[4], 16 * nf, 8 * nf)
        self.decoder = nn.ModuleList([
            TernausUp(8 * nf + e[4], 16 * nf, 8 * nf),
            TernausUp(8 * nf + e[3], 16 * nf, 4 * nf),
            TernausUp(4 * nf + e[2], 8 * nf, 2 * nf),
            TernausUp(2 * nf + e[1], 4 * nf, nf),
            nn.Sequential(nn.Conv2d(nf + e[0], nf, 3, 1, 1), nn.ReLU(inplace=True)),
        ])
        self.head = nn.Conv2d(nf, num_classes, 1)
        self.deep_supervision = False
        for m in self.encoder.modules():  # torchvision's VGG initialization (the unpretrained encoder)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, 32)
        skips = pooled_encoder(self.encoder, x)
        x = self.center(max_pool2(skips[-1]))
        for block in self.decoder:
            x = block(torch.cat((x, skips.pop()), dim=1))
        return crop_to(self.head(x), size)


TERNAUS_DEFAULTS = {"encoder_widths": [64, 128, 256, 512, 512], "num_filters": 32}


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Iglovikov & Shvets, TernausNet: U-Net with VGG11 Encoder Pre-Trained on ImageNet for Image "
                      "Segmentation, arXiv:1801.05746, 2018 (Fig. 1; no parameter count printed)",
                defaults=lambda d: {k: (list(v) if isinstance(v, list) else v) for k, v in TERNAUS_DEFAULTS.items()},
                tiny_kwargs={"encoder_widths": [16, 16, 32, 32, 32], "num_filters": 8},
                extra={"tags": ["cnn", "pretrainable-encoder"], "divisible_by": 32, "pads_input": True,
                       "paper_params": None,
                       "paper_setup": "paper prints none; official code (ternaus/TernausNet UNet11, num_filters 32), "
                                      "3 in / 1 class: 22,927,393 (22.93M)",
                       "reference_params": 22_927_393, "kwargs_note": PLAN_NOTE})
def ternausnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               encoder_widths: Sequence[int] | None = None, num_filters: int | None = None, n_stages: Any = None,
               features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> TernausNet:
    """TernausNet: U-Net with a VGG-11 encoder and transposed-convolution decoder (2D, no deep supervision)."""
    return TernausNet(in_channels, num_classes, encoder_widths or TERNAUS_DEFAULTS["encoder_widths"],
                      32 if num_filters is None else num_filters)


# ============================================================================================ TinyU-Net
class ConvBNGELU(nn.Sequential):
    """k^D conv without bias -> BN (eps 1e-3, momentum 0.03, the YOLO-style ``Conv`` of the reference)
    -> GELU (or nothing). ``groups=cin`` makes it depthwise."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, kernel: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__(conv_class(spatial_dims)(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False),
                         batch_norm_class(spatial_dims)(cout, eps=1e-3, momentum=0.03),
                         nn.GELU() if act else nn.Identity())


class CMRF(nn.Module):
    """Cascade Multi-Receptive Fields module (TinyU-Net Fig. 1, left).

    A pointwise conv maps ``cin`` to ``cout / N`` channels; the even and odd channels are split; the odd
    half goes through ``N - 1`` cascaded depthwise 3x3 conv + BN units (each sees the previous one's
    output, so receptive fields 3, 5, 7, ...); the even and odd halves are added (the "linear" branch);
    the sum and the ``N - 1`` cascade outputs, ``N`` groups of ``cout / 2N`` channels, are concatenated and
    a pointwise conv maps them to ``cout``. A residual is added when ``cin == cout``.
    """

    def __init__(self, spatial_dims: int, cin: int, cout: int, n: int = 8) -> None:
        super().__init__()
        if cout % (2 * n):
            raise ValueError(f"CMRF: output channels must be a multiple of 2N = {2 * n}, got {cout}")
        half = cout // (2 * n)
        self.residual = cin == cout
        self.pw_in = ConvBNGELU(spatial_dims, cin, cout // n)
        self.cascade = nn.ModuleList(ConvBNGELU(spatial_dims, half, half, 3, groups=half, act=False)
                                     for _ in range(n - 1))
        self.pw_out = ConvBNGELU(spatial_dims, cout // 2, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw_in(x)
        even, odd = y[:, 0::2], y[:, 1::2]
        parts = [even + odd]
        for dw in self.cascade:
            odd = dw(odd)
            parts.append(odd)
        out = self.pw_out(torch.cat(parts, dim=1))
        return x + out if self.residual else out


class TinyUNet(nn.Module):
    """TinyU-Net: one CMRF per encoder level (then max-pool), a decoder that upsamples bicubically
    (trilinearly in 3D), concatenates the skip and applies a CMRF, and a 1x1 head. The deepest pooled map
    is the bottleneck (no extra block). Published widths 64, 128, 256, 512; patches multiples of 16."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) < 2 or any(v < 16 or v % 16 for v in w):
            raise ValueError(f"TinyU-Net widths must be at least 2 multiples of 16, got {w}")
        self.divisor = 2 ** len(w)
        self.encoder = nn.ModuleList(CMRF(spatial_dims, in_channels if i == 0 else w[i - 1], w[i])
                                     for i in range(len(w)))
        # decoder level i sees the upsampled deeper map (w[i], or w[-1] at the bottom) and the skip w[i]
        self.decoder = nn.ModuleList(CMRF(spatial_dims, w[min(i + 1, len(w) - 1)] + w[i], w[i])
                                     for i in range(len(w) - 1, -1, -1))
        self.head = conv_class(spatial_dims)(w[0], num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, self.divisor)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = max_pool2(x)
        for block in self.decoder:
            x = block(torch.cat((up2(x, "cubic"), skips.pop()), dim=1))
        return crop_to(self.head(x), size)


@register_model(family="ubench_cnn", spatial_dims=(2, 3), deep_supervision=False,
                paper="Chen et al., TinyU-Net: Lighter Yet Better U-Net with Cascaded Multi-receptive Fields, "
                      "MICCAI 2024 (Fig. 1; abstract: 0.48M parameters)",
                defaults=lambda d: {"widths": [64, 128, 256, 512]},
                tiny_kwargs={"widths": [32, 32, 64]},
                extra={"tags": ["cnn", "lightweight", "multiscale"], "divisible_by": 16, "pads_input": True,
                       "paper_params": 0.48e6, "paper_setup": "2D, 3 in, 1 class (ISIC 2018), widths 64,128,256,512",
                       "kwargs_note": PLAN_NOTE + "; 3D: same layers, trilinear instead of bicubic upsampling"})
def tinyunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             widths: Sequence[int] | None = None, n_stages: Any = None, features_per_stage: Any = None,
             kernel_sizes: Any = None, strides: Any = None) -> TinyUNet:
    """TinyU-Net: CMRF (cascaded depthwise multi-receptive-field) blocks in a 4-level U-Net."""
    return TinyUNet(spatial_dims, in_channels, num_classes, widths or (64, 128, 256, 512))


# ============================================================================================ U-Lite
class AxialDepthwise(nn.Module):
    """``x + sum over axes of a depthwise 1-D conv (kernel k, dilation d) along that axis``: U-Lite's axial
    depthwise convolution (in 3D one conv per axis), "same" padding, with bias."""

    def __init__(self, spatial_dims: int, channels: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        pad = dilation * (kernel - 1) // 2
        self.convs = nn.ModuleList()
        for axis in range(spatial_dims):
            k = tuple(kernel if a == axis else 1 for a in range(spatial_dims))
            p = tuple(pad if a == axis else 0 for a in range(spatial_dims))
            d = tuple(dilation if a == axis else 1 for a in range(spatial_dims))
            self.convs.append(conv(channels, channels, k, 1, p, dilation=d, groups=channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs:
            out = out + conv(x)
        return out


class ULiteEncoder(nn.Module):
    """Axial depthwise 7 -> BN (this is the skip) -> 1x1 conv to ``cout`` -> max-pool -> GELU."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = AxialDepthwise(spatial_dims, cin, 7)
        self.bn = batch_norm_class(spatial_dims)(cin)
        self.pw = conv_class(spatial_dims)(cin, cout, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.bn(self.dw(x))
        return self.act(max_pool2(self.pw(skip))), skip


class ULiteDecoder(nn.Module):
    """Nearest x2, concatenate the skip, 1x1 conv to ``cout`` -> BN -> axial depthwise 7 -> 1x1 conv -> GELU."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.pw = conv(cin + cout, cout, 1)
        self.bn = batch_norm_class(spatial_dims)(cout)
        self.dw = AxialDepthwise(spatial_dims, cout, 7)
        self.pw2 = conv(cout, cout, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((up2(x, "nearest"), skip), dim=1)
        return self.act(self.pw2(self.dw(self.bn(self.pw(x)))))


class ULiteBottleneck(nn.Module):
    """1x1 conv to ``C/4``, concatenated with three axial depthwise 3 convs of it (dilations 1, 2, 3),
    BN, 1x1 conv back to ``C``, GELU."""

    def __init__(self, spatial_dims: int, dim: int) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        q = dim // 4
        self.pw1 = conv(dim, q, 1)
        self.dilated = nn.ModuleList(AxialDepthwise(spatial_dims, q, 3, d) for d in (1, 2, 3))
        self.bn = batch_norm_class(spatial_dims)(4 * q)
        self.pw2 = conv(4 * q, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(x)
        x = torch.cat([x] + [branch(x) for branch in self.dilated], dim=1)
        return self.act(self.pw2(self.bn(x)))


class ULite(nn.Module):
    """U-Lite (Fig. 2): a 7x7 input conv, encoder blocks (axial depthwise 7x7, BN, pointwise, pool), an
    axial dilated bottleneck, decoder blocks mirroring the encoder, a 1x1 head. Published widths
    16, 32, 64, 128, 256, 512 (5 levels: patches multiples of 32)."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) < 2 or any(v < 1 for v in w) or w[-1] % 4:
            raise ValueError(f"U-Lite needs at least 2 positive widths, the last a multiple of 4, got {w}")
        conv = conv_class(spatial_dims)
        self.divisor = 2 ** (len(w) - 1)
        self.conv_in = conv(in_channels, w[0], 7, 1, 3)
        self.encoder = nn.ModuleList(ULiteEncoder(spatial_dims, w[i], w[i + 1]) for i in range(len(w) - 1))
        self.bottleneck = ULiteBottleneck(spatial_dims, w[-1])
        self.decoder = nn.ModuleList(ULiteDecoder(spatial_dims, w[i + 1], w[i]) for i in range(len(w) - 2, -1, -1))
        self.head = conv(w[0], num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, self.divisor)
        x = self.conv_in(x)
        skips = []
        for block in self.encoder:
            x, skip = block(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for block in self.decoder:
            x = block(x, skips.pop())
        return crop_to(self.head(x), size)


@register_model(family="ubench_cnn", spatial_dims=(2, 3), deep_supervision=False,
                paper="Dinh et al., 1M parameters are enough? A lightweight CNN-based model for medical image "
                      "segmentation (U-Lite), APSIPA ASC 2023, arXiv:2306.16103 (Fig. 2; 878K parameters)",
                defaults=lambda d: {"widths": [16, 32, 64, 128, 256, 512]},
                tiny_kwargs={"widths": [8, 16, 16, 32]},
                extra={"tags": ["cnn", "lightweight"], "divisible_by": 32, "pads_input": True,
                       "paper_params": 878e3, "paper_setup": "2D, 3 in, 1 class (ISIC 2018, 256x256), "
                                                             "widths 16,32,64,128,256,512",
                       "kwargs_note": PLAN_NOTE + "; 3D: one axial depthwise conv per axis"})
def ulite(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
          widths: Sequence[int] | None = None, n_stages: Any = None, features_per_stage: Any = None,
          kernel_sizes: Any = None, strides: Any = None) -> ULite:
    """U-Lite: axial depthwise convolutions in a 5-level U-Net of under 1M parameters."""
    return ULite(spatial_dims, in_channels, num_classes, widths or (16, 32, 64, 128, 256, 512))

