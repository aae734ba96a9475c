"""UNet++ with an EfficientNet-B0..B7 encoder (family ``pretrainable``), for building extraction.

Ovi, Bashree, Mukherjee, Mosharrof, Parthima, "Performance Analysis of Various EfficientNet Based
U-Net++ Architecture for Automatic Building Extraction from High Resolution Satellite Images",
arXiv:2310.06847, 2023: UNet++ (Zhou et al., DLMIA 2018) whose encoder is an EfficientNet
(B0..B4 compared, B4 best on the Massachusetts buildings at 256x256). The paper prints no parameter
count and publishes no code; the network it describes is segmentation_models_pytorch's
``UnetPlusPlus(encoder_name="efficientnet-b*")`` (Iakubovskii, github.com/qubvel-org/
segmentation_models.pytorch, ``decoders/unetplusplus``), which this module follows.

Encoder: EfficientNet, Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, Table 1 (the B0 stages: MBConv blocks with expansion, depth-wise kxk
convolution, squeeze-and-excitation on a quarter of the block's input width, linear projection,
stochastic depth on the identity blocks; SiLU ("swish"); batch norm eps 1e-3) and Sec. 3.3
(compound scaling: widths times ``w`` rounded to multiples of 8, never below 90 %; repeats times
``d`` rounded up). The coefficients of B0..B7 are the published ones (``EFFICIENTNET_SCALING``).
Table 2 prints 5.3M parameters for B0 (the classifier: encoder, 1x1 head to 1280, 1000-way linear
layer): :class:`EfficientNetClassifier` is that network (5,288,548 parameters).

Decoder (smp ``UnetPlusPlusDecoder``, widths 256, 128, 64, 32, 16): the encoder's features at
strides 2..32 are the nodes X^{l,0}; node X^{l,j} = H(cat(up(X^{l+1,j-1}), X^{l,0..j-1})) with
H = two (3x3 conv without bias, batch norm, ReLU) and up = nearest x2. Nodes off the main path keep
their level's encoder width; the main path X^{l,5-l} takes the decoder widths; a last node at full
resolution (no skip) and a 3x3 head follow. With 3 input channels and 1 class B0 gives
6,157,421 parameters; smp's model counts 412,160 more because its encoder keeps EfficientNet's
1x1 head (320 -> 1280 conv and batch norm) that its forward never runs (tests/test_zoo_seed_papers.py
derives smp's count from its channel rules).

Differences from smp: the stride-4..32 skips are tapped at the end of each resolution (smp's B0
table taps the stride-16 feature after the first of the three 112-wide blocks; the stride-2 skip is
the stem's output in both); convolutions pad symmetrically
(not TensorFlow's "same"); no unused head. 2D only (the paper is 2D); no deep supervision (smp's
UNet++ has none). A patch whose sides are not multiples of 32 is zero-padded at the end and the
logits cropped back (the trainer rounds plan patches up to multiples of 32 anyway).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.registry import register_model

EFFICIENTNET_UNETPP_PAPER = (
    "Ovi et al., Performance Analysis of Various EfficientNet Based U-Net++ Architecture for Automatic Building "
    "Extraction from High Resolution Satellite Images, arXiv:2310.06847 (no count printed); encoder: Tan & Le, "
    "EfficientNet, ICML 2019 (Table 1; Table 2: B0 5.3M); decoder: segmentation_models_pytorch UnetPlusPlus")

#: EfficientNet-B0 stages (Tan & Le 2019, Table 1): (expansion, kernel, stride, repeats, output width).
EFFICIENTNET_B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16), (6, 3, 2, 2, 24), (6, 5, 2, 2, 40), (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112), (6, 5, 2, 4, 192), (6, 3, 1, 1, 320))
#: B0..B7: (width multiplier, depth multiplier, input resolution, classifier drop-out), as published.
EFFICIENTNET_SCALING: dict[int, tuple[float, float, int, float]] = {
    0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3), 3: (1.2, 1.4, 300, 0.3),
    4: (1.4, 1.8, 380, 0.4), 5: (1.6, 2.2, 456, 0.4), 6: (1.8, 2.6, 528, 0.5), 7: (2.0, 3.1, 600, 0.5)}
STEM_WIDTH, HEAD_WIDTH = 32, 1280
UNETPP_DECODER_WIDTHS = (256, 128, 64, 32, 16)
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's batch norm of the reference (decay 0.99)


def round_width(width: int, multiplier: float, divisor: int = 8) -> int:
    """Scaled width, rounded to the nearest multiple of ``divisor`` but never more than 10 % below
    the scaled value (the reference's ``round_filters``)."""
    scaled = width * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def round_repeats(repeats: int, multiplier: float) -> int:
    """Scaled number of blocks, rounded up."""
    return int(math.ceil(multiplier * repeats))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SqueezeExcite(nn.Module):
    """Channel attention: global mean, 1x1 conv to ``squeezed`` + SiLU, 1x1 conv back + sigmoid gate."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2 / MnasNet) with squeeze-and-excitation: 1x1
    expansion (skipped for expansion 1), depth-wise kxk with the stride, SE on a quarter of the
    *input* width, 1x1 projection without activation; identity shortcut with stochastic depth
    (``drop_rate``) when stride is 1 and the width is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, kernel: int, stride: int,
                 drop_rate: float = 0.0, se_ratio: float = 0.25) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), _bn(hidden), nn.SiLU(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False), _bn(hidden),
                   nn.SiLU(inplace=True), SqueezeExcite(hidden, max(1, int(in_channels * se_ratio))),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), _bn(out_channels)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:  # stochastic depth: drop the whole branch per sample
            keep = 1.0 - self.drop_rate
            mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
            out = out * mask / keep
        return out + x


class EfficientNetEncoder(nn.Module):
    """EfficientNet without its classifier: stem (3x3 conv, stride 2) and the seven MBConv stages,
    returning the features at strides 2, 4, 8, 16 and 32 (the last block of each resolution).

    Args:
        in_channels: input channels.
        width_multiplier, depth_multiplier: compound-scaling coefficients (B0: 1.0, 1.0).
        drop_connect_rate: stochastic-depth rate of the last block (linearly less before it).
    """

    def __init__(self, in_channels: int, width_multiplier: float = 1.0, depth_multiplier: float = 1.0,
                 drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        stem = round_width(STEM_WIDTH, width_multiplier)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), _bn(stem), nn.SiLU(inplace=True))
        plan = [(e, k, s, round_repeats(r, depth_multiplier), round_width(c, width_multiplier))
                for e, k, s, r, c in EFFICIENTNET_B0_STAGES]
        total, index, width = sum(p[3] for p in plan), 0, stem
        stages = []
        for expansion, kernel, stride, repeats, out in plan:
            blocks = []
            for r in range(repeats):
                blocks.append(MBConv(width, out, expansion, kernel, stride if r == 0 else 1,
                                     drop_connect_rate * index / total))
                width, index = out, index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        strides = [p[2] for p in plan]
        # the stride-2 skip is the stem (as smp); then the last stage before each downsampling, and the last
        self.tap_after = [i for i in range(1, len(plan)) if i == len(plan) - 1 or strides[i + 1] == 2]
        self.out_channels = [stem] + [plan[i][4] for i in self.tap_after]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = [x]
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.tap_after:
                features.append(x)
        return features


class EfficientNetClassifier(nn.Module):
    """The EfficientNet image classifier (encoder, 1x1 conv to 1280 x width + BN + SiLU, global
    mean, drop-out, linear): the network of Tan & Le's Table 2 (B0: 5.3M parameters)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, compound_coefficient: int = 0) -> None:
        super().__init__()
        width, depth, _, dropout = EFFICIENTNET_SCALING[compound_coefficient]
        self.encoder = EfficientNetEncoder(in_channels, width, depth)
        head = round_width(HEAD_WIDTH, width)
        self.head = nn.Sequential(nn.Conv2d(self.encoder.out_channels[-1], head, 1, bias=False), _bn(head),
                                  nn.SiLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head, num_classes)
        self.apply(init_efficientnet_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.encoder(x)[-1]).mean(dim=(2, 3))
        return self.fc(self.dropout(x))


class ConvBNReLU(nn.Sequential):
    """3x3 conv without bias, batch norm, ReLU (smp's ``Conv2dReLU``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class EfficientNetUNetPlusPlus(nn.Module):
    """UNet++ over an EfficientNet encoder (see the module docstring for the node rule).

    Args:
        in_channels, num_classes: input channels and output classes.
        compound_coefficient: 0..7 for EfficientNet-B0..B7 (the published scaling coefficients).
        width_multiplier, depth_multiplier: override the coefficient's (e.g. for small test models).
        decoder_widths: widths of the main decoder path, deepest first (smp: 256, 128, 64, 32, 16).
        drop_connect_rate: the encoder's stochastic-depth rate.

    Example:
        >>> net = EfficientNetUNetPlusPlus(3, 1)            # EfficientNet-B0, 6,157,421 parameters
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 1, 256, 256])
    """

    def __init__(self, in_channels: int, num_classes: int, compound_coefficient: int = 0,
                 width_multiplier: float | None = None, depth_multiplier: float | None = None,
                 decoder_widths: Sequence[int] = UNETPP_DECODER_WIDTHS, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        if compound_coefficient not in EFFICIENTNET_SCALING:
            raise ValueError(f"compound_coefficient must be 0..7 (EfficientNet-B0..B7), got {compound_coefficient!r}")
        width, depth = EFFICIENTNET_SCALING[compound_coefficient][:2]
        self.encoder = EfficientNetEncoder(in_channels, width_multiplier or width, depth_multiplier or depth,
                                           drop_connect_rate)
        enc = self.encoder.out_channels  # strides 2, 4, 8, 16, 32
        self.depth = len(enc)
        if len(decoder_widths) != self.depth:
            raise ValueError(f"decoder_widths needs {self.depth} widths (one per upsampling), "
                             f"got {list(decoder_widths)}")
        self.node_widths = self._node_widths(enc, list(decoder_widths))
        nodes = {}
        for (level, j), width_out in self.node_widths.items():
            if j == 0:
                continue
            below = self.node_widths[level + 1, j - 1]
            skips = j * enc[level - 1] if level > 0 else 0  # X^{l,0..j-1}, each of the level's encoder width
            nodes[f"x{level}_{j}"] = nn.Sequential(ConvBNReLU(below + skips, width_out),
                                                   ConvBNReLU(width_out, width_out))
        self.nodes = nn.ModuleDict(nodes)
        self.head = nn.Conv2d(decoder_widths[-1], num_classes, 3, 1, 1)
        self.deep_supervision = False
        self.apply(init_efficientnet_)

    def _node_widths(self, enc: list[int], decoder: list[int]) -> dict[tuple[int, int], int]:
        """Output width of every node X^{l,j} (levels 1..depth are the encoder features at stride 2^l,
        level 0 the full-resolution node): the main path (l + j = depth) takes the decoder widths,
        the other nodes keep their level's encoder width."""
        n = self.depth
        widths = {(level, 0): enc[level - 1] for level in range(1, n + 1)}
        for j in range(1, n + 1):
            for level in range(n - j, -1 if j == n else 0, -1):
                widths[level, j] = decoder[n - 1 - level] if level + j == n else enc[level - 1]
        return widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, 2 ** self.depth)
        n = self.depth
        feats = {(level, 0): f for level, f in enumerate(self.encoder(x), start=1)}
        for j in range(1, n + 1):
            for level in range(n - j, -1 if j == n else 0, -1):
                up = F.interpolate(feats[level + 1, j - 1], scale_factor=2.0, mode="nearest")
                inputs = [up] + [feats[level, m] for m in range(j)] if level > 0 else [up]
                feats[level, j] = self.nodes[f"x{level}_{j}"](torch.cat(inputs, dim=1))
        return crop_to(self.head(feats[0, n]), size)

    def load_pretrained_encoder(self, path: str | Path) -> None:
        """Load encoder weights from a safetensors file: the encoder's own state dict, or a state
        dict of a whole network whose encoder tensors start with ``encoder.`` (an
        :class:`EfficientNetClassifier`, or this network); other tensors are ignored."""
        load_encoder_weights(self.encoder, path)


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Strictly load ``encoder`` from the safetensors file ``path`` (see
    :meth:`EfficientNetUNetPlusPlus.load_pretrained_encoder`); errors name the file and the tensors."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise FileNotFoundError(f"pretrained encoder weights: {path} is not an existing .safetensors file")
    weights = load_file(str(path))
    if any(k.startswith("encoder.") for k in weights):
        weights = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
    want = encoder.state_dict()
    missing, unexpected = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    wrong = [f"{k}: file {list(weights[k].shape)}, encoder {list(want[k].shape)}"
             for k in sorted(set(want) & set(weights)) if weights[k].shape != want[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: not the weights of this EfficientNet encoder (another compound coefficient or "
                         f"input channel count?): missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}, shapes {wrong[:3]}")
    encoder.load_state_dict(weights, strict=True)


def init_efficientnet_(module: nn.Module) -> None:
    """The reference's initialization: convolutions normal with std sqrt(2 / fan_out), linear
    layers uniform in +-1/sqrt(out features), batch norms 1 and 0, biases zero."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.out_features)
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _defaults(spatial_dims: int) -> dict[str, Any]:
    return {"compound_coefficient": 0, "decoder_widths": list(UNETPP_DECODER_WIDTHS), "drop_connect_rate": 0.2}


@register_model(family="unetpp", paper=EFFICIENTNET_UNETPP_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=_defaults,
                tiny_kwargs={"width_multiplier": 0.25, "depth_multiplier": 0.3, "decoder_widths": [32, 16, 16, 8, 8]},
                extra={"tags": ["cnn", "nested", "attention", "pretrainable-encoder"], "divisible_by": 32,
                       "pads_input": True,
                       "paper_params": None, "paper_patch": [256, 256],
                       "paper_setup": "Ovi et al. print no count. Encoder: EfficientNet-B0 classifier 5.3M (Tan & Le "
                                      "2019 Table 2; ours 5,288,548). Whole network, 3 in / 1 class: ours 6,157,421 = "
                                      "segmentation_models_pytorch UnetPlusPlus('efficientnet-b0') 6,569,581 less "
                                      "the 412,160 of the unused head smp keeps",
                       "kwargs_note": "compound_coefficient 0..7 = EfficientNet-B0..B7; pretrained: a local "
                                      ".safetensors file of encoder weights; plan keywords accepted and ignored"})
def unetpp_efficientnet_b0(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                           compound_coefficient: int = 0, width_multiplier: float | None = None,
                           depth_multiplier: float | None = None,
                           decoder_widths: Sequence[int] = UNETPP_DECODER_WIDTHS, drop_connect_rate: float = 0.2,
                           pretrained: str | None = None, n_stages: Any = None, features_per_stage: Any = None,
                           kernel_sizes: Any = None, strides: Any = None) -> EfficientNetUNetPlusPlus:
    """UNet++ with an EfficientNet encoder (B0 by default; ``compound_coefficient`` 1..7 for B1..B7).

    Random initialization; ``pretrained`` names a local ``.safetensors`` file of encoder weights
    (see :meth:`EfficientNetUNetPlusPlus.load_pretrained_encoder`). 2D, patches multiples of 32.
    """
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    net = EfficientNetUNetPlusPlus(in_channels, num_classes, compound_coefficient, width_multiplier, depth_multiplier,
                                   tuple(decoder_widths), drop_connect_rate)
    if pretrained is not None:
        net.load_pretrained_encoder(pretrained)
    return net
