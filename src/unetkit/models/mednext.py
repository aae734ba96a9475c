"""MedNeXt S / B / M / L: a fully ConvNeXt U-Net (family ``mednext``).

Roy, Koehler, Ulrich, Baumgartner, Petersen, Isensee, Jaeger, Maier-Hein, "MedNeXt: Transformer-driven
Scaling of ConvNets for Medical Image Segmentation", MICCAI 2023 (arXiv:2303.09975), Fig. 1
(architecture) and Table 1 (configurations; parameters with kernel 3: S 5.6M, B 10.5M, M 17.6M,
L 61.8M). Reference code: github.com/MIC-DKFZ/MedNeXt, ``nnunet_mednext/network_architecture/
mednextv1/{blocks,MedNextV1,create_mednext_v1}.py``, read through the code search; our own code.

Every unit is a ConvNeXt-style block: depthwise convolution (kernel k) -> per-channel group norm
(``GroupNorm(C, C)``, the same as an affine instance norm) -> 1x1 expansion by ``exp_r`` -> GELU ->
1x1 compression, with a residual. Downsampling blocks put stride 2 on the depthwise convolution and
double the width (residual: a strided 1x1 convolution); upsampling blocks use a depthwise transposed
convolution with stride 2 and halve the width (residual: a 1x1 transposed convolution), both padded
by one voxel at the front. Skips are added (not concatenated). A 1x1 stem, and a 1x1 head at each of
the 5 resolution levels (deep supervision: full resolution, then /2, /4, /8, /16 from the
bottleneck). Kernel 3 by default; ``kernel_size=5`` is the paper's k5 variant (trained in the paper
by UpKern from a k3 network).

Configurations (Table 1; 9 entries: 4 encoder levels, bottleneck, 4 decoder levels), base width 32::

    S: exp_r 2 everywhere,            blocks 2 everywhere
    B: exp_r 2,3,4,4,4,4,4,3,2,       blocks 2 everywhere
    M: exp_r 2,3,4,4,4,4,4,3,2,       blocks 3,4,4,4,4,4,4,4,3
    L: exp_r 3,4,8,8,8,8,8,4,3,       blocks 3,4,8,8,8,8,8,4,3

Parameters (3D, kernel 3, 1 input channel, 14 classes (BTCV), deep-supervision heads included):
S 5,564,806; B 10,540,198; M 17,562,854; L 61,793,158 -- Table 1 within 0.7 %.
Initialization: PyTorch's defaults, as the reference code.
Omitted: gradient checkpointing and the optional GRN layer (off in the paper's configurations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import InstanceNorm, conv_class, transposed_conv_class
from unetkit.models.registry import register_model

MEDNEXT_PAPER = ("Roy et al., MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image Segmentation, "
                 "MICCAI 2023, arXiv:2303.09975 (Fig. 1; Table 1: S 5.6M, B 10.5M, M 17.6M, L 61.8M parameters "
                 "with kernel 3)")

#: Table 1: (expansion ratios, blocks) per level: 4 encoder levels, bottleneck, 4 decoder levels.
MEDNEXT_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "s": ((2,) * 9, (2,) * 9),
    "b": ((2, 3, 4, 4, 4, 4, 4, 3, 2), (2,) * 9),
    "m": ((2, 3, 4, 4, 4, 4, 4, 3, 2), (3, 4, 4, 4, 4, 4, 4, 4, 3)),
    "l": ((3, 4, 8, 8, 8, 8, 8, 4, 3), (3, 4, 8, 8, 8, 8, 8, 4, 3)),
}
MEDNEXT_PAPER_PARAMS = {"s": 5.6e6, "b": 10.5e6, "m": 17.6e6, "l": 61.8e6}
MEDNEXT_LEVELS = 5
MEDNEXT_WIDTH = 32


class MedNeXtBlock(nn.Module):
    """Depthwise conv -> norm -> 1x1 expand -> GELU -> 1x1 compress (+ residual).

    ``mode`` is ``"same"`` (residual identity, width kept), ``"down"`` (stride 2, residual strided 1x1
    conv) or ``"up"`` (depthwise transposed conv stride 2, residual 1x1 transposed conv, outputs
    padded by one at the front of each axis so that the size doubles exactly)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, exp_r: int, kernel_size: int,
                 mode: str = "same") -> None:
        super().__init__()
        self.mode = mode
        self.spatial_dims = spatial_dims
        conv = conv_class(spatial_dims)
        if mode == "up":
            self.dw = transposed_conv_class(spatial_dims)(in_channels, in_channels, kernel_size, 2,
                                                           kernel_size // 2, groups=in_channels)
            self.res: nn.Module | None = transposed_conv_class(spatial_dims)(in_channels, out_channels, 1, 2)
        else:
            stride = 2 if mode == "down" else 1
            self.dw = conv(in_channels, in_channels, kernel_size, stride, kernel_size // 2, groups=in_channels)
            self.res = conv(in_channels, out_channels, 1, 2) if mode == "down" else None
        self.norm = InstanceNorm(in_channels)
        self.expand = conv(in_channels, exp_r * in_channels, 1)
        self.act = nn.GELU()
        self.compress = conv(exp_r * in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compress(self.act(self.expand(self.norm(self.dw(x)))))
        if self.mode == "same":
            return out + x
        res = self.res(x)  # type: ignore[misc]
        if self.mode == "up":
            pad = (1, 0) * self.spatial_dims
            out, res = F.pad(out, pad), F.pad(res, pad)
        return out + res


class MedNeXt(nn.Module):
    """MedNeXt with ``n_levels`` resolution levels (the paper: 5, i.e. 4 downsamplings).

    Args:
        spatial_dims: 2 or 3.
        in_channels, num_classes: input and output channels.
        width: channels of the first level (doubled per level; the paper: 32).
        exp_r: expansion ratio per level, ``2 * n_levels - 1`` entries (encoder, bottleneck,
            decoder) or one number.
        block_counts: blocks per level, same layout as ``exp_r``.
        kernel_size: depthwise kernel (3 or 5).
        deep_supervision: forward returns one output per level, full resolution first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, width: int,
                 exp_r: Sequence[int], block_counts: Sequence[int], kernel_size: int = 3,
                 n_levels: int = MEDNEXT_LEVELS, deep_supervision: bool = True) -> None:
        super().__init__()
        n = n_levels
        if len(exp_r) != 2 * n - 1 or len(block_counts) != 2 * n - 1:
            raise ValueError(f"exp_r and block_counts need {2 * n - 1} entries for {n} levels, "
                             f"got {list(exp_r)} and {list(block_counts)}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.divisor = 2 ** (n - 1)
        conv = conv_class(spatial_dims)
        w = [width * 2 ** i for i in range(n)]
        self.stem = conv(in_channels, width, 1)

        def blocks(level: int, i: int) -> nn.Sequential:
            return nn.Sequential(*[MedNeXtBlock(spatial_dims, w[level], w[level], exp_r[i], kernel_size)
                                   for _ in range(block_counts[i])])

        self.enc = nn.ModuleList(blocks(i, i) for i in range(n - 1))
        self.down = nn.ModuleList(MedNeXtBlock(spatial_dims, w[i], w[i + 1], exp_r[i + 1], kernel_size, "down")
                                  for i in range(n - 1))
        self.bottleneck = blocks(n - 1, n - 1)
        # decoder level i (deepest first) uses entry 2n-2-i
        self.up = nn.ModuleList(MedNeXtBlock(spatial_dims, w[i + 1], w[i], exp_r[2 * n - 2 - i], kernel_size, "up")
                                for i in range(n - 2, -1, -1))
        self.dec = nn.ModuleList(blocks(i, 2 * n - 2 - i) for i in range(n - 2, -1, -1))
        self.heads = nn.ModuleList(conv(w[i], num_classes, 1) for i in range(n))  # level 0 first
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"patch size {tuple(x.shape[2:])} must be a multiple of {self.divisor} per axis "
                             f"(MedNeXt halves every axis {len(self.down)} times)")
        x = self.stem(x)
        skips = []
        for enc, down in zip(self.enc, self.down):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        n = len(self.heads)
        outputs = [self.heads[n - 1](x)] if self.deep_supervision else []
        for d, (up, dec) in enumerate(zip(self.up, self.dec)):
            x = dec(up(x) + skips.pop())
            level = n - 2 - d
            if self.deep_supervision or level == 0:
                outputs.append(self.heads[level](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def _per_level(values: Sequence[int], n_levels: int) -> list[int]:
    """A 9-entry preset list (5 levels) for ``n_levels`` levels: the first ``n_levels - 1`` encoder
    entries, the bottleneck entry, the last ``n_levels - 1`` decoder entries."""
    k = n_levels - 1
    mid = len(values) // 2
    enc = [values[min(i, mid - 1)] for i in range(k)]
    dec = [values[len(values) - 1 - min(i, mid - 1)] for i in range(k)][::-1]
    return enc + [values[mid]] + dec


def _levels(n_levels: int | None, n_stages: int | None) -> int:
    if n_levels is not None:
        return int(n_levels)
    return min(MEDNEXT_LEVELS, int(n_stages)) if n_stages is not None else MEDNEXT_LEVELS


def mednext_defaults(size: str):
    def defaults(spatial_dims: int) -> dict[str, Any]:
        exp_r, blocks = MEDNEXT_SIZES[size]
        return {"width": MEDNEXT_WIDTH, "n_levels": MEDNEXT_LEVELS, "exp_r": list(exp_r),
                "block_counts": list(blocks), "kernel_size": 3}
    return defaults


def _build(size: str, spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool,
           width: int | None, n_levels: int | None, exp_r: Any, block_counts: Any, kernel_size: int | None,
           n_stages: int | None) -> MedNeXt:
    levels = _levels(n_levels, n_stages)
    if levels < 2:
        raise ValueError(f"MedNeXt needs at least 2 levels, got {levels}")
    base_exp, base_blocks = MEDNEXT_SIZES[size]
    exp = [int(exp_r)] * (2 * levels - 1) if isinstance(exp_r, int) else list(exp_r or _per_level(base_exp, levels))
    blk = ([int(block_counts)] * (2 * levels - 1) if isinstance(block_counts, int)
           else list(block_counts or _per_level(base_blocks, levels)))
    return MedNeXt(spatial_dims, in_channels, num_classes, int(width or MEDNEXT_WIDTH), exp, blk,
                   int(kernel_size or 3), levels, deep_supervision)


_TINY = {"width": 4, "n_levels": 4, "exp_r": 2, "block_counts": 1}
_NOTE = ("MedNeXt has its own topology: 'n_levels' levels (default 5, i.e. 4 halvings of every axis), "
         "width doubled per level, kernel 'kernel_size'. From a plan it takes min(5, n_stages) levels (never "
         "deeper than the paper, never deeper than the plan's patch allows; the plan's strides must be 2 on "
         "every axis); the plan's features_per_stage, kernel_sizes and strides are accepted and ignored.")


def _register(size: str):
    return register_model(
        family="mednext", paper=MEDNEXT_PAPER, spatial_dims=(2, 3), deep_supervision=True,
        defaults=mednext_defaults(size), tiny_kwargs=_TINY, name=f"mednext_{size}",
        extra={"tags": ["cnn", "residual"],
               "divisible_by": 2 ** (MEDNEXT_LEVELS - 1), "paper_params": MEDNEXT_PAPER_PARAMS[size],
               "paper_setup": "3D, kernel 3, 1 input channel, 14 classes (BTCV), width 32, 5 levels",
               "kwargs_note": _NOTE})


@_register("s")
def mednext_s(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
              width: int | None = None, n_levels: int | None = None, exp_r: Any = None, block_counts: Any = None,
              kernel_size: int | None = None, n_stages: int | None = None, features_per_stage: Any = None,
              kernel_sizes: Any = None, strides: Any = None) -> MedNeXt:
    """MedNeXt-S (Table 1: 5.6M parameters with kernel 3; exp_r 2, 2 blocks per level)."""
    return _build("s", spatial_dims, in_channels, num_classes, deep_supervision, width, n_levels, exp_r,
                  block_counts, kernel_size, n_stages)


@_register("b")
def mednext_b(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
              width: int | None = None, n_levels: int | None = None, exp_r: Any = None, block_counts: Any = None,
              kernel_size: int | None = None, n_stages: int | None = None, features_per_stage: Any = None,
              kernel_sizes: Any = None, strides: Any = None) -> MedNeXt:
    """MedNeXt-B (Table 1: 10.5M parameters with kernel 3; exp_r 2,3,4,4,4,4,4,3,2, 2 blocks per level)."""
    return _build("b", spatial_dims, in_channels, num_classes, deep_supervision, width, n_levels, exp_r,
                  block_counts, kernel_size, n_stages)


@_register("m")
def mednext_m(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
              width: int | None = None, n_levels: int | None = None, exp_r: Any = None, block_counts: Any = None,
              kernel_size: int | None = None, n_stages: int | None = None, features_per_stage: Any = None,
              kernel_sizes: Any = None, strides: Any = None) -> MedNeXt:
    """MedNeXt-M (Table 1: 17.6M parameters with kernel 3; exp_r as B, blocks 3,4,4,4,4,4,4,4,3)."""
    return _build("m", spatial_dims, in_channels, num_classes, deep_supervision, width, n_levels, exp_r,
                  block_counts, kernel_size, n_stages)


@_register("l")
def mednext_l(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
              width: int | None = None, n_levels: int | None = None, exp_r: Any = None, block_counts: Any = None,
              kernel_size: int | None = None, n_stages: int | None = None, features_per_stage: Any = None,
              kernel_sizes: Any = None, strides: Any = None) -> MedNeXt:
    """MedNeXt-L (Table 1: 61.8M parameters with kernel 3; exp_r and blocks 3,4,8,8,8,8,8,4,3)."""
    return _build("l", spatial_dims, in_channels, num_classes, deep_supervision, width, n_levels, exp_r,
                  block_counts, kernel_size, n_stages)
