"""3D transformer U-Nets sized to a fixed token grid: UNETR++, nnFormer and TransBTS (family
``transformer``).

All three are built for one input size (``img_size``: learned position tables, token-count
projections, or windows clamped to the grid), so they declare ``extra["patch_kwarg"]``: the
trainer builds them for the training patch rounded up to ``divisible_by`` and prediction rebuilds
the same tables (nothing is interpolated). Inputs smaller than that are zero-padded to the next
multiple of ``divisible_by`` and the logits cropped; a padded size other than the built one is an
error that names both sizes.

- UNETR++ (Shaker et al., "UNETR++: Delving into Efficient and Accurate 3D Medical Image
  Segmentation", IEEE TMI 2024, arXiv:2212.04497), Fig. 2-3, Table 1 (Synapse: 42.96M
  parameters). Reference: Amshaker/unetr_plus_plus ``network_architecture/synapse``.
- nnFormer (Zhou et al., "nnFormer: Volumetric Medical Image Segmentation via a 3D Transformer",
  IEEE TIP 2023, arXiv:2109.03201), Fig. 1, Synapse table (150.5M). Reference:
  282857341/nnFormer ``network_architecture/nnFormer_synapse.py``.
- TransBTS (Wang et al., "TransBTS: Multimodal Brain Tumor Segmentation Using Transformer",
  MICCAI 2021, arXiv:2103.04430), Fig. 1, Table 3 (32.99M). Reference: Rubics-Xuan/TransBTS
  ``models/TransBTS/TransBTS_downsample8x_skipconnection.py``.

Each class docstring lists where ours differs from the reference code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import UnetResBlock, crop_to, init_transformer_, pad_to_multiple
from unetkit.models.registry import register_model

Shape = tuple[int, ...]

#: What fixed designs do with a plan's topology (``--arch`` reuses any plan).
_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


def _grid(size: Sequence[int], stride: Sequence[int]) -> Shape:
    return tuple(int(s) // int(t) for s, t in zip(size, stride))


def _check_img_size(name: str, img_size: Sequence[int], divisor: Sequence[int]) -> Shape:
    size = tuple(int(s) for s in img_size)
    if len(size) != 3 or any(s <= 0 or s % d for s, d in zip(size, divisor)):
        raise ValueError(f"{name}: img_size must be 3 positive multiples of {list(divisor)}, got {list(img_size)}")
    return size


def _pad_to_built(name: str, x: torch.Tensor, multiple: int, built: Shape) -> tuple[torch.Tensor, Shape]:
    """``x`` zero-padded to multiples of ``multiple``, which must give the size the model was built for."""
    x, size = pad_to_multiple(x, multiple)
    if tuple(x.shape[2:]) != built:
        raise ValueError(f"{name} was built for img_size {list(built)}; an input of {list(size)} pads to "
                         f"{list(x.shape[2:])}. Build it for this patch (img_size=...).")
    return x, size


def _crop_coarse(outputs: list[torch.Tensor], size: Shape, full: Shape) -> list[torch.Tensor]:
    """Deep-supervision outputs of a padded input cropped to the unpadded input's share of each."""
    out = []
    for o in outputs:
        factors = [f // s for f, s in zip(full, o.shape[2:])]
        out.append(crop_to(o, [math.ceil(s / f) for s, f in zip(size, factors)]))
    return out


# ------------------------------------------------------------------------------------ UNETR++
UNETR_PP_PAPER = ("Shaker et al., UNETR++: Delving into Efficient and Accurate 3D Medical Image Segmentation, "
                  "IEEE TMI 2024, arXiv:2212.04497 (Fig. 2-3; Table 1: 42.96M parameters on Synapse)")


#: Dropout before each EPA block's 1x1x1 conv (fixed in the reference code).
UNETR_PP_CONV_DROPOUT = 0.1


class EfficientPairedAttention(nn.Module):
    """UNETR++'s EPA (Sec. III-B, Fig. 3): shared queries and keys; a channel branch (attention
    between L2-normalised query and key channels, temperature per head) and a spatial branch
    (queries against keys and values projected from ``tokens`` to ``proj_size`` by one shared
    linear map, E = F in the paper); each branch halves its width by a linear map, concatenated.

    The spatial branch concatenates its heads per token (the paper's Eq.); the reference code
    permutes (0, 3, 1, 2) before the reshape, mixing tokens and channels (the authors confirm the
    fix, 87.1 vs 87.2 Dice on Synapse: Amshaker/unetr_plus_plus issue 62). Same parameters.
    """

    def __init__(self, tokens: int, dim: int, proj_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"UNETR++: width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.temperature2 = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkvv = nn.Linear(dim, 4 * dim, bias=False)
        self.E = nn.Linear(tokens, proj_size)  # one map for keys and values (E = F)
        self.attn_drop = nn.Dropout(dropout)
        self.attn_drop_2 = nn.Dropout(dropout)
        self.out_proj = nn.Linear(dim, dim // 2)
        self.out_proj2 = nn.Linear(dim, dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q, k, v_channel, v_spatial = self.qkvv(x).view(b, n, 4, h, c // h).permute(2, 0, 3, 4, 1)  # (B, h, d, N)
        k_proj, v_proj = self.E(k), self.E(v_spatial)  # (B, h, d, P)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn_channel = self.attn_drop((q @ k.transpose(-2, -1) * self.temperature).softmax(-1))  # (B, h, d, d)
        x_channel = (attn_channel @ v_channel).permute(0, 3, 1, 2).reshape(b, n, c)
        attn_spatial = self.attn_drop_2((q.transpose(-2, -1) @ k_proj * self.temperature2).softmax(-1))  # (B, h, N, P)
        x_spatial = (attn_spatial @ v_proj.transpose(-2, -1)).permute(0, 2, 1, 3).reshape(b, n, c)
        return torch.cat((self.out_proj(x_spatial), self.out_proj2(x_channel)), dim=-1)


class EPABlock(nn.Module):
    """UNETR++'s transformer block (Fig. 3): learned position table, ``x + gamma * EPA(LN(x))``
    (layer scale from 1e-6), then a residual conv block (3x3x3, batch norm) followed by
    dropout (0.1) and a 1x1x1 conv, added back. ``dropout`` is the attention maps' dropout. Input and output (B, C, *grid)."""

    def __init__(self, grid: Shape, dim: int, proj_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.grid = tuple(grid)
        tokens = math.prod(self.grid)
        self.norm = nn.LayerNorm(dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.epa_block = EfficientPairedAttention(tokens, dim, proj_size, num_heads, dropout)
        self.conv51 = UnetResBlock(3, dim, dim, norm="batch")
        self.conv8 = nn.Sequential(nn.Dropout3d(UNETR_PP_CONV_DROPOUT), nn.Conv3d(dim, dim, 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *size = x.shape
        if tuple(size) != self.grid:
            raise ValueError(f"UNETR++ block built for a {list(self.grid)} grid got {list(size)}")
        t = x.flatten(2).transpose(1, 2) + self.pos_embed
        t = t + self.gamma * self.epa_block(self.norm(t))
        skip = t.transpose(1, 2).reshape(b, c, *size)
        return skip + self.conv8(self.conv51(skip))


class UnetrPPUpBlock(nn.Module):
    """Decoder stage: transposed conv (kernel = stride = ``up``, no bias), the skip added (not
    concatenated), then ``depth`` EPA blocks, or one residual conv block (instance norm) at full
    resolution (``grid=None``), where attention over every voxel would not fit."""

    def __init__(self, in_channels: int, out_channels: int, up: Sequence[int], grid: Shape | None,
                 proj_size: int, num_heads: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.transp_conv = nn.ConvTranspose3d(in_channels, out_channels, tuple(up), tuple(up), bias=False)
        if grid is None:
            self.decoder_block = UnetResBlock(3, out_channels, out_channels)
        else:
            self.decoder_block = nn.Sequential(*[EPABlock(grid, out_channels, proj_size, num_heads, dropout)
                                                 for _ in range(depth)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.decoder_block(self.transp_conv(x) + skip)


class UNETRPlusPlus(nn.Module):
    """UNETR++: a hierarchical encoder of EPA blocks over four resolutions, a decoder of EPA
    blocks with additive skips, a convolutional full-resolution stage and deep supervision.

    Encoder: a stem conv (kernel = stride = ``stem_stride``, no bias) + group norm (groups =
    input channels), then three 2x2x2 stride-2 convs (no bias) + group norm (2 channels per group),
    widths 2F, 4F, 8F, 16F (F = ``feature_size``), ``depths`` EPA blocks per stage. Decoder: three
    EPA stages (``decoder_depth`` blocks each) at the encoder's first three grids, then a
    transposed conv by ``stem_stride`` and a residual conv block fed by a conv block on the input.
    Heads: 1x1x1 convs at full resolution, at the first and at the second encoder grid.

    Differences from the reference code: EPA's spatial branch (see :class:`EfficientPairedAttention`);
    position tables and projections are sized from ``img_size`` (the reference hard-codes the
    Synapse grids 32^3..4^3 in its encoder, whatever its crop); the encoder's linear layers are
    initialised as the reference's (truncated normal 0.02), the rest as PyTorch's defaults.

    Example:
        >>> net = UNETRPlusPlus(1, 14, (64, 128, 128))
        >>> [tuple(o.shape[2:]) for o in net(torch.zeros(1, 1, 64, 128, 128))]
        [(64, 128, 128), (32, 32, 32), (16, 16, 16)]
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int], feature_size: int = 16,
                 stem_stride: Sequence[int] = (2, 4, 4), depths: Sequence[int] = (3, 3, 3, 3), num_heads: int = 4,
                 proj_size: Sequence[int] = (64, 64, 64, 32), decoder_proj_size: int = 64, decoder_depth: int = 3,
                 dropout: float = 0.15, deep_supervision: bool = True) -> None:
        super().__init__()
        stem = tuple(int(s) for s in stem_stride)
        if len(stem) != 3 or len(depths) != 4 or len(proj_size) != 4:
            raise ValueError(f"UNETR++ needs 3 stem strides and 4 depths / proj sizes, got {list(stem_stride)}, "
                             f"{list(depths)}, {list(proj_size)}")
        self.img_size = _check_img_size("UNETR++", img_size, [8 * s for s in stem])
        self.divisible_by = 8 * max(stem)
        dims = [feature_size * 2 ** (i + 1) for i in range(4)]
        grids = [_grid(self.img_size, [s * 2 ** i for s in stem]) for i in range(4)]
        if dims[0] % in_channels:
            raise ValueError(f"UNETR++'s stem norm has in_channels groups: {in_channels} must divide {dims[0]}")
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv3d(in_channels, dims[0], stem, stem, bias=False), nn.GroupNorm(in_channels, dims[0]))])
        self.downsample_layers.extend(nn.Sequential(nn.Conv3d(dims[i], dims[i + 1], 2, 2, bias=False),
                                                    nn.GroupNorm(dims[i], dims[i + 1])) for i in range(3))
        self.stages = nn.ModuleList([
            nn.Sequential(*[EPABlock(grids[i], dims[i], proj_size[i], num_heads, dropout) for _ in range(depths[i])])
            for i in range(4)])
        self.stages.apply(init_transformer_)
        self.encoder1 = UnetResBlock(3, in_channels, feature_size)
        up = dict(proj_size=decoder_proj_size, num_heads=num_heads, depth=decoder_depth, dropout=dropout)
        self.decoder5 = UnetrPPUpBlock(dims[3], dims[2], (2, 2, 2), grids[2], **up)
        self.decoder4 = UnetrPPUpBlock(dims[2], dims[1], (2, 2, 2), grids[1], **up)
        self.decoder3 = UnetrPPUpBlock(dims[1], dims[0], (2, 2, 2), grids[0], **up)
        self.decoder2 = UnetrPPUpBlock(dims[0], feature_size, stem, None, **up)
        self.out1 = nn.Conv3d(feature_size, num_classes, 1)
        self.out2 = nn.Conv3d(dims[0], num_classes, 1)
        self.out3 = nn.Conv3d(dims[1], num_classes, 1)
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = _pad_to_built("UNETR++", x, self.divisible_by, self.img_size)
        hidden, h = [], x
        for down, stage in zip(self.downsample_layers, self.stages):
            h = stage(down(h))
            hidden.append(h)
        dec2 = self.decoder5(hidden[3], hidden[2])
        dec1 = self.decoder4(dec2, hidden[1])
        dec0 = self.decoder3(dec1, hidden[0])
        out = self.decoder2(dec0, self.encoder1(x))
        if not self.deep_supervision:
            return crop_to(self.out1(out), size)
        return _crop_coarse([self.out1(out), self.out2(dec0), self.out3(dec1)], size, self.img_size)


def unetr_pp_defaults(spatial_dims: int) -> dict[str, Any]:
    """The Synapse configuration of the paper (Table 1): crop 64x128x128, stem 2x4x4, F = 16."""
    return {"img_size": [64, 128, 128], "feature_size": 16, "stem_stride": [2, 4, 4], "depths": [3, 3, 3, 3],
            "num_heads": 4, "proj_size": [64, 64, 64, 32], "decoder_proj_size": 64, "decoder_depth": 3,
            "dropout": 0.15}


@register_model(family="transformer", paper=UNETR_PP_PAPER, spatial_dims=(3,), defaults=unetr_pp_defaults,
                tiny_kwargs={"img_size": None, "feature_size": 4, "depths": [1, 1, 1, 1], "num_heads": 2,
                             "proj_size": [8, 8, 8, 4], "decoder_proj_size": 8, "decoder_depth": 1},
                extra={"tags": ["transformer", "hybrid", "attention"], "divisible_by": 32, "patch_kwarg": "img_size",
                       "paper_params": 42.96e6, "paper_gflops": 47.98, "paper_patch": [64, 128, 128],
                       "paper_setup": "Synapse: 1 in, 14 classes (with the two deep-supervision heads), "
                                      "crop 64x128x128, stem 2x4x4, feature size 16, depths 3,3,3,3, 4 heads",
                       "kwargs_note": _PLAN_NOTE})
def unetr_pp(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
             img_size: Sequence[int] | None = None, feature_size: int = 16, stem_stride: Sequence[int] = (2, 4, 4),
             depths: Sequence[int] = (3, 3, 3, 3), num_heads: int = 4, proj_size: Sequence[int] = (64, 64, 64, 32),
             decoder_proj_size: int = 64, decoder_depth: int = 3, dropout: float = 0.15, n_stages: Any = None,
             features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> UNETRPlusPlus:
    """UNETR++ (efficient paired attention), the paper's Synapse configuration by default.

    ``img_size`` is the patch its position tables and token projections are built for (the
    trainer passes the plan's patch rounded up to 32). Plan topology keywords are ignored.
    """
    del spatial_dims, n_stages, features_per_stage, kernel_sizes, strides
    if img_size is None:
        img_size = unetr_pp_defaults(3)["img_size"]
    return UNETRPlusPlus(in_channels, num_classes, img_size, feature_size, tuple(stem_stride), tuple(depths),
                         num_heads, tuple(proj_size), decoder_proj_size, decoder_depth, dropout, deep_supervision)
