"""U-Bench CNNs built on a classification backbone: CE-Net, DoubleU-Net (family ``ubench_cnn``).

Both follow their papers' layouts with the backbone written here (no torchvision): the ImageNet
weights the papers start from are not loaded (unetkit trains from scratch); only the layout is
kept, so parameter counts are those of the papers' networks.

- ``cenet``: Gu, Cheng, Fu, Zhou, Hao, Zhao, Zhang, Gao, Liu, "CE-Net: Context Encoder Network for
  2D Medical Image Segmentation", IEEE TMI 38(10), 2019 (arXiv:1903.02740), Fig. 1-4: ResNet-34
  encoder (first four stages), dense atrous convolution block (DAC: dilations 1, 3, 5 in four
  cascaded branches sharing one 1x1 conv), residual multi-kernel pooling (RMP: max pools 2, 3, 5, 6,
  one shared 1x1 conv to a single channel each, upsampled and concatenated: 512 + 4 channels), four
  decoder blocks (1x1 to C/4, 3x3 transposed conv x2, 1x1) added to the skips, and a 4x4
  transposed conv + two 3x3 convs head. The paper prints no parameter count; the reference is the
  official code's (github.com/Guzaiwang/CE-Net ``networks/cenet.py``, class ``CE_Net_``, as U-Bench
  ships it): 29.00M at 3 in / 1 class.
- ``doubleunet``: Jha, Riegler, Johansen, Halvorsen, Johansen, "DoubleU-Net: A Deep Convolutional
  Neural Network for Medical Image Segmentation", CBMS 2020 (arXiv:2006.04868), Fig. 1-2:
  network 1 is a VGG-19 encoder (skips after block1_conv2 .. block4_conv4, output block5_conv4 at
  1/16), ASPP (64 filters, rates 1, 6, 12, 18 + image pooling) and a decoder of bilinear x2, skip
  concatenation and two 3x3 conv + BN + ReLU with squeeze-and-excitation (ratio 8), widths 256,
  128, 64, 32; its sigmoid output multiplies the input of network 2, a plain encoder (32, 64, 128,
  256) + ASPP + a decoder that concatenates the skips of both encoders. Official code:
  github.com/DebeshJha/2020-CBMS-DoubleU-Net ``model.py`` (Keras).

Differences from the references, all without effect on the parameter count: logits instead of
sigmoid outputs; the input is zero-padded to a multiple of 32 (CE-Net) or 16 (DoubleU-Net) and the
logits cropped; RMP pool kernels larger than the feature map are clipped to it (the papers' 448 and
384-pixel inputs never reach that). CE-Net sees the image only at 1/4 after its stem (7x7 stride 2 and
max pool; no skip above 1/4): ``extra["output_stride"]`` 4. DoubleU-Net returns network 2's output (the paper concatenates
both networks' outputs for a 2-channel binary map); network 1's gate with several classes is its
foreground probability (1 - softmax background). 2D only, no deep supervision (the papers have none).
Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.registry import register_model

_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored; the input is zero-padded to divisible_by and the logits cropped")


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1, bias: bool = True) -> nn.Sequential:
    """``kernel`` x ``kernel`` conv ("same" padding) -> BatchNorm -> ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=bias),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# ============================================================================================ ResNet-34
class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs with BN, identity (or 1x1 strided conv + BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class ResNetEncoder(nn.Module):
    """ResNet (He et al., CVPR 2016) without its classifier: 7x7 stride-2 stem, 3x3 stride-2 max pool,
    then stages of basic blocks (the first at stride 1, the others halving). ResNet-34: blocks
    3, 4, 6, 3 of widths 64, 128, 256, 512. Returns every stage's output (1/4 ... 1/32; without the
    max pool, ``stem_pool=False`` as FAT-Net uses it, 1/2 ... 1/16)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (3, 4, 6, 3), stem_pool: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity())
        stages, cin = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else width, width, stride if j == 0 else 1)
                                          for j in range(n)]))
            cin = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


# ============================================================================================ CE-Net
class DenseAtrousBlock(nn.Module):
    """CE-Net's DAC block: ``x`` plus four cascaded atrous branches (receptive fields 3, 7, 9, 19),
    ReLU on each; the three deeper branches end in one shared 1x1 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dilate1 = nn.Conv2d(channels, channels, 3, padding=1, dilation=1)
        self.dilate3 = nn.Conv2d(channels, channels, 3, padding=3, dilation=3)
        self.dilate5 = nn.Conv2d(channels, channels, 3, padding=5, dilation=5)
        self.conv1x1 = nn.Conv2d(channels, channels, 1)
        for conv in (self.dilate1, self.dilate3, self.dilate5, self.conv1x1):
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.dilate1(x)
        d13 = self.dilate3(d1)
        branches = (d1, self.conv1x1(self.dilate3(x)), self.conv1x1(d13), self.conv1x1(self.dilate5(d13)))
        return x + sum(F.relu(b) for b in branches)


class ResidualMultiKernelPooling(nn.Module):
    """CE-Net's RMP block: max pools of kernel (= stride) 2, 3, 5, 6, each reduced to one channel by a
    shared 1x1 conv and upsampled back (bilinear), concatenated after the input (C + 4 channels)."""

    def __init__(self, channels: int, kernels: Sequence[int] = (2, 3, 5, 6)) -> None:
        super().__init__()
        self.kernels = tuple(kernels)
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pooled = []
        for k in self.kernels:
            kernel = tuple(min(k, s) for s in size)  # a map smaller than the kernel: pool it whole
            y = self.conv(F.max_pool2d(x, kernel, kernel))
            pooled.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return torch.cat([x, *pooled], dim=1)


class LinkNetDecoderBlock(nn.Sequential):
    """1x1 conv to C/4, 3x3 transposed conv (x2), 1x1 conv to ``cout``; BN + ReLU after each (LinkNet's
    decoder block, as CE-Net uses it)."""

    def __init__(self, cin: int, cout: int) -> None:
        mid = cin // 4
        super().__init__(nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(mid, mid, 3, 2, 1, output_padding=1), nn.BatchNorm2d(mid),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def linknet_head(cin: int, mid: int, num_classes: int) -> nn.Sequential:
    """4x4 transposed conv (x2) to ``mid`` + ReLU, 3x3 conv + ReLU, 3x3 conv to the classes: the
    full-resolution head of CE-Net and FAT-Net."""
    return nn.Sequential(nn.ConvTranspose2d(cin, mid, 4, 2, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, num_classes, 3, padding=1))


class CENet(nn.Module):
    """CE-Net: ResNet encoder, DAC + RMP context extractor, LinkNet-style decoder with additive skips."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int],
                 head_channels: int = 32) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 4 or len(blocks) != 4 or any(w < 4 or w % 4 for w in widths):
            raise ValueError(f"CE-Net needs 4 widths (multiples of 4) and 4 block counts, got {widths}, {list(blocks)}")
        self.encoder = ResNetEncoder(in_channels, widths, blocks)
        self.dac = DenseAtrousBlock(widths[3])
        self.rmp = ResidualMultiKernelPooling(widths[3])
        cins = [widths[3] + 4, widths[2], widths[1], widths[0]]
        couts = [widths[2], widths[1], widths[0], widths[0]]
        self.decoders = nn.ModuleList(LinkNetDecoderBlock(ci, co) for ci, co in zip(cins, couts))
        self.head = linknet_head(widths[0], head_channels, num_classes)
        self.divisible_by = 32
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        e1, e2, e3, e4 = self.encoder(x)
        y = self.rmp(self.dac(e4))
        for decoder, skip in zip(self.decoders, (e3, e2, e1, None)):
            y = decoder(y)
            if skip is not None:
                y = y + skip
        return crop_to(self.head(y), size)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Gu et al., CE-Net: Context Encoder Network for 2D Medical Image Segmentation, IEEE TMI 2019, "
                      "arXiv:1903.02740 (Fig. 1-4; no parameter count printed: official code 29.00M at 3 in, 1 class)",
                defaults=lambda d: {"widths": [64, 128, 256, 512], "blocks": [3, 4, 6, 3]},
                tiny_kwargs={"widths": [8, 8, 8, 8], "blocks": [1, 1, 1, 1]},
                extra={"tags": ["cnn", "residual", "multiscale", "pretrainable-encoder"], "paper_params": None,
                       "paper_setup": "no count in the paper; official code (Guzaiwang/CE-Net cenet.py CE_Net_, "
                                      "as in U-Bench), 3 in / 1 class, ResNet-34: 29.00M",
                       "divisible_by": 32, "pads_input": True, "output_stride": 4, "paper_patch": [448, 448], "kwargs_note": _PLAN_NOTE})
def cenet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
          widths: Sequence[int] = (64, 128, 256, 512), blocks: Sequence[int] = (3, 4, 6, 3), n_stages: Any = None,
          features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> CENet:
    """CE-Net: ResNet-34 encoder, dense atrous convolution and multi-kernel pooling context, 2D."""
    return CENet(in_channels, num_classes, widths, blocks)


# ============================================================================================ DoubleU-Net
class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): global average, FC to C/ratio + ReLU, FC to C + sigmoid,
    no biases (DoubleU-Net's ``squeeze_excite_block``, ratio 8)."""

    def __init__(self, channels: int, ratio: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class ConvBlockSE(nn.Sequential):
    """Two 3x3 conv + BN + ReLU, then squeeze-and-excitation (DoubleU-Net's ``conv_block``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout), SqueezeExcite(cout))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as DoubleU-Net builds it: image pooling (1x1 conv with bias),
    a 1x1 and three 3x3 convs at rates 6, 12, 18 (no bias), each + BN + ReLU, concatenated and fused
    by a 1x1 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.image_pool = conv_bn_relu(cin, cout, 1)
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1, bias=False)] +
                                      [conv_bn_relu(cin, cout, 3, r, bias=False) for r in rates])
        self.fuse = conv_bn_relu(cout * (len(rates) + 2), cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BN after broadcasting the pooled vector back over the map: the same statistics as on the
        # 1x1 map (every value repeated), and it also trains with a batch of one
        conv, norm_act = self.image_pool[0], self.image_pool[1:]
        pooled = norm_act(conv(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, *x.shape[2:]))
        return self.fuse(torch.cat([pooled] + [b(x) for b in self.branches], dim=1))


class VGGEncoder(nn.Module):
    """VGG (Simonyan & Zisserman 2015) convolutions: blocks of 3x3 conv + ReLU (bias, no BN), max pool
    between blocks. VGG-19: 2, 2, 4, 4, 4 convs of 64, 128, 256, 512, 512. Returns each block's output
    (the last one at 1/16; VGG's fifth pool is not used)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (64, 128, 256, 512, 512),
                 convs: Sequence[int] = (2, 2, 4, 4, 4)) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for width, n in zip(widths, convs):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class SkipDecoder(nn.Module):
    """DoubleU-Net's decoder: per level bilinear x2, concatenate the skips (deepest first), ConvBlockSE."""

    def __init__(self, cin: int, skip_channels: Sequence[Sequence[int]], widths: Sequence[int]) -> None:
        super().__init__()
        blocks = []
        for skips, width in zip(skip_channels, widths):
            blocks.append(ConvBlockSE(cin + sum(skips), width))
            cin = width
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, *skip_lists: Sequence[torch.Tensor]) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, *(skips[i] for skips in skip_lists)], dim=1))
        return x


class DoubleUNet(nn.Module):
    """DoubleU-Net: VGG-19 U-Net whose output gates the input of a second, plain U-Net."""

    def __init__(self, in_channels: int, num_classes: int, vgg_widths: Sequence[int], vgg_convs: Sequence[int],
                 widths: Sequence[int], aspp_channels: int = 64) -> None:
        super().__init__()
        vgg_widths, widths = [int(w) for w in vgg_widths], [int(w) for w in widths]
        if len(vgg_widths) != 5 or len(vgg_convs) != 5 or len(widths) != 4:
            raise ValueError(f"DoubleU-Net needs 5 VGG widths and conv counts and 4 decoder widths, "
                             f"got {vgg_widths}, {list(vgg_convs)}, {widths}")
        self.num_classes = num_classes
        self.encoder1 = VGGEncoder(in_channels, vgg_widths, vgg_convs)
        self.aspp1 = ASPP(vgg_widths[4], aspp_channels)
        skips1 = vgg_widths[3::-1]
        self.decoder1 = SkipDecoder(aspp_channels, [[c] for c in skips1], widths)
        self.head1 = nn.Conv2d(widths[-1], num_classes, 1)
        enc2 = widths[::-1]  # network 2's encoder: 32, 64, 128, 256
        self.encoder2 = nn.ModuleList(ConvBlockSE(in_channels if i == 0 else enc2[i - 1], w) for i, w in enumerate(enc2))
        self.aspp2 = ASPP(enc2[-1], aspp_channels)
        self.decoder2 = SkipDecoder(aspp_channels, [[a, b] for a, b in zip(skips1, widths)], widths)
        self.head2 = nn.Conv2d(widths[-1], num_classes, 1)
        self.divisible_by = 16
        self.deep_supervision = False

    def _gate(self, logits: torch.Tensor) -> torch.Tensor:
        """Network 1's foreground probability, (B, 1, H, W)."""
        if self.num_classes == 1:
            return torch.sigmoid(logits)
        return 1.0 - torch.softmax(logits, dim=1)[:, :1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        features = self.encoder1(x)
        skips1 = features[3::-1]
        out1 = self.head1(self.decoder1(self.aspp1(features[4]), skips1))
        y, skips2 = x * self._gate(out1), []
        for i, block in enumerate(self.encoder2):
            y = block(y if i == 0 else F.max_pool2d(y, 2))
            skips2.append(y)
        y = self.aspp2(F.max_pool2d(y, 2))
        out2 = self.head2(self.decoder2(y, skips1, skips2[::-1]))
        return crop_to(out2, size)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Jha et al., DoubleU-Net: A Deep Convolutional Neural Network for Medical Image Segmentation, "
                      "CBMS 2020, arXiv:2006.04868 (Fig. 1-2; 29.3M trainable parameters, Sec. V)",
                defaults=lambda d: {"vgg_widths": [64, 128, 256, 512, 512], "vgg_convs": [2, 2, 4, 4, 4],
                                    "widths": [256, 128, 64, 32], "aspp_channels": 64},
                tiny_kwargs={"vgg_widths": [8, 8, 16, 16, 16], "vgg_convs": [1, 1, 1, 1, 1],
                             "widths": [16, 16, 8, 8], "aspp_channels": 8},
                extra={"tags": ["cnn", "multiscale", "attention", "pretrainable-encoder"], "paper_params": 29.3e6,
                       "paper_setup": "3 in, 1 class (binary), 384x512 (Kvasir/CVC), VGG-19 + widths 256..32, "
                                      "Keras trainable count",
                       "divisible_by": 16, "pads_input": True, "kwargs_note": _PLAN_NOTE})
def doubleunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               vgg_widths: Sequence[int] = (64, 128, 256, 512, 512), vgg_convs: Sequence[int] = (2, 2, 4, 4, 4),
               widths: Sequence[int] = (256, 128, 64, 32), aspp_channels: int = 64, n_stages: Any = None,
               features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> DoubleUNet:
    """DoubleU-Net: a VGG-19 U-Net with ASPP gating a second U-Net, 2D."""
    return DoubleUNet(in_channels, num_classes, vgg_widths, vgg_convs, widths, aspp_channels)
