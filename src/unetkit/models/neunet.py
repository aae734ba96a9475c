"""neU-Net: nnU-Net's plain encoder with sub-pixel-convolution upsampling and multi-scale wavelet
inputs (family ``neunet``).

Yang, Xu, Wang, Geng, Li, Xu, Dong, "More complex encoder is not all you need", arXiv:2309.11139
(2023): neU-Net ("not complex encoder U-Net"), built on nnU-Net, evaluated on Synapse and ACDC.
Two changes to nnU-Net's plain U-Net:

1. **Sub-pixel convolution upsampling** (Shi et al., ESPCN, CVPR 2016) in the decoder instead of
   the transposed convolution (whose outputs have no direct relation between adjacent voxels, the
   source of checkerboard artifacts): a convolution (the skip stage's kernel, "same" padding, bias)
   from the deeper width to ``skip_width * prod(stride)`` channels, then a periodic shuffle of those
   channels onto the ``stride`` grid (pixel shuffle, 3D or anisotropic as the stride requires).
2. **Multi-scale wavelet inputs**: the input is decomposed with a Haar discrete wavelet transform
   along the axes that each encoder stage halves, the low-pass band decomposed again for the next
   level; all sub-bands of level ``s`` (``in_channels * 2**k`` channels for ``k`` halved axes)
   are concatenated with the output of encoder stage ``s`` before the next stage's strided
   convolution, giving the encoder back the information that downsampling loses. The transform
   is fixed (orthonormal Haar filters, no parameters).

Everything else is the plain U-Net of the plan (``plain_unet``: stages, widths, kernels, strides,
convolutions per stage, instance norm, leaky ReLU, concatenation skips, deep-supervision heads,
He initialization). Only the abstract and front matter of the paper were reachable through the
search tool and no reference code was found; the placement of the wavelet bands (concatenated
after each downsampling stage) follows the abstract's description of "multi-scale wavelet inputs
on the encoder side". **The paper's parameter count could not be checked** (not in the reachable
text); tests/test_zoo_scaled.py instead checks that neU-Net adds exactly the sub-pixel and wavelet
input parameters to the plain U-Net of the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import StackedConvs, UNetDecoder, conv_class, init_he_, same_padding
from unetkit.models.plain_unet import EncoderDecoderUNet, plain_topology_kwargs
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology, check_patch, make_topology, per_stage_ints

NEUNET_PAPER = ("Yang et al., More complex encoder is not all you need, arXiv:2309.11139, 2023 (neU-Net: sub-pixel "
                "convolution decoder, multi-scale wavelet inputs; parameter count not checked, see module docstring)")


def pixel_shuffle(x: torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """(B, C * prod(scale), *S) -> (B, C, *(S * scale)): ``nn.PixelShuffle`` for any dimension and
    a per-axis factor (channel index ``c * prod(scale) + offset``, offsets in row-major order)."""
    d = len(scale)
    b, cr, *size = x.shape
    r = math.prod(scale)
    c = cr // r
    x = x.reshape(b, c, *scale, *size)
    # (b, c, r1..rd, s1..sd) -> (b, c, s1, r1, s2, r2, ...)
    order = [0, 1] + [i for a in range(d) for i in (2 + d + a, 2 + a)]
    return x.permute(order).reshape(b, c, *(s * f for s, f in zip(size, scale)))


class SubPixelUp(nn.Module):
    """Convolution to ``out * prod(stride)`` channels, then :func:`pixel_shuffle` by ``stride``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: Sequence[int],
                 kernel_size: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        self.stride = tuple(int(s) for s in stride)
        self.conv = conv_class(spatial_dims)(in_channels, out_channels * math.prod(self.stride), tuple(kernel_size),
                                             1, same_padding(kernel_size), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(self.conv(x), self.stride)


def haar_dwt(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """One level of the orthonormal Haar transform along the given spatial ``axes`` (0-based, after
    batch and channel). Returns (B, C * 2**len(axes), *halved), the low-pass band of every channel
    first (channels ``[0, C)``), then the other bands."""
    bands = [x]
    for a in axes:
        dim = 2 + a
        nxt = []
        for t in bands:
            even, odd = t.narrow(dim, 0, t.shape[dim] // 2 * 2).unflatten(dim, (-1, 2)).unbind(dim + 1)
            nxt += [(even + odd) * math.sqrt(0.5), (even - odd) * math.sqrt(0.5)]
        bands = nxt
    return torch.cat(bands, dim=1)


class NeUNet(EncoderDecoderUNet):
    """Plain nnU-Net encoder with wavelet inputs; nnU-Net decoder with sub-pixel upsampling.

    Args:
        spatial_dims, in_channels, num_classes: as every model.
        topology: the plan's stages, widths, kernels and strides.
        n_conv_per_stage: convolutions per encoder stage.
        n_conv_per_stage_decoder: convolutions per decoder stage, deepest first.
        deep_supervision: forward returns every decoder level, full resolution first.
        conv_bias: bias of the convolutions.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 n_conv_per_stage: Sequence[int], n_conv_per_stage_decoder: Sequence[int],
                 deep_supervision: bool = True, conv_bias: bool = True) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        feats, kernels, strides = topology.features_per_stage, topology.kernel_sizes, topology.strides
        n_enc = per_stage_ints("n_conv_per_stage", n_conv_per_stage, n)
        n_dec = per_stage_ints("n_conv_per_stage_decoder", n_conv_per_stage_decoder, n - 1)
        # wavelet levels follow the encoder's halvings: level s has in_channels * 2**k_s bands
        self.wavelet_axes = [tuple(a for a, st in enumerate(strides[s]) if st == 2) for s in range(n)]
        if any(st not in (1, 2) for s in strides for st in s):
            raise ValueError(f"neU-Net's wavelet inputs need strides of 1 or 2 per axis, got {[list(s) for s in strides]}")
        bands = [in_channels * 2 ** len(ax) for ax in self.wavelet_axes]
        stages, extra = [], 0
        for s in range(n):
            cin = in_channels if s == 0 else feats[s - 1] + extra
            stages.append(StackedConvs(spatial_dims, n_enc[s], cin, feats[s], kernels[s], strides[s], conv_bias))
            extra = bands[s] if s >= 1 else 0  # bands of level s go into stage s + 1
        self.encoder = nn.ModuleList(stages)
        self.decoder = UNetDecoder(spatial_dims, feats, strides, kernels, n_dec, num_classes, conv_bias)
        self.decoder.upsample = nn.ModuleList(
            SubPixelUp(spatial_dims, feats[n - 1 - d], feats[n - 2 - d], strides[n - 1 - d], kernels[n - 2 - d], conv_bias)
            for d in range(n - 1))
        self.deep_supervision = deep_supervision
        self.apply(init_he_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_patch(self.topology, x.shape[2:])
        low = x
        skips = []
        h = x
        n_in = x.shape[1]
        for s, stage in enumerate(self.encoder):
            h = stage(h)
            skips.append(h)
            if 1 <= s < len(self.encoder) - 1:
                w = haar_dwt(low, self.wavelet_axes[s]) if self.wavelet_axes[s] else low
                low = w[:, :n_in]
                h = torch.cat((h, w), dim=1)
            elif s == 0 and self.wavelet_axes[0]:
                low = haar_dwt(low, self.wavelet_axes[0])[:, :n_in]
        return self.decoder(skips)


TINY_KWARGS = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": 3, "strides": [1, 2, 2, 2]}


@register_model(family="neunet", paper=NEUNET_PAPER, defaults=plain_topology_kwargs, tiny_kwargs=TINY_KWARGS,
                extra={"divisible_by": 1,  # the plan's strides decide (as plain_unet); the planner's patch fits them
                       "tags": ["cnn", "multiscale"], "paper_params": None,
                       "paper_setup": "nnU-Net 3d_fullres plans of Synapse / ACDC (parameter count not reported in "
                                       "the reachable text)"})
def neunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
           n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
           strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
           n_conv_per_stage_decoder: IntOrSeq | None = None, conv_bias: bool = True) -> NeUNet:
    """neU-Net: plain nnU-Net encoder + Haar wavelet inputs, decoder with sub-pixel convolution upsampling."""
    kw = plain_topology_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides,
                               n_conv_per_stage, n_conv_per_stage_decoder)
    topo = make_topology(spatial_dims, kw["n_stages"], kw["features_per_stage"], kw["kernel_sizes"], kw["strides"])
    return NeUNet(spatial_dims, in_channels, num_classes, topo, kw["n_conv_per_stage"],
                  kw["n_conv_per_stage_decoder"], deep_supervision, conv_bias)
