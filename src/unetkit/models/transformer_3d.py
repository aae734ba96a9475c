"""3D transformer U-Nets sized to a fixed token grid: UNETR++, nnFormer and TransBTS (family
``transformer``).

All three are built for one input size (``img_size``: learned position tables, token-count
projections, or windows clamped to the grid), so they declare ``extra["patch_kwarg"]``: the
trainer builds them for the training patch rounded up to ``divisible_by`` and prediction rebuilds
the same tables (nothing is interpolated). Smaller inputs are zero-padded to the built size and
the logits cropped; a larger one is an error that names both sizes.

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

from unetkit.models.attention_blocks import (DropPath, Mlp, SwinBlock, UnetResBlock, ViTBlock, WindowAttention,
                                             crop_to, init_transformer_, pad_to_multiple, window_partition,
                                             window_reverse)
from unetkit.models.lightweight import ChannelLayerNorm
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


def _pad_to_built(name: str, x: torch.Tensor, built: Shape) -> tuple[torch.Tensor, Shape]:
    """``x`` zero-padded at the end of each axis to the size the model was built for."""
    size = tuple(x.shape[2:])
    if any(s > b for s, b in zip(size, built)):
        raise ValueError(f"{name} was built for img_size {list(built)} and cannot take an input of {list(size)}; "
                         f"build it for this patch (img_size=...)")
    return pad_to_multiple(x, built)[0], size


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
    dropout (0.1) and a 1x1x1 conv, added back. ``dropout`` is the attention maps' dropout.
    Input and output (B, C, *grid)."""

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
        up = {"proj_size": decoder_proj_size, "num_heads": num_heads, "depth": decoder_depth, "dropout": dropout}
        self.decoder5 = UnetrPPUpBlock(dims[3], dims[2], (2, 2, 2), grids[2], **up)
        self.decoder4 = UnetrPPUpBlock(dims[2], dims[1], (2, 2, 2), grids[1], **up)
        self.decoder3 = UnetrPPUpBlock(dims[1], dims[0], (2, 2, 2), grids[0], **up)
        self.decoder2 = UnetrPPUpBlock(dims[0], feature_size, stem, None, **up)
        self.out1 = nn.Conv3d(feature_size, num_classes, 1)
        self.out2 = nn.Conv3d(dims[0], num_classes, 1)
        self.out3 = nn.Conv3d(dims[1], num_classes, 1)
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = _pad_to_built("UNETR++", x, self.img_size)
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


# ------------------------------------------------------------------------------------ nnFormer
NNFORMER_PAPER = ("Zhou et al., nnFormer: Volumetric Medical Image Segmentation via a 3D Transformer, IEEE TIP 2023, "
                  "arXiv:2109.03201 (Fig. 1; Synapse table: 150.5M parameters, 213.4 GFLOPs)")


class ConvProject(nn.Module):
    """nnFormer's embedding unit: 3x3x3 conv (stride), GELU, layer norm over channels, 3x3x3
    conv; unless ``last``, GELU and layer norm again. Channels-first in and out."""

    def __init__(self, in_channels: int, out_channels: int, stride: Sequence[int], last: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, tuple(stride), 1)
        self.norm1 = ChannelLayerNorm(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, 1, 1)
        self.norm2 = nn.Identity() if last else ChannelLayerNorm(out_channels)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.norm1(F.gelu(self.conv1(x))))
        return x if self.last else self.norm2(F.gelu(x))


class NNFormerPatchEmbed(nn.Module):
    """Two :class:`ConvProject` units whose strides multiply to ``patch`` (the first takes
    ``patch / (patch // 2)``, the second ``patch // 2``, as the reference: 2x2x2 then 1x2x2 for a
    2x4x4 patch), widths C/2 and C, then layer norm; returns channels-last tokens (B, *grid, C)."""

    def __init__(self, in_channels: int, dim: int, patch: Sequence[int]) -> None:
        super().__init__()
        second = [max(p // 2, 1) for p in patch]
        first = [p // s for p, s in zip(patch, second)]
        self.proj1 = ConvProject(in_channels, dim // 2, first, last=False)
        self.proj2 = ConvProject(dim // 2, dim, second, last=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj2(self.proj1(x)).movedim(1, -1))


class ConvMerging(nn.Module):
    """nnFormer's down-sampling: GELU, layer norm, 3x3x3 stride-2 conv to twice the width.
    Channels-last in and out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Conv3d(dim, 2 * dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(F.gelu(x)).movedim(-1, 1)).movedim(1, -1)


class ConvExpanding(nn.Module):
    """nnFormer's up-sampling: layer norm, 2x2x2 stride-2 transposed conv to half the width.
    Channels-last in and out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.ConvTranspose3d(dim, dim // 2, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.norm(x).movedim(-1, 1)).movedim(1, -1)


class WindowSkipAttention(WindowAttention):
    """nnFormer's skip attention (Sec. 3.3, "skip attention"): keys and values projected from the
    encoder's skip, queries taken as they are from the up-sampled decoder features (no query
    projection), window attention with a relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads, window, qkv_bias)
        del self.qkv  # keys and values only
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)

    def forward(self, skip: torch.Tensor, query: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
        bw, n, c = skip.shape
        h = self.num_heads
        k, v = self.kv(skip).view(bw, n, 2, h, c // h).permute(2, 0, 3, 1, 4)
        return self.attend(query.view(bw, n, h, c // h).transpose(1, 2), k, v, window, None)


def _pad_channels_last(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    pads = [(-s) % w for s, w in zip(x.shape[1:-1], window)]
    flat = [0, 0]
    for p in reversed(pads):
        flat += [0, p]
    return F.pad(x, flat) if any(pads) else x


class SkipAttentionBlock(nn.Module):
    """The first block of each nnFormer decoder stage: ``x + SkipAttention(LN(skip), LN(x_up))``
    (one layer norm for both), then ``x + MLP(LN(x))``; ``x = x_up + skip``. Channels-last."""

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.window = tuple(window)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowSkipAttention(dim, num_heads, self.window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, x_up: torch.Tensor) -> torch.Tensor:
        b, *size, _ = x.shape
        window = tuple(min(w, s) for w, s in zip(self.window, size))
        skip, x_up = _pad_channels_last(self.norm1(skip), window), _pad_channels_last(self.norm1(x_up), window)
        out = self.attn(window_partition(skip, window), window_partition(x_up, window), window)
        out = window_reverse(out, window, skip.shape[1:-1], b)[(slice(None), *[slice(0, s) for s in size])]
        x = x + self.drop_path(out)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _linear_rates(top: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic-depth rates rising linearly from 0 to ``top`` over all blocks, split per stage."""
    n = sum(depths)
    flat = [top * i / max(n - 1, 1) for i in range(n)]
    return [flat[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]


def nnformer_window(grid: Sequence[int], window: int) -> tuple[int, bool]:
    """nnFormer's rule: a cubic window, shrunk to the grid's smallest side (and never shifted)
    when that side is not larger than the window. Returns (window, may_shift)."""
    smallest = min(grid)
    return (smallest, False) if smallest <= window else (window, True)


class NNFormerDecoderStage(nn.Module):
    """Expanding (from twice the width), skip added, one :class:`SkipAttentionBlock`, then
    ``depth - 1`` shifted-window Swin blocks (unshifted where the window covers the grid)."""

    def __init__(self, dim: int, grid: Shape, depth: int, num_heads: int, window: int,
                 drop_path: Sequence[float]) -> None:
        super().__init__()
        w, may_shift = nnformer_window(grid, window)
        self.expand = ConvExpanding(2 * dim)
        self.skip_block = SkipAttentionBlock(dim, num_heads, (w,) * 3, drop_path=drop_path[0])
        self.blocks = nn.ModuleList([SwinBlock(dim, num_heads, (w,) * 3, may_shift, drop_path=drop_path[j])
                                     for j in range(1, depth)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x_up = self.expand(x)
        x = self.skip_block(x_up + skip, skip, x_up)
        for block in self.blocks:
            x = block(x)
        return x


class NNFormer(nn.Module):
    """nnFormer: convolutional embedding, four stages of (shifted-)window self-attention with
    convolutional down-sampling, three decoder stages whose first block attends from the
    up-sampled features to the skip, and a transposed-conv head per decoder stage (deep
    supervision: full resolution, 1/2, 1/4).

    Stochastic depth as the reference: rising linearly to ``drop_path_rate`` over the encoder's
    blocks, and separately over the decoder's (deepest stage first).

    Differences from the reference code: the relative position index is Swin's (the reference
    multiplies its axes by 3w-1 and 2w-1, which indexes the same (2w-1)^3 table with collisions);
    all three heads are always built (the reference builds one without deep supervision), so the
    weights load either way.

    Example:
        >>> net = NNFormer(1, 14, (64, 128, 128))
        >>> [tuple(o.shape[2:]) for o in net(torch.zeros(1, 1, 64, 128, 128))]
        [(64, 128, 128), (32, 64, 64), (16, 32, 32)]
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int], embedding_dim: int = 192,
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (6, 12, 24, 48),
                 embed_patch: Sequence[int] = (2, 4, 4), window_size: Sequence[int] = (4, 4, 8, 4),
                 drop_path_rate: float = 0.2, deep_supervision: bool = True) -> None:
        super().__init__()
        patch = tuple(int(p) for p in embed_patch)
        if len(patch) != 3 or len(depths) != 4 or len(num_heads) != 4 or len(window_size) != 4:
            raise ValueError("nnFormer needs 3 embed_patch sides and 4 depths, num_heads and window sizes")
        self.img_size = _check_img_size("nnFormer", img_size, [8 * p for p in patch])
        self.divisible_by = 8 * max(patch)
        dims = [embedding_dim * 2 ** i for i in range(4)]
        grids = [_grid(self.img_size, [p * 2 ** i for p in patch]) for i in range(4)]
        self.patch_embed = NNFormerPatchEmbed(in_channels, embedding_dim, patch)
        rates = _linear_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList()
        for i in range(4):
            w, may_shift = nnformer_window(grids[i], window_size[i])
            self.stages.append(nn.ModuleList([SwinBlock(dims[i], num_heads[i], (w,) * 3, may_shift and j % 2 == 1,
                                                        drop_path=rates[i][j]) for j in range(depths[i])]))
        self.merges = nn.ModuleList([ConvMerging(dims[i]) for i in range(3)])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in dims])
        decoder_rates = _linear_rates(drop_path_rate, depths[2::-1])[::-1]  # the deepest stage drops least
        self.decoder = nn.ModuleList([NNFormerDecoderStage(dims[i], grids[i], depths[i], num_heads[i], window_size[i],
                                                           decoder_rates[i]) for i in range(3)])
        self.heads = nn.ModuleList([nn.ConvTranspose3d(dims[i], num_classes, patch, patch) for i in range(3)])
        self.deep_supervision = deep_supervision
        self.apply(init_transformer_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = _pad_to_built("nnFormer", x, self.img_size)
        t, skips = self.patch_embed(x), []
        for i, (stage, norm) in enumerate(zip(self.stages, self.norms)):
            for block in stage:
                t = block(t)
            skips.append(norm(t))
            if i < 3:
                t = self.merges[i](t)
        out, outputs = skips[3], []
        for level in (2, 1, 0):
            out = self.decoder[level](out, skips[level])
            outputs.append(out)
        if not self.deep_supervision:
            return crop_to(self.heads[0](outputs[-1].movedim(-1, 1)), size)
        logits = [self.heads[level](o.movedim(-1, 1)) for level, o in zip((2, 1, 0), outputs)][::-1]
        return _crop_coarse(logits, size, self.img_size)


def nnformer_defaults(spatial_dims: int) -> dict[str, Any]:
    """The Synapse configuration of the paper: crop 64x128x128, embedding 192, patch 2x4x4."""
    return {"img_size": [64, 128, 128], "embedding_dim": 192, "depths": [2, 2, 2, 2], "num_heads": [6, 12, 24, 48],
            "embed_patch": [2, 4, 4], "window_size": [4, 4, 8, 4], "drop_path_rate": 0.2}


@register_model(family="transformer", paper=NNFORMER_PAPER, spatial_dims=(3,), defaults=nnformer_defaults,
                tiny_kwargs={"img_size": None, "embedding_dim": 8, "depths": [2, 1, 1, 1], "num_heads": [1, 2, 2, 4],
                             "embed_patch": [2, 2, 2], "window_size": [4, 4, 4, 2], "drop_path_rate": 0.0},
                extra={"tags": ["transformer", "attention"], "divisible_by": 32, "patch_kwarg": "img_size",
                       "paper_params": 150.5e6, "paper_gflops": 213.4, "paper_patch": [64, 128, 128],
                       "paper_setup": "Synapse: 1 in, 14 classes (three deep-supervision heads), crop 64x128x128, "
                                      "embedding 192, depths 2,2,2,2, heads 6,12,24,48, windows 4,4,8,4",
                       "kwargs_note": _PLAN_NOTE})
def nnformer(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
             img_size: Sequence[int] | None = None, embedding_dim: int = 192, depths: Sequence[int] = (2, 2, 2, 2),
             num_heads: Sequence[int] = (6, 12, 24, 48), embed_patch: Sequence[int] = (2, 4, 4),
             window_size: Sequence[int] = (4, 4, 8, 4), drop_path_rate: float = 0.2, n_stages: Any = None,
             features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> NNFormer:
    """nnFormer (interleaved convolution and window self-attention), the paper's Synapse
    configuration by default; ``img_size`` is the patch its windows are sized for. Plan topology
    keywords are ignored."""
    del spatial_dims, n_stages, features_per_stage, kernel_sizes, strides
    if img_size is None:
        img_size = nnformer_defaults(3)["img_size"]
    return NNFormer(in_channels, num_classes, img_size, embedding_dim, tuple(depths), tuple(num_heads),
                    tuple(embed_patch), tuple(window_size), drop_path_rate, deep_supervision)


# ------------------------------------------------------------------------------------ TransBTS
TRANSBTS_PAPER = ("Wang et al., TransBTS: Multimodal Brain Tumor Segmentation Using Transformer, MICCAI 2021, "
                  "arXiv:2103.04430 (Fig. 1; Table 3: 32.99M parameters, 333 GFLOPs at 128^3)")
#: The 3D CNN encoder halves the size three times: the token grid is the input / 8.
TRANSBTS_DOWNSAMPLING = 8


class PreActResBlock(nn.Module):
    """TransBTS's encoder block: ``x + conv(ReLU(GN(conv(ReLU(GN(x))))))``, 3x3x3 convs, group
    norm with 8 groups."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.bn2 = nn.GroupNorm(8, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))


class ConvBNReLU2(nn.Module):
    """Two (3x3x3 conv, batch norm, ReLU) units; with ``residual`` the input is added at the end
    (TransBTS's EnBlock2 / DeBlock), without it the first unit may change the width (EnBlock1)."""

    def __init__(self, in_channels: int, out_channels: int, residual: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return x + y if self.residual else y


class UpCat(nn.Module):
    """TransBTS's DeUp_Cat: 1x1x1 conv to the skip's width, 2x2x2 stride-2 transposed conv,
    concatenation (skip first), 1x1x1 conv back to the skip's width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 1)
        self.conv2 = nn.ConvTranspose3d(out_channels, out_channels, 2, 2)
        self.conv3 = nn.Conv3d(2 * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((skip, self.conv2(self.conv1(x))), dim=1))


class TransBTS(nn.Module):
    """TransBTS: a 3D CNN encoder (widths B, 2B, 4B, 8B; 1, 2, 2, 4 pre-activation residual blocks,
    stride-2 convs between), batch norm + ReLU + a 3x3x3 conv to the embedding width, learned
    position table, ``num_layers`` pre-norm transformer layers over the 1/8-resolution tokens, and
    a CNN decoder (feature mapping 512 -> 128 by two conv-BN-ReLU units and a residual one, then
    three up-concatenate-residual stages) with a 1x1x1 head.

    Differences from the reference code: logits out (the reference ends with a softmax); the
    input dropout (3D, 0.2) is off in evaluation (the reference applies it always); the unused
    ``linear_encoding`` (262,656 parameters, for the variant without conv embedding) and
    ``pre_head_ln`` (1,024; computed, then discarded: the decoder reads the last layer's output
    before it) are not built; one dropout after the attention projection (the reference drops out
    twice there); any ``img_size`` with sides multiple of 8, not only cubes; decoder widths follow
    ``base_channels`` (the reference ties them to embedding_dim / 32 and its batch norms to 128).

    Example:
        >>> net = TransBTS(4, 4, (128, 128, 128))
        >>> net(torch.zeros(1, 4, 128, 128, 128)).shape
        torch.Size([1, 4, 128, 128, 128])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int], base_channels: int = 16,
                 embedding_dim: int = 512, num_heads: int = 8, num_layers: int = 4, hidden_dim: int = 4096,
                 dropout: float = 0.1, attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.img_size = _check_img_size("TransBTS", img_size, [TRANSBTS_DOWNSAMPLING] * 3)
        self.grid = _grid(self.img_size, [TRANSBTS_DOWNSAMPLING] * 3)
        b = base_channels
        self.init_conv = nn.Sequential(nn.Conv3d(in_channels, b, 3, padding=1), nn.Dropout3d(0.2))
        blocks_per_level = (1, 2, 2, 4)
        self.levels = nn.ModuleList([nn.Sequential(*[PreActResBlock(b * 2 ** i) for _ in range(n)])
                                     for i, n in enumerate(blocks_per_level)])
        self.downs = nn.ModuleList([nn.Conv3d(b * 2 ** i, b * 2 ** (i + 1), 3, 2, 1) for i in range(3)])
        self.bn = nn.BatchNorm3d(8 * b)
        self.conv_x = nn.Conv3d(8 * b, embedding_dim, 3, padding=1)
        self.position_embeddings = nn.Parameter(torch.zeros(1, math.prod(self.grid), embedding_dim))
        self.pe_dropout = nn.Dropout(dropout)
        self.transformer = nn.Sequential(*[ViTBlock(embedding_dim, num_heads, hidden_dim, qkv_bias=False,
                                                    dropout=attn_dropout) for _ in range(num_layers)])
        self.enblock8_1 = ConvBNReLU2(embedding_dim, 8 * b, residual=False)
        self.enblock8_2 = ConvBNReLU2(8 * b, 8 * b, residual=True)
        self.up = nn.ModuleList([UpCat(b * 2 ** (i + 1), b * 2 ** i) for i in (2, 1, 0)])
        self.deblocks = nn.ModuleList([ConvBNReLU2(b * 2 ** i, b * 2 ** i, residual=True) for i in (2, 1, 0)])
        self.endconv = nn.Conv3d(b, num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = _pad_to_built("TransBTS", x, self.img_size)
        h, skips = self.init_conv(x), []
        for i, level in enumerate(self.levels):
            h = level(h)
            if i < 3:
                skips.append(h)
                h = self.downs[i](h)
        t = self.conv_x(F.relu(self.bn(h))).flatten(2).transpose(1, 2)
        t = self.transformer(self.pe_dropout(t + self.position_embeddings))
        y = self.enblock8_2(self.enblock8_1(t.transpose(1, 2).reshape(t.shape[0], -1, *self.grid)))
        for up, block, skip in zip(self.up, self.deblocks, reversed(skips)):
            y = block(up(y, skip))
        return crop_to(self.endconv(y), size)


def transbts_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's BraTS configuration: 128^3, base width 16, embedding 512, 8 heads, 4 layers."""
    return {"img_size": [128, 128, 128], "base_channels": 16, "embedding_dim": 512, "num_heads": 8, "num_layers": 4,
            "hidden_dim": 4096, "dropout": 0.1, "attn_dropout": 0.1}


@register_model(family="transformer", paper=TRANSBTS_PAPER, spatial_dims=(3,), deep_supervision=False,
                defaults=transbts_defaults,
                tiny_kwargs={"deep_supervision": False, "img_size": None, "base_channels": 8, "embedding_dim": 32,
                             "num_heads": 2, "num_layers": 1, "hidden_dim": 64},
                extra={"tags": ["hybrid", "transformer", "residual"], "divisible_by": TRANSBTS_DOWNSAMPLING,
                       "patch_kwarg": "img_size", "paper_params": 32.99e6, "paper_gflops": 333.0,
                       "paper_patch": [128, 128, 128],
                       "paper_setup": "BraTS: 4 MRI modalities in, 4 classes, 128^3, base width 16, embedding 512, "
                                      "4 layers, 8 heads, MLP 4096",
                       "kwargs_note": _PLAN_NOTE})
def transbts(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             img_size: Sequence[int] | None = None, base_channels: int = 16, embedding_dim: int = 512,
             num_heads: int = 8, num_layers: int = 4, hidden_dim: int = 4096, dropout: float = 0.1,
             attn_dropout: float = 0.1, n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
             strides: Any = None) -> TransBTS:
    """TransBTS (3D CNN encoder, transformer bottleneck over 1/8-resolution tokens), the paper's
    BraTS configuration by default; ``img_size`` sizes the position table. Plan topology keywords
    are ignored."""
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    if img_size is None:
        img_size = transbts_defaults(3)["img_size"]
    return TransBTS(in_channels, num_classes, img_size, base_channels, embedding_dim, num_heads, num_layers,
                    hidden_dim, dropout, attn_dropout)
