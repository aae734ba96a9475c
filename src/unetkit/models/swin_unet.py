"""Swin-Unet: a pure-transformer U-Net of Swin blocks with patch expanding (family ``transformer``).

Cao, Wang, Chen, Jiang, Zhang, Tian, Wang, "Swin-Unet: Unet-like Pure Transformer for Medical
Image Segmentation", ECCV Workshops 2022 (arXiv:2105.05537), Fig. 1 (architecture), Fig. 3
(patch expanding) and Table 1 (Synapse); 27.17M parameters is the count reported for Swin-Unet
in the comparison tables of the follow-up literature for this configuration (e.g. MISSFormer,
Huang et al. 2021, Table 1). Reference code: HuCaoFighting/Swin-Unet
``SwinTransformerSys`` with ``configs/swin_tiny_patch4_window7_224_lite.yaml``: 224x224 input,
patch 4, embedding 96, encoder depths (2, 2, 2, 2), heads (3, 6, 12, 24), window 7, MLP ratio 4,
qkv bias; the decoder mirrors the encoder depths (the reference builds its up-layers from the
encoder depths) with patch expanding (linear 2C, rearrange to 2x resolution and C/2 channels,
layer norm), a linear layer fusing each skip concatenation, and a final 4x patch expanding and
a 1x1 convolution without bias. The 27.17M are that network with 3 input channels (the reference
repeats a grey image to 3) and 9 classes.

Differences: windows shrink / feature maps are padded at run time instead of being fixed to
224x224 (so any plan patch works), and inputs whose size is not a multiple of 32 are zero-padded
and the logits cropped. 2D only (the paper is 2D). No deep supervision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.attention_blocks import PatchMerging, SwinStage, crop_to, init_transformer_, pad_to_multiple
from unetkit.models.registry import register_model

SWIN_UNET_PAPER = ("Cao et al., Swin-Unet: Unet-like Pure Transformer for Medical Image Segmentation, "
                   "ECCV Workshops 2022, arXiv:2105.05537 (Fig. 1, Fig. 3; 27.17M parameters at 224x224, 9 classes)")


class PatchExpand(nn.Module):
    """Swin-Unet patch expanding (Fig. 3): linear ``C -> scale**2 * C_out`` without bias, rearranged
    to ``scale``x the resolution with ``C_out`` channels, layer norm. Channels-last (B, H, W, C)."""

    def __init__(self, dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, self.out_dim))


class SwinUnet(nn.Module):
    """Patch embedding (4x4) -> 4 Swin stages with patch merging -> bottleneck -> 3 decoder
    stages (patch expanding, skip concatenation + linear, Swin blocks) -> 4x patch expanding -> 1x1
    head.

    Args:
        in_channels, num_classes: input and output channels.
        embed_dim: C of the first stage (96 for Swin-T).
        depths, num_heads: Swin blocks and heads per encoder stage (the decoder mirrors them).
        window_size: attention window (7).
        patch_size: patch embedding size (4).

    Example:
        >>> SwinUnet(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, patch_size: int = 4,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        n = len(depths)
        if len(num_heads) != n or n < 2:
            raise ValueError(f"depths and num_heads need the same number (>= 2) of stages, got {list(depths)}, "
                             f"{list(num_heads)}")
        window = (window_size, window_size)
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.divisible_by = patch_size * 2 ** (n - 1)
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList([SwinStage(dims[i], depths[i], num_heads[i], window, mlp_ratio, qkv_bias)
                                      for i in range(n)])
        self.merges = nn.ModuleList([PatchMerging(dims[i], 2) for i in range(n - 1)])
        self.norm = nn.LayerNorm(dims[-1])
        # decoder, deepest first: expand the bottleneck, then per level fuse skip, Swin blocks, expand
        self.expands = nn.ModuleList([PatchExpand(dims[i], dims[i] // 2, 2) for i in range(n - 1, 0, -1)])
        self.concat_back = nn.ModuleList([nn.Linear(2 * dims[i], dims[i]) for i in range(n - 2, -1, -1)])
        self.decoder = nn.ModuleList([SwinStage(dims[i], depths[i], num_heads[i], window, mlp_ratio, qkv_bias)
                                      for i in range(n - 2, -1, -1)])
        self.norm_up = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(embed_dim, embed_dim, patch_size)
        self.output = nn.Conv2d(embed_dim, num_classes, 1, bias=False)
        self.deep_supervision = False
        self.apply(init_transformer_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        t = self.patch_norm(self.patch_embed(x).movedim(1, -1))
        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                t = self.merges[i - 1](t)
            skips.append(t)  # the reference keeps the stage *input* as skip
            t = stage(t)
        t = self.norm(t)
        for i, (expand, fuse, stage) in enumerate(zip(self.expands, self.concat_back, self.decoder)):
            t = expand(t)
            t = stage(fuse(torch.cat((t, skips[-(i + 2)]), dim=-1)))
        t = self.final_expand(self.norm_up(t))
        return crop_to(self.output(t.movedim(-1, 1)), size)


def swin_unet_defaults(spatial_dims: int) -> dict[str, Any]:
    """Swin-T "lite" configuration of the paper (patch 4, C = 96, depths 2,2,2,2, window 7)."""
    return {"embed_dim": 96, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "patch_size": 4,
            "mlp_ratio": 4.0, "qkv_bias": True}


@register_model(family="transformer", paper=SWIN_UNET_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=swin_unet_defaults,
                tiny_kwargs={"deep_supervision": False, "embed_dim": 8, "depths": [2, 1, 1], "num_heads": [1, 2, 2], "window_size": 4,
                             "patch_size": 2},
                extra={"tags": ["transformer", "attention"],
                       "divisible_by": 32, "pads_input": True, "paper_params": 27_170_000,
                       "paper_setup": "2D, in 3, 9 classes, 224x224", "profile_patch_2d": [224, 224]})
def swin_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              embed_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
              window_size: int = 7, patch_size: int = 4, mlp_ratio: float = 4.0, qkv_bias: bool = True,
              n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
              strides: Any = None) -> SwinUnet:
    """Swin-Unet (pure Swin transformer U-Net with patch expanding), Swin-T lite by default.

    Plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are accepted
    (so ``--arch swin_unet`` reuses any 2D plan) and ignored.
    """
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return SwinUnet(in_channels, num_classes, embed_dim, tuple(depths), tuple(num_heads), window_size, patch_size,
                    mlp_ratio, qkv_bias)
