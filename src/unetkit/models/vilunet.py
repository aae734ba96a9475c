"""ViLU-Net: a residual nnU-Net with Vision-LSTM blocks after every encoder and decoder stage
(family ``sequence``).

Heidari, Aghdam, Manzella, Hsu, Scalabrino, Chen, Foran, Hacihaliloglu, "A Study on the Performance
of U-Net Modifications in Retroperitoneal Tumor Segmentation", SPIE Medical Imaging 2025
(arXiv:2502.00314), Fig. 1. Reference code: the authors' ``ViLUNet.py`` (nnU-Net v2 trainer
``nnUNetTrainerViLUNet``; read through the code search): the plan's topology as it is (widths,
kernels, strides and blocks per stage, no U-Mamba halving), a residual stem and stages
(``BasicResBlock`` with 1x1 projection, then ResNet-D blocks), two ViL blocks (``vil_repeats=2``,
row-major voxel order) after every encoder stage and after every decoder stage, nearest upsampling
+ 1x1 convolution, a 1x1 head per decoder level (deep supervision); instance norm, leaky ReLU, He
initialization. Where a stage has at most as many voxels as channels, the reference runs its ViL
blocks over channel tokens (the voxels become the features); that needs the patch at build time:
``patch_size`` (``extra["patch_kwarg"]``: the trainer passes the plan's patch); built without it,
every stage uses voxel tokens.

Everything but the ViL placement is U-Mamba's network (``umamba.SequenceUNet``); the ViL block
and the mLSTM are xLSTM-UNet's (``xlstm_unet.ViLBlock``), whose chunkwise form keeps the
full-resolution stages (10^4-10^5 voxels) in memory. The paper reports no parameter count that we
could reach; our counts are snapshots (tests/test_zoo_seed_papers.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.plain_unet import plain_topology_kwargs
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq
from unetkit.models.umamba import TINY_KWARGS, SequenceUNet, build_sequence_unet, no_autocast
from unetkit.models.xlstm_unet import ViLBlock

VILUNET_PAPER = ("Heidari et al., A Study on the Performance of U-Net Modifications in Retroperitoneal Tumor "
                 "Segmentation, SPIE Medical Imaging 2025, arXiv:2502.00314 (Fig. 1; reference code ViLUNet.py)")
VIL_REPEATS = 2


class ChannelTokenViLBlock(nn.Module):
    """A ViL block over the channels as tokens and the voxels as features (the reference's
    ``channel_token`` mode, for stages with at most as many voxels as channels)."""

    def __init__(self, voxels: int) -> None:
        super().__init__()
        self.vil = ViLBlock(voxels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, shape = x.dtype, x.shape
        with no_autocast(x.device):
            t = x.float().flatten(2)  # (B, C tokens, voxels)
            t = t + self.vil.layer(self.vil.norm(t))
        return t.reshape(shape).to(dtype)


def _vil_stack(width: int, voxels: int | None, repeats: int) -> nn.Sequential:
    if voxels is not None and voxels <= width:
        return nn.Sequential(*[ChannelTokenViLBlock(voxels) for _ in range(repeats)])
    return nn.Sequential(*[ViLBlock(width) for _ in range(repeats)])


def _stage_voxels(strides: Sequence[Sequence[int]], patch_size: Sequence[int] | None) -> list[int | None]:
    """Voxels of each encoder stage's output for ``patch_size`` (None without a patch)."""
    if patch_size is None:
        return [None] * len(strides)
    size, out = [int(p) for p in patch_size], []
    for stride in strides:
        size = [a // b for a, b in zip(size, stride)]
        out.append(math.prod(size))
    return out


def vilunet_kwargs(spatial_dims: int, n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
                   kernel_sizes: Any = None, strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
                   n_conv_per_stage_decoder: IntOrSeq | None = None) -> dict[str, Any]:
    """The plan's topology as it is (nnU-Net defaults for missing keywords)."""
    return plain_topology_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                                 n_conv_per_stage_decoder)


@register_model(family="sequence", paper=VILUNET_PAPER, defaults=vilunet_kwargs, tiny_kwargs=TINY_KWARGS,
                extra={"tags": ["xlstm", "residual", "hybrid"], "divisible_by": 1, "paper_params": None,
                       "paper_setup": "no count reachable to us; snapshot of our count for a plain nnU-Net 3D "
                                      "topology (tests/test_zoo_seed_papers.py)",
                       "patch_kwarg": "patch_size"})
def vilunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
            n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
            strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
            n_conv_per_stage_decoder: IntOrSeq | None = None, patch_size: Sequence[int] | None = None,
            vil_repeats: int = VIL_REPEATS) -> SequenceUNet:
    """ViLU-Net: residual nnU-Net with two ViL blocks after every encoder and decoder stage."""
    kw = vilunet_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                        n_conv_per_stage_decoder)
    voxels = _stage_voxels(kw["strides"], patch_size)
    model = build_sequence_unet(spatial_dims, in_channels, num_classes, deep_supervision, kw,
                                lambda i, width: _vil_stack(width, voxels[i], vil_repeats), "enc")
    widths = model.topology.features_per_stage
    n = len(widths)
    for d, stage in enumerate(model.decoder):  # decoder stage d works at encoder level n - 2 - d
        level = n - 2 - d
        for block in _vil_stack(widths[level], voxels[level], vil_repeats):
            stage.append(block)
    return model
