"""Segmentation metrics of one case, in physical units (millimetres).

Per label (or region) this module computes overlap metrics from voxel counts and surface
metrics from Euclidean distance transforms that honour the voxel spacing:

* ``Dice`` = 2TP / (2TP + FP + FN), ``IoU`` = TP / (TP + FP + FN),
  ``Precision`` = TP / (TP + FP), ``Recall`` = TP / (TP + FN).
* ``HD95`` (mm): the **larger of the two directed 95th percentiles** of surface distances,
  ``max(P95(d(S_pred -> S_ref)), P95(d(S_ref -> S_pred)))`` with numpy's linear
  interpolation, exactly MONAI's ``compute_hausdorff_distance(percentile=95)``. (medpy's
  ``hd95`` instead pools both directions before taking one percentile; the two differ
  slightly.)
* ``ASSD`` (mm): average symmetric surface distance, the mean over the pooled distances of
  both directions.
* ``NSD``: normalized surface Dice at a tolerance tau (mm), Nikolov et al. 2021, counted on
  surface voxels: ``(|{p in S_pred: d(p, S_ref) <= tau}| + |{r in S_ref: d(r, S_pred) <= tau}|)
  / (|S_pred| + |S_ref|)``. This is MONAI's ``compute_surface_dice`` without sub-voxel
  surfels; DeepMind's surface-distance package weighs surface elements by their area instead,
  which gives slightly different numbers on coarse masks.

**Surface** of a mask: its foreground voxels that have at least one background neighbour
along an axis (face connectivity, 6 neighbours in 3D, 4 in 2D), where everything outside the
array counts as background (so a mask touching the array border has a surface there):
``mask & ~binary_erosion(mask, cross structure, border_value=0)``. A surface voxel stands for
its centre; a distance is ``scipy.ndimage.distance_transform_edt(~S_other,
sampling=spacing)`` read at the surface voxels, i.e. the exact Euclidean distance in mm
between voxel centres.

**Empty structures** (nnU-Net's convention by default, ``empty_value=nan``):

* reference and prediction both empty: Dice, IoU, Precision, Recall, NSD are ``empty_value``
  (NaN in nnU-Net, so the case is left out of the means; pass 1.0 to count it as perfect);
  HD95 and ASSD are NaN (or 0.0 mm when ``empty_value`` is not NaN);
* exactly one empty: Dice = IoU = NSD = 0, HD95 = ASSD = +inf (no surface to measure to);
  Precision is NaN when the prediction is empty (0/0), Recall is NaN when the reference is
  empty (0/0), the other one is 0.

**Ignore label**: reference voxels with the ignore value are removed from both masks before
anything is counted or measured (nnU-Net does the same for the counts).

**Regions**: a label given as a tuple of values is the union of those values (nnU-Net's
region-based evaluation, e.g. BraTS' whole tumour ``(1, 2, 3)``).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence, Union

import numpy as np
from scipy import ndimage

LabelOrRegion = Union[int, tuple[int, ...]]

OVERLAP_METRICS = ("Dice", "IoU", "Precision", "Recall")
SURFACE_METRICS = ("HD95", "ASSD", "NSD")
COUNT_KEYS = ("TP", "FP", "FN", "TN", "n_pred", "n_ref")
ALL_METRICS = OVERLAP_METRICS + SURFACE_METRICS + COUNT_KEYS


def label_key(label: LabelOrRegion) -> str:
    """JSON/CSV key of a label or region: ``"1"`` or ``"(1, 2, 3)"`` (nnU-Net's spelling)."""
    if isinstance(label, tuple):
        if len(label) == 1:
            return str(int(label[0]))
        return "(" + ", ".join(str(int(v)) for v in label) + ")"
    return str(int(label))


def parse_label_key(key: str) -> LabelOrRegion:
    """Inverse of :func:`label_key` (also accepts ``"1,2"`` and ``"[1, 2]"``)."""
    text = key.strip().strip("()[]")
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise ValueError(f"label key {key!r} holds no label value")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"label key {key!r} is not an integer or a comma-separated list of integers") from None
    return values[0] if len(values) == 1 else values


def normalize_label(label: int | Sequence[int]) -> LabelOrRegion:
    """An int stays an int; a list/tuple of ints becomes a tuple (one value collapses to an int)."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    values = tuple(int(v) for v in label)  # type: ignore[union-attr]
    if not values:
        raise ValueError("a region must list at least one label value")
    return values[0] if len(values) == 1 else values


def region_mask(segmentation: np.ndarray, label: LabelOrRegion) -> np.ndarray:
    """Boolean mask of ``label`` (one value) or of a region (any of the tuple's values)."""
    if isinstance(label, tuple):
        return np.isin(segmentation, np.asarray(label, dtype=segmentation.dtype))
    return segmentation == label


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Border voxels of a boolean mask (see the module docstring for the exact definition)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices covering ``mask``'s foreground plus ``margin`` voxels, clipped to the array."""
    slices = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        lo = max(int(present[0]) - margin, 0)
        hi = min(int(present[-1]) + 1 + margin, mask.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: ``(d(S_pred -> S_ref), d(S_ref -> S_pred))``.

    Both masks must be non-empty. The work is done on the bounding box of both masks plus one
    voxel, which gives the same surfaces (the margin is background, or the array border, which
    counts as background) and the same distances (every surface voxel lies inside the box), at a
    fraction of the cost for small structures in large images.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    box = _bounding_box(pred | ref)
    pred, ref = pred[box], ref[box]
    s_pred, s_ref = surface_voxels(pred), surface_voxels(ref)
    sampling = [float(s) for s in spacing]
    to_ref = ndimage.distance_transform_edt(~s_ref, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=sampling)
    return to_ref[s_pred], to_pred[s_ref]


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], tolerance: float = 1.0,
                   valid: np.ndarray | None = None, empty_value: float = math.nan,
                   surface: bool = True) -> dict[str, float]:
    """All metrics of one binary prediction against one binary reference.

    Args:
        pred, ref: boolean masks of the same shape (2D or 3D).
        spacing: voxel size per array axis, mm.
        tolerance: NSD tolerance, mm.
        valid: optional boolean mask of voxels to evaluate (False = ignored voxel).
        empty_value: Dice/IoU/Precision/Recall/NSD when both masks are empty (NaN: nnU-Net).
        surface: compute HD95, ASSD and NSD (the distance transforms are the slow part).
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {pred.ndim}D mask")
    if valid is not None:
        pred = pred & valid
        ref = ref & valid
        n_valid = int(np.count_nonzero(valid))
    else:
        n_valid = pred.size
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    tn = n_valid - tp - fp - fn
    out: dict[str, float] = {}
    both_empty = n_pred == 0 and n_ref == 0
    if both_empty:
        for key in OVERLAP_METRICS:
            out[key] = float(empty_value)
    else:
        out["Dice"] = 2.0 * tp / (2 * tp + fp + fn)
        out["IoU"] = tp / (tp + fp + fn)
        out["Precision"] = _ratio(tp, tp + fp)
        out["Recall"] = _ratio(tp, tp + fn)
    if surface:
        if both_empty:
            distance_value = math.nan if math.isnan(empty_value) else 0.0
            out.update(HD95=distance_value, ASSD=distance_value, NSD=float(empty_value))
        elif n_pred == 0 or n_ref == 0:
            out.update(HD95=math.inf, ASSD=math.inf, NSD=0.0)
        else:
            d_pred, d_ref = surface_distances(pred, ref, spacing)
            out["HD95"] = float(max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)))
            out["ASSD"] = float((d_pred.sum() + d_ref.sum()) / (d_pred.size + d_ref.size))
            correct = np.count_nonzero(d_pred <= tolerance) + np.count_nonzero(d_ref <= tolerance)
            out["NSD"] = float(correct) / float(d_pred.size + d_ref.size)
    out.update(TP=tp, FP=fp, FN=fn, TN=tn, n_pred=n_pred, n_ref=n_ref)
    return out


def tolerance_for(tolerance: float | Mapping[str, float], label: LabelOrRegion) -> float:
    """The NSD tolerance (mm) of ``label``: one number for all, or a mapping by label key."""
    if isinstance(tolerance, Mapping):
        key = label_key(label)
        if key not in tolerance:
            raise ValueError(f"no NSD tolerance given for label {key}; tolerances are given for "
                             f"{sorted(tolerance)}")
        return float(tolerance[key])
    return float(tolerance)


def compute_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float],
                    labels: Iterable[int | Sequence[int]], tolerance: float | Mapping[str, float] = 1.0,
                    ignore_label: int | None = None, empty_value: float = math.nan,
                    surface: bool = True) -> dict[str, dict[str, float]]:
    """Metrics of one case for every label or region.

    Args:
        pred, gt: integer label maps of the same shape (2D or 3D).
        spacing: voxel size per array axis (numpy order), mm; 1.0 for pictures.
        labels: label values and/or regions (sequences of values) to evaluate.
        tolerance: NSD tolerance in mm, for all labels or keyed by :func:`label_key`.
        ignore_label: reference value whose voxels are excluded from everything.
        empty_value: value of the overlap metrics when both masks are empty (NaN = nnU-Net).
        surface: also compute HD95, ASSD and NSD.

    Returns:
        ``{label_key: {"Dice": .., "IoU": .., "Precision": .., "Recall": .., "HD95": ..,
        "ASSD": .., "NSD": .., "TP": .., "FP": .., "FN": .., "TN": .., "n_pred": ..,
        "n_ref": ..}}``; distances in mm.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {gt.shape}")
    valid = None if ignore_label is None else gt != ignore_label
    results: dict[str, dict[str, float]] = {}
    for raw in labels:
        label = normalize_label(raw)
        results[label_key(label)] = binary_metrics(
            region_mask(pred, label), region_mask(gt, label), spacing, tolerance_for(tolerance, label),
            valid=valid, empty_value=empty_value, surface=surface)
    return results
