"""QuickNAT: a 2D encoder-decoder of dense blocks with max-unpooling (family ``quicknat``).

Roy, Conjeti, Navab, Wachinger, "QuickNAT: A fully convolutional network for quick and accurate
segmentation of neuroanatomy", NeuroImage 186, 2019, arXiv:1801.04161, Fig. 1: four encoder
dense blocks, a bottleneck and four decoder dense blocks, 64 filters everywhere. A dense block
is three pre-activation layers (norm -> PReLU -> conv): a 5x5 conv on the input, a 5x5 conv on
[input, first output], a 1x1 conv on [first output, second output, input] compressing to 64.
Encoder blocks are followed by 2x2 max pooling that keeps its indices; the decoder unpools with
those indices (no learned upsampling), concatenates the encoder output of the same level and
applies a dense block; a 1x1 classifier ends the network. The bottleneck is a dense block, as in
the authors' code (the paper draws a single 5x5 conv + BN) and in MONAI.

The paper prints no parameter count. ``norm="batch"`` (the paper's and the authors' code's batch
norm, the default) or ``norm="instance"`` (MONAI's ``Quicknat``: instance norm without affine
parameters); with the latter our count equals MONAI's exactly and MONAI's weights give the same
outputs in ours (tests/test_zoo_3d.py); batch norm adds its 2 parameters per input channel of each
norm. PReLU with a single slope and convolutions with bias, as the authors' code and MONAI. The
optional squeeze-and-excitation blocks of the follow-up paper are not built. 2D only (the paper
segments slices). Pooling rounds up and unpooling restores each level's size, so any input size
works.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.registry import register_model

QUICKNAT_PAPER = ("Roy, Conjeti, Navab, Wachinger, QuickNAT: A fully convolutional network for quick and accurate "
                  "segmentation of neuroanatomy, NeuroImage 2019, arXiv:1801.04161 (Fig. 1)")
NORMS = ("batch", "instance")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    raise ValueError(f"norm must be one of {list(NORMS)}, got {kind!r}")


class PreActConv(nn.Module):
    """norm -> PReLU (one slope) -> conv with bias."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str) -> None:
        super().__init__()
        self.norm = _norm(norm, cin)
        self.act = nn.PReLU()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class DenseBlock(nn.Module):
    """QuickNAT's dense block: two 5x5 layers densely connected, then a 1x1 compression."""

    def __init__(self, cin: int, filters: int, kernel: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.first = PreActConv(cin, filters, kernel, norm)
        self.second = PreActConv(cin + filters, filters, kernel, norm)
        self.compress = PreActConv(cin + 2 * filters, filters, 1, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.first(x)
        second = self.second(torch.cat([x, first], 1))
        return self.dropout(self.compress(torch.cat([first, second, x], 1)))


class QuickNAT(nn.Module):
    """QuickNAT (Roy et al. 2019, Fig. 1).

    Args:
        in_channels: input channels (1, a T1 slice, in the paper).
        num_classes: output channels (27 structures + background in the paper's Table 1 setup).
        filters: output width of every layer of every dense block (64).
        kernel_size: kernel of the first two layers of a dense block (5).
        levels: encoder blocks (4); the bottleneck sits below the last.
        norm: ``"batch"`` (the paper) or ``"instance"`` (MONAI's ``Quicknat``).
        dropout: channel dropout after each dense block (0).

    Example:
        >>> net = QuickNAT(1, 3, filters=8)
        >>> net(torch.zeros(2, 1, 37, 50)).shape
        torch.Size([2, 3, 37, 50])
    """

    def __init__(self, in_channels: int, num_classes: int, filters: int = 64, kernel_size: int = 5, levels: int = 4,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        if levels < 1 or kernel_size % 2 == 0:
            raise ValueError(f"need levels >= 1 and an odd kernel_size, got levels={levels}, kernel_size={kernel_size}")
        self.encoder = nn.ModuleList([DenseBlock(in_channels if i == 0 else filters, filters, kernel_size, norm, dropout)
                                      for i in range(levels)])
        self.bottleneck = DenseBlock(filters, filters, kernel_size, norm, dropout)
        self.decoder = nn.ModuleList([DenseBlock(2 * filters, filters, kernel_size, norm, dropout)
                                      for _ in range(levels)])  # finest level first
        self.classifier = nn.Conv2d(filters, num_classes, 1)
        self.divisible_by = 1
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, indices = [], []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            # ceil_mode: odd sizes keep their last row / column; unpooling restores the exact size
            x, where = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            indices.append(where)
        x = self.bottleneck(x)
        for block, skip, where in zip(reversed(self.decoder), reversed(skips), reversed(indices)):
            x = F.max_unpool2d(x, where, 2, 2, output_size=skip.shape[-2:])
            x = block(torch.cat([skip, x], 1))
        return self.classifier(x)


def quicknat_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration: 64 filters, 5x5 kernels, 4 levels, batch norm, no dropout."""
    del spatial_dims
    return {"filters": 64, "kernel_size": 5, "levels": 4, "norm": "batch", "dropout": 0.0}


@register_model(family="quicknat", paper=QUICKNAT_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=quicknat_defaults,
                tiny_kwargs={"deep_supervision": False, "filters": 8, "kernel_size": 3, "levels": 2},
                extra={"tags": ["cnn", "dense"], "divisible_by": 1, "paper_params": None,
                       "paper_setup": "2D, 1 in, 28 classes, 64 filters, 5x5, 4 levels, batch norm",
                       "reference_params": "MONAI Quicknat (norm='instance'), checked exactly",
                       "profile_patch_2d": [256, 256]})
def quicknat(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             filters: int = 64, kernel_size: int = 5, levels: int = 4, norm: str = "batch", dropout: float = 0.0,
             n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
             strides: Any = None) -> QuickNAT:
    """QuickNAT (Roy et al. 2019): dense blocks, max-unpooling with the encoder's indices, 2D.

    The plan keywords ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides`` are
    accepted so ``--arch quicknat`` can reuse any 2D plan, and ignored: the design is the paper's.
    """
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides  # 2D only (registry)
    return QuickNAT(in_channels, num_classes, int(filters), int(kernel_size), int(levels), str(norm), float(dropout))
