"""Pieces shared by the U-Bench CNN/MLP/KAN families (``ubench_cnn_b_*`` modules).

- :class:`DoubleConv` / :class:`WideningDoubleConv`: two 3x3 conv (bias) -> BN -> ReLU units, the
  encoder and decoder stages of UNeXt-style networks (Rolling-UNet's ``DoubleConv`` /
  ``D_DoubleConv``, U-KAN's ``ConvLayer`` / ``D_ConvLayer``): the decoder variant keeps the input
  width for the first convolution and changes it in the second.
- :class:`TokenEmbed`: overlapping patch embedding (3x3 conv, optional GELU, LayerNorm over channels).
- :func:`up2`, :func:`max_pool2`, :func:`batch_norm_class`: resampling and norm helpers for 2D/3D.
- :func:`pooled_encoder`: stages with a max-pool between them, every output kept as a skip.
- :func:`init_token_mixer_`: UNeXt's initialisation (``lightweight._unext_init``), which Rolling-UNet, U-KAN
  and PVT reuse.
- :func:`pad_input` / :func:`crop_to`: fixed-depth designs pad a patch to their multiple and crop
  the logits, so every plan patch works (``extra["pads_input"]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.blocks import conv_class
from unetkit.models.lightweight import ChannelLayerNorm, batch_norm_class
from unetkit.models.lightweight import _unext_init as init_token_mixer_

__all__ = [
    "PLAN_NOTE",
    "DoubleConv",
    "TokenEmbed",
    "WideningDoubleConv",
    "batch_norm_class",
    "crop_to",
    "init_token_mixer_",
    "max_pool2",
    "pad_input",
    "pooled_encoder",
    "up2",
]

#: What the fixed designs do with the plan's topology keywords.
PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
             "and ignored; other patch sizes are zero-padded to divisible_by and the logits cropped")


def pad_input(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` zero-padded at the end of each spatial axis to a multiple of ``multiple``; the original size."""
    return pad_to_multiple(x, multiple)


def pooled_encoder(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of ``stages`` applied in turn, with a 2x max-pool before every stage but the first
    (a U-Net encoder whose stages keep their size); the last output is the deepest map."""
    outs = []
    for i, stage in enumerate(stages):
        x = stage(x if i == 0 else max_pool2(x))
        outs.append(x)
    return outs


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2) if x.dim() == 4 else F.max_pool3d(x, 2)


def up2(x: torch.Tensor, mode: str = "linear") -> torch.Tensor:
    """Upsample every spatial axis by 2: ``"nearest"``, ``"linear"`` (bi/trilinear, align_corners=False, as
    ``F.interpolate(..., scale_factor=2, mode="bilinear")`` in the reference codes) or ``"cubic"`` (bicubic;
    3D has no cubic mode in PyTorch, so 3D falls back to trilinear)."""
    size = tuple(2 * s for s in x.shape[2:])
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    if mode == "cubic" and x.dim() == 4:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=False)


class DoubleConv(nn.Sequential):
    """[3x3 conv (bias) -> BN -> ReLU] x 2, ``cin -> cout -> cout``."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        super().__init__(conv(cin, cout, 3, 1, 1), bn(cout), nn.ReLU(inplace=True),
                         conv(cout, cout, 3, 1, 1), bn(cout), nn.ReLU(inplace=True))


class WideningDoubleConv(nn.Sequential):
    """The decoder's double conv: ``cin -> cin -> cout`` (the width changes in the second convolution)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int) -> None:
        conv, bn = conv_class(spatial_dims), batch_norm_class(spatial_dims)
        super().__init__(conv(cin, cin, 3, 1, 1), bn(cin), nn.ReLU(inplace=True),
                         conv(cin, cout, 3, 1, 1), bn(cout), nn.ReLU(inplace=True))


class TokenEmbed(nn.Module):
    """Overlapping patch embedding on a (B, C, H, W) map: 3x3 conv with ``stride`` (bias), an optional GELU
    (Rolling-UNet's Feature Incentive block has one, U-KAN's patch embedding has not), LayerNorm over the
    channels. The output stays a (B, C', H', W') map; token mixers work on it channel-last."""

    def __init__(self, cin: int, cout: int, stride: int, gelu: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, stride, 1)
        self.act = nn.GELU() if gelu else nn.Identity()
        self.norm = ChannelLayerNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.proj(x)))
