"""HighRes3DNet: a compact full-resolution network of dilated residual blocks (family ``highresnet``).

Li, Wang, Fidon, Ourselin, Cardoso, Vercauteren, "On the compactness, efficiency, and
representation of 3D convolutional networks: brain parcellation as a pretext task", IPMI 2017,
arXiv:1707.01992, Fig. 1: no downsampling at all. A 3x3x3 convolution with 16 features, then
three groups of three pre-activation residual blocks (batch norm -> ReLU -> 3x3x3 conv, twice,
plus the input) with 16, 32 and 64 features and dilation 1, 2 and 4, so the receptive field grows
without losing resolution; a 1x1x1 convolution to 80 features and a 1x1x1 classifier. Where a
group widens the features, the residual's input is zero-padded in channels (the paper's
"zero-padding" shortcut, no projection parameters), half the new channels before, half after.

The paper's parameter figure could not be checked here (its text is not available offline), so
the count is checked to equal exactly that of MONAI's ``HighResNet`` in the same configuration
(whose docstring cites the paper and the official NiftyNet ``highres3dnet``); tests/test_zoo_3d.py
also loads MONAI's weights into ours and compares the outputs. The classifier ends as NiftyNet's:
1x1x1 conv -> batch norm, no activation. MONAI also applies a ReLU to its logits (no parameters);
we do not, since the loss takes raw logits.

Convolutions have no bias (each is followed by a norm). ``dropout`` is channel dropout after the
80-feature layer (the paper samples it at test time for uncertainty; 0 by default as in MONAI).
No pooling, so any input size works (``divisible_by`` 1); no deep supervision (the paper has none).
The 2D variant is the same design with 2D layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model

HIGHRESNET_PAPER = ("Li et al., On the compactness, efficiency, and representation of 3D convolutional networks: "
                    "brain parcellation as a pretext task, IPMI 2017, arXiv:1707.01992 (Fig. 1)")


def _batch_norm(spatial_dims: int, channels: int) -> nn.Module:
    return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)


def _conv(spatial_dims: int, cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Module:
    return conv_class(spatial_dims)(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation,
                                    bias=False)


class DilatedResBlock(nn.Module):
    """BN -> ReLU -> dilated conv, twice, plus the input zero-padded to the output width."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        if cout < cin:
            raise ValueError(f"a residual block cannot narrow the features ({cin} -> {cout}): the shortcut "
                             f"only zero-pads channels")
        self.norm1 = _batch_norm(spatial_dims, cin)
        self.conv1 = _conv(spatial_dims, cin, cout, 3, dilation)
        self.norm2 = _batch_norm(spatial_dims, cout)
        self.conv2 = _conv(spatial_dims, cout, cout, 3, dilation)
        before = (cout - cin) // 2
        self.channel_pad = (before, cout - cin - before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        spatial = (0, 0) * (x.dim() - 2)
        return y + F.pad(x, (*spatial, *self.channel_pad))


class HighResNet(nn.Module):
    """HighRes3DNet (Li et al. 2017, Fig. 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1, a T1 MR image, in the paper).
        num_classes: output channels (the paper parcellates 155 structures plus background).
        features: width of the stem and of each group of residual blocks (16, 32, 64); group ``i``
            uses dilation ``2**i``.
        blocks_per_group: residual blocks per group (3).
        head_features: width of the 1x1 layer before the classifier (80).
        dropout: channel dropout after that layer (0).

    Example:
        >>> net = HighResNet(3, 1, 4)
        >>> net(torch.zeros(1, 1, 19, 23, 17)).shape
        torch.Size([1, 4, 19, 23, 17])
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (16, 32, 64), blocks_per_group: int = 3, head_features: int = 80,
                 dropout: float = 0.0) -> None:
        super().__init__()
        d, features = spatial_dims, [int(f) for f in features]
        if not features or blocks_per_group < 1:
            raise ValueError(f"need at least one group of at least one block, got features={features}, "
                             f"blocks_per_group={blocks_per_group}")
        self.stem = nn.Sequential(_conv(d, in_channels, features[0], 3), _batch_norm(d, features[0]), nn.ReLU())
        blocks, width = [], features[0]
        for group, group_width in enumerate(features):
            for _ in range(blocks_per_group):
                blocks.append(DilatedResBlock(d, width, group_width, dilation=2 ** group))
                width = group_width
        self.blocks = nn.Sequential(*blocks)
        dropout_layer = {2: nn.Dropout2d, 3: nn.Dropout3d}[d](dropout) if dropout > 0 else nn.Identity()
        self.head_layer = nn.Sequential(_conv(d, width, head_features, 1), _batch_norm(d, head_features), nn.ReLU(),
                                        dropout_layer)
        self.classifier = nn.Sequential(_conv(d, head_features, num_classes, 1), _batch_norm(d, num_classes))
        self.divisible_by = 1
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head_layer(self.blocks(self.stem(x))))


def highresnet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration: 16, 32, 64 features, 3 blocks per dilation 1, 2, 4, an 80-feature
    1x1 layer, no dropout during training."""
    del spatial_dims
    return {"features": [16, 32, 64], "blocks_per_group": 3, "head_features": 80, "dropout": 0.0}


@register_model(family="highresnet", paper=HIGHRESNET_PAPER, spatial_dims=(3, 2), deep_supervision=False,
                defaults=highresnet_defaults,
                tiny_kwargs={"deep_supervision": False, "features": [4, 8], "blocks_per_group": 1,
                             "head_features": 8},
                extra={"tags": ["cnn", "residual"], "divisible_by": 1, "paper_params": None,
                       "paper_setup": "3D, 1 in, 160 classes, features 16/32/64 x 3 blocks, dilation 1/2/4, 80",
                       "reference_params": "MONAI HighResNet (same configuration), checked exactly",
                       "profile_patch_3d": [96, 96, 96], "profile_patch_2d": [224, 224]})
def highresnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               features: Sequence[int] = (16, 32, 64), blocks_per_group: int = 3, head_features: int = 80,
               dropout: float = 0.0, n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
               strides: Any = None) -> HighResNet:
    """HighRes3DNet (Li et al. 2017): dilated residual blocks at full resolution, the paper's layout by default.

    The plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are
    accepted so ``--arch highresnet`` can reuse any plan, and ignored: the design is the paper's.
    """
    del deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return HighResNet(spatial_dims, in_channels, num_classes, features, int(blocks_per_group), int(head_features),
                      float(dropout))
