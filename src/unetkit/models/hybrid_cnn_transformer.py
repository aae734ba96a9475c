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

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.registry import register_model

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
