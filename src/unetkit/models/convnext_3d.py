"""3D UX-Net: a volumetric ConvNeXt encoder with a UNETR-style decoder (family ``convnext``).

Lee, Bao, Huo, Landman, "3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical
Transformer for Medical Image Segmentation", ICLR 2023 (arXiv:2209.15076), Fig. 2 (architecture),
Table 1 (53.0M parameters, 639.4 GFLOPs at 96^3). Reference: MASILab/3DUX-Net
``networks/UXNet_3D/network_backbone.py`` and ``uxnet_encoder.py``: a 7^3 stride-2 stem + layer
norm, four stages of UX blocks (7^3 depth-wise conv, layer norm, "depth-wise convolution
scaling": two grouped 1x1x1 convs C -> 4C -> C with GELU, layer scale 1e-6) at widths
48, 96, 192, 384 separated by layer norm + 2^3 stride-2 convs, a layer norm on each stage output,
and MONAI's UNETR decoder blocks (residual 3^3 conv blocks, instance norm without affine, a
768-wide bottleneck block, transposed-conv upsampling, concatenated skips).

:class:`UnetrStyleDecoder` (the input's full-resolution conv block, one conv block per encoder
output, the bottleneck block, four up blocks, a final conv block and a 1x1x1 head) is shared with
SegMamba, whose reference builds the same decoder.

Differences: inputs whose size is not a multiple of 16 are zero-padded and the logits cropped
(the reference needs multiples of 16). No deep supervision (the paper has none). 3D only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import DropPath, UnetResBlock, UnetrUpBlock, crop_to, pad_to_multiple
from unetkit.models.lightweight import ChannelLayerNorm
from unetkit.models.registry import register_model

UXNET_PAPER = ("Lee et al., 3D UX-Net: A Large Kernel Volumetric ConvNet Modernizing Hierarchical Transformer for "
               "Medical Image Segmentation, ICLR 2023, arXiv:2209.15076 (Fig. 2; Table 1: 53.0M parameters)")
#: What fixed designs do with a plan's topology (``--arch`` reuses any plan).
PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
             "and ignored")
#: The encoder halves the size four times (stem + three downsamplings): sides must be multiples of 16.
ENCODER_DIVISOR = 16


class UXBlock(nn.Module):
    """3D UX-Net block (Sec. 3.1-3.2): ``x + gamma * DCS(LN(DWConv7(x)))``, DCS = grouped 1x1x1
    conv C -> 4C, GELU, grouped 1x1x1 conv 4C -> C (groups = C)."""

    def __init__(self, dim: int, kernel_size: int = 7, drop_path: float = 0.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = ChannelLayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Conv3d(dim, 4 * dim, 1, groups=dim)
        self.pwconv2 = nn.Conv3d(4 * dim, dim, 1, groups=dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.drop_path(self.gamma.view(1, -1, 1, 1, 1) * y)


class UXNetEncoder(nn.Module):
    """Stem (7^3 conv, stride 2, + layer norm), then per stage ``depths[i]`` UX blocks, with layer
    norm + 2^3 stride-2 conv between stages; returns each stage's output, layer-normalized."""

    def __init__(self, in_channels: int, dims: Sequence[int], depths: Sequence[int], kernel_size: int = 7,
                 drop_path_rate: float = 0.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv3d(in_channels, dims[0], 7, 2, 3),
                                                              ChannelLayerNorm(dims[0], eps=1e-6))])
        self.downsample_layers.extend(nn.Sequential(ChannelLayerNorm(dims[i], eps=1e-6),
                                                    nn.Conv3d(dims[i], dims[i + 1], 2, 2)) for i in range(3))
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear, as the reference
        starts = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList([nn.Sequential(*[UXBlock(dims[i], kernel_size, rates[starts[i] + j], layer_scale)
                                                     for j in range(depths[i])]) for i in range(4)])
        self.norms = nn.ModuleList([ChannelLayerNorm(d, eps=1e-6) for d in dims])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for down, stage, norm in zip(self.downsample_layers, self.stages, self.norms):
            x = stage(down(x))
            outs.append(norm(x))
        return outs


class UnetrStyleDecoder(nn.Module):
    """The decoder 3D UX-Net and SegMamba share (both from MONAI's UNETR blocks): a residual conv
    block on the input (width ``dims[0]``), one on each of the first three encoder outputs
    (``dims[i] -> dims[i + 1]``), one from the last to ``hidden_size``; four up blocks back to full
    resolution (transposed conv, concatenated skip, residual conv block), a residual conv block
    and a 1x1x1 head with bias. Instance norm without affine, convolutions without bias."""

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int], hidden_size: int) -> None:
        super().__init__()
        self.encoder1 = UnetResBlock(3, in_channels, dims[0])
        self.encoder2 = UnetResBlock(3, dims[0], dims[1])
        self.encoder3 = UnetResBlock(3, dims[1], dims[2])
        self.encoder4 = UnetResBlock(3, dims[2], dims[3])
        self.encoder5 = UnetResBlock(3, dims[3], hidden_size)
        self.decoder5 = UnetrUpBlock(3, hidden_size, dims[3])
        self.decoder4 = UnetrUpBlock(3, dims[3], dims[2])
        self.decoder3 = UnetrUpBlock(3, dims[2], dims[1])
        self.decoder2 = UnetrUpBlock(3, dims[1], dims[0])
        self.decoder1 = UnetResBlock(3, dims[0], dims[0])
        self.out = nn.Conv3d(dims[0], num_classes, 1)

    def forward(self, x: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(features[0])
        enc3 = self.encoder3(features[1])
        enc4 = self.encoder4(features[2])
        dec = self.decoder5(self.encoder5(features[3]), enc4)
        dec = self.decoder4(dec, enc3)
        dec = self.decoder3(dec, enc2)
        dec = self.decoder2(dec, enc1)
        return self.out(self.decoder1(dec))


class FourStageUNet(nn.Module):
    """An encoder returning four feature maps (1/2 .. 1/16 resolution) and a
    :class:`UnetrStyleDecoder`; inputs are zero-padded to multiples of 16 and the logits cropped."""

    def __init__(self, encoder: nn.Module, decoder: UnetrStyleDecoder) -> None:
        super().__init__()
        self.divisible_by = ENCODER_DIVISOR
        self.deep_supervision = False
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        return crop_to(self.decoder(x, self.encoder(x)), size)


def check_four_stages(name: str, dims: Sequence[int], depths: Sequence[int]) -> None:
    if len(dims) != 4 or len(depths) != 4:
        raise ValueError(f"{name} has four stages: dims and depths need 4 entries, got {list(dims)}, {list(depths)}")


class UXNet3D(FourStageUNet):
    """3D UX-Net: :class:`UXNetEncoder` + :class:`UnetrStyleDecoder`.

    Args:
        in_channels, num_classes: input and output channels.
        dims: stage widths (48, 96, 192, 384).
        depths: UX blocks per stage (2, 2, 2, 2).
        hidden_size: width of the bottleneck conv block (768).
        kernel_size: the depth-wise kernel (7).
        drop_path_rate: stochastic depth, rising linearly over the blocks (0 in the reference).

    Example:
        >>> net = UXNet3D(1, 14)
        >>> net(torch.zeros(1, 1, 64, 64, 64)).shape
        torch.Size([1, 14, 64, 64, 64])
    """

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int] = (48, 96, 192, 384),
                 depths: Sequence[int] = (2, 2, 2, 2), hidden_size: int = 768, kernel_size: int = 7,
                 drop_path_rate: float = 0.0) -> None:
        check_four_stages("3D UX-Net", dims, depths)
        super().__init__(UXNetEncoder(in_channels, dims, depths, kernel_size, drop_path_rate),
                         UnetrStyleDecoder(in_channels, num_classes, dims, hidden_size))


def uxnet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration (Sec. 3, Table 1)."""
    return {"dims": [48, 96, 192, 384], "depths": [2, 2, 2, 2], "hidden_size": 768, "kernel_size": 7,
            "drop_path_rate": 0.0}


@register_model(family="convnext", paper=UXNET_PAPER, spatial_dims=(3,), deep_supervision=False,
                defaults=uxnet_defaults,
                tiny_kwargs={"deep_supervision": False, "dims": [4, 8, 16, 32], "depths": [1, 1, 1, 1],
                             "hidden_size": 32, "kernel_size": 3},
                extra={"tags": ["cnn", "residual"], "divisible_by": ENCODER_DIVISOR,
                       "paper_params": 53.0e6, "paper_gflops": 639.4, "paper_patch": [96, 96, 96],
                       "paper_setup": "1 in, 14 classes (BTCV-style), 96^3, widths 48-384, hidden 768",
                       "kwargs_note": PLAN_NOTE})
def uxnet_3d(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             dims: Sequence[int] = (48, 96, 192, 384), depths: Sequence[int] = (2, 2, 2, 2), hidden_size: int = 768,
             kernel_size: int = 7, drop_path_rate: float = 0.0, n_stages: Any = None, features_per_stage: Any = None,
             kernel_sizes: Any = None, strides: Any = None) -> UXNet3D:
    """3D UX-Net (large-kernel depth-wise ConvNeXt encoder, UNETR decoder), the paper's widths by
    default. Plan topology keywords are ignored."""
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return UXNet3D(in_channels, num_classes, tuple(dims), tuple(depths), hidden_size, kernel_size, drop_path_rate)
