"""Transformer building blocks shared by the transformer / hybrid U-Nets of the zoo.

Dimension-generic (2D and 3D) pieces, written from the papers (and checked against the
parameter layout of the public reference code, never copied):

- :class:`ViTBlock` and :func:`resize_pos_embed`: the pre-norm ViT encoder block (Dosovitskiy
  et al., ICLR 2021, Eq. 2-3) and run-time interpolation of a learned positional embedding to
  the token grid of the patch actually seen (the trainer does not pass the plan's patch size).
- :class:`SwinBlock`, :class:`WindowAttention`, :class:`PatchMerging`: Swin Transformer (Liu et
  al., ICCV 2021, Fig. 3, Eq. 4) shifted-window attention with a relative position bias, in 2D
  or 3D, padding each feature map to a multiple of its window at run time and shrinking the window
  (without shift) on axes smaller than it, as MONAI's SwinUNETR does.
- :class:`UnetResBlock`, :class:`UnetrUpBlock`, :class:`UnetrPrUpBlock`: the convolutional
  blocks of UNETR / SwinUNETR (Hatamizadeh et al., WACV 2022, Fig. 2), MONAI's layout: bias-free
  convolutions, instance norm without affine, leaky ReLU 0.01.
- :func:`pad_to_multiple` / :func:`crop_to`: models whose tokenizer needs sizes divisible by N pad
  the input with zeros and crop the logits, so any plan patch works (``divisible_by`` in
  ``model_info(name).extra`` says which sizes need no padding).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.blocks import conv_class, transposed_conv_class

Shape = tuple[int, ...]


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def pad_to_multiple(x: torch.Tensor, multiple: int | Sequence[int]) -> tuple[torch.Tensor, Shape]:
    """Zero-pad the spatial axes of ``x`` (B, C, *S) at the end to multiples of ``multiple``;
    returns the padded tensor and the original spatial size (for :func:`crop_to`)."""
    size = tuple(x.shape[2:])
    mult = (multiple,) * len(size) if isinstance(multiple, int) else tuple(multiple)
    pads = [(-s) % m for s, m in zip(size, mult)]
    if any(pads):
        flat: list[int] = []
        for p in reversed(pads):
            flat += [0, p]
        x = F.pad(x, flat)
    return x, size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` (B, C, *S) to ``size`` (undo :func:`pad_to_multiple`)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return x[(slice(None), slice(None), *[slice(0, s) for s in size])]


class Mlp(nn.Module):
    """Two linear layers with a GELU between them (the transformer feed-forward network)."""

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class SelfAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017) with fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} must be divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + MSA(LN(x))``, then ``x + MLP(LN(x))``
    (Dosovitskiy et al., ICLR 2021, Eq. 2-3)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool = True, dropout: float = 0.0,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def resize_pos_embed(pos: torch.Tensor, grid_from: Sequence[int], grid_to: Sequence[int]) -> torch.Tensor:
    """A learned positional embedding ``(1, prod(grid_from), C)`` interpolated (bilinear /
    trilinear, as ViT fine-tuning at another resolution) to ``(1, prod(grid_to), C)``."""
    grid_from, grid_to = tuple(grid_from), tuple(grid_to)
    if grid_from == grid_to:
        return pos
    c = pos.shape[-1]
    grid = pos.transpose(1, 2).reshape(1, c, *grid_from)
    mode = "bilinear" if len(grid_from) == 2 else "trilinear"
    grid = F.interpolate(grid, size=grid_to, mode=mode, align_corners=False)
    return grid.flatten(2).transpose(1, 2)


# ------------------------------------------------------------------------------ Swin
def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, *S, C) with S divisible by ``window`` -> (B * n_windows, prod(window), C)."""
    b, *size, c = x.shape
    d = len(size)
    shape = [b]
    for s, w in zip(size, window):
        shape += [s // w, w]
    x = x.view(*shape, c)
    perm = [0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [2 * d + 1]
    return x.permute(perm).reshape(-1, _prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], size: Sequence[int], batch: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * n_windows, prod(window), C) -> (B, *size, C)."""
    d = len(size)
    c = windows.shape[-1]
    x = windows.view(batch, *[s // w for s, w in zip(size, window)], *window, c)
    perm = [0]
    for i in range(d):
        perm += [1 + i, 1 + d + i]
    perm.append(2 * d + 1)
    return x.permute(perm).reshape(batch, *size, c)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a learned relative position bias (Liu et al., Swin
    Transformer, ICCV 2021, Eq. 4): a table of ``prod(2w - 1)`` entries per head.

    A window smaller than the table's (feature maps smaller than the window) indexes the same table
    with its own, smaller set of relative offsets.
    """

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = tuple(int(w) for w in window)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(_prod(2 * w - 1 for w in self.window), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def relative_index(self, window: Sequence[int], device: torch.device) -> torch.Tensor:
        key = (tuple(window), str(device))
        if key not in self._index_cache:
            coords = torch.stack(torch.meshgrid(*[torch.arange(w, device=device) for w in window], indexing="ij"))
            coords = coords.flatten(1)  # (d, N)
            rel = coords[:, :, None] - coords[:, None, :]  # (d, N, N)
            index = torch.zeros(rel.shape[1:], dtype=torch.long, device=device)
            for axis, w in enumerate(self.window):
                stride = _prod(2 * v - 1 for v in self.window[axis + 1:])
                index += (rel[axis] + w - 1) * stride
            self._index_cache[key] = index
        return self._index_cache[key]

    def forward(self, x: torch.Tensor, window: Sequence[int], mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        return self.attend(q, k, v, window, mask)

    def heads_and_bias(self, x: torch.Tensor, window: Sequence[int],
                       mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v (B*nW, h, N, C/h) of the windows ``x`` (B*nW, N, C) and the additive attention
        bias (B*nW, h, N, N): relative position bias plus the shifted-window ``mask``."""
        bw, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        return q, k, v, self.attention_bias(bw, n, window, mask, q.device).to(q.dtype)

    def attention_bias(self, bw: int, n: int, window: Sequence[int], mask: torch.Tensor | None,
                       device: torch.device) -> torch.Tensor:
        """The additive bias (B*nW, h, N, N): relative position bias plus the shifted-window mask."""
        h = self.num_heads
        bias = self.relative_position_bias_table[self.relative_index(window, device).view(-1)]
        bias = bias.view(n, n, h).permute(2, 0, 1)  # (h, N, N)
        if mask is not None:
            nw = mask.shape[0]
            return (bias[None, None] + mask[None, :, None]).expand(bw // nw, nw, h, n, n).reshape(bw, h, n, n)
        return bias[None].expand(bw, h, n, n)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Sequence[int],
               mask: torch.Tensor | None) -> torch.Tensor:
        """Softmax attention of per-head (B * n_windows, h, N, d) queries, keys and values with
        the relative position bias (and the shifted-window mask), then the output projection."""
        bw, h, n, d = q.shape
        bias = self.attention_bias(bw, n, window, mask, q.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, h * d))


def _shift_mask(size: Sequence[int], window: Sequence[int], shift: Sequence[int], device: torch.device) -> torch.Tensor:
    """Attention mask (n_windows, N, N) of the shifted-window scheme (Liu et al. 2021, Fig. 4):
    0 within a region, -100 between regions that the cyclic shift brought together."""
    img = torch.zeros((1, *size, 1), device=device)
    ranges = [(slice(0, -w), slice(-w, -s), slice(-s, None)) if s > 0 else (slice(None),)
              for w, s in zip(window, shift)]
    for label, slices in enumerate(itertools.product(*ranges)):
        img[(0, *slices, 0)] = label
    windows = window_partition(img, window).squeeze(-1)  # (nW, N)
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., ECCV 2016): drops a residual branch per sample in training,
    scaling the kept ones by 1 / (1 - p); the identity in evaluation or with p = 0."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class SwinBlock(nn.Module):
    """Swin Transformer block (Liu et al. 2021, Fig. 3b): ``x + (S)W-MSA(LN(x))``, then
    ``x + MLP(LN(x))``; ``shift`` selects the shifted-window variant, ``drop_path`` the
    stochastic depth of both branches. Input and output (B, *S, C)."""

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], shift: bool, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window = tuple(window)
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, self.window, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, *size, c = x.shape
        window = tuple(min(w, s) for w, s in zip(self.window, size))
        shift = tuple((w // 2 if (self.shift and s > w) else 0) for w, s in zip(self.window, size))
        pads = [(-s) % w for s, w in zip(size, window)]
        if any(pads):
            flat = [0, 0]
            for p in reversed(pads):
                flat += [0, p]
            x = F.pad(x, flat)
        padded = tuple(x.shape[1:-1])
        dims = tuple(range(1, len(size) + 1))
        mask = None
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=dims)
            mask = _shift_mask(padded, window, shift, x.device)
        out = self.attn(window_partition(x, window), window, mask)
        x = window_reverse(out, window, padded, b)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=dims)
        if any(pads):
            x = x[(slice(None), *[slice(0, s) for s in size])]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._attend(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Swin patch merging (Liu et al. 2021, Sec. 3.1): concatenate each 2x2(x2) neighbourhood
    (``2**d * C`` features), layer norm, linear to ``2C`` without bias. (B, *S, C) -> (B, *S/2, 2C);
    odd sizes are zero-padded."""

    def __init__(self, dim: int, spatial_dims: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm = nn.LayerNorm(2 ** spatial_dims * dim)
        self.reduction = nn.Linear(2 ** spatial_dims * dim, out_dim or 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[1:-1]
        pads = [s % 2 for s in size]
        if any(pads):
            flat = [0, 0]
            for p in reversed(pads):
                flat += [0, p]
            x = F.pad(x, flat)
        parts = [x[(slice(None), *[slice(o, None, 2) for o in offs])]
                 for offs in itertools.product(*[(0, 1)] * self.spatial_dims)]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class SwinStage(nn.Module):
    """``depth`` Swin blocks alternating regular and shifted windows."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: Sequence[int], mlp_ratio: float = 4.0,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([SwinBlock(dim, num_heads, window, i % 2 == 1, mlp_ratio, qkv_bias)
                                     for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def init_transformer_(module: nn.Module) -> None:
    """ViT / Swin initialization: truncated normal (std 0.02) linear weights, zero biases, unit
    layer norms. Use with ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------ UNETR conv blocks
class PlainInstanceNorm(nn.Module):
    """Instance norm without affine parameters (MONAI's ``norm_name="instance"``)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], eps=self.eps)


def _unet_block_norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """MONAI's ``norm_name``: "instance" (no affine) or "batch" (affine, running statistics)."""
    if kind == "instance":
        return PlainInstanceNorm()
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    raise ValueError(f"norm must be 'instance' or 'batch', got {kind!r}")


class UnetResBlock(nn.Module):
    """Residual block of UNETR / SwinUNETR (MONAI ``UnetResBlock``): conv-norm-lrelu,
    conv-norm, plus a 1x1 conv-norm projection when width or stride change, then leaky ReLU.
    Convolutions without bias; instance norm without affine, or batch norm (``norm="batch"``,
    as UNETR++'s transformer blocks use it)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, norm: str = "instance") -> None:
        super().__init__()
        conv = conv_class(spatial_dims)
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.conv2 = conv(out_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=False)
        self.norm1 = _unet_block_norm(norm, spatial_dims, out_channels)
        self.norm2 = _unet_block_norm(norm, spatial_dims, out_channels)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.project = in_channels != out_channels or stride != 1
        if self.project:
            self.conv3 = conv(in_channels, out_channels, 1, stride, bias=False)
            self.norm3 = _unet_block_norm(norm, spatial_dims, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        res = self.norm3(self.conv3(x)) if self.project else x
        return self.act(out + res)


class UnetrUpBlock(nn.Module):
    """Decoder block: transposed conv (kernel = stride = ``up``, no bias) to ``out_channels``,
    concatenation with the skip, a :class:`UnetResBlock` (UNETR Fig. 2, green/blue blocks)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, up: int = 2) -> None:
        super().__init__()
        self.transp_conv = transposed_conv_class(spatial_dims)(in_channels, out_channels, up, up, bias=False)
        self.conv_block = UnetResBlock(spatial_dims, 2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class UnetrPrUpBlock(nn.Module):
    """UNETR's skip projection of a transformer feature map (UNETR Fig. 2, blue blocks): a
    transposed conv (x2), then ``num_layer`` times [transposed conv (x2), UnetResBlock]."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_layer: int) -> None:
        super().__init__()
        tconv = transposed_conv_class(spatial_dims)
        self.transp_conv_init = tconv(in_channels, out_channels, 2, 2, bias=False)
        self.blocks = nn.ModuleList([
            nn.Sequential(tconv(out_channels, out_channels, 2, 2, bias=False),
                          UnetResBlock(spatial_dims, out_channels, out_channels))
            for _ in range(num_layer)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transp_conv_init(x)
        for block in self.blocks:
            x = block(x)
        return x
