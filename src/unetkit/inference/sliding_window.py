"""Sliding-window prediction: a whole image through a network trained on fixed-size patches.

A network trained on patches sees an image of any size through overlapping windows ("tiles").
Each tile's logits are weighted by a Gaussian importance map (high in the tile's centre, where the
network saw the most context, low at its borders) and summed; dividing by the summed weights
gives, at every voxel, the weighted mean of the predictions of all tiles that cover it.

* :func:`gaussian_importance_map` - the weights for one patch size (computed once per size).
* :func:`tile_starts` / :func:`tile_grid` - where the windows go (step 0.5 of the patch by default,
  spread evenly so the first and last window touch the image's borders).
* :func:`sliding_window_logits` - the whole prediction: tiles gathered in batches, optional
  test-time mirroring, accumulation on the prediction device.

The image may have more spatial axes than the network: a 2D network on a 3D volume predicts each
slice along the leading axes, and slices are batched together like tiles.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# The window layout is plain numpy/python (shared with the torch-free ONNX predictor).
from unetkit.inference.tiling import (DEFAULT_SIGMA_SCALE, DEFAULT_STEP_SIZE, gaussian_weights, mirror_combinations,
                                      tile_grid, tile_starts)


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = DEFAULT_SIGMA_SCALE,
                            device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Separable Gaussian weights over a patch, peak 1 at the centre, strictly positive everywhere.

    ``sigma = patch_edge * sigma_scale`` per axis (voxels). The centre is the patch's geometric
    centre (between two voxels for even sizes), so the map is symmetric under mirroring of any
    axis: mirrored test-time passes get the same weights. The smallest weight is clamped to a
    positive floor so that every voxel of every tile counts, however little.
    """
    # One definition (numpy, float64 inside) for both engines: the ONNX predictor has no torch.
    return torch.from_numpy(gaussian_weights(patch_size, sigma_scale)).to(device=device, dtype=dtype)


@lru_cache(maxsize=16)
def _cached_gaussian(patch: tuple[int, ...], sigma_scale: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    return gaussian_importance_map(patch, sigma_scale, device, dtype)


def count_forward_passes(image_shape: Sequence[int], patch_size: Sequence[int], step_size: float = DEFAULT_STEP_SIZE,
                         mirror_axes: Sequence[int] = ()) -> tuple[int, int]:
    """``(tiles, mirror passes)`` that :func:`sliding_window_logits` runs for an image (slices
    along extra leading axes count as tiles)."""
    k = len(patch_size)
    lead = int(np.prod(image_shape[: len(image_shape) - k], dtype=np.int64))
    padded = [max(int(s), int(p)) for s, p in zip(image_shape[len(image_shape) - k:], patch_size)]
    return lead * len(tile_grid(padded, patch_size, step_size)), len(mirror_combinations(mirror_axes))


def _pad_to_patch(image: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad the trailing spatial axes symmetrically with zeros up to the patch; return the crop back."""
    k = len(patch)
    shape = image.shape[image.ndim - k:]
    if all(s >= p for s, p in zip(shape, patch)):
        return image, tuple(slice(None) for _ in range(image.ndim))
    pads: list[tuple[int, int]] = []
    keep: list[slice] = []
    for s, p in zip(shape, patch):
        total = max(0, int(p) - int(s))
        before = total // 2
        pads.append((before, total - before))
        keep.append(slice(before, before + int(s)))
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants the last axis first
    # Zero is the normalized images' mean (z-scoring) or background (rescaling), as nnU-Net pads.
    padded = F.pad(image, flat, mode="constant", value=0.0)
    return padded, tuple([slice(None)] * (image.ndim - k) + keep)


def _windows(lead_shape: Sequence[int], starts: list[tuple[int, ...]]) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    for lead in itertools.product(*[range(int(n)) for n in lead_shape]):
        for start in starts:
            yield lead, start


def sliding_window_logits(network: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          patch_size: Sequence[int], num_outputs: int, *, step_size: float = DEFAULT_STEP_SIZE,
                          mirror_axes: Sequence[int] = (), tile_batch: int = 4, use_gaussian: bool = True,
                          sigma_scale: float = DEFAULT_SIGMA_SCALE, device: torch.device | str | None = None,
                          accumulate_dtype: torch.dtype = torch.float32,
                          memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Predict logits for a whole image by Gaussian-weighted sliding windows.

    Args:
        network: maps ``(B, C, *patch)`` to logits ``(B, num_outputs, *patch)`` (eval mode,
            no deep supervision).
        image: ``(C, *spatial)``; ``spatial`` has ``len(patch_size)`` axes, or more: the extra
            leading axes are iterated (a 2D network over the slices of a volume).
        patch_size: the network's patch (voxels), one entry per network axis.
        num_outputs: channels the network returns.
        step_size: window stride as a fraction of the patch (0.5: each voxel is seen by up to
            2 windows per axis).
        mirror_axes: network axes (0-based, spatial) to mirror at test time; every subset of
            them is one more forward pass, and the passes are averaged.
        tile_batch: network inputs per forward call (tiles times their mirrored copies).
        use_gaussian: weight by the Gaussian importance map (else a plain mean of the tiles).
        device: where the network runs and the logits accumulate (default: the image's).
        accumulate_dtype: dtype of the accumulators (float32; float16 halves GPU memory).
        memory_format: e.g. ``torch.channels_last_3d`` for the tile batches (the network must
            already be in that format).

    Returns:
        ``(num_outputs, *spatial)`` float32 logits on ``device``, the weighted mean over tiles
        and mirror passes. An image smaller than the patch is padded with zeros and the result
        cropped back.
    """
    if image.ndim < len(patch_size) + 1:
        raise ValueError(f"image of shape {tuple(image.shape)} has fewer spatial axes than the patch {tuple(patch_size)}")
    device = torch.device(device) if device is not None else image.device
    patch = tuple(int(p) for p in patch_size)
    k = len(patch)
    image = image.to(device=device, dtype=torch.float32, non_blocking=True)
    image, keep = _pad_to_patch(image, patch)
    spatial = tuple(image.shape[1:])
    lead_shape, window_shape = spatial[: len(spatial) - k], spatial[len(spatial) - k:]
    starts = tile_grid(window_shape, patch, step_size)
    combos = mirror_combinations(mirror_axes)
    for axes in combos:
        if any(a >= k or a < 0 for a in axes):
            raise ValueError(f"mirror axes {tuple(mirror_axes)} outside the network's {k} spatial axes")

    weight, weight_sum = _tile_weights(patch, window_shape, starts, use_gaussian, sigma_scale, device,
                                       accumulate_dtype)
    logits = torch.zeros((num_outputs, *spatial), device=device, dtype=accumulate_dtype)

    # ``tile_batch`` counts network inputs per call: tiles times the mirrored copies of each. A
    # small image (one tile, 8 mirror passes) thus runs as one batch of 8, a large one as batches
    # of tiles, each with its mirrored copies in as few calls as fit.
    per_call = max(1, int(tile_batch))
    tiles_per_chunk = max(1, per_call // len(combos))
    combos_per_call = max(1, min(len(combos), per_call // tiles_per_chunk))
    windows = list(_windows(lead_shape, starts))
    for i in range(0, len(windows), tiles_per_chunk):
        chunk = windows[i:i + tiles_per_chunk]
        index = [(slice(None), *lead, *(slice(s, s + p) for s, p in zip(start, patch))) for lead, start in chunk]
        batch = torch.stack([image[ix] for ix in index])
        out = _mirrored_mean(network, batch, combos, combos_per_call, memory_format, accumulate_dtype)
        out = out * weight
        for j, ix in enumerate(index):
            logits[ix] += out[j]
    logits /= weight_sum
    return logits[keep].to(torch.float32)


def _tile_weights(patch: tuple[int, ...], window_shape: tuple[int, ...], starts: list[tuple[int, ...]],
                  use_gaussian: bool, sigma_scale: float, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """One tile's weights and their sum over the window layout (it depends on the layout only, so
    one accumulation over the windows of one slice serves every leading index)."""
    if use_gaussian:
        weight = _cached_gaussian(patch, float(sigma_scale), str(device), dtype)
    else:
        weight = torch.ones(patch, device=device, dtype=dtype)
    weight_sum = torch.zeros(window_shape, device=device, dtype=dtype)
    for start in starts:
        weight_sum[tuple(slice(s, s + p) for s, p in zip(start, patch))] += weight
    return weight, weight_sum


def _mirrored_mean(network: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                   combos: list[tuple[int, ...]], combos_per_call: int, memory_format: torch.memory_format | None,
                   dtype: torch.dtype) -> torch.Tensor:
    """Mean of the network's outputs over the mirror passes of ``batch`` (each flipped back),
    ``combos_per_call`` passes per forward call."""
    n = batch.shape[0]
    out = None
    for g in range(0, len(combos), combos_per_call):
        group = combos[g:g + combos_per_call]
        x = torch.cat([torch.flip(batch, [a + 2 for a in axes]) if axes else batch for axes in group])
        if memory_format is not None:
            x = x.contiguous(memory_format=memory_format)
        y = network(x)
        if isinstance(y, (list, tuple)):
            y = y[0]
        for j, axes in enumerate(group):
            part = y[j * n:(j + 1) * n]
            part = (torch.flip(part, [a + 2 for a in axes]) if axes else part).to(dtype)
            out = part if out is None else out + part
    assert out is not None
    return out * (1.0 / len(combos)) if len(combos) > 1 else out


__all__ = ["DEFAULT_SIGMA_SCALE", "DEFAULT_STEP_SIZE", "gaussian_importance_map", "tile_starts", "tile_grid",
           "mirror_combinations", "count_forward_passes", "sliding_window_logits"]
