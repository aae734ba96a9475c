"""Comprehensive-attention CNN U-Nets of the U-Bench zoo (family ``ubench_cnn``): CA-Net.

- ``canet``: Gu, Wang, Song, Huang, Aertsen, Deprest, Ourselin, Vercauteren, Zhang, "CA-Net: Comprehensive
  Attention Convolutional Neural Networks for Explainable Medical Image Segmentation", IEEE TMI 40(2), 2021
  (arXiv:2009.10549), Fig. 1-4. A 2D U-Net (double 3x3 conv + BN + ReLU per level, widths 16..256: the
  official ``feature_scale=4``) with three kinds of attention:

  * joint spatial attention: an embedded-Gaussian non-local block on the deepest decoder level (after the
    first up-sampling and concatenation), and on the skips of levels 2 and 3 two additive grid-attention
    gates each (Oktay et al. 2018, gated by the next coarser decoder output), fused by a 1x1 conv + BN + ReLU;
  * channel attention in every decoder block (:class:`ChannelAttentionBlock`): an SE-style recalibration
    whose MLP sees both the global average and the global maximum of the features;
  * scale attention (:class:`ScaleAttention`): every decoder level is projected to 4 channels and resized to
    the input size; one weight per level (from a channel MLP) and one spatial map per level reweight them
    before the 4-channel fusion that feeds the 1x1 head.

  Decoder up-sampling is a 2x2 stride-2 transposed convolution; dropout 0.5 (channel-wise) after the fourth
  encoder level, the bottleneck and the deepest decoder block, as the official code.

Where the code and the paper differ, or the code cannot be followed literally, we chose:

- the official channel attention pools with fixed windows sized for 224x300 ISIC images (a global pool at
  that size only); we pool globally, which is the same there and works for every patch;
- the official code applies ``Dropout2d`` also at inference (built inside ``forward``); ours is a module
  (active in training only);
- the official up-sampling pads a mismatched width with random values; we zero-pad the input to a multiple
  of 16 and crop the logits (``extra["pads_input"]``);
- the official network ends in a softmax; ours returns logits (the loss applies it), as U-Bench's copy.

Parameters: the paper prints no count we could read (its comparison tables were not reachable as text);
the reference is the official code (HiLab-git/CA-Net ``Models/networks/network.py``,
``Comprehensive_Atten_Unet``, 3 in, 2 classes, feature_scale 4): 2,785,610 parameters, counted by hand
layer by layer in tests/test_zoo_ubench_cnn_c.py. The network has no deep-supervision losses (its
per-level outputs are fused by the scale attention, not supervised), so ``deep_supervision`` is False.

Reference code was read through the code search; all code here is our own. 2D only, as published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_unet import MultiAttention
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import (
    PLAN_NOTE,
    DoubleConv,
    crop_to,
    pad_input,
    pooled_encoder,
)
from unetkit.models.unet_classic import resize_to

__all__ = ["CANet", "ChannelAttentionBlock", "NonLocalBlock", "ScaleAttention", "canet"]


def _official_kaiming_(module: nn.Module) -> None:
    """The official ``init_weights(..., 'kaiming')`` the attention gates and the non-local block get: He-normal
    conv weights (fan in; biases keep PyTorch's default), BN scales drawn from N(1, 0.02), BN shifts zero. (The
    non-local block's zero-initialized output BN is overwritten by it, so the block does not start as identity.)"""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al., CVPR 2018) with 2x max-pooled keys and values:
    ``x + BN(W(softmax(theta(x)^T phi(x)) g(x)))``; theta, phi, g 1x1 convs to ``inter`` channels."""

    def __init__(self, channels: int, inter: int) -> None:
        super().__init__()
        self.theta, self.phi, self.g = (nn.Conv2d(channels, inter, 1) for _ in range(3))
        self.out = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        _official_kaiming_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, inter)
        key = F.max_pool2d(self.phi(x), 2).flatten(2)  # (B, inter, HW/4)
        value = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # (B, HW/4, inter)
        y = torch.softmax(query @ key, dim=-1) @ value
        return x + self.out(y.transpose(1, 2).reshape(b, -1, h, w))


class ChannelAttentionBlock(nn.Module):
    """CA-Net's decoder block (``SE_Conv_Block``). ``cin -> width -> 2 width`` by two 3x3 convs (no bias, BN,
    ReLU after the first only); a shared MLP ``2w -> round(w/2) -> 2w`` turns the global average and the
    global maximum into two sigmoid channel weights; ``ReLU(a_avg * y + a_max * y + proj(x))`` with ``proj`` a
    1x1 conv + BN to ``2 width``; then a 3x3 conv + BN + ReLU back to ``width`` and optional dropout."""

    def __init__(self, cin: int, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, round(width / 2))
        self.body = nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True),
                                  nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * width))
        self.mlp = nn.Sequential(nn.Linear(2 * width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * width))
        self.project = nn.Sequential(nn.Conv2d(cin, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width))
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        weights = [torch.sigmoid(self.mlp(stat))[:, :, None, None]
                   for stat in (y.mean(dim=(2, 3)), y.amax(dim=(2, 3)))]
        return self.fuse(torch.relu(weights[0] * y + weights[1] * y + self.project(x)))


class ScaleAttention(nn.Module):
    """CA-Net's scale attention (``scale_atten_convblock``) over ``levels`` decoder outputs of ``per_level``
    channels each, concatenated. Scale weights: a channel MLP (``C -> C/4 -> C``, ReLU) on the global average
    plus the one on the global maximum, averaged within each level, sigmoid; spatial weights: 3x3 conv (no
    bias) + BN + ReLU to ``C/4`` maps, 1x1 conv (no bias) + ReLU, sigmoid, one map per level. With
    ``s = x * scale``: ``ReLU(s * spatial + s + x)``, then a 3x3 conv (no bias) + BN + ReLU to ``out``."""

    def __init__(self, levels: int, per_level: int, out: int) -> None:
        super().__init__()
        channels, reduced = levels * per_level, levels * per_level // 4
        if reduced != levels:
            raise ValueError(f"scale attention needs one spatial map per level: {levels} levels of {per_level} "
                             f"channels give {reduced} maps")
        self.levels = levels
        self.mlp = nn.Sequential(nn.Linear(channels, reduced), nn.ReLU(), nn.Linear(reduced, channels))
        # BN momentum 0.01 as the official BasicConv (the CBAM code it comes from)
        self.spatial = nn.Sequential(nn.Conv2d(channels, reduced, 3, 1, 1, bias=False),
                                     nn.BatchNorm2d(reduced, momentum=0.01), nn.ReLU(),
                                     nn.Conv2d(reduced, reduced, 1, bias=False), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(channels, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        per_level = logits.view(b, self.levels, -1).mean(dim=2)  # (B, levels)
        scaled = x * torch.sigmoid(per_level).repeat_interleave(c // self.levels, dim=1)[:, :, None, None]
        spatial = torch.sigmoid(self.spatial(scaled)).repeat_interleave(c // self.levels, dim=1)
        return self.fuse(torch.relu(scaled * spatial + scaled + x))


class CANet(nn.Module):
    """CA-Net (module docstring). ``widths`` = the 5 encoder widths (16..256); patches multiples of 16."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], dropout: float,
                 level_channels: int = 4) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) != 5 or any(v < 2 for v in w):
            raise ValueError(f"CA-Net needs 5 widths of at least 2, got {w}")
        # dropout inside the last two stages, so the pooled input of the next stage is dropped out too
        self.encoder = nn.ModuleList(nn.Sequential(DoubleConv(2, cin, cout), nn.Dropout2d(dropout if i >= 3 else 0.0))
                                     for i, (cin, cout) in enumerate(zip([in_channels] + w[:-1], w)))
        self.up = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, 2) for i in range(3, -1, -1))
        self.decoder = nn.ModuleList(ChannelAttentionBlock(2 * w[i], w[i], dropout if i == 3 else 0.0)
                                     for i in range(3, -1, -1))
        self.nonlocal_block = NonLocalBlock(2 * w[3], 2 * w[3] // 4)
        # grid attention on the skips of levels 3 and 2 (0-based 2 and 1), gated by the coarser decoder output
        self.gates = nn.ModuleList(MultiAttention(2, w[i], w[i + 1], 2, (1, 1), "batch", theta_bias=True)
                                   for i in (2, 1))
        _official_kaiming_(self.gates)
        self.level_heads = nn.ModuleList(nn.Conv2d(w[i], level_channels, 1) for i in range(3, -1, -1))
        self.scale_attention = ScaleAttention(4, level_channels, level_channels)
        self.head = nn.Conv2d(level_channels, num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, 16)
        skips = pooled_encoder(self.encoder, x)
        x = skips.pop()
        levels = []
        for i, (up, block) in enumerate(zip(self.up, self.decoder)):
            skip = skips.pop()
            if 1 <= i <= 2:  # levels 3 and 2: the skip is gated by the previous decoder output
                skip = self.gates[i - 1](skip, x)
            x = torch.cat([skip, up(x)], dim=1)
            if i == 0:
                x = self.nonlocal_block(x)
            x = block(x)
            levels.append(x)
        full = levels[-1].shape[2:]
        projected = [resize_to(head(level), full) for head, level in zip(self.level_heads, levels)]
        fused = torch.cat(projected[::-1], dim=1)  # finest level first, as the official concatenation
        return crop_to(self.head(self.scale_attention(fused)), size)


CANET_WIDTHS = [16, 32, 64, 128, 256]


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Gu et al., CA-Net: Comprehensive Attention Convolutional Neural Networks for Explainable "
                      "Medical Image Segmentation, IEEE TMI 2021, arXiv:2009.10549 (Fig. 1-4)",
                defaults=lambda d: {"widths": list(CANET_WIDTHS), "dropout": 0.5},
                tiny_kwargs={"widths": [8, 8, 16, 16, 32], "dropout": 0.5},
                extra={"tags": ["cnn", "attention", "multiscale"], "divisible_by": 16, "pads_input": True,
                       "paper_params": None,
                       "paper_setup": "no printed count reachable; official code (HiLab-git/CA-Net "
                                      "Models/networks/network.py, Comprehensive_Atten_Unet, feature_scale 4), "
                                      "3 in / 2 classes, ISIC 2018 224x300, widths 16..256: 2,785,610",
                       "reference_params": 2_785_610,
                       "kwargs_note": PLAN_NOTE})
def canet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
          widths: Sequence[int] | None = None, dropout: float = 0.5, n_stages: Any = None,
          features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> CANet:
    """CA-Net: U-Net with joint spatial, channel and scale attention."""
    return CANet(in_channels, num_classes, widths or CANET_WIDTHS, dropout)
