"""Window-attention transformer U-Nets: CSWin-UNet and DS-TransUNet (family ``transformer``).

- ``cswin_unet``: Liu, Gao, Yu, Wang, Yuan, "CSWin-UNet: Transformer UNet with Cross-Shaped Windows for
  Medical Image Segmentation", Information Fusion 113 (2025) 102634, arXiv:2407.18070. A 7x7
  stride-4 convolutional token embedding, four stages of CSWin blocks (Dong et al., CVPR 2022: half the
  heads attend within vertical stripes, half within horizontal stripes of width ``split_size``, each with
  a locally-enhanced positional encoding, LePE: a depth-wise 3x3 convolution of the values), 3x3 stride-2
  convolutions between stages, and a mirrored decoder whose upsampling is CARAFE (Wang et al., ICCV 2019:
  content-aware reassembly with predicted, softmax-normalized 3x3 kernels); skips are concatenated and
  reduced by a linear layer; a final 4x CARAFE and a bias-free 1x1 head. Reference code:
  eatbeanss/CSWin-UNet ``networks/cswin_unet.py`` with ``configs/cswin_tiny_224_lite.yaml`` (embedding
  64, depths 1, 2, 9, 1, heads 2, 4, 8, 16, stripe widths 1, 2, 7, 7, MLP ratio 4, qkv bias, drop path
  0.2). The stripes are sized for one input (``img_size``: the stripes of a stage span its whole height or
  width), so the model declares ``patch_kwarg`` and pads smaller inputs to that size.
- ``ds_transunet``: Lin, Chen, Xu, Zhang, Lu, Zhang, "DS-TransUNet: Dual Swin Transformer U-Net for
  Medical Image Segmentation", IEEE TIM 2022, arXiv:2106.06716. Two Swin
  encoders on the same image, one with 4x4 patches (Swin-B: 128, depths 2, 2, 18, 2) and one with 8x8
  patches (Swin-T: 96, depths 2, 2, 6, 2); at each of the four levels a Transformer Interactive Fusion
  (TIF) module lets each branch's tokens attend together with the other branch's pooled global token; the
  coarse branch is upsampled 2x, concatenated, and fused by two 3x3 convolutions with group norm; three
  Swin decoder levels (upsample + 3x3 conv, two Swin blocks, 1x1 reduction, joined with the skip) and two
  convolutional levels with a full-resolution convolutional stem; two auxiliary heads (the bottleneck and
  the 1/4 decoder level). Reference code: TianBaoGe/DS-TransUNet ``lib/DS_TransUNet.py`` and
  ``utils/module.py`` (U-Bench's copy: ``models/Hybrid/DS_TransUNet``).

Parameter counts: neither paper's printed table could be read from the stored material, so
``paper_params`` is None and the reference is the official code's count at the paper's configuration,
summed by hand layer by layer from the reference files (tests/test_zoo_window_transformers.py):
CSWin-UNet 23,568,492 (3 in, 9 classes, 224x224), DS-TransUNet 171,441,329 (3 in, 1 class; the
official repository's README calls the Kvasir model it trains with this code DS-TransUNet-B).

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import (
    DropPath,
    Mlp,
    PatchMerging,
    SwinBlock,
    crop_to,
    init_transformer_,
    pad_to_multiple,
    window_partition,
    window_reverse,
)
from unetkit.models.hybrid_cnn_transformer import PLAN_NOTE
from unetkit.models.registry import register_model
from unetkit.models.transformer_3d import _crop_coarse

Shape = tuple[int, int]


def _drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 to ``rate`` over all blocks, split per stage."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


# ============================================================================================ CSWin-UNet
class LePEStripeAttention(nn.Module):
    """Self-attention within stripes (windows of ``stripe`` = (height, width) tokens) plus the LePE of
    the values: a depth-wise 3x3 convolution applied inside each stripe (zero padding at its borders)."""

    def __init__(self, dim: int, num_heads: int, stripe: Shape) -> None:
        super().__init__()
        self.num_heads, self.stripe = num_heads, stripe
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        return x.view(n, length, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: (B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = q.shape
        q, k, v = (window_partition(t, self.stripe) for t in (q, k, v))  # (B * stripes, sh * sw, C)
        lepe = self.get_v(v.transpose(1, 2).reshape(-1, c, *self.stripe)).flatten(2).transpose(1, 2)
        out = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v)) + self._heads(lepe)
        return window_reverse(out.transpose(1, 2).reshape(-1, self.stripe[0] * self.stripe[1], c), self.stripe,
                              (h, w), b)


class CSWinBlock(nn.Module):
    """CSWin Transformer block: ``x + proj(cross-shaped window attention(LN(x)))``, then ``x + MLP(LN(x))``.
    Half the channels and heads attend in vertical stripes (full height, ``split`` wide), half in horizontal
    ones; a stage whose map is no larger than ``split`` attends globally with all heads (as the reference's
    last stage). Built for a fixed ``grid`` (H, W) of tokens; channels-last (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, grid: Shape, split: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0, global_attention: bool = False) -> None:
        super().__init__()
        gh, gw = grid
        global_attention = global_attention or max(gh, gw) <= split
        if not global_attention and (gh % split or gw % split or num_heads % 2 or dim % 2):
            raise ValueError(f"CSWin block: a {gh}x{gw} grid needs sides that are multiples of the stripe width {split} "
                             f"and an even number of heads and channels (got {num_heads} heads, {dim} channels)")
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if global_attention:
            self.attns = nn.ModuleList([LePEStripeAttention(dim, num_heads, grid)])
        else:
            self.attns = nn.ModuleList([LePEStripeAttention(dim // 2, num_heads // 2, (gh, split)),
                                        LePEStripeAttention(dim // 2, num_heads // 2, (split, gw))])
        self.proj = nn.Linear(dim, dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        parts = len(self.attns)
        branches = zip(self.attns, q.chunk(parts, -1), k.chunk(parts, -1), v.chunk(parts, -1))
        attended = torch.cat([attn(qi, ki, vi) for attn, qi, ki, vi in branches], dim=-1)
        x = x + self.drop_path(self.proj(attended))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CARAFE(nn.Module):
    """Content-aware reassembly of features (Wang et al., ICCV 2019) as CSWin-UNet uses it: a 1x1
    convolution to C/4 channels and a 3x3 convolution predict, per output pixel, a softmax-normalized 3x3
    kernel that reassembles the input's 3x3 neighbourhood (zero padded); a 1x1 convolution sets the output
    width. (B, C, H, W) -> (B, C_out, scale * H, scale * W)."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2, kernel: int = 3) -> None:
        super().__init__()
        self.scale, self.kernel = scale, kernel
        self.down = nn.Conv2d(dim, dim // 4, 1)
        self.encoder = nn.Conv2d(dim // 4, scale * scale * kernel * kernel, kernel, padding=kernel // 2)
        self.out = nn.Conv2d(dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, k2 = self.scale, self.kernel ** 2
        kernels = F.softmax(F.pixel_shuffle(self.encoder(self.down(x)), s), dim=1)  # (B, k2, sH, sW)
        kernels = kernels.view(b, k2, h, s, w, s).permute(0, 2, 4, 1, 3, 5).reshape(b, h, w, k2, s * s)
        neighbours = F.unfold(x, self.kernel, padding=self.kernel // 2)  # (B, C * k2, H * W)
        neighbours = neighbours.view(b, c, k2, h, w).permute(0, 3, 4, 1, 2)  # (B, H, W, C, k2)
        out = (neighbours @ kernels).view(b, h, w, c * s * s).permute(0, 3, 1, 2)  # channels c * s^2 + sub-pixel
        return self.out(F.pixel_shuffle(out, s))


class CSWinMerge(nn.Module):
    """3x3 stride-2 convolution doubling the width, then layer norm. Channels-last."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def cswin_divisor(split_size: Sequence[int]) -> int:
    """The multiple every side of ``img_size`` must be: each stage's grid (1/4, 1/8, 1/16, 1/32) a multiple
    of its stripe width (the last stage attends globally), and 32 for the four halvings."""
    divisor = 32
    for i, split in enumerate(split_size[:-1]):
        divisor = math.lcm(divisor, 4 * 2 ** i * int(split))
    return divisor


class CSWinUNet(nn.Module):
    """CSWin-UNet: convolutional token embedding -> 4 CSWin stages (stride-2 conv merges) -> mirrored CSWin
    decoder with CARAFE upsampling and concatenation + linear skips -> 4x CARAFE -> bias-free 1x1 head.

    Differences from the reference code: any rectangular ``img_size`` whose sides are multiples of
    :func:`cswin_divisor` (the reference builds square 224x224 only; its skip linears are hard-coded for
    embedding 64, here they follow the widths), and inputs smaller than ``img_size`` are zero-padded to it
    and the logits cropped; the reference repeats a grey image to 3 channels, here ``in_channels`` is used.

    Example:
        >>> CSWinUNet(3, 9, (224, 224))(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int], embed_dim: int = 64,
                 depths: Sequence[int] = (1, 2, 9, 1), num_heads: Sequence[int] = (2, 4, 8, 16),
                 split_size: Sequence[int] = (1, 2, 7, 7), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        if not len(depths) == len(num_heads) == len(split_size) == 4:
            raise ValueError(f"CSWin-UNet has 4 stages: depths, num_heads and split_size need 4 entries, got "
                             f"{list(depths)}, {list(num_heads)}, {list(split_size)}")
        divisor = cswin_divisor(split_size)
        self.img_size = tuple(int(s) for s in img_size)
        if len(self.img_size) != 2 or any(s <= 0 or s % divisor for s in self.img_size):
            raise ValueError(f"CSWin-UNet: img_size must be 2 positive multiples of {divisor} (stripe widths "
                             f"{list(split_size)}), got {list(img_size)}")
        dims = [embed_dim * 2 ** i for i in range(4)]
        grids = [(self.img_size[0] // (4 * 2 ** i), self.img_size[1] // (4 * 2 ** i)) for i in range(4)]
        rates = _drop_path_rates(drop_path_rate, depths)

        def stage(i: int) -> nn.Sequential:
            return nn.Sequential(*[CSWinBlock(dims[i], num_heads[i], grids[i], split_size[i], mlp_ratio, qkv_bias,
                                              rates[i][j], global_attention=i == 3) for j in range(depths[i])])

        self.embed = nn.Conv2d(in_channels, embed_dim, 7, 4, 2)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList([stage(i) for i in range(4)])
        self.merges = nn.ModuleList([CSWinMerge(dims[i], dims[i + 1]) for i in range(3)])
        self.norm = nn.LayerNorm(dims[3])
        self.decoder = nn.ModuleList([stage(i) for i in (3, 2, 1, 0)])  # the deepest first
        self.upsample = nn.ModuleList([CARAFE(dims[i], dims[i - 1]) for i in (3, 2, 1)])
        self.concat_linear = nn.ModuleList([nn.Linear(2 * dims[i], dims[i]) for i in (2, 1, 0)])
        self.norm_up = nn.LayerNorm(embed_dim)
        self.final_upsample = CARAFE(embed_dim, embed_dim, scale=4)
        self.output = nn.Conv2d(embed_dim, num_classes, 1, bias=False)
        self.deep_supervision = False
        self.apply(init_transformer_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[2:])
        if any(s > b for s, b in zip(size, self.img_size)):
            raise ValueError(f"CSWin-UNet was built for img_size {list(self.img_size)} and cannot take an input of "
                             f"{list(size)}; build it for this patch (img_size=...)")
        x = pad_to_multiple(x, self.img_size)[0]
        t = self.embed_norm(self.embed(x).permute(0, 2, 3, 1))
        skips = []
        for i, stage in enumerate(self.encoder):
            t = stage(t)
            if i < 3:
                skips.append(t)
                t = self.merges[i](t)
        t = self.norm(t)
        for i, stage in enumerate(self.decoder):
            t = stage(t)
            if i < 3:
                up = self.upsample[i](t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                t = self.concat_linear[i](torch.cat((skips[2 - i], up), dim=-1))
        t = self.final_upsample(self.norm_up(t).permute(0, 3, 1, 2))
        return crop_to(self.output(t), size)


def cswin_unet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's CSWin-T configuration at 224x224 (``cswin_tiny_224_lite.yaml``)."""
    return {"img_size": [224, 224], "embed_dim": 64, "depths": [1, 2, 9, 1], "num_heads": [2, 4, 8, 16],
            "split_size": [1, 2, 7, 7], "mlp_ratio": 4.0, "qkv_bias": True, "drop_path_rate": 0.2}


@register_model(family="transformer", spatial_dims=(2,), deep_supervision=False, defaults=cswin_unet_defaults,
                paper="Liu et al., CSWin-UNet: Transformer UNet with Cross-Shaped Windows for Medical Image "
                      "Segmentation, Information Fusion 2025, arXiv:2407.18070",
                tiny_kwargs={"img_size": None, "embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [2, 2, 2, 2],
                             "split_size": [1, 2, 7, 7], "drop_path_rate": 0.0},
                extra={"tags": ["transformer", "attention"], "paper_params": None,
                       "paper_setup": "no printed figure reached; official code (eatbeanss/CSWin-UNet "
                                      "networks/cswin_unet.py, configs/cswin_tiny_224_lite.yaml), 3 in / 9 classes "
                                      "(Synapse), 224x224, embedding 64, depths 1,2,9,1: 23,568,492",
                       "divisible_by": 224, "pads_input": True, "patch_kwarg": "img_size", "output_stride": 4,
                       "profile_patch_2d": [224, 224], "kwargs_note": PLAN_NOTE})
def cswin_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               img_size: Sequence[int] | None = None, embed_dim: int = 64, depths: Sequence[int] = (1, 2, 9, 1),
               num_heads: Sequence[int] = (2, 4, 8, 16), split_size: Sequence[int] = (1, 2, 7, 7),
               mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.2, n_stages: Any = None,
               features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> CSWinUNet:
    """CSWin-UNet (cross-shaped window transformer U-Net with CARAFE upsampling), CSWin-T at 224x224 by
    default; ``img_size`` is the patch its stripes are sized for. Plan topology keywords are ignored."""
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    if img_size is None:
        img_size = cswin_unet_defaults(2)["img_size"]
    return CSWinUNet(in_channels, num_classes, img_size, embed_dim, tuple(depths), tuple(num_heads),
                     tuple(split_size), mlp_ratio, qkv_bias, drop_path_rate)


# ============================================================================================ DS-TransUNet
#: The TIF module's two transformers (reference ``Cross_Att``): heads, width per head, MLP width; the
#: same at every level. "fine": the 4x4-patch (primary) branch, "coarse": the 8x8-patch branch.
TIF_COARSE = (3, 32, 128)
TIF_FINE = (1, 64, 256)


class TokenAttention(nn.Module):
    """Multi-head self-attention with a bias-free qkv projection to ``heads * head_dim`` channels and an
    output linear back to ``dim`` (the reference's ``utils/module.py`` ``Attention``, which leaves the
    output linear out when one head is as wide as the input)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.to_out = nn.Identity() if heads == 1 and head_dim == dim else nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class TokenTransformerLayer(nn.Module):
    """One pre-norm transformer layer: ``x + attention(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), TokenAttention(dim, heads, head_dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerInteractiveFusion(nn.Module):
    """TIF: each branch's global token (layer norm, average over the tokens, linear to the other
    branch's width) is prepended to the other branch's tokens, which pass one transformer layer; the global
    token is then dropped. Inputs and outputs (B, C, H, W): the fine branch's and the coarse branch's."""

    def __init__(self, fine_dim: int, coarse_dim: int) -> None:
        super().__init__()
        self.fine_layer = TokenTransformerLayer(fine_dim, *TIF_FINE)
        self.coarse_layer = TokenTransformerLayer(coarse_dim, *TIF_COARSE)
        self.fine_norm, self.coarse_norm = nn.LayerNorm(fine_dim), nn.LayerNorm(coarse_dim)
        self.fine_to_coarse = nn.Linear(fine_dim, coarse_dim)
        self.coarse_to_fine = nn.Linear(coarse_dim, fine_dim)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e, r = fine.flatten(2).transpose(1, 2), coarse.flatten(2).transpose(1, 2)
        e_global = self.fine_to_coarse(self.fine_norm(e).mean(1, keepdim=True))
        r_global = self.coarse_to_fine(self.coarse_norm(r).mean(1, keepdim=True))
        r = self.coarse_layer(torch.cat((e_global, r), dim=1))[:, 1:]
        e = self.fine_layer(torch.cat((r_global, e), dim=1))[:, 1:]
        return e.transpose(1, 2).reshape(fine.shape), r.transpose(1, 2).reshape(coarse.shape)


class SwinEncoder(nn.Module):
    """A Swin Transformer backbone (Liu et al., ICCV 2021): ``patch`` x ``patch`` embedding with layer norm,
    four stages of Swin blocks (window 7) with patch merging, each stage's output layer-normed. Returns the
    four maps (B, C_i, H_i, W_i)."""

    def __init__(self, in_channels: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 patch: int, drop_path_rate: float, window: int = 7) -> None:
        super().__init__()
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        rates = _drop_path_rates(drop_path_rate, depths)
        self.embed = nn.Conv2d(in_channels, embed_dim, patch, patch)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.stages = nn.ModuleList([nn.Sequential(*[SwinBlock(d, h, (window, window), j % 2 == 1, drop_path=r)
                                                     for j, r in enumerate(rs)])
                                     for d, h, rs in zip(dims, num_heads, rates)])
        self.merges = nn.ModuleList([PatchMerging(d, 2) for d in dims[:-1]])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in dims])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = self.embed_norm(self.embed(x).permute(0, 2, 3, 1))
        outs = []
        for i, (stage, norm) in enumerate(zip(self.stages, self.norms)):
            t = stage(t)
            outs.append(norm(t).permute(0, 3, 1, 2))
            if i < len(self.merges):
                t = self.merges[i](t)
        return outs


def conv_gn_relu(cin: int, cout: int, groups: int) -> list[nn.Module]:
    """3x3 convolution (with bias), group norm, ReLU: the reference's convolutional unit."""
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True)]


def up_conv(cin: int, cout: int, groups: int) -> nn.Sequential:
    """2x nearest upsampling, then a 3x3 convolution, group norm and ReLU (reference ``up_conv``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2), *conv_gn_relu(cin, cout, groups))


class SwinDecoderLevel(nn.Module):
    """A Swin decoder level (reference ``Swin_Decoder``): ``up_conv`` to C/2, Swin blocks, a 1x1 conv + ReLU
    to C/4; the skip (C/2 channels) reduced by a 1x1 conv + ReLU to C/4; both concatenated and fused by a
    3x3 conv + ReLU to C/2. (B, C, H, W), (B, C/2, 2H, 2W) -> (B, C/2, 2H, 2W)."""

    def __init__(self, dim: int, depth: int, num_heads: int, groups: int, drop_path_rate: float) -> None:
        super().__init__()
        half, quarter = dim // 2, dim // 4
        self.up = up_conv(dim, half, groups)
        self.blocks = nn.Sequential(*[SwinBlock(half, num_heads, (7, 7), j % 2 == 1, drop_path=r)
                                      for j, r in enumerate(_drop_path_rates(drop_path_rate, [depth])[0])])
        self.reduce = nn.Sequential(nn.Conv2d(half, quarter, 1), nn.ReLU())
        self.reduce_skip = nn.Sequential(nn.Conv2d(half, quarter, 1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(half, half, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.up(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fuse(torch.cat((self.reduce_skip(skip), self.reduce(x)), dim=1))


class ConvDecoderLevel(nn.Module):
    """A convolutional decoder level (reference ``Decoder``): ``up_conv`` to ``out``, concatenated after the
    skip, a 3x3 conv + ReLU to ``out``."""

    def __init__(self, cin: int, skip: int, out: int, groups: int) -> None:
        super().__init__()
        self.up = up_conv(cin, out, groups)
        self.fuse = nn.Sequential(nn.Conv2d(skip + out, out, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat((skip, self.up(x)), dim=1))


#: The coarse encoder's 8x8 patches halved three times: input sides must be multiples of 64.
DS_TRANSUNET_DIVISOR = 64


class DSTransUNet(nn.Module):
    """DS-TransUNet: a fine (4x4 patches) and a coarse (8x8 patches) Swin encoder, a TIF module and a
    convolutional fusion per level, three Swin decoder levels and two convolutional ones on a full-resolution
    convolutional stem; auxiliary heads on the fused bottleneck (1/32) and the 1/4 decoder level.

    Differences from the reference code: the auxiliary heads (1x1 conv + ReLU, as the reference) are
    returned at their own resolution (the reference upsamples them 32x and 4x to the input size) and only
    with deep supervision; inputs are zero-padded to multiples of 64 and the logits cropped (the reference
    takes sides that are multiples of 64 only); Swin patch merging concatenates the 2x2 neighbours in our
    order (same parameters); a map smaller than the 7x7 window (the coarse encoder's last stage on patches
    under 448) attends within itself, unshifted (attention_blocks.SwinBlock), where the reference pads it
    to 7x7 and lets the zero padding take part; no ImageNet weights are loaded (the reference starts both
    encoders from Swin-B 22k and Swin-T); ``norm_groups`` (32 in the reference) is a keyword so small
    widths can be built.

    Example:
        >>> [o.shape[2:] for o in DSTransUNet(3, 1)(torch.zeros(1, 3, 256, 256))]
        [torch.Size([256, 256])]
    """

    def __init__(self, in_channels: int, num_classes: int, embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
                 num_heads: Sequence[int] = (4, 8, 16, 32), coarse_embed_dim: int = 96,
                 coarse_depths: Sequence[int] = (2, 2, 6, 2), coarse_num_heads: Sequence[int] = (3, 6, 12, 24),
                 decoder_heads: Sequence[int] = (8, 4, 2), decoder_depth: int = 2, norm_groups: int = 32,
                 drop_path_rates: Sequence[float] = (0.5, 0.2, 0.2), deep_supervision: bool = True) -> None:
        super().__init__()
        if not len(depths) == len(num_heads) == len(coarse_depths) == len(coarse_num_heads) == 4 or len(decoder_heads) != 3:
            raise ValueError("DS-TransUNet has 4 encoder stages per branch and 3 Swin decoder levels: depths, num_heads, "
                             "coarse_depths, coarse_num_heads need 4 entries and decoder_heads 3")
        if (embed_dim // 4) % norm_groups:
            raise ValueError(f"DS-TransUNet: embed_dim / 4 = {embed_dim // 4} must be a multiple of norm_groups {norm_groups}")
        dim, groups = embed_dim, norm_groups
        self.fine = SwinEncoder(in_channels, dim, depths, num_heads, 4, drop_path_rates[0])
        self.coarse = SwinEncoder(in_channels, coarse_embed_dim, coarse_depths, coarse_num_heads, 8, drop_path_rates[1])
        self.fusions = nn.ModuleList([TransformerInteractiveFusion(dim * 2 ** i, coarse_embed_dim * 2 ** i)
                                      for i in range(4)])
        self.fuse_convs = nn.ModuleList([
            nn.Sequential(*conv_gn_relu((dim + coarse_embed_dim) * 2 ** i, dim * 2 ** i, groups),
                          *conv_gn_relu(dim * 2 ** i, dim * 2 ** i, groups)) for i in range(4)])
        self.swin_decoder = nn.ModuleList([SwinDecoderLevel(dim * 2 ** (3 - i), decoder_depth, h, groups, drop_path_rates[2])
                                           for i, h in enumerate(decoder_heads)])
        self.stem = nn.Conv2d(in_channels, dim // 4, 1)
        self.stem_down = nn.Sequential(nn.MaxPool2d(2), *conv_gn_relu(dim // 4, dim // 2, groups),
                                       *conv_gn_relu(dim // 2, dim // 2, groups))
        self.conv_decoder = nn.ModuleList([ConvDecoderLevel(dim, dim // 2, dim // 2, groups),
                                           ConvDecoderLevel(dim // 2, dim // 4, dim // 4, groups)])
        self.final = nn.Conv2d(dim // 4, num_classes, 1)
        self.aux_decoder = nn.Sequential(nn.Conv2d(dim, num_classes, 1), nn.ReLU())
        self.aux_bottleneck = nn.Sequential(nn.Conv2d(8 * dim, num_classes, 1), nn.ReLU())
        self.deep_supervision = deep_supervision
        self.fine.apply(init_transformer_)
        self.coarse.apply(init_transformer_)

    def _fused_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Both encoders, TIF per level, the coarse map upsampled 2x and fused with the fine one."""
        levels = []
        for fuse, convs, e, r in zip(self.fusions, self.fuse_convs, self.fine(x), self.coarse(x)):
            e, r = fuse(e, r)
            levels.append(convs(torch.cat((e, F.interpolate(r, scale_factor=2.0, mode="nearest")), dim=1)))
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = pad_to_multiple(x, DS_TRANSUNET_DIVISOR)
        e1, e2, e3, e4 = self._fused_levels(x)
        full = self.stem(x)
        half = self.stem_down(full)
        d = e4
        for level, skip in zip(self.swin_decoder, (e3, e2, e1)):
            d = level(d, skip)
        quarter = d
        for level, skip in zip(self.conv_decoder, (half, full)):
            d = level(d, skip)
        logits = self.final(d)
        if not self.deep_supervision:
            return crop_to(logits, size)
        padded = tuple(x.shape[2:])
        return _crop_coarse([logits, self.aux_decoder(quarter), self.aux_bottleneck(e4)], size, padded)


def ds_transunet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The official code's configuration: Swin-B (4x4 patches) and Swin-T (8x8 patches) encoders."""
    return {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32], "coarse_embed_dim": 96,
            "coarse_depths": [2, 2, 6, 2], "coarse_num_heads": [3, 6, 12, 24], "decoder_heads": [8, 4, 2],
            "decoder_depth": 2, "norm_groups": 32, "drop_path_rates": [0.5, 0.2, 0.2]}


@register_model(family="transformer", spatial_dims=(2,), deep_supervision=True, defaults=ds_transunet_defaults,
                paper="Lin et al., DS-TransUNet: Dual Swin Transformer U-Net for Medical Image Segmentation, "
                      "IEEE TIM 2022, arXiv:2106.06716",
                # two blocks per encoder stage: both window kinds (plain and shifted) are exercised
                tiny_kwargs={"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 1, 2, 2], "coarse_embed_dim": 8,
                             "coarse_depths": [2, 2, 2, 2], "coarse_num_heads": [1, 1, 1, 2], "decoder_heads": [2, 2, 1],
                             "decoder_depth": 1, "norm_groups": 4, "drop_path_rates": [0.0, 0.0, 0.0]},
                extra={"tags": ["transformer", "hybrid", "attention", "multiscale", "pretrainable-encoder"],
                       "paper_params": None,
                       "paper_setup": "no printed figure reached; official code (TianBaoGe/DS-TransUNet "
                                      "lib/DS_TransUNet.py UNet(128, n_class)), 3 in / 1 class, Swin-B 4x4 + "
                                      "Swin-T 8x8 encoders: 171,441,329",
                       "divisible_by": DS_TRANSUNET_DIVISOR, "pads_input": True, "profile_patch_2d": [256, 256],
                       "kwargs_note": PLAN_NOTE})
def ds_transunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                 embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2), num_heads: Sequence[int] = (4, 8, 16, 32),
                 coarse_embed_dim: int = 96, coarse_depths: Sequence[int] = (2, 2, 6, 2),
                 coarse_num_heads: Sequence[int] = (3, 6, 12, 24), decoder_heads: Sequence[int] = (8, 4, 2),
                 decoder_depth: int = 2, norm_groups: int = 32, drop_path_rates: Sequence[float] = (0.5, 0.2, 0.2),
                 n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
                 strides: Any = None) -> DSTransUNet:
    """DS-TransUNet (dual-scale Swin encoders, TIF fusion, Swin decoder), the official configuration by
    default, with deep supervision (full resolution, 1/4, 1/32). Plan topology keywords are ignored."""
    del spatial_dims, n_stages, features_per_stage, kernel_sizes, strides
    return DSTransUNet(in_channels, num_classes, embed_dim, tuple(depths), tuple(num_heads), coarse_embed_dim,
                       tuple(coarse_depths), tuple(coarse_num_heads), tuple(decoder_heads), decoder_depth, norm_groups,
                       tuple(drop_path_rates), deep_supervision)
