"""UNETR: a ViT-B/16 encoder with a convolutional U-Net decoder (family ``transformer``).

Hatamizadeh, Tang, Nath, Yang, Myronenko, Landman, Roth, Xu, "UNETR: Transformers for 3D Medical
Image Segmentation", WACV 2022 (arXiv:2103.10504), Fig. 2 (architecture) and Table 1/5 (BTCV:
92.58M parameters, 41.19 GFLOPs at 96^3). Layout checked against MONAI's ``UNETR`` (the authors'
reference implementation, ``monai.networks.nets.unetr``) with ``feature_size=16, hidden_size=768,
mlp_dim=3072, num_heads=12, proj_type="conv", norm_name="instance", conv_block=True,
res_block=True, qkv_bias=False``: the 92.58M are that network with 1 input channel, 14 output
classes (BTCV) and ``img_size=96^3`` (216 learned positional embeddings). Our count for that
configuration: see tests/test_zoo_transformers.py.

Differences from the reference: the transformer output of layers 3/6/9/12 feeds the decoder as
in the paper; the positional embedding is interpolated at run time when the input's token grid
differs from ``img_size`` (the trainer does not pass the plan's patch), and inputs whose size is
not a multiple of 16 are zero-padded and the logits cropped. No deep supervision (the paper has
none). The 2D variant is the same design with 16x16 patches (not in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.attention_blocks import (UnetResBlock, UnetrPrUpBlock, UnetrUpBlock, ViTBlock, crop_to,
                                             init_transformer_, pad_to_multiple, resize_pos_embed)
from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model

UNETR_PAPER = ("Hatamizadeh et al., UNETR: Transformers for 3D Medical Image Segmentation, WACV 2022, "
               "arXiv:2103.10504 (Fig. 2; 92.58M parameters at 96^3 on BTCV)")
#: ViT patch size; the decoder undoes it with four 2x upsamplings.
UNETR_PATCH = 16


class UNETR(nn.Module):
    """ViT encoder (patch 16, ``num_layers`` blocks) whose layers L/4, L/2, 3L/4 and L are
    reshaped into feature maps, upsampled by UNETR's deconvolution blocks and merged by a
    residual convolutional decoder (UNETR Fig. 2).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        img_size: the patch size the positional embedding is built for (tokens = img_size / 16).
        feature_size: width of the full-resolution decoder stage (16 in the paper).
        hidden_size, mlp_dim, num_layers, num_heads: the ViT (ViT-B: 768, 3072, 12, 12).
        qkv_bias: bias of the qkv projection (MONAI's UNETR: False).
        dropout: dropout of the transformer.

    Example:
        >>> net = UNETR(3, 1, 14, (96, 96, 96))
        >>> net(torch.zeros(1, 1, 96, 96, 96)).shape
        torch.Size([1, 14, 96, 96, 96])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, img_size: Sequence[int],
                 feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072, num_layers: int = 12,
                 num_heads: int = 12, qkv_bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if len(img_size) != spatial_dims or any(s % UNETR_PATCH for s in img_size):
            raise ValueError(f"img_size must be {spatial_dims} multiples of {UNETR_PATCH}, got {list(img_size)}")
        if num_layers < 4 or num_layers % 4:
            raise ValueError(f"num_layers must be a positive multiple of 4 (skips at L/4, L/2, 3L/4), got {num_layers}")
        d, fs = spatial_dims, feature_size
        self.grid = tuple(s // UNETR_PATCH for s in img_size)
        self.skip_layers = (num_layers // 4 - 1, num_layers // 2 - 1, 3 * num_layers // 4 - 1)
        self.patch_embed = conv_class(d)(in_channels, hidden_size, UNETR_PATCH, UNETR_PATCH)
        n_tokens = 1
        for g in self.grid:
            n_tokens *= g
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, hidden_size))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([ViTBlock(hidden_size, num_heads, mlp_dim, qkv_bias, dropout)
                                     for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size)
        self.encoder1 = UnetResBlock(d, in_channels, fs)
        self.encoder2 = UnetrPrUpBlock(d, hidden_size, 2 * fs, num_layer=2)
        self.encoder3 = UnetrPrUpBlock(d, hidden_size, 4 * fs, num_layer=1)
        self.encoder4 = UnetrPrUpBlock(d, hidden_size, 8 * fs, num_layer=0)
        self.decoder5 = UnetrUpBlock(d, hidden_size, 8 * fs)
        self.decoder4 = UnetrUpBlock(d, 8 * fs, 4 * fs)
        self.decoder3 = UnetrUpBlock(d, 4 * fs, 2 * fs)
        self.decoder2 = UnetrUpBlock(d, 2 * fs, fs)
        self.out = conv_class(d)(fs, num_classes, 1)
        self.deep_supervision = False
        self.apply(init_transformer_)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def _to_map(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, UNETR_PATCH)
        tokens = self.patch_embed(x)
        grid = tuple(tokens.shape[2:])
        tokens = self.pos_drop(tokens.flatten(2).transpose(1, 2) + resize_pos_embed(self.pos_embed, self.grid, grid))
        hidden = []
        for block in self.blocks:
            tokens = block(tokens)
            hidden.append(tokens)
        z12 = self.norm(tokens)
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(self._to_map(hidden[self.skip_layers[0]], grid))
        enc3 = self.encoder3(self._to_map(hidden[self.skip_layers[1]], grid))
        enc4 = self.encoder4(self._to_map(hidden[self.skip_layers[2]], grid))
        dec = self.decoder5(self._to_map(z12, grid), enc4)
        dec = self.decoder4(dec, enc3)
        dec = self.decoder3(dec, enc2)
        dec = self.decoder2(dec, enc1)
        return crop_to(self.out(dec), size)


def unetr_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration: ViT-B/16, feature size 16, positional embedding for 96^3
    (3D) or 224^2 (2D)."""
    return {"img_size": [96] * 3 if spatial_dims == 3 else [224] * 2, "feature_size": 16, "hidden_size": 768,
            "mlp_dim": 3072, "num_layers": 12, "num_heads": 12, "qkv_bias": False, "dropout": 0.0}


@register_model(family="transformer", paper=UNETR_PAPER, deep_supervision=False, defaults=unetr_defaults,
                tiny_kwargs={"deep_supervision": False, "img_size": None, "feature_size": 4, "hidden_size": 32, "mlp_dim": 64, "num_layers": 4,
                             "num_heads": 2},
                extra={"tags": ["hybrid", "transformer", "attention"],
                       "divisible_by": UNETR_PATCH, "pads_input": True, "patch_kwarg": "img_size",
                       "paper_params": 92_580_000, "paper_setup": "3D, in 1, 14 classes, img_size 96^3",
                       "profile_patch_3d": [96, 96, 96], "profile_patch_2d": [224, 224]})
def unetr(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
          img_size: Sequence[int] | None = None, feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072,
          num_layers: int = 12, num_heads: int = 12, qkv_bias: bool = False, dropout: float = 0.0,
          n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
          strides: Any = None) -> UNETR:
    """UNETR (ViT-B/16 encoder, convolutional decoder), the paper's BTCV configuration by default.

    ``img_size`` is the patch the positional embedding is sized for (default 96^3 / 224^2; other
    inputs interpolate it). The plan keywords ``n_stages``, ``features_per_stage``,
    ``kernel_sizes``, ``strides`` are accepted so ``--arch unetr`` can reuse any plan, and ignored:
    the architecture is fixed by the paper.
    """
    del deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    if img_size is None:
        img_size = unetr_defaults(spatial_dims)["img_size"]
    return UNETR(spatial_dims, in_channels, num_classes, tuple(int(s) for s in img_size), feature_size, hidden_size,
                 mlp_dim, num_layers, num_heads, qkv_bias, dropout)
