"""Choose the best trained configuration (or pair of configurations) on cross-validation.

nnU-Net's ``find_best_configuration``, on unetkit's work folder. Cross-validation predictions
are read from (see docs/evaluation.md)::

    WORKDIR/NAME/models/CONFIG__ARCH/fold_F/validation/CASE.ext   label map on the reference grid
    WORKDIR/NAME/models/CONFIG__ARCH/fold_F/validation/CASE.npz   optional: "probabilities" (K, *spatial)

A configuration takes part when every fold of ``splits.json`` has its ``validation/`` folder
with a prediction for each of that fold's validation cases (without ``splits.json``: the
``fold_F/validation`` folders present). Each configuration is evaluated against the references,
then every pair of configurations whose probabilities are all saved is ensembled (probabilities
averaged, then argmax, or region painting for region models) and evaluated too. Candidates are
ranked by the mean foreground Dice (nnU-Net's criterion); postprocessing is decided for the best
one and ``WORKDIR/NAME/best_configuration.json`` names it with the command that predicts with it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import file_ending as io_file_ending
from unetkit.data.io import read_label, write_label
from unetkit.evaluation.evaluate import (evaluate_pairs, list_label_files, map_cases, resolve_labels,
                                         write_results)
from unetkit.evaluation.metrics import label_key
from unetkit.evaluation.postprocessing import determine_postprocessing_pairs, save_postprocessing
from unetkit.utils.atomic import atomic_write_json, read_json

SELECTION_FILE = "best_configuration.json"


@dataclass
class TrainedConfiguration:
    """A trained ``models/CONFIG__ARCH`` folder and its cross-validation predictions."""

    name: str                                   # "CONFIG__ARCH"
    model_dir: Path
    predictions: dict[str, Path] = field(default_factory=dict)    # case -> label map
    probabilities: dict[str, Path] = field(default_factory=dict)  # case -> CASE.npz


def _fold_number(folder: Path) -> int | None:
    suffix = folder.name[len("fold_"):]
    return int(suffix) if folder.name.startswith("fold_") and suffix.isdigit() else None


def collect_configuration(model_dir: Path, file_ending: str, splits: list[dict] | None,
                          folds: Sequence[int] | None = None) -> tuple[TrainedConfiguration | None, str | None]:
    """Gather one configuration's cross-validation predictions, or say why it cannot take part.

    ``folds`` restricts the check to those folds (nnU-Net's ``--folds``); default: every fold of
    ``splits`` (or every ``fold_F`` folder present without splits).
    """
    trained = TrainedConfiguration(model_dir.name, model_dir)
    if folds is not None:
        folds = [int(f) for f in folds]
        if splits is not None:
            outside = [f for f in folds if not 0 <= f < len(splits)]
            if outside:
                return None, f"folds {outside} are not in splits.json ({len(splits)} folds)"
    elif splits is not None:
        folds = list(range(len(splits)))
    else:
        folds = sorted(n for n in (_fold_number(f) for f in model_dir.iterdir() if f.is_dir()) if n is not None)
    if not folds:
        return None, "no fold_F folders"
    for fold in folds:
        folder = model_dir / f"fold_{fold}" / "validation"
        if not folder.is_dir():
            return None, f"fold_{fold}/validation/ is missing (cross-validation predictions of fold {fold})"
        try:
            files = list_label_files(folder, file_ending)
        except DataError as exc:
            return None, f"fold_{fold}/validation/: {exc.message}"
        if splits is not None:
            expected = [str(c) for c in splits[fold]["val"]]
            lacking = sorted(set(expected) - set(files))
            if lacking:
                shown = ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else "")
                return None, (f"fold_{fold}/validation/ lacks {len(lacking)} of the fold's {len(expected)} "
                              f"validation cases ({shown})")
            files = {c: files[c] for c in expected}
        for case, path in files.items():
            if case in trained.predictions:
                return None, f"case {case} is predicted in two folds (fold_{fold} and another)"
            trained.predictions[case] = path
            npz = path.parent / f"{case}.npz"
            if npz.is_file():
                trained.probabilities[case] = npz
    return trained, None


def _read_probabilities(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        if "probabilities" not in data:
            raise DataError(f"no 'probabilities' array (found {sorted(data.files)})", path)
        return data["probabilities"].astype(np.float32)


def probabilities_to_labels(probabilities: np.ndarray, regions_class_order: Sequence[int] | None) -> np.ndarray:
    """Softmax outputs: the most probable channel (channel k = label k). Region outputs: paint
    ``regions_class_order[k]`` where channel k exceeds 0.5, in channel order (nnU-Net's rule)."""
    if regions_class_order is None:
        return np.argmax(probabilities, axis=0).astype(np.int16)
    if len(regions_class_order) != probabilities.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} probability channels but {len(regions_class_order)} regions")
    labels = np.zeros(probabilities.shape[1:], dtype=np.int16)
    for channel, value in enumerate(regions_class_order):
        labels[probabilities[channel] > 0.5] = value
    return labels


def _ensemble_case(job: tuple) -> str:
    case, npz_paths, geometry_source, output, regions_class_order = job
    total = None
    for path in npz_paths:
        array = _read_probabilities(Path(path))
        if total is not None and array.shape != total.shape:
            raise DataError(f"probabilities of shape {array.shape} differ from {npz_paths[0]}'s {total.shape}",
                            path, case)
        total = array if total is None else total + array
    mean = total / len(npz_paths)
    labels = probabilities_to_labels(mean, regions_class_order)
    reference, geometry = read_label(geometry_source, case)
    if reference.shape != labels.shape:
        raise DataError(f"probabilities cover {labels.shape}, the label map {reference.shape}; CASE.npz must be "
                        f"on the label map's grid", npz_paths[0], case)
    write_label(labels, output, geometry)
    return str(output)


def _regions_class_order(plans: Mapping[str, Any]) -> list[int] | None:
    """None for ordinary labels; for regions nnU-Net's order (default: each region's largest value)."""
    labels = plans.get("labels") or {}
    entries = [v for k, v in labels.items() if k not in ("background", "ignore") and v != 0]
    if not any(isinstance(v, list) for v in entries):
        return None
    order = plans.get("regions_class_order")
    if order is not None:
        return [int(v) for v in order]
    return [max(int(x) for x in (v if isinstance(v, list) else [v])) for v in entries]


def select_best_configuration(work_root: str | Path, gt_dir: str | Path, *, file_ending: str | None = None,
                              num_processes: int | None = None, surface: bool = False,
                              tolerance: float | Mapping[str, float] = 1.0, ensembles: bool = True,
                              postprocessing: bool = True, folds: Sequence[int] | None = None,
                              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate every trained configuration and pairwise ensemble; write ``best_configuration.json``.

    Args:
        work_root: ``WORKDIR/NAME`` (holds plans.json, optional splits.json, models/).
        gt_dir: reference label maps of the training cases (``RAW/labelsTr``).
        file_ending: of the label files (default: found from ``gt_dir``).
        surface: also compute HD95/ASSD/NSD in the summaries (ranking uses Dice only).
        ensembles: also evaluate pairwise ensembles of configurations with saved probabilities.
        postprocessing: decide connected-component postprocessing for the best candidate and save
            it in its folder (``models/CONFIG__ARCH/postprocessing.json`` or
            ``ensembles/A+B/postprocessing.json``).
        folds: use only these folds' validation predictions (default: all folds of splits.json).

    Returns:
        The content of ``best_configuration.json``.

    Raises:
        DataError: plans.json or the references are missing, or no configuration has complete
            cross-validation predictions (the message lists each one's reason).
    """
    say = log or (lambda message: None)
    root = Path(work_root)
    plans_path = root / "plans.json"
    if not plans_path.is_file():
        raise DataError("plans.json not found; is this a unetkit work folder (WORKDIR/NAME)?", plans_path)
    plans = read_json(plans_path)
    labels, names, ignore_label = resolve_labels(plans["labels"])
    gt_files = list_label_files(gt_dir, file_ending)
    if not gt_files:
        raise DataError(f"no reference label files{'' if file_ending is None else ' ending in ' + file_ending}",
                        gt_dir)
    ending = file_ending or io_file_ending(next(iter(gt_files.values())))
    splits = read_json(root / "splits.json") if (root / "splits.json").is_file() else None

    models = root / "models"
    trained: list[TrainedConfiguration] = []
    skipped: dict[str, str] = {}
    for model_dir in sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []:
        config, reason = collect_configuration(model_dir, ending, splits, folds)
        if config is None:
            skipped[model_dir.name] = reason or "unknown"
            say(f"select: skipping {model_dir.name}: {reason}")
        else:
            trained.append(config)
    if not trained:
        detail = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or f"no models/CONFIG__ARCH folders in {models}"
        raise DataError(f"no configuration has complete cross-validation predictions ({detail}); write them to "
                        "models/CONFIG__ARCH/fold_F/validation/CASE" + ending, root)

    cases = sorted(set.intersection(*(set(t.predictions) for t in trained)))
    lacking_gt = [c for c in cases if c not in gt_files]
    if lacking_gt:
        raise DataError(f"{len(lacking_gt)} cross-validation case(s) have no reference in {gt_dir}: "
                        f"{', '.join(lacking_gt[:10])}", gt_dir)
    if any(set(t.predictions) != set(cases) for t in trained):
        say(f"select: configurations cover different cases; comparing on the {len(cases)} they share")
    if not cases:
        raise DataError("the configurations share no cross-validation case", root)

    results: list[dict[str, Any]] = []
    pairs_of: dict[str, list[tuple[str, Path, Path]]] = {}
    for config in trained:
        pairs = [(c, config.predictions[c], gt_files[c]) for c in cases]
        say(f"select: evaluating {config.name} on {len(cases)} cases")
        summary = evaluate_pairs(pairs, labels, tolerance, ignore_label, surface=surface,
                                 num_processes=num_processes, label_names=names)
        summary_path, _ = write_results(summary, config.model_dir / "crossval")
        pairs_of[config.name] = pairs
        results.append(_result(config.name, [config.name], config.model_dir, summary, summary_path))

    if ensembles:
        order = _regions_class_order(plans)
        with_probabilities = [t for t in trained if all(c in t.probabilities for c in cases)]
        for t in trained:
            if t not in with_probabilities:
                say(f"select: {t.name} has no saved probabilities (CASE.npz) for every case; not ensembled")
        for a, b in itertools.combinations(with_probabilities, 2):
            name = f"{a.name}+{b.name}"
            folder = root / "ensembles" / name
            out = folder / "crossval"
            say(f"select: ensembling {name}")
            jobs = [(c, [str(a.probabilities[c]), str(b.probabilities[c])], str(a.predictions[c]),
                     str(out / f"{c}{ending}"), order) for c in cases]
            map_cases(_ensemble_case, jobs, num_processes)
            pairs = [(c, out / f"{c}{ending}", gt_files[c]) for c in cases]
            summary = evaluate_pairs(pairs, labels, tolerance, ignore_label, surface=surface,
                                     num_processes=num_processes, label_names=names)
            summary_path, _ = write_results(summary, out)
            pairs_of[name] = pairs
            results.append(_result(name, [a.name, b.name], folder, summary, summary_path))

    # Rank by mean foreground Dice, best first; NaN last; ties keep the simpler (single) candidate.
    results.sort(key=lambda r: (-(r["foreground_mean_dice"] if r["foreground_mean_dice"] is not None
                                  else -math.inf), len(r["members"])))
    best = results[0]
    say(f"select: best is {best['name']} (mean foreground Dice {best['foreground_mean_dice']})")
    pp_path = None
    if postprocessing:
        spec = determine_postprocessing_pairs(pairs_of[best["name"]], labels, ignore_label, num_processes, log)
        pp_path = save_postprocessing(spec, best["folder"])
        best["postprocessing"] = str(pp_path)
        best["foreground_mean_dice_postprocessed"] = spec["dice_after"]["foreground_mean"]

    members = [str(models / m) for m in best["members"]]
    command = "unetkit predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m " + " ".join(members)
    if folds is not None:
        command += " -f " + " ".join(str(f) for f in folds)
    selection = {
        "format_version": 1,
        "dataset": root.name,
        "criterion": "mean foreground Dice on cross-validation (nnU-Net), before postprocessing",
        "num_cases": len(cases),
        "folds": None if folds is None else [int(f) for f in folds],
        "labels": [label_key(v) for v in labels],
        "best": best,
        "inference_command": command,
        "postprocessing_file": None if pp_path is None else str(pp_path),
        "ranking": results,
        "skipped": skipped,
    }
    atomic_write_json(root / SELECTION_FILE, selection)
    return selection


def _result(name: str, members: list[str], folder: Path, summary: dict[str, Any], summary_path: Path
            ) -> dict[str, Any]:
    def clean(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    return {"name": name, "kind": "ensemble" if len(members) > 1 else "configuration", "members": members,
            "folder": str(folder), "summary": str(summary_path),
            "foreground_mean_dice": clean(summary["foreground_mean"]["Dice"]),
            "mean_dice": {k: clean(v["Dice"]) for k, v in summary["mean"].items()}}


__all__ = ["select_best_configuration", "collect_configuration", "TrainedConfiguration", "probabilities_to_labels",
           "SELECTION_FILE"]
