"""Ensembles: average probabilities, in memory or from saved prediction folders.

In memory, :class:`unetkit.inference.predictor.Predictor` already averages the folds of a
configuration (on its grid) and several configurations (on the input's grid). This module
covers the other way: predictions made earlier with ``--save-probabilities`` (one folder per
model, possibly on other machines) are combined afterwards, case by case, by
:func:`ensemble_folders`: the probabilities are averaged and the label map is taken from the
mean, written in the same format and geometry as the members' label maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import Geometry
from unetkit.inference.export import LabelLayout, probabilities_to_labels, read_probabilities, write_prediction
from unetkit.utils.atomic import read_json


def average_probabilities(arrays: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean (equal weights by default) of same-shaped probability arrays ``(K, *spatial)``, float32."""
    if not arrays:
        raise ValueError("nothing to average")
    weights = [1.0] * len(arrays) if weights is None else [float(w) for w in weights]
    if len(weights) != len(arrays) or sum(weights) <= 0:
        raise ValueError(f"need one positive weight per array, got {weights} for {len(arrays)} arrays")
    total = np.zeros(np.shape(arrays[0]), dtype=np.float32)
    for a, w in zip(arrays, weights):
        if np.shape(a) != total.shape:
            raise ValueError(f"probability shapes differ: {np.shape(a)} vs {total.shape}")
        total += np.asarray(a, dtype=np.float32) * w
    return total / sum(weights)


def _cases_in(folder: Path) -> dict[str, Path]:
    out = {}
    for json_path in sorted(folder.glob("*.json")):
        npz = json_path.with_suffix(".npz")
        if npz.is_file() and not json_path.name.startswith("."):
            out[json_path.stem] = json_path
    return out


def ensemble_folders(folders: Sequence[str | Path], output_dir: str | Path, *, save_probabilities: bool = False,
                     skip_existing: bool = False, weights: Sequence[float] | None = None) -> list[Path]:
    """Average the saved probabilities of the cases common to all ``folders``; write labels.

    Every folder must hold ``CASE.npz`` + ``CASE.json`` pairs written by ``unetkit predict
    --save-probabilities``; the members must agree on the classes and on each case's grid.
    Returns the label maps written.

    Raises:
        DataError: a folder has no saved probabilities, the folders share no case, or two
            members disagree on a case's classes or shape (naming the files).
    """
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise DataError("an ensemble needs at least two prediction folders")
    listings = []
    for folder in folders:
        cases = _cases_in(folder)
        if not cases:
            raise DataError("no saved probabilities (CASE.npz + CASE.json) here; predict with --save-probabilities",
                            folder)
        listings.append(cases)
    common = sorted(set.intersection(*(set(c) for c in listings)))
    if not common:
        raise DataError(f"the folders share no case ({', '.join(str(f) for f in folders)})")
    output_dir = Path(output_dir)
    written: list[Path] = []
    for case in common:
        infos = [read_json(listing[case]) for listing in listings]
        first = infos[0]
        label_name = first.get("label_file") or f"{case}.nii.gz"
        label_path = output_dir / label_name
        if skip_existing and label_path.is_file():
            continue
        layout_json = first["layout"]
        for info, listing in zip(infos[1:], listings[1:]):
            if info["layout"].get("num_outputs") != layout_json.get("num_outputs") or \
                    info["layout"].get("regions") != layout_json.get("regions"):
                raise DataError(f"predicts other classes than {listings[0][case]}", listing[case], case)
        arrays = []
        for listing in listings:
            array = read_probabilities(listing[case].with_suffix(".npz"))
            if arrays and array.shape != arrays[0].shape:
                raise DataError(f"probabilities of shape {array.shape} differ from {listings[0][case]}'s "
                                f"{arrays[0].shape}", listing[case], case)
            arrays.append(array)
        layout = LabelLayout(num_outputs=int(layout_json["num_outputs"]), names=tuple(layout_json.get("names") or ()),
                             regions=None if layout_json.get("regions") is None else
                             tuple(tuple(r) for r in layout_json["regions"]),
                             regions_class_order=None if layout_json.get("regions_class_order") is None else
                             tuple(layout_json["regions_class_order"]), labels=layout_json.get("labels") or {})
        mean = average_probabilities(arrays, weights)
        geometry = Geometry.from_json(first["geometry"])
        extra = {"case": case, "ensemble_of": [str(f) for f in folders]}
        written.append(write_prediction(probabilities_to_labels(mean, layout), label_path, geometry,
                                        mean if save_probabilities else None, layout, extra)[-1])
    return written


__all__ = ["average_probabilities", "ensemble_folders"]
