"""The classic U-Nets (family ``unet``): Ronneberger's 2D U-Net and Çiçek's 3D U-Net.

- ``unet``: Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image
  Segmentation", MICCAI 2015 (Fig. 1): 5 resolution levels of 64, 128, 256, 512, 1024 features,
  two 3x3 convolutions + ReLU per level, 2x2 max pooling, 2x2 "up-convolution" halving the features,
  concatenation skips, a 1x1 head, drop-out at the end of the contracting path (Sec. 3.1). The
  paper uses unpadded convolutions (572 -> 388); like every common reimplementation we pad
  ("same"), which changes no parameter. 1 input channel, 2 classes: 31,030,658 parameters (the
  figure usually quoted as "31.0M"; the paper itself states no count).
- ``unet3d``: Çiçek, Abdulkadir, Lienkamp, Brox, Ronneberger, "3D U-Net: Learning Dense Volumetric
  Segmentation from Sparse Annotation", MICCAI 2016 (Fig. 2, Sec. 2): 4 levels, the features
  doubled *before* each pooling (32->64, 64->128, 128->256, 256->512), batch norm before each
  ReLU, 2x2x2 up-convolutions keeping the features, 3 input channels, 3 classes. The paper states
  "19069955 parameters": exactly our count with ``norm="none"`` (the Caffe count has no learned
  norm affine and no up-convolution bias); with the batch norm's affine (default) it is 19,074,627
  (+0.02%).

This module also holds the small pieces the other CNN-variant families (``unetpp``, ``unet3plus``,
``attention_unet``, ``r2unet``, ``resunetpp``, ``multiresunet``, ``u2net``) share: norm choice by
name, conv-norm-ReLU, max pooling and linear interpolation by dimension, and the plan topology
(``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides``) those variants accept so that
``unetkit train --arch NAME`` can keep the plan's stages, widths, kernels and strides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import conv_class, same_padding, transposed_conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology, check_patch, make_topology

Shape = tuple[int, ...]

#: Norm names a variant accepts (``norm=`` keyword): the paper's choice is each model's default.
NORMS = ("batch", "instance", "none")


# ----------------------------------------------------------------------------- shared pieces
def norm_layer(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """``"batch"`` (BatchNormNd, as most of these papers), ``"instance"`` (affine, eps 1e-5, as
    nnU-Net) or ``"none"`` (identity, as Ronneberger 2015 and the UNet++ reference code)."""
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, eps=1e-5, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")


def max_pool(spatial_dims: int, stride: Sequence[int], ceil_mode: bool = False) -> nn.Module:
    """Max pooling with kernel = stride (per axis)."""
    pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]
    return pool(tuple(stride), tuple(stride), ceil_mode=ceil_mode)


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear (2D) / trilinear (3D) resampling of feature maps or logits to ``size``."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


class ConvNormReLU(nn.Sequential):
    """Convolution ("same" padding, optional dilation) -> norm -> ReLU (or no activation)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3,
                 norm: str = "batch", *, stride: IntOrSeq = 1, dilation: int = 1, bias: bool = True,
                 act: bool = True) -> None:
        k = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
        pad = tuple(p * dilation for p in same_padding(k))
        super().__init__(conv_class(spatial_dims)(in_channels, out_channels, k, stride, pad, dilation=dilation,
                                                  bias=bias),
                         norm_layer(norm, spatial_dims, out_channels),
                         nn.ReLU(inplace=True) if act else nn.Identity())


class DoubleConv(nn.Sequential):
    """Two ConvNormReLU units (a U-Net level); ``mid_channels`` is the first unit's width."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: IntOrSeq = 3,
                 norm: str = "batch", mid_channels: int | None = None, dropout: float = 0.0) -> None:
        mid = mid_channels or out_channels
        layers: list[nn.Module] = [ConvNormReLU(spatial_dims, in_channels, mid, kernel_size, norm)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(ConvNormReLU(spatial_dims, mid, out_channels, kernel_size, norm))
        if dropout:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


def resolve_topology(spatial_dims: int, paper_features: Sequence[int], n_stages: int | None,
                     features_per_stage: IntOrSeq | None, kernel_sizes: Any, strides: Any) -> Topology:
    """A plan's topology keywords, or the paper's widths (``paper_features``) where none are given.

    ``n_stages`` alone keeps the paper's first width, doubled per stage. The first stage works at
    full resolution (these designs pool *between* stages), so ``strides[0]`` must be all ones.
    """
    if features_per_stage is None:
        if n_stages is None and not (isinstance(strides, Sequence) or isinstance(kernel_sizes, Sequence)):
            features_per_stage = list(paper_features)
        else:
            n = n_stages or (len(strides) if isinstance(strides, Sequence) else
                             len(kernel_sizes) if isinstance(kernel_sizes, Sequence) else len(paper_features))
            features_per_stage = [paper_features[0] * 2 ** i for i in range(n)]
    topo = make_topology(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides)
    if any(s != 1 for s in topo.strides[0]):
        raise ValueError(f"strides[0] must be all ones (the first stage of this design is at full resolution), "
                         f"got {list(topo.strides[0])}")
    return topo


def topology_kwargs(topo: Topology) -> dict[str, Any]:
    """The plan keywords of a topology, as ``model_info(name).default_kwargs`` reports them."""
    return {"n_stages": topo.n_stages, "features_per_stage": list(topo.features_per_stage),
            "kernel_sizes": [list(k) for k in topo.kernel_sizes], "strides": [list(s) for s in topo.strides]}


def init_kaiming_relu_(module: nn.Module) -> None:
    """He-normal weights for ReLU networks (He et al., ICCV 2015, as the Caffe/Keras references'
    ``msra``/``he_normal``), zero biases, norm weights 1 and biases 0. Use with ``model.apply``."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class TopologyNet(nn.Module):
    """Base of the variants built from a :class:`Topology`: the patch check and the
    (switchable) ``deep_supervision`` flag."""

    topology: Topology

    def __init__(self) -> None:
        super().__init__()
        self.deep_supervision = False

    def check(self, x: torch.Tensor) -> None:
        check_patch(self.topology, x.shape[2:])


# ----------------------------------------------------------------------------- U-Net / 3D U-Net
class ClassicUNet(TopologyNet):
    """Ronneberger's U-Net (``double_before_pool=False``) or Çiçek's 3D U-Net (True).

    Encoder level ``s``: two ConvNormReLU (widths ``f_s, f_s``, or ``f_s/2, f_s`` for the 3D U-Net),
    max pooling with kernel = ``strides[s+1]`` between levels. Decoder level ``s``: up-convolution
    (kernel = stride) to ``f_s`` (Ronneberger: halving) or keeping the width below (Çiçek),
    concatenation with the skip, two ConvNormReLU of width ``f_s``; a 1x1 head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        topology: widths, kernels, strides per level.
        double_before_pool: Çiçek's widths (first conv of a level at half the level's width) and
            width-keeping up-convolutions without bias.
        norm: ``"none"`` (Ronneberger), ``"batch"`` (Çiçek) or ``"instance"``.
        dropout: drop-out probability on the deepest level's output (Ronneberger: 0.5).

    Example:
        >>> net = ClassicUNet(2, 1, 2, make_topology(2, 5, [64, 128, 256, 512, 1024]))
        >>> net(torch.zeros(1, 1, 48, 80)).shape
        torch.Size([1, 2, 48, 80])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 double_before_pool: bool = False, norm: str = "none", dropout: float = 0.0) -> None:
        super().__init__()
        self.topology = topology
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        n = topology.n_stages
        enc, pools, ch = [], [], in_channels
        for i in range(n):
            mid = f[i] // 2 if double_before_pool else f[i]
            enc.append(DoubleConv(spatial_dims, ch, f[i], k[i], norm, mid_channels=max(mid, 1)))
            ch = f[i]
            if i + 1 < n:
                pools.append(max_pool(spatial_dims, s[i + 1]))
        self.encoder = nn.ModuleList(enc)
        self.pools = nn.ModuleList(pools)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        up_cls = transposed_conv_class(spatial_dims)
        ups, dec = [], []
        for i in range(n - 2, -1, -1):
            up_out = ch if double_before_pool else f[i]
            ups.append(up_cls(ch, up_out, s[i + 1], s[i + 1], bias=not double_before_pool))
            dec.append(DoubleConv(spatial_dims, up_out + f[i], f[i], k[i], norm))
            ch = f[i]
        self.upsample = nn.ModuleList(ups)
        self.decoder = nn.ModuleList(dec)
        self.head = conv_class(spatial_dims)(ch, num_classes, 1)
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pools[i - 1](x))
            skips.append(x)
        x = self.dropout(skips.pop())
        for up, stage in zip(self.upsample, self.decoder):
            x = stage(torch.cat((skips.pop(), up(x)), dim=1))
        return self.head(x)


RONNEBERGER_PAPER = ("Ronneberger, Fischer, Brox, U-Net: Convolutional Networks for Biomedical Image "
                     "Segmentation, MICCAI 2015 (Fig. 1)")
CICEK_PAPER = ("Çiçek, Abdulkadir, Lienkamp, Brox, Ronneberger, 3D U-Net: Learning Dense Volumetric "
               "Segmentation from Sparse Annotation, MICCAI 2016 (Fig. 2, Sec. 2: 19,069,955 parameters)")
UNET_FEATURES = (64, 128, 256, 512, 1024)
UNET3D_FEATURES = (64, 128, 256, 512)  # level outputs; the first conv of each level has half
TINY_TOPOLOGY = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32]}


def _unet_defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, UNET_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "norm": "none", "dropout": 0.5}


def _unet3d_defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, UNET3D_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "norm": "batch"}


@register_model(family="unet", paper=RONNEBERGER_PAPER, deep_supervision=False, defaults=_unet_defaults,
                tiny_kwargs={**TINY_TOPOLOGY, "dropout": 0.0, "norm": "batch"},  # no-norm: tests/test_zoo_cnn.py
                extra={"tags": ["cnn"], "divisible_by": 16, "paper_params": None,
                       "reference_parameters": 31_030_658,
                       "paper_setup": "no count printed; reference_parameters is for 2D, 1 input channel, 2 classes, "
                                      "64..1024, padded convs"})
def unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
         n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
         strides: Any = None, norm: str = "none", dropout: float = 0.5) -> ClassicUNet:
    """U-Net (Ronneberger et al. 2015): 64..1024, two 3x3 conv + ReLU per level, up-conv halving.

    Default (paper, Fig. 1): 5 levels 64, 128, 256, 512, 1024, no norm, drop-out 0.5 at the end of
    the contracting path; patches must be multiples of 16 (the product of the strides).
    1 input channel, 2 classes: 31,030,658 parameters (2D), the commonly cited ~31.0M.
    """
    topo = resolve_topology(spatial_dims, UNET_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return ClassicUNet(spatial_dims, in_channels, num_classes, topo, False, norm, dropout)


@register_model(family="unet", paper=CICEK_PAPER, deep_supervision=False, defaults=_unet3d_defaults,
                tiny_kwargs=TINY_TOPOLOGY,
                extra={"tags": ["cnn"], "divisible_by": 8, "paper_params": 19_069_955,
                       "paper_setup": "3D, 3 input channels, 3 classes, norm none (Caffe count)"})
def unet3d(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
           strides: Any = None, norm: str = "batch") -> ClassicUNet:
    """3D U-Net (Çiçek et al. 2016): features doubled before pooling, batch norm, width-keeping up-convs.

    Default (paper, Fig. 2): 4 levels with outputs 64, 128, 256, 512 (first convs 32, 64, 128, 256),
    batch norm; patches must be multiples of 8. 3 input channels, 3 classes: 19,074,627 parameters
    (19,069,955 with ``norm="none"``, the paper's count). The design carries over to 2D.
    """
    topo = resolve_topology(spatial_dims, UNET3D_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return ClassicUNet(spatial_dims, in_channels, num_classes, topo, True, norm, 0.0)
