"""Crop a case to the region where the image has signal.

Many scans carry a frame of exact zeros (skull-stripped brains, fundus photographs with a black
border, volumes padded by the scanner). Training on that frame wastes patches and memory, so
the first preprocessing step cuts each case to the bounding box of its *nonzero mask*: voxels
where any channel is nonzero, with enclosed holes filled so that dark structures inside the
body (air in the lungs, a dark vessel) stay inside the mask. This is the same rule nnU-Net
uses, so that the crop, and therefore the cached shapes, agree with it.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Boolean mask ``spatial``: True where any channel of ``data (C, *spatial)`` is nonzero, holes filled."""
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    if mask.all():
        return mask  # nothing to fill; skips the (relatively costly) hole filling
    return binary_fill_holes(mask)


def bbox_of_mask(mask: np.ndarray) -> list[list[int]]:
    """Half-open bounding box ``[[start, stop], ...]`` (voxels, per axis) of the True voxels.

    An all-False mask (an image of zeros) gives the whole array, so that such a case is kept
    uncropped instead of vanishing.
    """
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        if hits.size == 0:
            return [[0, s] for s in mask.shape]
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def bbox_slices(bbox: list[list[int]]) -> tuple[slice, ...]:
    """The bounding box as a tuple of slices over the spatial axes."""
    return tuple(slice(a, b) for a, b in bbox)


def crop_to_nonzero(data: np.ndarray, label: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[list[int]]]:
    """Crop ``data (C, *spatial)`` and ``label (spatial)`` to the nonzero mask's bounding box.

    Returns:
        ``(data, label, mask, bbox)``: cropped views (no copy) of the inputs, the cropped
        nonzero mask (used for masked normalization), and the half-open box in the input's
        axis order.
    """
    mask = nonzero_mask(data)
    bbox = bbox_of_mask(mask)
    sl = bbox_slices(bbox)
    return data[(slice(None), *sl)], (None if label is None else label[sl]), mask[sl], bbox


def uncrop(array: np.ndarray, bbox: list[list[int]], original_shape: tuple[int, ...],
           fill: float | int | np.ndarray = 0) -> np.ndarray:
    """Place ``array`` (``(K, *crop)`` or ``crop``) back into an array of ``original_shape``.

    Voxels outside the box get ``fill``; for a ``(K, ...)`` array ``fill`` may be a length-K
    vector (e.g. probability 1 for background, 0 for the other classes).
    """
    spatial_ndim = len(original_shape)
    lead = array.shape[: array.ndim - spatial_ndim]
    out = np.empty((*lead, *original_shape), dtype=array.dtype)
    fill = np.asarray(fill, dtype=array.dtype)
    if fill.ndim == 1 and lead:
        out[...] = fill.reshape((-1,) + (1,) * spatial_ndim)
    else:
        out[...] = fill
    out[(Ellipsis, *bbox_slices(bbox))] = array
    return out
