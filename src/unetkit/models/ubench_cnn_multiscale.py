"""U-Bench CNNs built around multi-scale blocks: DC-UNet, KiU-Net, CFPNet-M, DCSAU-Net (family
``ubench_cnn``).

- ``dcunet``: Lou, Guan, Loew, "DC-UNet: Rethinking the U-Net Architecture with Dual Channel
  Efficient CNN for Medical Images Segmentation", SPIE Medical Imaging 2021 (arXiv:2006.00414),
  Fig. 3-5: MultiResUNet's layout (Res paths of length 4..1, 2x2 transposed convs, U = 32..512,
  alpha 1.67) with every MultiRes block replaced by a dual-channel block: two parallel chains of three
  3x3 conv-BN-ReLU (widths W/6, W/3, W/2), each concatenated and batch-normalized, summed, ReLU, BN
  (no 1x1 shortcut, as in the official Keras code). Official code: github.com/AngeLouCN/DC-UNet (Keras; a PyTorch port
  in U-Bench ``models/CNN/DC_Unet``). It is :class:`~unetkit.models.multiresunet.MultiResUNet` with
  that block, so it takes the plan topology and 3D as MultiResUNet does.
- ``kiunet``: Valanarasu, Sindagi, Hacihaliloglu, Patel, "KiU-Net: Towards Accurate Segmentation of
  Biomedical Images using Over-complete Representations", MICCAI 2020 (arXiv:2006.04878), and
  "KiU-Net: Overcomplete Convolutional Architectures for Biomedical Image and Volumetric
  Segmentation", IEEE TMI 2021 (arXiv:2010.01663), Fig. 3-4: a U-Net branch (3x3 conv, max pool /2,
  BN, ReLU; widths 16, 32, 64) and a Ki-Net branch (3x3 conv, bilinear x2, BN, ReLU), joined at every
  level by cross-residual fusion blocks (CRFB: 3x3 conv + BN + ReLU, resized to the other branch and
  added), additive skips in both branches, the two branches summed before a 1x1 head. Official code:
  github.com/jeya-maria-jose/KiU-Net-pytorch ``arch/ae.py`` class ``kiunet`` (U-Bench ``KiU_Net``),
  which also builds two 64-channel CRFB units (``interd3_1/2``) that its forward never calls; ours
  leaves them out (217,113 instead of 291,225 parameters at 3 in, 1 class). Logits instead of the
  reference's ReLU on the head; resizing by size instead of by 4**level (same for patches that are
  multiples of 8). The Ki-Net branch runs at up to 8x the input size per axis: memory-hungry.
- ``cfpnet_m``: Lou, Guan, Loew, "CFPNet-M: A Light-Weight Encoder-Decoder Based Network for
  Multimodal Biomedical Image Real-Time Segmentation", Computers in Biology and Medicine 154, 2023
  (arXiv:2105.04075), Fig. 2-4: a stride-2 stem of three 3x3 conv-BN-ReLU (32), image injection
  (the input average-pooled 2x2, BN, ReLU, chained to each level and concatenated), two 3x3 stride-2
  conv-BN-ReLU downsamplings each followed by channel-wise feature pyramid (CFP) modules (2 at 64
  channels with dilation 2; 6 at 128 with dilations 4, 4, 8, 8, 16, 16) and three 2x2 transposed conv
  + ReLU decoder steps concatenating the encoder's injected features, 1x1 head. A CFP module: 1x1
  conv to C/4, four branches of three chained 3x3 convs (C/16, C/16, C/8; dilations 1, d//4+1,
  d//2+1, d+1), each branch concatenated and batch-normalized, summed hierarchically, concatenated,
  BN, 1x1 conv, plus the input. Official code: github.com/AngeLouCN/CFPNet-Medicine
  ``network/CFPNetM.py`` (Keras): its Keras count is 654,279 (BN statistics included, no BN scale
  in conv-BN units), the paper's 0.65M. Two points of that code we do not copy: its branches 3 and 4
  concatenate branch 1's first output instead of their own (the paper's Fig. 3 shows their own; same
  count), and its ``groups`` argument never reaches the convolution (so the convolutions are dense,
  as here). U-Bench's PyTorch port differs (grouped convs, a 3x3 reduction, max-pool widening,
  BN in the decoder: 758,881).
- ``dcsaunet``: Xu, Ma, He, Duan, "DCSAU-Net: A Deeper and More Compact Split-Attention
  U-Net for Medical Image Segmentation", Computers in Biology and Medicine 154, 2023
  (arXiv:2202.00972), Fig. 1-3: a primary feature conservation stem (PFC: 7x7 conv, then a residual
  7x7 depthwise conv and a 1x1 conv, each followed by ReLU and BN; 64 channels) and compact
  split-attention (CSA) stages: ResNeSt-style bottlenecks (1x1 conv, a radix-2 split-attention
  3x3 conv whose second split first adds the first and passes one more grouped 3x3 conv, 1x1 conv to
  4x the width, residual with a 1x1 conv + BN where the width changes), two per stage, widths 32, 64,
  128, 128 (x4) down to 1/16 and 64, 32, 16, 16 (x4) back up, bilinear x2 and skip concatenation.
  Official code: github.com/xq141839/DCSAU-Net ``pytorch_dcsaunet`` (the layout U-Bench ships;
  the parameter table of the paper could not be read through our tools: the count checked is the
  code's, 2,598,785 at 3 in, 1 class). The input is zero-padded to a multiple of 16 and the logits
  cropped. The stem takes ``in_channels`` (U-Bench's copy hard-codes 3).

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.multiresunet import MultiResUNet, multires_widths
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_backbone import conv_bn_relu
from unetkit.models.topology import IntOrSeq, Shape
from unetkit.models.unet_classic import ConvNormReLU, norm_layer, resolve_topology, topology_kwargs

_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


# ============================================================================================ DC-UNet
class DualChannelBlock(nn.Module):
    """DC-UNet's DC block: two parallel chains of three 3x3 conv-BN-ReLU (widths int(W*0.167),
    int(W*0.333), int(W*0.5), W = alpha * u), each chain's outputs concatenated and batch-normalized,
    summed, ReLU, BN. No 1x1 shortcut: the official Keras block has it commented out (U-Bench's
    PyTorch port adds one back). Same signature as MultiResBlock."""

    def __init__(self, spatial_dims: int, in_channels: int, u: int, kernel_size: Shape, norm: str,
                 alpha: float = 1.67) -> None:
        super().__init__()
        widths = multires_widths(u, alpha)
        self.out_channels = sum(widths)
        self.chains = nn.ModuleList()
        for _ in range(2):
            cins = (in_channels,) + widths[:-1]
            self.chains.append(nn.ModuleList(ConvNormReLU(spatial_dims, ci, co, kernel_size, norm, bias=False)
                                             for ci, co in zip(cins, widths)))
        self.chain_norms = nn.ModuleList(norm_layer(norm, spatial_dims, self.out_channels) for _ in range(2))
        self.norm_out = norm_layer(norm, spatial_dims, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = 0
        for chain, norm in zip(self.chains, self.chain_norms):
            outs, h = [], x
            for conv in chain:
                h = conv(h)
                outs.append(h)
            y = y + norm(torch.cat(outs, dim=1))
        return self.norm_out(torch.relu(y))


class DCUNet(MultiResUNet):
    """DC-UNet: MultiResUNet's Res paths and decoder with dual-channel blocks."""

    block_class = DualChannelBlock


DCUNET_FEATURES = (32, 64, 128, 256, 512)


def _dcunet_defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, DCUNET_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "alpha": 1.67, "norm": "batch"}


@register_model(family="ubench_cnn", deep_supervision=False, defaults=_dcunet_defaults,
                paper="Lou, Guan, Loew, DC-UNet: Rethinking the U-Net Architecture with Dual Channel Efficient CNN "
                      "for Medical Images Segmentation, SPIE Medical Imaging 2021, arXiv:2006.00414 (Fig. 3-5; "
                      "no printed count found: official Keras code 10,069,928 at 3 in, 1 class)",
                tiny_kwargs={"n_stages": 4, "features_per_stage": [6, 8, 16, 32]},
                extra={"tags": ["cnn", "multiscale", "residual"], "paper_params": None,
                       "paper_setup": "no count found in the paper's text (its parameter table is an image we "
                                      "could not read); official code (AngeLouCN/DC-UNet model.py, Keras), 2D, "
                                      "3 in, 1 class, U = 32..512: 10,069,928 (Keras total: BN moving statistics "
                                      "included, no BN scale in conv-BN units)",
                       "divisible_by": 16})
def dcunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
           strides: Any = None, alpha: float = 1.67, norm: str = "batch") -> DCUNet:
    """DC-UNet: MultiResUNet with dual-channel blocks (2D as published; 3D with 3D convolutions).

    Default: 5 levels, U = 32, 64, 128, 256, 512, alpha 1.67, batch norm; patches multiples of 16.
    The plan topology (stages, widths, kernels, strides) is taken as MultiResUNet takes it.
    """
    topo = resolve_topology(spatial_dims, DCUNET_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return DCUNet(spatial_dims, in_channels, num_classes, topo, alpha, norm)


# ============================================================================================ KiU-Net
def _resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``like`` (KiU-Net resizes by 4**level; by size
    here, so that any patch works)."""
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class CrossResidualFusion(nn.Module):
    """KiU-Net's CRFB: each branch gets the other's features, through 3x3 conv + BN + ReLU and
    resized to its own size, added."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ki_to_u = conv_bn_relu(channels, channels)
        self.u_to_ki = conv_bn_relu(channels, channels)

    def forward(self, u: torch.Tensor, ki: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return u + _resize_to(self.ki_to_u(ki), u), ki + _resize_to(self.u_to_ki(u), ki)


class BranchLevel(nn.Module):
    """One level of one branch: 3x3 conv (bias), resampling (max pool /2 or bilinear x2), BN, ReLU."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.BatchNorm2d(cout)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = F.max_pool2d(x, 2) if self.down else F.interpolate(x, scale_factor=2.0, mode="bilinear",
                                                               align_corners=False)
        return F.relu(self.norm(x))


class KiUNet(nn.Module):
    """KiU-Net: an undercomplete U-Net branch (down, then up) and an overcomplete Ki-Net branch (up,
    then down), exchanging features through CRFBs at every level but the last, additive skips in both,
    summed before the 1x1 head. Published: widths 16, 32, 64 (last decoder level 8)."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int]) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or any(w < 2 for w in widths):
            raise ValueError(f"KiU-Net needs at least 2 widths of at least 2, got {widths}")
        n = len(widths)
        enc_in, dec_out = [in_channels] + widths[:-1], widths[-2::-1] + [widths[0] // 2]
        dec_in = widths[::-1]
        self.u_encoder = nn.ModuleList(BranchLevel(ci, co, True) for ci, co in zip(enc_in, widths))
        self.ki_encoder = nn.ModuleList(BranchLevel(ci, co, False) for ci, co in zip(enc_in, widths))
        self.encoder_fusion = nn.ModuleList(CrossResidualFusion(w) for w in widths)
        self.u_decoder = nn.ModuleList(BranchLevel(ci, co, False) for ci, co in zip(dec_in, dec_out))
        self.ki_decoder = nn.ModuleList(BranchLevel(ci, co, True) for ci, co in zip(dec_in, dec_out))
        self.decoder_fusion = nn.ModuleList(CrossResidualFusion(w) for w in dec_out[:-1])
        self.head = nn.Conv2d(dec_out[-1], num_classes, 1)
        self.divisible_by = 2 ** n
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.divisible_by for s in x.shape[2:]):
            raise ValueError(f"KiU-Net: patch size {tuple(x.shape[2:])} must be a multiple of "
                             f"{self.divisible_by} per axis")
        u, ki, skips = x, x, []
        for u_level, ki_level, fuse in zip(self.u_encoder, self.ki_encoder, self.encoder_fusion):
            u, ki = fuse(u_level(u), ki_level(ki))
            skips.append((u, ki))
        skips.pop()
        for i, (u_level, ki_level) in enumerate(zip(self.u_decoder, self.ki_decoder)):
            u, ki = u_level(u), ki_level(ki)
            if i < len(self.decoder_fusion):
                u, ki = self.decoder_fusion[i](u, ki)
                u_skip, ki_skip = skips.pop()
                u, ki = u + u_skip, ki + ki_skip
        return self.head(u + ki)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Valanarasu et al., KiU-Net: Towards Accurate Segmentation of Biomedical Images using "
                      "Over-complete Representations, MICCAI 2020, arXiv:2006.04878 (Fig. 3-4; no count read "
                      "from the paper: official code 291,225 at 3 in, 1 class, 74,112 of them in two unused units)",
                defaults=lambda d: {"widths": [16, 32, 64]},
                tiny_kwargs={"widths": [2, 4, 4]},
                extra={"tags": ["cnn", "multiscale"], "paper_params": None,
                       "paper_setup": "no count read from the paper; official code (jeya-maria-jose/KiU-Net-pytorch "
                                      "arch/ae.py kiunet, as U-Bench ships it), 3 in, 1 class, widths 16, 32, 64: "
                                      "291,225, of which two 64-channel CRFB units (74,112) are built but never "
                                      "used; ours leaves them out: 217,113",
                       "divisible_by": 8, "kwargs_note": _PLAN_NOTE})
def kiunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           widths: Sequence[int] = (16, 32, 64), n_stages: Any = None, features_per_stage: Any = None,
           kernel_sizes: Any = None, strides: Any = None) -> KiUNet:
    """KiU-Net: a U-Net and an overcomplete Ki-Net branch joined by cross-residual fusion, 2D."""
    return KiUNet(in_channels, num_classes, widths)



# ============================================================================================ CFPNet-M
def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> ConvNormReLU:
    """Conv (no bias) -> BN -> ReLU, CFPNet-M's ``conv2d_bn``."""
    return ConvNormReLU(2, cin, cout, kernel, "batch", stride=stride, dilation=dilation, bias=False)


class ChannelFeaturePyramid(nn.Module):
    """CFPNet-M's CFP module on ``channels`` (a multiple of 16) with dilation rate ``d``: 1x1 conv to
    C/4; four branches (dilations 1, d//4+1, d//2+1, d+1) of three chained 3x3 convs to C/16, C/16,
    C/8, each branch's outputs concatenated (C/4) and batch-normalized; the branches summed
    hierarchically (1, 1+2, 1+2+3, 1+2+3+4) and concatenated, BN, 1x1 conv-BN-ReLU, plus the input."""

    def __init__(self, channels: int, d: int) -> None:
        super().__init__()
        if channels % 16:
            raise ValueError(f"a CFP module needs a multiple of 16 channels, got {channels}")
        q, s = channels // 4, channels // 16
        self.reduce = _conv_bn_relu(channels, q, 1)
        self.branches = nn.ModuleList(
            nn.ModuleList([_conv_bn_relu(q, s, dilation=r), _conv_bn_relu(s, s, dilation=r),
                           _conv_bn_relu(s, 2 * s, dilation=r)])
            for r in (1, d // 4 + 1, d // 2 + 1, d + 1))
        self.branch_norms = nn.ModuleList(nn.BatchNorm2d(q) for _ in range(4))
        self.norm = nn.BatchNorm2d(channels)
        self.fuse = _conv_bn_relu(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.reduce(x)
        pyramid, running = [], None
        for branch, norm in zip(self.branches, self.branch_norms):
            outs, h = [], y
            for conv in branch:
                h = conv(h)
                outs.append(h)
            level = norm(torch.cat(outs, dim=1))
            running = level if running is None else running + level
            pyramid.append(running)
        return self.fuse(self.norm(torch.cat(pyramid, dim=1))) + x


class ImageInjection(nn.Module):
    """The input average-pooled (2x2) to the next level, then BN + ReLU on its channels; chained, so
    level k sees the image at 1/2**k."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(F.avg_pool2d(x, 2)))


class CFPNetM(nn.Module):
    """CFPNet-M: stride-2 stem, image injection at 1/2, 1/4, 1/8, two CFP stages behind stride-2
    convs, a transposed-conv decoder over the injected encoder features, 1x1 head. Published: widths
    32, 64, 128; CFP modules with dilation rates 2, 2 and 4, 4, 8, 8, 16, 16."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], dilations_1: Sequence[int],
                 dilations_2: Sequence[int]) -> None:
        super().__init__()
        c0, c1, c2 = (int(w) for w in widths)
        cat0, cat1, cat2 = c0 + in_channels, 2 * c1 + in_channels, 2 * c2 + in_channels
        self.stem = nn.Sequential(_conv_bn_relu(in_channels, c0, stride=2), _conv_bn_relu(c0, c0),
                                  _conv_bn_relu(c0, c0))
        self.inject = nn.ModuleList(ImageInjection(in_channels) for _ in range(3))
        self.down1 = _conv_bn_relu(cat0, c1, stride=2)
        self.stage1 = nn.Sequential(*(ChannelFeaturePyramid(c1, d) for d in dilations_1))
        self.down2 = _conv_bn_relu(cat1, c2, stride=2)
        self.stage2 = nn.Sequential(*(ChannelFeaturePyramid(c2, d) for d in dilations_2))
        self.up = nn.ModuleList(nn.ConvTranspose2d(ci, co, 2, 2)
                                for ci, co in ((cat2, c2), (c2 + cat1, c1), (c1 + cat0, c0)))
        self.head = nn.Conv2d(c0, num_classes, 1)
        self.divisible_by = 8
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % self.divisible_by for s in x.shape[2:]):
            raise ValueError(f"CFPNet-M: patch size {tuple(x.shape[2:])} must be a multiple of "
                             f"{self.divisible_by} per axis")
        i1 = self.inject[0](x)
        i2 = self.inject[1](i1)
        i3 = self.inject[2](i2)
        f0 = torch.cat([self.stem(x), i1], dim=1)
        d1 = self.down1(f0)
        f1 = torch.cat([self.stage1(d1), d1, i2], dim=1)
        d2 = self.down2(f1)
        y = torch.cat([self.stage2(d2), d2, i3], dim=1)
        y = F.relu(self.up[0](y))
        y = F.relu(self.up[1](torch.cat([y, f1], dim=1)))
        y = F.relu(self.up[2](torch.cat([y, f0], dim=1)))
        return self.head(y)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Lou, Guan, Loew, CFPNet-M: A Light-Weight Encoder-Decoder Based Network for Multimodal "
                      "Biomedical Image Real-Time Segmentation, Computers in Biology and Medicine 2023, "
                      "arXiv:2105.04075 (Fig. 2-4; 0.65M parameters)",
                defaults=lambda d: {"widths": [32, 64, 128], "dilations_1": [2, 2],
                                    "dilations_2": [4, 4, 8, 8, 16, 16]},
                tiny_kwargs={"widths": [8, 16, 32], "dilations_1": [2], "dilations_2": [4]},
                extra={"tags": ["cnn", "multiscale", "lightweight"], "paper_params": 0.65e6,
                       "paper_setup": "3 in, 1 class, widths 32, 64, 128, 2 + 6 CFP modules (Keras count of the "
                                      "official code: 654,279 with BN statistics)",
                       "divisible_by": 8, "output_stride": 2, "kwargs_note": _PLAN_NOTE})
def cfpnet_m(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             widths: Sequence[int] = (32, 64, 128), dilations_1: Sequence[int] = (2, 2),
             dilations_2: Sequence[int] = (4, 4, 8, 8, 16, 16), n_stages: Any = None, features_per_stage: Any = None,
             kernel_sizes: Any = None, strides: Any = None) -> CFPNetM:
    """CFPNet-M: channel-wise feature pyramid modules with image injection, light-weight, 2D."""
    return CFPNetM(in_channels, num_classes, widths, dilations_1, dilations_2)



# ============================================================================================ DCSAU-Net
class PrimaryFeatureConservation(nn.Module):
    """DCSAU-Net's PFC stem: k x k conv to ``channels``; a residual depthwise k x k conv; a 1x1 conv;
    each conv followed by ReLU then BN."""

    def __init__(self, in_channels: int, channels: int, kernel: int = 7) -> None:
        super().__init__()

        def relu_bn(conv: nn.Module) -> nn.Sequential:
            return nn.Sequential(conv, nn.ReLU(inplace=True), nn.BatchNorm2d(channels))

        self.stem = relu_bn(nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2))
        self.depthwise = relu_bn(nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels))
        self.pointwise = relu_bn(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.pointwise(self.depthwise(x) + x)


class CompactSplitAttention(nn.Module):
    """DCSAU-Net's split-attention 3x3 conv (radix 2): a grouped 3x3 conv to two splits (BN, ReLU);
    the second split adds the first and passes another grouped 3x3 conv (BN, ReLU); a channel
    attention from the pooled sum of both (1x1 conv to max(C/2, 32), BN, ReLU, 1x1 conv to 2C,
    softmax across the two splits) weights and sums them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inter = max(channels * 2 // 4, 32)
        self.conv = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, padding=1, groups=2, bias=False),
                                  nn.BatchNorm2d(2 * channels), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=2, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.attention = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.BatchNorm2d(inter), nn.ReLU(inplace=True),
                                       nn.Conv2d(inter, 2 * channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.chunk(self.conv(x), 2, dim=1)
        x2 = self.conv2(x2 + x1)
        weights = self.attention((x1 + x2).mean(dim=(2, 3), keepdim=True))
        a1, a2 = torch.softmax(weights.view(x.shape[0], 2, -1), dim=1).unbind(1)
        return a1[:, :, None, None] * x1 + a2[:, :, None, None] * x2


class CSABottleneck(nn.Module):
    """ResNeSt bottleneck with the compact split attention: 1x1 conv to ``width`` (BN, ReLU), split
    attention, 1x1 conv to 4 x ``width`` (BN), plus the input (through 1x1 conv + BN where the width
    changes), ReLU. The reference's 3x3 stride-1 average pool after the attention ("avd", in the
    first block of stages 2-7) is kept."""

    def __init__(self, cin: int, width: int, avd: bool) -> None:
        super().__init__()
        cout = 4 * width
        self.reduce = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.attention = CompactSplitAttention(width)
        self.avd = avd
        self.expand = nn.Sequential(nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (nn.Identity() if cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attention(self.reduce(x))
        if self.avd:
            y = F.avg_pool2d(y, 3, 1, 1)
        return F.relu(self.expand(y) + self.shortcut(x))


def _csa_stage(cin: int, width: int, blocks: int, avd: bool) -> nn.Sequential:
    return nn.Sequential(*(CSABottleneck(cin if i == 0 else 4 * width, width, avd and i == 0) for i in range(blocks)))


class DCSAUNet(nn.Module):
    """DCSAU-Net: PFC stem (2 x ``base``), four CSA stages down to 1/8 .. 1/16 (widths ``base`` x 1, 2,
    4, 4, expansion 4), four CSA stages up (x 2, 1, 1/2, 1/2) after bilinear x2 and concatenation
    with the skip, 1x1 head. Published: base 32, two bottlenecks per stage."""

    def __init__(self, in_channels: int, num_classes: int, base: int = 32, blocks: int = 2, pfc_kernel: int = 7) -> None:
        super().__init__()
        if base < 4 or base % 4:
            raise ValueError(f"DCSAU-Net needs a base width that is a multiple of 4, got {base}")
        stem = 2 * base
        down = [base, 2 * base, 4 * base, 4 * base]
        up = [2 * base, base, base // 2, base // 2]
        self.stem = PrimaryFeatureConservation(in_channels, stem, pfc_kernel)
        ins = [stem] + [4 * w for w in down[:-1]]
        self.down = nn.ModuleList(_csa_stage(ci, w, blocks, avd=i > 0) for i, (ci, w) in enumerate(zip(ins, down)))
        skips = [4 * down[2], 4 * down[1], 4 * down[0], stem]
        up_ins = [4 * down[3]] + [4 * w for w in up[:-1]]
        self.up = nn.ModuleList(_csa_stage(s + ci, w, blocks, avd=i < 3)
                                for i, (s, ci, w) in enumerate(zip(skips, up_ins, up)))
        self.head = nn.Conv2d(4 * up[-1], num_classes, 1)
        self.divisible_by = 16
        self.deep_supervision = False
        for stages in (self.down, self.up):  # the reference initializes its CSA stages so (He normal, fan-out)
            for m in stages.modules():
                if isinstance(m, nn.Conv2d):
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        y = self.stem(x)
        skips = [y]
        for stage in self.down:
            y = stage(F.max_pool2d(y, 2))
            skips.append(y)
        skips.pop()
        for stage in self.up:
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=True)
            y = stage(torch.cat([skips.pop(), y], dim=1))
        return crop_to(self.head(y), size)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Xu et al., DCSAU-Net: A Deeper and More Compact Split-Attention U-Net for Medical Image "
                      "Segmentation, Computers in Biology and Medicine 2023, arXiv:2202.00972 (Fig. 1-3)",
                defaults=lambda d: {"base": 32, "blocks": 2, "pfc_kernel": 7},
                # the tiny instance's stem is 1x1 (the reference's PFC takes its kernel size as an
                # argument too): with 7x7 a few Adam steps do not learn a per-pixel rule on noise
                tiny_kwargs={"base": 8, "blocks": 1, "pfc_kernel": 1},
                extra={"tags": ["cnn", "attention", "residual", "multiscale"], "paper_params": None,
                       "paper_setup": "no count read from the paper; official code (xq141839/DCSAU-Net "
                                      "pytorch_dcsaunet, as U-Bench ships it), 3 in, 1 class, base 32, two "
                                      "bottlenecks per stage: 2,598,785",
                       "divisible_by": 16, "pads_input": True, "kwargs_note": _PLAN_NOTE})
def dcsaunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             base: int = 32, blocks: int = 2, pfc_kernel: int = 7, n_stages: Any = None,
             features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> DCSAUNet:
    """DCSAU-Net: primary feature conservation stem and compact split-attention stages, 2D."""
    return DCSAUNet(in_channels, num_classes, base, blocks, pfc_kernel)
