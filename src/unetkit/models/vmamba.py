"""The VM-UNet family: 2D U-Nets built from VMamba's 2D selective scan (family ``mamba``).

Every model here is 2D (the SS2D scan runs over rows and columns), has the fixed design of its
paper (the plan keywords ``n_stages, features_per_stage, kernel_sizes, strides`` are accepted and
ignored) and pads its input to a multiple of ``extra["divisible_by"]`` (cropping the logits), so
any plan patch works. Reference code was read through the code search; all code here is our own.
Shared SSM pieces (selective scan, SS2D, VSS block, Mamba) live in ``ssm_blocks.py``.

- ``vmunet``: Ruan & Xiang, "VM-UNet: Vision Mamba UNet for Medical Image Segmentation",
  arXiv:2402.02491, Fig. 1-2: patch embedding (4x4), VSS stages 2,2,2,2 with patch merging
  (C = 96..768), decoder of VSS stages 2,2,2,1 after patch expanding, additive skips, final 4x
  patch expanding + 1x1 conv. Reference: JCruan519/VM-UNet ``models/vmunet/vmamba.py`` (``VSSM``),
  ``configs/config_setting.py``.
- ``mamba_unet``: Wang, Zheng, Li, Xu, Yang, Zhang, "Mamba-UNet: UNet-Like Pure Visual Mamba for
  Medical Image Segmentation", arXiv:2402.05079, Fig. 1: Swin-UNet's layout (concatenation skips
  fused by a linear layer, decoder depths mirroring the encoder) with VSS blocks. Reference:
  ziyangwang007/Mamba-UNet ``code/networks/mamba_sys.py``, ``configs/vmamba_tiny.yaml``
  (C 96, depths 2,2,2,2).
- ``swin_umamba``: Liu, Yang, Jiang, Wang, Zhou, Lu, Tian, "Swin-UMamba: Mamba-based UNet with
  ImageNet-based pretraining", MICCAI 2024 (arXiv:2402.03302), Fig. 1: a 7x7 stride-2 stem (48),
  the VMamba-T encoder (patch 2, depths 2,2,9,2, C 96..768), UNETR-style residual blocks on
  the input, the stem and every stage, a residual decoder with transposed convolutions, deep
  supervision. Reference: JiarunLiu/Swin-UMamba ``nnunetv2/nets/SwinUMamba.py``.
- ``vmunet_v2``: Zhang, Yu, Gu, Lin, Tao, "VM-UNET-V2: Rethinking Vision Mamba UNet for Medical
  Image Segmentation", arXiv:2403.09157, Fig. 1: VSS encoder (depths 2,2,9,2), channel + spatial
  attention and 1x1 conv to 48 channels on every level, Semantics and Detail Infusion (SDI: every
  level resized to each level, 3x3 conv, multiplied), a decoder of 4x4 transposed convolutions with
  a head per level (deep supervision). Reference: nobodyplayer1/VM-UNetV2
  ``models/vmunet/vmunet_v2.py``, ``configs/config_setting_v2.py``.
- ``ultralight_vmunet``: Wu, Liu, Liang, Chang, "UltraLight VM-UNet: Parallel Vision Mamba
  Significantly Reduces Parameters for Skin Lesion Segmentation", arXiv:2403.20035, Fig. 2-3:
  EGE-UNet's 6-level layout (widths 8,16,24,32,48,64) with Parallel Vision Mamba layers (one
  Mamba shared by the 4 channel quarters) in the deep levels and the spatial/channel attention
  bridge. Reference: wurenkai/UltraLight-VM-UNet ``models/UltraLight_VM_UNet.py``.
- ``h_vmunet``: Wu, Liu, Liang, Chang, "H-vmunet: High-order Vision Mamba UNet for Medical Image
  Segmentation", arXiv:2403.13642, Fig. 2-4: the same 6-level layout (8..256) with High-order
  VSS blocks (orders 2..5: gated recursive SS2D over a 7x7 "Local-SS2D" mixer) in levels 3-6.
  Reference: wurenkai/H-vmunet ``models/H_vmunet.py``.

Differences common to all: no stochastic depth (drop path), outputs are logits (the references
apply a sigmoid for one class), a one-channel input is not repeated to three (the stem takes
``in_channels``). Patch merging concatenates the 2x2 neighbours in ``attention_blocks.PatchMerging``'s
order (the references use Swin's order): the same network up to a permutation of the merging
weights, which matters only when loading the references' weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import PatchMerging, UnetResBlock, UnetrUpBlock, crop_to, pad_to_multiple
from unetkit.models.lightweight import ChannelLayerNorm
from unetkit.models.lightweight import _egeunet_init as init_level_unet_  # EGE-UNet's init, as both references
from unetkit.models.registry import register_model
from unetkit.models.ssm_blocks import SS2D, Mamba, VSSStage, init_vmamba_, no_autocast
from unetkit.models.swin_unet import PatchExpand

PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
             "and ignored")


def _widths(dims: int | Sequence[int], n: int) -> list[int]:
    """``dims`` as one width per stage: an int C means C, 2C, 4C, ..."""
    if isinstance(dims, int):
        return [dims * 2 ** i for i in range(n)]
    out = [int(d) for d in dims]
    if len(out) != n:
        raise ValueError(f"{len(out)} widths {out} for {n} stages")
    return out


class VSSEncoder(nn.Module):
    """VMamba encoder: patch embedding (conv ``patch`` x ``patch`` + layer norm), then per stage
    ``depths[i]`` VSS blocks, with patch merging between stages. Returns every stage's input
    (``stage_inputs``: what VM-UNet and Mamba-UNet use as skips) and output, channels-last."""

    def __init__(self, in_channels: int, dims: Sequence[int], depths: Sequence[int], patch: int = 4,
                 d_state: int = 16, build: int | None = None) -> None:
        super().__init__()
        n = len(depths) if build is None else build
        self.patch_embed = nn.Conv2d(in_channels, dims[0], patch, patch)
        self.patch_norm = nn.LayerNorm(dims[0])
        self.stages = nn.ModuleList([VSSStage(dims[i], depths[i], d_state) for i in range(n)])
        self.merges = nn.ModuleList([PatchMerging(dims[i], 2, dims[i + 1]) for i in range(min(n, len(depths) - 1))])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        t = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        inputs, outputs = [], []
        for i, stage in enumerate(self.stages):
            inputs.append(t)
            t = stage(t)
            outputs.append(t)
            if i < len(self.merges):
                t = self.merges[i](t)
        if len(self.merges) == len(self.stages):  # a merge after the last built stage
            inputs.append(t)
        return inputs, outputs


# ============================================================================================ VM-UNet
class VMUNet(nn.Module):
    """VM-UNet: VSS encoder; decoder stage j (deepest first) adds the input of encoder stage
    ``n - j`` to its input, patch-expands it (2x, half the width; not the first), runs
    ``depths_decoder[j]`` VSS blocks; final 4x patch expanding to C/4 and a 1x1 conv.

    Example:
        >>> VMUNet(3, 1)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(self, in_channels: int, num_classes: int, dims: int | Sequence[int] = 96,
                 depths: Sequence[int] = (2, 2, 2, 2), depths_decoder: Sequence[int] = (2, 2, 2, 1),
                 d_state: int = 16, patch: int = 4) -> None:
        super().__init__()
        n = len(depths)
        if len(depths_decoder) != n:
            raise ValueError(f"depths {list(depths)} and depths_decoder {list(depths_decoder)} differ in length")
        c = _widths(dims, n)
        if c[0] % patch:
            raise ValueError(f"the first width {c[0]} must be a multiple of the patch size {patch}")
        self.divisible_by = patch * 2 ** (n - 1)
        self.encoder = VSSEncoder(in_channels, c, depths, patch, d_state)
        self.expands = nn.ModuleList([PatchExpand(c[n - j], c[n - 1 - j], 2) for j in range(1, n)])
        self.decoder = nn.ModuleList([VSSStage(c[n - 1 - j], depths_decoder[j], d_state) for j in range(n)])
        self.final_expand = PatchExpand(c[0], c[0] // patch, patch)
        self.final_conv = nn.Conv2d(c[0] // patch, num_classes, 1)
        self.apply(init_vmamba_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        inputs, outputs = self.encoder(x)
        t = self.decoder[0](outputs[-1])
        for j, (expand, stage) in enumerate(zip(self.expands, self.decoder[1:]), start=1):
            t = stage(expand(t + inputs[-j]))  # the input of encoder stage n - j: same width and size
        t = self.final_expand(t).permute(0, 3, 1, 2)
        return crop_to(self.final_conv(t), size)


# ========================================================================================== Mamba-UNet
class MambaUNet(nn.Module):
    """Mamba-UNet: Swin-UNet's layout with VSS blocks. VSS encoder, layer norm; decoder: patch
    expanding (2x, half the width), concatenation with the input of the matching encoder stage, a
    linear layer back to the width, VSS blocks (depths mirror the encoder); layer norm, 4x patch
    expanding (C channels) and a 1x1 conv without bias.

    Example:
        >>> MambaUNet(3, 4)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 4, 64, 64])
    """

    def __init__(self, in_channels: int, num_classes: int, dims: int | Sequence[int] = 96,
                 depths: Sequence[int] = (2, 2, 2, 2), d_state: int = 16, patch: int = 4) -> None:
        super().__init__()
        n = len(depths)
        c = _widths(dims, n)
        self.divisible_by = patch * 2 ** (n - 1)
        self.encoder = VSSEncoder(in_channels, c, depths, patch, d_state)
        self.norm = nn.LayerNorm(c[-1])
        self.expands = nn.ModuleList([PatchExpand(c[i], c[i - 1], 2) for i in range(n - 1, 0, -1)])
        self.concat_back = nn.ModuleList([nn.Linear(2 * c[i], c[i]) for i in range(n - 2, -1, -1)])
        self.decoder = nn.ModuleList([VSSStage(c[i], depths[i], d_state) for i in range(n - 2, -1, -1)])
        self.norm_up = nn.LayerNorm(c[0])
        self.final_expand = PatchExpand(c[0], c[0], patch)
        self.output = nn.Conv2d(c[0], num_classes, 1, bias=False)
        self.apply(init_vmamba_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        inputs, outputs = self.encoder(x)
        t = self.norm(outputs[-1])
        for i, (expand, fuse, stage) in enumerate(zip(self.expands, self.concat_back, self.decoder)):
            t = stage(fuse(torch.cat((expand(t), inputs[-(i + 2)]), dim=-1)))
        t = self.final_expand(self.norm_up(t)).permute(0, 3, 1, 2)
        return crop_to(self.output(t), size)


# ========================================================================================= Swin-UMamba
class SwinUMamba(nn.Module):
    """Swin-UMamba: stem conv 7x7 / 2 (48) + instance norm, VSS encoder (patch 2) on the stem;
    UNETR residual blocks on the input (48), the stem (96) and the four stage outputs (192, 384,
    768, 768; the deepest stage's output itself is the bottleneck); decoder of UNETR up-blocks
    (transposed conv x2, concatenation, residual block) and a last residual block; 1x1 heads at
    full, 1/2, 1/4 and 1/8 resolution (deep supervision).

    Example:
        >>> len(SwinUMamba(1, 3)(torch.zeros(1, 1, 64, 64)))
        4
    """

    def __init__(self, in_channels: int, num_classes: int, feat_size: Sequence[int] = (48, 96, 192, 384, 768),
                 depths: Sequence[int] = (2, 2, 9, 2), d_state: int = 16, deep_supervision: bool = True) -> None:
        super().__init__()
        f = [int(v) for v in feat_size]
        if len(f) != len(depths) + 1:
            raise ValueError(f"feat_size needs len(depths) + 1 = {len(depths) + 1} widths, got {f}")
        self.divisible_by = 2 ** (len(depths) + 1)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, f[0], 7, 2, 3), nn.InstanceNorm2d(f[0], affine=True))
        self.vss = VSSEncoder(f[0], f[1:], depths, 2, d_state)
        self.vss.apply(init_vmamba_)
        # residual blocks on: input, stem, stage outputs except the deepest (the bottleneck)
        self.skip_blocks = nn.ModuleList([UnetResBlock(2, in_channels, f[0])] +
                                         [UnetResBlock(2, f[i], f[i + 1]) for i in range(len(f) - 1)])
        widths = f + [f[-1]]  # the bottleneck has the deepest stage's width
        self.up_blocks = nn.ModuleList([UnetrUpBlock(2, widths[i + 1], widths[i]) for i in range(len(f) - 1, -1, -1)])
        self.last_block = UnetResBlock(2, f[0], f[0])
        self.heads = nn.ModuleList([nn.Conv2d(f[i], num_classes, 1) for i in range(4)])
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = pad_to_multiple(x, self.divisible_by)
        stem = self.stem(x)
        _, outputs = self.vss(stem)
        features = [x, stem] + [o.permute(0, 3, 1, 2) for o in outputs]
        skips = [block(feat) for block, feat in zip(self.skip_blocks, features)]
        t = features[-1]
        decoded = []
        for up, skip in zip(self.up_blocks, reversed(skips)):
            t = up(t, skip)
            decoded.append(t)
        levels = [self.last_block(t)] + decoded[-2::-1]  # full resolution first, then 1/2, 1/4, ...
        if not self.deep_supervision:
            return crop_to(self.heads[0](levels[0]), size)
        return crop_pyramid([head(level) for head, level in zip(self.heads, levels)], size)


def crop_pyramid(outputs: list[torch.Tensor], size: Sequence[int]) -> list[torch.Tensor]:
    """Deep-supervision outputs of a padded input (full resolution first, each next one halved)
    cropped to the unpadded region: output k to ``ceil(size / 2**k)``."""
    return [crop_to(o, [-(-s // 2 ** k) for s in size]) for k, o in enumerate(outputs)]


# ========================================================================================= VM-UNet-V2
class ChannelSpatialAttention(nn.Module):
    """CBAM-style attention of VM-UNet-V2: ``x * sigmoid(MLP(avgpool) + MLP(maxpool))`` (MLP: 1x1
    convs C -> C/16 -> C without bias, ReLU), then ``x * sigmoid(conv7x7([mean_c, max_c]))``."""

    def __init__(self, channels: int, ratio: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, max(channels // ratio, 1), 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(max(channels // ratio, 1), channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.spatial(torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)))


class SDI(nn.Module):
    """Semantics and Detail Infusion (VM-UNet-V2 Fig. 1): every level resized to the anchor's size
    (adaptive average pooling down, bilinear up), a 3x3 conv per level, the product of all."""

    def __init__(self, channels: int, levels: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, 1, 1) for _ in range(levels)])

    def forward(self, features: Sequence[torch.Tensor], anchor: torch.Tensor) -> torch.Tensor:
        size = anchor.shape[2:]
        out = None
        for conv, f in zip(self.convs, features):
            if f.shape[-1] > size[-1]:
                f = F.adaptive_avg_pool2d(f, size)
            elif f.shape[-1] < size[-1]:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=True)
            f = conv(f)
            out = f if out is None else out * f
        return out


class VMUNetV2(nn.Module):
    """VM-UNet-V2: VSS encoder features of 4 levels (1/4..1/32), each through channel + spatial
    attention and a 1x1 conv + batch norm to ``mid_channels``; SDI per level; decoder from the
    deepest level: 4x4 / 2 transposed conv, add the next SDI output; a 1x1 head per level,
    upsampled by the patch size (4x, bilinear). Deep supervision returns the heads, full resolution
    first.

    The reference builds a fourth VSS stage (2 blocks at 8C) whose output it never uses; it is not
    built here. Its deep-supervision mode returns one sigmoid of the two finest heads (one class
    only); ours returns every head instead.
    """

    def __init__(self, in_channels: int, num_classes: int, dims: int | Sequence[int] = 96,
                 depths: Sequence[int] = (2, 2, 9, 2), mid_channels: int = 48, d_state: int = 16,
                 deep_supervision: bool = True, patch_size: int = 4) -> None:
        super().__init__()
        n = len(depths)
        c = _widths(dims, n)
        self.patch_size = patch_size
        self.divisible_by = patch_size * 2 ** (n - 1)
        self.encoder = VSSEncoder(in_channels, c, depths, patch_size, d_state, build=n - 1)
        self.encoder.apply(init_vmamba_)
        self.attention = nn.ModuleList([ChannelSpatialAttention(ch) for ch in c])
        self.translate = nn.ModuleList([nn.Sequential(nn.Conv2d(ch, mid_channels, 1, bias=False),
                                                      nn.BatchNorm2d(mid_channels)) for ch in c])
        self.sdi = nn.ModuleList([SDI(mid_channels, n) for _ in range(n)])
        self.heads = nn.ModuleList([nn.Conv2d(mid_channels, num_classes, 1) for _ in range(n)])
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(mid_channels, mid_channels, 4, 2, 1, bias=False)
                                      for _ in range(n - 1)])
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x, size = pad_to_multiple(x, self.divisible_by)
        inputs, _ = self.encoder(x)
        feats = [tr(att(f.permute(0, 3, 1, 2))) for att, tr, f in zip(self.attention, self.translate, inputs)]
        fused = [sdi(feats, f) for sdi, f in zip(self.sdi, feats)]
        t = fused[-1]
        outs = [self.heads[-1](t)]
        for deconv, head, skip in zip(self.deconvs, self.heads[-2::-1], fused[-2::-1]):
            t = deconv(t) + skip
            outs.append(head(t))
        outs = [F.interpolate(o, scale_factor=self.patch_size, mode="bilinear") for o in outs[::-1]]
        if not self.deep_supervision:
            return crop_to(outs[0], size)
        return crop_pyramid(outs, size)


# =========================================================================== UltraLight VM-UNet, H-vmunet
class SpatialChannelBridge(nn.Module):
    """The spatial-channel attention bridge (``SC_Att_Bridge`` of MALUNet, used by UltraLight VM-UNet
    and H-vmunet) over the skips of 5 levels: a shared dilated 7x7 conv on [mean_c, max_c] gives a
    spatial gate per level (``t * gate + t``), then a channel gate per level from the concatenated
    global averages (1D conv 3 across channels, one linear layer per level); each output adds the
    spatially gated skip."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        total = sum(widths)
        self.spatial = nn.Conv2d(2, 1, 7, padding=9, dilation=3)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.channel = nn.ModuleList([nn.Linear(total, w) for w in widths])

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        gated = [t * torch.sigmoid(self.spatial(torch.cat((t.mean(1, keepdim=True), t.amax(1, keepdim=True)), 1)))
                 for t in skips]
        summed = [g + t for g, t in zip(gated, skips)]
        pooled = self.mix(torch.cat([t.mean((2, 3)) for t in summed], 1).unsqueeze(1))  # (B, 1, sum C)
        return [torch.sigmoid(lin(pooled)).transpose(1, 2).unsqueeze(-1) * t + g
                for lin, t, g in zip(self.channel, summed, gated)]


class LevelUNet(nn.Module):
    """The 6-level layout of UltraLight VM-UNet and H-vmunet (EGE-UNet's): encoder level i = unit,
    GroupNorm(4), max-pool 2, GELU (the deepest: unit, GELU); skips of levels 1-5 through the
    attention bridge; decoder step j = unit, GroupNorm(4), bilinear x2 (not the first), GELU, plus
    the skip; a 1x1 head, bilinear x2. ``unit(cin, cout, level)`` builds the block of a level."""

    def __init__(self, in_channels: int, num_classes: int, c_list: Sequence[int], unit: Any, bridge: bool = True) -> None:
        super().__init__()
        c = [int(v) for v in c_list]
        if len(c) != 6 or any(v % 4 for v in c):
            raise ValueError(f"c_list needs 6 widths, each a multiple of 4, got {c}")
        self.divisible_by = 32
        self.encoder = nn.ModuleList([unit(in_channels if i == 0 else c[i - 1], c[i], i) for i in range(6)])
        self.enc_norm = nn.ModuleList([nn.GroupNorm(4, c[i]) for i in range(5)])
        self.decoder = nn.ModuleList([unit(c[i + 1], c[i], i + 1) for i in range(4, -1, -1)])
        self.dec_norm = nn.ModuleList([nn.GroupNorm(4, c[i]) for i in range(4, -1, -1)])
        self.bridge = SpatialChannelBridge(c[:5]) if bridge else None
        self.final = nn.Conv2d(c[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        skips = []
        for enc, norm in zip(self.encoder, self.enc_norm):
            x = F.gelu(F.max_pool2d(norm(enc(x)), 2))
            skips.append(x)
        if self.bridge is not None:
            skips = self.bridge(skips)
        x = F.gelu(self.encoder[-1](x))
        for j, (dec, norm) in enumerate(zip(self.decoder, self.dec_norm)):
            x = norm(dec(x))
            if j:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = F.gelu(x) + skips[-1 - j]
        out = F.interpolate(self.final(x), scale_factor=2, mode="bilinear", align_corners=True)
        return crop_to(out, size)


class PVMLayer(nn.Module):
    """Parallel Vision Mamba layer (UltraLight VM-UNet Fig. 3): layer norm, the channels split in 4
    quarters, each through the *same* Mamba (d_model C/4) plus a learnable scaled skip,
    concatenated, layer norm again (the same one), linear to ``out_dim``; tokens are the pixels in
    row-major order. Float32, as the reference."""

    def __init__(self, in_dim: int, out_dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.mamba = Mamba(in_dim // 4, d_state, d_conv, expand)
        self.proj = nn.Linear(in_dim, out_dim)
        self.skip_scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        dtype = x.dtype
        with no_autocast(x.device):
            t = self.norm(x.float().flatten(2).transpose(1, 2))
            quarters = t.chunk(4, dim=-1)
            t = torch.cat([self.mamba(q) + self.skip_scale * q for q in quarters], dim=-1)
            t = self.proj(self.norm(t))
        return t.transpose(1, 2).reshape(b, -1, h, w).to(dtype)


class LocalSS2D(nn.Module):
    """H-vmunet's Local-SS2D (Fig. 4): channel layer norm, half the channels through a depth-wise 3x3
    conv, the other half through SS2D, interleaved channel by channel, channel layer norm. (The
    reference also builds a global-filter weight its forward never uses; not built here.)"""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Local-SS2D needs an even width, got {dim}")
        self.pre_norm = ChannelLayerNorm(dim, eps=1e-6)
        self.dw = nn.Conv2d(dim // 2, dim // 2, 3, padding=1, groups=dim // 2, bias=False)
        self.ss2d = SS2D(dim // 2)
        self.post_norm = ChannelLayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.pre_norm(x).chunk(2, dim=1)
        x2 = self.ss2d(x2.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.post_norm(torch.stack((self.dw(x1), x2), 2).flatten(1, 2))


class HighOrderSS2D(nn.Module):
    """H-SS2D of order n (H-vmunet Fig. 3, after HorNet's recursive gated convolution): 1x1 conv to
    2C, split into p0 (C / 2**(n-1)) and q (the rest), Local-SS2D mixing of q (scaled by 1/3) split
    into n gates of widths C/2**(n-1) .. C; p = SS2D(p0 * g0), then n - 1 times p = SS2D(1x1(p) *
    g_k) at doubling widths; 1x1 conv out."""

    def __init__(self, dim: int, order: int, scale: float = 1 / 3) -> None:
        super().__init__()
        self.dims = [dim // 2 ** i for i in range(order)][::-1]
        if self.dims[0] * 2 ** (order - 1) != dim:
            raise ValueError(f"H-SS2D of order {order} needs a width divisible by {2 ** (order - 1)}, got {dim}")
        self.scale = scale
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.local = LocalSS2D(sum(self.dims))
        self.pws = nn.ModuleList([nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1)])
        self.ss2d = nn.ModuleList([SS2D(d) for d in self.dims])
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        gates = torch.split(self.local(q) * self.scale, self.dims, dim=1)
        p = p * gates[0]
        for k, ss2d in enumerate(self.ss2d):
            if k:
                p = self.pws[k - 1](p) * gates[k]
            p = ss2d(p.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.proj_out(p)


class HighOrderVSSBlock(nn.Module):
    """H-VSS block (H-vmunet Fig. 2): ``x + g1 * H-SS2D(LN(x))``, then ``x + g2 * MLP(LN(x))`` (4x
    expansion, GELU), with layer scales g initialized to 1e-6 (ConvNeXt / HorNet style)."""

    def __init__(self, dim: int, order: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, eps=1e-6)
        self.hss2d = HighOrderSS2D(dim, order)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
        self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1.view(-1, 1, 1) * self.hss2d(self.norm1(x))
        return x + (self.gamma2 * self.mlp(self.norm2(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)


# ======================================================================================= registration
def _plan_keywords_ignored(*_: Any) -> None:
    """Fixed designs take the plan's topology keywords (``--arch`` passes them) and ignore them."""


def vmunet_defaults(spatial_dims: int) -> dict[str, Any]:
    """VM-UNet as trained in the paper: C 96, encoder depths 2,2,2,2, decoder 2,2,2,1."""
    return {"dims": 96, "depths": [2, 2, 2, 2], "depths_decoder": [2, 2, 2, 1], "d_state": 16}


VMUNET_PAPER = ("Ruan & Xiang, VM-UNet: Vision Mamba UNet for Medical Image Segmentation, arXiv:2402.02491 "
                "(Fig. 1-2; 27.43M parameters, 4.11 GFLOPs at 256x256, 3 in, 1 class)")


@register_model(family="mamba", paper=VMUNET_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=vmunet_defaults,
                tiny_kwargs={"dims": 16, "depths": [1, 1, 1], "depths_decoder": [1, 1, 1], "d_state": 4},
                extra={"tags": ["mamba"], "paper_params": 27.43e6, "paper_gflops": 4.11, "paper_patch": [256, 256],
                       "paper_setup": "2D, 3 in, 1 class, 256x256, C 96, depths 2,2,2,2 / decoder 2,2,2,1",
                       "divisible_by": 32, "pads_input": True, "kwargs_note": PLAN_NOTE})
def vmunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           dims: int | Sequence[int] = 96, depths: Sequence[int] = (2, 2, 2, 2),
           depths_decoder: Sequence[int] = (2, 2, 2, 1), d_state: int = 16, n_stages: Any = None,
           features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> VMUNet:
    """VM-UNet: a pure VSS (2D selective scan) U-Net with additive skips (2D)."""
    _plan_keywords_ignored(n_stages, features_per_stage, kernel_sizes, strides)
    return VMUNet(in_channels, num_classes, dims, tuple(depths), tuple(depths_decoder), d_state)


MAMBA_UNET_PAPER = ("Wang et al., Mamba-UNet: UNet-Like Pure Visual Mamba for Medical Image Segmentation, "
                    "arXiv:2402.05079 (Fig. 1; no parameter count printed)")


@register_model(family="mamba", paper=MAMBA_UNET_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=lambda d: {"dims": 96, "depths": [2, 2, 2, 2], "d_state": 16},
                tiny_kwargs={"dims": 16, "depths": [1, 1, 1], "d_state": 4},
                extra={"tags": ["mamba"], "paper_params": None, "paper_patch": [224, 224],
                       "paper_setup": "none printed; official code (vmamba_tiny.yaml: C 96, depths 2,2,2,2), "
                                      "3 in, 4 classes (ACDC), 224x224: counted in tests/test_zoo_mamba.py",
                       "divisible_by": 32, "pads_input": True, "kwargs_note": PLAN_NOTE})
def mamba_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
               dims: int | Sequence[int] = 96, depths: Sequence[int] = (2, 2, 2, 2), d_state: int = 16,
               n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
               strides: Any = None) -> MambaUNet:
    """Mamba-UNet: Swin-UNet's layout with VSS blocks, concatenation skips (2D)."""
    _plan_keywords_ignored(n_stages, features_per_stage, kernel_sizes, strides)
    return MambaUNet(in_channels, num_classes, dims, tuple(depths), d_state)


SWIN_UMAMBA_PAPER = ("Liu et al., Swin-UMamba: Mamba-based UNet with ImageNet-based pretraining, MICCAI 2024, "
                     "arXiv:2402.03302 (Fig. 1; Table 1: 59.89M parameters)")


@register_model(family="mamba", paper=SWIN_UMAMBA_PAPER, spatial_dims=(2,), deep_supervision=True,
                defaults=lambda d: {"feat_size": [48, 96, 192, 384, 768], "depths": [2, 2, 9, 2], "d_state": 16},
                tiny_kwargs={"feat_size": [4, 8, 8, 16, 16], "depths": [1, 1, 1, 1], "d_state": 4},
                extra={"tags": ["mamba", "hybrid", "residual", "pretrainable-encoder"], "paper_params": 59.89e6,
                       "paper_setup": "2D, 1 in, 14 classes (AbdomenMRI), feat_size 48..768, VMamba-T encoder "
                                      "depths 2,2,9,2", "divisible_by": 32, "pads_input": True,
                       "kwargs_note": PLAN_NOTE})
def swin_umamba(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                feat_size: Sequence[int] = (48, 96, 192, 384, 768), depths: Sequence[int] = (2, 2, 9, 2),
                d_state: int = 16, n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
                strides: Any = None) -> SwinUMamba:
    """Swin-UMamba: VMamba-T encoder with UNETR-style residual skips and decoder, deep supervision (2D)."""
    _plan_keywords_ignored(n_stages, features_per_stage, kernel_sizes, strides)
    return SwinUMamba(in_channels, num_classes, tuple(feat_size), tuple(depths), d_state, deep_supervision)


VMUNET_V2_PAPER = ("Zhang et al., VM-UNET-V2: Rethinking Vision Mamba UNet for Medical Image Segmentation, "
                   "arXiv:2403.09157 (Fig. 1; config_setting_v2.py: depths 2,2,9,2, mid 48)")


@register_model(family="mamba", paper=VMUNET_V2_PAPER, spatial_dims=(2,), deep_supervision=True,
                defaults=lambda d: {"dims": 96, "depths": [2, 2, 9, 2], "mid_channels": 48, "d_state": 16,
                                    "patch_size": 4},
                tiny_kwargs={"dims": 8, "depths": [1, 1, 1, 1], "mid_channels": 8, "d_state": 4, "patch_size": 1},
                extra={"tags": ["mamba", "attention"], "paper_params": None,
                       "paper_setup": "none found printed; official code (config_setting_v2.py), 3 in, 1 class, "
                                      "256x256: counted in tests/test_zoo_mamba.py",
                       "divisible_by": 32, "pads_input": True, "kwargs_note": PLAN_NOTE})
def vmunet_v2(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
              dims: int | Sequence[int] = 96, depths: Sequence[int] = (2, 2, 9, 2), mid_channels: int = 48,
              d_state: int = 16, patch_size: int = 4, n_stages: Any = None, features_per_stage: Any = None,
              kernel_sizes: Any = None, strides: Any = None) -> VMUNetV2:
    """VM-UNet-V2: VSS encoder, attention + SDI skips, transposed-conv decoder, deep supervision (2D).

    ``patch_size``: the patch embedding (4 in the paper); the heads are upsampled by it.
    """
    _plan_keywords_ignored(n_stages, features_per_stage, kernel_sizes, strides)
    return VMUNetV2(in_channels, num_classes, dims, tuple(depths), mid_channels, d_state, deep_supervision,
                    patch_size)


ULTRALIGHT_C_LIST = (8, 16, 24, 32, 48, 64)


@register_model(family="mamba", spatial_dims=(2,), deep_supervision=False,
                paper="Wu et al., UltraLight VM-UNet: Parallel Vision Mamba Significantly Reduces Parameters for Skin "
                      "Lesion Segmentation, arXiv:2403.20035 (Fig. 2-3; 0.049M parameters, 0.060 GFLOPs at 256x256)",
                defaults=lambda d: {"c_list": list(ULTRALIGHT_C_LIST), "bridge": True},
                tiny_kwargs={"c_list": [4, 8, 8, 8, 16, 16]},
                extra={"tags": ["mamba", "lightweight", "attention"], "paper_params": 0.049e6, "paper_gflops": 0.060,
                       "paper_patch": [256, 256], "paper_setup": "2D, 3 in, 1 class (ISIC 2017/2018), 256x256, "
                                                                 "c_list 8,16,24,32,48,64, bridge on",
                       "divisible_by": 32, "pads_input": True, "kwargs_note": PLAN_NOTE})
def ultralight_vmunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                      c_list: Sequence[int] = ULTRALIGHT_C_LIST, bridge: bool = True, n_stages: Any = None,
                      features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> LevelUNet:
    """UltraLight VM-UNet: 3 conv levels, 3 Parallel-Vision-Mamba levels, attention bridge (2D)."""
    _plan_keywords_ignored(n_stages, features_per_stage, kernel_sizes, strides)

    def unit(cin: int, cout: int, level: int) -> nn.Module:
        return nn.Conv2d(cin, cout, 3, 1, 1) if level < 3 else PVMLayer(cin, cout)

    model = LevelUNet(in_channels, num_classes, c_list, unit, bridge)
    model.apply(init_level_unet_)  # over the Mamba layers too, as the reference
    return model


H_VMUNET_C_LIST = (8, 16, 32, 64, 128, 256)


@register_model(family="mamba", spatial_dims=(2,), deep_supervision=False,
                paper="Wu et al., H-vmunet: High-order Vision Mamba UNet for Medical Image Segmentation, "
                      "arXiv:2403.13642 (Fig. 2-4; 67.28% fewer parameters than VM-UNet)",
                defaults=lambda d: {"c_list": list(H_VMUNET_C_LIST), "depths": [2, 2, 2, 2], "bridge": True},
                tiny_kwargs={"c_list": [4, 4, 8, 16, 32, 32], "depths": [1, 1, 1, 1]},
                extra={"tags": ["mamba", "attention"], "paper_params": None,
                       "paper_setup": "no absolute count printed in the text we could read: the abstract says 67.28% "
                                      "fewer parameters than VM-UNet (27.43M -> 8.97M); 3 in, 1 class, 256x256, "
                                      "c_list 8..256, depths 2,2,2,2", "divisible_by": 32, "pads_input": True,
                       "kwargs_note": PLAN_NOTE})
def h_vmunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             c_list: Sequence[int] = H_VMUNET_C_LIST, depths: Sequence[int] = (2, 2, 2, 2), bridge: bool = True,
             n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
             strides: Any = None) -> LevelUNet:
    """H-vmunet: 2 conv levels, then High-order VSS blocks of orders 2..5, attention bridge (2D)."""
    _plan_keywords_ignored(n_stages, features_per_stage, kernel_sizes, strides)
    if len(depths) != 4:
        raise ValueError(f"depths: one per H-VSS level (4), got {list(depths)}")

    def unit(cin: int, cout: int, level: int) -> nn.Module:
        if level < 2:
            return nn.Conv2d(cin, cout, 3, 1, 1)
        blocks = [HighOrderVSSBlock(cin, order=level) for _ in range(depths[level - 2])]
        return nn.Sequential(*blocks, nn.Conv2d(cin, cout, 3, 1, 1))

    model = LevelUNet(in_channels, num_classes, c_list, unit, bridge)
    model.apply(init_level_unet_)
    return model
