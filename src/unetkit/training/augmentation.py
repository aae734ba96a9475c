"""nnU-Net v2's training augmentation, batched in torch, for 2D and 3D patches.

The transforms, their order, probabilities and ranges are nnU-Net v2.8.1's
(``nnUNetTrainer.get_training_transforms`` with batchgeneratorsv2); every probability is per
sample:

==========================  =====  =============================================================
transform                   p      parameters
==========================  =====  =============================================================
rotation                    0.2    per axis U(-30°, 30°) in 3D; U(-180°, 180°) in 2D (±15° when
                                   the 2D patch's aspect ratio exceeds 1.5); in-plane ±180° for
                                   anisotropic 3D patches ("dummy 2D")
scaling                     0.2    one factor U(0.7, 1.4) for all axes (>1 shows more, smaller)
Gaussian noise              0.1    std U(0, 0.1), same for all channels
Gaussian blur               0.2    per channel p 0.5, sigma U(0.5, 1) drawn per axis, kernel
                                   truncated at 6 sigma, reflect padding
brightness (multiplicative) 0.15   per channel factor from BGContrast(0.75, 1.25)
contrast                    0.15   per channel factor BGContrast(0.75, 1.25) about the mean,
                                   clipped to the channel's previous range
low resolution              0.25   per channel p 0.5, zoom U(0.5, 1) same for all axes (not
                                   axis 0 for dummy 2D), nearest down, (tri)linear up
gamma on inverted image     0.1    per channel gamma BGContrast(0.7, 1.5), stats retained
gamma                       0.3    same, not inverted
mirroring                   0.5    per allowed axis, image and labels together
==========================  =====  =============================================================

BGContrast(lo, hi) draws U(lo, 1) or U(1, hi) with equal chance, so shrinking and growing are
equally likely.

How it is made cheap (it shares the CPU with the network):

* **One resampling** does rotation, scaling, mirroring and the crop from the sampling patch to
  the final patch: the combined affine goes to a single ``grid_sample`` over all samples that
  drew a rotation or scaling (about 36 % of them), with the image channels (linear) and one
  indicator channel per foreground label stacked together. Labels are the argmax of the
  interpolated indicators (background = 1 - sum of the others, which makes outside-the-image
  background), as nnU-Net does; ``label_interpolation="nearest"`` is the cheaper alternative.
  Every other sample is a plain centre crop (a copy), mirrored by a flipped copy.
  Mirroring is folded into this step (before the intensity transforms instead of after them,
  as in nnU-Net); the intensity transforms act on each channel as a whole or symmetrically, so
  the distribution of outputs is the same.
* The centre of the resampling is the centre of the plain crop, so an identity transform gives
  exactly the crop (no half-voxel shift, no blurring of the labels).
* Intensity transforms run on the batch in torch, only on the samples and channels that drew
  them; blur is a separable depthwise convolution over all selected channels at once.
* ``device`` moves the batch first, so everything runs on the training device when it is a GPU.

Randomness comes from a ``numpy.random.Generator`` (and a torch generator seeded from it), so a
batch is a pure function of its seed on a given device.

Public API (used by the trainer)::

    cfg = default_augmentation(patch_size)                 # or (patch_size, dim, anisotropic)
    cfg.initial_patch_size                                 # sampling patch for PatchSampler
    out = augment_batch(batch, cfg, rng, device="cpu")     # train
    out = crop_batch(batch, patch_size, device="cpu")      # validation
    # out: {"data": float32 tensor (B,C,*patch), "target": int16 tensor (B,1,*patch), "keys": [...]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: nnU-Net's threshold on max(patch) / patch[0] above which a 3D patch gets 2D augmentation.
ANISOTROPY_THRESHOLD = 3.0


@dataclass(frozen=True)
class AugmentationConfig:
    """Every probability and range of the augmentation; defaults are nnU-Net v2.8.1's.

    Angles are in radians. ``rotation`` is the range for every rotated axis; with
    ``dummy_2d`` only the in-plane rotation (about axis 0) and in-plane scaling are applied to
    a 3D patch. ``mirror_axes`` are spatial axes (0-based).
    """

    patch_size: tuple[int, ...]
    initial_patch_size: tuple[int, ...]
    dummy_2d: bool = False
    p_rotation: float = 0.2
    rotation: tuple[float, float] = (-math.pi / 6, math.pi / 6)
    p_scaling: float = 0.2
    scaling: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_p_per_channel: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_truncate: float = 6.0
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_p_per_channel: float = 0.5
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_mirror_per_axis: float = 0.5
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    label_interpolation: str = "linear"

    def __post_init__(self) -> None:
        if len(self.patch_size) not in (2, 3) or len(self.initial_patch_size) != len(self.patch_size):
            raise ValueError(f"patch_size {self.patch_size} / initial_patch_size {self.initial_patch_size}: "
                             "need 2 or 3 entries each")
        if any(i < p for i, p in zip(self.initial_patch_size, self.patch_size)):
            raise ValueError(f"initial_patch_size {self.initial_patch_size} smaller than patch {self.patch_size}")
        if self.label_interpolation not in ("linear", "nearest"):
            raise ValueError(f"label_interpolation must be 'linear' or 'nearest', got {self.label_interpolation!r}")
        if any(not 0 <= a < len(self.patch_size) for a in self.mirror_axes):
            raise ValueError(f"mirror_axes {self.mirror_axes} outside the patch's {len(self.patch_size)} axes")

    @property
    def dim(self) -> int:
        return len(self.patch_size)

    def without_augmentation(self) -> "AugmentationConfig":
        """The same patch geometry with every probability 0 (for tests and ablations)."""
        return replace(self, p_rotation=0.0, p_scaling=0.0, p_noise=0.0, p_blur=0.0, p_brightness=0.0,
                       p_contrast=0.0, p_low_resolution=0.0, p_gamma_inverted=0.0, p_gamma=0.0,
                       p_mirror_per_axis=0.0)


# --------------------------------------------------------------------------- configuration

def _rotation_coords_product(vec: np.ndarray, axes: tuple[int, int], angle: float) -> np.ndarray:
    """``vec`` (a patch-size vector) as a row vector times the rotation in the plane ``axes``."""
    c, s = math.cos(angle), math.sin(angle)
    out = vec.astype(np.float64).copy()
    a, b = axes
    out[a] = vec[a] * c + vec[b] * s
    out[b] = -vec[a] * s + vec[b] * c
    return out


def compute_initial_patch_size(patch_size: Sequence[int], rotation: Sequence[float] | float,
                               scale_range: Sequence[float] = (0.85, 1.25),
                               dummy_2d: bool = False) -> tuple[int, ...]:
    """The sampling patch from which rotation and scaling cut the final ``patch_size``.

    Reproduces nnU-Net v2's numbers (its ``get_patch_size``, called by the trainer with
    ``scale_range`` (0.85, 1.25)): the patch-size vector is rotated by the largest angle (capped
    at 90°) about each axis in turn, the elementwise maximum of the absolute results is kept,
    divided by the smallest scale and truncated to integers. For an anisotropic 3D patch
    augmented in-plane (``dummy_2d``) axis 0 keeps its size. Hippocampus (40, 56, 40) gives
    (73, 80, 64); a 512 x 512 2D patch gives (602, 602).

    This is an estimate, not a bound (rotating the diagonal vector under-estimates the rotated
    box, and the scale range passed is not the one sampled), so strongly rotated or zoomed-out
    samples still see some zero padding at their corners, exactly as in nnU-Net.

    Args:
        patch_size: final (network) patch, 2 or 3 values.
        rotation: largest absolute angle in radians, or a (low, high) range.
        scale_range: sampling scale range; only its minimum is used.
        dummy_2d: 3D patch augmented in-plane only: axis 0 keeps its size.
    """
    ps = np.asarray(patch_size, dtype=np.float64)
    if isinstance(rotation, (tuple, list, np.ndarray)):
        angle = float(np.max(np.abs(rotation)))
    else:
        angle = abs(float(rotation))
    angle = min(angle, math.pi / 2)
    final = ps.copy()
    if len(ps) == 2:
        final = np.maximum(final, np.abs(_rotation_coords_product(ps, (0, 1), angle)))
    elif len(ps) == 3:
        # row vector times the rotation about axis 0, 1 and 2 (the middle one's sine is mirrored)
        for plane, sign in (((1, 2), 1.0), ((0, 2), -1.0), ((0, 1), 1.0)):
            final = np.maximum(final, np.abs(_rotation_coords_product(ps, plane, sign * angle)))
    else:
        raise ValueError(f"patch_size must have 2 or 3 entries, got {patch_size}")
    out = (final / min(scale_range)).astype(int)
    if dummy_2d and len(ps) == 3:
        out[0] = int(ps[0])
    return tuple(int(v) for v in out)


def default_augmentation(patch_size: Sequence[int], dim: int | None = None, anisotropic: bool | None = None,
                         **overrides) -> AugmentationConfig:
    """nnU-Net's configuration for a patch (``configure_rotation_dummyDA_mirroring_and_inital_patch_size``).

    Args:
        patch_size: the network patch (2 or 3 values, numpy axis order).
        dim: 2 or 3; derived from ``patch_size`` when omitted (must agree when given).
        anisotropic: 3D only: augment in-plane only ("dummy 2D"). Derived as nnU-Net does when
            omitted: ``max(patch) / patch[0] > 3`` (axis 0 is the coarse axis after
            transposition).
        **overrides: any :class:`AugmentationConfig` field (e.g. ``label_interpolation``).
    """
    patch = tuple(int(p) for p in patch_size)
    if dim is None:
        dim = len(patch)
    if dim != len(patch) or dim not in (2, 3):
        raise ValueError(f"dim {dim} does not match patch_size {patch}")
    if dim == 2:
        dummy = False
        wide = max(patch) / min(patch) > 1.5
        rotation = (-math.pi / 12, math.pi / 12) if wide else (-math.pi, math.pi)
        mirror = (0, 1)
    else:
        dummy = (max(patch) / patch[0] > ANISOTROPY_THRESHOLD) if anisotropic is None else bool(anisotropic)
        rotation = (-math.pi, math.pi) if dummy else (-math.pi / 6, math.pi / 6)
        mirror = (0, 1, 2)
    rotation = overrides.pop("rotation", rotation)
    initial = overrides.pop("initial_patch_size", None)
    if initial is None:
        initial = compute_initial_patch_size(patch, rotation, (0.85, 1.25), dummy_2d=dummy)
    return AugmentationConfig(patch_size=patch, initial_patch_size=tuple(int(v) for v in initial),
                              dummy_2d=dummy, rotation=tuple(rotation), mirror_axes=overrides.pop("mirror_axes", mirror),
                              **overrides)


# --------------------------------------------------------------------------- helpers

def _bg_contrast(rng: np.random.Generator, lo: float, hi: float) -> float:
    """batchgeneratorsv2's BGContrast: U(lo, 1) or U(1, hi) with equal chance."""
    if rng.random() < 0.5 and lo < 1:
        return float(rng.uniform(lo, 1.0))
    return float(rng.uniform(max(lo, 1.0), hi))


def _rotation_matrix(angles: Sequence[float], dim: int) -> np.ndarray:
    """Rotation in numpy axis order: about axis 0, then 1, then 2 (3D) or in-plane (2D)."""
    if dim == 2:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    r = np.eye(3)
    for axis, angle in enumerate(angles):
        if angle == 0:
            continue
        a, b = [i for i in range(3) if i != axis]
        c, s = math.cos(angle), math.sin(angle)
        m = np.eye(3)
        m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
        r = m @ r
    return r


def _to_tensor(x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t.to(device, non_blocking=True)


def _crop_slices(initial: Sequence[int], patch: Sequence[int]) -> tuple[slice, ...]:
    """Centre crop as batchgeneratorsv2 does it: start = floor(s / 2) - p // 2."""
    return tuple(slice(s // 2 - p // 2, s // 2 - p // 2 + p) for s, p in zip(initial, patch))


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """1D Gaussian, odd size round-to-odd(sigma * truncate + 0.5) like batchgeneratorsv2."""
    n = sigma * truncate + 0.5
    size = round(n)
    if size % 2 == 0:
        size = size + 1 if n - size >= 0 else size - 1
    half = (size - 1) / 2
    x = np.linspace(-half, half, size)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


# --------------------------------------------------------------------------- spatial

def _spatial(data: torch.Tensor, seg: torch.Tensor, cfg: AugmentationConfig, rng: np.random.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation + scaling + mirroring + centre crop, one resampling for the samples that need it."""
    b = data.shape[0]
    dim = cfg.dim
    initial, patch = cfg.initial_patch_size, cfg.patch_size
    # 2D augmentation of a 3D patch acts on axes (1, 2); rotation/scale matrices live there
    plane_axes = (1, 2) if cfg.dummy_2d else tuple(range(dim))
    affines: dict[int, np.ndarray] = {}
    flips: list[tuple[int, ...]] = []
    for i in range(b):
        do_rot = rng.random() < cfg.p_rotation
        do_scale = rng.random() < cfg.p_scaling
        n_plane = len(plane_axes)
        if do_rot:
            if n_plane == 2:
                angles = [float(rng.uniform(*cfg.rotation))]
            else:
                angles = [float(rng.uniform(*cfg.rotation)) for _ in range(3)]
        scale = float(rng.uniform(*cfg.scaling)) if do_scale else 1.0
        flip = tuple(a for a in cfg.mirror_axes if rng.random() < cfg.p_mirror_per_axis)
        flips.append(flip)
        if do_rot or do_scale:
            sub = _rotation_matrix(angles, n_plane) if do_rot else np.eye(n_plane)
            sub = sub * scale  # scale is isotropic, so order with rotation does not matter
            a = np.eye(dim)
            a[np.ix_(plane_axes, plane_axes)] = sub
            for ax in flip:
                a[:, ax] *= -1  # mirror the output axis
            affines[i] = a

    c = data.shape[1]
    out_data = torch.empty((b, c, *patch), dtype=data.dtype, device=data.device)
    out_seg = torch.empty((b, seg.shape[1], *patch), dtype=seg.dtype, device=seg.device)
    crop = (slice(None), slice(None)) + _crop_slices(initial, patch)
    plain = [i for i in range(b) if i not in affines]
    for i in plain:
        d, s = data[i][crop[1:]], seg[i][crop[1:]]
        if flips[i]:
            dims = [ax + 1 for ax in flips[i]]
            d, s = torch.flip(d, dims), torch.flip(s, dims)
        out_data[i] = d
        out_seg[i] = s
    if affines:
        idx = sorted(affines)
        _resample(data, seg, idx, [affines[i] for i in idx], cfg, out_data, out_seg)
    return out_data, out_seg


def _resample(data: torch.Tensor, seg: torch.Tensor, idx: list[int], affines: list[np.ndarray],
              cfg: AugmentationConfig, out_data: torch.Tensor, out_seg: torch.Tensor) -> None:
    """Resample samples ``idx`` with their affines (output offset -> input offset, voxels)."""
    s = np.asarray(cfg.initial_patch_size, dtype=np.float64)
    p = np.asarray(cfg.patch_size, dtype=np.float64)
    start = s // 2 - p // 2
    centre = start + (p - 1) / 2  # input voxel at the centre of the plain crop
    thetas = []
    for a in affines:
        lin = np.diag(2.0 / s) @ a @ np.diag(p / 2.0)
        t = (2 * centre + 1) / s - 1
        # grid_sample orders coordinates x, y(, z): reverse the numpy axis order
        theta = np.concatenate([lin[::-1, ::-1], t[::-1, None]], axis=1)
        thetas.append(theta)
    dev = data.device
    theta_t = torch.as_tensor(np.stack(thetas), dtype=torch.float32, device=dev)
    n = len(idx)
    size = (n, 1, *cfg.patch_size)
    grid = F.affine_grid(theta_t, list(size), align_corners=False)
    index = torch.as_tensor(idx, device=dev)
    sub_data = data.index_select(0, index)
    sub_seg = seg.index_select(0, index)[:, 0]
    if cfg.label_interpolation == "nearest":
        out_data[index] = F.grid_sample(sub_data, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        lab = F.grid_sample(seg.index_select(0, index).float(), grid, mode="nearest", padding_mode="zeros",
                            align_corners=False)
        out_seg[index] = lab.round().to(out_seg.dtype)
        return
    for channel in range(1, seg.shape[1]):  # cascade: the previous stage's labels, resampled alike
        out_seg[index, channel] = _resample_labels(seg.index_select(0, index)[:, channel], grid, out_seg.dtype)
    fg = [v for v in _label_values(sub_seg) if v != 0]
    c = sub_data.shape[1]
    if not fg:
        out_data[index] = F.grid_sample(sub_data, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out_seg[index, 0] = 0
        return
    # image channels and one indicator per foreground label, resampled together
    stacked = torch.empty((n, c + len(fg), *sub_data.shape[2:]), dtype=sub_data.dtype, device=dev)
    stacked[:, :c] = sub_data
    for k, v in enumerate(fg):
        torch.eq(sub_seg, v, out=stacked[:, c + k])  # writes 0. / 1. straight into the stack
    res = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_data[index] = res[:, :c]
    # argmax over (background, fg...) with background = 1 - sum(fg): outside the image all
    # indicators are 0, so background wins there. A running comparison is much faster on CPU
    # than argmax over a strided channel axis; ties keep the lower label.
    best = 1.0 - res[:, c:].sum(1)
    winner = torch.zeros(best.shape, dtype=out_seg.dtype, device=dev)
    for k, v in enumerate(fg):
        score = res[:, c + k]
        better = score > best
        winner.masked_fill_(better, v)
        best = torch.maximum(best, score)
    out_seg[index, 0] = winner


def _resample_labels(seg: torch.Tensor, grid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Label maps ``(N, *spatial)`` on ``grid`` by the indicator rule of :func:`_resample`."""
    fg = [v for v in _label_values(seg) if v != 0]
    winner = torch.zeros((seg.shape[0], *grid.shape[1:-1]), dtype=dtype, device=seg.device)
    if not fg:
        return winner
    indicators = torch.stack([(seg == v).float() for v in fg], 1)
    res = F.grid_sample(indicators, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    best = 1.0 - res.sum(1)
    for k, v in enumerate(fg):
        better = res[:, k] > best
        winner.masked_fill_(better, v)
        best = torch.maximum(best, res[:, k])
    return winner


def _label_values(seg: torch.Tensor) -> list[int]:
    """Candidate label values of ``seg``: every value between its minimum and maximum.

    One min/max pass instead of a sort (``torch.unique`` costs 10-20x more on a batch); a value
    in the range that does not occur only adds an all-zero indicator channel. Label maps with a
    very wide value range fall back to ``torch.unique``.
    """
    lo, hi = (int(v) for v in torch.aminmax(seg))
    if hi - lo > 64:
        return [int(v) for v in torch.unique(seg).tolist()]
    return list(range(lo, hi + 1))


# --------------------------------------------------------------------------- intensity

def _pick(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Indices among ``n`` that fire with probability ``p`` (always draws ``n`` numbers)."""
    return np.nonzero(rng.random(n) < p)[0]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _noise(data: torch.Tensor, cfg: AugmentationConfig, rng: np.random.Generator, gen: torch.Generator) -> None:
    sel = _pick(rng, data.shape[0], cfg.p_noise)
    stds = [float(rng.uniform(*cfg.noise_std)) for _ in sel]
    for i, std in zip(sel, stds):
        if std > 0:
            noise = torch.randn(data.shape[1:], generator=gen, device=data.device, dtype=data.dtype)
            data[i].add_(noise, alpha=std)


def _blur(data: torch.Tensor, cfg: AugmentationConfig, rng: np.random.Generator) -> None:
    b, c = data.shape[:2]
    dim = data.ndim - 2
    sel = _pick(rng, b, cfg.p_blur)
    slices: list[tuple[int, int]] = []
    sigmas: list[list[float]] = []
    for i in sel:
        for ch in range(c):
            if rng.random() < cfg.blur_p_per_channel:
                slices.append((int(i), ch))
                sigmas.append([float(rng.uniform(*cfg.blur_sigma)) for _ in range(dim)])
    if not slices:
        return
    bi = torch.as_tensor([s[0] for s in slices], device=data.device)
    ci = torch.as_tensor([s[1] for s in slices], device=data.device)
    x = data[bi, ci][None]  # (1, N, *spatial): one depthwise convolution for all slices
    n = x.shape[1]
    conv = (F.conv1d, F.conv2d, F.conv3d)[dim - 1]
    for axis in range(dim):
        kernels = [_gaussian_kernel(sig[axis], cfg.blur_truncate) for sig in sigmas]
        width = max(len(k) for k in kernels)
        bank = np.zeros((n, width))
        for j, k in enumerate(kernels):  # zero taps around smaller kernels leave their result unchanged
            off = (width - len(k)) // 2
            bank[j, off:off + len(k)] = k
        half = width // 2
        if half == 0:
            continue
        shape = [n, 1] + [1] * dim
        shape[2 + axis] = width
        weight = torch.as_tensor(bank, dtype=x.dtype, device=x.device).reshape(shape)
        pad = [0, 0] * dim
        pad[2 * (dim - 1 - axis)] = half
        pad[2 * (dim - 1 - axis) + 1] = half
        if x.shape[2 + axis] <= half:  # reflect needs a pad smaller than the axis
            x = F.pad(x, pad, mode="replicate")
        else:
            x = F.pad(x, pad, mode="reflect")
        x = conv(x, weight, groups=n)
    data[bi, ci] = x[0]


def _brightness(data: torch.Tensor, cfg: AugmentationConfig, rng: np.random.Generator) -> None:
    sel = _pick(rng, data.shape[0], cfg.p_brightness)
    for i in sel:
        factors = [_bg_contrast(rng, *cfg.brightness) for _ in range(data.shape[1])]
        data[i].mul_(torch.as_tensor(factors, dtype=data.dtype, device=data.device).view(-1, *[1] * (data.ndim - 2)))


def _row_stats(x: torch.Tensor, std: bool = False) -> tuple[torch.Tensor, ...]:
    """Per-row ``(mean, min, max[, std])`` of ``(N, V)``, keepdim.

    Written out because ``torch.aminmax``/``torch.std_mean`` over a dimension are 5-15x slower
    on CPU than ``amin``/``amax``/``mean`` and a norm of the centred rows (Bessel-corrected std,
    as ``torch.std``).
    """
    mean = x.mean(1, keepdim=True)
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    if not std:
        return mean, lo, hi
    sd = torch.linalg.vector_norm(x - mean, dim=1, keepdim=True) / math.sqrt(max(x.shape[1] - 1, 1))
    return mean, lo, hi, sd


def _contrast(data: torch.Tensor, cfg: AugmentationConfig, rng: np.random.Generator) -> None:
    sel = _pick(rng, data.shape[0], cfg.p_contrast)
    for i in sel:
        factors = [_bg_contrast(rng, *cfg.contrast) for _ in range(data.shape[1])]
        x = _flat(data[i])
        mean, lo, hi = _row_stats(x)
        m = torch.as_tensor(factors, dtype=x.dtype, device=x.device)[:, None]
        y = (x - mean).mul_(m).add_(mean)
        data[i] = torch.clamp(y, lo, hi).view_as(data[i])


def _low_resolution(data: torch.Tensor, cfg: AugmentationConfig, rng: np.random.Generator) -> None:
    b, c = data.shape[:2]
    spatial = data.shape[2:]
    mode = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
    sel = _pick(rng, b, cfg.p_low_resolution)
    for i in sel:
        for ch in range(c):
            if rng.random() >= cfg.low_resolution_p_per_channel:
                continue
            zoom = float(rng.uniform(*cfg.low_resolution_zoom))
            small = [max(1, round(s * zoom)) for s in spatial]
            if cfg.dummy_2d:
                small[0] = spatial[0]
            x = data[i, ch][None, None]
            down = F.interpolate(x, size=small, mode="nearest-exact")
            data[i, ch] = F.interpolate(down, size=list(spatial), mode=mode, align_corners=False)[0, 0]


def _gamma(data: torch.Tensor, p: float, invert: bool, cfg: AugmentationConfig, rng: np.random.Generator) -> None:
    b, c = data.shape[:2]
    sel = _pick(rng, b, p)
    if len(sel) == 0:
        return
    gammas = [_bg_contrast(rng, *cfg.gamma) for _ in range(len(sel) * c)]
    index = torch.as_tensor(sel, device=data.device)
    x = data.index_select(0, index).reshape(len(sel) * c, -1)
    g = torch.as_tensor(gammas, dtype=x.dtype, device=x.device)[:, None]
    if invert:
        x = x.neg_()
    mean, lo, hi, std = _row_stats(x, std=True)
    rng_ = hi - lo
    # x ** g as exp(g * log x): 3x faster than pow on CPU; log 0 = -inf gives 0 ** g = 0
    x = torch.exp(torch.log((x - lo) / rng_.clamp_min(1e-7)).mul_(g)).mul_(rng_).add_(lo)
    mean2, _, _, std2 = _row_stats(x, std=True)
    x = (x - mean2).mul_(std / std2.clamp_min(1e-7)).add_(mean)
    if invert:
        x = x.neg_()
    data[index] = x.view(len(sel), c, *data.shape[2:])


# --------------------------------------------------------------------------- public

def augment_batch(batch: dict, config: AugmentationConfig, rng: np.random.Generator,
                  device: str | torch.device = "cpu") -> dict:
    """Augment a sampled batch and crop it to the final patch.

    Args:
        batch: ``{"data": (B,C,*initial_patch) float32, "target": (B,1,*initial_patch) int,
            "keys": [...]}`` (numpy arrays or tensors), as from ``PatchSampler.sample_batch``.
        config: the augmentation (``default_augmentation(patch_size)``).
        rng: the source of every random choice; the same seed gives the same batch.
        device: where to compute ("cuda" puts augmentation on the training device).

    Returns:
        ``{"data": float32 tensor (B,C,*patch), "target": int16 tensor (B,1,*patch), "keys"}``
        on ``device``; other keys of ``batch`` are passed through.
    """
    dev = torch.device(device)
    data = _to_tensor(batch["data"], dev, torch.float32)
    seg = _to_tensor(batch["target"], dev, torch.int16)
    if tuple(data.shape[2:]) != config.initial_patch_size:
        raise ValueError(f"batch patch {tuple(data.shape[2:])} != the config's initial_patch_size "
                         f"{config.initial_patch_size}; sample with PatchSampler(initial_patch_size=...)")
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(rng.integers(2 ** 62)))
    with torch.no_grad():
        data, seg = _spatial(data, seg, config, rng)
        _noise(data, config, rng, gen)
        _blur(data, config, rng)
        _brightness(data, config, rng)
        _contrast(data, config, rng)
        _low_resolution(data, config, rng)
        _gamma(data, config.p_gamma_inverted, True, config, rng)
        _gamma(data, config.p_gamma, False, config, rng)
    out = {k: v for k, v in batch.items() if k not in ("data", "target")}
    out.update(data=data, target=seg, keys=list(batch["keys"]))
    return out


def crop_batch(batch: dict, patch_size: Sequence[int], device: str | torch.device = "cpu") -> dict:
    """Validation: no augmentation, a centre crop to ``patch_size`` (a no-op when it already fits).

    Same input and output contract as :func:`augment_batch`.
    """
    dev = torch.device(device)
    data = _to_tensor(batch["data"], dev, torch.float32)
    seg = _to_tensor(batch["target"], dev, torch.int16)
    patch = tuple(int(p) for p in patch_size)
    if tuple(data.shape[2:]) != patch:
        if any(s < p for s, p in zip(data.shape[2:], patch)):
            raise ValueError(f"batch patch {tuple(data.shape[2:])} is smaller than {patch}")
        sl = (slice(None), slice(None)) + _crop_slices(data.shape[2:], patch)
        data, seg = data[sl].contiguous(), seg[sl].contiguous()
    out = {k: v for k, v in batch.items() if k not in ("data", "target")}
    out.update(data=data, target=seg, keys=list(batch["keys"]))
    return out
