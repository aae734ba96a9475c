"""U-shaped efficient transformers from their papers (family ``transformer``).

- ``missformer``: Huang, Deng, Li, Yuan, "MISSFormer: An Effective Medical Image Segmentation Transformer",
  arXiv:2109.07162 (2021; IEEE TMI 2022), Fig. 2-4 and Table 1 (42.46M parameters, Synapse, 224x224,
  9 classes). A MiT (SegFormer) encoder with widths 64, 128, 320, 512, two blocks per stage, heads 1, 2, 5, 8,
  spatial-reduction ratios 8, 4, 2, 1, whose feed-forward network is the "Enhanced Mix-FFN" (linear, 3x3
  depth-wise convolution added to its own input, layer norm, GELU, linear); an Enhanced Transformer Context
  Bridge of four layers that cuts every level's pixels into 64-channel tokens, lets all 6,076 tokens attend
  to one spatially reduced set (each level reduced to the 1/32 grid by a strided convolution), and applies a
  per-level Enhanced Mix-FFN; a decoder of patch expanding (linear to 2C, rearranged to 2x resolution and C/2
  channels, layer norm), skip concatenation + linear and two transformer blocks per level, a final 4x patch
  expanding and a 1x1 convolution. Reference code: ZhifangDeng/MISSFormer ``networks/MISSFormer.py`` and
  ``networks/segformer.py``. Differences: the reference builds three modules it never calls (two extra layer
  norms in every Enhanced Mix-FFN and the concatenation linear and both transformer blocks of its deepest
  decoder level, which only patch-expands); they are not built here (7.01M of the 42.46M: ours has 35.45M;
  tests/test_zoo_hybrid.py adds them back and gets the paper's figure), and the token counts follow the input instead of 224x224.

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.hybrid_cnn_transformer import PLAN_NOTE
from unetkit.models.pvt_decoders import OverlapPatchEmbed, SpatialReductionAttention
from unetkit.models.registry import register_model

MISSFORMER_DIVISOR = 32


# ============================================================================================ MISSFormer
class EnhancedMixFFN(nn.Module):
    """MISSFormer's Enhanced Mix-FFN (Eq. 4-5): ``fc2(GELU(LN(DWConv(fc1(x)) + fc1(x))))``, channels-last."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h + self.dwconv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(F.gelu(self.norm(h)))


class MixTransformerBlock(nn.Module):
    """Pre-norm block: ``x + SRA(LN(x))``, ``x + EnhancedMixFFN(LN(x))`` (MLP ratio 4). Channels-last."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = EnhancedMixFFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ContextBridgeLayer(nn.Module):
    """One Enhanced Transformer Context Bridge layer (Fig. 3). Every level's pixels are cut into tokens of
    ``base`` channels and concatenated; all tokens query keys/values from the levels reduced to the coarsest
    grid (strided convolutions, the coarsest level as it is, as the reference lays the reduced maps out:
    channel-major), then each level's tokens go back to pixels for its own Enhanced Mix-FFN."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.base = dims[0]
        n = len(dims)
        self.norm1 = nn.LayerNorm(self.base)
        self.q = nn.Linear(self.base, self.base)
        self.kv = nn.Linear(self.base, 2 * self.base)
        self.proj = nn.Linear(self.base, self.base)
        self.reduce = nn.ModuleList([nn.Conv2d(d, d, 2 ** (n - 1 - i), 2 ** (n - 1 - i)) for i, d in enumerate(dims[:-1])])
        self.reduce_norm = nn.LayerNorm(self.base)
        self.norm2 = nn.LayerNorm(self.base)
        self.ffns = nn.ModuleList([EnhancedMixFFN(d, 4 * d) for d in dims])

    def _split(self, x: torch.Tensor, shapes: Sequence[tuple[int, int, int]]) -> list[torch.Tensor]:
        """Tokens -> per-level channels-last maps (B, H, W, C)."""
        parts = torch.split(x, [h * w * c // self.base for h, w, c in shapes], dim=1)
        return [p.reshape(x.shape[0], h, w, c) for p, (h, w, c) in zip(parts, shapes)]

    def forward(self, x: torch.Tensor, shapes: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        b, n, c = x.shape
        y = self.norm1(x)
        levels = self._split(y, shapes)
        reduced = [conv(m.permute(0, 3, 1, 2)).reshape(b, c, -1).transpose(1, 2) for conv, m in zip(self.reduce, levels)]
        kv_src = self.reduce_norm(torch.cat([*reduced, levels[-1].reshape(b, -1, c)], dim=1))
        k, v = self.kv(kv_src).view(b, -1, 2, c).unbind(2)
        attended = F.scaled_dot_product_attention(self.q(y)[:, None], k[:, None], v[:, None])[:, 0]
        x = x + self.proj(attended)
        mixed = [ffn(m).reshape(b, -1, c) for ffn, m in zip(self.ffns, self._split(self.norm2(x), shapes))]
        return x + torch.cat(mixed, dim=1)


class PatchExpanding(nn.Module):
    """Patch expanding (Swin-Unet Fig. 3, MISSFormer's layout): linear ``C -> s*s*C_out`` without bias,
    rearranged to s x the resolution, layer norm. Channels-last in and out."""

    def __init__(self, dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, self.out_dim))


class MISSFormerDecoderLevel(nn.Module):
    """Skip concatenation -> linear -> two transformer blocks -> patch expanding (x2, or x4 at the last level)."""

    def __init__(self, cin: int, dim: int, num_heads: int, sr_ratio: int, last: bool) -> None:
        super().__init__()
        self.fuse = nn.Linear(cin, dim)
        self.blocks = nn.Sequential(MixTransformerBlock(dim, num_heads, sr_ratio), MixTransformerBlock(dim, num_heads, sr_ratio))
        self.expand = PatchExpanding(dim, dim, 4) if last else PatchExpanding(dim, dim // 2, 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.expand(self.blocks(self.fuse(torch.cat((x, skip), dim=-1))))


class MISSFormer(nn.Module):
    """MiT encoder (Enhanced Mix-FFN), context bridge over the four levels, transformer decoder, 1x1 head.

    Example:
        >>> MISSFormer(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (2, 2, 2, 2), num_heads: Sequence[int] = (1, 2, 5, 8),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), bridge_layers: int = 4) -> None:
        super().__init__()
        if not len(dims) == len(depths) == len(num_heads) == len(sr_ratios) == 4 or any(d % dims[0] for d in dims):
            raise ValueError("MISSFormer has 4 stages whose widths are multiples of the first: dims, depths, num_heads "
                             f"and sr_ratios need 4 entries, got {list(dims)}, {list(depths)}, {list(num_heads)}, "
                             f"{list(sr_ratios)}")
        cins = [in_channels, *dims[:-1]]
        self.embeds = nn.ModuleList([OverlapPatchEmbed(cin, d, 7 if i == 0 else 3, 4 if i == 0 else 2)
                                     for i, (cin, d) in enumerate(zip(cins, dims))])
        self.stages = nn.ModuleList([nn.Sequential(*[MixTransformerBlock(d, h, r) for _ in range(n)])
                                     for d, n, h, r in zip(dims, depths, num_heads, sr_ratios)])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in dims])
        self.bridge = nn.ModuleList([ContextBridgeLayer(dims) for _ in range(bridge_layers)])
        self.bottom_expand = PatchExpanding(dims[3], dims[3] // 2, 2)
        fused = [dims[i + 1] // 2 + dims[i] for i in range(3)]  # expanded deeper level + skip
        self.decoder = nn.ModuleList([MISSFormerDecoderLevel(fused[i], dims[i], num_heads[i], sr_ratios[i], last=i == 0)
                                      for i in (2, 1, 0)])
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.deep_supervision = False
        self.decoder.apply(_init_xavier_)
        _init_xavier_(self.bottom_expand.expand)
        _init_xavier_(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, MISSFORMER_DIVISOR)
        levels = []
        for embed, stage, norm in zip(self.embeds, self.stages, self.norms):
            t = norm(stage(embed(x)))
            levels.append(t)
            x = t.permute(0, 3, 1, 2)
        b = x.shape[0]
        shapes = [tuple(t.shape[1:]) for t in levels]
        tokens = torch.cat([t.reshape(b, -1, shapes[0][2]) for t in levels], dim=1)
        for layer in self.bridge:
            tokens = layer(tokens, shapes)
        skips = self.bridge[0]._split(tokens, shapes)
        y = self.bottom_expand(skips[3])
        for level, skip in zip(self.decoder, skips[2::-1]):
            y = level(y, skip)
        return crop_to(self.head(y.permute(0, 3, 1, 2)), size)


def _init_xavier_(module: nn.Module) -> None:
    """The reference decoder's initialization: Xavier-uniform linears and convolutions, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def missformer_defaults(spatial_dims: int) -> dict[str, Any]:
    return {"dims": [64, 128, 320, 512], "depths": [2, 2, 2, 2], "num_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1],
            "bridge_layers": 4}


@register_model(family="transformer", spatial_dims=(2,), deep_supervision=False, defaults=missformer_defaults,
                paper="Huang et al., MISSFormer: An Effective Medical Image Segmentation Transformer, arXiv:2109.07162 "
                      "(2021), IEEE TMI 2022 (Fig. 2-4; Table 1: 42.46M parameters, Synapse 224x224)",
                tiny_kwargs={"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 2],
                             "sr_ratios": [4, 2, 2, 1], "bridge_layers": 1},
                extra={"tags": ["transformer", "attention", "multiscale"], "paper_params": 42.46e6,
                       "paper_setup": "2D, 3 in (grey repeated), 9 classes (Synapse), 224x224, MiT widths 64..512; "
                                      "the figure includes 7.01M of modules the reference builds but never calls (ours: 35.45M)",
                       "divisible_by": MISSFORMER_DIVISOR, "pads_input": True, "kwargs_note": PLAN_NOTE})
def missformer(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               dims: Sequence[int] = (64, 128, 320, 512), depths: Sequence[int] = (2, 2, 2, 2),
               num_heads: Sequence[int] = (1, 2, 5, 8), sr_ratios: Sequence[int] = (8, 4, 2, 1), bridge_layers: int = 4,
               n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
               strides: Any = None) -> MISSFormer:
    """MISSFormer: MiT encoder with Enhanced Mix-FFN, context bridge, transformer decoder (2D, no deep supervision)."""
    return MISSFormer(in_channels, num_classes, tuple(dims), tuple(depths), tuple(num_heads), tuple(sr_ratios),
                      bridge_layers)
