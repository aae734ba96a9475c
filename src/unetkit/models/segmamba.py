"""SegMamba: a Mamba encoder with tri-oriented scans and a UNETR-style decoder (family ``sequence``).

Xing, Ye, Yang, Liu, Zhu, "SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image
Segmentation", MICCAI 2024 (arXiv:2401.13560), Fig. 2: a 7^3 stride-2 stem, four stages of a
gated spatial convolution (GSC) followed by two tri-oriented Mamba (ToM) layers, widths 48, 96,
192, 384, instance norm + 2^3 stride-2 convs between stages, each stage output instance-normed
and passed through a channel MLP (1x1x1 convs C -> 2C -> C, GELU), and the decoder of 3D UX-Net
(MONAI's UNETR blocks, a 768-wide bottleneck block; shared: :class:`UnetrStyleDecoder`).
Reference: ge-xing/SegMamba ``model_segmamba/segmamba.py`` and its fork of mamba_ssm
(``Mamba(bimamba_type="v3")``): one input projection and one output projection, and three scan
branches (each its own causal depth-wise conv1d, x / dt projections, A and D) over the flattened
voxels forwards, backwards, and across slices (tokens reordered so that the slices of one
in-plane position follow each other); the three gated outputs are summed before the output
projection.

The selective scan is unetkit's plain-PyTorch one (:func:`unetkit.models.umamba.selective_scan`),
run in float32 with autocast off, as U-Mamba's layers.

The paper prints no parameter count; the reference code's count in its BraTS configuration (4 in,
4 classes) is checked in tests/test_zoo_3d_second_wave.py. Differences: the number of slices of
the inter-slice scan is the feature map's first axis (the reference hard-codes 64, 32, 16, 8,
which is that axis for its 128^3 crop), so any patch works; inputs whose size is not a multiple
of 16 are zero-padded and the logits cropped. No deep supervision (the paper has none). 3D only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import PlainInstanceNorm
from unetkit.models.convnext_3d import (ENCODER_DIVISOR, PLAN_NOTE, FourStageUNet, UnetrStyleDecoder,
                                        check_four_stages)
from unetkit.models.registry import register_model
from unetkit.models.umamba import no_autocast, selective_scan

SEGMAMBA_PAPER = ("Xing et al., SegMamba: Long-range Sequential Modeling Mamba For 3D Medical Image Segmentation, "
                  "MICCAI 2024, arXiv:2401.13560 (Fig. 2; no parameter count printed)")


class ScanBranch(nn.Module):
    """One scan direction of ToM: causal depth-wise conv1d + SiLU, input-dependent step (rank
    ``dt_rank``), B and C, the selective scan with ``A = -exp(A_log)`` (S4D-real init) and skip
    ``D``, gated by SiLU(z). Mamba's initialisation (Gu & Dao 2023, Sec. 3.6)."""

    def __init__(self, d_inner: int, dt_rank: int, d_state: int, d_conv: int, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        super().__init__()
        self.dt_rank, self.d_state = dt_rank, d_state
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        with torch.no_grad():
            bound = dt_rank ** -0.5
            nn.init.uniform_(self.dt_proj.weight, -bound, bound)
            log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            step = log_dt.exp().clamp(min=dt_floor)
            self.dt_proj.bias.copy_(step + torch.log(-torch.expm1(-step)))  # softplus(bias) = step

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: (B, L, d_inner) in this branch's scan order."""
        length = x.shape[1]
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)
        dt, b, c = torch.split(self.x_proj(x), (self.dt_rank, self.d_state, self.d_state), dim=-1)
        y = selective_scan(x, F.softplus(self.dt_proj(dt)), -torch.exp(self.A_log.float()), b, c)
        return (y + x * self.D) * F.silu(z)


def _across_slices(t: torch.Tensor, n_slices: int) -> torch.Tensor:
    """(B, L, C) in slice-major order -> the order in which the slices of one in-plane position
    follow each other (L = n_slices * positions)."""
    b, length, c = t.shape
    return t.view(b, n_slices, length // n_slices, c).transpose(1, 2).reshape(b, length, c)


def _back_from_slices(t: torch.Tensor, n_slices: int) -> torch.Tensor:
    b, length, c = t.shape
    return t.view(b, length // n_slices, n_slices, c).transpose(1, 2).reshape(b, length, c)


class TriOrientedMamba(nn.Module):
    """ToM (Sec. 2.2): ``out_proj(f(x) + flip(b(flip(x))) + unslice(s(slice(x))))`` after a
    shared input projection to x and the gate z (``expand`` times wider), three :class:`ScanBranch`."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        d_inner = expand * d_model
        dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.branches = nn.ModuleList([ScanBranch(d_inner, dt_rank, d_state, d_conv) for _ in range(3)])
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, tokens: torch.Tensor, n_slices: int) -> torch.Tensor:
        """tokens: (B, L, d_model), voxels in (slice, row, column) order; ``n_slices`` divides L."""
        x, z = self.in_proj(tokens).chunk(2, dim=-1)
        forward, backward, slices = self.branches
        y = forward(x, z)
        y = y + backward(x.flip(1), z.flip(1)).flip(1)
        y = y + _back_from_slices(slices(_across_slices(x, n_slices), _across_slices(z, n_slices)), n_slices)
        return self.out_proj(y)


class ToMLayer(nn.Module):
    """SegMamba's Mamba layer: ``x + ToM(LN(x))`` over the flattened voxels, in float32."""

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = TriOrientedMamba(dim, d_state, d_conv, expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, shape = x.dtype, x.shape
        with no_autocast(x.device):
            tokens = x.float().flatten(2).transpose(1, 2)
            out = self.mamba(self.norm(tokens), n_slices=shape[2]).transpose(1, 2).reshape(shape)
        return x + out.to(dtype)


class GatedSpatialConv(nn.Module):
    """GSC (Sec. 2.2): ``x + CNR1(CNR3(CNR3(x)) + CNR1(x))``, CNR = conv (3^3 or 1^3, bias),
    instance norm without affine, ReLU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(dim, dim, 3, 1, 1)
        self.proj2 = nn.Conv3d(dim, dim, 3, 1, 1)
        self.proj3 = nn.Conv3d(dim, dim, 1)
        self.proj4 = nn.Conv3d(dim, dim, 1)
        self.norm = PlainInstanceNorm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.relu(self.norm(self.proj2(F.relu(self.norm(self.proj(x))))))
        branch = F.relu(self.norm(self.proj3(x)))
        return x + F.relu(self.norm(self.proj4(gate + branch)))


class SegMambaEncoder(nn.Module):
    """Stem (7^3 conv, stride 2), then per stage GSC + ``depths[i]`` ToM layers, with instance norm
    + 2^3 stride-2 conv between stages; each stage's output instance-normed and channel-MLPed."""

    def __init__(self, in_channels: int, dims: Sequence[int], depths: Sequence[int], d_state: int = 16) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Conv3d(in_channels, dims[0], 7, 2, 3)])
        self.downsample_layers.extend(nn.Sequential(PlainInstanceNorm(), nn.Conv3d(dims[i], dims[i + 1], 2, 2))
                                      for i in range(3))
        self.gscs = nn.ModuleList([GatedSpatialConv(d) for d in dims])
        self.stages = nn.ModuleList([nn.Sequential(*[ToMLayer(d, d_state) for _ in range(n)])
                                     for d, n in zip(dims, depths)])
        self.out_norm = PlainInstanceNorm()
        self.mlps = nn.ModuleList([nn.Sequential(nn.Conv3d(d, 2 * d, 1), nn.GELU(), nn.Conv3d(2 * d, d, 1))
                                   for d in dims])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for down, gsc, stage, mlp in zip(self.downsample_layers, self.gscs, self.stages, self.mlps):
            x = stage(gsc(down(x)))
            outs.append(mlp(self.out_norm(x)))
        return outs


class SegMamba(FourStageUNet):
    """SegMamba: :class:`SegMambaEncoder` + 3D UX-Net's :class:`UnetrStyleDecoder`.

    Args:
        in_channels, num_classes: input and output channels.
        dims: stage widths (48, 96, 192, 384).
        depths: ToM layers per stage (2, 2, 2, 2).
        hidden_size: width of the bottleneck conv block (768).
        d_state: state size of the scans (16).

    Example:
        >>> net = SegMamba(4, 4)
        >>> net(torch.zeros(1, 4, 32, 32, 32)).shape
        torch.Size([1, 4, 32, 32, 32])
    """

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int] = (48, 96, 192, 384),
                 depths: Sequence[int] = (2, 2, 2, 2), hidden_size: int = 768, d_state: int = 16) -> None:
        check_four_stages("SegMamba", dims, depths)
        super().__init__(SegMambaEncoder(in_channels, dims, depths, d_state),
                         UnetrStyleDecoder(in_channels, num_classes, dims, hidden_size))


def segmamba_defaults(spatial_dims: int) -> dict[str, Any]:
    """The reference's BraTS configuration (widths 48-384, two ToM layers per stage, hidden 768)."""
    return {"dims": [48, 96, 192, 384], "depths": [2, 2, 2, 2], "hidden_size": 768, "d_state": 16}


@register_model(family="sequence", paper=SEGMAMBA_PAPER, spatial_dims=(3,), deep_supervision=False,
                defaults=segmamba_defaults,
                tiny_kwargs={"deep_supervision": False, "dims": [4, 8, 16, 32], "depths": [1, 1, 1, 1],
                             "hidden_size": 32, "d_state": 4},
                extra={"tags": ["mamba", "hybrid", "cnn"], "divisible_by": ENCODER_DIVISOR, "paper_params": None,
                       "paper_patch": [128, 128, 128],
                       "paper_setup": "the paper prints no count; official code (ge-xing/SegMamba), BraTS: 4 in, "
                                      "4 classes, 128^3, widths 48-384, hidden 768: 67,362,048 parameters",
                       "kwargs_note": PLAN_NOTE})
def segmamba(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             dims: Sequence[int] = (48, 96, 192, 384), depths: Sequence[int] = (2, 2, 2, 2), hidden_size: int = 768,
             d_state: int = 16, n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
             strides: Any = None) -> SegMamba:
    """SegMamba (GSC + tri-oriented Mamba encoder, UNETR-style decoder), the reference's widths by
    default. Plan topology keywords are ignored."""
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return SegMamba(in_channels, num_classes, tuple(dims), tuple(depths), hidden_size, d_state)
