"""U-Mamba: an nnU-Net-style residual U-Net with Mamba (selective state-space) layers (family
``sequence``).

Ma, Li, Wang, "U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation",
arXiv:2401.04722, 2024, Fig. 1 (U-Mamba block) and Fig. 2 (U-Mamba_Bot: one Mamba layer at the
bottleneck; U-Mamba_Enc: one after every encoder stage). Reference code: bowang-lab/U-Mamba
``nnunetv2/nets/UMambaBot_3d.py`` / ``UMambaEnc_3d.py``: an nnU-Net plan's topology; encoder
stem and stages start with a residual block with a 1x1 projection (``BasicResBlock``) followed by
``n - 1`` ResNet-D blocks, the deeper half of the stages with a single block; decoder of nearest
upsampling + 1x1 convolution, concatenation, residual blocks (one in the deeper half), a 1x1 head
per level (deep supervision). The Mamba layer: layer norm over channels, then Mamba (Gu & Dao,
"Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023, Algorithm 2, Sec. 3.4:
d_state 16, d_conv 4, expand 2) over the flattened voxels, without a residual connection, in
float32.

Selective scan and Mamba block: ``ssm_blocks.py`` (shared with the VM-UNet family), re-exported
here. Plain PyTorch, a two-level chunked scan, so it runs on any device; with ``mamba_ssm``
importable and the input on CUDA, the same parameters go through ``mamba_ssm``'s fused
``selective_scan_fn`` kernel instead (parameter names ``in_proj, conv1d, x_proj, dt_proj, A_log,
D, out_proj`` as ``mamba_ssm.Mamba``, so weights load either way). The plain scan forms every
state (B x L x 2C x 16) during a scan: at full resolution (U-Mamba_Enc) it is slow and memory
hungry; on CUDA install ``mamba_ssm``.

Parameter count: the paper reports none (no table of sizes); the count for a plan's topology is
pinned in tests/test_zoo_transformers.py. U-Mamba_Enc's reference switches stages whose voxel
count is at most their width to "channel tokens" (sequence over channels, Mamba width = voxels),
which needs the patch size at build time: pass ``patch_size`` to get that; without it every stage
uses voxel tokens (documented difference).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import BasicBlockD, ConvNormAct, conv_class, in_layout_of, init_he_
from unetkit.models.plain_unet import plain_topology_kwargs
from unetkit.models.registry import register_model
from unetkit.models.ssm_blocks import (SCAN_CHUNK, SCAN_MAX_ELEMENTS, Mamba, _mamba_ssm_scan,  # noqa: F401
                                       no_autocast, selective_scan)
from unetkit.models.topology import IntOrSeq, Topology, check_patch, make_topology, per_stage_ints

UMAMBA_PAPER = ("Ma et al., U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation, "
                "arXiv:2401.04722 (Fig. 1-2; no parameter count reported); Gu & Dao, Mamba, arXiv:2312.00752 "
                "(Algorithm 2)")

class MambaLayer(nn.Module):
    """U-Mamba's layer: flatten the voxels to tokens (or, with ``channel_token``, use the channels
    as the sequence), layer norm, Mamba, reshape back. Runs in float32 (autocast off), as the
    reference."""

    def __init__(self, dim: int, channel_token: bool = False, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2) -> None:
        super().__init__()
        self.dim, self.channel_token = dim, channel_token
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(dim, d_state, d_conv, expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, shape = x.dtype, x.shape
        with no_autocast(x.device):
            flat = x.float().flatten(2)  # (B, C, L)
            if self.channel_token:
                if flat.shape[-1] != self.dim:
                    raise ValueError(f"this U-Mamba layer was built for {self.dim} voxels (patch_size), got "
                                     f"{flat.shape[-1]} ({tuple(shape[2:])})")
                out = self.mamba(self.norm(flat))
            else:
                out = self.mamba(self.norm(flat.transpose(1, 2))).transpose(1, 2)
        return in_layout_of(out.reshape(shape).to(dtype), x)


class BasicResBlock(nn.Module):
    """U-Mamba's residual block: conv-norm-lrelu, conv-norm, plus a 1x1 (strided) convolution with
    bias on the shortcut, leaky ReLU after the sum."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, cin, cout, kernel, stride)
        self.conv2 = ConvNormAct(spatial_dims, cout, cout, kernel, (1,) * spatial_dims, act=False)
        self.conv3 = conv_class(spatial_dims)(cin, cout, 1, tuple(stride))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.conv3(x))


def _res_stage(spatial_dims: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int],
               n_blocks: int) -> nn.Sequential:
    ones = (1,) * spatial_dims
    return nn.Sequential(BasicResBlock(spatial_dims, cin, cout, kernel, stride),
                         *[BasicBlockD(spatial_dims, cout, cout, kernel, ones) for _ in range(n_blocks - 1)])


class SequenceUNet(nn.Module):
    """The residual U-Net of U-Mamba / xLSTM-UNet with a sequence layer at the bottleneck
    (``where="bot"``) or after every encoder stage (``where="enc"``).

    Args:
        spatial_dims, in_channels, num_classes: as ``create_model``.
        topology: the plan's stages, widths, kernels, strides.
        n_blocks_per_stage: blocks per encoder stage (the reference sets the deeper half to 1).
        n_conv_per_stage_decoder: blocks per decoder stage, deepest first.
        make_layer: ``(stage, width, voxels or None) -> nn.Module`` building the sequence layer.
        where: "bot" or "enc".
        deep_supervision: one output per decoder level, full resolution first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 n_blocks_per_stage: Sequence[int], n_conv_per_stage_decoder: Sequence[int],
                 make_layer: Callable[[int, int], nn.Module], where: str, deep_supervision: bool = True) -> None:
        super().__init__()
        self.topology = topology
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        n = topology.n_stages
        ones = (1,) * spatial_dims
        self.stem = _res_stage(spatial_dims, in_channels, f[0], k[0], ones, n_blocks_per_stage[0])
        self.encoder = nn.ModuleList([_res_stage(spatial_dims, f[max(i - 1, 0)], f[i], k[i], s[i], n_blocks_per_stage[i])
                                      for i in range(n)])
        stages = range(n) if where == "enc" else [n - 1]
        self.seq_stages = tuple(stages)
        self.seq_layers = nn.ModuleList([make_layer(i, f[i]) for i in stages])
        conv = conv_class(spatial_dims)
        self.up_convs = nn.ModuleList([conv(f[i], f[i - 1], 1) for i in range(n - 1, 0, -1)])
        self.decoder = nn.ModuleList([_res_stage(spatial_dims, 2 * f[i - 1], f[i - 1], k[i - 1], ones,
                                                 n_conv_per_stage_decoder[n - 1 - i]) for i in range(n - 1, 0, -1)])
        self.heads = nn.ModuleList([conv(f[i - 1], num_classes, 1) for i in range(n - 1, 0, -1)])
        self.deep_supervision = deep_supervision
        self.apply(init_he_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_patch(self.topology, x.shape[2:])
        x = self.stem(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i in self.seq_stages:
                x = self.seq_layers[self.seq_stages.index(i)](x)
            skips.append(x)
        outputs = []
        n = len(skips)
        for d, (up, stage, head) in enumerate(zip(self.up_convs, self.decoder, self.heads)):
            stride = self.topology.strides[n - 1 - d]
            x = up(F.interpolate(x, scale_factor=tuple(float(v) for v in stride), mode="nearest"))
            x = stage(torch.cat((x, skips[-(d + 2)]), dim=1))
            if self.deep_supervision or d == len(self.decoder) - 1:
                outputs.append(head(x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def sequence_unet_kwargs(spatial_dims: int, n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
                         kernel_sizes: Any = None, strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
                         n_conv_per_stage_decoder: IntOrSeq | None = None) -> dict[str, Any]:
    """Full kwargs from a plain plan's topology (nnU-Net defaults for missing ones), with U-Mamba's
    rule: one block in the deeper half of the encoder and decoder stages."""
    kw = plain_topology_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                               n_conv_per_stage_decoder)
    n = kw["n_stages"]
    blocks = list(kw["n_conv_per_stage"])
    for i in range(math.ceil(n / 2), n):
        blocks[i] = 1
    dec = list(kw["n_conv_per_stage_decoder"])
    for i in range(math.ceil((n - 1) / 2 + 0.5), n - 1):
        dec[i] = 1
    kw["n_conv_per_stage"], kw["n_conv_per_stage_decoder"] = blocks, dec
    return kw


def build_sequence_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool,
                        kw: dict[str, Any], make_layer: Callable[[int, int], nn.Module], where: str) -> SequenceUNet:
    topo = make_topology(spatial_dims, kw["n_stages"], kw["features_per_stage"], kw["kernel_sizes"], kw["strides"])
    n = topo.n_stages
    return SequenceUNet(spatial_dims, in_channels, num_classes, topo,
                        per_stage_ints("n_conv_per_stage", kw["n_conv_per_stage"], n),
                        per_stage_ints("n_conv_per_stage_decoder", kw["n_conv_per_stage_decoder"], n - 1),
                        make_layer, where, deep_supervision)


TINY_KWARGS = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": 3, "strides": [1, 2, 2, 2],
               "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 1}
_PAPER_SETUP = "no count printed; nnU-Net plans the residual topology (by name: 5 stages, 32..320/512)"
# U-Mamba_Enc scans every voxel of the first stage (24x40x24 in the zoo tests): a 4-state scan of
# width 4 is 8x less work than 16 states of width 8 (the generic tests took 16 of 100 CPU seconds here).
ENC_TINY_KWARGS = {**TINY_KWARGS, "d_state": 4, "expand": 1}


@register_model(family="sequence", paper=UMAMBA_PAPER, defaults=sequence_unet_kwargs, tiny_kwargs=TINY_KWARGS,
                extra={"tags": ["hybrid", "mamba", "cnn", "residual"], "paper_params": None,
                       "paper_setup": _PAPER_SETUP, "divisible_by": 1,  # the plan's strides decide
                       "fast_path": "mamba_ssm.selective_scan_fn on CUDA when importable"})
def umamba_bot(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
               n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
               strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
               n_conv_per_stage_decoder: IntOrSeq | None = None, d_state: int = 16, d_conv: int = 4,
               expand: int = 2) -> SequenceUNet:
    """U-Mamba_Bot: residual nnU-Net with one Mamba layer at the bottleneck (from a plan's topology)."""
    kw = sequence_unet_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                              n_conv_per_stage_decoder)
    return build_sequence_unet(spatial_dims, in_channels, num_classes, deep_supervision, kw,
                               lambda i, width: MambaLayer(width, False, d_state, d_conv, expand), "bot")


@register_model(family="sequence", paper=UMAMBA_PAPER, defaults=sequence_unet_kwargs, tiny_kwargs=ENC_TINY_KWARGS,
                extra={"tags": ["hybrid", "mamba", "cnn", "residual"], "paper_params": None,
                       "paper_setup": _PAPER_SETUP, "divisible_by": 1,  # the plan's strides decide
                       "fast_path": "mamba_ssm.selective_scan_fn on CUDA when importable",
                       "patch_size_kwarg": "optional: channel tokens where voxels <= width (reference behaviour)"})
def umamba_enc(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
               n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
               strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
               n_conv_per_stage_decoder: IntOrSeq | None = None, patch_size: Sequence[int] | None = None,
               d_state: int = 16, d_conv: int = 4, expand: int = 2) -> SequenceUNet:
    """U-Mamba_Enc: residual nnU-Net with a Mamba layer after every encoder stage.

    With ``patch_size`` (the plan's patch), stages with at most as many voxels as channels use
    channel tokens as the reference does; without it every stage uses voxel tokens.
    """
    kw = sequence_unet_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                              n_conv_per_stage_decoder)
    voxels: list[int | None] = [None] * kw["n_stages"]
    if patch_size is not None:
        size = [int(p) for p in patch_size]
        for i, stride in enumerate(kw["strides"]):
            size = [a // b for a, b in zip(size, stride)]
            voxels[i] = math.prod(size)

    def make(i: int, width: int) -> nn.Module:
        v = voxels[i]
        if v is not None and v <= width:
            return MambaLayer(v, True, d_state, d_conv, expand)
        return MambaLayer(width, False, d_state, d_conv, expand)

    return build_sequence_unet(spatial_dims, in_channels, num_classes, deep_supervision, kw, make, "enc")
