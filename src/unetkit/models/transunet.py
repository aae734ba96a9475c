"""TransUNet: an R50-ViT-B/16 hybrid encoder with a cascaded upsampler (family ``transformer``).

Chen, Lu, Yu, Luo, Adeli, Wang, Lu, Yuille, Zhou, "TransUNet: Transformers Make Strong Encoders
for Medical Image Segmentation", arXiv:2102.04306, 2021, Fig. 1 (architecture) and Sec. 4.1
(R50-ViT-B/16, 224x224 input, 12 transformer layers, hidden 768, 12 heads, MLP 3072; cascaded
upsampler with channels 256, 128, 64, 16 and three skip connections). The paper does not print a
parameter count; 105.28M (24.64 GFLOPs) is the figure for this configuration in the comparison
tables of the follow-up literature (e.g. UCTransNet, Wang et al., AAAI 2022, Table 1; MISSFormer,
Huang et al. 2021). Reference code: Beckschen/TransUNet ``vit_seg_modeling.py`` /
``vit_seg_modeling_resnet_skip.py`` with ``get_r50_b16_config()``: ResNet-50 v2 root and the
first three stages (3, 4, 9 bottleneck units, weight-standardized convolutions, group norm
32 groups), a 1x1 patch embedding of the 14x14x1024 feature map, learned positional embedding,
``conv_more`` 768->512 (3x3 conv + batch norm + ReLU), four decoder blocks (bilinear x2, skip
concatenation, two 3x3 conv + BN + ReLU) and a 3x3 segmentation head. The 105.28M are that
network with 3 input channels (the reference repeats a grey image to 3) and 9 classes.

Differences: the root max pooling pads by 1 (the reference pads by 0 and zero-pads the 55x55
skip back to 56x56; same parameters); the positional embedding is interpolated at run time when
the input's token grid differs from ``img_size``; inputs whose size is not a multiple of 16 are
zero-padded and the logits cropped. 2D only (the paper is 2D). No deep supervision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import ViTBlock, crop_to, init_transformer_, pad_to_multiple, resize_pos_embed
from unetkit.models.registry import register_model

TRANSUNET_PAPER = ("Chen et al., TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation, "
                   "arXiv:2102.04306 (Fig. 1, Sec. 4.1: R50-ViT-B/16 at 224x224; 105.28M parameters as tabulated "
                   "by UCTransNet, AAAI 2022, Table 1)")


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardization (Qiao et al. 2019), as in BiT's ResNet v2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) / torch.sqrt(var + 1e-5), self.bias, self.stride, self.padding)


class Bottleneck(nn.Module):
    """ResNet v2 bottleneck unit of TransUNet's R50 (1x1, 3x3 strided, 1x1; group norm, ReLU;
    projected shortcut when width or stride change)."""

    def __init__(self, cin: int, cout: int, cmid: int, stride: int = 1) -> None:
        super().__init__()
        self.gn1 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn2 = nn.GroupNorm(32, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride, 1, bias=False)
        self.gn3 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.downsample = StdConv2d(cin, cout, 1, stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.gn_proj(self.downsample(x)) if self.project else x
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(res + self.gn3(self.conv3(y)))


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias) + batch norm + ReLU (TransUNet's ``Conv2dReLU``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TransUNet(nn.Module):
    """R50 (root + 3 stages) -> 1x1 patch embedding -> ViT -> cascaded upsampler with 3 skips.

    Args:
        in_channels, num_classes: input and output channels.
        img_size: input size the positional embedding is built for (224x224: 14x14 tokens).
        units: bottleneck units of the three ResNet stages (3, 4, 9).
        width: ResNet root width (64).
        hidden_size, mlp_dim, num_layers, num_heads: the ViT (ViT-B: 768, 3072, 12, 12).
        decoder_channels: cascaded upsampler widths (256, 128, 64, 16).
        dropout: transformer dropout (0.1 in the reference).

    Example:
        >>> TransUNet(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int] = (224, 224),
                 units: Sequence[int] = (3, 4, 9), width: int = 64, hidden_size: int = 768, mlp_dim: int = 3072,
                 num_layers: int = 12, num_heads: int = 12, decoder_channels: Sequence[int] = (256, 128, 64, 16),
                 dropout: float = 0.1) -> None:
        super().__init__()
        if len(units) != 3 or len(decoder_channels) != 4:
            raise ValueError(f"TransUNet has 3 ResNet stages and 4 decoder blocks, got units {list(units)} and "
                             f"decoder_channels {list(decoder_channels)}")
        self.divisible_by = 16
        self.grid = tuple(int(s) // 16 for s in img_size)
        self.root = nn.Sequential(StdConv2d(in_channels, width, 7, 2, 3, bias=False),
                                  nn.GroupNorm(32, width, eps=1e-6), nn.ReLU(inplace=True))
        stages, cin = [], width
        for i, n in enumerate(units):
            cout, cmid = width * 4 * 2 ** i, width * 2 ** i
            stages.append(nn.Sequential(*[Bottleneck(cin if u == 0 else cout, cout, cmid, 2 if (u == 0 and i > 0) else 1)
                                          for u in range(n)]))
            cin = cout
        self.body = nn.ModuleList(stages)
        self.patch_embed = nn.Conv2d(cin, hidden_size, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], hidden_size))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([ViTBlock(hidden_size, num_heads, mlp_dim, True, dropout, eps=1e-6)
                                     for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        head = 512
        self.conv_more = ConvBNReLU(hidden_size, head)
        skips = [width * 8, width * 4, width, 0]  # stage 2, stage 1, root; none at full resolution
        ins = [head, *decoder_channels[:-1]]
        self.decoder = nn.ModuleList([nn.Sequential(ConvBNReLU(i + s, o), ConvBNReLU(o, o))
                                      for i, s, o in zip(ins, skips, decoder_channels)])
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        # parameter-free places where DA-TransUNet (hybrid_cnn_transformer.py) puts its dual-attention heads
        self.embed_attention: nn.Module = nn.Identity()
        self.skip_attention = nn.ModuleList([nn.Identity() for _ in range(3)])
        self.deep_supervision = False
        self.apply(init_transformer_)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        root = self.root(x)
        features = [root]
        y = F.max_pool2d(root, 3, 2, 1)
        for stage in self.body:
            y = stage(y)
            features.append(y)
        tokens = self.embed_attention(self.patch_embed(features.pop()))
        grid = tuple(tokens.shape[2:])
        tokens = self.pos_drop(tokens.flatten(2).transpose(1, 2) + resize_pos_embed(self.pos_embed, self.grid, grid))
        for block in self.blocks:
            tokens = block(tokens)
        y = self.conv_more(self.norm(tokens).transpose(1, 2).reshape(tokens.shape[0], -1, *grid))
        skips = [attend(f) for attend, f in zip(self.skip_attention, features[::-1])] + [None]  # 1/8, 1/4, 1/2, none
        for block, skip in zip(self.decoder, skips):
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
            if skip is not None:
                y = torch.cat((y, skip), dim=1)
            y = block(y)
        return crop_to(self.head(y), size)


def transunet_defaults(spatial_dims: int) -> dict[str, Any]:
    """R50-ViT-B/16 at 224x224, the paper's configuration."""
    return {"img_size": [224, 224], "units": [3, 4, 9], "width": 64, "hidden_size": 768, "mlp_dim": 3072,
            "num_layers": 12, "num_heads": 12, "decoder_channels": [256, 128, 64, 16], "dropout": 0.1}


@register_model(family="transformer", paper=TRANSUNET_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=transunet_defaults,
                tiny_kwargs={"deep_supervision": False, "img_size": [48, 64], "units": [1, 1, 1], "width": 32, "hidden_size": 32, "mlp_dim": 64,
                             "num_layers": 2, "num_heads": 2, "decoder_channels": [16, 16, 8, 8], "dropout": 0.0},
                extra={"tags": ["hybrid", "transformer", "attention", "residual"],
                       "divisible_by": 16, "pads_input": True, "patch_kwarg": "img_size", "paper_params": 105_280_000,
                       "paper_setup": "2D, in 3, 9 classes, 224x224", "profile_patch_2d": [224, 224]})
def transunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              img_size: Sequence[int] = (224, 224), units: Sequence[int] = (3, 4, 9), width: int = 64,
              hidden_size: int = 768, mlp_dim: int = 3072, num_layers: int = 12, num_heads: int = 12,
              decoder_channels: Sequence[int] = (256, 128, 64, 16), dropout: float = 0.1, n_stages: Any = None,
              features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> TransUNet:
    """TransUNet (R50-ViT-B/16 hybrid encoder, cascaded upsampler), the paper's configuration.

    ``img_size`` sizes the positional embedding (other inputs interpolate it). Plan keywords
    ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are accepted (so
    ``--arch transunet`` reuses any 2D plan) and ignored.
    """
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return TransUNet(in_channels, num_classes, tuple(img_size), tuple(units), width, hidden_size, mlp_dim, num_layers,
                     num_heads, tuple(decoder_channels), dropout)
