"""RWKV-UNet: a U-Net whose encoder mixes convolutions with Vision-RWKV token mixing (family ``rwkv``).

Jiang, Zhang, Liu, Gao, Hu, Xue, Liu, Yan, "RWKV-UNet: Improving UNet with Long-Range Cooperation
for Effective Medical Image Segmentation", arXiv:2501.08458, Fig. 2-4: an encoder of Global-Local
Spatial Perception blocks (GLSP: 1x1 expansion, a Vision-RWKV spatial mix in the two deep stages,
a depth-wise 5x5 conv, 1x1 projection; inverted-residual style), Cross-Channel Mix (CCM) on the
three shallower skips, a decoder of large-kernel (9x9 depth-wise) blocks with bilinear upsampling.
Variants T, S, B (B is the default, the paper's main model). Reference code:
juntaoJianggavin/RWKV-UNet ``rwkv_unet.py`` (encoders ``RWKV_UNet_encoder_T/S/B``, ``UpBlock``,
``GLSP``, ``VRWKV_SpatialMix``); its ``ccm/ccm.py`` and ``module/basic_modules.py`` were not in
the code index: CCM follows the paper's Fig. 4 (project every skip to the shallowest one's width
and size, a Vision-RWKV channel mix over the concatenation, split, project back, resize back),
and conv-norm-act follows EMO's ``ConvNormAct`` (padding ``ceil((k - s) / 2)``, no bias,
batch norm eps 1e-6) which the reference imports.

The WKV operator (Vision-RWKV, Duan et al., arXiv:2403.02308, Eq. 5: bidirectional, decay
``w / T`` per token of distance, bonus ``u / T`` for the token itself) is computed in plain
PyTorch by two :func:`~unetkit.models.ssm_blocks.linear_scan` passes (forwards and backwards),
exact and linear in the number of tokens, so it runs on any device (the reference needs its CUDA
kernel, limited to 1024 tokens).

Differences: the reference builds modules its segmentation forward never uses (a second layer
norm in every GLSP, an RWKV spatial mix in the GLSPs without attention, a layer norm in every
decoder block, the classification head and norm of the ImageNet encoder); they are not built. No
stochastic depth. The input is not repeated to 3 channels (the stem takes ``in_channels``). As in
the reference, the logits are upsampled bilinearly from half resolution (``extra["output_stride"]``
2: a rule that changes from pixel to pixel cannot be fitted exactly). The
paper prints no parameter count we could read; the count of what the reference's forward uses is
pinned in tests/test_zoo_mamba.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.lightweight import ChannelLayerNorm
from unetkit.models.registry import register_model
from unetkit.models.ssm_blocks import linear_scan, no_autocast
from unetkit.models.vmamba import PLAN_NOTE

NORM_EPS = 1e-6


def bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bidirectional WKV (Vision-RWKV Eq. 5):
    ``y_t = (sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t) / (same with v = 1)``.

    Args:
        w, u: per-channel decay and bonus (C,).
        k, v: keys and values (B, T, C).

    Returns:
        (B, T, C). Exponents are shifted by the per-channel maximum key (the ratio is unchanged).
    """
    m = k.detach().amax(1, keepdim=True)
    ek = torch.exp(k - m)
    z = torch.stack((ek * v, ek), -1)  # numerator and denominator terms, (B, T, C, 2)
    decay = torch.exp(-w).view(1, 1, -1, 1)
    ahead = linear_scan(decay, z)  # sum over i <= t of e^{-(t-i) w} z_i
    behind = linear_scan(decay, z, reverse=True)  # sum over i >= t of e^{-(i-t) w} z_i
    others = F.pad(ahead[:, :-1], (0, 0, 0, 0, 1, 0)) + F.pad(behind[:, 1:], (0, 0, 0, 0, 0, 1))
    own = torch.exp(u + k - m)
    num = others[..., 0] + own * v
    den = others[..., 1] + own
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def q_shift(x: torch.Tensor, size: Sequence[int], shift: int = 1) -> torch.Tensor:
    """Vision-RWKV's quad-directional token shift: channel quarters shifted by ``shift`` pixels
    right, left, down, up (zeros enter), the rest unchanged. (B, T, C) tokens of an (H, W) grid."""
    b, _, c = x.shape
    h, w = size
    g = c // 4
    img = x.transpose(1, 2).reshape(b, c, h, w)
    out = torch.zeros_like(img)
    out[:, :g, :, shift:] = img[:, :g, :, :w - shift]
    out[:, g:2 * g, :, :w - shift] = img[:, g:2 * g, :, shift:]
    out[:, 2 * g:3 * g, shift:] = img[:, 2 * g:3 * g, :h - shift]
    out[:, 3 * g:4 * g, :h - shift] = img[:, 3 * g:4 * g, shift:]
    out[:, 4 * g:] = img[:, 4 * g:]
    return out.flatten(2).transpose(1, 2)


def _mix(x: torch.Tensor, shifted: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return x * ratio + shifted * (1 - ratio)


class SpatialMix(nn.Module):
    """Vision-RWKV spatial mix (``VRWKV_SpatialMix``): token shift, interpolation with the shifted
    tokens (learned ratios, 0.5 at start) into key, value, receptance; bidirectional WKV with
    ``decay / T`` and ``first / T``; layer norm; gated by ``sigmoid(r)``; output projection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.spatial_decay = nn.Parameter(torch.zeros(dim))
        self.spatial_first = nn.Parameter(torch.zeros(dim))
        self.spatial_mix_k = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.spatial_mix_v = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.spatial_mix_r = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.key_norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        t = x.shape[1]
        xx = q_shift(x, size)
        k = self.key(_mix(x, xx, self.spatial_mix_k))
        v = self.value(_mix(x, xx, self.spatial_mix_v))
        r = self.receptance(_mix(x, xx, self.spatial_mix_r))
        y = bi_wkv(self.spatial_decay / t, self.spatial_first / t, k, v)
        return self.output(torch.sigmoid(r) * self.key_norm(y))


class ChannelMix(nn.Module):
    """Vision-RWKV channel mix (``VRWKV_ChannelMix``, hidden ratio 2): token shift and
    interpolation into key and receptance, ``sigmoid(r) * value(LN(relu(key)^2))``."""

    def __init__(self, dim: int, hidden_rate: int = 2) -> None:
        super().__init__()
        hidden = hidden_rate * dim
        self.spatial_mix_k = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.spatial_mix_r = nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.key = nn.Linear(dim, hidden, bias=False)
        self.key_norm = nn.LayerNorm(hidden)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        xx = q_shift(x, size)
        k = self.key_norm(torch.square(torch.relu(self.key(_mix(x, xx, self.spatial_mix_k)))))
        return torch.sigmoid(self.receptance(_mix(x, xx, self.spatial_mix_r))) * self.value(k)


def conv_norm_act(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, norm: bool = True,
                  act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """EMO's ConvNormAct: conv without bias, padding ``ceil((k - s) / 2)``, batch norm (eps 1e-6), act."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, math.ceil((kernel - stride) / 2), groups=groups,
                                         bias=False)]
    if norm:
        layers.append(nn.BatchNorm2d(cout, eps=NORM_EPS))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (timm's ``SqueezeExcite``): mean, 1x1 conv to ``ratio`` x C, act, 1x1
    conv back, sigmoid gate."""

    def __init__(self, channels: int, ratio: float, act: type[nn.Module]) -> None:
        super().__init__()
        hidden = round(channels * ratio)
        self.reduce, self.act, self.expand = nn.Conv2d(channels, hidden, 1), act(), nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


_NORMS = {"bn": lambda c: nn.BatchNorm2d(c, eps=NORM_EPS), "ln": lambda c: ChannelLayerNorm(c, eps=NORM_EPS)}
_ACTS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


class GLSP(nn.Module):
    """Global-Local Spatial Perception block (Fig. 3): [norm], 1x1 conv-BN-ReLU to ``exp`` x the
    width, [``x + LN(SpatialMix(x))`` over the pixels], depth-wise ``dw`` x ``dw`` conv-BN-SiLU
    (stride 2 in a stage's first block) [+ squeeze-excitation], 1x1 projection without norm;
    residual where width and size are kept."""

    def __init__(self, cin: int, cout: int, exp_ratio: float, stride: int = 1, dw: int = 5, norm: str | None = "bn",
                 act: str = "silu", attention: bool = False, se_ratio: float = 0.0, skip: bool = True) -> None:
        super().__init__()
        mid = int(cin * exp_ratio)
        self.norm = _NORMS[norm](cin) if norm else nn.Identity()
        self.conv = conv_norm_act(cin, mid, 1)
        self.attention = SpatialMix(mid) if attention else None
        self.ln1 = nn.LayerNorm(mid) if attention else None
        self.conv_local = conv_norm_act(mid, mid, dw, stride, groups=mid, act=nn.SiLU)
        self.se = SqueezeExcite(mid, se_ratio, _ACTS[act]) if se_ratio > 0 else nn.Identity()
        self.proj = conv_norm_act(mid, cout, 1, norm=False, act=None)
        self.skip = skip and cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.norm(x))
        if self.attention is not None:
            b, c, h, w = y.shape
            with no_autocast(y.device):
                t = y.float().flatten(2).transpose(1, 2)
                t = t + self.ln1(self.attention(t, (h, w)))
            y = t.transpose(1, 2).reshape(b, c, h, w).to(y.dtype)
        local = self.se(self.conv_local(y))
        y = self.proj(y + local if self.skip else local)
        return x + y if self.skip else y


class UpBlock(nn.Module):
    """Decoder block: 1x1 conv-BN-ReLU, depth-wise 9x9 conv-BN-SiLU, 1x1 conv-BN-ReLU to ``cout``,
    bilinear upsampling x2."""

    def __init__(self, cin: int, cout: int, dw: int = 9) -> None:
        super().__init__()
        self.conv = conv_norm_act(cin, cin, 1)
        self.conv_local = conv_norm_act(cin, cin, dw, groups=cin, act=nn.SiLU)
        self.proj = conv_norm_act(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.conv_local(self.conv(x)))
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class CrossChannelMix(nn.Module):
    """CCM (Fig. 4): each skip projected (1x1) to ``dim`` channels at the size of the last
    (shallowest) one (bilinear), concatenated, ``x + LN(ChannelMix(x))`` over the pixels, split,
    projected back to each skip's width (1x1) and resized to its size."""

    def __init__(self, widths: Sequence[int], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.projections = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in widths])
        self.ln1 = nn.LayerNorm(dim * len(widths))
        self.channel = ChannelMix(dim * len(widths))
        self.final_projections = nn.ModuleList([nn.Conv2d(dim, c, 1) for c in widths])

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        size = skips[-1].shape[2:]
        x = torch.cat([p(F.interpolate(s, size=size, mode="bilinear", align_corners=False))
                       for p, s in zip(self.projections, skips)], 1)
        b, c, h, w = x.shape
        dtype = x.dtype
        with no_autocast(x.device):
            t = x.float().flatten(2).transpose(1, 2)
            t = t + self.ln1(self.channel(t, (h, w)))
        x = t.transpose(1, 2).reshape(b, c, h, w).to(dtype)
        return [F.interpolate(p(chunk), size=s.shape[2:], mode="bilinear", align_corners=False)
                for p, chunk, s in zip(self.final_projections, x.split(self.dim, 1), skips)]


#: Encoder configurations of the reference (``RWKV_UNet_encoder_T/S/B``).
RWKV_UNET_VARIANTS: dict[str, dict[str, Any]] = {
    "t": {"depths": [2, 2, 4, 2], "embed_dims": [32, 48, 96, 160], "exp_ratios": [2.0, 2.5, 3.0, 3.5]},
    "s": {"depths": [3, 3, 6, 3], "embed_dims": [32, 64, 128, 192], "exp_ratios": [2.0, 2.5, 3.0, 4.0]},
    "b": {"depths": [3, 3, 6, 3], "embed_dims": [48, 72, 144, 240], "exp_ratios": [2.0, 2.5, 4.0, 4.0]},
}
STAGE_NORMS, STAGE_ACTS, STAGE_ATTENTION = ("bn", "bn", "ln", "ln"), ("silu", "silu", "gelu", "gelu"), (False, False,
                                                                                                         True, True)


class RWKVUNet(nn.Module):
    """RWKV-UNet: a GLSP stem (full resolution, with squeeze-excitation), 4 GLSP stages (the first
    block of each halves the size and doubles the expansion; RWKV spatial mixing in stages 3-4),
    CCM over the outputs of stages 1-3, decoder blocks on concatenations, a 1x1 head.

    Example:
        >>> RWKVUNet(1, 9, **RWKV_UNET_VARIANTS["t"])(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 9, 64, 64])
    """

    def __init__(self, in_channels: int, num_classes: int, depths: Sequence[int], embed_dims: Sequence[int],
                 exp_ratios: Sequence[float], stem_dim: int = 24, dw: int = 5, decoder_dim: int = 24) -> None:
        super().__init__()
        if not len(depths) == len(embed_dims) == len(exp_ratios) == 4:
            raise ValueError(f"depths, embed_dims, exp_ratios need 4 stages each, got {depths}, {embed_dims}, {exp_ratios}")
        e = [int(v) for v in embed_dims]
        self.divisible_by = 16
        self.stem = GLSP(in_channels, stem_dim, 1.0, dw=dw, norm=None, se_ratio=1.0, skip=False)
        stages, cin = [], stem_dim
        for i, depth in enumerate(depths):
            blocks = [GLSP(cin, e[i], exp_ratios[i] * 2, 2, dw, STAGE_NORMS[i], STAGE_ACTS[i], skip=False)]
            blocks += [GLSP(e[i], e[i], exp_ratios[i], 1, dw, STAGE_NORMS[i], STAGE_ACTS[i], STAGE_ATTENTION[i])
                       for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = e[i]
        self.stages = nn.ModuleList(stages)
        self.ccm = CrossChannelMix([e[2], e[1], e[0]], e[0])
        self.decoder = nn.ModuleList([UpBlock(e[3], e[2]), UpBlock(2 * e[2], e[1]), UpBlock(2 * e[1], e[0]),
                                      UpBlock(2 * e[0], decoder_dim)])
        self.final_conv = nn.Conv2d(decoder_dim, num_classes, 1)
        for m in [self.stem, *self.stages]:
            m.apply(_init_encoder_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        mixed = self.ccm(skips[2::-1])  # stages 3, 2, 1
        x = self.decoder[0](x)
        for up, skip in zip(self.decoder[1:], mixed):
            x = up(torch.cat((x, skip), 1))
        return crop_to(self.final_conv(x), size)


def _init_encoder_(m: nn.Module) -> None:
    """The reference encoder's ``_init_weights``: truncated normal (0.02) linear weights, zero
    biases, unit norms. (The RWKV mixing ratios, decay and bonus keep their 0.5 / 0 start.)"""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


RWKV_UNET_PAPER = ("Jiang et al., RWKV-UNet: Improving UNet with Long-Range Cooperation for Effective Medical Image "
                   "Segmentation, arXiv:2501.08458 (Fig. 2-4; Vision-RWKV: Duan et al., arXiv:2403.02308, Eq. 5)")


@register_model(family="rwkv", paper=RWKV_UNET_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=lambda d: {"variant": "b"},
                tiny_kwargs={"depths": [1, 2, 2, 2], "embed_dims": [8, 8, 16, 16], "exp_ratios": [1, 1, 1, 1],
                             "stem_dim": 8, "decoder_dim": 16},
                extra={"tags": ["rwkv", "hybrid", "pretrainable-encoder"], "paper_params": None,
                       "paper_setup": "no count printed in the text we could read; official code (RWKV_UNet, "
                                      "encoder B), 1 in, 9 classes (Synapse), 224x224: counted in "
                                      "tests/test_zoo_mamba.py", "divisible_by": 16, "pads_input": True,
                       "output_stride": 2, "kwargs_note": PLAN_NOTE})
def rwkv_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              variant: str = "b", depths: Sequence[int] | None = None, embed_dims: Sequence[int] | None = None,
              exp_ratios: Sequence[float] | None = None, stem_dim: int = 24, decoder_dim: int = 24,
              n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
              strides: Any = None) -> RWKVUNet:
    """RWKV-UNet: GLSP (conv + Vision-RWKV) encoder, cross-channel-mix skips, large-kernel decoder (2D).

    ``variant`` ``"t"``, ``"s"`` or ``"b"`` picks the reference's encoder; ``depths``,
    ``embed_dims``, ``exp_ratios`` override it.
    """
    del n_stages, features_per_stage, kernel_sizes, strides  # fixed design
    if variant not in RWKV_UNET_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(RWKV_UNET_VARIANTS)}, got {variant!r}")
    cfg = RWKV_UNET_VARIANTS[variant]
    return RWKVUNet(in_channels, num_classes, depths or cfg["depths"], embed_dims or cfg["embed_dims"],
                    exp_ratios or cfg["exp_ratios"], stem_dim, decoder_dim=decoder_dim)
