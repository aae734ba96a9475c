"""SegResNet: the encoder-decoder of Myronenko's BraTS 2018 winner, without the VAE branch
(family ``segresnet``).

Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization", BrainLes (MICCAI
workshop) 2018, arXiv:1810.11654, Fig. 1 and Table 1: an initial 3x3x3 convolution with 32
filters (then spatial dropout 0.2), encoder levels of 1, 2, 2, 4 pre-activation residual blocks
(GroupNorm with 8 groups -> ReLU -> conv, twice, plus the identity), each level after the first
entered by a strided 3x3x3 convolution that doubles the width; the decoder reduces the width
with a 1x1x1 convolution, upsamples 2x (trilinear), adds the encoder output of the same level and
applies one residual block; the output is a 1x1x1 convolution. The VAE branch regularizes the
encoder during training only and is not built here.

The paper prints no parameter count; ours is checked to equal exactly the count of MONAI's
``SegResNet`` (maintained by the author; ``init_filters=32, blocks_down=(1, 2, 2, 4),
blocks_up=(1, 1, 1)``), which ends with GroupNorm -> ReLU -> 1x1 conv (with bias), as we do.
tests/test_zoo_3d.py also loads MONAI's weights into ours and compares the outputs.

Convolutions have no bias (each is followed by a norm); PyTorch's default initialization, as the
reference. No deep supervision (the paper has none). The 2D variant is the same design with 2D
layers. Inputs whose size is not a multiple of ``2 ** (levels - 1)`` (8 by default) are
zero-padded and the logits cropped; the trainer rounds the plan's patch up to that multiple
(``extra["divisible_by"]``) so training sees image content there instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model

SEGRESNET_PAPER = ("Myronenko, 3D MRI brain tumor segmentation using autoencoder regularization, BrainLes "
                   "2018, arXiv:1810.11654 (Fig. 1, Table 1; encoder-decoder without the VAE branch)")
#: GroupNorm groups of the paper ("we use Group Normalization ... group size of 8").
NORM_GROUPS = 8


def _conv(spatial_dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Module:
    return conv_class(spatial_dims)(cin, cout, kernel, stride, padding=kernel // 2, bias=bias)


class PreActResBlock(nn.Module):
    """GroupNorm -> ReLU -> conv -> GroupNorm -> ReLU -> conv, plus the input (SegResNet's
    "green block", Fig. 1): width and size unchanged."""

    def __init__(self, spatial_dims: int, channels: int, groups: int = NORM_GROUPS) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = _conv(spatial_dims, channels, channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = _conv(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return y + x


class SegResNet(nn.Module):
    """SegResNet's encoder and decoder (Myronenko 2018, Fig. 1 without the VAE branch).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (4 MRI modalities in the paper).
        num_classes: output channels (3 tumour regions in the paper).
        init_filters: width of the first level (32 in the paper); level ``i`` has ``init_filters * 2**i``.
        blocks_down: residual blocks per encoder level (1, 2, 2, 4).
        blocks_up: residual blocks per decoder level, coarsest first (1, 1, 1); one fewer than levels.
        dropout: spatial (channel) dropout after the initial convolution (0.2 in the paper).
        norm_groups: GroupNorm groups (8); every width must be divisible by it.

    Example:
        >>> net = SegResNet(3, 4, 3)
        >>> net(torch.zeros(1, 4, 32, 32, 32)).shape
        torch.Size([1, 3, 32, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, init_filters: int = 32,
                 blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
                 dropout: float = 0.2, norm_groups: int = NORM_GROUPS) -> None:
        super().__init__()
        blocks_down, blocks_up = [int(b) for b in blocks_down], [int(b) for b in blocks_up]
        if len(blocks_down) < 2 or len(blocks_up) != len(blocks_down) - 1:
            raise ValueError(f"blocks_up must have one entry fewer than blocks_down (>= 2 levels), got "
                             f"blocks_down={blocks_down}, blocks_up={blocks_up}")
        if init_filters % norm_groups:
            raise ValueError(f"init_filters ({init_filters}) must be divisible by norm_groups ({norm_groups})")
        d, widths = spatial_dims, [init_filters * 2 ** i for i in range(len(blocks_down))]
        self.divisible_by = 2 ** (len(blocks_down) - 1)
        self.stem = _conv(d, in_channels, init_filters)
        self.dropout = {2: nn.Dropout2d, 3: nn.Dropout3d}[d](dropout) if dropout > 0 else nn.Identity()
        self.encoder = nn.ModuleList()
        for i, n_blocks in enumerate(blocks_down):
            entry = _conv(d, widths[i - 1], widths[i], stride=2) if i > 0 else nn.Identity()
            self.encoder.append(nn.Sequential(entry, *[PreActResBlock(d, widths[i], norm_groups)
                                                       for _ in range(n_blocks)]))
        self.reduce = nn.ModuleList()  # 1x1 conv halving the width before each 2x upsampling
        self.decoder = nn.ModuleList()
        for level, n_blocks in zip(range(len(blocks_up) - 1, -1, -1), blocks_up):
            self.reduce.append(_conv(d, widths[level + 1], widths[level], kernel=1))
            self.decoder.append(nn.Sequential(*[PreActResBlock(d, widths[level], norm_groups)
                                                for _ in range(n_blocks)]))
        self.head_norm = nn.GroupNorm(norm_groups, init_filters)
        self.head = _conv(d, init_filters, num_classes, kernel=1, bias=True)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        x = self.dropout(self.stem(x))
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        for reduce, blocks, skip in zip(self.reduce, self.decoder, reversed(skips[:-1])):
            mode = "trilinear" if x.dim() == 5 else "bilinear"
            x = F.interpolate(reduce(x), scale_factor=2, mode=mode, align_corners=False)
            x = blocks(x + skip)
        return crop_to(self.head(F.relu(self.head_norm(x))), size)


def segresnet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration (BraTS 2018): 32 initial filters, blocks 1, 2, 2, 4 / 1, 1, 1,
    spatial dropout 0.2, GroupNorm with 8 groups."""
    del spatial_dims
    return {"init_filters": 32, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout": 0.2,
            "norm_groups": NORM_GROUPS}


@register_model(family="segresnet", paper=SEGRESNET_PAPER, spatial_dims=(3, 2), deep_supervision=False,
                defaults=segresnet_defaults,
                tiny_kwargs={"deep_supervision": False, "init_filters": 8, "blocks_down": [1, 1, 1],
                             "blocks_up": [1, 1], "dropout": 0.0},
                extra={"tags": ["cnn", "residual"], "divisible_by": 8, "paper_params": None,
                       "paper_setup": "3D, 4 in, 3 classes, init_filters 32, blocks 1,2,2,4 / 1,1,1",
                       "reference_params": "MONAI SegResNet (same configuration), checked exactly",
                       "profile_patch_3d": [128, 128, 128], "profile_patch_2d": [224, 224]})
def segresnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              init_filters: int = 32, blocks_down: Sequence[int] = (1, 2, 2, 4), blocks_up: Sequence[int] = (1, 1, 1),
              dropout: float = 0.2, norm_groups: int = NORM_GROUPS, n_stages: Any = None,
              features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> SegResNet:
    """SegResNet (Myronenko 2018) without the VAE branch, the paper's BraTS configuration by default.

    The plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are
    accepted so ``--arch segresnet`` can reuse any plan, and ignored: the design is the paper's.
    """
    del deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return SegResNet(spatial_dims, in_channels, num_classes, int(init_filters), blocks_down, blocks_up,
                     float(dropout), int(norm_groups))
