"""Hybrid CNN-transformer U-Nets from their papers (family ``hybrid``).

- ``uctransnet``: Wang, Cao, Wang, Zaiane, "UCTransNet: Rethinking the Skip Connections in U-Net from
  a Channel-wise Perspective with Transformer", AAAI 2022 (arXiv:2109.04335), Fig. 2-4 and Table 1
  (66.24M parameters, 32.94 GFLOPs at 224x224, 3 in, 1 class). A plain U-Net (64 base channels,
  4 max-pool levels, two 3x3 conv + batch norm + ReLU per level) whose four skips go through a
  Channel Transformer (CTrans: patch embedding of each skip with patch sizes 16, 8, 4, 2 so that all
  four become the same token grid, 4 layers of channel-wise cross attention with 4 heads, where each
  scale's channels query the concatenation of all 960 channels, reconstruction by nearest upsampling
  and 1x1 conv + BN + ReLU, added to the skip), and whose decoder gates each skip with Channel-wise
  Cross Attention (CCA) before concatenation. Reference code: McGregorWwww/UCTransNet
  ``nets/UCTransNet.py``, ``nets/CTrans.py`` and ``Config.py`` (``get_CTranS_config``: KV 960,
  4 heads, 4 layers, expand ratio 4, embedding dropout 0.1, attention dropout 0.1).
- ``hiformer``: Heidari, Kazerouni, Soltany, Azad, Aghdam, Cohen-Adad, Merhof, "HiFormer: Hierarchical
  Multi-scale Representations Using Transformers for Medical Image Segmentation", WACV 2023
  (arXiv:2207.08518), Fig. 1-2 and Table 1 (HiFormer-B: 25.51M parameters; Synapse, 224x224, 9 classes).
  CNN-transformer encoder: ResNet-50 stem and stages 1-3 (1/4, 1/8, 1/16) and three Swin-T stages (depths
  2, 2, 6, heads 3, 6, 12, window 7) whose tokens are the 1x1-projected CNN maps plus the previous Swin
  level merged; the Double-Level Fusion module (DLF: CrossViT's multi-scale block, Chen et al., ICCV 2021)
  exchanges the class tokens of the 1/4 (96-d) and 1/16 (384-d) token sets by cross attention; the decoder
  sums both levels brought to 1/4 by 3x3 conv + GroupNorm + ReLU (+ bilinear x2) towers, then 1x1 conv to 16,
  ReLU, bilinear x4 and a 3x3 head. HiFormer-B: DLF depth (1, 2, 0), heads (6, 12), MLP ratios (2, 2, 1).
  Reference code: amirhossein-kz/HiFormer ``models/HiFormer.py``, ``models/Encoder.py``, ``models/Decoder.py``
  and U-Bench's ``configs.py`` (``get_hiformer_b_configs``).
- ``da_transunet``: Sun, Zhang, Li, Gan, Wang, Lin, Xia, Pan, Yang, "DA-TransUNet: Integrating Spatial and
  Channel Dual Attention with Transformer U-Net for Medical Image Segmentation", Frontiers in Bioengineering
  and Biotechnology 2024 (arXiv:2310.12570), Fig. 1-3: TransUNet (R50-ViT-B/16, ``transunet.py``) with a
  dual-attention block (DANet, Fu et al., CVPR 2019: position and channel attention branches on a 1/16-width
  projection, summed, 1x1 conv + ReLU) on the patch embedding before the transformer and on the skips.
  Reference code: SUN-1024/DA-TransUnet ``Architecture/DATransUNet.py`` and ``block.py``; as its decoder
  applies them, the blocks sit on the 1/8 and 1/4 skips (its decoder builds three per level but uses only
  these), and the two per-branch outputs each block computes and discards are not built. The paper prints
  no parameter count: the count of this layout is pinned as a snapshot.

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import (PatchMerging, SwinStage, ViTBlock, crop_to, init_transformer_,
                                             pad_to_multiple)
from unetkit.models.registry import register_model
from unetkit.models.transunet import TransUNet, transunet_defaults

PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
             "and ignored")


class ConvBNReLU(nn.Sequential):
    """k x k convolution (3x3, with bias, by default) -> batch norm -> ReLU (the reference U-Nets' unit)."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout), ConvBNReLU(cout, cout))


# ============================================================================================ UCTransNet
class ChannelCrossAttention(nn.Module):
    """CTrans multi-head channel-wise cross attention (UCTransNet Eq. 2-4): the channels of one scale
    (queries, ``C_i`` per head) attend over all ``KV`` channels of the four scales (keys and values);
    the scores are instance-normalized per head before the softmax, the heads averaged, then a linear
    output projection. Every projection is bias-free; a head's query / key / value weights are the
    rows of one linear layer (same parameters as the reference's per-head layers)."""

    def __init__(self, channels: Sequence[int], num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.kv = num_heads, sum(channels)
        self.queries = nn.ModuleList([nn.Linear(c, num_heads * c, bias=False) for c in channels])
        self.key = nn.Linear(self.kv, num_heads * self.kv, bias=False)
        self.value = nn.Linear(self.kv, num_heads * self.kv, bias=False)
        self.outs = nn.ModuleList([nn.Linear(c, c, bias=False) for c in channels])
        self.attn_drop, self.proj_drop = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tokens: Sequence[torch.Tensor], all_tokens: torch.Tensor) -> list[torch.Tensor]:
        b, n, _ = all_tokens.shape
        h = self.num_heads
        k = self.key(all_tokens).view(b, n, h, self.kv).transpose(1, 2)  # (B, h, N, KV)
        v = self.value(all_tokens).view(b, n, h, self.kv).permute(0, 2, 3, 1)  # (B, h, KV, N)
        outs = []
        for x, query, out in zip(tokens, self.queries, self.outs):
            q = query(x).view(b, n, h, -1).permute(0, 2, 3, 1)  # (B, h, C_i, N)
            scores = (q @ k) / math.sqrt(self.kv)  # (B, h, C_i, KV)
            probs = self.attn_drop(torch.softmax(F.instance_norm(scores), dim=-1))
            context = (probs @ v).mean(1).transpose(1, 2)  # heads averaged: (B, N, C_i)
            outs.append(self.proj_drop(out(context)))
        return outs


class CTransLayer(nn.Module):
    """One CTrans layer: pre-norm channel cross attention and a per-scale MLP, both residual."""

    def __init__(self, channels: Sequence[int], num_heads: int, expand_ratio: int, dropout: float) -> None:
        super().__init__()
        self.attn_norms = nn.ModuleList([nn.LayerNorm(c, eps=1e-6) for c in channels])
        self.kv_norm = nn.LayerNorm(sum(channels), eps=1e-6)
        self.attn = ChannelCrossAttention(channels, num_heads, dropout)
        self.ffn_norms = nn.ModuleList([nn.LayerNorm(c, eps=1e-6) for c in channels])
        self.ffns = nn.ModuleList([nn.Sequential(nn.Linear(c, c * expand_ratio), nn.GELU(),
                                                 nn.Linear(c * expand_ratio, c)) for c in channels])

    def forward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        all_tokens = self.kv_norm(torch.cat(tokens, dim=-1))
        attended = self.attn([norm(t) for norm, t in zip(self.attn_norms, tokens)], all_tokens)
        tokens = [t + a for t, a in zip(tokens, attended)]
        return [t + ffn(norm(t)) for t, norm, ffn in zip(tokens, self.ffn_norms, self.ffns)]


class ChannelTransformer(nn.Module):
    """CTrans (UCTransNet Fig. 3): the four skips, embedded by non-overlapping patches of sizes
    ``patch_sizes`` to one common token grid, with a learned position table per scale sized for
    ``img_size``; ``num_layers`` CTrans layers; per scale a final layer norm, nearest upsampling back
    to the skip's size, 1x1 conv + BN + ReLU, added to the skip."""

    def __init__(self, channels: Sequence[int], img_size: Sequence[int], patch_sizes: Sequence[int],
                 num_layers: int, num_heads: int, expand_ratio: int, embed_dropout: float,
                 attn_dropout: float) -> None:
        super().__init__()
        self.grid = tuple(int(s) // (patch_sizes[0]) for s in img_size)
        self.patch_sizes = tuple(patch_sizes)
        self.embeds = nn.ModuleList([nn.Conv2d(c, c, p, p) for c, p in zip(channels, patch_sizes)])
        self.positions = nn.ParameterList([nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], c))
                                           for c in channels])
        self.embed_drop = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList([CTransLayer(channels, num_heads, expand_ratio, attn_dropout)
                                     for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(c, eps=1e-6) for c in channels])
        self.reconstruct = nn.ModuleList([ConvBNReLU(c, c, kernel_size=1) for c in channels])

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        tokens = []
        for skip, embed, pos in zip(skips, self.embeds, self.positions):
            t = embed(skip)
            if tuple(t.shape[2:]) != self.grid:
                raise ValueError(f"UCTransNet was built for img_size giving a {self.grid} token grid, got a "
                                 f"{tuple(t.shape[2:])} grid; rebuild it with img_size set to the input size")
            tokens.append(self.embed_drop(t.flatten(2).transpose(1, 2) + pos))
        for layer in self.layers:
            tokens = layer(tokens)
        out = []
        for skip, t, norm, rec, p in zip(skips, tokens, self.norms, self.reconstruct, self.patch_sizes):
            grid = norm(t).transpose(1, 2).reshape(t.shape[0], -1, *self.grid)
            out.append(skip + rec(F.interpolate(grid, scale_factor=p, mode="nearest")))
        return out


class CCAUp(nn.Module):
    """UCTransNet decoder level (Fig. 4): nearest x2 upsampling; the skip gated by channel-wise cross
    attention (sigmoid of the mean of linear maps of both global average pools), ReLU; concatenation;
    two 3x3 conv + BN + ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.mlp_skip = nn.Linear(cskip, cskip)
        self.mlp_up = nn.Linear(cin, cskip)
        self.convs = double_conv(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        gate = torch.sigmoid((self.mlp_skip(skip.mean((2, 3))) + self.mlp_up(up.mean((2, 3)))) / 2)
        return self.convs(torch.cat((F.relu(skip * gate[:, :, None, None]), up), dim=1))


class UCTransNet(nn.Module):
    """U-Net encoder (5 levels), CTrans over the four skips, CCA decoder, 1x1 head.

    Example:
        >>> UCTransNet(3, 1, img_size=(224, 224))(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int] = (224, 224),
                 base_channels: int = 64, patch_sizes: Sequence[int] = (16, 8, 4, 2), num_layers: int = 4,
                 num_heads: int = 4, expand_ratio: int = 4, embed_dropout: float = 0.1,
                 attn_dropout: float = 0.1) -> None:
        super().__init__()
        c = base_channels
        widths = [c, 2 * c, 4 * c, 8 * c]
        self.divisible_by = 16
        self.inc = ConvBNReLU(in_channels, c)
        self.downs = nn.ModuleList([double_conv(a, b) for a, b in zip(widths, widths[1:] + [8 * c])])
        self.mtc = ChannelTransformer(widths, img_size, patch_sizes, num_layers, num_heads, expand_ratio,
                                      embed_dropout, attn_dropout)
        ups_in = [8 * c, 4 * c, 2 * c, c]  # channels arriving from below, deepest first
        ups_out = [4 * c, 2 * c, c, c]
        self.ups = nn.ModuleList([CCAUp(i, s, o) for i, s, o in zip(ups_in, widths[::-1], ups_out)])
        self.outc = nn.Conv2d(c, num_classes, 1)
        self.deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, skip in zip(self.ups, self.mtc(skips)[::-1]):
            y = up(y, skip)
        return crop_to(self.outc(y), size)


def uctransnet_defaults(spatial_dims: int) -> dict[str, Any]:
    """The paper's configuration (reference ``get_CTranS_config``) at its 224x224 input."""
    return {"img_size": [224, 224], "base_channels": 64, "patch_sizes": [16, 8, 4, 2], "num_layers": 4,
            "num_heads": 4, "expand_ratio": 4, "embed_dropout": 0.1, "attn_dropout": 0.1}


@register_model(family="hybrid", spatial_dims=(2,), deep_supervision=False, defaults=uctransnet_defaults,
                paper="Wang et al., UCTransNet: Rethinking the Skip Connections in U-Net from a Channel-wise "
                      "Perspective with Transformer, AAAI 2022, arXiv:2109.04335 (Fig. 2-4; Table 1: 66.24M "
                      "parameters, 32.94 GFLOPs at 224x224)",
                tiny_kwargs={"deep_supervision": False, "base_channels": 8, "num_layers": 1, "num_heads": 2,
                             "expand_ratio": 2},
                extra={"tags": ["hybrid", "transformer", "attention", "cnn"], "paper_params": 66.24e6,
                       "paper_setup": "2D, 3 in, 1 class, 224x224, base 64 channels, CTrans 4 layers x 4 heads",
                       "paper_gflops": 32.94, "paper_patch": [224, 224], "divisible_by": 16, "pads_input": True,
                       "patch_kwarg": "img_size", "kwargs_note": PLAN_NOTE})
def uctransnet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               img_size: Sequence[int] = (224, 224), base_channels: int = 64,
               patch_sizes: Sequence[int] = (16, 8, 4, 2), num_layers: int = 4, num_heads: int = 4,
               expand_ratio: int = 4, embed_dropout: float = 0.1, attn_dropout: float = 0.1,
               n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
               strides: Any = None) -> UCTransNet:
    """UCTransNet: U-Net whose skips pass a channel-wise transformer and CCA gates (2D, no deep supervision).

    ``img_size`` sizes the four position tables (the trainer passes the training patch, rounded up to
    a multiple of 16); an input of another size (after padding) is refused.
    """
    return UCTransNet(in_channels, num_classes, tuple(img_size), base_channels, tuple(patch_sizes), num_layers,
                      num_heads, expand_ratio, embed_dropout, attn_dropout)


# ============================================================================================ HiFormer
class ResNetBottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: 1x1, 3x3 (carrying the stride), 1x1 (x4 width), batch norms,
    bias-free convolutions, a 1x1 strided projection shortcut where the shape changes."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(ConvBNReLU(cin, width, 1, bias=False), nn.Conv2d(width, width, 3, stride, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Conv2d(width, cout, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def resnet_stage(cin: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[ResNetBottleneck(cin if i == 0 else 4 * width, width, stride if i == 0 else 1)
                           for i in range(blocks)])


class CrossAttentionBlock(nn.Module):
    """CrossViT cross attention (Chen et al., ICCV 2021, Eq. 7-8): the class token (first token) queries all
    tokens of the other branch; returns only the updated class token ``cls + CA(LN(x))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.wq, self.wk, self.wv = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        y = self.norm(x)
        q = self.wq(y[:, :1]).view(b, 1, h, c // h).transpose(1, 2)
        k = self.wk(y).view(b, n, h, c // h).transpose(1, 2)
        v = self.wv(y).view(b, n, h, c // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c)
        return x[:, :1] + self.proj(out)


def _projection(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(cin), nn.GELU(), nn.Linear(cin, cout))


class DoubleLevelFusion(nn.Module):
    """One DLF (CrossViT multi-scale) block over two token sets (class token first): ViT blocks per branch;
    each branch's class token, projected to the other branch's width, cross-attends the other branch's
    patch tokens, and is projected back."""

    def __init__(self, dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int],
                 mlp_ratios: Sequence[float]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(*[ViTBlock(d, h, int(d * r)) for _ in range(n)])
                                       for d, n, h, r in zip(dims, depths, num_heads, mlp_ratios)])
        other = [1, 0]
        self.projs = nn.ModuleList([_projection(dims[i], dims[other[i]]) for i in range(2)])
        self.fusion = nn.ModuleList([CrossAttentionBlock(dims[other[i]], num_heads[other[i]]) for i in range(2)])
        self.revert = nn.ModuleList([_projection(dims[other[i]], dims[i]) for i in range(2)])

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, j in ((0, 1), (1, 0)):
            cls = self.fusion[i](torch.cat((self.projs[i](xs[i][:, :1]), xs[j][:, 1:]), dim=1))
            out.append(torch.cat((self.revert[i](cls), xs[i][:, 1:]), dim=1))
        return out


class HiFormerEncoder(nn.Module):
    """ResNet-50 (stem, stages 1-3) and Swin stages interleaved (HiFormer Fig. 2), then the DLF blocks with
    one learned position table per level (class token included), sized for ``img_size``."""

    def __init__(self, in_channels: int, img_size: Sequence[int], cnn_width: int, cnn_blocks: Sequence[int],
                 swin_dim: int, swin_depths: Sequence[int], swin_heads: Sequence[int], window_size: int,
                 dlf_depths: Sequence[int], dlf_heads: Sequence[int], dlf_mlp_ratios: Sequence[float]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, cnn_width, 7, 2, 3, bias=False), nn.BatchNorm2d(cnn_width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        widths = [cnn_width, 2 * cnn_width, 4 * cnn_width]  # ResNet-50: 64, 128, 256 (x4 out)
        self.cnn = nn.ModuleList([resnet_stage(cnn_width if i == 0 else 4 * widths[i - 1], w, n, 1 if i == 0 else 2)
                                  for i, (w, n) in enumerate(zip(widths, cnn_blocks))])
        dims = [swin_dim * 2 ** i for i in range(3)]
        self.to_tokens = nn.ModuleList([nn.Conv2d(4 * w, d, 1) for w, d in zip(widths, dims)])
        self.swin = nn.ModuleList([SwinStage(d, n, h, (window_size, window_size)) for d, n, h in zip(dims, swin_depths, swin_heads)])
        self.merges = nn.ModuleList([PatchMerging(d, 2) for d in dims[:2]])
        self.level_norms = nn.ModuleList([nn.LayerNorm(dims[0]), nn.LayerNorm(dims[2])])
        self.grids = [tuple(s // 4 for s in img_size), tuple(s // 16 for s in img_size)]
        self.dlf_dims = (dims[0], dims[2])
        self.pos_embed = nn.ParameterList([nn.Parameter(torch.zeros(1, 1 + g[0] * g[1], d))
                                           for g, d in zip(self.grids, self.dlf_dims)])
        self.dlf = nn.ModuleList([DoubleLevelFusion(self.dlf_dims, dlf_depths, dlf_heads, dlf_mlp_ratios)])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in self.dlf_dims])

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The two token sets (B, 1 + H*W, C) at 1/4 and 1/16, each led by its average-pooled class token."""
        fm = self.cnn[0](self.stem(x))
        t = self.to_tokens[0](fm).permute(0, 2, 3, 1)
        level1 = t + self.swin[0](t)
        cls1 = self.level_norms[0](level1).mean((1, 2))
        t = self.swin[1](self.merges[0](level1))
        fm = self.cnn[1](fm)
        t = self.swin[2](self.merges[1](self.to_tokens[1](fm).permute(0, 2, 3, 1) + t))
        level3 = self.to_tokens[2](self.cnn[2](fm)).permute(0, 2, 3, 1) + t
        cls3 = self.level_norms[1](level3).mean((1, 2))
        return [torch.cat((cls[:, None], level.flatten(1, 2)), dim=1) for cls, level in ((cls1, level1), (cls3, level3))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = self.pyramid(x)
        for t, grid in zip(xs, self.grids):
            if t.shape[1] != 1 + grid[0] * grid[1]:
                raise ValueError(f"HiFormer was built for img_size giving {grid} tokens at its level, got "
                                 f"{t.shape[1] - 1} tokens; rebuild it with img_size set to the input size")
        xs = [t + pos for t, pos in zip(xs, self.pos_embed)]
        for block in self.dlf:
            xs = block(xs)
        return [norm(t) for norm, t in zip(self.norms, xs)]


def conv_gn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(32, cout), nn.ReLU()]


class HiFormer(nn.Module):
    """HiFormer encoder, decoder summing both levels at 1/4, 1x1 conv to 16 + ReLU, bilinear x4, 3x3 head.

    Example:
        >>> HiFormer(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int] = (224, 224), cnn_width: int = 64,
                 cnn_blocks: Sequence[int] = (3, 4, 6), swin_dim: int = 96, swin_depths: Sequence[int] = (2, 2, 6),
                 swin_heads: Sequence[int] = (3, 6, 12), window_size: int = 7, dlf_depths: Sequence[int] = (1, 2),
                 dlf_heads: Sequence[int] = (6, 12), dlf_mlp_ratios: Sequence[float] = (2.0, 2.0),
                 decoder_channels: int = 128) -> None:
        super().__init__()
        self.divisible_by = 16
        self.img_size = tuple(img_size)
        self.encoder = HiFormerEncoder(in_channels, img_size, cnn_width, cnn_blocks, swin_dim, swin_depths, swin_heads, window_size,
                                       dlf_depths, dlf_heads, dlf_mlp_ratios)
        small, large = self.encoder.dlf_dims
        up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.up_large = nn.Sequential(*conv_gn_relu(large, decoder_channels), up,
                                      *conv_gn_relu(decoder_channels, decoder_channels), up)
        self.up_small = nn.Sequential(*conv_gn_relu(small, decoder_channels))
        self.pred = nn.Sequential(nn.Conv2d(decoder_channels, 16, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(16, num_classes, 3, padding=1)
        self.deep_supervision = False
        self.apply(init_transformer_)
        for pos in self.encoder.pos_embed:
            nn.init.trunc_normal_(pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        small, large = self.encoder(x)
        b = x.shape[0]
        small = small[:, 1:].transpose(1, 2).reshape(b, -1, x.shape[2] // 4, x.shape[3] // 4)
        large = large[:, 1:].transpose(1, 2).reshape(b, -1, x.shape[2] // 16, x.shape[3] // 16)
        y = self.pred(self.up_small(small) + self.up_large(large))
        y = F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)
        return crop_to(self.head(y), size)


def hiformer_defaults(spatial_dims: int) -> dict[str, Any]:
    """HiFormer-B (the paper's main configuration) at 224x224."""
    return {"img_size": [224, 224], "cnn_width": 64, "cnn_blocks": [3, 4, 6], "swin_dim": 96, "swin_depths": [2, 2, 6],
            "swin_heads": [3, 6, 12], "window_size": 7, "dlf_depths": [1, 2], "dlf_heads": [6, 12],
            "dlf_mlp_ratios": [2.0, 2.0], "decoder_channels": 128}


@register_model(family="hybrid", spatial_dims=(2,), deep_supervision=False, defaults=hiformer_defaults,
                paper="Heidari et al., HiFormer: Hierarchical Multi-scale Representations Using Transformers for "
                      "Medical Image Segmentation, WACV 2023, arXiv:2207.08518 (Fig. 1-2; Table 1: HiFormer-B 25.51M "
                      "parameters)",
                tiny_kwargs={"deep_supervision": False, "cnn_width": 16, "cnn_blocks": [1, 1, 1], "swin_dim": 32, "swin_depths": [2, 1, 1],
                             "swin_heads": [1, 2, 2], "window_size": 4, "dlf_depths": [1, 1], "dlf_heads": [1, 2],
                             "dlf_mlp_ratios": [1.0, 1.0], "decoder_channels": 32},
                extra={"tags": ["hybrid", "transformer", "cnn", "multiscale", "pretrainable-encoder"],
                       "paper_params": 25.51e6,
                       "paper_setup": "HiFormer-B, 2D, 3 in, 9 classes (Synapse), 224x224: ResNet-50 + Swin-T, DLF "
                                      "depth (1, 2, 0), heads (6, 12), MLP ratios (2, 2)",
                       "divisible_by": 16, "pads_input": True, "patch_kwarg": "img_size", "output_stride": 4,
                       "kwargs_note": PLAN_NOTE + "; random initialization (the paper starts from ImageNet ResNet-50 "
                                                  "and Swin-T weights)"})
def hiformer(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             img_size: Sequence[int] = (224, 224), cnn_width: int = 64, cnn_blocks: Sequence[int] = (3, 4, 6),
             swin_dim: int = 96,
             swin_depths: Sequence[int] = (2, 2, 6), swin_heads: Sequence[int] = (3, 6, 12), window_size: int = 7,
             dlf_depths: Sequence[int] = (1, 2), dlf_heads: Sequence[int] = (6, 12),
             dlf_mlp_ratios: Sequence[float] = (2.0, 2.0), decoder_channels: int = 128, n_stages: Any = None,
             features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> HiFormer:
    """HiFormer-B: ResNet-50 + Swin encoder, double-level fusion of 1/4 and 1/16 tokens (2D, no deep supervision).

    ``img_size`` sizes the two position tables (the trainer passes the training patch rounded up to 16).
    """
    return HiFormer(in_channels, num_classes, tuple(img_size), cnn_width, tuple(cnn_blocks), swin_dim, tuple(swin_depths),
                    tuple(swin_heads), window_size, tuple(dlf_depths), tuple(dlf_heads), tuple(dlf_mlp_ratios),
                    decoder_channels)


# ============================================================================================ DA-TransUNet
class PositionAttention(nn.Module):
    """DANet position attention: 1x1 query/key (C/8) and value (C) projections, softmax over positions,
    ``gamma * out + x`` with gamma starting at 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query, self.key = nn.Conv2d(channels, channels // 8, 1), nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (m(x).flatten(2).transpose(1, 2) for m in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
        return self.gamma * out.transpose(1, 2).view_as(x) + x


class ChannelSelfAttention(nn.Module):
    """DANet channel attention: channel affinities ``X X^T``, softmax of (row max - affinity),
    ``gamma * out + x`` with gamma starting at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        energy = flat @ flat.transpose(1, 2)
        attn = torch.softmax(energy.amax(-1, keepdim=True) - energy, dim=-1)
        return self.gamma * (attn @ flat).view_as(x) + x


def _conv_bn_relu_da(cin: int, cout: int) -> nn.Sequential:
    """DA-TransUNet's 3x3 conv (no bias) + batch norm (momentum 0.95, eps 1e-3, as its ``norm``) + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.95),
                         nn.ReLU())


class DualAttentionBlock(nn.Module):
    """DANet head as DA-TransUNet uses it (its ``DANetHead``): two branches, each 3x3 conv to C/16, position
    (resp. channel) attention, 3x3 conv; their sum through dropout (0.05), 1x1 conv (with bias) and ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = channels // 16
        self.position = nn.Sequential(_conv_bn_relu_da(channels, inner), PositionAttention(inner),
                                      _conv_bn_relu_da(inner, inner))
        self.channel = nn.Sequential(_conv_bn_relu_da(channels, inner), ChannelSelfAttention(),
                                     _conv_bn_relu_da(inner, inner))
        self.out = nn.Sequential(nn.Dropout2d(0.05), nn.Conv2d(inner, channels, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.position(x) + self.channel(x))


class DATransUNet(TransUNet):
    """TransUNet with dual-attention blocks on the patch embedding and on the 1/8 and 1/4 skips.

    Example:
        >>> DATransUNet(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, **kwargs: Any) -> None:
        super().__init__(in_channels, num_classes, **kwargs)
        width = self.root[0].out_channels
        self.embed_attention = DualAttentionBlock(self.patch_embed.out_channels)
        self.skip_attention = nn.ModuleList([DualAttentionBlock(8 * width), DualAttentionBlock(4 * width), nn.Identity()])


@register_model(family="hybrid", spatial_dims=(2,), deep_supervision=False, defaults=transunet_defaults,
                paper="Sun et al., DA-TransUNet: Integrating Spatial and Channel Dual Attention with Transformer U-Net "
                      "for Medical Image Segmentation, Front. Bioeng. Biotechnol. 2024, arXiv:2310.12570 (Fig. 1-3; "
                      "no parameter count printed)",
                tiny_kwargs={"deep_supervision": False, "units": [1, 1, 1], "width": 32, "hidden_size": 128,
                             "mlp_dim": 128, "num_layers": 1, "num_heads": 2, "decoder_channels": [16, 16, 8, 8],
                             "dropout": 0.0},  # widths of at least 128 keep the C/16/8 attention projections non-empty
                extra={"tags": ["hybrid", "transformer", "attention", "cnn", "pretrainable-encoder"], "paper_params": None,
                       "paper_setup": "the paper prints no count; ours for the reference layout (R50-ViT-B/16, 3 in, "
                                      "9 classes, 224x224): 106,438,039, pinned as a snapshot",
                       "divisible_by": 16, "pads_input": True, "patch_kwarg": "img_size",
                       "kwargs_note": PLAN_NOTE + "; the keywords are TransUNet's"})
def da_transunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 img_size: Sequence[int] = (224, 224), units: Sequence[int] = (3, 4, 9), width: int = 64,
                 hidden_size: int = 768, mlp_dim: int = 3072, num_layers: int = 12, num_heads: int = 12,
                 decoder_channels: Sequence[int] = (256, 128, 64, 16), dropout: float = 0.1, n_stages: Any = None,
                 features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> DATransUNet:
    """DA-TransUNet: TransUNet with DANet dual attention on the embedding and skips (2D, no deep supervision)."""
    return DATransUNet(in_channels, num_classes, img_size=tuple(img_size), units=tuple(units), width=width,
                       hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers, num_heads=num_heads,
                       decoder_channels=tuple(decoder_channels), dropout=dropout)
