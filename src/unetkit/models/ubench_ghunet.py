"""GH-UNet for 2D images (family ``ubench_cnn``, issue 17; split from ubench_cnn_d.py, whose
helpers it shares).

``gh_unet``: Wang, Li, Gao, Zhuo, Liu, Ma, Zhao, Fu, "GH-UNet: group-wise hybrid convolution-VIT for
  robust medical image segmentation", npj Digital Medicine 8 (2025). A MobileViT-S branch (Hugging
  Face's ``MobileViTModel`` as the code configures it: unfolding patch 16, 12 heads, dropout 0.1,
  LayerNorm eps 1e-6, expanded 640-wide output) beside a conv encoder of gated multi-kernel blocks
  (three branches of a parallel gate (PGAM) and a GSConv of kernel 1, 5, 7, concatenated, gated,
  dilated 3x3 conv, 1x1 shortcut; widths 32, 64, 96) with Haar-wavelet downsampling (HWD), then
  Lo2 stages (feature-incentive 3x3 embedding, a token mixer of per-channel rolled MLPs beside a
  depthwise-separable conv, LayerNorm) at 1/8 (128) and 1/16 (640). Each MobileViT stage, DySample
  upsampled x2, is added to the conv stage of its size, and a group dynamic gate (GDG) of the sum is
  the skip. Decoder: DySample up, Lo2 stage at 1/8, multi-kernel blocks to 64, 32, 16; three GDG
  side outputs (1/8, 1/4, 1/2, DySample to full size, 1x1 heads) are added to the 1x1 head.
  Official code: github.com/xiachashuanghua/GH-UNet (U-Bench ``models/CNN/GH_UNet``: ``GH_UNet.py``,
  ``module/dp.py``; HWD and DySample from their authors' code). No figure could be read from the
  paper (the abstract gives only "38% of H2Former's parameters"); ours is the official code's
  count at 3 in, 1 class, summed by hand: 12,922,773 in the layers its forward uses, 12,925,173 as
  ``model.parameters()`` sums it (six unused BatchNorms and three unused LayerNorms, 2,400).

Differences, GH-UNet: the reference adds each MobileViT map to its conv stage twice through an
alias (``t = out; out += v; t += v``): we add ``2 * v`` and say so. The official returns its side
maps too, all at full size; we return the summed logits only (no coarser levels to supervise).
Both branches take ``in_channels`` (the official MobileViT takes 3). HWD's Haar bands come from
``neunet.haar_dwt`` (orthonormal, as pytorch_wavelets' "haar"); their order and signs may differ
from pytorch_wavelets', which the learned 1x1 conv after them absorbs. The input is zero-padded to a
multiple of 32 and the logits cropped. Unused norms of the reference are left out (see above).

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import SelfAttention, crop_to, pad_to_multiple
from unetkit.models.lightweight import _egeunet_init
from unetkit.models.neunet import haar_dwt
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_backbone import conv_bn_relu
from unetkit.models.ubench_cnn_d import _PLAN_NOTE, _resize
from unetkit.models.ubench_cnn_lightweight import _make_divisible


# ============================================================================================ GH-UNet
def _conv_bn_silu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                  act: bool = True) -> nn.Sequential:
    """MobileViT's conv layer: conv (no bias), BN, SiLU (optional)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class MobileInvertedResidual(nn.Module):
    """MobileNetV2 block as MobileViT builds it: 1x1 expansion (x4, rounded to 8), depthwise 3x3
    (stride), linear 1x1; residual at stride 1 and equal widths; SiLU."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float = 4.0) -> None:
        super().__init__()
        hidden = _make_divisible(round(cin * expand), 8)
        self.block = nn.Sequential(_conv_bn_silu(cin, hidden, 1), _conv_bn_silu(hidden, hidden, 3, stride, hidden),
                                   _conv_bn_silu(hidden, cout, 1, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileViTTransformerLayer(nn.Module):
    """Pre-norm transformer layer of MobileViT: ``x + drop(MSA(LN(x)))``, ``x + drop(FFN(LN(x)))``,
    FFN = linear to 2x, SiLU, linear; attention dropout on the probabilities."""

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float, eps: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads, dropout=attn_dropout)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.fc2(F.silu(self.fc1(self.norm2(x)))))


class MobileViTBlock(nn.Module):
    """MobileViT block (Mehta & Rastegari, ICLR 2022): optional stride-2 inverted residual; 3x3 conv,
    1x1 conv to ``hidden`` (no norm); the map unfolded into ``patch`` x ``patch`` patches (bilinearly
    resized to a multiple of the patch first), each pixel position attending across the patches
    through ``depth`` transformer layers, LayerNorm, folded back; 1x1 conv to the width, fused with
    the block's input by a 3x3 conv on their concatenation."""

    def __init__(self, cin: int, cout: int, hidden: int, depth: int, patch: int, heads: int, dropout: float,
                 attn_dropout: float, eps: float) -> None:
        super().__init__()
        self.down = MobileInvertedResidual(cin, cout, 2)
        self.local = nn.Sequential(_conv_bn_silu(cout, cout, 3), nn.Conv2d(cout, hidden, 1, bias=False))
        self.layers = nn.Sequential(*(MobileViTTransformerLayer(hidden, heads, dropout, attn_dropout, eps)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.project = _conv_bn_silu(hidden, cout, 1)
        self.fuse = _conv_bn_silu(2 * cout, cout, 3)
        self.patch = patch

    def _global(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        p = self.patch
        size = (-(-h // p) * p, -(-w // p) * p)
        grid = _resize(y, size)
        nh, nw = size[0] // p, size[1] // p
        tokens = grid.reshape(b, c, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b * p * p, nh * nw, c)
        tokens = self.norm(self.layers(tokens))
        grid = tokens.reshape(b, p, p, nh, nw, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, *size)
        return _resize(grid, (h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.fuse(torch.cat([x, self.project(self._global(self.local(x)))], dim=1))


class MobileViTBackbone(nn.Module):
    """MobileViT as Hugging Face's ``MobileViTModel`` builds it (expanded output): stem 3x3 stride 2,
    two MobileNetV2 stages (1 block at 1/2, 3 blocks to 1/4), three MobileViT blocks to 1/8, 1/16,
    1/32 (``depths`` transformer layers of widths ``hidden``), 1x1 expansion of the last map. Returns
    the five stage outputs and the expanded map. ``widths``: stem, the five stages, the expansion."""

    def __init__(self, in_channels: int, widths: Sequence[int], hidden: Sequence[int], depths: Sequence[int],
                 patch: int, heads: int, dropout: float, attn_dropout: float, eps: float) -> None:
        super().__init__()
        n = widths
        self.stem = _conv_bn_silu(in_channels, n[0], 3, 2)
        self.stages = nn.ModuleList([
            MobileInvertedResidual(n[0], n[1], 1),
            nn.Sequential(*(MobileInvertedResidual(n[1] if i == 0 else n[2], n[2], 2 if i == 0 else 1)
                            for i in range(3))),
            *(MobileViTBlock(n[i], n[i + 1], hid, d, patch, heads, dropout, attn_dropout, eps)
              for i, hid, d in zip((2, 3, 4), hidden, depths))])
        self.expand = _conv_bn_silu(n[5], n[6], 1)
        for m in self.modules():  # Hugging Face's initialization
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        states = []
        for stage in self.stages:
            x = stage(x)
            states.append(x)
        return states, self.expand(x)


class DynamicUpsample(nn.Module):
    """DySample (Liu et al., ICCV 2023), "lp" style without dynamic scope: a 1x1 conv predicts, per
    group of channels, ``scale**2`` sub-pixel offsets (x 0.25, added to the regular sub-pixel
    positions); the map is resampled there bilinearly (border padding) at ``scale`` times its size."""

    def __init__(self, channels: int, scale: int = 2, groups: int = 4) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"DySample needs channels divisible by its {groups} groups, got {channels}")
        self.scale, self.groups = scale, groups
        self.offset = nn.Conv2d(channels, 2 * groups * scale * scale, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        steps = (torch.arange(scale) - (scale - 1) / 2) / scale
        grid = torch.stack(torch.meshgrid(steps, steps, indexing="ij")).transpose(1, 2)  # (2, s, s)
        self.register_buffer("init_pos", grid.repeat(1, groups, 1).reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        offset = (self.offset(x) * 0.25 + self.init_pos).view(b, 2, -1, h, w)
        ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype) + 0.5,
                                torch.arange(w, device=x.device, dtype=x.dtype) + 0.5, indexing="ij")
        base = torch.stack([xs, ys])[None, :, None]  # (1, 2, 1, H, W), x first as grid_sample wants
        norm = torch.tensor([w, h], device=x.device, dtype=x.dtype).view(1, 2, 1, 1, 1)
        coords = F.pixel_shuffle((2 * (base + offset) / norm - 1).reshape(b, -1, h, w), s)
        coords = coords.view(b, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).flatten(0, 1)
        out = F.grid_sample(x.reshape(b * g, c // g, h, w), coords.to(x.dtype), mode="bilinear",
                            align_corners=False, padding_mode="border")
        return out.view(b, c, s * h, s * w)


class HaarDownsample(nn.Module):
    """HWD (Xu et al., Pattern Recognition 2023): one level of the Haar transform (the four bands
    stacked on the channels, half the size), then 1x1 conv, BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.mix = conv_bn_relu(4 * cin, cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(haar_dwt(x, (0, 1)))


class GhostShuffleConv(nn.Module):
    """GSConv (Li et al. 2022): k x k conv-BN-SiLU to half the width, a depthwise 5x5 conv-BN-SiLU of
    that, both concatenated and their channels interleaved (even ones first, then odd ones)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.dense = _conv_bn_silu(cin, cout // 2, kernel)
        self.cheap = _conv_bn_silu(cout // 2, cout // 2, 5, groups=cout // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dense(x)
        both = torch.cat([y, self.cheap(y)], dim=1)
        return torch.cat([both[:, 0::2], both[:, 1::2]], dim=1)


class ParallelGate(nn.Module):
    """PGAM: ``x * sigmoid(1x1 conv(global mean)) * sigmoid(1x1 conv to one channel)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channel = nn.Conv2d(channels, channels, 1)
        self.spatial = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.channel(x.mean(dim=(2, 3), keepdim=True))) * torch.sigmoid(self.spatial(x))


class MultiKernelGatedBlock(nn.Module):
    """GH-UNet's conv block: three branches PGAM -> GSConv (kernel 1, 5, 7) -> BN -> ReLU6 to ``mid``,
    concatenated, PGAM, 3x3 conv of dilation 2 to ``cout``; plus a 1x1 conv-BN-ReLU6 shortcut. The
    encoder's blocks have ``mid = cout``, the decoder's ``mid = cin``."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(ParallelGate(cin), GhostShuffleConv(cin, mid, k),
                                                    nn.BatchNorm2d(mid), nn.ReLU6()) for k in (1, 5, 7))
        self.gate = ParallelGate(3 * mid)
        self.mix = nn.Conv2d(3 * mid, cout, 3, padding=2, dilation=2)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU6())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.mix(self.gate(y)) + self.shortcut(x)


class GroupDynamicGate(nn.Module):
    """GDG (GroupParallelGatedBlock): a grouped 3x3 conv (no bias), then one sigmoid gate per group
    from the global mean (1x1 conv to C / ``reduction``, SiLU, 1x1 conv to the groups)."""

    def __init__(self, channels: int, groups: int, reduction: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=groups, bias=False)
        self.gate = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False), nn.SiLU(),
                                  nn.Conv2d(channels // reduction, groups, 1, bias=False), nn.Sigmoid())
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        gates = self.gate(y.mean(dim=(2, 3), keepdim=True))  # (B, groups, 1, 1)
        return (y.unflatten(1, (self.groups, -1)) * gates[:, :, None]).flatten(1, 2)


def roll_each_channel(x: torch.Tensor, dim: int, sign: int) -> torch.Tensor:
    """Channel c of ``x`` (B, C, H, W) rolled by ``sign * c`` along spatial ``dim`` (2 or 3), as
    ``torch.roll`` per channel: ``out[..., i, ...] = x[..., (i - sign * c) mod n, ...]``."""
    c, n = x.shape[1], x.shape[dim]
    index = (torch.arange(n, device=x.device)[None, :] - sign * torch.arange(c, device=x.device)[:, None]) % n
    shape = [1, c, 1, 1]
    shape[dim] = n
    return torch.gather(x, dim, index.view(shape).expand_as(x))


class OrthogonalRollMLP(nn.Module):
    """GH-UNet's Lo2 (token mixer of its transformer stages): two rolled-MLP paths (channel c rolled by
    c along H, linear + GELU, then along W, linear; and by -c along W, linear + GELU, then along H,
    linear), each plus the input, concatenated, LayerNorm, linear, plus the input; beside it a
    depthwise-separable conv path (residual, ReLU, BN); both concatenated, linear. Tokens (B, N, C)."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(dim, dim) for _ in range(4))
        self.merge, self.out = nn.Linear(2 * dim, dim), nn.Linear(2 * dim, dim)
        self.norm = nn.LayerNorm(2 * dim)
        self.depthwise = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.pointwise = nn.Conv2d(dim, dim, 1)
        self.conv_norm = nn.BatchNorm2d(dim)
        self.drop = nn.Dropout(dropout)

    def _rolled(self, x: torch.Tensor, first: tuple[int, int], second: tuple[int, int], fc1: nn.Linear,
                fc2: nn.Linear) -> torch.Tensor:
        y = self.drop(F.gelu(fc1(roll_each_channel(x, *first).flatten(2).transpose(1, 2))))
        y = y.transpose(1, 2).reshape(x.shape)
        return self.drop(fc2(roll_each_channel(y, *second).flatten(2).transpose(1, 2)))

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        a = self._rolled(grid, (2, 1), (3, 1), self.fc[0], self.fc[1]) + tokens
        b = self._rolled(grid, (3, -1), (2, 1), self.fc[2], self.fc[3]) + tokens
        mixed = self.drop(self.merge(self.norm(torch.cat([a, b], dim=-1)))) + tokens
        conv = self.conv_norm(F.relu(self.pointwise(self.depthwise(grid)) + grid)).flatten(2).transpose(1, 2)
        return self.drop(self.out(torch.cat([mixed, conv], dim=-1)))


class IncentiveEmbed(nn.Module):
    """Feature incentive block: 3x3 conv, flattened to tokens, GELU, LayerNorm."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.proj(x).flatten(2).transpose(1, 2)))


def _tokens_to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


class GHUNet(nn.Module):
    """GH-UNet: a MobileViT branch (``vit_widths``) beside a conv encoder of gated multi-kernel blocks
    (``widths[:3]``, Haar downsampling) and Lo2 transformer stages (``widths[3]`` at 1/8,
    ``widths[4]`` at 1/16); each MobileViT stage output, DySample-upsampled x2, is added to the conv
    stage of its size (twice: the reference adds it through an alias of the same tensor), and a group
    dynamic gate (GDG) of that sum is the skip. Decoder: Lo2 stage at 1/8, then conv blocks up with
    DySample; side outputs from GDGs at 1/8, 1/4, 1/2 (DySample to full size, 1x1 heads) are added to
    the full-resolution head. Published: widths 32, 64, 96, 128, 640; MobileViT-S (16, 32, 64, 96,
    128, 160, 640; hidden 144, 192, 240; 2, 4, 3 layers) with patch 16, 12 heads."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], vit_widths: Sequence[int],
                 vit_hidden: Sequence[int], vit_depths: Sequence[int], vit_patch: int, vit_heads: int) -> None:
        super().__init__()
        e = [int(v) for v in widths]
        if len(e) != 5 or [vit_widths[i] for i in (1, 2, 3, 4, 6)] != e:
            raise ValueError(f"GH-UNet adds MobileViT stages to conv stages of the same width: widths {e} must be "
                             f"vit_widths[1:5] and vit_widths[6], got vit_widths={list(vit_widths)}")
        self.vit = MobileViTBackbone(in_channels, vit_widths, vit_hidden, vit_depths, vit_patch, vit_heads,
                                     0.1, 0.1, 1e-6)
        self.vit_up = nn.ModuleList(DynamicUpsample(c) for c in (e[0], e[1], e[2], e[3], e[4]))
        self.encoder = nn.ModuleList(MultiKernelGatedBlock(cin, c, c) for cin, c in zip([in_channels, *e], e[:3]))
        self.down = nn.ModuleList(HaarDownsample(c, c) for c in (e[0], e[1], e[2], e[3]))
        self.skip_gates = nn.ModuleList(GroupDynamicGate(c, g, r)
                                        for c, g, r in zip(e[:4], (8, 4, 2, 2), (8, 8, 16, 16)))
        self.embed = nn.ModuleList([IncentiveEmbed(e[2], e[3]), IncentiveEmbed(e[3], e[4]), IncentiveEmbed(e[4], e[3])])
        self.mixers = nn.ModuleList([OrthogonalRollMLP(e[3]), OrthogonalRollMLP(e[4], 0.2), OrthogonalRollMLP(e[3])])
        self.mixer_norms = nn.ModuleList(nn.LayerNorm(c) for c in (e[3], e[4], e[3]))
        for module in (self.embed, self.mixers):  # the reference's Lo2 and embedding initialization
            module.apply(_egeunet_init)
        self.bottom_up = DynamicUpsample(e[3])
        self.reduce = conv_bn_relu(e[3], e[2])
        self.dec_up = nn.ModuleList(DynamicUpsample(c) for c in (e[2], e[1], e[0]))
        self.decoder = nn.ModuleList(MultiKernelGatedBlock(cin, cin, cout)
                                     for cin, cout in zip((e[2], e[1], e[0]), (e[1], e[0], 16)))
        self.side_gates = nn.ModuleList(GroupDynamicGate(c, g, r) for c, g, r in zip((e[3], e[1], e[0]), (2, 4, 8),
                                                                                      (16, 8, 8)))
        self.side_up = nn.ModuleList(DynamicUpsample(c, s) for c, s in zip((e[3], e[1], e[0]), (8, 4, 2)))
        self.side_heads = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in (e[3], e[1], e[0]))
        self.head = nn.Conv2d(16, num_classes, 1)
        self.divisible_by = 32
        self.deep_supervision = False

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Skips (GDG outputs at full, 1/2, 1/4, 1/8) and the 1/16 bottleneck map."""
        states, expanded = self.vit(x)
        vit = [up(v) for up, v in zip(self.vit_up, states[:4])]  # full .. 1/8
        skips, y = [], x
        for i in range(3):
            y = self.encoder[i](y if i == 0 else self.down[i - 1](y)) + 2 * vit[i]
            skips.append(self.skip_gates[i](y))
        y = self.down[2](y)
        h, w = y.shape[2:]
        y = _tokens_to_grid(self.mixer_norms[0](self.mixers[0](self.embed[0](y), h, w)), h, w) + 2 * vit[3]
        skips.append(self.skip_gates[3](y))
        y = self.down[3](y)
        tokens = self.mixer_norms[1](self.mixers[1](self.embed[1](y), h // 2, w // 2))
        y = _tokens_to_grid(tokens, h // 2, w // 2) + self.vit_up[4](expanded)
        return skips, _tokens_to_grid(self.embed[2](y), h // 2, w // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        skips, bottom = self._encode(x)
        y = self.bottom_up(bottom) + skips[3]
        h, w = y.shape[2:]
        y = _tokens_to_grid(self.mixer_norms[2](self.mixers[2](y.flatten(2).transpose(1, 2), h, w)), h, w)
        sides = [y]
        y = self.dec_up[0](self.reduce(y)) + skips[2]
        for i in range(3):
            y = self.decoder[i](y)
            if i < 2:
                sides.append(y)
                y = self.dec_up[i + 1](y) + skips[1 - i]
        logits = self.head(y)
        for gate, up, head, side in zip(self.side_gates, self.side_up, self.side_heads, sides):
            logits = logits + head(up(gate(side)))
        return crop_to(logits, size)


GHUNET_WIDTHS = (32, 64, 96, 128, 640)
MOBILEVIT_S_WIDTHS, MOBILEVIT_S_HIDDEN, MOBILEVIT_S_DEPTHS = (16, 32, 64, 96, 128, 160, 640), (144, 192, 240), (2, 4, 3)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Wang et al., GH-UNet: group-wise hybrid convolution-VIT for robust medical image segmentation, "
                      "npj Digital Medicine 8 (2025) (count: official code, no figure read from the paper)",
                defaults=lambda d: {"widths": list(GHUNET_WIDTHS), "vit_widths": list(MOBILEVIT_S_WIDTHS),
                                    "vit_hidden": list(MOBILEVIT_S_HIDDEN), "vit_depths": list(MOBILEVIT_S_DEPTHS),
                                    "vit_patch": 16, "vit_heads": 12},
                tiny_kwargs={"widths": [16, 16, 16, 16, 32], "vit_widths": [8, 16, 16, 16, 16, 16, 32],
                             "vit_hidden": [16, 16, 16], "vit_depths": [1, 1, 1], "vit_patch": 2, "vit_heads": 2},
                extra={"tags": ["hybrid", "cnn", "transformer", "mlp", "attention", "multiscale"], "paper_params": None,
                       "paper_setup": "no figure read from the paper (its abstract gives only a ratio to H2Former); "
                                      "official code (xiachashuanghua/GH-UNet, as U-Bench ships it in "
                                      "models/CNN/GH_UNet), 3 in, 1 class, widths 32..640, MobileViT-S with patch 16 "
                                      "and 12 heads: 12,925,173 counted by hand, of which 2,400 in norms its forward "
                                      "never uses",
                       "divisible_by": 32, "pads_input": True, "kwargs_note": _PLAN_NOTE})
def gh_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
            widths: Sequence[int] = GHUNET_WIDTHS, vit_widths: Sequence[int] = MOBILEVIT_S_WIDTHS,
            vit_hidden: Sequence[int] = MOBILEVIT_S_HIDDEN, vit_depths: Sequence[int] = MOBILEVIT_S_DEPTHS,
            vit_patch: int = 16, vit_heads: int = 12, n_stages: Any = None, features_per_stage: Any = None,
            kernel_sizes: Any = None, strides: Any = None) -> GHUNet:
    """GH-UNet: MobileViT branch beside a gated multi-kernel conv encoder, Lo2 stages, DySample decoder, 2D."""
    return GHUNet(in_channels, num_classes, widths, vit_widths, vit_hidden, vit_depths, vit_patch, vit_heads)
