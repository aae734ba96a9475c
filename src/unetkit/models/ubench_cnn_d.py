"""U-Bench CNNs with redesigned skip pathways (family ``ubench_cnn``, issue 17, fourth batch).

- ``utanet``: Luo, Zhu, Zhang, Sun, "Rethinking U-Net: Task-Adaptive Mixture of Skip Connections for
  Enhanced Medical Image Segmentation" (UTANet), AAAI 2025. A U-Net whose encoder is a ResNet-34
  (a 3x3 conv-BN-ReLU stem at full resolution, max pool, then ResNet-34's four stages of basic
  blocks, 3/4/6/3 blocks of 64/128/256/512 channels, at 1/2 .. 1/16) and whose skips pass the
  task-adaptive mixture of skip connections (TA-MoSC): the first four encoder maps, resampled to
  1/2 (bilinear) and concatenated, are fused by a 1x1 conv-BN-ReLU to 64 channels; four routers
  (one per decoder stage) each pick, per image, the top 2 of 4 shared convolutional experts
  (1x1 conv 64->128, 1x1 conv 128->128, BN, ReLU, 1x1 conv 128->64) from the globally pooled fused
  map and sum their outputs with the renormalized (softmax again) top-2 weights; a 1x1 conv-BN-ReLU
  "docker" per stage maps each routed map to the skip width, resampled to the skip's level. The
  decoder is four stages of a 2x2 transposed conv-BN-ReLU (halving the width), concatenation with
  the routed skip, 3x3 conv-BN-ReLU (widths 256, 128, 64, 32); head 1x1 conv-BN-ReLU to 16, 1x1 conv.
  Official code: github.com/AshleyLuo001/UTANet (``utanet/UTANet.py``, ``ta_mosc.py``; U-Bench
  ``models/CNN/UTANet``). No parameter figure of the paper could be read through our tools; the
  count we give is the official code's for 3 in, 1 class, counted by hand layer by layer:
  23,754,433 for the layers the forward uses, 24,276,969 as ``model.parameters()`` of the official
  code sums them (it also keeps torchvision's whole ResNet-34, whose 7x7 stem, its BN and the
  1000-class classifier, 522,536 parameters, the forward never calls; ours leaves them out).

Differences, UTANet: the balanced-expert-utilization trick is kept (in training, an expert that no
image chose for a router still runs on one randomly drawn row of the router's (image, slot) list
and adds to that image's output, so that every expert is trained), but its load-balancing loss
(the squared coefficient of variation of expert use) is not returned: U-Bench drops it too, and
unetkit's losses take logits only. The paper's two-stage schedule (a plain U-Net first, TA-MoSC
trained second) is not reproduced: the whole network trains at once, as in U-Bench. The encoder
starts untrained (the paper starts from ImageNet weights). The input is zero-padded to a multiple
of 16 and the logits cropped. Logits, no sigmoid. 2D only, no deep supervision (the paper has none).
Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import crop_to, pad_to_multiple
from unetkit.models.registry import register_model
from unetkit.models.ubench_cnn_backbone import BasicBlock, conv_bn_relu

_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored; the input is zero-padded to divisible_by and the logits cropped")


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resampling to ``size`` (align_corners=False, as the reference's ``scale_factor`` calls)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# ============================================================================================ UTANet
class SkipExpert(nn.Sequential):
    """One TA-MoSC expert: 1x1 conv to ``hidden_rate`` x width, 1x1 conv, BN, ReLU, 1x1 conv back."""

    def __init__(self, width: int, hidden_rate: int = 2) -> None:
        hidden = hidden_rate * width
        super().__init__(nn.Conv2d(width, hidden, 1), nn.Conv2d(hidden, hidden, 1), nn.BatchNorm2d(hidden),
                         nn.ReLU(), nn.Conv2d(hidden, width, 1))


class MixtureOfSkipExperts(nn.Module):
    """TA-MoSC's mixture: ``n_routes`` routers over ``n_experts`` shared experts. Router r scores the
    experts from the globally pooled input (softmax of ``pooled @ gate_r``), keeps each image's top
    ``top_k``, renormalizes their scores by a second softmax and sums those experts' outputs with them.
    Each expert runs only on the images routed to it; in training an expert left unused by a router
    runs on one random row of that router's (image, slot) list (balanced expert utilization)."""

    def __init__(self, width: int, n_experts: int = 4, n_routes: int = 4, top_k: int = 2) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"TA-MoSC needs 1 <= top_k <= n_experts, got top_k={top_k}, n_experts={n_experts}")
        self.experts = nn.ModuleList(SkipExpert(width) for _ in range(n_experts))
        self.gates = nn.ParameterList(nn.Parameter(torch.empty(width, n_experts)) for _ in range(n_routes))
        for gate in self.gates:
            nn.init.xavier_uniform_(gate)
        self.top_k = top_k

    def route(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """One router's output for ``x`` (B, C, H, W)."""
        scores = F.softmax(x.mean(dim=(2, 3)) @ gate, dim=1)  # (B, experts)
        top_scores, top_index = torch.topk(scores, self.top_k, dim=1)
        weights = F.softmax(top_scores, dim=1)  # (B, k)
        if x.is_meta:  # shapes only (profiling): no choice can be read; any top_k experts cost the same
            chosen = enumerate(self.experts[:self.top_k])
            return sum(expert(x) * weights[:, k, None, None, None] for k, expert in chosen)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            images, slots = torch.nonzero(top_index == e, as_tuple=True)
            if images.numel() == 0:
                if not self.training:
                    continue
                row = int(torch.randint(0, x.shape[0], (1,)))  # a row of the flattened (image, slot) list
                images = torch.tensor([row // self.top_k], device=x.device)
                slots = torch.tensor([row % self.top_k], device=x.device)
            y = expert(x[images]) * weights[images, slots][:, None, None, None]
            out = out.index_add(0, images, y)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.route(x, gate) for gate in self.gates]


class TransposedUpBlock(nn.Module):
    """UTANet's decoder stage: 2x2 transposed conv (stride 2) to half the width + BN + ReLU, then the
    skip concatenated in front, 3x3 conv-BN-ReLU to ``cout``."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cin // 2, 2, 2), nn.BatchNorm2d(cin // 2),
                                nn.ReLU(inplace=True))
        self.conv = conv_bn_relu(cin // 2 + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


def _resnet_stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*(BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(blocks)))


class UTANet(nn.Module):
    """UTANet: full-resolution stem, ResNet stages at 1/2 .. 1/16, TA-MoSC skips, transposed-conv
    decoder. ``widths``: stem and the four stages (published 64, 64, 128, 256, 512); ``blocks``: basic
    blocks per stage (3, 4, 6, 3); ``decoder_widths``: finest first (32, 64, 128, 256); ``moe_width``:
    the fused map's width (64); ``moe=False`` is the paper's first-stage plain U-Net (direct skips)."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int],
                 decoder_widths: Sequence[int], moe_width: int, n_experts: int, top_k: int, moe: bool) -> None:
        super().__init__()
        f, d = [int(w) for w in widths], [int(w) for w in decoder_widths]
        if len(f) != 5 or len(blocks) != 4 or len(d) != 4 or any(w % 2 for w in (f[4], *d[1:])):
            raise ValueError(f"UTANet needs 5 widths (stem + 4 stages), 4 block counts and 4 decoder widths, the "
                             f"upsampled ones even; got widths={f}, blocks={list(blocks)}, decoder_widths={d}")
        self.stem = conv_bn_relu(in_channels, f[0])
        self.stages = nn.ModuleList(_resnet_stage(f[i], f[i + 1], int(blocks[i]), 1 if i == 0 else 2) for i in range(4))
        self.moe = None
        if moe:
            self.fuse = conv_bn_relu(sum(f[:4]), moe_width, kernel=1)
            self.moe = MixtureOfSkipExperts(moe_width, n_experts, 4, top_k)
            self.dockers = nn.ModuleList(conv_bn_relu(moe_width, w, kernel=1) for w in f[:4])
        ins = [f[4], d[3], d[2], d[1]]
        self.decoder = nn.ModuleList(TransposedUpBlock(cin, skip, cout)
                                     for cin, skip, cout in zip(ins, f[3::-1], d[::-1]))
        self.head = nn.Sequential(*conv_bn_relu(d[0], d[0] // 2, kernel=1), nn.Conv2d(d[0] // 2, num_classes, 1))
        self.divisible_by = 16
        self.deep_supervision = False

    def _routed_skips(self, encoder: list[torch.Tensor]) -> list[torch.Tensor]:
        """TA-MoSC: the four finer encoder maps fused at 1/2, routed, docked, resampled to their levels."""
        half = encoder[1].shape[2:]
        fused = self.fuse(torch.cat([_resize(e, half) for e in encoder[:4]], dim=1))
        return [_resize(dock(routed), e.shape[2:])
                for dock, routed, e in zip(self.dockers, self.moe(fused), encoder[:4])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        encoder = [self.stem(x)]
        y = F.max_pool2d(encoder[0], 2)
        for stage in self.stages:
            y = stage(y)
            encoder.append(y)  # 1/1, 1/2, 1/4, 1/8, 1/16
        skips = self._routed_skips(encoder) if self.moe is not None else encoder[:4]
        y = encoder[4]
        for block, skip in zip(self.decoder, skips[::-1]):
            y = block(y, skip)
        return crop_to(self.head(y), size)


UTANET_WIDTHS, UTANET_BLOCKS, UTANET_DECODER = (64, 64, 128, 256, 512), (3, 4, 6, 3), (32, 64, 128, 256)
UTANET_OFFICIAL_COUNT = 23_754_433  # 3 in, 1 class, the layers the official forward uses (hand count)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Luo et al., Rethinking U-Net: Task-Adaptive Mixture of Skip Connections for Enhanced Medical "
                      "Image Segmentation (UTANet), AAAI 2025 (count: official code, no figure read from the paper)",
                defaults=lambda d: {"widths": list(UTANET_WIDTHS), "blocks": list(UTANET_BLOCKS),
                                    "decoder_widths": list(UTANET_DECODER), "moe_width": 64, "n_experts": 4,
                                    "top_k": 2, "moe": True},
                tiny_kwargs={"widths": [16, 16, 16, 32, 32], "blocks": [1, 1, 1, 1],
                             "decoder_widths": [16, 16, 16, 32], "moe_width": 16},
                extra={"tags": ["cnn", "residual", "multiscale", "pretrainable-encoder"], "paper_params": None,
                       "paper_setup": "no figure read from the paper; official code (AshleyLuo001/UTANet "
                                      "utanet/UTANet.py, as U-Bench ships it), 3 in, 1 class, ResNet-34 widths, "
                                      "4 experts, top 2: 23,754,433 used by the forward (24,276,969 with the unused "
                                      "torchvision stem and classifier the reference also holds), counted by hand",
                       "divisible_by": 16, "pads_input": True, "kwargs_note": _PLAN_NOTE})
def utanet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           widths: Sequence[int] = UTANET_WIDTHS, blocks: Sequence[int] = UTANET_BLOCKS,
           decoder_widths: Sequence[int] = UTANET_DECODER, moe_width: int = 64, n_experts: int = 4, top_k: int = 2,
           moe: bool = True, n_stages: Any = None, features_per_stage: Any = None, kernel_sizes: Any = None,
           strides: Any = None) -> UTANet:
    """UTANet: ResNet-34 U-Net whose skips are a task-adaptive mixture of convolutional experts, 2D."""
    return UTANet(in_channels, num_classes, widths, blocks, decoder_widths, moe_width, n_experts, top_k, moe)
