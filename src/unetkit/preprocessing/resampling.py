"""Resample images and label maps between voxel spacings.

Rules (those of nnU-Net, so that shapes and values agree with it):

* New shape per axis: ``round(old_shape * old_spacing / new_spacing)`` (:func:`compute_new_shape`).
* Images: spline of order 3, edge values repeated past the border, no anti-aliasing, result
  clipped to the input's value range (a cubic spline overshoots at sharp edges).
* Anisotropic data: when ``max(spacing) / min(spacing) > anisotropy_threshold`` (3 by default)
  for the current spacing (or else for the target spacing), and exactly one axis has the
  largest spacing, that axis is resampled separately: every slice in-plane with the normal
  order, then along the coarse axis with ``separate_axis_order`` (0: nearest slice). A cubic
  spline across 5 mm slices would invent structure between them.
* Label maps: never interpolate class numbers. With order 0 each voxel takes its nearest
  neighbour's class; with order >= 1 each class's one-hot mask is interpolated separately and
  every voxel takes the class with the largest interpolated weight, so no class that is not
  in the input can appear. A class present in the input that this leaves with no voxel at all
  (a structure thinner than the new voxel size) keeps the one voxel where its weight peaks.
* When the new shape equals the old one nothing is computed (the common 1 mm case).

Axes are numpy axes. All functions take ``(C, *spatial)`` images or ``spatial`` label maps
with 2 or 3 spatial axes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

DEFAULT_ANISOTROPY_THRESHOLD = 3.0


def compute_new_shape(old_shape: Sequence[int], old_spacing: Sequence[float],
                      new_spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxel shape after resampling from ``old_spacing`` to ``new_spacing`` (both mm per axis)."""
    if not (len(old_shape) == len(old_spacing) == len(new_spacing)):
        raise ValueError(f"shape {tuple(old_shape)}, spacing {tuple(old_spacing)} and target spacing "
                         f"{tuple(new_spacing)} must have one entry per axis")
    return tuple(max(1, int(round(float(s) * float(o) / float(n))))
                 for s, o, n in zip(old_shape, old_spacing, new_spacing))


def _single_coarse_axis(spacing: Sequence[float]) -> int | None:
    spacing = np.asarray(spacing, dtype=float)
    axes = np.flatnonzero(spacing == spacing.max())
    return int(axes[0]) if axes.size == 1 else None


def separate_axis(current_spacing: Sequence[float], new_spacing: Sequence[float],
                  threshold: float = DEFAULT_ANISOTROPY_THRESHOLD) -> int | None:
    """The axis to resample separately (anisotropic data), or None to resample all axes together.

    The current spacing decides first, then the target spacing; the coarsest axis is chosen
    only when it is unique (two equally coarse axes, e.g. (0.24, 1.25, 1.25), are not
    "a stack of slices"). Only 3D data has such an axis.
    """
    if len(current_spacing) != 3:
        return None
    for spacing in (current_spacing, new_spacing):
        s = np.asarray(spacing, dtype=float)
        if s.min() > 0 and s.max() / s.min() > threshold:
            return _single_coarse_axis(s)
    return None


def _zoom(x: np.ndarray, new_shape: Sequence[int], order: int, clip: bool = False) -> np.ndarray:
    """Resize one float array to ``new_shape`` with a spline of ``order``, voxel centres aligned.

    ``clip`` limits the result to the input's value range (splines of order > 1 overshoot).
    """
    if tuple(x.shape) == tuple(new_shape):
        return x
    factors = [n / o for n, o in zip(new_shape, x.shape)]
    # grid_mode=True maps voxel *areas* onto each other (align_corners=False), as skimage's
    # resize does; 'nearest' repeats the edge value for samples just past the border.
    out = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True, output=np.float32,
                       prefilter=order > 1)
    if clip and order > 1 and x.size:
        np.clip(out, x.min(), x.max(), out=out)
    return out


def _resample_float(x: np.ndarray, new_shape: Sequence[int], order: int, axis: int | None,
                    axis_order: int, clip: bool = False) -> np.ndarray:
    """Resample a float32 array ``spatial`` to ``new_shape``, optionally with a separate coarse axis.

    With ``clip``, each resized piece (the whole array, or each slice on the anisotropic path)
    stays within its own input range, as skimage's resize (used by nnU-Net) does.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if axis is None:
        return _zoom(x, new_shape, order, clip)
    inplane = list(new_shape)
    inplane[axis] = x.shape[axis]
    if tuple(inplane) != x.shape:
        out = np.empty(inplane, dtype=np.float32)
        slice_shape = [s for a, s in enumerate(new_shape) if a != axis]
        for i in range(x.shape[axis]):
            index = [slice(None)] * x.ndim
            index[axis] = i
            out[tuple(index)] = _zoom(x[tuple(index)], slice_shape, order, clip)
        x = out
    if x.shape[axis] != new_shape[axis]:
        x = _zoom(x, new_shape, axis_order, clip)  # only the coarse axis still changes
    return x


def resample_image(data: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                   new_spacing: Sequence[float], order: int = 3, separate_axis_order: int = 0,
                   anisotropy_threshold: float = DEFAULT_ANISOTROPY_THRESHOLD, clip: bool = True) -> np.ndarray:
    """Resample every channel of ``data (C, *spatial)`` to ``new_shape`` (voxels); float32 out.

    ``current_spacing``/``new_spacing`` (mm) only decide the anisotropic path; ``new_shape``
    fixes the output size. ``clip`` keeps each channel within its input range. Returns the
    input unchanged (no copy) when the shape already matches.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    axis = separate_axis(current_spacing, new_spacing, anisotropy_threshold)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        channel = data[c].astype(np.float32, copy=False)
        out[c] = _resample_float(channel, new_shape, order, axis, separate_axis_order, clip)
    return out


def resample_probabilities(probs: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                           new_spacing: Sequence[float], order: int = 1, separate_axis_order: int = 0,
                           anisotropy_threshold: float = DEFAULT_ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample class probabilities ``(K, *spatial)`` (linear by default, as for export)."""
    return resample_image(probs, new_shape, current_spacing, new_spacing, order, separate_axis_order,
                          anisotropy_threshold, clip=False)


def _argmax_over_classes(label: np.ndarray, classes: Sequence[int],
                         resize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Interpolate each class's one-hot mask with ``resize`` and keep, per voxel, the heaviest class."""
    best: np.ndarray | None = None
    out: np.ndarray | None = None
    peaks: dict[int, tuple[int, float]] = {}
    for cls in classes:
        weight = resize((label == cls).astype(np.float32))
        if best is None:
            best = weight.copy()
            out = np.full(weight.shape, cls, dtype=label.dtype)
        else:
            better = weight > best
            out[better] = cls
            np.maximum(best, weight, out=best)
        flat = int(np.argmax(weight))
        peaks[int(cls)] = (flat, float(weight.flat[flat]))
    # Small-structure rescue: a class the argmax erased keeps its single strongest voxel, unless
    # that voxel is the last one of another class.
    present = set(np.unique(out).tolist())
    for cls, (flat, value) in peaks.items():
        if cls in present or value <= 0:
            continue
        holder = int(out.flat[flat])
        if np.count_nonzero(out == holder) > 1:
            out.flat[flat] = cls
            present.add(cls)
    return out


def resample_label(label: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                   new_spacing: Sequence[float], order: int = 1, separate_axis_order: int = 0,
                   anisotropy_threshold: float = DEFAULT_ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample a label map ``spatial`` to ``new_shape`` without inventing classes (see module doc).

    Returns the input unchanged (no copy) when the shape already matches.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(label.shape) == new_shape:
        return label
    axis = separate_axis(current_spacing, new_spacing, anisotropy_threshold)
    classes = np.unique(label)
    if order == 0 and (axis is None or separate_axis_order == 0):
        # Nearest neighbour on the class numbers directly: one pass instead of one per class.
        res = _resample_float(label.astype(np.float32), new_shape, 0, axis, 0)
        return np.rint(res).astype(label.dtype)
    return _argmax_over_classes(label, classes,
                                lambda m: _resample_float(m, new_shape, order, axis, separate_axis_order))
