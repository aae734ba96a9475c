"""nnU-Net's plain-convolution U-Net, built from a plan's topology (family ``nnunet``).

Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015
(Fig. 1), as configured by nnU-Net: Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 18, 2021 (Fig. 2, Supplementary
Note 3). Layer for layer and parameter for parameter the same network as
dynamic-network-architectures' ``PlainConvUNet`` built by nnU-Net v2 for a plan (checked in
tests/test_models.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import StackedConvs, UNetDecoder, init_he_
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology, check_patch, make_topology, per_stage_ints

NNUNET_PAPER = ("Isensee et al., nnU-Net: a self-configuring method for deep learning-based biomedical "
                "image segmentation, Nature Methods 18:203-211, 2021 (Fig. 2, Suppl. Note 3); "
                "Ronneberger et al., U-Net, MICCAI 2015 (Fig. 1)")


class EncoderDecoderUNet(nn.Module):
    """What nnU-Net's U-Nets share: an optional ``stem``, an ``encoder`` (a ModuleList whose stage
    outputs are the skips), nnU-Net's ``decoder``, the switchable deep supervision, the forward pass
    and the feature-map estimate. Subclasses only build the encoder (plain convs, residual blocks)."""

    topology: Topology
    encoder: nn.ModuleList
    decoder: UNetDecoder

    @property
    def deep_supervision(self) -> bool:
        """Whether forward returns every decoder level; can be switched after training."""
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, value: bool) -> None:
        self.decoder.deep_supervision = bool(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_patch(self.topology, x.shape[2:])
        stem = getattr(self, "stem", None)
        if stem is not None:
            x = stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        return self.decoder(skips)

    def conv_feature_map_size(self, patch_size: Sequence[int]) -> int:
        """Feature-map elements for one sample (dynamic-network-architectures'
        ``compute_conv_feature_map_size``, used to estimate memory)."""
        total, size = 0, tuple(patch_size)
        stem = getattr(self, "stem", None)
        if stem is not None:
            total, _ = stem.feature_map_size(size)  # the stem keeps the resolution
        for stage in self.encoder:
            n, size = stage.feature_map_size(size)
            total += n
        return total + self.decoder.feature_map_size(patch_size, self.deep_supervision)


class PlainUNet(EncoderDecoderUNet):
    """Encoder of ``n_conv_per_stage`` ConvNormAct units per stage (stride on the first), decoder of
    transposed convolution + skip concatenation + ``n_conv_per_stage_decoder`` units, a 1x1 head per
    decoder stage.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: stages, widths, kernels and strides (see ``topology.make_topology``).
        n_conv_per_stage: convolutions per encoder stage (``topology.n_stages`` entries).
        n_conv_per_stage_decoder: convolutions per decoder stage, deepest first
            (``n_stages - 1`` entries).
        deep_supervision: forward returns all decoder levels (full resolution first).
        conv_bias: bias in the convolutions (nnU-Net plans: True).

    Example:
        >>> net = PlainUNet(3, 1, 3, make_topology(3, 4, [32, 64, 128, 256]), [2] * 4, [2] * 3)
        >>> [o.shape[2:] for o in net(torch.zeros(1, 1, 40, 56, 40))]  # 40x56x40, 20x28x20, 10x14x10
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 n_conv_per_stage: Sequence[int], n_conv_per_stage_decoder: Sequence[int],
                 deep_supervision: bool = True, conv_bias: bool = True) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        n_conv = per_stage_ints("n_conv_per_stage", n_conv_per_stage, n)
        n_dec = per_stage_ints("n_conv_per_stage_decoder", n_conv_per_stage_decoder, n - 1)
        stages, channels = [], in_channels
        for s in range(n):
            stages.append(StackedConvs(spatial_dims, n_conv[s], channels, topology.features_per_stage[s],
                                       topology.kernel_sizes[s], topology.strides[s], conv_bias))
            channels = topology.features_per_stage[s]
        self.encoder = nn.ModuleList(stages)
        self.decoder = UNetDecoder(spatial_dims, topology.features_per_stage, topology.strides,
                                   topology.kernel_sizes, n_dec, num_classes, conv_bias)
        self.deep_supervision = deep_supervision
        self.apply(init_he_)



def plain_topology_kwargs(spatial_dims: int, n_stages: int | None = None,
                          features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                          strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
                          n_conv_per_stage_decoder: IntOrSeq | None = None) -> dict[str, Any]:
    """The full plan kwargs of a plain U-Net, missing ones filled with nnU-Net's defaults
    (2 convolutions per encoder and decoder stage; topology defaults of ``make_topology``)."""
    topo = make_topology(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides)
    n = topo.n_stages
    return {
        "n_stages": n,
        "features_per_stage": list(topo.features_per_stage),
        "kernel_sizes": [list(k) for k in topo.kernel_sizes],
        "strides": [list(s) for s in topo.strides],
        "n_conv_per_stage": list(per_stage_ints("n_conv_per_stage", 2 if n_conv_per_stage is None
                                                else n_conv_per_stage, n)),
        "n_conv_per_stage_decoder": list(per_stage_ints("n_conv_per_stage_decoder", 2 if n_conv_per_stage_decoder
                                                        is None else n_conv_per_stage_decoder, n - 1)),
    }


#: A small instance for tests: 4 stages, strides 1,2,2,2 (patch multiple of 8), 4..32 features.
TINY_KWARGS = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": 3, "strides": [1, 2, 2, 2]}


@register_model(family="nnunet", paper=NNUNET_PAPER, defaults=plain_topology_kwargs, tiny_kwargs=TINY_KWARGS,
                extra={"planner": "nnU-Net v2 ExperimentPlanner",
                       "vram_reference_3d": 560_000_000, "vram_reference_2d": 85_000_000,
                       "vram_reference_gb": 8, "reference_batch_size_3d": 2, "reference_batch_size_2d": 12,
                       "max_features_3d": 320, "max_features_2d": 512, "base_features": 32,
                       "tags": ["cnn"], "paper_params": None,
                       "paper_setup": "no count printed; nnU-Net plans the topology (by name: 5 stages, 32..320/512)",
                       "divisible_by": 1})  # the plan's strides decide; the planner's patch fits them
def plain_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
               n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
               kernel_sizes: Any = None, strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
               n_conv_per_stage_decoder: IntOrSeq | None = None, conv_bias: bool = True) -> PlainUNet:
    """nnU-Net's plain-convolution U-Net (PlainConvUNet) from a plan's topology.

    By name alone: 5 stages, 32 doubled per stage up to 320 (3D) / 512 (2D), 3x3(x3) kernels,
    strides 1,2,2,2,2, two convolutions per stage in encoder and decoder.
    """
    kw = plain_topology_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides,
                               n_conv_per_stage, n_conv_per_stage_decoder)
    topo = make_topology(spatial_dims, kw["n_stages"], kw["features_per_stage"], kw["kernel_sizes"], kw["strides"])
    return PlainUNet(spatial_dims, in_channels, num_classes, topo, kw["n_conv_per_stage"],
                     kw["n_conv_per_stage_decoder"], deep_supervision, conv_bias)
