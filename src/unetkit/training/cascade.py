"""The 3d_lowres -> 3d_cascade_fullres cascade: where the previous stage's predictions live.

As in nnU-Net v2.8.1: the low-resolution configuration (``3d_lowres``, with ``next_stage``)
writes, during each fold's final validation, its prediction of every validation case resampled
to the next stage's preprocessed grid. Over the five folds every training case is predicted
once, by the fold that did not train on it::

    models/3d_lowres__ARCH/predicted_next_stage/3d_cascade_fullres/CASE.npy   int16 (1, *spatial)

The cascade configuration (``previous_stage``: ``3d_lowres``) trains on its own cache
(3d_fullres's) plus those label maps, given to the network as one channel per foreground label
(nnU-Net's ``convert_labelmap_to_one_hot`` over ``foreground_labels``): ``num_input_channels +
len(foreground labels)`` input channels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from unetkit.data.errors import DataError

PREDICTED_NEXT_STAGE = "predicted_next_stage"


def previous_stage(entry: dict) -> str | None:
    """The configuration whose predictions this one takes as input (None: not a cascade stage)."""
    return entry.get("previous_stage")


def next_stages(entry: dict) -> list[str]:
    """The configurations that take this one's predictions (nnU-Net allows a name or a list)."""
    value = entry.get("next_stage")
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def stage_labels(plans: dict) -> list[int]:
    """Foreground label values, one input channel each for the next stage (nnU-Net's order)."""
    from unetkit.preprocessing.preprocess import foreground_labels

    return foreground_labels(plans)


def extra_channels(plans: dict, entry: dict) -> int:
    """Input channels a configuration adds to the image channels (0 unless it is a cascade stage)."""
    return len(stage_labels(plans)) if previous_stage(entry) else 0


def predictions_folder(models_root: Path, previous: str, arch: str, configuration: str) -> Path:
    """``models/PREVIOUS__ARCH/predicted_next_stage/CONFIGURATION``."""
    return Path(models_root) / f"{previous}__{arch}" / PREDICTED_NEXT_STAGE / configuration


def require_predictions(folder: Path, cases: Sequence[str], previous: str, configuration: str) -> None:
    """Stop with the missing cases' names when the previous stage has not predicted them all."""
    missing = [c for c in cases if not (folder / f"{c}.npy").is_file()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(f"{configuration} needs the {previous} predictions of its cases, but {len(missing)} of "
                        f"{len(cases)} are missing ({shown}); train all five folds of {previous} first "
                        f"(`unetkit train DATASET -c {previous} -f F` for F in 0..4; each writes its validation "
                        f"cases here)", folder)


def prediction_signatures(folder: Path, cases: Sequence[str]) -> dict[str, str]:
    """``{case: content hash of its previous-stage prediction, or "missing"}``: recorded in the
    cascade's checkpoints, so a resumed cascade notices that 3d_lowres was retrained (its
    predictions changed) as it notices changed raw files."""
    out = {}
    for case in sorted(set(cases)):
        path = Path(folder) / f"{case}.npy"
        out[case] = hashlib.sha256(path.read_bytes()).hexdigest()[:24] if path.is_file() else "missing"
    return out


def load_prediction(folder: Path, case: str, shape: Sequence[int], mmap: bool = False) -> np.ndarray:
    """The previous stage's label map of ``case``, int16 ``(1, *shape)`` on the cache grid
    (``mmap``: a read-only memory map, so that a training sample reads only its patch)."""
    path = folder / f"{case}.npy"
    try:
        seg = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the previous stage's prediction ({exc})", path, case) from exc
    if seg.shape != (1, *shape):
        raise DataError(f"previous stage's prediction has shape {seg.shape}, the case's cache grid "
                        f"(1, {', '.join(map(str, shape))}); predict the previous stage again", path, case)
    if seg.dtype != np.int16:
        raise DataError(f"previous stage's prediction is {seg.dtype}, expected int16; predict the previous stage "
                        "again", path, case)
    return seg


def one_hot(seg: np.ndarray, labels: Sequence[int], dtype=np.float32) -> np.ndarray:
    """``(len(labels), *spatial)``: channel ``i`` is 1 where ``seg == labels[i]`` (``seg`` spatial)."""
    out = np.zeros((len(labels), *seg.shape), dtype=dtype)
    for i, value in enumerate(labels):
        out[i][seg == value] = 1
    return out


def with_previous_stage(data: np.ndarray, previous_seg: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """The network input: image channels, then the previous stage's one-hot (``previous_seg`` (1, *spatial))."""
    return np.concatenate([np.asarray(data, dtype=np.float32), one_hot(previous_seg[0], labels)], axis=0)


def to_logits(probabilities: np.ndarray, regions: bool) -> np.ndarray:
    """Logits up to a per-voxel constant: log-probabilities (softmax) or log-odds (sigmoid regions)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float32), 1e-30, 1.0)
    return np.log(p / np.clip(1.0 - p, 1e-30, 1.0)) if regions else np.log(p)


def from_logits(logits: np.ndarray, regions: bool) -> np.ndarray:
    """Probabilities again: softmax over channels, or a sigmoid per region channel."""
    if regions:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def write_next_stage(probabilities: np.ndarray, target_shape: Sequence[int], folder: Path, case: str,
                     entry: dict, to_labels: Callable[[np.ndarray], np.ndarray], regions: bool = False) -> Path:
    """Resample this stage's prediction (its cache grid) to the next stage's cache grid, take the
    label map (``to_labels`` of probabilities) and write it atomically as ``CASE.npy``.

    As nnU-Net's ``resample_and_save``: the *logits* are resampled linearly (order 1; the coarse
    axis of an anisotropic spacing with order 0), the axis decision taken from this stage's spacing
    alone (nnU-Net passes it as both current and target spacing). Interpolation is linear, so the
    log-probabilities give the same label map as nnU-Net's logits (they differ per voxel by one
    constant over the classes).
    """
    from unetkit.preprocessing.resampling import resample_probabilities
    from unetkit.utils.atomic import atomic_path

    spacing = [float(s) for s in entry["spacing"]]
    opts = entry.get("resampling") or {}
    resampled = resample_probabilities(to_logits(probabilities, regions), [int(s) for s in target_shape],
                                       spacing, spacing, 1, int(opts.get("separate_axis_order", 0)),
                                       float(opts.get("anisotropy_threshold", 3.0)))
    seg = np.asarray(to_labels(from_logits(resampled, regions))).astype(np.int16)[None]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, seg, allow_pickle=False)
    return path
