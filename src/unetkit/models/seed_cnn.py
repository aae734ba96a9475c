"""Convolutional U-Nets of the seed papers (family ``seed_cnn``): MBDRes-U-Net, DRU-Net.

- ``mbdres_unet``: Shen, Hou, Chen, Diao, Duan, "MBDRes-U-Net: Multi-Scale Lightweight Brain Tumor
  Segmentation Network", arXiv:2411.01896, 2024 (3D, BraTS 2018/2019). Reference code: the authors'
  ``MBDResUNet`` (github.com/Huaibei-normal-university-cv-laboratory/mbdresunet; read through the
  code search, which did not name the repository of the file). The layout follows it:

  * "fused attention" on the input modalities (``SCA3D``): the channels are split in two halves, the
    first gated by channel squeeze-and-excitation (global mean, linear to a half, ReLU, linear,
    sigmoid), the second by a spatial gate (1x1x1 conv to one map, sigmoid); the two are
    concatenated, added to the input and the halves interleaved (channel shuffle, 2 groups);
  * a 3x3x3 stride-2 convolution to ``n`` = 32 channels, then three encoder stages of three
    multi-branch residual blocks each (the first with stride 2) at 128, 256 and 384 -> 256 channels;
    the blocks of the first two stages are "MBDRes" blocks, the third stage's plain "MBRes" blocks;
  * a block is pre-activation (BN, ReLU, conv) throughout: 1x1x1 to a quarter of the input width,
    a grouped 3x3x3 convolution (8 groups; in an MBDRes block three of them with dilations 1, 2, 3
    on the same input, summed with learnable scalar weights initialised to 1: the "adaptive
    weighted dilated convolution"), a grouped 3x3x1 convolution, a 1x1x1 convolution; the shortcut
    is the identity, a 1x1x1 convolution, or a 2x2x2 stride-2 convolution when the block downsamples;
  * the decoder: trilinear x2, concatenation with the skip, one MBRes block, three times, then
    trilinear x2 to full resolution and a 1x1x1 convolution without bias.

  The reference's configuration (``MBDResUNet(c=4, groups=8, num_classes=4)``: n = 32, channels
  = 128) is the default. Differences: the reference ends with a softmax (unetkit's networks return
  logits); it also builds a second attention module (``sca1``, 296 parameters) that its forward
  never uses, not built here. For input channel counts other than 4 the attention splits
  ``c // 2`` / ``c - c // 2`` channels (with one channel only the spatial gate remains) and
  interleaves them likewise. A patch that is not a multiple of 16 is zero-padded and the logits
  cropped. 3D only (the paper is 3D; its 3x3x1 kernels are volumetric). No deep supervision.
  We did not reach the paper's text beyond its abstract, so its printed parameter count is not
  known to us; the test records our count as a labelled snapshot.

- ``drunet``: Jafari, Auer, Francis, Zheng, Chen, "DRU-Net: An Efficient Deep Convolutional Neural
  Network for Medical Image Segmentation", ISBI 2020 (arXiv:2004.13453), Fig. 1-2. Reference code:
  github.com/MinaJf/DRU-net ``nets_tf/DRUnet2D.py`` (TensorFlow), configuration of its
  ``example_train.py``: 5 levels, root width 16, 1 input channel, 2 classes, drop-out 0. Layout:

  * a 7x7 convolution (with bias) to the root width;
  * per level (width ``f = 16 * 2**l``, max-pool 2 between levels) a "dense residual" block:
    ``x1 = BN(conv3x3(x))``, ``y = BN(conv3x3(ReLU(x1)))``, ``ReLU(y + x1 + x)`` concatenated with
    ``x`` (so each level hands ``2f`` channels on: the ResNet sum and the DenseNet concatenation);
  * per decoder level a 3x3 stride-2 transposed convolution to ``f`` + BN + ReLU, concatenation
    with the skip (``3f``), then ``ReLU(BN(conv3x3(ReLU(x1))) + x1 + BN(conv1x1(input)))`` with
    ``x1 = BN(conv3x3(input))``;
  * a 1x1 convolution without bias to the classes.

  Differences: the reference applies a ReLU to the logits (not done: unetkit's networks return
  logits for a softmax, a clamped logit cannot go below 0); batch norm eps 1e-3 as TensorFlow's.
  The paper's parameter figure was not reachable to us; our count is recorded as a snapshot.
  2D (the paper) and 3D (the same layers with 3D convolutions); a patch that is not a multiple of
  ``2**(levels-1)`` is zero-padded and the logits cropped. No deep supervision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.blocks import conv_class, transposed_conv_class
from unetkit.models.lightweight import batch_norm_class
from unetkit.models.registry import register_model

MBDRES_PAPER = ("Shen et al., MBDRes-U-Net: Multi-Scale Lightweight Brain Tumor Segmentation Network, "
                "arXiv:2411.01896 (Fig. 1-3; reference code MBDResUNet(c=4, groups=8, num_classes=4))")
_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


class PreActConv3d(nn.Sequential):
    """Batch norm, ReLU, then a 3D convolution without bias ("BN + ReLU + Conv" of the reference)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int] | int, stride: int = 1,
                 groups: int = 1, dilation: Sequence[int] | int = 1,
                 padding: Sequence[int] | int | None = None) -> None:
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        dilation = (dilation,) * 3 if isinstance(dilation, int) else tuple(dilation)
        if padding is None:
            padding = tuple((k - 1) // 2 * d for k, d in zip(kernel, dilation))
        super().__init__(nn.BatchNorm3d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv3d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias=False))


class MultiBranchResBlock(nn.Module):
    """The reference's MBRes block, or with ``dilations`` of length > 1 its MBDRes block.

    1x1x1 to ``in/4``; grouped 3x3x3 (with the stride) to ``min(in, out)``, one per dilation, summed
    with learnable weights (initialised to 1); grouped 3x3x1 to ``out``; 1x1x1; plus the shortcut
    (identity, 1x1x1, or 2x2x2 stride 2 when downsampling), each conv pre-activated.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int = 1,
                 dilations: Sequence[int] = (1,)) -> None:
        super().__init__()
        mid, quarter = min(in_channels, out_channels), in_channels // 4
        if quarter % groups or mid % groups or out_channels % groups:
            raise ValueError(f"MBDRes block {in_channels}->{out_channels}: in/4 = {quarter}, {mid} and "
                             f"{out_channels} must be multiples of groups = {groups}")
        self.reduce = PreActConv3d(in_channels, quarter, 1)
        self.branches = nn.ModuleList([PreActConv3d(quarter, mid, 3, stride, groups, d) for d in dilations])
        self.branch_weights = nn.Parameter(torch.ones(len(dilations))) if len(dilations) > 1 else None
        self.planar = PreActConv3d(mid, out_channels, (3, 3, 1), 1, groups)
        self.expand = PreActConv3d(out_channels, out_channels, 1)
        if stride != 1:
            self.shortcut: nn.Module = PreActConv3d(in_channels, out_channels, 2, stride, padding=0)
        elif in_channels != out_channels:
            self.shortcut = PreActConv3d(in_channels, out_channels, 1)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(x)
        if self.branch_weights is None:
            h = self.branches[0](h)
        else:
            h = sum(w * branch(h) for w, branch in zip(self.branch_weights, self.branches))
        return self.expand(self.planar(h)) + self.shortcut(x)


class SplitChannelSpatialAttention(nn.Module):
    """The reference's ``SCA3D`` "fused attention": channel SE on the first half of the channels,
    a spatial gate on the second, concatenated, added to the input, halves interleaved."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        self.half = channels // 2
        rest = channels - self.half
        self.channel_gate = (nn.Sequential(nn.Linear(self.half, max(1, self.half // reduction)), nn.ReLU(inplace=True),
                                           nn.Linear(max(1, self.half // reduction), self.half))
                             if self.half > 0 else None)
        self.spatial_gate = nn.Conv3d(rest, 1, 1, bias=False)
        # channel shuffle with 2 groups: first-half channel i, then second-half channel i, ...
        order = [c for pair in zip(range(self.half), range(self.half, channels)) for c in pair]
        order += list(range(len(order) // 2 + self.half, channels)) if rest > self.half else []
        self.register_buffer("shuffle", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x[:, :self.half], x[:, self.half:]
        parts = []
        if self.channel_gate is not None:
            weights = torch.sigmoid(self.channel_gate(first.mean(dim=(2, 3, 4))))
            parts.append(first * weights[:, :, None, None, None])
        parts.append(second * torch.sigmoid(self.spatial_gate(second)))
        return (torch.cat(parts, dim=1) + x)[:, self.shuffle]


class MBDResUNet(nn.Module):
    """MBDRes-U-Net (see the module docstring).

    Args:
        in_channels, num_classes: input modalities and output classes.
        stem_channels: ``n`` of the reference (32): width of the stride-2 stem and the last decoder block.
        channels: ``channels`` of the reference (128): widths 128, 256, 384 of the encoder stages.
        groups: groups of the 3x3x3 / 3x3x1 convolutions (8).
        dilations: dilations of the MBDRes blocks' branches (1, 2, 3).

    Example:
        >>> MBDResUNet(4, 4)(torch.zeros(1, 4, 32, 32, 32)).shape
        torch.Size([1, 4, 32, 32, 32])
    """

    def __init__(self, in_channels: int, num_classes: int, stem_channels: int = 32, channels: int = 128,
                 groups: int = 8, dilations: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        n, c, g = stem_channels, channels, groups

        def stage(widths: Sequence[int], dil: Sequence[int]) -> nn.Sequential:
            return nn.Sequential(*[MultiBranchResBlock(a, b, g, 2 if i == 0 else 1, dil)
                                   for i, (a, b) in enumerate(zip(widths, widths[1:]))])

        self.attention = SplitChannelSpatialAttention(in_channels)
        self.encoder_stem = nn.Conv3d(in_channels, n, 3, 2, 1, bias=False)
        self.encoder = nn.ModuleList([stage([n, c, c, c], dilations), stage([c, 2 * c, 2 * c, 2 * c], dilations),
                                      stage([2 * c, 3 * c, 3 * c, 2 * c], (1,))])
        self.decoder = nn.ModuleList([MultiBranchResBlock(4 * c, 2 * c, g), MultiBranchResBlock(3 * c, c, g),
                                      MultiBranchResBlock(c + n, n, g)])
        self.head = nn.Conv3d(n, num_classes, 1, bias=False)
        self.deep_supervision = False
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 16)
        skips = [self.encoder_stem(self.attention(x))]
        for stage in self.encoder:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for block in self.decoder:
            y = block(torch.cat([skips.pop(), _up2(y)], dim=1))
        return crop_to(self.head(_up2(y)), size)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


def _mbdres_defaults(spatial_dims: int) -> dict[str, Any]:
    return {"stem_channels": 32, "channels": 128, "groups": 8, "dilations": [1, 2, 3]}


@register_model(family="cnn", paper=MBDRES_PAPER, spatial_dims=(3,), deep_supervision=False,
                defaults=_mbdres_defaults, tiny_kwargs={"stem_channels": 8, "channels": 16, "groups": 2},
                extra={"tags": ["cnn", "residual", "multiscale", "attention", "lightweight"], "divisible_by": 16,
                       "pads_input": True, "paper_params": None,
                       "paper_setup": "paper figure not reached (abstract only). Snapshot of our count, 4 modalities "
                                      "in, 4 classes, n=32, channels=128, groups=8 (the reference code's "
                                      "__main__): 3,870,939; the reference code builds 296 more (an unused "
                                      "attention module)",
                       "kwargs_note": _PLAN_NOTE})
def mbdres_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                stem_channels: int = 32, channels: int = 128, groups: int = 8, dilations: Sequence[int] = (1, 2, 3),
                n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
                strides: Any = None) -> MBDResUNet:
    """MBDRes-U-Net: 3D U-Net of multi-branch residual blocks with adaptive-weighted dilated branches."""
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return MBDResUNet(in_channels, num_classes, stem_channels, channels, groups, tuple(dilations))


# ============================================================================================ DRU-Net
DRUNET_PAPER = ("Jafari et al., DRU-Net: An Efficient Deep Convolutional Neural Network for Medical Image "
                "Segmentation, ISBI 2020, arXiv:2004.13453 (Fig. 1-2; reference code MinaJf/DRU-net DRUNet2D, "
                "n_layer=5, root_filters=16)")


def _bn_tf(spatial_dims: int, channels: int) -> nn.Module:
    """Batch norm with TensorFlow's defaults (eps 1e-3, moving-average decay 0.99)."""
    return batch_norm_class(spatial_dims)(channels, eps=1e-3, momentum=0.01)


class DenseResidualBlock(nn.Module):
    """DRU-Net encoder block: ``x1 = BN(conv(x))``, ``y = BN(conv(ReLU(x1)))``, output
    ``cat(ReLU(y + x1 + x), x)`` (input width = block width ``f``, output ``2f``)."""

    def __init__(self, spatial_dims: int, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.conv1, self.bn1 = conv(width, width, 3, 1, 1), _bn_tf(spatial_dims, width)
        self.conv2, self.bn2 = conv(width, width, 3, 1, 1), _bn_tf(spatial_dims, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.bn1(self.dropout(self.conv1(x)))
        y = self.bn2(self.dropout(self.conv2(F.relu(x1))))
        return torch.cat([F.relu(y + x1 + x), x], dim=1)


class DenseResidualUpBlock(nn.Module):
    """DRU-Net decoder block: transposed conv (3, stride 2) to ``f`` + BN + ReLU, concatenation with
    the skip, then ``ReLU(BN(conv(ReLU(x1))) + x1 + BN(conv1x1(input)))`` with ``x1 = BN(conv(input))``."""

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, width: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.up = transposed_conv_class(spatial_dims)(in_channels, width, 3, 2, 1, output_padding=1)
        self.bn_up = _bn_tf(spatial_dims, width)
        joined = skip_channels + width
        self.conv1, self.bn1 = conv(joined, width, 3, 1, 1), _bn_tf(spatial_dims, width)
        self.conv2, self.bn2 = conv(width, width, 3, 1, 1), _bn_tf(spatial_dims, width)
        self.project, self.bn_project = conv(joined, width, 1), _bn_tf(spatial_dims, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([skip, F.relu(self.bn_up(self.up(x)))], dim=1)
        x1 = self.bn1(self.dropout(self.conv1(joined)))
        y = self.bn2(self.dropout(self.conv2(F.relu(x1))))
        return F.relu(y + x1 + self.bn_project(self.project(joined)))


class DRUNet(nn.Module):
    """DRU-Net (see the module docstring): ``levels`` dense-residual levels from ``root_width``.

    Example:
        >>> DRUNet(2, 1, 2)(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, levels: int = 5, root_width: int = 16,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"DRU-Net needs at least 2 levels, got {levels}")
        widths = [root_width * 2 ** level for level in range(levels)]
        conv = conv_class(spatial_dims)
        self.divisible_by = 2 ** (levels - 1)
        self.encoder_stem = conv(in_channels, root_width, 7, 1, 3)
        self.encoder = nn.ModuleList([DenseResidualBlock(spatial_dims, f, dropout) for f in widths])
        self.pool = nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2)
        self.decoder = nn.ModuleList([DenseResidualUpBlock(spatial_dims, 2 * widths[-1] if level == levels - 2
                                                           else widths[level + 1], 2 * widths[level], widths[level],
                                                           dropout)
                                      for level in range(levels - 2, -1, -1)])
        self.head = conv(root_width, num_classes, 1, bias=False)
        self.deep_supervision = False
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        x = self.encoder_stem(x)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(self.pool(x) if i > 0 else x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return crop_to(self.head(x), size)


def _drunet_defaults(spatial_dims: int) -> dict[str, Any]:
    return {"levels": 5, "root_width": 16, "dropout": 0.0}


@register_model(family="cnn", paper=DRUNET_PAPER, spatial_dims=(2, 3), deep_supervision=False,
                defaults=_drunet_defaults, tiny_kwargs={"levels": 4, "root_width": 4},
                extra={"tags": ["cnn", "residual", "dense"], "divisible_by": 16, "pads_input": True,
                       "paper_params": None,
                       "paper_setup": "paper figure not reachable to us; snapshot of our count with the reference "
                                      "code's example configuration (2D, 1 in, 2 classes, 5 levels, root 16): "
                                      "see tests/test_zoo_seed_papers.py",
                       "kwargs_note": _PLAN_NOTE})
def drunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           levels: int = 5, root_width: int = 16, dropout: float = 0.0, n_stages: Any = None,
           features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> DRUNet:
    """DRU-Net: U-Net whose blocks both add (ResNet) and concatenate (DenseNet) their input."""
    del deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return DRUNet(spatial_dims, in_channels, num_classes, levels, root_width, dropout)
