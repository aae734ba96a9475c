"""U-Bench CNNs with two branches working side by side: FAT-Net, MSRF-Net (family ``ubench_cnn``).

- ``fatnet``: Wu, Chen, Chen, Wang, Lei, Wen, "FAT-Net: Feature Adaptive Transformers for Automated
  Skin Lesion Segmentation", Medical Image Analysis 76, 102327, 2022, Fig. 1-4. Two encoders read the
  image in parallel: a ResNet-34 (7x7 stride-2 stem without max pool, so its four stages sit at
  1/2 ... 1/16) and a DeiT-tiny transformer (16x16 patch embedding to 192 channels, 12 pre-norm blocks
  of 3 heads, MLP 768; Touvron et al., ICML 2021). The token grid (1/16) is lifted to 512 channels by
  a 1x1 conv, concatenated with the last CNN stage, reweighted by squeeze-and-excitation (ratio 16, no
  biases) and fused back to 512 by a 1x1 conv. Each CNN skip passes a feature adaptation module
  (FAM: ``relu(conv3x3(x)) + relu(conv1x1(x))``) 6, 4 and 2 times at 1/2, 1/4 and 1/8, one shared
  set of weights per level (the official code lists the same block instance six, four and two
  times). The memory-efficient decoder is LinkNet's block (1x1 to C/4, 3x3 transposed conv x2, 1x1;
  BN + ReLU each) added to the adapted skips, then CE-Net's head (4x4 transposed conv to 32 channels,
  two 3x3 convs). Official code: github.com/SZUcsh/FAT-Net ``FAT_Net.py`` (U-Bench
  ``models/CNN/FAT_Net``). We could not read the paper's comparison table through our tools; the
  reference count is the official code's, 28,758,657 at 3 in, 1 class, summed by hand in
  tests/test_zoo_dual_branch.py.
- ``msrfnet``: Srivastava, Jha, Chanda, Pal, Johansen, Johansen, Riegler, Ali, Halvorsen, "MSRF-Net:
  A Multi-Scale Residual Fusion Network for Biomedical Image Segmentation", IEEE JBHI 26(5), 2022
  (arXiv:2105.07451), Fig. 1-3. A four-level encoder (two 3x3 conv + ReLU, BN, squeeze-and-excitation
  on the first three levels; max pool and dropout 0.2 between levels; widths 32, 64, 128, 256), then
  the MSRF sub-network: ten dual-scale dense fusion (DSDF) blocks on neighbouring level pairs (1-2,
  3-4, 1-2, 3-4, 2-3, 1-2, 3-4, 2-3, 1-2, 3-4). A DSDF block runs two residual dense blocks (growth:
  half the finer level's width; LeakyReLU 0.25) that, after every layer, swap features across the two
  scales (4x4 stride-2 conv down, 4x4 stride-2 transposed conv up) and end in a scaled residual
  ``x + 0.4 * x5``; the sub-network's output is added to the encoder features the same way. A gated
  shape stream (Takikawa et al., Gated-SCNN, ICCV 2019) refines the full-resolution features with
  gates from the three coarser levels and fuses its shape map with the image into a one-channel edge
  feature that joins the last decoder stage. Two decoder stages (1/4, 1/2) combine an upsampled
  coarser map, an attention-gated skip and a dual attention block (squeeze-and-excitation times
  ``1 + spatial attention``); a third stage works at full resolution. Every stage has a head (deep
  supervision). The official code is Keras (github.com/NoviceMAn-prog/MSRF-Net); we follow the
  PyTorch port U-Bench ships (``models/CNN/MSRFNet``, from github.com/amlarraz/MSRF-Net_PyTorch),
  whose layer sizes differ from the Keras code in places (the dual attention block's transposed conv
  is 2x2 there, 4x4 in Keras; its spatial attention is ``C`` wide there, ``C/4`` in Keras). The paper
  prints no parameter count we could find; the reference is that port's count, 22,506,074 at 3 in,
  1 class, summed by hand in tests/test_zoo_dual_branch.py.

Differences from the references: logits instead of sigmoid outputs. FAT-Net: no ImageNet weights
(ResNet-34 and DeiT-tiny start untrained, as unetkit trains from scratch); the official code builds
a fourth decoder block it never calls (left out here: 4,640 parameters, added back in the test); it
takes only DeiT's patch embedding and blocks, without the class and distillation tokens and without
the position table, so the network is not tied to one input size: any patch is zero-padded to a
multiple of 16 and the logits cropped. The FAM convolutions start from He initialization instead of
PyTorch's default (a third of the variance): the block is applied up to six times with the same
weights, and at the default the skip shrank with every pass. Its finest features (1/2) come from the
7x7 stride-2 stem, whose taps straddle neighbouring 2x2 blocks: in the tiny overfit check
(tests/zoo_checks.py) a per-2x2-block rule did not fall in six Adam steps even for the stem and head
alone, a per-4x4-block rule did, so ``output_stride`` is declared 4, as for CE-Net. ``head_channels``
(32 in the paper) is a keyword so that the tiny model can narrow the head: with 32 channels a first
Adam step at 1e-2 silenced the head's ReLUs of the tiny network. MSRF-Net: the paper's shape stream
reads a Canny edge map computed from the image and is supervised by its own edge loss; unetkit has
neither the extra input nor that loss, so, as U-Bench does, the image itself stands in for the edge
map and the shape stream trains through the segmentation loss alone (its shape map is not
returned). Deep supervision returns the full-resolution logits, then the heads of the 1/2 and 1/4
stages at their own resolution (the reference upsamples them to full size before its loss). The
squeeze-and-excitation bottleneck is at least one channel (tiny widths). MSRF-Net
needs patches that are multiples of 8. Both are 2D only. Reference code was read through the code
search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import (
    ViTBlock,
    crop_to,
    init_transformer_,
    pad_to_multiple,
)
from unetkit.models.lightweight import _check_divisible
from unetkit.models.registry import register_model
from unetkit.models.rwkv_unet import SqueezeExcite as BiasedSqueezeExcite
from unetkit.models.ubench_cnn_backbone import (
    BasicBlock,
    LinkNetDecoderBlock,
    ResNetEncoder,
    SqueezeExcite,
    linknet_head,
)

_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


# ============================================================================================ FAT-Net
class FeatureAdaptation(nn.Module):
    """FAT-Net's FAM block: ``relu(conv3x3(x)) + relu(conv1x1(x))``, width kept, applied ``repeats``
    times with the same weights (the official code repeats one block instance)."""

    def __init__(self, channels: int, repeats: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.repeats = repeats
        # He init, not PyTorch's default (a third of its variance): the block is applied up to six
        # times with the same weights, and at the default each pass shrank the skip
        for conv in (self.conv3, self.conv1):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            x = F.relu(self.conv3(x)) + F.relu(self.conv1(x))
        return x


class PatchTransformer(nn.Module):
    """DeiT's patch embedding (``patch`` x ``patch`` conv, stride ``patch``) and pre-norm transformer
    blocks on the token grid, returned as a feature map (B, dim, H / patch, W / patch). No position
    table: FAT-Net's official code skips it (and DeiT's class tokens) when it reuses DeiT's blocks."""

    def __init__(self, in_channels: int, dim: int, depth: int, num_heads: int, mlp_ratio: int, patch: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads, mlp_ratio * dim, eps=1e-6) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.embed(x)
        tokens = self.blocks(grid.flatten(2).transpose(1, 2))
        return tokens.transpose(1, 2).reshape(grid.shape)


class FATNet(nn.Module):
    """FAT-Net: ResNet and transformer encoders fused by squeeze-and-excitation at 1/16, FAM-adapted
    skips at 1/2, 1/4, 1/8, LinkNet decoder blocks with additive skips, transposed-conv head.
    Published: ResNet-34 (widths 64..512, blocks 3, 4, 6, 3), DeiT-tiny (192, depth 12, 3 heads)."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int],
                 embed_dim: int, depth: int, num_heads: int, fam_repeats: Sequence[int],
                 head_channels: int = 32, se_ratio: int = 16) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 4 or len(blocks) != 4 or len(fam_repeats) != 3 or any(w < 4 or w % 4 for w in widths):
            raise ValueError(f"FAT-Net needs 4 widths (multiples of 4), 4 block counts and 3 FAM repeats, "
                             f"got {widths}, {list(blocks)}, {list(fam_repeats)}")
        self.cnn = ResNetEncoder(in_channels, widths, blocks, stem_pool=False)
        self.transformer = PatchTransformer(in_channels, embed_dim, depth, num_heads, mlp_ratio=4, patch=16)
        self.lift_tokens = nn.Conv2d(embed_dim, widths[3], 1)
        self.fuse_se = SqueezeExcite(2 * widths[3], se_ratio)
        self.fuse = nn.Conv2d(2 * widths[3], widths[3], 1)
        self.adapt = nn.ModuleList(FeatureAdaptation(w, n) for w, n in zip(widths[:3], fam_repeats))
        self.decoders = nn.ModuleList(LinkNetDecoderBlock(widths[i + 1], widths[i]) for i in (2, 1, 0))
        self.head = linknet_head(widths[0], head_channels, num_classes)
        self.transformer.apply(init_transformer_)
        self.divisible_by = 16
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        *skips, deepest = self.cnn(x)
        both = torch.cat([deepest, self.lift_tokens(self.transformer(x))], dim=1)
        y = self.fuse(self.fuse_se(both))
        for decoder, adapt, skip in zip(self.decoders, reversed(self.adapt), reversed(skips)):
            y = decoder(y) + adapt(skip)
        return crop_to(self.head(y), size)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Wu et al., FAT-Net: Feature Adaptive Transformers for Automated Skin Lesion Segmentation, "
                      "Medical Image Analysis 76, 2022 (Fig. 1-4; no printed count read: official code 28,758,657 "
                      "at 3 in, 1 class)",
                defaults=lambda d: {"widths": [64, 128, 256, 512], "blocks": [3, 4, 6, 3], "embed_dim": 192,
                                    "depth": 12, "num_heads": 3, "fam_repeats": [6, 4, 2],
                                    "head_channels": 32},
                tiny_kwargs={"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "embed_dim": 16, "depth": 1,
                             "num_heads": 2, "fam_repeats": [2, 1, 1], "head_channels": 8},
                extra={"tags": ["hybrid", "cnn", "transformer", "residual", "attention", "pretrainable-encoder"],
                       "paper_params": None,
                       "paper_setup": "no count read from the paper; official code (SZUcsh/FAT-Net FAT_Net.py, as "
                                      "U-Bench ships it), 3 in / 1 class, 224x224, ResNet-34 + DeiT-tiny: 28,758,657, "
                                      "of which 4,640 in a decoder block it never calls",
                       "divisible_by": 16, "pads_input": True, "output_stride": 4, "paper_patch": [224, 224],
                       "kwargs_note": _PLAN_NOTE})
def fatnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           widths: Sequence[int] = (64, 128, 256, 512), blocks: Sequence[int] = (3, 4, 6, 3), embed_dim: int = 192,
           depth: int = 12, num_heads: int = 3, fam_repeats: Sequence[int] = (6, 4, 2), head_channels: int = 32,
           n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
           strides: Any = None) -> FATNet:
    """FAT-Net: ResNet-34 and DeiT-tiny encoders side by side, feature adaptation skips, LinkNet decoder, 2D."""
    return FATNet(in_channels, num_classes, widths, blocks, embed_dim, depth, num_heads, fam_repeats, head_channels)


# ============================================================================================ MSRF-Net
def _leaky(cin: int, cout: int, conv: type[nn.Module] = nn.Conv2d, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (or transposed conv) + LeakyReLU(0.25), the unit of the DSDF block."""
    return nn.Sequential(conv(cin, cout, kernel, stride, (kernel - 1) // 2 if stride == 1 else 1),
                         nn.LeakyReLU(0.25))


class DualScaleDenseFusion(nn.Module):
    """MSRF-Net's DSDF block: two residual dense blocks, on a fine map ``x`` (``cx`` channels) and a
    map ``y`` at half its resolution (``cy``), that swap features after every layer. Layer k of each
    block sees its input, its own earlier outputs and the other block's latest output resampled
    (4x4 stride-2 conv down, 4x4 stride-2 transposed conv up, ``growth`` channels each); the fifth
    layer maps back to the input width and the block returns ``x + 0.4 * x5``, ``y + 0.4 * y5``.
    As in the reference, the first exchange resamples the block inputs, the second the first
    layer's outputs, the third and fourth the third and fourth layer's outputs."""

    #: after dense layer k, the exchange resamples entry ``EXCHANGE_SOURCES[k]`` of [input, out 1, ...]
    EXCHANGE_SOURCES = (0, 1, 3, 4)

    def __init__(self, cx: int, cy: int, growth: int) -> None:
        super().__init__()
        layers = len(self.EXCHANGE_SOURCES)
        g = growth
        self.x_layers = nn.ModuleList(_leaky(cx + k * g + (g if k else 0), g) for k in range(layers))
        self.y_layers = nn.ModuleList(_leaky(cy + k * g + (g if k else 0), g) for k in range(layers))
        self.down = nn.ModuleList(_leaky(cx if k == 0 else g, g, kernel=4, stride=2) for k in range(layers))
        self.up = nn.ModuleList(_leaky(cy if k == 0 else g, g, nn.ConvTranspose2d, 4, 2) for k in range(layers))
        self.x_out = _leaky(cx + (layers + 1) * g, cx)
        self.y_out = _leaky(cy + (layers + 1) * g, cy)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [x], [y]
        x_from_y = y_from_x = None
        for k, (fx, fy, down, up) in enumerate(zip(self.x_layers, self.y_layers, self.down, self.up)):
            xs.append(fx(torch.cat(xs + ([x_from_y] if k else []), dim=1)))
            ys.append(fy(torch.cat(ys + ([y_from_x] if k else []), dim=1)))
            source = self.EXCHANGE_SOURCES[k]
            y_from_x, x_from_y = down(xs[source]), up(ys[source])
        x5 = self.x_out(torch.cat(xs + [x_from_y], dim=1))
        y5 = self.y_out(torch.cat(ys + [y_from_x], dim=1))
        return x + 0.4 * x5, y + 0.4 * y5


def _squeeze(channels: int, ratio: int = 16) -> nn.Module:
    """Squeeze-and-excitation with biases to ``channels // ratio`` (at least one, for tiny widths)."""
    return BiasedSqueezeExcite(channels, max(1, channels // ratio) / channels, nn.ReLU)


def _msrf_encoder_stage(cin: int, cout: int, pool: bool, squeeze_ratio: int | None) -> nn.Sequential:
    """(Max pool /2 + dropout 0.2,) two 3x3 conv + ReLU, BN, (squeeze-and-excitation with biases):
    one level of MSRF-Net's encoder."""
    layers: list[nn.Module] = [nn.MaxPool2d(2), nn.Dropout(0.2)] if pool else []
    layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1),
               nn.ReLU(inplace=True), nn.BatchNorm2d(cout)]
    if squeeze_ratio is not None:
        layers.append(_squeeze(cout, squeeze_ratio))
    return nn.Sequential(*layers)


class SkipAttentionGate(nn.Module):
    """Attention gate on a skip ``x`` from the coarser map ``g`` (MSRF-Net's ``ATTENTION_block``):
    ``theta(x)`` (2x2 stride-2 conv) + ``phi(g)`` (1x1 conv), ReLU, 1x1 conv to one map, sigmoid,
    2x2 transposed conv back to the skip's resolution; the product with ``x`` is batch-normalized."""

    def __init__(self, cx: int, cg: int, mid: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(cx, mid, 2, 2)
        self.phi = nn.Conv2d(cg, mid, 1)
        self.psi = nn.Sequential(nn.ReLU(), nn.Conv2d(mid, 1, 1), nn.Sigmoid(), nn.ConvTranspose2d(1, 1, 2, 2))
        self.norm = nn.BatchNorm2d(cx)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.norm(self.psi(self.theta(x) + self.phi(g)) * x)


class DualAttention(nn.Module):
    """MSRF-Net's dual attention block: the coarser map up (2x2 transposed conv + BN + ReLU),
    concatenated with the skip, 3x3 conv + BN + ReLU to ``cout``; the result reweighted by
    squeeze-and-excitation and by ``1 +`` a spatial attention map (1x1 conv + BN + ReLU, 1x1 conv to
    one channel, sigmoid)."""

    def __init__(self, c_skip: int, c_prev: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(c_prev, cout, 2, 2), nn.BatchNorm2d(cout), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(c_skip + cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.channel = _squeeze(cout)
        self.spatial = nn.Sequential(nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(), nn.Conv2d(cout, 1, 1),
                                     nn.Sigmoid())

    def forward(self, skip: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        y = self.mix(torch.cat([skip, self.up(prev)], dim=1))
        return (self.spatial(y) + 1) * self.channel(y)


class GatedShapeConv(nn.Module):
    """Gated-SCNN's gated 1x1 conv (no bias): features scaled by ``1 + a``, where the attention ``a``
    comes from the features and a one-channel gate (BN, 1x1 conv + ReLU, 1x1 conv to one map, BN,
    sigmoid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels + 1
        self.attention = nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, 1, 1),
                                       nn.BatchNorm2d(1), nn.Sigmoid())
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, feat: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.conv(feat * (self.attention(torch.cat([feat, gate], dim=1)) + 1))


class ShapeStream(nn.Module):
    """MSRF-Net's gated shape stream at full resolution: three steps of (basic residual block, 1x1
    conv to half the width, gated conv) on the finest features, gated by one-channel 1x1 projections
    of the three coarser levels (bilinearly upsampled); a 1x1 conv to the classes + sigmoid gives the
    shape map, and a 1x1 conv of [shape map, image] + sigmoid the one-channel edge feature."""

    def __init__(self, widths: Sequence[int], in_channels: int, num_classes: int) -> None:
        super().__init__()
        c = widths[0]
        steps = (c, c, c // 2, c // 4)  # 32, 32, 16, 8 at the published width
        self.level_gates = nn.ModuleList(nn.Conv2d(w, 1, 1) for w in widths[1:])
        self.blocks = nn.ModuleList(BasicBlock(steps[i], steps[i]) for i in range(3))
        self.narrow = nn.ModuleList(nn.Conv2d(steps[i], steps[i + 1], 1) for i in range(3))
        self.gated = nn.ModuleList(GatedShapeConv(steps[i + 1]) for i in range(3))
        self.to_shape = nn.Conv2d(steps[3], num_classes, 1, bias=False)
        self.fuse = nn.Conv2d(num_classes + in_channels, 1, 1, bias=False)

    def forward(self, fine: torch.Tensor, coarser: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        size = fine.shape[2:]
        x = fine
        for block, narrow, gated, proj, level in zip(self.blocks, self.narrow, self.gated, self.level_gates, coarser):
            gate = F.interpolate(proj(level), size=size, mode="bilinear", align_corners=True)
            x = gated(narrow(block(x)), gate)
        shape = torch.sigmoid(self.to_shape(x))
        return torch.sigmoid(self.fuse(torch.cat([shape, image], dim=1)))


def _pre_activation_pair(c: int) -> nn.Sequential:
    """BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv: the residual branch of MSRF-Net's decoder stages."""
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         nn.Conv2d(c, c, 3, padding=1))


class AttentionDecoderStage(nn.Module):
    """One of MSRF-Net's two attention decoder stages: the coarser map ``deep`` (``2c`` channels)
    up by a 2x2 transposed conv, concatenated with the attention-gated skip (``c``) and with the
    dual attention output (``c``), a 1x1 conv to ``c``, plus a pre-activation residual pair."""

    def __init__(self, c: int, gate_mid: int) -> None:
        super().__init__()
        self.gate = SkipAttentionGate(c, 2 * c, gate_mid)
        self.up = nn.ConvTranspose2d(2 * c, c, 2, 2)
        self.dual = DualAttention(c, 2 * c, c)
        self.merge = nn.Conv2d(3 * c, c, 1)
        self.refine = _pre_activation_pair(c)

    def forward(self, skip: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.up(deep), self.gate(skip, deep), self.dual(skip, deep)], dim=1)
        y = self.merge(both)
        return self.refine(y) + y


class MSRFNet(nn.Module):
    """MSRF-Net: four encoder levels, the MSRF sub-network of DSDF blocks over level pairs, a gated
    shape stream, two attention decoder stages (1/4, 1/2) and a full-resolution stage fed the shape
    stream's edge feature; one head per stage (deep supervision). Published: widths 32, 64, 128, 256."""

    #: the level pairs (finer, coarser) the ten DSDF blocks fuse, in order (Fig. 2 of the paper)
    DSDF_PAIRS = ((0, 1), (2, 3), (0, 1), (2, 3), (1, 2), (0, 1), (2, 3), (1, 2), (0, 1), (2, 3))

    def __init__(self, in_channels: int, num_classes: int, base_width: int = 32, deep_supervision: bool = True) -> None:
        super().__init__()
        if base_width < 8 or base_width % 4:
            raise ValueError(f"MSRF-Net's base width must be a multiple of 4 and at least 8, got {base_width}")
        w = [base_width * 2 ** i for i in range(4)]
        # the reference's encoder squeeze ratio is half the base width (16 at the published 32)
        ratios = (base_width // 2,) * 3 + (None,)
        self.encoder = nn.ModuleList(_msrf_encoder_stage(in_channels if i == 0 else w[i - 1], w[i], i > 0, ratios[i])
                                     for i in range(4))
        self.fusion = nn.ModuleList(DualScaleDenseFusion(w[a], w[b], w[a] // 2) for a, b in self.DSDF_PAIRS)
        self.shape_stream = ShapeStream(w, in_channels, num_classes)
        self.stage_quarter = AttentionDecoderStage(w[2], w[3])
        self.stage_half = AttentionDecoderStage(w[1], w[1])
        self.up_full = nn.ConvTranspose2d(w[1], w[0], 4, 2, 1)
        self.merge_full = nn.Sequential(nn.Conv2d(2 * w[0] + 1, w[0], 1), nn.ReLU())
        self.refine_full = nn.Sequential(nn.Conv2d(w[0], w[0], 3, padding=1), nn.ReLU(), nn.BatchNorm2d(w[0]))
        self.head_quarter = nn.Conv2d(w[2], num_classes, 1)
        self.head_half = nn.Conv2d(w[1], num_classes, 1)
        self.head_full = nn.Sequential(nn.Conv2d(w[0], w[0], 3, padding=1), nn.ReLU(), nn.Conv2d(w[0], num_classes, 1))
        self.divisible_by = 8
        self.deep_supervision = deep_supervision

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder levels, then the MSRF sub-network; its output is added back at 0.4."""
        levels = []
        for stage in self.encoder:
            x = stage(x if not levels else levels[-1])
            levels.append(x)
        fused = list(levels)
        for block, (a, b) in zip(self.fusion, self.DSDF_PAIRS):
            fused[a], fused[b] = block(fused[a], fused[b])
        return [0.4 * f + e for f, e in zip(fused, levels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        _check_divisible(x, self.divisible_by, "MSRF-Net")
        full, half, quarter, eighth = self.encode(x)
        edge = self.shape_stream(full, (half, quarter, eighth), x)
        y_quarter = self.stage_quarter(quarter, eighth)
        y_half = self.stage_half(half, y_quarter)
        y = self.merge_full(torch.cat([self.up_full(y_half), full, edge], dim=1))
        logits = self.head_full(self.refine_full(y) + y)
        if not self.deep_supervision:
            return logits
        return [logits, self.head_half(y_half), self.head_quarter(y_quarter)]


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=True,
                paper="Srivastava et al., MSRF-Net: A Multi-Scale Residual Fusion Network for Biomedical Image "
                      "Segmentation, IEEE JBHI 2022, arXiv:2105.07451 (Fig. 1-3; no parameter count found: "
                      "U-Bench's PyTorch port, 22,506,074 at 3 in, 1 class)",
                defaults=lambda d: {"base_width": 32},
                tiny_kwargs={"base_width": 8},
                extra={"tags": ["cnn", "dense", "multiscale", "residual", "attention"], "paper_params": None,
                       "paper_setup": "no count found in the paper; official code is Keras (NoviceMAn-prog/MSRF-Net); "
                                      "U-Bench's PyTorch port (models/CNN/MSRFNet, from amlarraz/MSRF-Net_PyTorch), "
                                      "3 in / 1 class, widths 32..256: 22,506,074",
                       "divisible_by": 8, "kwargs_note": _PLAN_NOTE})
def msrfnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
            base_width: int = 32, n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
            strides: Any = None) -> MSRFNet:
    """MSRF-Net: dual-scale dense fusion of encoder levels, gated shape stream, attention decoder, 2D."""
    return MSRFNet(in_channels, num_classes, base_width, deep_supervision)
