"""xLSTM-UNet: U-Mamba's residual U-Net with a Vision-LSTM (mLSTM) layer (family ``sequence``).

Chen, Ding, Zhang, Li, Sun, Xu, Zang, Mao, "xLSTM-UNet can be an Effective 2D & 3D Medical Image
Segmentation Backbone with Vision-LSTM (ViL) better than its Mamba Counterpart", arXiv:2407.01530,
2024, Fig. 1 (ViL layer at the bottleneck of the nnU-Net-style residual U-Net, "xLSTM-UNet-Bot").
ViL block: Alkin, Beck, Pöppel, Hochreiter, Brandstetter, "Vision-LSTM: xLSTM as Generic Vision
Backbone", arXiv:2406.04303, Fig. 2; mLSTM: Beck et al., "xLSTM: Extended Long Short-Term
Memory", NeurIPS 2024, Eq. 19-27 (matrix memory, exponential input gate, sigmoid forget gate,
computed in the stabilized parallel form). Reference code: tianrun-chen/xLSTM-UNet-PyTorch
``UxLSTMBot_3d.py`` and ``vision_lstm.py``: residual pre-norm block ``x + ViLLayer(LN(x))`` with
expansion 2, block-diagonal q/k/v projections (blocks of 4), causal depth-wise conv1d (kernel 4),
4 mLSTM heads, a learnable skip, SiLU output gate and a down projection; one block at the
bottleneck, voxels in row-major order.

Everything else (encoder, decoder, deep supervision, plan keywords) is U-Mamba's network in
``umamba.py``. The paper reports no parameter count. The reference wraps the ViL block in a layer
with an extra layer norm that its forward never uses; it is not built here. The parallel mLSTM
costs O(L^2) in the number of voxels L, fine at the bottleneck; sequences longer than
``MLSTM_CHUNK`` voxels use the chunkwise form (same result), which ``vilunet.py`` needs for its
full-resolution stages.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from unetkit.models.blocks import in_layout_of
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq
from unetkit.models.umamba import (TINY_KWARGS, SequenceUNet, build_sequence_unet, no_autocast,
                                    sequence_unet_kwargs)

XLSTM_PAPER = ("Chen et al., xLSTM-UNet can be an Effective 2D & 3D Medical Image Segmentation Backbone with "
               "Vision-LSTM (ViL), arXiv:2407.01530 (Fig. 1; no parameter count reported); Alkin et al., "
               "Vision-LSTM, arXiv:2406.04303 (Fig. 2)")


def mlstm_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, igate: torch.Tensor, fgate: torch.Tensor,
                   eps: float = 1e-6) -> torch.Tensor:
    """mLSTM in stabilized parallel form (Beck et al. 2024, App. A.3): q, k, v (B, H, L, Dh), gate
    pre-activations (B, H, L, 1); returns the hidden states (B, H, L, Dh)."""
    b, h, length, dh = q.shape
    log_f = F.logsigmoid(fgate)
    cum = torch.cat([torch.zeros_like(log_f[:, :, :1]), log_f.cumsum(2)], dim=2)  # (B, H, L+1, 1)
    log_fg = cum[:, :, 1:] - cum[:, :, 1:].transpose(2, 3)  # (B, H, L, L): sum of log f over (s, t]
    causal = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
    log_d = torch.where(causal, log_fg + igate.transpose(2, 3), torch.tensor(float("-inf"), device=q.device))
    max_log_d = log_d.amax(-1, keepdim=True)
    dmat = torch.exp(log_d - max_log_d)
    c = (q @ (k / math.sqrt(dh)).transpose(2, 3)) * dmat
    normalizer = torch.maximum(c.sum(-1, keepdim=True).abs(), torch.exp(-max_log_d))
    return (c / (normalizer + eps)) @ v


#: Sequences longer than this run through :func:`mlstm_chunkwise` (memory O(L), not O(L^2)).
MLSTM_CHUNK = 256


def _mlstm_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, igate: torch.Tensor, fgate: torch.Tensor,
                 memory: torch.Tensor, normalizer: torch.Tensor, log_scale: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of :func:`mlstm_chunkwise` (``k`` already scaled by 1/sqrt(Dh)): its hidden states
    and the stabilized memory ``C``, normalizer ``n`` and log-scale ``m`` carried to its end."""
    log_f = F.logsigmoid(fgate).cumsum(2)  # (B, H, T, 1): sum of log f over (chunk start, t]
    t = q.shape[2]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    log_d = torch.where(causal, log_f - log_f.transpose(2, 3) + igate.transpose(2, 3),
                        torch.tensor(float("-inf"), device=q.device))
    log_carry = log_f + log_scale  # (B, H, T, 1): the carried memory's weight for query t
    m = torch.maximum(log_d.amax(-1, keepdim=True), log_carry)
    dmat, carry = torch.exp(log_d - m), torch.exp(log_carry - m)
    c = (q @ k.transpose(2, 3)) * dmat
    numerator = c @ v + carry * (q @ memory)
    denominator = c.sum(-1, keepdim=True) + carry * (q @ normalizer)
    out = numerator / (torch.maximum(denominator.abs(), torch.exp(-m)) + eps)
    total = log_f[:, :, -1:]  # (B, H, 1, 1)
    log_w = total - log_f + igate  # (B, H, T, 1): weight of key s at the chunk's end
    new_scale = torch.maximum(log_scale + total, log_w.amax(2, keepdim=True))
    w, decay = torch.exp(log_w - new_scale), torch.exp(log_scale + total - new_scale)
    memory = decay * memory + (k * w).transpose(2, 3) @ v
    normalizer = decay * normalizer + (k * w).sum(2, keepdim=True).transpose(2, 3)
    return out, memory, normalizer, new_scale


def mlstm_chunkwise(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, igate: torch.Tensor, fgate: torch.Tensor,
                    chunk: int = MLSTM_CHUNK, eps: float = 1e-6) -> torch.Tensor:
    """The same hidden states as :func:`mlstm_parallel`, computed chunk by chunk (Beck et al. 2024,
    App. A.3, chunkwise form): within a chunk the parallel form; across chunks a carried, stabilized
    matrix memory ``C`` (Dh x Dh), normalizer ``n`` (Dh) and log-scale ``m``. Under autograd each
    chunk is recomputed in the backward pass (activation checkpointing), so memory grows with ``L``
    (plus one chunk's ``chunk^2`` matrices) instead of ``L^2``: full-resolution stages of 10^4-10^5
    voxels fit."""
    b, h, length, dh = q.shape
    k = k / math.sqrt(dh)
    state = (q.new_zeros(b, h, dh, dh), q.new_zeros(b, h, dh, 1), q.new_full((b, h, 1, 1), float("-inf")))
    outputs = []
    for start in range(0, length, chunk):
        sl = slice(start, min(start + chunk, length))
        args = (q[:, :, sl], k[:, :, sl], v[:, :, sl], igate[:, :, sl], fgate[:, :, sl], *state, eps)
        if torch.is_grad_enabled():
            out, *state = checkpoint(_mlstm_chunk, *args, use_reentrant=False)
        else:
            out, *state = _mlstm_chunk(*args)
        outputs.append(out)
    return torch.cat(outputs, dim=2)


def mlstm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, igate: torch.Tensor, fgate: torch.Tensor) -> torch.Tensor:
    """:func:`mlstm_parallel` for short sequences, :func:`mlstm_chunkwise` for long ones."""
    if q.shape[2] <= MLSTM_CHUNK:
        return mlstm_parallel(q, k, v, igate, fgate)
    return mlstm_chunkwise(q, k, v, igate, fgate)


class HeadwiseLinear(nn.Module):
    """Block-diagonal linear map (ViL's ``LinearHeadwiseExpand``): ``heads`` independent
    ``d x d`` blocks."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.weight = nn.Parameter(torch.empty(heads, dim // heads, dim // heads))
        nn.init.normal_(self.weight, std=math.sqrt(2 / 5 / (dim // heads)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.view(*shape[:-1], self.heads, -1)
        return torch.einsum("...hd,hod->...ho", x, self.weight).reshape(shape)


class ViLLayer(nn.Module):
    """Vision-LSTM layer: up-projection to x and z, causal conv1d + SiLU, q/k (from the conv
    branch) and v (from x), mLSTM with 4 heads, multi-head norm, learnable skip, SiLU(z) gate,
    down-projection."""

    def __init__(self, dim: int, expansion: int = 2, qkv_block_size: int = 4, conv_kernel: int = 4) -> None:
        super().__init__()
        if dim % qkv_block_size:
            qkv_block_size = 2  # as the reference
        inner = expansion * dim
        self.heads = qkv_block_size
        self.proj_up = nn.Linear(dim, 2 * inner, bias=False)
        self.q_proj = HeadwiseLinear(inner, inner // qkv_block_size)
        self.k_proj = HeadwiseLinear(inner, inner // qkv_block_size)
        self.v_proj = HeadwiseLinear(inner, inner // qkv_block_size)
        self.conv1d = nn.Conv1d(inner, inner, conv_kernel, padding=conv_kernel - 1, groups=inner)
        self.igate = nn.Linear(3 * inner, self.heads)
        self.fgate = nn.Linear(3 * inner, self.heads)
        self.outnorm_weight = nn.Parameter(torch.ones(inner))
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, dim, bias=False)
        with torch.no_grad():
            nn.init.normal_(self.proj_up.weight, std=math.sqrt(2 / (5 * dim)))
            nn.init.normal_(self.proj_down.weight, std=2 / math.sqrt(inner))
            nn.init.zeros_(self.fgate.weight)
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.heads))
            nn.init.zeros_(self.igate.weight)
            nn.init.normal_(self.igate.bias, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        xm, z = self.proj_up(x).chunk(2, dim=-1)
        conv = F.silu(self.conv1d(xm.transpose(1, 2))[..., :length].transpose(1, 2))
        q, k, v = self.q_proj(conv), self.k_proj(conv), self.v_proj(xm)
        gates_in = torch.cat((q, k, v), dim=-1)
        heads = lambda t: t.view(b, length, self.heads, -1).transpose(1, 2)  # noqa: E731
        h = mlstm(heads(q), heads(k), heads(v), self.igate(gates_in).transpose(1, 2).unsqueeze(-1),
                           self.fgate(gates_in).transpose(1, 2).unsqueeze(-1))
        h = F.group_norm(h.transpose(1, 2).reshape(b * length, -1), self.heads, self.outnorm_weight, eps=1e-5)
        h = h.view(b, length, -1) + self.learnable_skip * conv
        return self.proj_down(h * F.silu(z))


class ViLBlock(nn.Module):
    """Pre-norm residual ViL block on a feature map: voxels flattened row-major to a sequence,
    ``x + ViLLayer(LN(x))``, reshaped back; float32 as the reference."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, bias=False)
        self.layer = ViLLayer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, shape = x.dtype, x.shape
        with no_autocast(x.device):
            t = x.float().flatten(2).transpose(1, 2)
            t = t + self.layer(self.norm(t))
        return in_layout_of(t.transpose(1, 2).reshape(shape).to(dtype), x)


@register_model(family="sequence", paper=XLSTM_PAPER, defaults=sequence_unet_kwargs, tiny_kwargs=TINY_KWARGS,
                extra={"tags": ["hybrid", "xlstm", "cnn", "residual"], "paper_params": None,
                       "paper_setup": "no count printed; U-Mamba's residual nnU-Net from the plan (by name: 5 stages, "
                                      "32..320/512)",
                       "divisible_by": 1})  # the plan's strides decide; the planner's patch fits them
def xlstm_unet_bot(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
                   n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
                   strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
                   n_conv_per_stage_decoder: IntOrSeq | None = None) -> SequenceUNet:
    """xLSTM-UNet (Bot): U-Mamba's residual nnU-Net with a Vision-LSTM block at the bottleneck."""
    kw = sequence_unet_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                              n_conv_per_stage_decoder)
    return build_sequence_unet(spatial_dims, in_channels, num_classes, deep_supervision, kw,
                               lambda i, width: ViLBlock(width), "bot")
