"""V-Net: a volumetric fully convolutional network with residual stages (family ``vnet``).

Milletari, Navab, Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric Medical
Image Segmentation", 3DV 2016, arXiv:1606.04797, Fig. 1: 5x5x5 convolutions, each stage learning a
residual (its input added to the output of its convolutions), downsampling by 2x2x2 convolutions
with stride 2 that double the width (16, 32, 64, 128, 256), upsampling by 2x2x2 transposed
convolutions, the encoder features of the same level concatenated in the decoder, PReLU
non-linearities, and a voxel-wise output layer.

The paper prints no parameter count. The layout and our default numbers of convolutions per stage
follow MONAI's ``VNet`` (adapted by MONAI from the authors' Caffe code and a PyTorch port): stage
convolutions 1 (input), 1, 2, 3, 2 (encoder) and 2, 2, 1, 1 (decoder), each convolution followed by
batch norm, the input stage adding its input repeated to 16 channels, an output block of a 5x5x5
convolution + batch norm + activation + 1x1 convolution. Fig. 1 of the paper draws 1, 2, 3, 3, 3 /
3, 3, 2, 1 convolutions instead: ``encoder_convs=[2, 3, 3, 3], decoder_convs=[3, 3, 2, 1]``
builds that. tests/test_zoo_3d.py checks that our count equals MONAI's ``VNet(act="prelu")``
exactly and that MONAI's weights give the same outputs in ours.

Defaults: PReLU (the paper; MONAI's default is ELU, ``act="elu"``), no dropout (the paper mentions
none; MONAI drops 50 % of channels in the deeper stages and skips: ``dropout=0.5``), convolutions
without bias before batch norm, transposed convolutions and the last 1x1 with bias, PyTorch's
default initialization (as the reference). No deep supervision (the paper has none). The input
stage repeats the input channels to the first width, so ``features`` must be a multiple of
``in_channels``. Inputs not divisible by ``2 ** n_down`` (16) are zero-padded and the logits
cropped; the trainer rounds the plan's patch up to that multiple (``extra["divisible_by"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.blocks import conv_class, transposed_conv_class
from unetkit.models.registry import register_model

VNET_PAPER = ("Milletari, Navab, Ahmadi, V-Net: Fully Convolutional Neural Networks for Volumetric Medical "
              "Image Segmentation, 3DV 2016, arXiv:1606.04797 (Fig. 1)")
ACTIVATIONS = ("prelu", "elu")


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "elu":
        return nn.ELU(inplace=True)
    raise ValueError(f"act must be one of {list(ACTIVATIONS)}, got {kind!r}")


def _batch_norm(spatial_dims: int, channels: int) -> nn.Module:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)


def _channel_dropout(spatial_dims: int, p: float) -> nn.Module:
    return {2: nn.Dropout2d, 3: nn.Dropout3d}[spatial_dims](p) if p > 0 else nn.Identity()


class ConvBNAct(nn.Module):
    """5x5(x5) convolution (no bias) -> batch norm -> activation; ``act=False`` leaves the
    activation to the caller (after a residual addition)."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, act: str, with_act: bool = True) -> None:
        super().__init__()
        self.conv = conv_class(spatial_dims)(cin, cout, 5, padding=2, bias=False)
        self.norm = _batch_norm(spatial_dims, cout)
        self.act = _activation(act, cout) if with_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DownStage(nn.Module):
    """2x2(x2) stride-2 convolution doubling the width (+ batch norm, activation), then ``n_convs``
    5x5(x5) convolutions whose output is added to their input (a residual stage)."""

    def __init__(self, spatial_dims: int, cin: int, n_convs: int, act: str, dropout: float) -> None:
        super().__init__()
        cout = 2 * cin
        self.down_conv = conv_class(spatial_dims)(cin, cout, 2, 2, bias=False)
        self.down_norm = _batch_norm(spatial_dims, cout)
        self.down_act = _activation(act, cout)
        self.dropout = _channel_dropout(spatial_dims, dropout)
        self.convs = nn.Sequential(*[ConvBNAct(spatial_dims, cout, cout, act) for _ in range(n_convs)])
        self.out_act = _activation(act, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down_act(self.down_norm(self.down_conv(x)))
        return self.out_act(self.convs(self.dropout(down)) + down)


class UpStage(nn.Module):
    """2x2(x2) transposed convolution to ``cout / 2`` channels (+ batch norm, activation),
    concatenated with the encoder features (``cout / 2`` channels), then ``n_convs`` 5x5(x5)
    convolutions added to that concatenation."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, n_convs: int, act: str, dropout_in: float,
                 dropout_skip: float) -> None:
        super().__init__()
        self.dropout = _channel_dropout(spatial_dims, dropout_in)
        self.skip_dropout = _channel_dropout(spatial_dims, dropout_skip)
        self.up_conv = transposed_conv_class(spatial_dims)(cin, cout // 2, 2, 2)
        self.up_norm = _batch_norm(spatial_dims, cout // 2)
        self.up_act = _activation(act, cout // 2)
        self.convs = nn.Sequential(*[ConvBNAct(spatial_dims, cout, cout, act) for _ in range(n_convs)])
        self.out_act = _activation(act, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up_act(self.up_norm(self.up_conv(self.dropout(x))))
        merged = torch.cat((up, self.skip_dropout(skip)), 1)
        return self.out_act(self.convs(merged) + merged)


class VNet(nn.Module):
    """V-Net (Milletari et al. 2016, Fig. 1) with the stage layout of the reference implementation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels; must divide ``features``.
        num_classes: output channels.
        features: width of the first stage (16); stage ``i`` has ``features * 2**i``.
        encoder_convs: 5x5x5 convolutions of each downsampling stage (1, 2, 3, 2); its length is
            the number of downsamplings.
        decoder_convs: convolutions of each upsampling stage, coarsest first (2, 2, 1, 1).
        act: ``"prelu"`` (the paper) or ``"elu"`` (MONAI's default).
        dropout: channel dropout of the reference's places (the last two encoder stages, the
            input of the first two decoder stages, every skip); 0 in the paper.

    Example:
        >>> net = VNet(3, 1, 2)
        >>> net(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 2, 32, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, features: int = 16,
                 encoder_convs: Sequence[int] = (1, 2, 3, 2), decoder_convs: Sequence[int] = (2, 2, 1, 1),
                 act: str = "prelu", dropout: float = 0.0) -> None:
        super().__init__()
        encoder_convs, decoder_convs = [int(n) for n in encoder_convs], [int(n) for n in decoder_convs]
        if not encoder_convs or len(decoder_convs) != len(encoder_convs):
            raise ValueError(f"encoder_convs and decoder_convs need one entry per level, got {encoder_convs} "
                             f"and {decoder_convs}")
        if features % in_channels:
            raise ValueError(f"V-Net repeats the input to {features} channels: in_channels ({in_channels}) must "
                             f"divide features ({features})")
        d, n = spatial_dims, len(encoder_convs)
        widths = [features * 2 ** i for i in range(n + 1)]
        self.divisible_by = 2 ** n
        self.input_block = ConvBNAct(d, in_channels, features, act)
        self.down = nn.ModuleList([DownStage(d, widths[i], encoder_convs[i], act, dropout if i >= n - 2 else 0.0)
                                   for i in range(n)])
        self.up = nn.ModuleList()
        cin = widths[n]
        for k in range(n):
            cout = 2 * widths[n - 1 - k]
            self.up.append(UpStage(d, cin, cout, decoder_convs[k], act, dropout if k < 2 else 0.0, dropout))
            cin = cout
        self.output_block = ConvBNAct(d, cin, num_classes, act)
        self.head = conv_class(d)(num_classes, num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        repeat = [1, self.input_block.conv.out_channels // x.shape[1]] + [1] * (x.dim() - 2)
        # residual input stage: the single-conv output plus the input repeated to its width
        x = self.input_block.act(self.input_block.norm(self.input_block.conv(x)) + x.repeat(repeat))
        skips = [x]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return crop_to(self.head(self.output_block(x)), size)


def vnet_defaults(spatial_dims: int) -> dict[str, Any]:
    """16 initial features, the reference implementation's 1, 2, 3, 2 / 2, 2, 1, 1 convolutions
    per stage, PReLU (the paper), no dropout (the paper)."""
    del spatial_dims
    return {"features": 16, "encoder_convs": [1, 2, 3, 2], "decoder_convs": [2, 2, 1, 1], "act": "prelu",
            "dropout": 0.0}


@register_model(family="vnet", paper=VNET_PAPER, spatial_dims=(3, 2), deep_supervision=False, defaults=vnet_defaults,
                tiny_kwargs={"deep_supervision": False, "features": 8, "encoder_convs": [1, 1, 1],
                             "decoder_convs": [1, 1, 1]},
                extra={"tags": ["cnn", "residual"], "divisible_by": 16, "paper_params": None,
                       "paper_setup": "3D, 1 in, 2 classes, features 16, MONAI VNet stage layout, PReLU",
                       "reference_params": "MONAI VNet(act='prelu') (same configuration), checked exactly",
                       "profile_patch_3d": [128, 128, 64], "profile_patch_2d": [224, 224]})
def vnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
         features: int = 16, encoder_convs: Sequence[int] = (1, 2, 3, 2), decoder_convs: Sequence[int] = (2, 2, 1, 1),
         act: str = "prelu", dropout: float = 0.0, n_stages: Any = None, features_per_stage: Any = None,
         kernel_sizes: Any = None, strides: Any = None) -> VNet:
    """V-Net (Milletari et al. 2016) with 5x5x5 residual stages, PReLU and the reference layout.

    The plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are
    accepted so ``--arch vnet`` can reuse any plan, and ignored: the design is the paper's.
    """
    del deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return VNet(spatial_dims, in_channels, num_classes, int(features), encoder_convs, decoder_convs, str(act),
                float(dropout))
