"""U-Mamba: an nnU-Net-style residual U-Net with Mamba (selective state-space) layers (family
``sequence``).

Ma, Li, Wang, "U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation",
arXiv:2401.04722, 2024, Fig. 1 (U-Mamba block) and Fig. 2 (U-Mamba_Bot: one Mamba layer at the
bottleneck; U-Mamba_Enc: one after every encoder stage). Reference code: bowang-lab/U-Mamba
``nnunetv2/nets/UMambaBot_3d.py`` / ``UMambaEnc_3d.py``: an nnU-Net plan's topology; encoder
stem and stages start with a residual block with a 1x1 projection (``BasicResBlock``) followed by
``n - 1`` ResNet-D blocks, the deeper half of the stages with a single block; decoder of nearest
upsampling + 1x1 convolution, concatenation, residual blocks (one in the deeper half), a 1x1 head
per level (deep supervision). The Mamba layer: layer norm over channels, then Mamba (Gu & Dao,
"Mamba: Linear-Time Sequence Modeling with Selective State Spaces", 2023, Algorithm 2, Sec. 3.4:
d_state 16, d_conv 4, expand 2) over the flattened voxels, without a residual connection, in
float32.

Selective scan: plain PyTorch, a chunked parallel scan (exact; within a chunk the decays
``exp(S_t - S_s)`` of the cumulative log-decays are formed as a masked T x T matrix, between
chunks a sequential carry), so it runs on any device. With ``mamba_ssm`` importable and the input
on CUDA, the same parameters go through ``mamba_ssm``'s fused ``selective_scan_fn`` kernel instead
(parameter names ``in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj`` as ``mamba_ssm.Mamba``,
so weights load either way). The plain scan keeps every state (B x L x 2C x 16): at full
resolution (U-Mamba_Enc) it is slow and memory hungry; on CUDA install ``mamba_ssm``.

Parameter count: the paper reports none (no table of sizes); the count for a plan's topology is
pinned in tests/test_zoo_transformers.py. U-Mamba_Enc's reference switches stages whose voxel
count is at most their width to "channel tokens" (sequence over channels, Mamba width = voxels),
which needs the patch size at build time: pass ``patch_size`` to get that; without it every stage
uses voxel tokens (documented difference).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import BasicBlockD, ConvNormAct, conv_class, in_layout_of, init_he_
from unetkit.models.plain_unet import plain_topology_kwargs
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Topology, check_patch, make_topology, per_stage_ints

UMAMBA_PAPER = ("Ma et al., U-Mamba: Enhancing Long-range Dependency for Biomedical Image Segmentation, "
                "arXiv:2401.04722 (Fig. 1-2; no parameter count reported); Gu & Dao, Mamba, arXiv:2312.00752 "
                "(Algorithm 2)")

#: Largest number of elements of the T x T decay tensors of one chunk group of the plain scan.
SCAN_MAX_ELEMENTS = 2 ** 25
#: Longest chunk of the plain scan (work grows with it; the sequential carry shrinks with it).
SCAN_CHUNK = 32


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                   max_elements: int = SCAN_MAX_ELEMENTS) -> torch.Tensor:
    """The selective scan of Mamba (Gu & Dao 2023, Eq. 2a-2b with zero-order hold, Sec. 3.5):
    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t . h_t``.

    Args:
        u: inputs (B, L, D).
        delta: step sizes after softplus (B, L, D).
        A: state matrix (D, N), negative.
        Bm, Cm: input and output projections (B, L, N).
        max_elements: bound on the T x T decay tensor; sets the chunk length T.

    Returns:
        y (B, L, D), without the ``D * u`` skip term.
    """
    b, length, d = u.shape
    n = A.shape[-1]
    if u.device.type == "meta":  # shapes only (parameter / FLOP counting): skip the carry loop
        return u.new_empty(b, length, d)
    # Chunk length t: at most SCAN_CHUNK steps, and small enough that one chunk's t x t decay tensor
    # fits the budget. Chunks are then processed in groups whose t x t tensors together fit the
    # budget, so memory stays bounded however long the sequence (a full-resolution stage has tens of
    # thousands of voxels) while the sequential carry runs over L / t chunks, not L steps.
    t = max(1, min(length, SCAN_CHUNK, math.isqrt(max(max_elements // max(b * d * n, 1), 1))))
    pad = (-length) % t
    if pad:  # zero step size and input: the padded steps neither decay nor add
        u, delta = F.pad(u, (0, 0, 0, pad)), F.pad(delta, (0, 0, 0, pad))
        Bm, Cm = F.pad(Bm, (0, 0, 0, pad)), F.pad(Cm, (0, 0, 0, pad))
    nc = (length + pad) // t
    log_decay = (delta.unsqueeze(-1) * A).view(b, nc, t, d, n)
    inputs = ((delta * u).unsqueeze(-1) * Bm.unsqueeze(2)).view(b, nc, t, d, n)
    cum = log_decay.cumsum(2)
    if t > 1:
        causal = torch.ones(t, t, dtype=torch.bool, device=u.device).tril()
        group = max(1, max_elements // (b * t * t * d * n))
        parts = []
        for g0 in range(0, nc, group):
            c = cum[:, g0:g0 + group]
            seg = (c.unsqueeze(3) - c.unsqueeze(2)).masked_fill(~causal[:, :, None, None], float("-inf"))
            parts.append((seg.exp() * inputs[:, g0:g0 + group].unsqueeze(2)).sum(3))  # zero state per chunk
        local = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    else:
        local = inputs
    chunk_decay = cum[:, :, -1].exp()
    state = torch.zeros(b, d, n, dtype=u.dtype, device=u.device)
    entering = []
    for c in range(nc):
        entering.append(state)
        state = chunk_decay[:, c] * state + local[:, c, -1]
    h = local + cum.exp() * torch.stack(entering, 1).unsqueeze(2)
    y = (h * Cm.view(b, nc, t, 1, n)).sum(-1).reshape(b, nc * t, d)
    return y[:, :length]


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


class Mamba(nn.Module):
    """The Mamba block (Gu & Dao 2023, Fig. 3, Algorithm 2) with ``mamba_ssm.Mamba``'s parameters:
    input projection to ``2 * expand * d_model`` (x and gate z), causal depth-wise conv1d + SiLU,
    input-dependent ``delta`` (rank ``ceil(d_model / 16)``), ``B``, ``C``, the selective scan with
    ``A = -exp(A_log)`` (S4D-real init 1..N) and skip ``D``, gating by ``SiLU(z)``, output projection."""

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
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        with torch.no_grad():
            std = self.dt_rank ** -0.5
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

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


class MambaLayer(nn.Module):
    """U-Mamba's layer: flatten the voxels to tokens (or, with ``channel_token``, use the channels
    as the sequence), layer norm, Mamba, reshape back. Runs in float32 (autocast off), as the
    reference."""

    def __init__(self, dim: int, channel_token: bool = False, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2) -> None:
        super().__init__()
        self.dim, self.channel_token = dim, channel_token
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(dim, d_state, d_conv, expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, shape = x.dtype, x.shape
        with no_autocast(x.device):
            flat = x.float().flatten(2)  # (B, C, L)
            if self.channel_token:
                if flat.shape[-1] != self.dim:
                    raise ValueError(f"this U-Mamba layer was built for {self.dim} voxels (patch_size), got "
                                     f"{flat.shape[-1]} ({tuple(shape[2:])})")
                out = self.mamba(self.norm(flat))
            else:
                out = self.mamba(self.norm(flat.transpose(1, 2))).transpose(1, 2)
        return in_layout_of(out.reshape(shape).to(dtype), x)


class BasicResBlock(nn.Module):
    """U-Mamba's residual block: conv-norm-lrelu, conv-norm, plus a 1x1 (strided) convolution with
    bias on the shortcut, leaky ReLU after the sum."""

    def __init__(self, spatial_dims: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, cin, cout, kernel, stride)
        self.conv2 = ConvNormAct(spatial_dims, cout, cout, kernel, (1,) * spatial_dims, act=False)
        self.conv3 = conv_class(spatial_dims)(cin, cout, 1, tuple(stride))
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.conv3(x))


def _res_stage(spatial_dims: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int],
               n_blocks: int) -> nn.Sequential:
    ones = (1,) * spatial_dims
    return nn.Sequential(BasicResBlock(spatial_dims, cin, cout, kernel, stride),
                         *[BasicBlockD(spatial_dims, cout, cout, kernel, ones) for _ in range(n_blocks - 1)])


class SequenceUNet(nn.Module):
    """The residual U-Net of U-Mamba / xLSTM-UNet with a sequence layer at the bottleneck
    (``where="bot"``) or after every encoder stage (``where="enc"``).

    Args:
        spatial_dims, in_channels, num_classes: as ``create_model``.
        topology: the plan's stages, widths, kernels, strides.
        n_blocks_per_stage: blocks per encoder stage (the reference sets the deeper half to 1).
        n_conv_per_stage_decoder: blocks per decoder stage, deepest first.
        make_layer: ``(stage, width, voxels or None) -> nn.Module`` building the sequence layer.
        where: "bot" or "enc".
        deep_supervision: one output per decoder level, full resolution first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, topology: Topology,
                 n_blocks_per_stage: Sequence[int], n_conv_per_stage_decoder: Sequence[int],
                 make_layer: Callable[[int, int], nn.Module], where: str, deep_supervision: bool = True) -> None:
        super().__init__()
        self.topology = topology
        f, k, s = topology.features_per_stage, topology.kernel_sizes, topology.strides
        n = topology.n_stages
        ones = (1,) * spatial_dims
        self.stem = _res_stage(spatial_dims, in_channels, f[0], k[0], ones, n_blocks_per_stage[0])
        self.encoder = nn.ModuleList([_res_stage(spatial_dims, f[max(i - 1, 0)], f[i], k[i], s[i], n_blocks_per_stage[i])
                                      for i in range(n)])
        stages = range(n) if where == "enc" else [n - 1]
        self.seq_stages = tuple(stages)
        self.seq_layers = nn.ModuleList([make_layer(i, f[i]) for i in stages])
        conv = conv_class(spatial_dims)
        self.up_convs = nn.ModuleList([conv(f[i], f[i - 1], 1) for i in range(n - 1, 0, -1)])
        self.decoder = nn.ModuleList([_res_stage(spatial_dims, 2 * f[i - 1], f[i - 1], k[i - 1], ones,
                                                 n_conv_per_stage_decoder[n - 1 - i]) for i in range(n - 1, 0, -1)])
        self.heads = nn.ModuleList([conv(f[i - 1], num_classes, 1) for i in range(n - 1, 0, -1)])
        self.deep_supervision = deep_supervision
        self.apply(init_he_)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        check_patch(self.topology, x.shape[2:])
        x = self.stem(x)
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i in self.seq_stages:
                x = self.seq_layers[self.seq_stages.index(i)](x)
            skips.append(x)
        outputs = []
        n = len(skips)
        for d, (up, stage, head) in enumerate(zip(self.up_convs, self.decoder, self.heads)):
            stride = self.topology.strides[n - 1 - d]
            x = up(F.interpolate(x, scale_factor=tuple(float(v) for v in stride), mode="nearest"))
            x = stage(torch.cat((x, skips[-(d + 2)]), dim=1))
            if self.deep_supervision or d == len(self.decoder) - 1:
                outputs.append(head(x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def sequence_unet_kwargs(spatial_dims: int, n_stages: int | None = None, features_per_stage: IntOrSeq | None = None,
                         kernel_sizes: Any = None, strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
                         n_conv_per_stage_decoder: IntOrSeq | None = None) -> dict[str, Any]:
    """Full kwargs from a plain plan's topology (nnU-Net defaults for missing ones), with U-Mamba's
    rule: one block in the deeper half of the encoder and decoder stages."""
    kw = plain_topology_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                               n_conv_per_stage_decoder)
    n = kw["n_stages"]
    blocks = list(kw["n_conv_per_stage"])
    for i in range(math.ceil(n / 2), n):
        blocks[i] = 1
    dec = list(kw["n_conv_per_stage_decoder"])
    for i in range(math.ceil((n - 1) / 2 + 0.5), n - 1):
        dec[i] = 1
    kw["n_conv_per_stage"], kw["n_conv_per_stage_decoder"] = blocks, dec
    return kw


def build_sequence_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool,
                        kw: dict[str, Any], make_layer: Callable[[int, int], nn.Module], where: str) -> SequenceUNet:
    topo = make_topology(spatial_dims, kw["n_stages"], kw["features_per_stage"], kw["kernel_sizes"], kw["strides"])
    n = topo.n_stages
    return SequenceUNet(spatial_dims, in_channels, num_classes, topo,
                        per_stage_ints("n_conv_per_stage", kw["n_conv_per_stage"], n),
                        per_stage_ints("n_conv_per_stage_decoder", kw["n_conv_per_stage_decoder"], n - 1),
                        make_layer, where, deep_supervision)


TINY_KWARGS = {"n_stages": 4, "features_per_stage": [4, 8, 16, 32], "kernel_sizes": 3, "strides": [1, 2, 2, 2],
               "n_conv_per_stage": 2, "n_conv_per_stage_decoder": 1}
_PAPER_SETUP = "no count printed; nnU-Net plans the residual topology (by name: 5 stages, 32..320/512)"
# U-Mamba_Enc scans every voxel of the first stage (24x40x24 in the zoo tests): a 4-state scan of
# width 4 is 8x less work than 16 states of width 8 (the generic tests took 16 of 100 CPU seconds here).
ENC_TINY_KWARGS = {**TINY_KWARGS, "d_state": 4, "expand": 1}


@register_model(family="sequence", paper=UMAMBA_PAPER, defaults=sequence_unet_kwargs, tiny_kwargs=TINY_KWARGS,
                extra={"tags": ["hybrid", "mamba", "cnn", "residual"], "paper_params": None,
                       "paper_setup": _PAPER_SETUP, "divisible_by": 1,  # the plan's strides decide
                       "fast_path": "mamba_ssm.selective_scan_fn on CUDA when importable"})
def umamba_bot(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
               n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
               strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
               n_conv_per_stage_decoder: IntOrSeq | None = None, d_state: int = 16, d_conv: int = 4,
               expand: int = 2) -> SequenceUNet:
    """U-Mamba_Bot: residual nnU-Net with one Mamba layer at the bottleneck (from a plan's topology)."""
    kw = sequence_unet_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                              n_conv_per_stage_decoder)
    return build_sequence_unet(spatial_dims, in_channels, num_classes, deep_supervision, kw,
                               lambda i, width: MambaLayer(width, False, d_state, d_conv, expand), "bot")


@register_model(family="sequence", paper=UMAMBA_PAPER, defaults=sequence_unet_kwargs, tiny_kwargs=ENC_TINY_KWARGS,
                extra={"tags": ["hybrid", "mamba", "cnn", "residual"], "paper_params": None,
                       "paper_setup": _PAPER_SETUP, "divisible_by": 1,  # the plan's strides decide
                       "fast_path": "mamba_ssm.selective_scan_fn on CUDA when importable",
                       "patch_size_kwarg": "optional: channel tokens where voxels <= width (reference behaviour)"})
def umamba_enc(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = True, *,
               n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
               strides: Any = None, n_conv_per_stage: IntOrSeq | None = None,
               n_conv_per_stage_decoder: IntOrSeq | None = None, patch_size: Sequence[int] | None = None,
               d_state: int = 16, d_conv: int = 4, expand: int = 2) -> SequenceUNet:
    """U-Mamba_Enc: residual nnU-Net with a Mamba layer after every encoder stage.

    With ``patch_size`` (the plan's patch), stages with at most as many voxels as channels use
    channel tokens as the reference does; without it every stage uses voxel tokens.
    """
    kw = sequence_unet_kwargs(spatial_dims, n_stages, features_per_stage, kernel_sizes, strides, n_conv_per_stage,
                              n_conv_per_stage_decoder)
    voxels: list[int | None] = [None] * kw["n_stages"]
    if patch_size is not None:
        size = [int(p) for p in patch_size]
        for i, stride in enumerate(kw["strides"]):
            size = [a // b for a, b in zip(size, stride)]
            voxels[i] = math.prod(size)

    def make(i: int, width: int) -> nn.Module:
        v = voxels[i]
        if v is not None and v <= width:
            return MambaLayer(v, True, d_state, d_conv, expand)
        return MambaLayer(width, False, d_state, d_conv, expand)

    return build_sequence_unet(spatial_dims, in_channels, num_classes, deep_supervision, kw, make, "enc")
