"""U-Bench CNNs that rework the U-Net skip pathway (family ``ubench_cnn``, issue 17, fourth batch);
GH-UNet, of the same batch, is in ubench_ghunet.py.

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

- ``perspective_unet``: Hu, Chen, Pan, Zeng, Yang, "Perspective+ Unet: Enhancing Segmentation with Bi-Path
  Fusion and Efficient Non-Local Attention for Superior Receptive Fields", 2024 (arXiv:2406.14052).
  Five bi-path residual stages (BPRB: a 1x1 conv and a residual block beside a 1x1 conv and a
  dilation-2 residual block, concatenated and 1x1-fused; widths 64 .. 1024, max pool between); the
  three deepest maps (1/4, 1/8, 1/16) pass two efficient non-local transformer blocks each (ENLTB:
  Performer-style positive orthogonal random features approximate softmax attention in linear time,
  then a ratio-4 MLP; a deeper stage also takes the previous stage's output through a 2x2 stride-2
  conv), then the spatial cross-scale integrator (SCSI: all three maps as one token sequence through
  6 post-norm transformer layers, 256 wide, 8 heads, FFN 2048), and are 1x1-fused with their CNN map
  as skips; a U-Net decoder of two conv-BN-ReLU per level (bilinear x2, align_corners=True) whose
  last level has no skip (the full-resolution stage feeds only the encoder), 3x3 head. Official code:
  github.com/tljxyys/Perspective-Unet ``networks/perspective_unet.py`` (U-Bench
  ``models/CNN/Perspective_Unet``). Neither the paper nor its README prints a parameter count; ours
  is the official code's at 3 in, 9 classes (Synapse), counted by hand: 112,659,849.

- ``cscaunet``: Shu, Wang, Zhang, Shi, Wu, "CSCA U-Net: A channel and space compound attention CNN for
  medical image segmentation", Artificial Intelligence in Medicine 150 (2024) 102800. Six stages of a
  basic block (1x1 conv, two 3x3 conv-BN-ReLU, residual from the 1x1 output; widths 32 .. 1024, max
  pool between) with a double squeeze-and-excitation (DSE: SE on the channel means, then on the
  maxima of the result) at the 1/32 bottleneck; five CSCA blocks up (2x2 transposed conv,
  concatenation with the skip, basic block to half the width, DSE as channel attention, a spatial
  attention ``(Q * K) @ V`` from the block's map (Q, K) and the channel-attended map (V), output
  [channel x spatial, channel]); cross-layer feature fusion adds the previous decoder level, 1x1
  projected and upsampled, at 1/16 .. 1/2; deep supervision by 1x1 heads on the bottleneck and on
  the decoder levels 1/16 .. 1/2 before fusion, a 3x3 head at full resolution. Official code:
  github.com/xiaolanshu/CSCA-U-Net ``model/CSCAUNet.py``. The paper's tables could not be read (the
  README shows them as images); the count is the official code's, counted by hand: 35,274,795 at
  3 in, 1 class.

Differences, UTANet: the balanced-expert-utilization trick is kept (in training, an expert that no
image chose for a router still runs on one randomly drawn row of the router's (image, slot) list
and adds to that image's output, so that every expert is trained), but its load-balancing loss
(the squared coefficient of variation of expert use) is not returned: U-Bench drops it too, and
unetkit's losses take logits only. The paper's two-stage schedule (a plain U-Net first, TA-MoSC
trained second) is not reproduced: the whole network trains at once, as in U-Bench. The encoder
starts untrained (the paper starts from ImageNet weights). The input is zero-padded to a multiple
of 16 and the logits cropped. Logits, no sigmoid. 2D only, no deep supervision (the paper has none).
Differences, Perspective+ UNet: the official SCSI hands a (batch, tokens, channels) tensor to a
sequence-first ``nn.MultiheadAttention``, so it attends across the images of a batch at each token
position (one image alone: no spatial mixing at all); ours attends across each image's tokens, as
the paper describes the SCSI (same parameters; quadratic in the tokens of three scales, so on a 2-core
CPU at 320x256 the published 6 x 8-head SCSI runs out of memory: the hand training run used 1 layer,
1 head). The token grids are not fixed (the official code hard-codes 56/28/14, U-Bench 64/32/16): any
multiple of 16 works, others are zero-padded and the logits cropped. The input is not repeated to 3
channels (the first 1x1 convs take ``in_channels``). ENLA's random-feature kernel runs in float32
(its ``exp`` overflows half precision). ENLA's projection is drawn once at construction (a buffer,
saved with the weights); the official code offers redrawing but never calls it.

Differences, CSCA U-Net: ``(Q * K) @ V`` multiplies each channel's H x W maps as matrices, which
needs H == W (the official code runs square 352 x 352 inputs): we zero-pad the input to a square
whose side is a multiple of 32 and crop the logits. The side outputs are returned at their own
resolution (1/2 .. 1/32, unetkit's deep-supervision contract) where the official code upsamples
them to the input size before its loss. The official heads always have one channel (its
``n_class`` is unused); ours have ``num_classes``. A CSCA block's basic block takes twice its output
width (the upsampled map and the skip), which is the official ``in_channel`` when widths double.

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.attention_blocks import (
    DropPath,
    Mlp,
    SelfAttention,
    crop_to,
    pad_to_multiple,
)
from unetkit.models.lightweight import _up2
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
            out = out.index_add(0, images, y.to(out.dtype))  # softmax weights are float32 under autocast
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


# ============================================================================================ Perspective+ UNet
class DilatedResBlock(nn.Module):
    """Perspective+'s dilated residual block: two 3x3 convs of dilation ``dilation`` (no bias) with BN,
    ReLU between, identity shortcut (1x1 conv + BN where the width changes), ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Identity() if cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class BiPathResBlock(nn.Module):
    """Bi-path residual block (BPRB): a 1x1 conv then a plain residual block, beside a 1x1 conv then a
    dilated (2) residual block; both concatenated, 1x1 conv + BN + ReLU to ``cout``."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(cin, mid, 1), BasicBlock(mid, mid))
        self.wide = nn.Sequential(nn.Conv2d(cin, mid, 1), DilatedResBlock(mid, mid, 2))
        self.fuse = conv_bn_relu(2 * mid, cout, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.local(x), self.wide(x)], dim=1))


def orthogonal_random_features(rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Performer's Gaussian orthogonal random matrix (Choromanski et al., ICLR 2021): blocks of the
    transposed Q of QR-decomposed Gaussian matrices, each row rescaled to the norm of a Gaussian vector."""
    blocks = []
    for start in range(0, rows, cols):
        q, _ = torch.linalg.qr(torch.randn(cols, cols, generator=generator))
        blocks.append(q.t()[: min(cols, rows - start)])
    norms = torch.randn(rows, cols, generator=generator).norm(dim=1)
    return norms[:, None] * torch.cat(blocks)


def softmax_kernel_features(x: torch.Tensor, projection: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Positive random features of the softmax kernel: ``m**-0.5 * (exp(x W^T - |x|^2 / 2) + eps)``."""
    dash = x @ projection.t()
    return projection.shape[0] ** -0.5 * (torch.exp(dash - 0.5 * (x * x).sum(dim=-1, keepdim=True)) + eps)


class EfficientNonLocalAttention(nn.Module):
    """ENLA: non-local attention with the softmax kernel approximated by positive orthogonal random
    features, in linear time: ``phi(q) (phi(k)^T v) / (phi(q) sum phi(k))``, q and k L2-normalized per
    pixel. The random projection (``features`` x ``dim``) is a fixed buffer drawn at construction."""

    def __init__(self, dim: int, features: int | None = None, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("projection", orthogonal_random_features(features or dim, dim))
        self.drop = nn.Dropout(attn_drop)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # exp() of the kernel overflows in half precision (|q W^T| reaches |W| ~ sqrt(dim)): in float32
        meta = q.device.type == "meta"  # shapes only (profiling): autocast has no meta device
        with contextlib.nullcontext() if meta else torch.autocast(q.device.type, enabled=False):
            q, k, v = q.float(), k.float(), v.float()
            fq, fk = softmax_kernel_features(q, self.projection), softmax_kernel_features(k, self.projection)
            context = fk.transpose(-2, -1) @ v  # (B, m, C)
            out = (fq @ context) / (fq @ fk.sum(dim=1, keepdim=True).transpose(-2, -1))
        return self.drop(out)


class EfficientNonLocalBlock(nn.Module):
    """ENLTB: ``x + ENLA(LN(x))`` with 1x1-conv query, key and value maps, then ``x + MLP(LN(x))``
    (ratio 4, GELU); stochastic depth on both branches. Input and output (B, C, H, W)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.1, drop_path: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.query, self.key, self.value = (nn.Conv2d(dim, dim, 1) for _ in range(3))
        self.attn = EfficientNonLocalAttention(dim, dim, attn_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        y = self.norm1(tokens).transpose(1, 2).reshape(b, c, h, w)
        q, k = (F.normalize(c(y), p=2, dim=1, eps=5e-5).flatten(2).transpose(1, 2) for c in (self.query, self.key))
        v = self.value(y).flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.attn(q, k, v).to(tokens.dtype))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class PostNormTransformerLayer(nn.Module):
    """The SCSI's transformer layer (post-norm, as ``nn.TransformerEncoderLayer``): ``LN(x + MSA(x))``,
    then ``LN(x + FFN(x))``, FFN = linear, ReLU, dropout, linear; dropout on both residual branches."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, dropout=dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.drop(self.fc2(self.drop(F.relu(self.fc1(x))))))


class SpatialCrossScaleIntegrator(nn.Module):
    """SCSI: the three deepest maps, each 1x1-projected to ``dim`` and flattened, concatenated into one
    token sequence, passed through ``depth`` post-norm transformer layers and a final LayerNorm, split
    back per scale and 1x1-projected to each scale's width."""

    def __init__(self, widths: Sequence[int], dim: int, heads: int, depth: int, ffn: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(w, dim, 1) for w in widths)
        self.layers = nn.Sequential(*(PostNormTransformerLayer(dim, heads, ffn) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.reproj = nn.ModuleList(nn.Conv2d(dim, w, 1) for w in widths)

    def forward(self, maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        tokens = [p(m).flatten(2).transpose(1, 2) for p, m in zip(self.proj, maps)]
        mixed = self.norm(self.layers(torch.cat(tokens, dim=1)))
        parts = torch.split(mixed, [t.shape[1] for t in tokens], dim=1)
        return [r(part.transpose(1, 2).reshape(part.shape[0], -1, *m.shape[2:]))
                for r, part, m in zip(self.reproj, parts, maps)]


def _conv_bn_relu_nobias(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - stride) // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class PerspectiveUNet(nn.Module):
    """Perspective+ UNet: five bi-path residual stages (``widths``, max pool between, full .. 1/16);
    the three deepest pass ENLTB stages (``enl_depth`` blocks each; a deeper stage takes its feature
    concatenated with the previous ENLTB output downsampled by a 2x2 stride-2 conv-BN-ReLU, 1x1-fused),
    then the SCSI; each is fused (1x1 conv) with its CNN feature as a skip. Decoder: two 3x3
    conv-BN-ReLU at 1/16, then bilinear x2, concatenation with the skip and two conv-BN-ReLU per level,
    a last level without skip to full resolution; 3x3 head. Published: widths 64 .. 1024, 2 ENLTBs
    per stage, SCSI 256 wide, 8 heads, 6 layers, FFN 2048."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], enl_depth: int,
                 scsi_dim: int, scsi_heads: int, scsi_depth: int, scsi_ffn: int) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) != 5:
            raise ValueError(f"Perspective+ UNet needs 5 widths (full resolution .. 1/16), got {w}")
        self.encoder = nn.ModuleList(BiPathResBlock(cin, cout, cout) for cin, cout in zip([in_channels, *w], w))
        self.enl = nn.ModuleList(nn.Sequential(*(EfficientNonLocalBlock(c) for _ in range(enl_depth))) for c in w[2:])
        self.enl_down = nn.ModuleList(_conv_bn_relu_nobias(w[i], w[i + 1], kernel=2, stride=2) for i in (2, 3))
        self.enl_merge = nn.ModuleList(nn.Conv2d(w[i] + w[i], w[i], 1) for i in (3, 4))
        self.scsi = SpatialCrossScaleIntegrator(w[2:], scsi_dim, scsi_heads, scsi_depth, scsi_ffn)
        self.skip_fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in w[2:])
        self.bottom = nn.Sequential(_conv_bn_relu_nobias(w[4], w[3]), _conv_bn_relu_nobias(w[3], w[3]))
        self.decoder = nn.ModuleList(nn.Sequential(_conv_bn_relu_nobias(2 * w[i], w[i - 1]),
                                                   _conv_bn_relu_nobias(w[i - 1], w[i - 1])) for i in (3, 2, 1))
        self.last = nn.Sequential(_conv_bn_relu_nobias(w[0], w[0]), _conv_bn_relu_nobias(w[0], w[0]))
        self.head = nn.Conv2d(w[0], num_classes, 3, padding=1)
        self.divisible_by = 16
        self.deep_supervision = False

    def _global_features(self, deep: list[torch.Tensor]) -> list[torch.Tensor]:
        """ENLTB stages over the three deepest CNN maps, each deeper one fed the previous one's output."""
        out: list[torch.Tensor] = []
        for i, (feature, stage) in enumerate(zip(deep, self.enl)):
            if i > 0:
                feature = self.enl_merge[i - 1](torch.cat([feature, self.enl_down[i - 1](out[-1])], dim=1))
            out.append(stage(feature))
        return self.scsi(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.divisible_by)
        features = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)  # full, 1/2, 1/4, 1/8, 1/16
        glob = self._global_features(features[2:])
        skips = [fuse(torch.cat([g, f], dim=1)) for fuse, g, f in zip(self.skip_fuse, glob, features[2:])]
        y = self.bottom(skips[2])
        for block, skip in zip(self.decoder, [skips[1], skips[0], features[1]]):
            y = block(torch.cat([_up2(y, "bilinear"), skip], dim=1))
        y = self.last(_up2(y, "bilinear"))
        return crop_to(self.head(y), size)


PERSPECTIVE_WIDTHS = (64, 128, 256, 512, 1024)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=False,
                paper="Hu et al., Perspective+ Unet: Enhancing Segmentation with Bi-Path Fusion and Efficient "
                      "Non-Local Attention for Superior Receptive Fields, 2024, arXiv:2406.14052 (count: official "
                      "code, the paper prints none)",
                defaults=lambda d: {"widths": list(PERSPECTIVE_WIDTHS), "enl_depth": 2, "scsi_dim": 256,
                                    "scsi_heads": 8, "scsi_depth": 6, "scsi_ffn": 2048},
                tiny_kwargs={"widths": [16, 16, 32, 32, 32], "enl_depth": 1, "scsi_dim": 16, "scsi_heads": 2,
                             "scsi_depth": 1, "scsi_ffn": 32},
                extra={"tags": ["hybrid", "cnn", "transformer", "residual", "multiscale", "attention"],
                       "paper_params": None,
                       "paper_setup": "no figure in the paper or its README; official code (tljxyys/Perspective-Unet "
                                      "networks/perspective_unet.py, as U-Bench ships it), 3 in, 9 classes (Synapse), "
                                      "widths 64..1024, SCSI 256 x 6 layers: counted by hand",
                       "divisible_by": 16, "pads_input": True, "output_stride": 2, "kwargs_note": _PLAN_NOTE})
def perspective_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                     widths: Sequence[int] = PERSPECTIVE_WIDTHS, enl_depth: int = 2, scsi_dim: int = 256,
                     scsi_heads: int = 8, scsi_depth: int = 6, scsi_ffn: int = 2048, n_stages: Any = None,
                     features_per_stage: Any = None, kernel_sizes: Any = None, strides: Any = None) -> PerspectiveUNet:
    """Perspective+ UNet: bi-path residual encoder, efficient non-local transformer, cross-scale integrator, 2D."""
    return PerspectiveUNet(in_channels, num_classes, widths, enl_depth, scsi_dim, scsi_heads, scsi_depth, scsi_ffn)


# ============================================================================================ CSCA U-Net
class ResidualConvPair(nn.Module):
    """CSCA U-Net's basic block: a 1x1 conv to ``cout``, then two 3x3 conv-BN-ReLU, plus the 1x1 output."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)
        self.convs = nn.Sequential(conv_bn_relu(cout, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.convs(x) + x


class DoubleSqueezeExcite(nn.Module):
    """DSE: a squeeze-and-excitation on the global average (1x1 conv to C / ``decay``, ReLU, 1x1 conv,
    sigmoid), then a second one on the global maximum of the recalibrated map."""

    def __init__(self, channels: int, decay: int = 2) -> None:
        super().__init__()
        hidden = channels // decay
        self.on_mean, self.on_max = (nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                                   nn.Conv2d(hidden, channels, 1), nn.Sigmoid()) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.on_mean(x.mean(dim=(2, 3), keepdim=True))
        return x * self.on_max(x.amax(dim=(2, 3), keepdim=True))


class CompoundSpatialAttention(nn.Module):
    """CSCA's spatial attention: a one-channel sigmoid map Q (1x1 conv, BN, 1x1 conv) and a key map K
    (3x3 conv, BN, 3x3 conv, DSE) from ``low``; a value map V (the same layout) from ``high``;
    ``(Q * K) @ V`` as a matrix product of the two square (H x W, H == W) maps per channel, then
    3x3 conv-BN-ReLU back to ``channels``."""

    def __init__(self, channels: int, decay: int = 2) -> None:
        super().__init__()
        c = channels // decay
        self.query = nn.Sequential(nn.Conv2d(channels, c, 1), nn.BatchNorm2d(c), nn.Conv2d(c, 1, 1), nn.Sigmoid())
        self.key, self.value = (nn.Sequential(nn.Conv2d(channels, c, 3, padding=1), nn.BatchNorm2d(c),
                                              nn.Conv2d(c, c, 3, padding=1), DoubleSqueezeExcite(c))
                                for _ in range(2))
        self.out = conv_bn_relu(c, channels)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.out((self.query(low) * self.key(low)) @ self.value(high))


class CompoundAttentionUp(nn.Module):
    """CSCA block: 2x2 transposed conv (stride 2) to ``cout``, concatenated with the skip, basic block
    to ``cout / 2``; its DSE (channel attention) and, from both, the spatial attention; output the
    product of the two attentions beside the channel attention (``cout`` channels)."""

    def __init__(self, cin: int, cout: int, decay: int = 2) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = ResidualConvPair(2 * cout, cout // 2)  # the upsampled map and a skip of width cout
        self.channel_att = DoubleSqueezeExcite(cout // 2, decay)
        self.spatial_att = CompoundSpatialAttention(cout // 2, decay)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        point = self.conv(torch.cat([self.up(x), skip], dim=1))
        channel = self.channel_att(point)
        return torch.cat([channel * self.spatial_att(point, channel), channel], dim=1)


class CSCAUNet(nn.Module):
    """CSCA U-Net: six basic-block stages (``widths``, max pool between, full .. 1/32), DSE after the
    deepest; five CSCA blocks up; cross-layer feature fusion adds, at each decoder level from 1/16 to
    1/2, the previous (coarser) decoder output 1x1-projected and bilinearly upsampled; 1x1 side heads
    on the bottleneck and decoder levels 1/16 .. 1/2 (deep supervision), 3x3 head at full resolution.
    Published: widths 32 .. 1024, decay 2. The spatial attention multiplies square maps: the input
    is zero-padded to a square whose side is a multiple of 32, and the logits cropped."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], decay: int,
                 deep_supervision: bool) -> None:
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) != 6 or any(v % (4 * decay) for v in w):  # a CSCA block's inner DSE has w / (4 decay) channels
            raise ValueError(f"CSCA U-Net needs 6 widths, each a multiple of 4 x decay; got widths={w}, decay={decay}")
        self.encoder = nn.ModuleList(ResidualConvPair(cin, cout) for cin, cout in zip([in_channels, *w], w))
        self.bottleneck_att = DoubleSqueezeExcite(w[5], decay)
        self.decoder = nn.ModuleList(CompoundAttentionUp(w[i + 1], w[i], decay) for i in range(4, -1, -1))
        self.fusion = nn.ModuleList(nn.Conv2d(w[i + 1], w[i], 1) for i in range(4, 0, -1))  # 1/16 .. 1/2
        self.side_heads = nn.ModuleList(nn.Conv2d(w[i], num_classes, 1) for i in range(1, 6))  # 1/2 .. 1/32
        self.head = nn.Conv2d(w[0], num_classes, 3, padding=1)
        self.divisible_by = 32
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        size = x.shape[2:]
        x, _ = pad_to_multiple(x, -(-max(size) // self.divisible_by) * self.divisible_by)  # a square
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)  # full .. 1/32
        y = self.bottleneck_att(skips.pop())
        sides = [y]  # what the side heads see: the bottleneck, then each decoder level before fusion
        for j, block in enumerate(self.decoder):
            out = block(y, skips.pop())
            sides.append(out)
            # cross-layer feature fusion: the coarser (fused) level, 1x1-projected and upsampled
            y = out + _resize(self.fusion[j](y), out.shape[2:]) if j < len(self.fusion) else out
        logits = crop_to(self.head(y), size)
        if not self.deep_supervision:
            return logits
        coarser = [head(s) for head, s in zip(self.side_heads, sides[-2::-1])]  # 1/2 .. 1/32
        return [logits, *(crop_to(c, [-(-n // 2 ** (k + 1)) for n in size]) for k, c in enumerate(coarser))]


CSCA_WIDTHS = (32, 64, 128, 256, 512, 1024)


@register_model(family="ubench_cnn", spatial_dims=(2,), deep_supervision=True,
                paper="Shu et al., CSCA U-Net: A channel and space compound attention CNN for medical image "
                      "segmentation, Artificial Intelligence in Medicine 150 (2024) 102800 (count: official code, "
                      "no figure read from the paper)",
                defaults=lambda d: {"widths": list(CSCA_WIDTHS), "decay": 2},
                tiny_kwargs={"widths": [8, 8, 16, 16, 32, 32], "decay": 2},
                extra={"tags": ["cnn", "attention", "residual", "multiscale"], "paper_params": None,
                       "paper_setup": "no figure read from the paper (its tables are images in the README); "
                                      "official code (xiaolanshu/CSCA-U-Net model/CSCAUNet.py), 3 in, 1 class, "
                                      "widths 32..1024, decay 2: counted by hand",
                       "divisible_by": 32, "pads_input": True, "kwargs_note": _PLAN_NOTE})
def cscaunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
             widths: Sequence[int] = CSCA_WIDTHS, decay: int = 2, n_stages: Any = None, features_per_stage: Any = None,
             kernel_sizes: Any = None, strides: Any = None) -> CSCAUNet:
    """CSCA U-Net: channel and space compound attention decoder with cross-layer fusion, 2D."""
    return CSCAUNet(in_channels, num_classes, widths, decay, deep_supervision)
