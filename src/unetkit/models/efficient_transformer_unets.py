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
- ``daeformer``: Azad, Arimond, Aghdam, Kazerouni, Merhof, "DAE-Former: Dual Attention-guided Efficient
  Transformer for Medical Image Segmentation", PRIME (MICCAI workshop) 2023 (arXiv:2212.13504), Fig. 1-3 and
  Table 1 (48.07M parameters, Synapse, 9 classes). Three MiT-like stages (widths 128, 320, 512, two blocks
  each, 1/4 to 1/16) of dual-attention blocks: efficient attention (Shen et al., WACV 2021: softmax over
  tokens for keys, over channels for queries, linear in the token count), Enhanced Mix-FFN, transpose
  (channel) attention with a learned temperature (XCiT), Enhanced Mix-FFN; a decoder whose skips meet the
  upsampled path in a cross-attention block (efficient attention with the skip as keys/queries and the
  decoder features as values, reprojected to the concatenated width) before a linear, two dual-attention
  blocks and patch expanding; final 4x patch expanding and a 1x1 convolution. Reference code:
  mindflow-institue/DAEFormer ``networks/DAEFormer.py`` (read in U-Bench's copy
  ``models/Hybrid/DAEFormer/DAEFormer.py``). As for MISSFormer, the modules the reference builds but never
  calls (the unused layer norms of every Enhanced Mix-FFN and everything but the patch expanding of its
  deepest decoder level) are not built; tests/test_zoo_hybrid.py adds them back to compare with 48.07M.

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
from unetkit.models.swin_unet import PatchExpand

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


class MISSFormerDecoderLevel(nn.Module):
    """Skip concatenation -> linear -> two transformer blocks -> patch expanding (x2, or x4 at the last level)."""

    def __init__(self, cin: int, dim: int, num_heads: int, sr_ratio: int, last: bool) -> None:
        super().__init__()
        self.fuse = nn.Linear(cin, dim)
        self.blocks = nn.Sequential(MixTransformerBlock(dim, num_heads, sr_ratio), MixTransformerBlock(dim, num_heads, sr_ratio))
        self.expand = PatchExpand(dim, dim, 4) if last else PatchExpand(dim, dim // 2, 2)

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
        self.bottom_expand = PatchExpand(dims[3], dims[3] // 2, 2)
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


# ============================================================================================ DAEFormer
def efficient_attention(keys: torch.Tensor, queries: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Efficient attention (Shen et al., WACV 2021, Eq. 2), one head: (B, d, N) inputs, keys softmax over the
    N tokens, queries over their d channels; ``values @ keys^T`` (a d_v x d_k context) times the queries."""
    context = F.softmax(keys, dim=2) @ values.transpose(1, 2)  # (B, d_k, d_v)
    return context.transpose(1, 2) @ F.softmax(queries, dim=1)  # (B, d_v, N)


class EfficientAttention(nn.Module):
    """DAE-Former's spatial efficient attention: 1x1-conv keys, queries, values, one head, 1x1 reprojection.
    Input and output (B, C, H, W)."""

    def __init__(self, dim: int, key_dim: int, value_dim: int) -> None:
        super().__init__()
        self.keys, self.queries = nn.Conv2d(dim, key_dim, 1), nn.Conv2d(dim, key_dim, 1)
        self.values = nn.Conv2d(dim, value_dim, 1)
        self.reprojection = nn.Conv2d(value_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        out = efficient_attention(self.keys(x).flatten(2), self.queries(x).flatten(2), self.values(x).flatten(2))
        return self.reprojection(out.view(b, -1, h, w))


class TransposeAttention(nn.Module):
    """Channel ("transpose") attention (XCiT, Ali et al. 2021): per head, L2-normalized queries and keys over
    the tokens, a d x d attention scaled by a learned temperature; bias-free qkv, linear projection."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1)  # (B, h, d, N)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * self.temperature
        out = (attn.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        return self.proj(out)


class DualTransformerBlock(nn.Module):
    """DAE-Former's dual attention block (Fig. 2): efficient attention, Enhanced Mix-FFN, transpose attention,
    Enhanced Mix-FFN, each pre-norm and residual. Channels-last (B, H, W, C)."""

    def __init__(self, dim: int, key_dim: int, value_dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))
        self.attn = EfficientAttention(dim, key_dim, value_dim)
        self.mlp1 = EnhancedMixFFN(dim, 4 * dim)
        self.channel_attn = TransposeAttention(dim)
        self.mlp2 = EnhancedMixFFN(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.mlp1(self.norm2(x))
        b, h, w, c = x.shape
        x = x + self.channel_attn(self.norm3(x).view(b, h * w, c)).view(b, h, w, c)
        return x + self.mlp2(self.norm4(x))


class SkipCrossAttention(nn.Module):
    """DAE-Former's skip connection cross attention (Fig. 3): one layer norm for both inputs; efficient
    attention with the skip as keys and queries and the decoder features as values, a 1x1 reprojection to
    twice the width and a layer norm, added to the concatenation of both; then an Enhanced Mix-FFN (hidden
    width 4 x ``dim``). Channels-last; returns 2 x ``dim`` channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.reprojection = nn.Conv2d(dim, 2 * dim, 1)
        self.attn_norm = nn.LayerNorm(2 * dim)
        self.norm2 = nn.LayerNorm(2 * dim)
        self.mlp = EnhancedMixFFN(2 * dim, 4 * dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        a, s = self.norm1(x).view(b, h * w, c).transpose(1, 2), self.norm1(skip).view(b, h * w, c).transpose(1, 2)
        attended = efficient_attention(s, s, a).view(b, c, h, w)
        y = torch.cat((x, skip), dim=-1) + self.attn_norm(self.reprojection(attended).permute(0, 2, 3, 1))
        return y + self.mlp(self.norm2(y))


class DAEFormerDecoderLevel(nn.Module):
    """Linear of the upsampled path to the skip's width, skip cross attention, linear, two dual-attention
    blocks, patch expanding (x2, or x4 at the last level)."""

    def __init__(self, cin: int, dim: int, last: bool) -> None:
        super().__init__()
        self.x_linear = nn.Linear(cin, dim)
        self.cross = SkipCrossAttention(dim)
        self.fuse = nn.Linear(2 * dim, dim)
        self.blocks = nn.Sequential(DualTransformerBlock(dim, dim, dim), DualTransformerBlock(dim, dim, dim))
        self.expand = PatchExpand(dim, dim, 4) if last else PatchExpand(dim, dim // 2, 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.expand(self.blocks(self.fuse(self.cross(self.x_linear(x), skip))))


class DAEFormer(nn.Module):
    """Three dual-attention encoder stages (1/4, 1/8, 1/16), cross-attention skips, dual-attention decoder.

    Example:
        >>> DAEFormer(3, 9)(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int] = (128, 320, 512),
                 depths: Sequence[int] = (2, 2, 2)) -> None:
        super().__init__()
        if len(dims) != 3 or len(depths) != 3:
            raise ValueError(f"DAE-Former has 3 encoder stages: dims and depths need 3 entries, got {list(dims)}, "
                             f"{list(depths)}")
        self.divisible_by = 16
        cins = [in_channels, *dims[:-1]]
        self.embeds = nn.ModuleList([OverlapPatchEmbed(cin, d, 7 if i == 0 else 3, 4 if i == 0 else 2)
                                     for i, (cin, d) in enumerate(zip(cins, dims))])
        self.stages = nn.ModuleList([nn.Sequential(*[DualTransformerBlock(d, d, d) for _ in range(n)])
                                     for d, n in zip(dims, depths)])
        self.norms = nn.ModuleList([nn.LayerNorm(d) for d in dims])
        self.bottom_expand = PatchExpand(dims[2], dims[2] // 2, 2)
        self.decoder = nn.ModuleList([DAEFormerDecoderLevel(dims[2] // 2, dims[1], last=False),
                                      DAEFormerDecoderLevel(dims[1] // 2, dims[0], last=True)])
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.deep_supervision = False
        for module in (self.decoder, self.bottom_expand, self.head):
            _init_xavier_(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        levels = []
        for embed, stage, norm in zip(self.embeds, self.stages, self.norms):
            t = norm(stage(embed(x)))
            levels.append(t)
            x = t.permute(0, 3, 1, 2)
        y = self.bottom_expand(levels[2])
        for level, skip in zip(self.decoder, levels[1::-1]):
            y = level(y, skip)
        return crop_to(self.head(y.permute(0, 3, 1, 2)), size)


@register_model(family="transformer", spatial_dims=(2,), deep_supervision=False,
                defaults=lambda d: {"dims": [128, 320, 512], "depths": [2, 2, 2]},
                paper="Azad et al., DAE-Former: Dual Attention-guided Efficient Transformer for Medical Image "
                      "Segmentation, PRIME 2023, arXiv:2212.13504 (Fig. 1-3; Table 1: 48.07M parameters, Synapse)",
                tiny_kwargs={"dims": [16, 24, 32], "depths": [1, 1, 1]},
                extra={"tags": ["transformer", "attention", "multiscale"], "paper_params": 48.07e6,
                       "paper_setup": "2D, 3 in (grey repeated), 9 classes (Synapse), 224x224, widths 128, 320, 512; "
                                      "the figure includes modules the reference builds but never calls",
                       "divisible_by": 16, "pads_input": True, "kwargs_note": PLAN_NOTE})
def daeformer(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              dims: Sequence[int] = (128, 320, 512), depths: Sequence[int] = (2, 2, 2), n_stages: Any = None,
              features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> DAEFormer:
    """DAE-Former: dual-attention (efficient + transpose) encoder and decoder, cross-attention skips (2D)."""
    return DAEFormer(in_channels, num_classes, tuple(dims), tuple(depths))
