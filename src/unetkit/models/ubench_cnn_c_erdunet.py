"""ERDUnet of the U-Bench zoo (family ``ubench_cnn``): a two-network residual double-coding U-Net.

``erdunet``: Li, Zhai, Xia, "ERDUnet: An Efficient Residual Double-coding Unet for Medical Image Segmentation",
IEEE TCSVT 34(4), 2024 (doi:10.1109/TCSVT.2023.3300846). Official code: github.com/caijilia/ERDUnet
``ERDUnet.py`` (U-Bench ships the same file as models/CNN/ERDUnet/ERDUnet.py, with the input channels as an
argument). The layout, as the official code builds it:

- network 1 encodes twice: a ResNet-34 trunk (stem, stages 1-3: 1/2 .. 1/16, widths 64, 128, 256, dropout
  0.2 after each stage) and a context branch from the stem's output (a large-kernel block (:class:`LargeKernelBlock`,
  7x7 conv, depthwise 7x7 residual, 1x1) to 32 channels at 1/2, then two context-enhanced encoders
  (:class:`ContextEncoder`) to 1/4 and 1/8);
- its bottleneck: multi-receptive-field aggregation (:class:`MultiReceptiveAggregation`: the three trunk
  levels pooled to 1/16 and fused) refined by two channel-spatial-pixel attentions (:class:`TripleAttention`)
  and a differential region attention (:class:`RegionDifferenceAttention`) against the trunk's deepest map;
- its decoder: three (1x1 conv + BN + GELU, bilinear x2) steps that add the context branch's map of that level,
  refine it (attention + region attention against the trunk), and a 3x3 conv to 16 channels, upsampled to the
  input size;
- network 2: the input through a large-kernel block (16 channels), gated by a spatial attention map of
  network 1's output (``x + x * map``), encoded by three context encoders (1/2 .. 1/8, dropout 0.2), aggregated
  and refined as in network 1, decoded by two steps that concatenate network 1's maps (trunk 1/4, context 1/2)
  and network 2's own; 3x3 conv to 16 channels, upsampled;
- the head: both networks' 16-channel maps concatenated, 3x3 conv + BN + GELU, 3x3 conv to the classes.

Where the official code cannot be followed literally, we chose (the output is the same function):

- layers whose outputs the official forward computes and drops are not built: two auxiliary heads on the
  1/16 maps (``final_x``, ``final_1``; their maps are never returned), the unused branches of the
  mode-switched blocks (``IRE`` with ``only_ch`` / ``only_sp``, ``CEE`` with ``smaller``/``use_att``, ``DRA``
  in "simple" mode) and the context encoders' discarded depthwise convolutions. The official model has
  10,303,733 parameters at 3 in / 1 class, of which 222,964 can reach neither the output nor a gradient; ours
  has the other 10,080,769 (tests/test_zoo_ubench_cnn_c.py counts both by hand);
- the region attention's two class projections (``to_class_1/2``) are thresholded before use, so they never
  receive a gradient and stay at their initial values in the official training too: we keep them as frozen
  parameters (``requires_grad=False``), counted, saved in checkpoints, never trained;
- the official code reshapes token maps with the training size fixed at construction (``in_h``, ``in_w``) and
  feeds the RGB image to the ResNet stem; we use each batch's own size and ``in_channels`` for both stems;
  patches are zero-padded to a multiple of 16 and the logits cropped (``extra["pads_input"]``);
- the official ``Conv`` helper's "relu" is a GELU; kept. The ImageNet ResNet-34 weights are not loaded
  (the official default, ``pretrained=False``).

The output is built from 1/2-resolution maps upsampled (``extra["output_stride"]`` 2). No deep supervision
(the official network returns one map). 2D only, as published. Reference code was read through the code
search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.lightweight import ChannelLayerNorm
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import PLAN_NOTE, crop_to, pad_input, up2
from unetkit.models.ubench_cnn_backbone import ResNetEncoder

__all__ = ["ContextEncoder", "ERDUnet", "LargeKernelBlock", "MultiReceptiveAggregation",
           "RegionDifferenceAttention", "TripleAttention", "erdunet"]


def conv_bn_gelu(cin: int, cout: int, kernel: int, norm: bool = True, act: bool = True,
                 bias: bool = True) -> nn.Sequential:
    """The official ``Conv`` helper: ``kernel`` conv ("same" padding), optional BN, optional GELU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=(kernel - 1) // 2, bias=bias)]
    layers += [nn.BatchNorm2d(cout)] if norm else []
    layers += [nn.GELU()] if act else []
    return nn.Sequential(*layers)


class TripleAttention(nn.Module):
    """ERDUnet's ``IRE`` block. ``"full"``: channel attention (global mean, 1x1 ``C -> C/r`` + ReLU, 1x1 back,
    sigmoid), then spatial attention (channel max and mean, 7x7 conv without bias + BN, sigmoid), then a
    per-pixel channel gate (1x1 ``C -> C/r`` + ReLU, 1x1 back, sigmoid). ``"channel"``: the first step only.
    ``"spatial_map"``: the channel step, then the spatial attention map itself (B, 1, H, W) is returned."""

    def __init__(self, channels: int, rate: int, mode: str = "full") -> None:
        super().__init__()
        if mode not in ("full", "channel", "spatial_map"):
            raise ValueError(f"mode must be 'full', 'channel' or 'spatial_map', got {mode!r}")
        hidden = int(channels / rate)
        if hidden < 1:
            raise ValueError(f"{channels} channels at reduction {rate} leave no hidden channel")
        self.mode = mode
        self.channel = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        if mode != "channel":
            self.spatial = conv_bn_gelu(2, 1, 7, act=False, bias=False)
        if mode == "full":
            self.pixel = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x.mean(dim=(2, 3), keepdim=True))
        if self.mode == "channel":
            return x
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        spatial = torch.sigmoid(self.spatial(pooled))
        if self.mode == "spatial_map":
            return spatial
        x = x * spatial
        return x * self.pixel(x)


class RegionDifferenceAttention(nn.Module):
    """ERDUnet's ``DRA``: where ``x1`` and ``x2`` disagree about exceeding ``threshold``, ``x1`` is amplified,
    then a 1x1 conv + BN + GELU. ``"simple"``: compares the features themselves, ``x1 + |d| x1``. ``"learned"``:
    compares two 1x1 projections to ``classes`` maps, and weights ``x1`` by ``1 + sigmoid(GELU(BN(1x1(|d|))))``.

    The projections are only thresholded, so no gradient reaches them (as in the official code, where they stay
    at their initial values): they are frozen parameters."""

    def __init__(self, channels: int, classes: int, mode: str, threshold: float = 0.5) -> None:
        super().__init__()
        if mode not in ("simple", "learned"):
            raise ValueError(f"mode must be 'simple' or 'learned', got {mode!r}")
        self.mode, self.threshold = mode, threshold
        self.refine = conv_bn_gelu(channels, channels, 1)
        if mode == "learned":
            self.project_1 = nn.Conv2d(channels, classes, 1).requires_grad_(False)
            self.project_2 = nn.Conv2d(channels, classes, 1).requires_grad_(False)
            self.region = conv_bn_gelu(classes, 1, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if self.mode == "simple":
            differ = ((x1 > self.threshold) != (x2 > self.threshold)).to(x1.dtype)
            return self.refine(x1 + differ * x1)
        differ = ((self.project_1(x1) > self.threshold) != (self.project_2(x2) > self.threshold)).to(x1.dtype)
        return self.refine(x1 + torch.sigmoid(self.region(differ)) * x1)


class MultiReceptiveAggregation(nn.Module):
    """ERDUnet's ``MRA``: three maps at 4x, 2x and 1x the size of the deepest; the first two are projected by
    1x1 convs to ``dim`` and max-pooled to the deepest's size; ``Dropout2d(GELU(BN(1x1(cat))))`` plus a
    simple region attention of level 2 against level 1 and of level 3 against level 2 (one shared module)."""

    def __init__(self, widths: Sequence[int], dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        if widths[2] != dim:
            raise ValueError(f"the deepest map must have the aggregation width {dim}, got {widths[2]}")
        self.project_1, self.project_2 = nn.Conv2d(widths[0], dim, 1), nn.Conv2d(widths[1], dim, 1)
        self.fuse = nn.Sequential(conv_bn_gelu(3 * dim, dim, 1), nn.Dropout2d(dropout))
        self.edge = RegionDifferenceAttention(dim, 1, "simple")

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> torch.Tensor:
        c1, c2 = F.max_pool2d(self.project_1(c1), 4), F.max_pool2d(self.project_2(c2), 2)
        return self.fuse(torch.cat([c1, c2, c3], dim=1)) + self.edge(c2, c1) + self.edge(c3, c2)


class LargeKernelBlock(nn.Module):
    """ERDUnet's ``PFC``: ``k`` x ``k`` conv -> ReLU -> BN, plus a residual depthwise ``k`` x ``k`` (ReLU, BN),
    then 1x1 conv -> ReLU -> BN (the ReLU-before-BN order is the official one)."""

    def __init__(self, cin: int, channels: int, kernel: int = 7) -> None:
        super().__init__()
        pad = kernel // 2
        self.inp = nn.Sequential(nn.Conv2d(cin, channels, kernel, padding=pad), nn.ReLU(inplace=True),
                                 nn.BatchNorm2d(channels))
        self.depthwise = nn.Sequential(nn.Conv2d(channels, channels, kernel, padding=pad, groups=channels),
                                       nn.ReLU(inplace=True), nn.BatchNorm2d(channels))
        self.pointwise = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True),
                                       nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        return self.pointwise(x + self.depthwise(x))


class ContextEncoder(nn.Module):
    """ERDUnet's ``CEE``, halving the size: ``p`` = 3x3 stride-2 conv + 1x1 conv (optionally followed by a full
    :class:`TripleAttention`); ``t = LN(p)``; ``f = GELU(BN(3x3(t + GELU(dw3x3(p)))))``. ``"plain"``:
    ``t + 1x1(GELU(BN(1x1(cat(f, p)))))``. ``"conv"`` (the official ``smaller=1``) also encodes the input by a
    3x3 conv, 2x max pool, 1x1 conv + BN + GELU (``q``), mixes ``cat(f, q)`` by a grouped 3x3 conv + GELU and two
    1x1 conv + BN + GELU, and returns ``t + GELU(BN(1x1(cat(mixed, p))))``."""

    def __init__(self, cin: int, dim: int, mode: str, attention: bool = False) -> None:
        super().__init__()
        if mode not in ("plain", "conv"):
            raise ValueError(f"mode must be 'plain' or 'conv', got {mode!r}")
        self.mode = mode
        self.embed = nn.Sequential(nn.Conv2d(cin, dim, 3, 2, 1), nn.Conv2d(dim, dim, 1),
                                   *([TripleAttention(dim, 4)] if attention else []))
        self.norm = ChannelLayerNorm(dim)
        self.position = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.GELU())
        self.local = conv_bn_gelu(dim, dim, 3)
        self.turn = conv_bn_gelu(2 * dim, dim, 1)
        if mode == "plain":
            self.out = nn.Conv2d(dim, dim, 1)  # the official token-wise Linear
        else:
            self.conv_embed = nn.Sequential(nn.Conv2d(cin, dim, 3, padding=1), nn.MaxPool2d(2),
                                            conv_bn_gelu(dim, dim, 1))
            self.mix = nn.Sequential(nn.Conv2d(2 * dim, dim, 3, padding=1, groups=dim), nn.GELU(),
                                     conv_bn_gelu(dim, dim, 1), conv_bn_gelu(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.embed(x)
        t = self.norm(p)
        f = self.local(t + self.position(p))
        if self.mode == "plain":
            return t + self.out(self.turn(torch.cat([f, p], dim=1)))
        mixed = self.mix(torch.cat([f, self.conv_embed(x)], dim=1))
        return t + self.turn(torch.cat([mixed, p], dim=1))


class RefinedBottleneck(nn.Module):
    """The bottleneck both networks share: ``a = BN(att1(agg))``, ``b = BN(att2(a + deep))``,
    ``GELU(region(b, deep) + b)`` with full triple attentions (reduction 4) and a simple region attention."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention_1 = nn.Sequential(TripleAttention(dim, 4), nn.BatchNorm2d(dim))
        self.attention_2 = nn.Sequential(TripleAttention(dim, 4), nn.BatchNorm2d(dim))
        self.region = RegionDifferenceAttention(dim, 1, "simple")

    def forward(self, aggregated: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        b = self.attention_2(self.attention_1(aggregated) + deep)
        return F.gelu(self.region(b, deep) + b)


class ERDUnet(nn.Module):
    """ERDUnet (module docstring). ``trunk_widths`` (64, 128, 256) and ``trunk_blocks`` (3, 4, 6): the ResNet-34
    stages used; ``branch_widths`` (16, 32, 64, 128): network 2's levels, full size to 1/8 (the second is
    also network 1's context width at 1/2). Patches: multiples of 16 (zero-padded)."""

    def __init__(self, in_channels: int, num_classes: int, trunk_widths: Sequence[int], trunk_blocks: Sequence[int],
                 branch_widths: Sequence[int], dropout: float = 0.2) -> None:
        super().__init__()
        a, b = [int(v) for v in trunk_widths], [int(v) for v in branch_widths]
        if len(a) != 3 or len(trunk_blocks) != 3 or len(b) != 4:
            raise ValueError(f"ERDUnet needs 3 trunk widths and blocks and 4 branch widths, got {a}, "
                             f"{list(trunk_blocks)}, {b}")
        self.trunk = ResNetEncoder(in_channels, a, trunk_blocks)
        self.trunk_dropout = nn.Dropout2d(dropout)
        self.context = nn.ModuleList([LargeKernelBlock(a[0], b[1]), ContextEncoder(b[1], a[0], "plain"),
                                      ContextEncoder(a[0], a[1], "conv", attention=True)])
        self.aggregate_1 = MultiReceptiveAggregation(a, a[2], dropout)
        self.bottleneck_1 = RefinedBottleneck(a[2])
        self.up_1 = nn.ModuleList(conv_bn_gelu(cin, cout, 1) for cin, cout in ((a[2], a[1]), (a[1], a[0]), (a[0], b[1])))
        self.skip_refine_1 = nn.ModuleList([nn.Sequential(TripleAttention(a[1], 4), nn.BatchNorm2d(a[1])),
                                            nn.Sequential(TripleAttention(a[0], 4), nn.BatchNorm2d(a[0])), nn.GELU()])
        self.region_1 = nn.ModuleList([RegionDifferenceAttention(a[1], num_classes, "learned"),
                                       RegionDifferenceAttention(a[0], num_classes, "learned"),
                                       RegionDifferenceAttention(b[1], num_classes, "simple")])
        self.out_1 = nn.Conv2d(b[1], b[0], 3, padding=1)
        self.input_block = LargeKernelBlock(in_channels, b[0])
        self.gate = TripleAttention(b[0], 4, "spatial_map")
        self.encoder_2 = nn.ModuleList(ContextEncoder(cin, cout, "conv") for cin, cout in pairwise(b))
        self.encoder_2_dropout = nn.Dropout(dropout)
        self.aggregate_2 = MultiReceptiveAggregation(b[1:], b[3], dropout)
        self.bottleneck_2 = RefinedBottleneck(b[3])
        self.up_2 = nn.ModuleList([conv_bn_gelu(b[3], b[2], 1), conv_bn_gelu(b[2], b[1], 1)])
        # each level concatenates twice: network 1's map (trunk 1/4, context 1/2), then network 2's own skip
        self.merge_2 = nn.ModuleList(self._merge(cin, cout) for cin, cout in
                                     ((b[2] + a[0], b[2]), (2 * b[2], b[2]), (2 * b[1], b[1]), (2 * b[1], b[1])))
        self.out_2 = nn.Conv2d(b[1], b[0], 3, padding=1)
        self.head = nn.Sequential(conv_bn_gelu(2 * b[0], b[0], 3), nn.Conv2d(b[0], num_classes, 3, padding=1))
        for name, module in self.named_modules():
            if isinstance(module, nn.Conv2d) and not name.startswith("trunk."):
                _kaiming_fan_in_(module)
        self.deep_supervision = False

    @staticmethod
    def _merge(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(TripleAttention(cin, 8, "channel"), conv_bn_gelu(cin, cout, 1))

    def _network_1(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Network 1's 16-channel output map (full size), its trunk maps (1/4, 1/8, 1/16), its context map at 1/2."""
        stem = self.trunk.stem[:3](x)
        trunk, y = [], self.trunk.stem[3](stem)
        for stage in self.trunk.stages:
            y = self.trunk_dropout(stage(y))
            trunk.append(y)
        context = [self.context[0](stem)]
        for encoder in self.context[1:]:
            context.append(encoder(context[-1]))
        y = self.bottleneck_1(self.aggregate_1(*trunk), trunk[2])
        # each level: upsample, add the context map of that level, refine, region attention against a reference
        for i, (up, refine, region) in enumerate(zip(self.up_1, self.skip_refine_1, self.region_1)):
            level = 2 - i  # context index: 1/8, 1/4, 1/2
            reference = trunk[1 - i] if i < 2 else context[0]
            y = refine(up2(up(y)) + context[level])
            y = F.gelu(region(y, reference) + y)
        return up2(self.out_1(y)), trunk, context[0]

    def _network_2(self, x: torch.Tensor, gate_from: torch.Tensor, trunk_quarter: torch.Tensor,
                   context_half: torch.Tensor) -> torch.Tensor:
        """Network 2's 16-channel output map (full size)."""
        y = self.input_block(x)
        y = y + y * self.gate(gate_from)
        skips = []
        for encoder in self.encoder_2:
            y = self.encoder_2_dropout(encoder(y))
            skips.append(y)
        y = self.bottleneck_2(self.aggregate_2(*skips), skips[2])
        for i, up in enumerate(self.up_2):
            y = up2(up(y))
            y = self.merge_2[2 * i](torch.cat([y, trunk_quarter if i == 0 else context_half], dim=1))
            y = self.merge_2[2 * i + 1](torch.cat([y, skips[1 - i]], dim=1))
        return up2(self.out_2(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, 16)
        map_1, trunk, context_half = self._network_1(x)
        map_2 = self._network_2(x, map_1, trunk[0], context_half)
        return crop_to(self.head(torch.cat([map_1, map_2], dim=1)), size)


def _kaiming_fan_in_(conv: nn.Conv2d) -> None:
    """The official ``init_weights``: He-normal weights (fan in, ReLU gain); biases keep PyTorch's default
    uniform(+-1/sqrt(fan_in))."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")


ERDUNET_DEFAULTS: dict[str, Any] = {"trunk_widths": [64, 128, 256], "trunk_blocks": [3, 4, 6],
                                    "branch_widths": [16, 32, 64, 128], "dropout": 0.2}


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Li, Zhai, Xia, ERDUnet: An Efficient Residual Double-coding Unet for Medical Image "
                      "Segmentation, IEEE TCSVT 2024 (doi:10.1109/TCSVT.2023.3300846)",
                defaults=lambda d: {k: (list(v) if isinstance(v, list) else v) for k, v in ERDUNET_DEFAULTS.items()},
                tiny_kwargs={"trunk_widths": [8, 16, 32], "trunk_blocks": [1, 1, 1], "branch_widths": [4, 8, 8, 16]},
                extra={"tags": ["cnn", "attention", "residual", "multiscale"], "divisible_by": 16,
                       "pads_input": True, "output_stride": 2, "paper_params": None,
                       "paper_setup": "no printed count reachable (paper not readable here); official code "
                                      "(caijilia/ERDUnet ERDUnet.py, = U-Bench models/CNN/ERDUnet), 3 in / 1 class: "
                                      "10,303,733, of which 222,964 never reach the output (dropped auxiliary "
                                      "heads and unused branches, not built here): ours 10,080,769 (-2.16%)",
                       "reference_params": 10_303_733,
                       "kwargs_note": PLAN_NOTE})
def erdunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
            trunk_widths: Sequence[int] | None = None, trunk_blocks: Sequence[int] | None = None,
            branch_widths: Sequence[int] | None = None, dropout: float = 0.2, n_stages: Any = None,
            features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> ERDUnet:
    """ERDUnet: a ResNet-34 U-Net with a context branch and a second, attention-gated encoder-decoder."""
    return ERDUnet(in_channels, num_classes, trunk_widths or ERDUNET_DEFAULTS["trunk_widths"],
                   trunk_blocks or ERDUNET_DEFAULTS["trunk_blocks"],
                   branch_widths or ERDUNET_DEFAULTS["branch_widths"], dropout)
