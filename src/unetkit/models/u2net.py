"""U²-Net and the small U²-Net† (family ``u2net``): nested U-structure of residual U-blocks.

Qin, Zhang, Huang, Dehghan, Zaiane, Jagersand, "U²-Net: Going Deeper with Nested U-Structure for
Salient Object Detection", Pattern Recognition 106, 2020 (Fig. 2 RSU, Fig. 5 network, Table 1
configurations; Sec. 4: U²-Net 176.3 MB and U²-Net† 4.7 MB of fp32 weights, i.e. 44.0M and 1.13M
parameters). Reference code: xuebinqin/U-2-Net (``U2NET``, ``U2NETP``):

- REBNCONV: 3x3 conv (with bias, optional dilation) - BN - ReLU;
- RSU-L (Fig. 2): an input REBNCONV to ``out``, an encoder of L-1 REBNCONV at ``mid`` with 2x2
  max pooling (ceil mode) between them, a dilation-2 REBNCONV at the bottom, a decoder of
  REBNCONV on the concatenation with bilinear upsampling to the skip's size, and the residual
  addition of the input REBNCONV's output;
- RSU-4F: the same without pooling, dilations 1, 2, 4, 8 (for the low-resolution stages);
- the network: En_1..En_4 = RSU-7, 6, 5, 4, En_5, En_6 = RSU-4F, with 2x2 max pooling (ceil mode)
  between stages; De_5..De_1 mirror them on the concatenation of the upsampled deeper output and
  the skip; a 3x3 side head on De_1..De_5 and En_6, each upsampled to the input size; the fused
  output is a 1x1 conv over the six concatenated side outputs.

With 3 input channels and 1 class: U²-Net 44,009,869 and U²-Net† 1,131,181 parameters (the paper's
176.3 MB and 4.7 MB divided by 4 bytes). Any patch size works (ceil-mode pooling and resampling to
the skip's size).

Deep-supervision outputs (unetkit contract: full resolution first, then one per coarser level):
the fused output, then the side outputs of De_2..De_5 and En_6 at their own resolution. The
paper supervises the full-resolution side S1 as well; the contract has one output per resolution,
so S1 is trained through the fused output only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from unetkit.models.blocks import conv_class
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Shape, make_topology, per_stage_ints
from unetkit.models.unet_classic import ConvNormReLU, init_kaiming_relu_, max_pool, resize_to

QIN_PAPER = ("Qin et al., U²-Net: Going Deeper with Nested U-Structure for Salient Object Detection, Pattern "
             "Recognition 106, 2020 (Fig. 2, 5; Table 1; 176.3 MB = 44.0M, U²-Net† 4.7 MB = 1.13M)")

#: (encoder out, encoder mid, decoder mid) per level of the paper's Table 1.
U2NET_FULL = {"features_per_stage": [64, 128, 256, 512, 512, 512], "mid_channels": [32, 32, 64, 128, 256, 256],
              "decoder_mid_channels": [16, 32, 64, 128, 256]}
U2NET_SMALL = {"features_per_stage": [64] * 6, "mid_channels": [16] * 6, "decoder_mid_channels": [16] * 5}


class RSU(nn.Module):
    """Residual U-block RSU-L (``dilated=False``) or RSU-4F (``dilated=True``, L = 4).

    Args:
        spatial_dims: 2 or 3.
        height: L, the number of encoder REBNCONVs including the dilated bottom one.
        in_channels, mid_channels, out_channels: widths (C_in, M, C_out in the paper's Fig. 2).
        kernel_size: kernel of every convolution.
        dilated: RSU-4F: dilations 1, 2, 4, 8 instead of pooling.
        norm: ``"batch"`` (paper) or ``"instance"`` / ``"none"``.
    """

    def __init__(self, spatial_dims: int, height: int, in_channels: int, mid_channels: int, out_channels: int,
                 kernel_size: Shape, dilated: bool = False, norm: str = "batch") -> None:
        super().__init__()
        if height < 2:
            raise ValueError(f"an RSU needs a height of at least 2, got {height}")
        self.dilated = dilated
        self.conv_in = ConvNormReLU(spatial_dims, in_channels, out_channels, kernel_size, norm)
        dil = [2 ** i for i in range(height)] if dilated else [1] * (height - 1) + [2]
        self.encoder = nn.ModuleList([ConvNormReLU(spatial_dims, out_channels if i == 0 else mid_channels,
                                                   mid_channels, kernel_size, norm, dilation=dil[i])
                                      for i in range(height)])
        self.decoder = nn.ModuleList([ConvNormReLU(spatial_dims, 2 * mid_channels,
                                                   out_channels if i == 0 else mid_channels, kernel_size, norm,
                                                   dilation=dil[i]) for i in range(height - 1)])
        self.pool = max_pool(spatial_dims, (2,) * spatial_dims, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hin = self.conv_in(x)
        h, skips = hin, []
        last = len(self.encoder) - 1
        for i, conv in enumerate(self.encoder):
            if i > 0 and i < last and not self.dilated:
                h = self.pool(h)
            h = conv(h)
            skips.append(h)
        h = skips.pop()
        for i in range(len(self.decoder) - 1, -1, -1):
            skip = skips.pop()
            h = self.decoder[i](torch.cat((resize_to(h, skip.shape[2:]), skip), dim=1))
        return h + hin


class U2Net(nn.Module):
    """U²-Net over ``n`` stages (paper: 6); the last two stages are RSU-4F, the others RSU-(7-i).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: output channels.
        features_per_stage: encoder stage outputs (paper Table 1).
        mid_channels: encoder stage mid widths.
        decoder_mid_channels: decoder stage mid widths, shallowest first (``n - 1``).
        kernel_sizes: kernel per stage.
        strides: pooling between stages (``strides[0]`` is all ones).
        norm: ``"batch"`` (paper) or ``"instance"`` / ``"none"``.
        deep_supervision: return the fused output, then the coarser side outputs.

    Example:
        >>> net = U2Net(2, 3, 1, **U2NET_SMALL)
        >>> [o.shape[2:] for o in net(torch.zeros(1, 3, 100, 60))]   # 100x60, 50x30, 25x15, ...
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, features_per_stage: Sequence[int],
                 mid_channels: Sequence[int], decoder_mid_channels: Sequence[int], kernel_sizes: Any = None,
                 strides: Any = None, norm: str = "batch", deep_supervision: bool = True) -> None:
        super().__init__()
        topo = make_topology(spatial_dims, len(features_per_stage), features_per_stage, kernel_sizes, strides)
        if any(s != 1 for s in topo.strides[0]):
            raise ValueError(f"strides[0] must be all ones, got {list(topo.strides[0])}")
        self.topology = topo
        n = topo.n_stages
        out, k = topo.features_per_stage, topo.kernel_sizes
        mid = per_stage_ints("mid_channels", mid_channels, n)
        dmid = per_stage_ints("decoder_mid_channels", decoder_mid_channels, n - 1)

        def height(i: int) -> tuple[int, bool]:
            return (4, True) if i >= n - 2 else (max(7 - i, 4), False)

        self.encoder = nn.ModuleList([RSU(spatial_dims, *height(i)[:1], in_channels if i == 0 else out[i - 1],
                                          mid[i], out[i], k[i], height(i)[1], norm) for i in range(n)])
        self.pools = nn.ModuleList([max_pool(spatial_dims, topo.strides[i + 1], ceil_mode=True) for i in range(n - 1)])
        # decoder level i (0..n-2): input = cat(deeper output, encoder skip i), output = out[i-1] (level 0: out[0])
        dec, ch = [], out[-1]
        dec_out = [out[max(i - 1, 0)] for i in range(n - 1)]
        for i in range(n - 2, -1, -1):
            dec.append(RSU(spatial_dims, *height(i)[:1], ch + out[i], dmid[i], dec_out[i], k[i], height(i)[1], norm))
            ch = dec_out[i]
        self.decoder = nn.ModuleList(dec)
        conv = conv_class(spatial_dims)
        side_in = dec_out + [out[-1]]  # levels 0..n-1
        self.sides = nn.ModuleList([conv(c, num_classes, 3, padding=1) for c in side_in])
        self.fuse = conv(n * num_classes, num_classes, 1)
        self.deep_supervision = deep_supervision
        self.apply(init_kaiming_relu_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if x.dim() - 2 != self.topology.spatial_dims:
            raise ValueError(f"expected a {self.topology.spatial_dims}D input (B, C, *patch), got {tuple(x.shape)}")
        full = x.shape[2:]
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else self.pools[i - 1](x))
            skips.append(x)
        n = len(skips)
        levels: list[torch.Tensor] = [skips[-1]]
        h = skips[-1]
        for d, i in enumerate(range(n - 2, -1, -1)):
            h = self.decoder[d](torch.cat((resize_to(h, skips[i].shape[2:]), skips[i]), dim=1))
            levels.insert(0, h)
        side = [head(level) for head, level in zip(self.sides, levels)]
        fused = self.fuse(torch.cat([resize_to(s, full) for s in side], dim=1))
        if not self.deep_supervision:
            return fused
        return [fused] + side[1:]


def _builder_kwargs(preset: dict[str, Any], features_per_stage: IntOrSeq | None, mid_channels: IntOrSeq | None,
                    decoder_mid_channels: IntOrSeq | None, n_stages: int | None) -> dict[str, Any]:
    """The preset, or widths from a plan: mids default to half the outputs (decoder level 0: a quarter)."""
    if features_per_stage is None and n_stages in (None, len(preset["features_per_stage"])):
        feats = list(preset["features_per_stage"])
        mids = list(preset["mid_channels"]) if mid_channels is None else mid_channels
        dmids = list(preset["decoder_mid_channels"]) if decoder_mid_channels is None else decoder_mid_channels
        return {"features_per_stage": feats, "mid_channels": mids, "decoder_mid_channels": dmids}
    if features_per_stage is None:
        features_per_stage = [preset["features_per_stage"][0] * 2 ** i for i in range(n_stages)]  # type: ignore[arg-type]
    feats = list(per_stage_ints("features_per_stage", features_per_stage,
                                n_stages or (len(features_per_stage) if isinstance(features_per_stage, Sequence)
                                             else len(preset["features_per_stage"]))))
    mids = mid_channels if mid_channels is not None else [max(f // 2, 1) for f in feats]
    mids_list = list(per_stage_ints("mid_channels", mids, len(feats)))
    dmids = decoder_mid_channels if decoder_mid_channels is not None else \
        [max(mids_list[0] // 2, 1)] + mids_list[1:len(feats) - 1]
    return {"features_per_stage": feats, "mid_channels": mids_list, "decoder_mid_channels": dmids}


def _defaults_for(preset: dict[str, Any]):
    def defaults(spatial_dims: int) -> dict[str, Any]:
        n = len(preset["features_per_stage"])
        return {"n_stages": n, **{k: list(v) for k, v in preset.items()},
                "kernel_sizes": [[3] * spatial_dims] * n, "strides": [[1] * spatial_dims] + [[2] * spatial_dims] * (n - 1),
                "norm": "batch"}
    return defaults


_TINY = {"n_stages": 4, "features_per_stage": [4, 8, 8, 8], "mid_channels": 4, "decoder_mid_channels": 4}


def _build(preset: dict[str, Any], spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool,
           n_stages: int | None, features_per_stage: IntOrSeq | None, mid_channels: IntOrSeq | None,
           decoder_mid_channels: IntOrSeq | None, kernel_sizes: Any, strides: Any, norm: str) -> U2Net:
    kw = _builder_kwargs(preset, features_per_stage, mid_channels, decoder_mid_channels, n_stages)
    return U2Net(spatial_dims, in_channels, num_classes, kernel_sizes=kernel_sizes, strides=strides, norm=norm,
                 deep_supervision=deep_supervision, **kw)


@register_model(family="u2net", paper=QIN_PAPER, defaults=_defaults_for(U2NET_FULL), tiny_kwargs=_TINY,
                extra={"tags": ["cnn", "nested", "multiscale", "residual"],
                       "divisible_by": 1, "paper_params": 44_000_000,
                       "paper_setup": "2D, 3 input channels, 1 class, Table 1 (176.3 MB fp32)"})
def u2net(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
          n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
          mid_channels: IntOrSeq | None = None, decoder_mid_channels: IntOrSeq | None = None,
          kernel_sizes: Any = None, strides: Any = None, norm: str = "batch") -> U2Net:
    """U²-Net (Qin et al. 2020): RSU-7/6/5/4/4F/4F stages, six side outputs fused (deep supervision).

    Default (paper Table 1): stage outputs 64, 128, 256, 512, 512, 512, batch norm; any patch size.
    3 input channels, 1 class: 44,009,869 parameters (paper 176.3 MB = 44.0M).
    """
    return _build(U2NET_FULL, spatial_dims, in_channels, num_classes, deep_supervision, n_stages,
                  features_per_stage, mid_channels, decoder_mid_channels, kernel_sizes, strides, norm)


@register_model(family="u2net", paper=QIN_PAPER, defaults=_defaults_for(U2NET_SMALL), tiny_kwargs=_TINY,
                extra={"tags": ["cnn", "nested", "multiscale", "residual", "lightweight"],
                       "divisible_by": 1, "paper_params": 1_130_000,
                       "paper_setup": "2D, 3 input channels, 1 class, Table 1 U²-Net† (4.7 MB fp32)"})
def u2net_small(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
                mid_channels: IntOrSeq | None = None, decoder_mid_channels: IntOrSeq | None = None,
                kernel_sizes: Any = None, strides: Any = None, norm: str = "batch") -> U2Net:
    """U²-Net† (Qin et al. 2020): the small version, every stage 16 mid / 64 out channels.

    3 input channels, 1 class: 1,131,181 parameters (paper 4.7 MB = 1.13M); any patch size.
    """
    return _build(U2NET_SMALL, spatial_dims, in_channels, num_classes, deep_supervision, n_stages,
                  features_per_stage, mid_channels, decoder_mid_channels, kernel_sizes, strides, norm)
