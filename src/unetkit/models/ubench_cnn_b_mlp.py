"""Rolling-UNet: a CNN + rolling-MLP U-Net (family ``ubench_mlp``).

Liu, Zhu, Liu, Yu, Chen, Gao, "Rolling-Unet: Revitalizing MLP's Ability to Efficiently Extract
Long-Distance Dependencies for Medical Image Segmentation", AAAI 2024, Fig. 2-4 and Table 1
(Rolling-Unet S / M / L: 1.78M / 7.10M / 28.32M parameters at 256x256, 3 in, 1 class). Reference
code: github.com/Jiaoyang45/Rolling-Unet ``archs.py`` (read, not copied).

- **R-MLP**: channel ``c`` of a (C, H, W) map is rolled (circularly) by ``c`` pixels along one axis,
  then a linear layer mixes the channels of every pixel: each output pixel sees a different pixel of
  every channel, so one layer reaches across the whole image along that axis.
- **OR-MLP**: two R-MLPs on perpendicular axes (the first followed by GELU); **DOR-MLP**: two OR-MLPs
  (height-then-width and, with the opposite roll, width-then-height), each added to the input,
  concatenated, LayerNorm, linear back to C, plus the input.
- **Lo2 block**: DOR-MLP beside a depthwise-separable convolution (3x3 depthwise + 1x1, ReLU, BN),
  concatenated and projected back to C (no outer residual, as the reference).
- **Network**: three double-conv stages (max-pool between), a Feature Incentive block (3x3 conv, GELU,
  LayerNorm) + Lo2 at 1/8, the same at the 1/16 bottleneck (dropout 0.1 / 0.2 / 0.3 for S / M / L),
  back to 1/8 with another Feature Incentive block, Lo2, a conv + BN + ReLU to the 1/4 width, and
  decoder double convs with bilinear upsampling and additive skips; a 1x1 head. Patches: multiples of 16.

The reference's ``Lo2Block`` also builds a LayerNorm that its forward never uses (2C parameters per
block, 1,024 in S); we leave it out (an unused parameter gets no gradient), so our counts are that much
lower than the reference code's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.lightweight import ChannelLayerNorm
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_b_common import (
    PLAN_NOTE,
    DoubleConv,
    TokenEmbed,
    WideningDoubleConv,
    crop_to,
    init_token_mixer_,
    max_pool2,
    pad_input,
    pooled_encoder,
    up2,
)


def roll_channels(x: torch.Tensor, axis: int, sign: int = 1) -> torch.Tensor:
    """Channel ``c`` of ``x`` (B, C, H, W) rolled circularly by ``sign * c`` along ``axis`` (2 or 3):
    ``out[:, c, i] = x[:, c, (i - sign * c) mod L]``, as ``torch.roll`` per channel, in one gather."""
    channels, length = x.shape[1], x.shape[axis]
    c = torch.arange(channels, device=x.device).view(-1, 1)
    index = (torch.arange(length, device=x.device).view(1, -1) - sign * c) % length  # (C, L)
    shape = [1, channels, 1, 1]
    shape[axis] = length
    return torch.gather(x, axis, index.view(shape).expand_as(x))


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A linear layer over the channels of a (B, C, H, W) map."""
    return layer(x.movedim(1, -1)).movedim(-1, 1)


class Lo2(nn.Module):
    """The Long-Local block (Rolling-UNet Fig. 3): DOR-MLP (long-range, rolled channels) beside a
    depthwise-separable convolution (local), fused by a linear layer. Input and output (B, C, H, W)."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(dim, dim) for _ in range(4))  # two OR-MLPs of two R-MLPs each
        self.norm = nn.LayerNorm(2 * dim)
        self.fuse_long = nn.Linear(2 * dim, dim)
        self.depthwise = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.pointwise = nn.Conv2d(dim, dim, 1)
        self.bn = nn.BatchNorm2d(dim)
        self.fuse = nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def _or_mlp(self, x: torch.Tensor, first: nn.Linear, second: nn.Linear, axes: tuple[int, int],
                sign: int) -> torch.Tensor:
        """Two perpendicular R-MLPs: roll along ``axes[0]`` (by ``sign * c``), linear, GELU; roll along
        ``axes[1]`` (by ``+c``), linear."""
        y = self.drop(F.gelu(_linear(first, roll_channels(x, axes[0], sign))))
        return self.drop(_linear(second, roll_channels(y, axes[1])))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height_width = self._or_mlp(x, self.fc[0], self.fc[1], (2, 3), 1) + x
        width_height = self._or_mlp(x, self.fc[2], self.fc[3], (3, 2), -1) + x
        both = torch.cat((height_width, width_height), dim=1).movedim(1, -1)
        long_range = self.drop(self.fuse_long(self.norm(both))) + x.movedim(1, -1)
        local = self.bn(F.relu(self.pointwise(self.depthwise(x)))).movedim(1, -1)
        return self.drop(self.fuse(torch.cat((long_range, local), dim=-1))).movedim(-1, 1)


class RollingUNet(nn.Module):
    """Rolling-UNet (module docstring). ``widths`` = embed_dims (5 values), ``head_width`` = the last
    decoder conv's width (8 / 16 / 32 for S / M / L), ``bottleneck_dropout`` = the bottleneck Lo2's dropout."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], head_width: int,
                 bottleneck_dropout: float) -> None:
        super().__init__()
        e = [int(w) for w in widths]
        if len(e) != 5 or any(w < 1 for w in e):
            raise ValueError(f"Rolling-UNet needs 5 positive widths, got {e}")
        self.encoder = nn.ModuleList(DoubleConv(2, cin, cout) for cin, cout in zip([in_channels] + e[:2], e[:3]))
        self.embed4 = TokenEmbed(e[2], e[3], 1, gelu=True)
        self.lo2_4 = Lo2(e[3])
        self.norm4 = ChannelLayerNorm(e[3])
        self.embed5 = TokenEmbed(e[3], e[4], 1, gelu=True)
        self.lo2_5 = Lo2(e[4], bottleneck_dropout)
        self.norm5 = ChannelLayerNorm(e[4])
        self.unembed5 = TokenEmbed(e[4], e[3], 1, gelu=True)
        self.lo2_up4 = Lo2(e[3])
        self.norm_up4 = ChannelLayerNorm(e[3])
        self.up4 = nn.Sequential(nn.Conv2d(e[3], e[2], 3, 1, 1), nn.BatchNorm2d(e[2]), nn.ReLU(inplace=True))
        self.decoder = nn.ModuleList([WideningDoubleConv(2, e[2], e[1]), WideningDoubleConv(2, e[1], e[0]),
                                      WideningDoubleConv(2, e[0], head_width)])
        self.head = nn.Conv2d(head_width, num_classes, 1)
        self.deep_supervision = False
        for module in (self.embed4, self.lo2_4, self.embed5, self.lo2_5, self.unembed5, self.lo2_up4):
            module.apply(init_token_mixer_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_input(x, 16)
        skips = pooled_encoder(self.encoder, x)
        t4 = self.norm4(self.lo2_4(self.embed4(max_pool2(skips[-1]))))
        x = self.norm5(self.lo2_5(self.embed5(max_pool2(t4))))
        x = up2(self.unembed5(x)) + t4
        x = up2(self.up4(self.norm_up4(self.lo2_up4(x))))
        for i, stage in enumerate(self.decoder):
            x = stage(x + skips.pop())
            if i < len(self.decoder) - 1:
                x = up2(x)
        return crop_to(self.head(x), size)


ROLLING_PRESETS = {
    "s": {"widths": [16, 32, 64, 128, 256], "head_width": 8, "bottleneck_dropout": 0.1, "params": "1.78M"},
    "m": {"widths": [32, 64, 128, 256, 512], "head_width": 16, "bottleneck_dropout": 0.2, "params": "7.10M"},
    "l": {"widths": [64, 128, 256, 512, 1024], "head_width": 32, "bottleneck_dropout": 0.3, "params": "28.32M"},
}
ROLLING_PAPER = ("Liu et al., Rolling-Unet: Revitalizing MLP's Ability to Efficiently Extract Long-Distance "
                 "Dependencies for Medical Image Segmentation, AAAI 2024 (Fig. 2-4; Table 1: {size} {params} "
                 "parameters, 256x256)")


def _register_rolling(size: str) -> None:
    preset = ROLLING_PRESETS[size]

    def defaults(spatial_dims: int) -> dict[str, Any]:
        return {"widths": list(preset["widths"]), "head_width": preset["head_width"],
                "bottleneck_dropout": preset["bottleneck_dropout"]}

    def build(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
              widths: Sequence[int] | None = None, head_width: int | None = None,
              bottleneck_dropout: float | None = None, n_stages: Any = None, features_per_stage: Any = None,
              kernel_sizes: Any = None, strides: Any = None) -> RollingUNet:
        return RollingUNet(in_channels, num_classes, widths or preset["widths"],
                           preset["head_width"] if head_width is None else head_width,
                           preset["bottleneck_dropout"] if bottleneck_dropout is None else bottleneck_dropout)

    build.__doc__ = (f"Rolling-UNet {size.upper()}: double-conv stages, then Lo2 (rolling-MLP + separable conv) "
                     f"blocks at 1/8 and 1/16 (2D, no deep supervision).")
    build.__name__ = f"rolling_unet_{size}"
    paper_params = float(preset["params"][:-1]) * 1e6
    register_model(family="ubench_mlp", spatial_dims=(2,), deep_supervision=False, name=f"rolling_unet_{size}",
                   paper=ROLLING_PAPER.format(size=size.upper(), params=preset["params"]), defaults=defaults,
                   tiny_kwargs={"widths": [8, 16, 16, 32, 32], "head_width": 8, "bottleneck_dropout": 0.0},
                   extra={"tags": ["mlp", "cnn"], "divisible_by": 16, "pads_input": True,
                          "paper_params": paper_params,
                          "paper_setup": f"2D, 3 in, 1 class, 256x256, embed dims {preset['widths']}",
                          "kwargs_note": PLAN_NOTE})(build)


for _size in ROLLING_PRESETS:
    _register_rolling(_size)
