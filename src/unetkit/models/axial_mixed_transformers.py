"""Axial and mixed-attention transformer U-Nets for 2D images (family ``transformer``).

- ``medt``: Valanarasu, Oza, Hacihaliloglu, Patel, "Medical Transformer: Gated Axial-Attention for Medical
  Image Segmentation", MICCAI 2021 (arXiv:2102.10662), Fig. 2. Position-sensitive axial attention (height,
  then width; Wang et al., Axial-DeepLab 2020) with relative position tables for queries, keys and values,
  whose three positional terms are scaled by learnable gates (G_Q, G_K, G_V1 on the positional value term,
  G_V2 on the content term). Local-Global (LoGo) training: a shallow global branch (conv stem, one gated
  axial block at 1/2, two at 1/4, a two-level conv decoder back to full resolution) on the whole image, and
  a deep local branch (conv stem, 1 + 2 + 4 + 1 axial blocks without positional terms down to 1/32 of the
  patch, five-level decoder) on each of the 4 x 4 patches of the image; their full-resolution maps are
  added, passed through a 3x3 conv and a 1x1 head. Official code: jeya-maria-jose/Medical-Transformer
  ``lib/models/axialnet.py`` (``MedT`` = ``medt_net(AxialBlock_dynamic, AxialBlock_wopos, [1, 2, 4, 1],
  s=0.125)``), trained there at 128x128 RGB, 2 classes. What we chose where code and paper differ:
  the official local branch uses axial blocks without positional terms (``AxialBlock_wopos``), and so do we;
  the gates start at 0.1 (positional terms) and 1.0 (content) as there, and are learnable (the paper; the
  official script keeps them frozen for its first 10 epochs, a schedule unetkit's trainer does not have);
  the 16 patches go through the local branch as one batch (the reference loops over them, so in training its
  batch norms see one patch at a time); the unused 1x1 conv that each official block without positional terms builds and
  never calls is not built (tests/test_zoo_axial_mixed.py adds it back to compare with the official count).
  The relative position tables span the axis they attend along, so the network is built for one input size
  (``img_size``, a multiple of 64: four patches per side, each halved four times); other inputs are
  zero-padded to it and the logits cropped.
- ``mtunet``: Wang, Xie, Lin, Iwamoto, Han, Chen, Tong, "Mixed Transformer U-Net for Medical Image
  Segmentation", ICASSP 2022 (arXiv:2111.04734), Fig. 1-3. A convolutional stem (three residual double-conv
  levels of 64, 128, 256 channels, max pooling) to 1/8, a learned position table, two encoder stages of two
  Mixed Transformer Modules (MTM) each at 256 and 512 channels (2x2 strided conv-BN-ReLU between them), two
  MTMs at 1024 channels at 1/32, two decoder stages (transposed conv, skip concatenation, two MTMs at 512),
  and a convolutional decoder (transposed convs, skips of the stem, residual double convs) to a 1x1 head.
  An MTM is ``x + LGG-SA(LN(x))`` then ``x + EA(LN(x))``. Local-Global Gaussian-weighted self-attention
  (LGG-SA): multi-head self-attention inside 4x4 windows; a learned softmax pooling of each window to one
  token; on that coarse grid, single-head axial attention along rows and columns whose logits are
  penalized by a learned multiple of the squared distance (the Gaussian weighting); the coarse result
  upsampled x4 (bilinear, corners aligned) and fused with the window attention by a 1x1 conv. External
  attention (EA, Guo et al. 2021): queries widened 4x, split into 32 heads, two linear maps shared by the
  heads through 64 memory units with double normalization, a projection back. Official code:
  Dootmaan/MT-UNet ``MTUNet.py`` (224x224, grey images repeated to 3 channels). Differences: the official
  code handles square inputs only; ours takes H x W grids (the token grid of ``img_size``, a multiple of 32).
  Grids that are no multiple of the window are padded as there: zeros, except the bottom-right corner,
  which repeats the last rows and columns. Two parameters of each LGG-SA are not built, as they cannot
  change the output: the output projection of the axial attention, which the official code builds and never
  calls, and the Gaussian's offset, a constant added to all logits of a softmax (the test adds both back).

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to
from unetkit.models.hybrid_cnn_transformer import PLAN_NOTE
from unetkit.models.registry import register_model
from unetkit.models.unet_classic import ConvNormReLU

MEDT_DIVISOR = 64  # 4 patches per side, each halved 4 times in the local branch
MTUNET_DIVISOR = 32


def _pad_to_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom and right to ``size``; refuse a larger input."""
    h, w = x.shape[2:]
    if h > size[0] or w > size[1]:
        raise ValueError(f"input {h}x{w} is larger than the {size[0]}x{size[1]} this network was built for "
                         "(img_size); build it for the training patch")
    return F.pad(x, (0, size[1] - w, 0, size[0] - h)) if (h, w) != tuple(size) else x


def _check_img_size(img_size: Sequence[int], divisor: int, model: str) -> tuple[int, int]:
    size = tuple(int(s) for s in img_size)
    if len(size) != 2 or any(s <= 0 or s % divisor for s in size):
        raise ValueError(f"{model} needs img_size as two sides that are multiples of {divisor}, got {list(img_size)}")
    return size  # type: ignore[return-value]


# ================================================================================================ MedT
class GatedAxialAttention(nn.Module):
    """Multi-head attention along one axis of a (B, C, H, W) map (MedT Eq. 2-3, Fig. 2c).

    Queries, keys and values come from one bias-free 1x1 projection + batch norm (queries and keys get a
    quarter of the channels each, values half). With ``positional``, relative tables of ``span`` entries
    per side add ``q . r_q``, ``k . r_k`` to the logits and ``sum(attn * r_v)`` to the output, scaled by
    the gates (``gated``: learnable, starting at 0.1 and 1.0 for the content value term). Logit terms and
    output terms are batch-normalized separately before being summed, as in Axial-DeepLab.
    """

    def __init__(self, channels: int, groups: int, axis: int, span: int, positional: bool = True,
                 gated: bool = True, stride: int = 1) -> None:
        super().__init__()
        if channels % groups or (channels // groups) % 2:
            raise ValueError(f"axial attention needs channels ({channels}) divisible by 2 x groups ({groups})")
        self.groups, self.axis, self.span, self.positional = groups, axis, span, positional
        self.group_channels = channels // groups
        self.qkv = nn.Conv1d(channels, 2 * channels, 1, bias=False)
        self.qkv_norm = nn.BatchNorm1d(2 * channels)
        terms = 3 if positional else 1
        self.logit_norm = nn.BatchNorm2d(terms * groups)
        self.out_norm = nn.BatchNorm1d((2 if positional else 1) * channels)
        if positional:
            self.relative = nn.Parameter(torch.empty(2 * self.group_channels, 2 * span - 1))
            idx = torch.arange(span)
            self.register_buffer("relative_index", (idx[:, None] - idx[None, :] + span - 1).reshape(-1),
                                 persistent=False)
            nn.init.normal_(self.relative, 0.0, math.sqrt(1.0 / self.group_channels))
        if positional and gated:  # G_Q, G_K, G_V1 (positional value term), G_V2 (content value term)
            self.gates = nn.Parameter(torch.tensor([0.1, 0.1, 0.1, 1.0]))
        else:
            self.register_buffer("gates", torch.ones(4), persistent=False)
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()
        nn.init.normal_(self.qkv.weight, 0.0, math.sqrt(1.0 / channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        # fold the other axis into the batch: (B * other, C, length)
        lines = x.permute(0, 3, 1, 2) if self.axis == 2 else x.permute(0, 2, 1, 3)
        n, length = lines.shape[0] * lines.shape[1], lines.shape[3]
        if self.positional and length != self.span:
            raise ValueError(f"axial attention built for {self.span} positions got {length}")
        qkv = self.qkv_norm(self.qkv(lines.reshape(n, c, length))).reshape(n, self.groups, 2 * self.group_channels, length)
        half = self.group_channels // 2
        q, k, v = torch.split(qkv, [half, half, self.group_channels], dim=2)
        logits = [torch.einsum("ngci,ngcj->ngij", q, k)]
        if self.positional:
            table = self.relative[:, self.relative_index].view(2 * self.group_channels, length, length)
            rq, rk, rv = torch.split(table, [half, half, self.group_channels], dim=0)
            logits.append(self.gates[0] * torch.einsum("ngci,cij->ngij", q, rq))
            logits.append(self.gates[1] * torch.einsum("ngcj,cji->ngij", k, rk))
        stacked = self.logit_norm(torch.cat(logits, dim=1)).view(n, len(logits), self.groups, length, length)
        attn = F.softmax(stacked.sum(dim=1), dim=3)
        outs = [self.gates[3] * torch.einsum("ngij,ngcj->ngci", attn, v)]
        if self.positional:
            outs.append(self.gates[2] * torch.einsum("ngij,cij->ngci", attn, rv))
        # each channel's terms sit side by side, as the reference's batch norm sees them
        out = torch.stack(outs, dim=3).reshape(n, len(outs) * c, length)
        out = self.out_norm(out).view(n, c, len(outs), length).sum(dim=2)
        out = out.view(b, -1, c, length)
        out = out.permute(0, 2, 3, 1) if self.axis == 2 else out.permute(0, 2, 1, 3)
        return self.pool(out)


class AxialBlock(nn.Module):
    """Gated axial transformer layer (Fig. 2b), a ResNet bottleneck whose 3x3 conv is height- then
    width-axial attention: 1x1 conv-BN-ReLU, attention, ReLU, 1x1 conv-BN (x2 channels), residual, ReLU."""

    def __init__(self, cin: int, planes: int, groups: int, spans: tuple[int, int] | None, stride: int = 1) -> None:
        super().__init__()
        positional = spans is not None
        h_span, w_span = spans if positional else (0, 0)
        self.reduce = nn.Sequential(nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True))
        self.height = GatedAxialAttention(planes, groups, 2, h_span, positional)
        self.width = GatedAxialAttention(planes, groups, 3, w_span, positional, stride=stride)
        self.expand = nn.Sequential(nn.Conv2d(planes, 2 * planes, 1, bias=False), nn.BatchNorm2d(2 * planes))
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, 2 * planes, 1, stride, bias=False), nn.BatchNorm2d(2 * planes))
                         if stride != 1 or cin != 2 * planes else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.width(self.height(self.reduce(x))))
        return F.relu(self.expand(out) + self.shortcut(x))


def _axial_stage(cin: int, planes: int, blocks: int, groups: int, size: tuple[int, int] | None,
                 stride: int) -> nn.Sequential:
    """``blocks`` axial blocks; the first attends at ``size`` then pools by ``stride``, the rest attend at
    the pooled size. ``size`` None: blocks without positional terms."""
    spans = size
    layers = [AxialBlock(cin, planes, groups, spans, stride)]
    if size is not None:
        spans = (size[0] // stride, size[1] // stride)
    layers += [AxialBlock(2 * planes, planes, groups, spans) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _medt_stem(in_channels: int, width: int, stem_width: int) -> nn.Sequential:
    """7x7 stride-2 conv, 3x3 conv to ``stem_width``, 3x3 conv back to ``width``; each BN + ReLU, no biases."""
    return nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         ConvNormReLU(2, width, stem_width, 3, bias=False), ConvNormReLU(2, stem_width, width, 3, bias=False))


class UpAddDecoder(nn.Module):
    """MedT's decoder: per level a 3x3 conv (bias), bilinear x2, ReLU, plus the next skip. ``first_stride``
    2 makes the first conv strided (the local branch goes one level below its deepest features)."""

    def __init__(self, widths: Sequence[int], first_stride: int = 1) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(cin, cout, 3, first_stride if i == 0 else 1, 1)
                                    for i, (cin, cout) in enumerate(itertools.pairwise(widths))])

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor], out_size: Sequence[int]) -> torch.Tensor:
        """``skips``: one per conv but the last, deepest first; the last level goes to ``out_size``."""
        for conv, skip in zip(self.convs, [*skips, None]):
            size = skip.shape[2:] if skip is not None else out_size
            x = F.relu(F.interpolate(conv(x), size=tuple(size), mode="bilinear", align_corners=False))
            if skip is not None:
                x = x + skip
        return x


class MedT(nn.Module):
    """Gated axial global branch + patch-wise local branch (LoGo), fused at full resolution.

    Example:
        >>> MedT(3, 2, img_size=(128, 128))(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 2, 128, 128])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int] = (128, 128),
                 base_width: int = 8, stem_width: int = 128, groups: int = 8,
                 blocks: Sequence[int] = (1, 2, 4, 1), patches_per_side: int = 4) -> None:
        super().__init__()
        self.img_size = _check_img_size(img_size, 16 * patches_per_side, "MedT")
        self.patches_per_side = patches_per_side
        p = [2 * base_width * 2 ** i for i in range(4)]  # attention widths (planes); blocks output 2x
        half = (self.img_size[0] // 2, self.img_size[1] // 2)
        self.global_stem = _medt_stem(in_channels, base_width, stem_width)
        self.global_stages = nn.ModuleList([_axial_stage(base_width, p[0], blocks[0], groups, half, 1),
                                            _axial_stage(2 * p[0], p[1], blocks[1], groups, half, 2)])
        self.global_decoder = UpAddDecoder([2 * p[1], p[1], p[0]])
        self.local_stem = _medt_stem(in_channels, base_width, stem_width)
        cins = [base_width, *[2 * w for w in p[:3]]]
        self.local_stages = nn.ModuleList([_axial_stage(cins[i], p[i], blocks[i], groups, None, 1 if i == 0 else 2)
                                           for i in range(4)])
        self.local_decoder = UpAddDecoder([2 * p[3], 2 * p[3], p[3], p[2], p[1], p[0]], first_stride=2)
        self.fuse = nn.Conv2d(p[0], p[0], 3, padding=1)
        self.head = nn.Conv2d(p[0], num_classes, 1)
        self.deep_supervision = False

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.global_stages[0](self.global_stem(x))
        x2 = self.global_stages[1](x1)
        return self.global_decoder(x2, [x1], x.shape[2:])

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        """The local branch on every patch at once: patches folded into the batch, then tiled back."""
        b, c, h, w = x.shape
        n = self.patches_per_side
        ph, pw = h // n, w // n
        patches = x.view(b, c, n, ph, n, pw).permute(0, 2, 4, 1, 3, 5).reshape(b * n * n, c, ph, pw)
        feats = [self.local_stem(patches)]
        for stage in self.local_stages:
            feats.append(stage(feats[-1]))
        y = self.local_decoder(feats[-1], feats[-1:0:-1], (ph, pw))
        return y.view(b, n, n, -1, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        x = _pad_to_size(x, self.img_size)
        y = F.relu(self.fuse(self._global(x) + self._local(x)))
        return crop_to(self.head(y), size)


def medt_defaults(spatial_dims: int) -> dict[str, Any]:
    return {"img_size": [128, 128], "base_width": 8, "stem_width": 128, "groups": 8, "blocks": [1, 2, 4, 1]}


@register_model(family="transformer", spatial_dims=(2,), deep_supervision=False, defaults=medt_defaults,
                paper="Valanarasu et al., Medical Transformer: Gated Axial-Attention for Medical Image Segmentation, "
                      "MICCAI 2021 (arXiv:2102.10662), Fig. 2",
                tiny_kwargs={"base_width": 4, "stem_width": 8, "groups": 2, "blocks": [1, 1, 1, 1]},
                extra={"tags": ["transformer", "attention", "residual", "multiscale", "lightweight"],
                       "paper_params": None,
                       "paper_setup": "official code (jeya-maria-jose/Medical-Transformer lib/models/axialnet.py MedT), "
                                      "3 in / 2 classes, 128x128 (its README's setting), counted layer by layer: 1,419,938, "
                                      "of which 35,536 are the unused 1x1 convs of its blocks without positional terms "
                                      "(ours: 1,384,402); the paper's text could not be read through our tools",
                       "divisible_by": MEDT_DIVISOR, "pads_input": True, "patch_kwarg": "img_size",
                       "kwargs_note": PLAN_NOTE})
def medt(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
         img_size: Sequence[int] = (128, 128), base_width: int = 8, stem_width: int = 128, groups: int = 8,
         blocks: Sequence[int] = (1, 2, 4, 1), n_stages: Any = None, features_per_stage: Any = None,
         kernel_sizes: Any = None, strides: Any = None) -> MedT:
    """MedT: gated axial-attention global branch + local branch on 4x4 patches (2D, built for ``img_size``)."""
    return MedT(in_channels, num_classes, tuple(img_size), base_width, stem_width, groups, tuple(blocks))


# ============================================================================================== MT-UNet
class ResidualDoubleConv(nn.Module):
    """MT-UNet's convolutional level: 3x3 conv-BN-ReLU, 3x3 conv-BN, then ``h + BN(conv1x1(h))`` and ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(ConvNormReLU(2, cin, cout, 3, bias=False), ConvNormReLU(2, cout, cout, 3, bias=False, act=False))
        self.mix = nn.Sequential(nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)
        return F.relu(h + self.mix(h))


def _pad_grid_like_reference(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad a channels-last map (B, H, W, C) to multiples of ``multiple`` as the MT-UNet code does: zeros,
    except the bottom-right corner, which repeats the map's last rows and columns."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    padded = F.pad(x, (0, 0, 0, pw, 0, ph))
    if ph and pw:
        padded[:, h:, w:] = x[:, h - ph:, w - pw:]
    return padded


class LocalGlobalGaussianAttention(nn.Module):
    """LGG-SA (MT-UNet Sec. 2.1, Fig. 2) on a channels-last map (B, H, W, C).

    Local: multi-head self-attention inside ``window`` x ``window`` windows. Global: each window pooled to one
    token by learned softmax weights over its positions, then single-head axial attention along the rows and
    columns of the window grid, each logit lowered by ``shift`` x (squared distance between query and key),
    the row and column results summed. The global map is upsampled to the window positions (bilinear,
    corners aligned) and fused with the local one by a 1x1 conv.
    """

    def __init__(self, dim: int, num_heads: int, window: int = 4) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.local_qkv = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])
        self.local_out = nn.Linear(dim, dim)
        self.pool_logits = nn.Linear(dim, window * window)
        self.global_qkv = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])
        self.shift = nn.Parameter(torch.randn(1).abs())  # the Gaussian's width, learned
        self.fuse = nn.Conv2d(2 * dim, dim, 1)

    def _local(self, windows: torch.Tensor) -> torch.Tensor:
        """Multi-head attention over the tokens of each window: (..., N, C) -> (..., N, C)."""
        *lead, n, c = windows.shape
        q, k, v = (proj(windows).view(-1, n, self.num_heads, c // self.num_heads).transpose(1, 2) for proj in self.local_qkv)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(*lead, n, c)
        return self.local_out(out)

    def _gaussian_axial(self, x: torch.Tensor) -> torch.Tensor:
        """Row plus column attention on the window grid (B, h, w, C), distance-penalized logits."""
        q, k, v = (proj(x) for proj in self.global_qkv)
        h, w = x.shape[1:3]
        rows = torch.arange(w, device=x.device, dtype=x.dtype)
        cols = torch.arange(h, device=x.device, dtype=x.dtype)
        row_logits = torch.einsum("bhic,bhjc->bhij", q, k) - self.shift * (rows[None, :] - rows[:, None]) ** 2
        col_logits = torch.einsum("biwc,bjwc->bwij", q, k) - self.shift * (cols[None, :] - cols[:, None]) ** 2
        along_rows = torch.einsum("bhij,bhjc->bhic", row_logits.softmax(-1), v)
        along_cols = torch.einsum("bwij,bjwc->biwc", col_logits.softmax(-1), v)
        return along_rows + along_cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        x = _pad_grid_like_reference(x, s)
        nh, nw = x.shape[1] // s, x.shape[2] // s
        windows = x.view(b, nh, s, nw, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh, nw, s * s, c)
        windows = self._local(windows)
        local = windows.view(b, nh, nw, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * s, nw * s, c)
        weights = self.pool_logits(windows.mean(dim=3)).softmax(-1)  # (B, nh, nw, s*s)
        pooled = (windows * weights[..., None]).sum(dim=3)
        coarse = self._gaussian_axial(pooled).permute(0, 3, 1, 2)
        coarse = F.interpolate(coarse, scale_factor=s, mode="bilinear", align_corners=True)
        fused = self.fuse(torch.cat((coarse, local.permute(0, 3, 1, 2)), dim=1))
        return fused[:, :, :h, :w].permute(0, 2, 3, 1)


class ExternalAttention(nn.Module):
    """Multi-head external attention (MT-UNet Sec. 2.2; Guo et al. 2021): queries widened ``expansion``
    times and split into ``expansion`` x ``num_heads`` heads; two linear maps shared by all heads go through
    ``memory`` units, normalized by a softmax over the tokens and then over the units; a projection back."""

    def __init__(self, dim: int, num_heads: int, expansion: int = 4, memory: int = 64) -> None:
        super().__init__()
        self.heads = expansion * num_heads
        head_dim = expansion * dim // self.heads
        self.widen = nn.Linear(dim, expansion * dim)
        self.to_memory = nn.Linear(head_dim, memory)
        self.from_memory = nn.Linear(memory, head_dim)
        self.proj = nn.Linear(expansion * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.widen(x).view(b, n, self.heads, -1).transpose(1, 2)
        attn = self.to_memory(q).softmax(dim=2)
        attn = attn / (1e-9 + attn.sum(dim=3, keepdim=True))
        return self.proj(self.from_memory(attn).transpose(1, 2).reshape(b, n, -1))


class MixedTransformerModule(nn.Module):
    """MTM on a channels-last map (B, H, W, C): ``x + LGG-SA(LN(x))``, then ``x + EA(LN(x))`` (no MLP)."""

    def __init__(self, dim: int, num_heads: int, window: int = 4, memory: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.lgg_sa = LocalGlobalGaussianAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.external = ExternalAttention(dim, num_heads, memory=memory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.lgg_sa(self.norm1(x))
        b, h, w, c = x.shape
        return x + self.external(self.norm2(x).view(b, h * w, c)).view(b, h, w, c)


def _mtms(dim: int, heads: int, window: int, memory: int, count: int = 2) -> nn.Sequential:
    return nn.Sequential(*[MixedTransformerModule(dim, heads, window, memory) for _ in range(count)])


def _down_conv(cin: int, cout: int) -> nn.Sequential:
    """2x2 stride-2 conv (no bias) + BN + ReLU between transformer stages."""
    return nn.Sequential(nn.Conv2d(cin, cout, 2, 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _cf(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


class MTUNet(nn.Module):
    """Convolutional stem to 1/8, MTM encoder to 1/32, MTM decoder back to 1/8, convolutional decoder.

    Example:
        >>> MTUNet(3, 9, img_size=(224, 224))(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 9, 224, 224])
    """

    def __init__(self, in_channels: int, num_classes: int, img_size: Sequence[int] = (224, 224),
                 stem_widths: Sequence[int] = (64, 128, 256), num_heads: int = 8, window: int = 4,
                 memory: int = 64) -> None:
        super().__init__()
        self.img_size = _check_img_size(img_size, MTUNET_DIVISOR, "MT-UNet")
        c1, c2, d = stem_widths
        if d % num_heads:
            raise ValueError(f"MT-UNet's token width ({d}) must be a multiple of num_heads ({num_heads})")
        self.stem = nn.ModuleList([ResidualDoubleConv(in_channels, c1), ResidualDoubleConv(c1, c2), ResidualDoubleConv(c2, d)])
        self.to_tokens = ConvNormReLU(2, d, d, 1, bias=False)
        grid = (self.img_size[0] // 8, self.img_size[1] // 8)
        self.position = nn.Parameter(torch.zeros(1, grid[0], grid[1], d))
        self.encoder = nn.ModuleList([_mtms(d, num_heads, window, memory), _mtms(2 * d, num_heads, window, memory)])
        self.downs = nn.ModuleList([_down_conv(d, 2 * d), _down_conv(2 * d, 4 * d)])
        self.bottleneck = _mtms(4 * d, num_heads, window, memory)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(4 * d, 2 * d, 2, 2), nn.ConvTranspose2d(2 * d, d, 2, 2)])
        self.skip_fuse = nn.Conv2d(4 * d, 2 * d, 1)  # only the deeper decoder stage narrows its concatenation
        self.decoder = nn.ModuleList([_mtms(2 * d, num_heads, window, memory), _mtms(2 * d, num_heads, window, memory)])
        self.conv_ups = nn.ModuleList([nn.ConvTranspose2d(2 * d, d, 2, 2), nn.ConvTranspose2d(d, c2, 2, 2),
                                       nn.ConvTranspose2d(c2, c1, 2, 2)])
        self.conv_decoder = nn.ModuleList([ResidualDoubleConv(2 * d, d), ResidualDoubleConv(2 * c2, c2),
                                           ResidualDoubleConv(2 * c1, c1)])
        self.head = nn.Conv2d(c1, num_classes, 1)
        self.deep_supervision = False

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        features = []
        for i, level in enumerate(self.stem):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        tokens = _cl(self.to_tokens(F.max_pool2d(x, 2))) + self.position
        skips = []
        for stage, down in zip(self.encoder, self.downs):
            tokens = stage(tokens)
            skips.append(tokens)
            tokens = _cl(down(_cf(tokens)))
        return self.bottleneck(tokens), skips, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        tokens, skips, features = self._encode(_pad_to_size(x, self.img_size))
        for i, (up, stage, skip) in enumerate(zip(self.ups, self.decoder, reversed(skips))):
            y = torch.cat((up(_cf(tokens)), _cf(skip)), dim=1)
            tokens = stage(_cl(self.skip_fuse(y) if i == 0 else y))
        y = _cf(tokens)
        for up, level, feature in zip(self.conv_ups, self.conv_decoder, reversed(features)):
            y = level(torch.cat((feature, up(y)), dim=1))
        return crop_to(self.head(y), size)


def mtunet_defaults(spatial_dims: int) -> dict[str, Any]:
    return {"img_size": [224, 224], "stem_widths": [64, 128, 256], "num_heads": 8, "window": 4, "memory": 64}


@register_model(family="transformer", spatial_dims=(2,), deep_supervision=False, defaults=mtunet_defaults,
                paper="Wang et al., Mixed Transformer U-Net for Medical Image Segmentation, ICASSP 2022 "
                      "(arXiv:2111.04734), Fig. 1-3",
                tiny_kwargs={"stem_widths": [8, 16, 16], "num_heads": 2, "memory": 8},
                extra={"tags": ["transformer", "hybrid", "attention", "residual"],
                       "paper_params": None,
                       "paper_setup": "official code (Dootmaan/MT-UNet MTUNet.py), 3 in / 9 classes (Synapse), 224x224, "
                                      "counted layer by layer: 79,075,389, of which 3,806,730 are the axial attention's "
                                      "unused output projections and the Gaussian offsets (ours: 75,268,659); the "
                                      "paper's table could not be read through our tools",
                       "divisible_by": MTUNET_DIVISOR, "pads_input": True, "patch_kwarg": "img_size",
                       "kwargs_note": PLAN_NOTE})
def mtunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           img_size: Sequence[int] = (224, 224), stem_widths: Sequence[int] = (64, 128, 256), num_heads: int = 8,
           window: int = 4, memory: int = 64, n_stages: Any = None, features_per_stage: Any = None,
           kernel_sizes: Any = None, strides: Any = None) -> MTUNet:
    """MT-UNet: convolutional stem and decoder around Mixed Transformer Modules (2D, built for ``img_size``)."""
    return MTUNet(in_channels, num_classes, tuple(img_size), tuple(stem_widths), num_heads, window, memory)
