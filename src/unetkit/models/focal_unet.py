"""Focal-UNet: a Swin-Unet-like U-Net whose attention is replaced by focal modulation
(family ``transformer``).

Naderi, Givkashi, Piri, Karimi, Samavi, "Focal-UNet: UNet-like Focal Modulation for Medical
Image Segmentation", arXiv:2212.09263, 2022, Fig. 1 (architecture: FocalNet-T encoder,
asymmetric, shallower decoder). Focal modulation: Yang, Li, Dai, Gao, "Focal Modulation
Networks", NeurIPS 2022, Eq. 7-10 (hierarchical depth-wise contextualization, gated aggregation,
element-wise modulation). Reference code: givkashi/Focal-Unet (``networks/FocalNet/classification/
focalUnet.py`` built from ``focalnet_tiny_lrf``): 224x224 input with 3 channels, patch 4, embedding
96, encoder depths (2, 2, 6, 2), focal level 3 and focal window 3 in every stage, MLP ratio 4;
strided 2x2 convolution + layer norm as downsampling; decoder of one focal block per level with a
linear layer fusing each skip concatenation and 2x2 transposed convolution + layer norm as
"patch expanding"; a final 4x4 transposed convolution and a 7x7 output convolution without bias.

The paper reports no parameter count (its tables give Dice and HD95 only); the count of this
configuration (3 input channels, 9 classes) is pinned in tests/test_zoo_transformers.py. The
reference creates two layer norms it never uses (in its final expand and in an unused wrapper);
they are not built here. Inputs whose size is not a multiple of 32 are zero-padded and the
logits cropped. 2D only (as the paper). No deep supervision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import Mlp, crop_to, init_transformer_, pad_to_multiple
from unetkit.models.registry import register_model

FOCAL_UNET_PAPER = ("Naderi et al., Focal-UNet: UNet-like Focal Modulation for Medical Image Segmentation, "
                    "arXiv:2212.09263 (Fig. 1; no parameter count reported); Yang et al., Focal Modulation "
                    "Networks, NeurIPS 2022 (Eq. 7-10)")


class FocalModulation(nn.Module):
    """Focal modulation (Yang et al. 2022, Eq. 7-10): a linear layer gives query, context and
    ``L + 1`` gates; ``L`` depth-wise convolutions (kernel ``window + 2l``) + GELU build the context
    hierarchy, plus a global average level; the gated sum goes through a 1x1 convolution (the
    modulator) that multiplies the query, then a linear projection. Channels-last (B, H, W, C)."""

    def __init__(self, dim: int, focal_window: int = 3, focal_level: int = 3, focal_factor: int = 2) -> None:
        super().__init__()
        self.dim, self.focal_level = dim, focal_level
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Linear(dim, dim)
        self.focal_layers = nn.ModuleList()
        for k in range(focal_level):
            size = focal_factor * k + focal_window
            self.focal_layers.append(nn.Conv2d(dim, dim, size, 1, size // 2, groups=dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.dim
        q, ctx, gates = torch.split(self.f(x).movedim(-1, 1), (c, c, self.focal_level + 1), dim=1)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = F.gelu(layer(ctx))
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        ctx_global = F.gelu(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        out = q * self.h(ctx_all)
        return self.proj(out.movedim(1, -1))


class FocalBlock(nn.Module):
    """FocalNet block: ``x + FM(LN(x))``, ``x + MLP(LN(x))`` (no layer scale, pre-norm)."""

    def __init__(self, dim: int, focal_level: int, focal_window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(dim, focal_window, focal_level)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.modulation(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ConvResample(nn.Module):
    """Strided (transposed) k x k convolution + layer norm: FocalNet's patch embedding (down) or
    Focal-UNet's patch expanding (up). Channels-last in and out."""

    def __init__(self, in_dim: int, out_dim: int, factor: int, up: bool, norm: bool = True) -> None:
        super().__init__()
        cls = nn.ConvTranspose2d if up else nn.Conv2d
        self.proj = cls(in_dim, out_dim, factor, factor)
        self.norm = nn.LayerNorm(out_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x.movedim(-1, 1)).movedim(1, -1))


class FocalUNet(nn.Module):
    """FocalNet encoder (4 stages), focal-modulation decoder (one block per level), 4x
    transposed-conv expanding and a 7x7 output convolution.

    Example:
        >>> FocalUNet(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 decoder_depths: Sequence[int] = (1, 1, 1), focal_levels: Sequence[int] = (3, 3, 3, 3),
                 focal_windows: Sequence[int] = (3, 3, 3, 3), patch_size: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        n = len(depths)
        if len(focal_levels) != n or len(focal_windows) != n or len(decoder_depths) != n - 1:
            raise ValueError("focal_levels and focal_windows need one entry per encoder stage and decoder_depths "
                             f"one per decoder stage ({n} and {n - 1}), got {list(focal_levels)}, "
                             f"{list(focal_windows)}, {list(decoder_depths)}")
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.divisible_by = patch_size * 2 ** (n - 1)
        self.patch_embed = ConvResample(in_channels, embed_dim, patch_size, up=False)
        self.encoder = nn.ModuleList([
            nn.Sequential(*[FocalBlock(dims[i], focal_levels[i], focal_windows[i], mlp_ratio) for _ in range(depths[i])])
            for i in range(n)])
        self.downsample = nn.ModuleList([ConvResample(dims[i], dims[i + 1], 2, up=False) for i in range(n - 1)])
        self.norm = nn.LayerNorm(dims[-1])
        self.upsample = nn.ModuleList([ConvResample(dims[i], dims[i - 1], 2, up=True) for i in range(n - 1, 0, -1)])
        self.concat_back = nn.ModuleList([nn.Linear(2 * dims[i], dims[i]) for i in range(n - 2, -1, -1)])
        self.decoder = nn.ModuleList([
            nn.Sequential(*[FocalBlock(dims[i], focal_levels[i], focal_windows[i], mlp_ratio)
                            for _ in range(decoder_depths[i])])
            for i in range(n - 2, -1, -1)])
        self.norm_up = nn.LayerNorm(embed_dim)
        self.final_expand = ConvResample(embed_dim, embed_dim, patch_size, up=True, norm=False)
        self.output = nn.Conv2d(embed_dim, num_classes, 7, padding=3, bias=False)
        self.deep_supervision = False
        self.apply(init_transformer_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        t = self.patch_embed(x.movedim(1, -1))
        skips = []
        for i, stage in enumerate(self.encoder):
            skips.append(t)
            t = stage(t)
            if i < len(self.downsample):
                t = self.downsample[i](t)
        t = self.norm(t)
        for i, (up, fuse, stage) in enumerate(zip(self.upsample, self.concat_back, self.decoder)):
            t = up(t)
            t = stage(fuse(torch.cat((t, skips[-(i + 2)]), dim=-1)))
        t = self.final_expand(self.norm_up(t))
        return crop_to(self.output(t.movedim(-1, 1)), size)


def focal_unet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The reference configuration (FocalNet-T with large receptive field: levels 3, windows 3)."""
    return {"embed_dim": 96, "depths": [2, 2, 6, 2], "decoder_depths": [1, 1, 1], "focal_levels": [3, 3, 3, 3],
            "focal_windows": [3, 3, 3, 3], "patch_size": 4, "mlp_ratio": 4.0}


@register_model(family="transformer", paper=FOCAL_UNET_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=focal_unet_defaults,
                tiny_kwargs={"deep_supervision": False, "embed_dim": 16, "depths": [1, 1, 1], "decoder_depths": [1, 1], "focal_levels": [2, 2, 2],
                             "focal_windows": [3, 3, 3], "patch_size": 2},
                extra={"tags": ["transformer"], "divisible_by": 32, "pads_input": True, "paper_params": None,
                       "paper_setup": "2D, in 3, 9 classes, 224x224 (paper gives no count)",
                       "profile_patch_2d": [224, 224]})
def focal_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2), decoder_depths: Sequence[int] = (1, 1, 1),
               focal_levels: Sequence[int] = (3, 3, 3, 3), focal_windows: Sequence[int] = (3, 3, 3, 3),
               patch_size: int = 4, mlp_ratio: float = 4.0, n_stages: Any = None, features_per_stage: Any = None,
               kernel_sizes: Any = None, strides: Any = None) -> FocalUNet:
    """Focal-UNet (focal-modulation U-Net), FocalNet-T (LRF) encoder by default.

    Plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are accepted
    (so ``--arch focal_unet`` reuses any 2D plan) and ignored.
    """
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return FocalUNet(in_channels, num_classes, embed_dim, tuple(depths), tuple(decoder_depths), tuple(focal_levels),
                     tuple(focal_windows), patch_size, mlp_ratio)
