"""Connected-component postprocessing, decided on cross-validation results as nnU-Net does.

The only operation is "keep the largest connected component": within the union of some labels
(or regions), every voxel outside the largest connected component (full connectivity: 26
neighbours in 3D, 8 in 2D; a tie goes to the component met first in row-major order) is set to
background (0).

:func:`determine_postprocessing` tries, on cross-validation predictions and their references:

1. keep the largest component of **all foreground** together; accepted when the mean
   foreground Dice gets strictly higher and no single label's mean Dice gets lower (nnU-Net v2's
   defensive rule);
2. then, when there is more than one label, for each label (or region) in turn, keep its
   largest component; accepted when that label's mean Dice gets strictly higher. Each trial
   starts from the predictions with the steps accepted so far.

Dice here is nnU-Net's: per case ``2TP / (2TP + FP + FN)``, NaN when both masks are empty, mean
over cases without the NaNs; ignore-label voxels are left out.

The decision is saved as ``postprocessing.json`` (see docs/evaluation.md)::

    {"format_version": 1,
     "connectivity": "full",
     "steps": [{"operation": "keep_largest_component", "labels": [1, 2]},
               {"operation": "keep_largest_component", "labels": [2]}],
     "trials": [...], "dice_before": {...}, "dice_after": {...}}

``labels`` of a step lists label values or regions (a region is a list of values); the union
of their masks is what gets filtered. :func:`load_postprocessing` reads it (or returns None when
there is none) and :func:`apply_postprocessing` applies it to a label map; ``unetkit predict``
does both automatically when the model folder holds the file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import read_label, write_label
from unetkit.evaluation.evaluate import map_cases, pair_folders, resolve_labels
from unetkit.evaluation.metrics import LabelOrRegion, label_key, normalize_label, region_mask
from unetkit.utils.atomic import atomic_write_json, read_json

POSTPROCESSING_FILE = "postprocessing.json"
POSTPROCESSING_FORMAT_VERSION = 1
OPERATION = "keep_largest_component"


# ----------------------------------------------------------------------------------- applying

def keep_largest_component(segmentation: np.ndarray, labels: Sequence[int | Sequence[int]],
                           background: int = 0) -> np.ndarray:
    """Set to ``background`` every voxel of the union of ``labels`` outside its largest component.

    Full connectivity (26 in 3D, 8 in 2D), via connected-components-3d. Returns a new array.
    """
    import cc3d

    segmentation = np.asarray(segmentation)
    if segmentation.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {segmentation.shape}")
    mask = np.zeros(segmentation.shape, dtype=bool)
    for label in labels:
        mask |= region_mask(segmentation, normalize_label(label))
    result = segmentation.copy()
    if not mask.any():
        return result
    connectivity = 26 if segmentation.ndim == 3 else 8
    components = cc3d.connected_components(mask.astype(np.uint8), connectivity=connectivity, binary_image=True)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # background of the mask
    largest = np.flatnonzero(sizes == sizes.max())
    if largest.size > 1:
        # A tie: keep the component met first in C (row-major) order, whatever cc3d's numbering.
        ids, first = np.unique(components.ravel(), return_index=True)
        tied = np.isin(ids, largest)
        winner = int(ids[tied][np.argmin(first[tied])])
    else:
        winner = int(largest[0])
    keep = components == winner
    result[mask & ~keep] = background
    return result


def _step_labels(step: Mapping[str, Any], where: str) -> list[LabelOrRegion]:
    if step.get("operation") != OPERATION:
        raise ValueError(f"{where}: unknown postprocessing operation {step.get('operation')!r}; "
                         f"this version knows {OPERATION!r}")
    labels = step.get("labels")
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{where}: 'labels' must be a non-empty list of label values or regions, found {labels!r}")
    try:
        return [normalize_label(v) for v in labels]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'labels' must hold integers or lists of integers, found {labels!r}") from None


def validate_postprocessing(spec: Mapping[str, Any], where: str = "postprocessing") -> list[list[LabelOrRegion]]:
    """Check a postprocessing dictionary; return the label lists of its steps in order."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a JSON object, found {type(spec).__name__}")
    version = spec.get("format_version", POSTPROCESSING_FORMAT_VERSION)
    if version != POSTPROCESSING_FORMAT_VERSION:
        raise ValueError(f"{where}: format_version {version!r} is not supported (expected "
                         f"{POSTPROCESSING_FORMAT_VERSION})")
    steps = spec.get("steps")
    if not isinstance(steps, list):
        raise ValueError(f"{where}: 'steps' must be a list, found {steps!r}")
    return [_step_labels(step, f"{where}: steps[{i}]") for i, step in enumerate(steps)]


def apply_postprocessing(segmentation: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    """Apply the steps of a postprocessing specification (None or no steps: unchanged copy)."""
    if spec is None:
        return np.array(segmentation, copy=True)
    result = np.asarray(segmentation)
    steps = validate_postprocessing(spec)
    if not steps:
        return result.copy()
    for labels in steps:
        result = keep_largest_component(result, labels)
    return result


def load_postprocessing(model_dir: str | Path) -> dict[str, Any] | None:
    """Read ``model_dir/postprocessing.json`` (a folder, or the file itself); None when absent.

    Raises:
        ValueError: the file exists but is malformed (the message names it).
    """
    path = Path(model_dir)
    if path.is_dir():
        path = path / POSTPROCESSING_FILE
    if not path.is_file():
        return None
    spec = read_json(path)
    validate_postprocessing(spec, str(path))
    return spec


def _postprocess_file(job: tuple) -> str:
    source, target, spec = job
    seg, geometry = read_label(source)
    write_label(apply_postprocessing(seg, spec), target, geometry)
    return str(target)


def postprocess_folder(input_dir: str | Path, output_dir: str | Path, spec: Mapping[str, Any],
                       file_ending: str | None = None, num_processes: int | None = None) -> list[Path]:
    """Apply ``spec`` to every label file of ``input_dir``, writing ``output_dir/SAME_NAME``."""
    from unetkit.evaluation.evaluate import list_label_files

    validate_postprocessing(spec)
    files = list_label_files(input_dir, file_ending)
    jobs = [(str(p), str(Path(output_dir) / p.name), dict(spec)) for p in files.values()]
    return [Path(p) for p in map_cases(_postprocess_file, jobs, num_processes)]


# ----------------------------------------------------------------------------------- deciding

def _case_counts(job: tuple) -> np.ndarray:
    """(L, 3) array of TP, FP, FN per label after applying ``steps`` to one prediction."""
    case, pred_path, gt_path, steps, labels, ignore_label = job
    gt, _ = read_label(gt_path, case)
    pred, _ = read_label(pred_path, case)
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {tuple(pred.shape)} differs from the reference's {tuple(gt.shape)}",
                        pred_path, case)
    for step in steps:
        pred = keep_largest_component(pred, step)
    valid = None if ignore_label is None else gt != ignore_label
    counts = np.zeros((len(labels), 3), dtype=np.int64)
    for i, label in enumerate(labels):
        p, g = region_mask(pred, label), region_mask(gt, label)
        if valid is not None:
            p, g = p & valid, g & valid
        tp = int(np.count_nonzero(p & g))
        counts[i] = (tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp)
    return counts


def _mean_dice(counts: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """Per-label mean over cases of the per-case Dice (NaN cases left out), and their mean."""
    stacked = np.stack(counts).astype(np.float64)  # (cases, labels, 3)
    tp, fp, fn = stacked[..., 0], stacked[..., 1], stacked[..., 2]
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)
    defined = ~np.isnan(dice)
    per_label = np.array([float(np.mean(dice[defined[:, i], i])) if defined[:, i].any() else math.nan
                          for i in range(dice.shape[1])])
    fg = per_label[~np.isnan(per_label)]
    return per_label, float(np.mean(fg)) if fg.size else math.nan


def _gt(a: float, b: float) -> bool:
    """a > b, where a defined value beats NaN and NaN never beats anything."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b


def determine_postprocessing_pairs(pairs: Sequence[tuple[str, str | Path, str | Path]],
                                   labels: Mapping[str, Any] | Iterable[int | Sequence[int]],
                                   ignore_label: int | None = None, num_processes: int | None = None,
                                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Decide postprocessing from ``(case, prediction, reference)`` pairs (see the module doc).

    Returns the postprocessing dictionary (not written; see :func:`determine_postprocessing`).
    """
    say = log or (lambda message: None)
    label_list, _, ignore_label = resolve_labels(labels, ignore_label)
    keys = [label_key(v) for v in label_list]
    if not pairs:
        raise ValueError("no cases to decide postprocessing on")
    jobs_for = lambda steps: [(c, str(p), str(g), steps, label_list, ignore_label) for c, p, g in pairs]  # noqa: E731

    def score(steps: list) -> tuple[np.ndarray, float]:
        return _mean_dice(map_cases(_case_counts, jobs_for(steps), num_processes))

    base_labels, base_fg = score([])
    say(f"postprocessing: mean foreground Dice without postprocessing {base_fg:.5f}")
    accepted: list[list[LabelOrRegion]] = []
    trials: list[dict[str, Any]] = []

    # 1. largest component of all foreground together.
    trial = [list(label_list)]
    new_labels, new_fg = score(trial)
    worse = [k for k, a, b in zip(keys, new_labels, base_labels) if not math.isnan(b) and (math.isnan(a) or a < b)]
    take = _gt(new_fg, base_fg) and not worse
    trials.append({"labels": [_jsonable(v) for v in label_list], "scope": "all foreground",
                   "dice_before": _nan_none(base_fg), "dice_after": _nan_none(new_fg), "applied": take,
                   **({"labels_made_worse": worse} if worse else {})})
    say(f"postprocessing: largest component of all foreground: {base_fg:.5f} -> {new_fg:.5f}, "
        f"{'applied' if take else 'not applied'}")
    current_labels, current_fg = base_labels, base_fg
    if take:
        accepted.append(list(label_list))
        current_labels, current_fg = new_labels, new_fg

    # 2. per label or region, in declaration order, each on top of what was accepted.
    if len(label_list) > 1:
        for i, label in enumerate(label_list):
            new_labels, new_fg = score(accepted + [[label]])
            take = _gt(new_labels[i], current_labels[i])
            trials.append({"labels": [_jsonable(label)], "scope": f"label {keys[i]}",
                           "dice_before": _nan_none(current_labels[i]), "dice_after": _nan_none(new_labels[i]),
                           "applied": take})
            say(f"postprocessing: largest component of label {keys[i]}: {current_labels[i]:.5f} -> "
                f"{new_labels[i]:.5f}, {'applied' if take else 'not applied'}")
            if take:
                accepted.append([label])
                current_labels, current_fg = new_labels, new_fg

    return {
        "format_version": POSTPROCESSING_FORMAT_VERSION,
        "connectivity": "full",
        "steps": [{"operation": OPERATION, "labels": [_jsonable(v) for v in step]} for step in accepted],
        "num_cases": len(pairs),
        "ignore_label": ignore_label,
        "dice_before": {"foreground_mean": _nan_none(base_fg),
                        "mean": {k: _nan_none(v) for k, v in zip(keys, base_labels)}},
        "dice_after": {"foreground_mean": _nan_none(current_fg),
                       "mean": {k: _nan_none(v) for k, v in zip(keys, current_labels)}},
        "trials": trials,
    }


def determine_postprocessing(pred_dir: str | Path, gt_dir: str | Path,
                             labels: Mapping[str, Any] | Iterable[int | Sequence[int]], *,
                             ignore_label: int | None = None, file_ending: str | None = None,
                             num_processes: int | None = None, output: str | Path | None = None,
                             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Decide postprocessing on the predictions in ``pred_dir`` and save it.

    Args:
        pred_dir: cross-validation predictions (all cases, as nnU-Net requires for a fair
            decision; every reference must have a prediction).
        gt_dir: reference label maps.
        labels: values/regions, or a dataset.json ``labels`` mapping.
        output: where to write ``postprocessing.json`` (a folder or a file; default
            ``pred_dir/postprocessing.json``); ``""`` writes nothing.

    Returns:
        The postprocessing dictionary (``steps`` may be empty: nothing helped).
    """
    pairs, _, _ = pair_folders(pred_dir, gt_dir, file_ending, allow_missing=False)
    spec = determine_postprocessing_pairs(pairs, labels, ignore_label, num_processes, log)
    if output != "":
        save_postprocessing(spec, pred_dir if output is None else output)
    return spec


def save_postprocessing(spec: Mapping[str, Any], destination: str | Path) -> Path:
    """Write ``spec`` atomically to a ``postprocessing.json`` (``destination``: folder or file)."""
    destination = Path(destination)
    if destination.suffix.lower() != ".json":
        destination = destination / POSTPROCESSING_FILE
    validate_postprocessing(spec, str(destination))
    atomic_write_json(destination, spec)
    return destination


def _jsonable(label: LabelOrRegion) -> int | list[int]:
    return list(label) if isinstance(label, tuple) else int(label)


def _nan_none(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
