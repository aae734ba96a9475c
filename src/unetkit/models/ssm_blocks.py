"""State-space (Mamba) building blocks shared by the sequence models of the zoo.

- :func:`linear_scan`: the first-order linear recurrence ``h_t = a_t * h_{t-1} + x_t`` in plain
  PyTorch, computed in two levels (inside chunks of about sqrt(L) steps, all chunks at once, then
  a carry from chunk to chunk): about ``2 sqrt(L)`` vectorized steps instead of ``L``, exact, and
  stable for decays ``|a| <= 1`` (no exponent is ever inverted). Used by the selective scan and by
  RWKV's WKV (``rwkv_unet.py``).
- :func:`selective_scan`: Mamba's selective scan (Gu & Dao, "Mamba: Linear-Time Sequence
  Modeling with Selective State Spaces", arXiv:2312.00752, Eq. 2a-2b, Algorithm 2), with grouped
  ``B`` / ``C`` as ``mamba_ssm``'s ``selective_scan_fn`` (one group per scan direction of SS2D).
  Its backward pass is written out (the reverse recurrence) and recomputes the states instead
  of keeping them, so training holds the inputs, not the ``B x L x D x N`` states.
- :class:`Mamba`: the Mamba block with ``mamba_ssm.Mamba``'s parameter names (U-Mamba,
  UltraLight VM-UNet).
- :class:`SS2D`, :class:`VSSBlock`, :class:`VSSStage`: VMamba's 2D selective scan (Liu et al.,
  "VMamba: Visual State Space Model", arXiv:2401.10166, Fig. 2 / Sec. 3: four scan directions, row
  and column order, forwards and backwards, merged by summation) and its residual block, with the
  parameter names of the VM-UNet / VMamba reference code (``in_proj, conv2d, x_proj_weight,
  dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm, out_proj``), so weights load by name.

With ``mamba_ssm`` importable and inputs on CUDA, :class:`Mamba` and :class:`SS2D` call
``mamba_ssm``'s fused ``selective_scan_fn`` with the same parameters instead of the plain scan.
Everything here runs in float32 (autocast off), as the references.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: Bound on ``B * T**2 * D * N`` for the chunk length T of :func:`selective_scan` (T is at most
#: about sqrt(L); a smaller budget gives shorter chunks, 1 a fully sequential scan).
SCAN_MAX_ELEMENTS = 2 ** 25
#: Longest chunk of the plain scan (the number of vectorized steps is about T + L / T).
SCAN_CHUNK = 256


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast switched off on CPU / CUDA (the sequence layers run in float32); nothing elsewhere
    (the meta device used for counting has no autocast)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _mamba_ssm_scan() -> Callable[..., torch.Tensor] | None:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or built for another CUDA / torch
        return None
    return selective_scan_fn


def scan_chunk(length: int, limit: int = SCAN_CHUNK) -> int:
    """Chunk length of the two-level scan: about sqrt(L) (fewest vectorized steps), at most ``limit``."""
    return max(1, min(length, limit, math.ceil(math.sqrt(length))))


def linear_scan(a: torch.Tensor, x: torch.Tensor, chunk: int | None = None, reverse: bool = False) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + x_t`` along axis 1, from ``h_{-1} = 0`` (``reverse``: from the end).

    Args:
        a: decays, broadcastable to ``x`` (e.g. ``(1, 1, C)`` for one decay per channel).
        x: inputs (B, L, ...).
        chunk: steps per chunk (default :func:`scan_chunk`).
        reverse: run from the last step to the first.

    Returns:
        h, shaped like ``x``. Differentiable with plain autograd.

    Two levels: every chunk is scanned from a zero state (all chunks in one vectorized step per
    position), then the state entering each chunk is carried over the chunks and added, decayed by
    the running product of ``a`` inside the chunk. Same arithmetic as the recurrence, regrouped.
    """
    if reverse:
        return linear_scan(a.flip(1) if a.shape[1] > 1 else a, x.flip(1), chunk).flip(1)
    a = a.expand_as(x)
    b, length = x.shape[:2]
    rest = x.shape[2:]
    t = min(chunk or scan_chunk(length), length)
    pad = (-length) % t
    if pad:  # steps after the end: they change nothing before it
        pads = (0, 0) * len(rest) + (0, pad)
        a, x = F.pad(a, pads), F.pad(x, pads)
    nc = (length + pad) // t
    # (t, B, chunks, ...): position j of every chunk is one contiguous slice
    a = a.reshape(b, nc, t, *rest).movedim(2, 0).contiguous()
    x = x.reshape(b, nc, t, *rest).movedim(2, 0)
    steps = [x[0]]
    for j in range(1, t):
        steps.append(torch.addcmul(x[j], a[j], steps[-1]))
    local = torch.stack(steps)
    if nc > 1:
        decay = a.cumprod(0)  # product of the decays from the chunk start
        state = torch.zeros_like(local[0, :, 0])
        entering = [state]
        for c in range(nc - 1):
            state = torch.addcmul(local[-1, :, c], decay[-1, :, c], state)
            entering.append(state)
        local = torch.addcmul(local, decay, torch.stack(entering, 1).unsqueeze(0))
    return local.movedim(0, 2).reshape(b, nc * t, *rest)[:, :length]


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, L, D, ...) -> (B, L, G, D / G, ...)."""
    return t.unflatten(2, (groups, t.shape[2] // groups))


def _scan_terms(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decays ``exp(delta A)`` and inputs ``delta u B`` of the recurrence, (B, L, D, N) each."""
    groups = Bm.shape[2]
    a = torch.exp(delta.unsqueeze(-1) * A)
    x = (_grouped((delta * u).unsqueeze(-1), groups) * Bm.unsqueeze(3)).flatten(2, 3)
    return a, x


class _SelectiveScan(torch.autograd.Function):
    """The selective scan with a written-out backward that recomputes the states (see
    :func:`selective_scan`). Inputs: u, delta (B, L, D); A (D, N); Bm, Cm (B, L, G, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, chunk):  # type: ignore[override]
        ctx.save_for_backward(u, delta, A, Bm, Cm)
        ctx.chunk = chunk
        a, x = _scan_terms(u, delta, A, Bm)
        h = linear_scan(a, x, chunk)
        return (_grouped(h, Bm.shape[2]) * Cm.unsqueeze(3)).sum(-1).flatten(2)

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        u, delta, A, Bm, Cm = ctx.saved_tensors
        groups, n = Bm.shape[2], A.shape[-1]
        a, x = _scan_terms(u, delta, A, Bm)
        h = linear_scan(a, x, ctx.chunk)
        del x
        gy_g = _grouped(gy.unsqueeze(-1), groups)  # (B, L, G, P, 1)
        grad_c = (gy_g * _grouped(h, groups)).sum(3)
        # dL/dh_t = C_t gy_t + a_{t+1} dL/dh_{t+1}: the same recurrence, backwards
        a_next = torch.cat((a[:, 1:], torch.zeros_like(a[:, :1])), 1)
        gh = linear_scan(a_next, (gy_g * Cm.unsqueeze(3)).flatten(2, 3), ctx.chunk, reverse=True)
        del a_next
        h_prev = torch.cat((torch.zeros_like(h[:, :1]), h[:, :-1]), 1)
        del h
        g_log_a = gh * h_prev * a  # dL/d(delta A): a_t = exp(delta_t A), dh_t/da_t = h_{t-1}
        del h_prev, a
        gh_g = _grouped(gh, groups)
        grad_b = (gh_g * _grouped((delta * u).unsqueeze(-1), groups)).sum(3)
        g_du = (gh_g * Bm.unsqueeze(3)).sum(-1).flatten(2)  # dL/d(delta u)
        grad_delta = (g_log_a * A).sum(-1) + g_du * u
        grad_a = (g_log_a * delta.unsqueeze(-1)).reshape(-1, A.shape[0], n).sum(0)
        return g_du * delta, grad_delta, grad_a, grad_b, grad_c, None


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                   max_elements: int = SCAN_MAX_ELEMENTS) -> torch.Tensor:
    """The selective scan of Mamba (Gu & Dao 2023, Eq. 2a-2b with zero-order hold, Sec. 3.5):
    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t . h_t``.

    Args:
        u: inputs (B, L, D).
        delta: step sizes after softplus (B, L, D).
        A: state matrix (D, N), negative.
        Bm, Cm: input and output projections (B, L, N), or (B, L, G, N) for G groups of D / G
            channels each (``mamba_ssm``'s grouped B / C: SS2D scans 4 directions as 4 groups).
        max_elements: bound on ``B * T**2 * D * N`` that caps the chunk length T (1: sequential).

    Returns:
        y (B, L, D), without the ``D * u`` skip term.

    Computed by :func:`linear_scan` (about ``2 sqrt(L)`` vectorized steps); the backward pass runs
    the recurrence of the gradients backwards and recomputes the states, so autograd keeps the
    inputs only (the states, ``B x L x D x N``, exist during one scan at a time).
    """
    b, length, d = u.shape
    n = A.shape[-1]
    if u.device.type == "meta":  # shapes only (parameter / FLOP counting)
        return u.new_empty(b, length, d)
    if Bm.dim() == 3:
        Bm, Cm = Bm.unsqueeze(2), Cm.unsqueeze(2)
    if d % Bm.shape[2]:
        raise ValueError(f"selective_scan: {d} channels do not split into {Bm.shape[2]} groups of B / C")
    chunk = min(scan_chunk(length), max(1, math.isqrt(max(max_elements // max(b * d * n, 1), 1))))
    return _SelectiveScan.apply(u, delta, A, Bm, Cm, chunk)


def _init_dt_bias_(bias: torch.Tensor, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> None:
    """Mamba's step-size init: ``softplus(bias)`` log-uniform in [dt_min, dt_max] (Gu & Dao, Sec. 3.6)."""
    with torch.no_grad():
        dt = torch.exp(torch.rand_like(bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus


def _s4d_real_a_log(rows: int, d_state: int) -> torch.Tensor:
    """S4D-real initialization ``A = -(1..N)`` stored as ``log(1..N)``, one row per channel."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(rows, 1)


class Mamba(nn.Module):
    """The Mamba block (Gu & Dao 2023, Fig. 3, Algorithm 2) with ``mamba_ssm.Mamba``'s parameters:
    input projection to ``2 * expand * d_model`` (x and gate z), causal depth-wise conv1d + SiLU,
    input-dependent ``delta`` (rank ``ceil(d_model / 16)``), ``B``, ``C``, the selective scan with
    ``A = -exp(A_log)`` (S4D-real init 1..N) and skip ``D``, gating by ``SiLU(z)``, output projection.
    Input and output (B, L, d_model)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        d_inner = expand * d_model
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(_s4d_real_a_log(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        with torch.no_grad():
            std = self.dt_rank ** -0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        _init_dt_bias_(self.dt_proj.bias, dt_min, dt_max, dt_init_floor)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length])  # (B, D, L), causal
        dt, Bm, Cm = torch.split(self.x_proj(x.transpose(1, 2)), (self.dt_rank, self.d_state, self.d_state), dim=-1)
        A = -torch.exp(self.A_log.float())
        fast = _mamba_ssm_scan() if x.is_cuda else None
        if fast is not None:
            dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)
            y = fast(x.contiguous(), dt.contiguous(), A, Bm.transpose(1, 2).contiguous(),
                     Cm.transpose(1, 2).contiguous(), self.D.float(), z=z.transpose(1, 2).contiguous(),
                     delta_bias=self.dt_proj.bias.float(), delta_softplus=True).transpose(1, 2)
        else:
            x = x.transpose(1, 2)
            delta = F.softplus(self.dt_proj(dt))
            y = (selective_scan(x, delta, A, Bm, Cm) + x * self.D) * F.silu(z)
        return self.out_proj(y)


# ------------------------------------------------------------------------------------- VMamba SS2D
#: Number of scan directions of SS2D: rows and columns, each forwards and backwards.
SS2D_DIRECTIONS = 4


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W): row-major, column-major, and both reversed (VMamba Fig. 2)."""
    hw = torch.stack((x.flatten(2), x.transpose(2, 3).flatten(2)), 1)
    return torch.cat((hw, hw.flip(-1)), 1)


def cross_merge(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 4, C, H*W) -> (B, C, H*W) in row-major order: undo each direction of :func:`cross_scan`
    and sum."""
    y = y[:, :2] + y[:, 2:].flip(-1)
    b, _, c, _ = y.shape
    return y[:, 0] + y[:, 1].view(b, c, w, h).transpose(2, 3).reshape(b, c, h * w)


class SS2D(nn.Module):
    """VMamba's 2D selective scan (VM-UNet Fig. 2 "SS2D"): linear to x and gate z (2 x ``expand`` x
    ``d_model``), depth-wise 3x3 conv + SiLU on x, the selective scan along 4 directions (each with
    its own x/dt projections, A and D), merged by summation, layer norm, gate ``SiLU(z)``, linear
    out. Channels-last (B, H, W, C)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: int = 2, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> None:
        super().__init__()
        k = SS2D_DIRECTIONS
        d_inner = int(expand * d_model)
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(k, self.dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.A_logs = nn.Parameter(_s4d_real_a_log(k * d_inner, d_state))
        self.Ds = nn.Parameter(torch.ones(k * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        with torch.no_grad():
            bound = 1 / math.sqrt(d_inner)  # nn.Linear's default, as the reference's stacked Linears
            nn.init.uniform_(self.x_proj_weight, -bound, bound)
            std = self.dt_rank ** -0.5
            nn.init.uniform_(self.dt_projs_weight, -std, std)
        _init_dt_bias_(self.dt_projs_bias, dt_min, dt_max, dt_init_floor)

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_inner, H, W) -> (B, d_inner, H*W): the four directional scans, merged."""
        b, d, h, w = x.shape
        k, n = SS2D_DIRECTIONS, self.d_state
        xs = cross_scan(x)  # (B, K, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, (self.dt_rank, n, n), dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        A = -torch.exp(self.A_logs.float())
        fast = _mamba_ssm_scan() if x.is_cuda else None
        if fast is not None:
            y = fast(xs.reshape(b, k * d, -1).contiguous(), dts.reshape(b, k * d, -1).contiguous(), A,
                     Bs.contiguous(), Cs.contiguous(), self.Ds.float(), z=None,
                     delta_bias=self.dt_projs_bias.reshape(-1).float(), delta_softplus=True)
            return cross_merge(y.view(b, k, d, -1), h, w)
        u = xs.reshape(b, k * d, -1).transpose(1, 2)  # (B, L, K*D): the 4 directions as 4 groups
        delta = F.softplus(dts.reshape(b, k * d, -1).transpose(1, 2) + self.dt_projs_bias.reshape(-1))
        y = selective_scan(u, delta, A, Bs.permute(0, 3, 1, 2), Cs.permute(0, 3, 1, 2)) + u * self.Ds
        return cross_merge(y.transpose(1, 2).reshape(b, k, d, -1), h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        dtype = x.dtype
        with no_autocast(x.device):
            x, z = self.in_proj(x.float()).chunk(2, dim=-1)
            x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
            y = self._scan(x).transpose(1, 2).reshape(b, h, w, self.d_inner)
            out = self.out_proj(self.out_norm(y) * F.silu(z))
        return out.to(dtype)


class VSSBlock(nn.Module):
    """Visual state-space block (VM-UNet Fig. 2): ``x + SS2D(LayerNorm(x))``. Channels-last
    (B, H, W, C). (The references' stages pass ``nn.LayerNorm``, eps 1e-5, over the block's 1e-6.)"""

    def __init__(self, dim: int, d_state: int = 16) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, d_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.self_attention(self.ln_1(x))


class VSSStage(nn.Sequential):
    """``depth`` VSS blocks of width ``dim`` (the reference's ``VSSLayer`` without its resampling)."""

    def __init__(self, dim: int, depth: int, d_state: int = 16) -> None:
        super().__init__(*[VSSBlock(dim, d_state) for _ in range(depth)])


def init_vmamba_(module: nn.Module) -> None:
    """VMamba's ``_init_weights``: truncated normal (std 0.02) ``nn.Linear`` weights, zero biases,
    unit layer norms; convolutions and the SS2D parameters keep their own initialization. Use with
    ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
