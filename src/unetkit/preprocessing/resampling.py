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
* Label maps: nnU-Net v2.8.1's rule (with batchgenerators 0.25.5, which
  benchmarks/setup_nnunet_venv.sh pins); class numbers are never interpolated. With order 0 each voxel takes its nearest neighbour's
  class. With order >= 1 each class's one-hot mask is interpolated separately (float64, clipped
  to [0, 1]) and every voxel takes the class with the largest weight; an exact tie (a sample
  point half-way between two classes, as every boundary voxel of a 2x downsampling is) goes to
  the nearest neighbour's class when it is one of the tied ones, else to the smallest tied class.
  On the anisotropic path each slice is resampled so in-plane, then the label map is resampled
  along the coarse axis: nearest slice with ``separate_axis_order`` 0, else each class's one-hot
  is interpolated and thresholded (``> 0.5``) in ascending class order onto zeros (a voxel no
  class passes, e.g. half-way between two slices of different classes, stays 0).
  A class thinner than the new voxels can thus vanish, exactly as in nnU-Net.
* When the new shape equals the old one nothing is computed (the common 1 mm case).

Axes are numpy axes. All functions take ``(C, *spatial)`` images or ``spatial`` label maps
with 2 or 3 spatial axes.
"""

from __future__ import annotations

from typing import Sequence

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


def _zoom(x: np.ndarray, new_shape: Sequence[int], order: int, clip: bool = False,
          dtype: type = np.float32) -> np.ndarray:
    """Resize one float array to ``new_shape`` with a spline of ``order``, voxel centres aligned.

    ``clip`` limits the result to the input's value range (splines of order > 1 overshoot).
    ``dtype`` is the result's (float64 where exact ties between interpolated values matter).
    """
    if tuple(x.shape) == tuple(new_shape):
        return x
    factors = [n / o for n, o in zip(new_shape, x.shape)]
    # grid_mode=True maps voxel *areas* onto each other (align_corners=False), as skimage's
    # resize does; 'nearest' repeats the edge value for samples just past the border.
    out = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True, output=dtype,
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


def _nearest_labels(label: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Each new voxel's nearest input voxel's class (order 0 on the class numbers)."""
    return np.rint(_zoom(label.astype(np.float64), new_shape, 0, dtype=np.float64)).astype(label.dtype)


def _resample_label_jointly(label: np.ndarray, new_shape: Sequence[int], order: int) -> np.ndarray:
    """All axes at once: the per-voxel argmax of the interpolated one-hot masks, exact ties going to
    the nearest neighbour's class when it is among the tied (see the module doc)."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(label.shape) == new_shape:
        return label
    nearest = _nearest_labels(label, new_shape)
    classes = np.unique(label)
    if order == 0 or classes.size < 2:
        return nearest
    best: np.ndarray | None = None
    winner = np.zeros(new_shape, dtype=np.int32)           # index into ``classes``
    nearest_score = np.zeros(new_shape, dtype=np.float64)  # the nearest neighbour class's weight
    for index, cls in enumerate(classes):
        # float64 as skimage's resize (what nnU-Net calls): ties are decided by exact equality
        score = _zoom((label == cls).astype(np.float64), new_shape, order, clip=True, dtype=np.float64)
        np.copyto(nearest_score, score, where=nearest == cls)
        if best is None:
            best = score
            continue
        np.copyto(winner, index, where=score > best)       # strict: a tie stays with the smaller class
        np.maximum(best, score, out=best)
    assert best is not None
    out = classes.astype(label.dtype)[winner]
    nearest_tied = (nearest_score == best) & (best > 0)
    out[nearest_tied] = nearest[nearest_tied]
    return out


def _threshold_along_axis(label: np.ndarray, new_shape: Sequence[int], axis: int, order: int) -> np.ndarray:
    """Resample along ``axis`` only (the others keep their size): each class's one-hot is
    interpolated (spline ``order``, edge values repeated) and written where it exceeds 0.5, in
    ascending class order onto zeros, as nnU-Net does along the coarse axis."""
    # Sample positions with voxel centres aligned (align_corners=False): in / out * (i + 0.5) - 0.5.
    axes = [(old / new) * (np.arange(new) + 0.5) - 0.5 for old, new in zip(label.shape, new_shape)]
    coordinates = np.array(np.meshgrid(*axes, indexing="ij"))
    out = np.zeros(tuple(new_shape), dtype=label.dtype)
    for cls in np.unique(label):
        weight = ndimage.map_coordinates((label == cls).astype(np.float64), coordinates, order=order, mode="nearest")
        out[np.round(weight) > 0.5] = cls
    return out


def _resample_label_separate_axis(label: np.ndarray, new_shape: Sequence[int], order: int, axis: int,
                                  axis_order: int) -> np.ndarray:
    """Anisotropic data: every slice across ``axis`` in-plane, then along ``axis`` (module doc)."""
    inplane_shape = list(new_shape)
    inplane_shape[axis] = label.shape[axis]
    slice_shape = [s for a, s in enumerate(new_shape) if a != axis]
    inplane = np.empty(inplane_shape, dtype=label.dtype)
    for i in range(label.shape[axis]):
        index = (slice(None),) * axis + (i,)
        inplane[index] = _resample_label_jointly(label[index], slice_shape, order)
    if inplane.shape[axis] == new_shape[axis]:
        return inplane
    if axis_order == 0:
        return _nearest_labels(inplane, new_shape)
    return _threshold_along_axis(inplane, new_shape, axis, axis_order)


def resample_label(label: np.ndarray, new_shape: Sequence[int], current_spacing: Sequence[float],
                   new_spacing: Sequence[float], order: int = 1, separate_axis_order: int = 0,
                   anisotropy_threshold: float = DEFAULT_ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample a label map ``spatial`` to ``new_shape`` by nnU-Net's rule (see the module doc).

    Returns the input unchanged (no copy) when the shape already matches.
    """
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(label.shape) == new_shape:
        return label
    axis = separate_axis(current_spacing, new_spacing, anisotropy_threshold)
    if axis is None:
        return _resample_label_jointly(label, new_shape, order)
    return _resample_label_separate_axis(label, new_shape, order, axis, separate_axis_order)
