"""nnU-Net's residual-encoder U-Net and its M / L / XL presets (family ``nnunet``).

Isensee, Wald, Ulrich, Baumgartner, Roy, Maier-Hein, Jaeger, "nnU-Net Revisited: A Call for
Rigorous Validation in 3D Medical Image Segmentation", MICCAI 2024 (arXiv:2404.09556; the presets ResEnc M / L / XL
in its main results table, measured there at 9.1 / 22.7 / 36.6 GB VRAM and 12 / 35 / 66 GPU hours of
training). Layer for layer and parameter for parameter the same network as
dynamic-network-architectures' ``ResidualEncoderUNet`` built by nnU-Net v2 for a plan (checked in
tests/test_models.py): a stem ConvNormAct, residual encoder stages of BasicBlockD blocks (ResNet-D
shortcut: average pooling + 1x1 conv), and the plain-convolution decoder of nnU-Net with one
convolution per stage.

M, L and XL are the *same network* for the same topology: what differs is the planner's GPU
memory target (8, 24, 40 GB), which sets the patch size and hence the number of stages. The
presets carry those planner rules in ``model_info(name).extra`` so the planning stage can apply
them; see docs/models.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from unetkit.models.blocks import (ConvNormAct, StackedResBlocks, UNetDecoder, init_he_,
                                   zero_last_norm_in_residual_)
from unetkit.models.plain_unet import EncoderDecoderUNet
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology, make_topology, per_stage_ints

RESENC_PAPER = ("Isensee et al., nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image "
                "Segmentation, MICCAI 2024, arXiv:2404.09556 (ResEnc M/L/XL in the main results table); "
                "He et al., Bag of Tricks for Image Classification, CVPR 2019 (ResNet-D, Fig. 2c)")

#: Residual blocks per encoder stage, truncated to ``n_stages`` (nnU-Net's ResEncUNetPlanner
#: ``UNet_blocks_per_stage_encoder``); stages beyond the list get 6.
RESENC_BLOCKS_PER_STAGE = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
#: Convolutions per decoder stage of the ResEnc U-Net.
RESENC_CONV_PER_STAGE_DECODER = 1


class ResEncUNet(EncoderDecoderUNet):
    """Stem -> residual encoder (``n_blocks_per_stage`` BasicBlockD per stage, the first strided)
    -> plain decoder with a 1x1 head per stage.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: stages, widths, kernels and strides.
        n_blocks_per_stage: residual blocks per encoder stage (``n_stages`` entries).
        n_conv_per_stage_decoder: convolutions per decoder stage, deepest first (``n_stages - 1``).
        deep_supervision: forward returns all decoder levels (full resolution first).
        conv_bias: bias in the convolutions (nnU-Net plans: True; the shortcut 1x1 conv has none).
        stem_channels: width of the stem (default: the first stage's width).

    Example:
        >>> net = ResEncUNet(3, 1, 3, make_topology(3, 6), [1, 3, 4, 6, 6, 6], [1] * 5)
        >>> net(torch.zeros(1, 1, 64, 64, 64))[0].shape
        torch.Size([1, 3, 64, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 n_blocks_per_stage: Sequence[int], n_conv_per_stage_decoder: Sequence[int],
                 deep_supervision: bool = True, conv_bias: bool = True, stem_channels: int | None = None) -> None:
        super().__init__()
        self.topology = topology
        n = topology.n_stages
        blocks = per_stage_ints("n_blocks_per_stage", n_blocks_per_stage, n)
        n_dec = per_stage_ints("n_conv_per_stage_decoder", n_conv_per_stage_decoder, n - 1)
        stem_channels = stem_channels or topology.features_per_stage[0]
        self.stem = ConvNormAct(spatial_dims, in_channels, stem_channels, topology.kernel_sizes[0],
                                (1,) * spatial_dims, conv_bias)
        stages, channels = [], stem_channels
        for s in range(n):
            stages.append(StackedResBlocks(spatial_dims, blocks[s], channels, topology.features_per_stage[s],
                                           topology.kernel_sizes[s], topology.strides[s], conv_bias))
            channels = topology.features_per_stage[s]
        self.encoder = nn.ModuleList(stages)
        self.decoder = UNetDecoder(spatial_dims, topology.features_per_stage, topology.strides,
                                   topology.kernel_sizes, n_dec, num_classes, conv_bias)
        self.deep_supervision = deep_supervision
        self.apply(init_he_)
        self.apply(zero_last_norm_in_residual_)



def resenc_topology_kwargs(spatial_dims: int, n_stages: int | None = None,
                           features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                           strides: Any = None, n_blocks_per_stage: IntOrSeq | None = None,
                           n_conv_per_stage_decoder: IntOrSeq | None = None) -> dict[str, Any]:
    """The full plan kwargs of a ResEnc U-Net, missing ones filled with the rules of nnU-Net's
    ``ResEncUNetPlanner``: blocks (1, 3, 4, 6, 6, ...) truncated to ``n_stages``, one convolution
    per decoder stage, topology defaults of ``make_topology``."""
    topo = make_topology(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides)
    n = topo.n_stages
    if n_blocks_per_stage is None:
        n_blocks_per_stage = [RESENC_BLOCKS_PER_STAGE[min(i, len(RESENC_BLOCKS_PER_STAGE) - 1)] for i in range(n)]
    if n_conv_per_stage_decoder is None:
        n_conv_per_stage_decoder = RESENC_CONV_PER_STAGE_DECODER
    return {
        "n_stages": n,
        "features_per_stage": list(topo.features_per_stage),
        "kernel_sizes": [list(k) for k in topo.kernel_sizes],
        "strides": [list(s) for s in topo.strides],
        "n_blocks_per_stage": list(per_stage_ints("n_blocks_per_stage", n_blocks_per_stage, n)),
        "n_conv_per_stage_decoder": list(per_stage_ints("n_conv_per_stage_decoder", n_conv_per_stage_decoder,
                                                        n - 1)),
    }


def _build(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool,
           n_stages: int | None, features_per_stage: IntOrSeq | None, kernel_sizes: Any, strides: Any,
           n_blocks_per_stage: IntOrSeq | None, n_conv_per_stage_decoder: IntOrSeq | None,
           conv_bias: bool, stem_channels: int | None) -> ResEncUNet:
    kw = resenc_topology_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides,
                                n_blocks_per_stage, n_conv_per_stage_decoder)
    topo = make_topology(spatial_dims, kw["n_stages"], kw["features_per_stage"], kw["kernel_sizes"], kw["strides"])
    return ResEncUNet(spatial_dims, in_channels, num_classes, topo, kw["n_blocks_per_stage"],
                      kw["n_conv_per_stage_decoder"], deep_supervision, conv_bias, stem_channels)


def _planner_rules(planner: str, vram_gb: int, ref_3d: int, ref_2d: int, paper_vram_gb: float,
                  paper_hours: float) -> dict[str, Any]:
    """The numbers nnU-Net's ResEnc planner uses for a preset (residual_encoder_unet_planners.py),
    and the VRAM / training time the paper measured for it."""
    return {"planner": planner, "vram_target_gb": vram_gb,
            "paper_vram_gb": paper_vram_gb, "paper_training_gpu_hours": paper_hours,
            "vram_reference_3d": ref_3d, "vram_reference_2d": ref_2d, "vram_reference_gb": vram_gb,
            "reference_batch_size_3d": 2, "reference_batch_size_2d": 12,
            "max_features_3d": 320, "max_features_2d": 512, "base_features": 32,
            "n_blocks_per_stage": list(RESENC_BLOCKS_PER_STAGE),
            "n_conv_per_stage_decoder": RESENC_CONV_PER_STAGE_DECODER,
            "max_dataset_covered": 1.0,
            # catalogue (docs/models.md): the paper measures VRAM and GPU hours, not parameters
            "tags": ["cnn", "residual"], "paper_params": None,
            "paper_setup": "no count printed; nnU-Net plans the topology (by name: 5 stages, 32..320/512, "
                           "blocks 1,3,4,6,6)",
            "divisible_by": 1}  # the plan's strides decide; the planner's patch fits them


#: A small instance for tests: 4 stages, strides 1,2,2,2 (patch multiple of 8), 4..32 features, 1-2 blocks.
TINY_KWARGS = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": 3, "strides": [1, 2, 2, 2],
               "n_blocks_per_stage": [1, 2, 2, 2]}
_COMMON: dict[str, Any] = {"family": "nnunet", "paper": RESENC_PAPER, "defaults": resenc_topology_kwargs,
                           "tiny_kwargs": TINY_KWARGS}
# nnU-Net uses the same VRAM reference for plain "ResEncUNetPlanner" and the M preset.
_RULES_M = _planner_rules("nnUNetPlannerResEncM", 8, 680_000_000, 135_000_000, 9.1, 12)


@register_model(**_COMMON, extra=_RULES_M)
def resenc_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                strides: Any = None, n_blocks_per_stage: IntOrSeq | None = None,
                n_conv_per_stage: IntOrSeq | None = None, n_conv_per_stage_decoder: IntOrSeq | None = None,
                conv_bias: bool = True, stem_channels: int | None = None) -> ResEncUNet:
    """nnU-Net's residual-encoder U-Net (ResidualEncoderUNet) from a plan's topology.

    Takes the plain U-Net's topology keywords plus ``n_blocks_per_stage``; ``n_conv_per_stage``
    (the plain encoder's depth) is accepted so a plain plan can be reused by swapping the name, and
    is not used: the residual encoder's depth is ``n_blocks_per_stage`` (default 1, 3, 4, 6, 6, ...),
    the decoder has ``n_conv_per_stage_decoder`` convolutions per stage (default 1).
    """
    del n_conv_per_stage  # documented: replaced by n_blocks_per_stage in a residual encoder
    return _build(spatial_dims, in_channels, num_classes, deep_supervision, n_stages, features_per_stage,
                  kernel_sizes, strides, n_blocks_per_stage, n_conv_per_stage_decoder, conv_bias, stem_channels)


@register_model(**_COMMON, extra=_RULES_M)
def resenc_unet_m(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                  n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                  strides: Any = None, n_blocks_per_stage: IntOrSeq | None = None,
                  n_conv_per_stage: IntOrSeq | None = None, n_conv_per_stage_decoder: IntOrSeq | None = None,
                  conv_bias: bool = True, stem_channels: int | None = None) -> ResEncUNet:
    """nnU-Net ResEnc M: the ResEnc U-Net as planned for a 9-11 GB GPU (planner target 8 GB).

    Same network as ``resenc_unet``; the preset's planner rules are in ``model_info().extra``.
    """
    del n_conv_per_stage
    return _build(spatial_dims, in_channels, num_classes, deep_supervision, n_stages, features_per_stage,
                  kernel_sizes, strides, n_blocks_per_stage, n_conv_per_stage_decoder, conv_bias, stem_channels)


@register_model(**_COMMON, extra=_planner_rules("nnUNetPlannerResEncL", 24, 2_100_000_000, 380_000_000, 22.7, 35))
def resenc_unet_l(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                  n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                  strides: Any = None, n_blocks_per_stage: IntOrSeq | None = None,
                  n_conv_per_stage: IntOrSeq | None = None, n_conv_per_stage_decoder: IntOrSeq | None = None,
                  conv_bias: bool = True, stem_channels: int | None = None) -> ResEncUNet:
    """nnU-Net ResEnc L: the ResEnc U-Net as planned for a 24 GB GPU (larger patches, more stages).

    Same network as ``resenc_unet`` for the same topology; the preset's planner rules are in
    ``model_info().extra``.
    """
    del n_conv_per_stage
    return _build(spatial_dims, in_channels, num_classes, deep_supervision, n_stages, features_per_stage,
                  kernel_sizes, strides, n_blocks_per_stage, n_conv_per_stage_decoder, conv_bias, stem_channels)


@register_model(**_COMMON, extra=_planner_rules("nnUNetPlannerResEncXL", 40, 3_600_000_000, 560_000_000, 36.6, 66))
def resenc_unet_xl(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                   n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                   strides: Any = None, n_blocks_per_stage: IntOrSeq | None = None,
                   n_conv_per_stage: IntOrSeq | None = None, n_conv_per_stage_decoder: IntOrSeq | None = None,
                   conv_bias: bool = True, stem_channels: int | None = None) -> ResEncUNet:
    """nnU-Net ResEnc XL: the ResEnc U-Net as planned for a 40 GB GPU.

    Same network as ``resenc_unet`` for the same topology; the preset's planner rules are in
    ``model_info().extra``.
    """
    del n_conv_per_stage
    return _build(spatial_dims, in_channels, num_classes, deep_supervision, n_stages, features_per_stage,
                  kernel_sizes, strides, n_blocks_per_stage, n_conv_per_stage_decoder, conv_bias, stem_channels)
