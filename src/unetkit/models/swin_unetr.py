"""SwinUNETR: a Swin Transformer encoder with a convolutional U-Net decoder (family ``transformer``).

Hatamizadeh, Nath, Tang, Yang, Roth, Xu, "Swin UNETR: Swin Transformers for Semantic Segmentation
of Brain Tumors in MRI Images", BrainLes @ MICCAI 2021 (arXiv:2201.01266), Fig. 1; the parameter
count 62.19M (feature size 48) is the one reported for BTCV in Tang et al., "Self-Supervised
Pre-Training of Swin Transformers for 3D Medical Image Analysis", CVPR 2022 (Table 5). Layout
checked against MONAI's ``SwinUNETR`` (v1, the authors' reference): patch 2, window 7, depths
(2, 2, 2, 2), heads (3, 6, 12, 24), MLP ratio 4, qkv bias, patch merging to 2C after every stage,
``UnetrBasicBlock`` / ``UnetrUpBlock`` with residual blocks and instance norm; the 62.19M are that
network with 1 input channel and 14 classes.

The five encoder outputs (patch embedding and the four stages, each layer-normalized without
affine) feed the decoder; the input itself feeds the full-resolution skip. Windows shrink on axes
smaller than 7 and feature maps are padded to the window at run time; inputs whose size is not a
multiple of 32 are zero-padded and the logits cropped. No deep supervision (the paper has none).
The 2D variant (MONAI supports it) uses 2x2 patches and 7x7 windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import (PatchMerging, SwinStage, UnetResBlock, UnetrUpBlock, crop_to,
                                             init_transformer_, pad_to_multiple)
from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model

SWIN_UNETR_PAPER = ("Hatamizadeh et al., Swin UNETR, BrainLes 2021, arXiv:2201.01266 (Fig. 1); Tang et al., "
                    "Self-Supervised Pre-Training of Swin Transformers for 3D Medical Image Analysis, CVPR 2022 "
                    "(Table 5: 62.19M parameters, feature size 48)")


class SwinUNETR(nn.Module):
    """Swin encoder (patch 2, four stages with patch merging) + residual convolutional decoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels, num_classes: input and output channels.
        feature_size: embedding width C (48 in the paper); stages have C, 2C, 4C, 8C, bottleneck 16C.
        depths, num_heads: Swin blocks and heads per stage (four stages).
        window_size: attention window (7).
        qkv_bias, mlp_ratio: as in Swin-T.

    Example:
        >>> net = SwinUNETR(3, 1, 14)
        >>> net(torch.zeros(1, 1, 64, 64, 64)).shape
        torch.Size([1, 14, 64, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, feature_size: int = 48,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, qkv_bias: bool = True, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"SwinUNETR has four Swin stages: depths and num_heads need 4 entries, got "
                             f"{list(depths)} and {list(num_heads)}")
        d, fs = spatial_dims, feature_size
        self.divisible_by = 32
        self.patch_embed = conv_class(d)(in_channels, fs, 2, 2)
        window = (window_size,) * d
        self.stages = nn.ModuleList([SwinStage(fs * 2 ** i, depths[i], num_heads[i], window, mlp_ratio, qkv_bias)
                                     for i in range(4)])
        self.merges = nn.ModuleList([PatchMerging(fs * 2 ** i, d) for i in range(4)])
        self.encoder1 = UnetResBlock(d, in_channels, fs)
        self.encoder2 = UnetResBlock(d, fs, fs)
        self.encoder3 = UnetResBlock(d, 2 * fs, 2 * fs)
        self.encoder4 = UnetResBlock(d, 4 * fs, 4 * fs)
        self.encoder10 = UnetResBlock(d, 16 * fs, 16 * fs)
        self.decoder5 = UnetrUpBlock(d, 16 * fs, 8 * fs)
        self.decoder4 = UnetrUpBlock(d, 8 * fs, 4 * fs)
        self.decoder3 = UnetrUpBlock(d, 4 * fs, 2 * fs)
        self.decoder2 = UnetrUpBlock(d, 2 * fs, fs)
        self.decoder1 = UnetrUpBlock(d, fs, fs)
        self.out = conv_class(d)(fs, num_classes, 1)
        self.deep_supervision = False
        self.apply(init_transformer_)

    @staticmethod
    def _normed(t: torch.Tensor) -> torch.Tensor:
        """Channels-last tokens -> layer-normalized (no affine) channels-first map."""
        t = F.layer_norm(t, t.shape[-1:])
        return t.movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        t = self.patch_embed(x).movedim(1, -1)  # (B, *S/2, C)
        hidden = [self._normed(t)]
        for stage, merge in zip(self.stages, self.merges):
            t = merge(stage(t))
            hidden.append(self._normed(t))
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        dec = self.encoder10(hidden[4])
        dec = self.decoder5(dec, hidden[3])
        dec = self.decoder4(dec, enc3)
        dec = self.decoder3(dec, enc2)
        dec = self.decoder2(dec, enc1)
        dec = self.decoder1(dec, enc0)
        return crop_to(self.out(dec), size)


def swin_unetr_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration (feature size 48, Swin-T-like depths and heads, window 7)."""
    return {"feature_size": 48, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
            "qkv_bias": True, "mlp_ratio": 4.0}


@register_model(family="transformer", paper=SWIN_UNETR_PAPER, deep_supervision=False, defaults=swin_unetr_defaults,
                tiny_kwargs={"deep_supervision": False, "feature_size": 8, "depths": [2, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": 4},
                extra={"tags": ["hybrid", "transformer", "attention"],
                       "divisible_by": 32, "pads_input": True, "paper_params": 62_190_000,
                       "paper_setup": "3D, in 1, 14 classes, feature size 48",
                       "profile_patch_3d": [96, 96, 96], "profile_patch_2d": [224, 224]})
def swin_unetr(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               feature_size: int = 48, depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
               window_size: int = 7, qkv_bias: bool = True, mlp_ratio: float = 4.0, n_stages: Any = None,
               features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> SwinUNETR:
    """SwinUNETR (Swin encoder, convolutional decoder), feature size 48 by default.

    The plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are
    accepted so ``--arch swin_unetr`` can reuse any plan, and ignored (the architecture is fixed).
    """
    del deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return SwinUNETR(spatial_dims, in_channels, num_classes, feature_size, tuple(depths), tuple(num_heads),
                     window_size, qkv_bias, mlp_ratio)
