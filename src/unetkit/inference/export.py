"""From probabilities on the original grid to files: label maps, optional probabilities.

* :func:`probabilities_to_labels` - argmax over classes (softmax models), or regions painted in
  ``regions_class_order`` where their probability exceeds 0.5 (sigmoid models).
* :func:`output_ending_for` - predictions are written in the input's format: medical volumes
  keep their ending (NIfTI with the input's affine, NRRD, MHA), TIFF stays TIFF, every other
  picture becomes PNG (lossless; JPEG would change label values).
* :func:`write_prediction` - the label map (through :func:`unetkit.data.io.write_label`, so the
  input's spacing, origin and direction are kept) and, on request, ``CASE.npz``
  (``probabilities``, float16, ``(K, *spatial)`` on the input's grid) with ``CASE.json``
  describing it. Every file is written atomically; the label map is written last, so its
  presence marks a finished case (``--continue``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data.io import MEDICAL_ENDINGS, Geometry, file_ending, write_label
from unetkit.utils.atomic import atomic_path, atomic_write_json

PROBABILITY_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LabelLayout:
    """What the network's output channels mean (from the checkpoint's ``labels`` entry).

    ``regions`` is ``None`` for ordinary softmax models, whose channel ``k`` is label value
    ``k``; for region models (sigmoid, one channel per region) it lists each region's label
    values and ``regions_class_order`` the value painted for each channel, in painting order.
    """

    num_outputs: int
    names: tuple[str, ...] = ()
    regions: tuple[tuple[int, ...], ...] | None = None
    regions_class_order: tuple[int, ...] | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_regions(self) -> bool:
        return self.regions is not None

    @classmethod
    def from_meta(cls, meta: dict, num_outputs: int) -> "LabelLayout":
        """Read the ``labels`` object of a checkpoint's JSON (see docs/architecture.md)."""
        info = meta.get("labels") or {}
        regions = info.get("regions")
        order = info.get("regions_class_order")
        if regions is not None and order is None:
            # Without an explicit order, paint each region with its own largest value.
            order = [max(int(v) for v in r) for r in regions]
        return cls(num_outputs=int(num_outputs), names=tuple(info.get("names") or ()),
                   regions=None if regions is None else tuple(tuple(int(v) for v in r) for r in regions),
                   regions_class_order=None if order is None else tuple(int(v) for v in order),
                   labels=dict(info.get("labels") or {}))

    def to_json(self) -> dict:
        return {"num_outputs": self.num_outputs, "names": list(self.names),
                "regions": None if self.regions is None else [list(r) for r in self.regions],
                "regions_class_order": None if self.regions_class_order is None else list(self.regions_class_order),
                "labels": self.labels}


def probabilities_to_labels(probabilities: np.ndarray, layout: LabelLayout) -> np.ndarray:
    """Label map ``spatial`` from probabilities ``(K, *spatial)``.

    Softmax models: the most probable channel (channel ``k`` is label ``k``). Region models:
    start from 0 and paint ``regions_class_order[k]`` wherever channel ``k`` exceeds 0.5, in
    channel order, so later (inner) regions overwrite earlier (outer) ones.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape[0] != layout.num_outputs:
        raise ValueError(f"probabilities have {probabilities.shape[0]} channels, the model has {layout.num_outputs}")
    if layout.uses_regions:
        assert layout.regions_class_order is not None
        labels = np.zeros(probabilities.shape[1:], dtype=np.int16)
        for k, value in enumerate(layout.regions_class_order):
            labels[probabilities[k] > 0.5] = value
        return labels
    return np.argmax(probabilities, axis=0).astype(np.uint8 if layout.num_outputs <= 256 else np.int16)


def output_ending_for(input_path: str | Path, override: str | None = None) -> str:
    """The file ending a case's prediction gets: ``override`` when given, else the input's format
    (medical and TIFF endings kept, other pictures as ``.png``)."""
    if override:
        ending = override if override.startswith(".") else "." + override
        return ending.lower()
    ending = file_ending(input_path)
    if ending in MEDICAL_ENDINGS or ending in (".tif", ".tiff", ".png"):
        return ending
    return ".png"


def prediction_paths(output_dir: str | Path, case: str, ending: str) -> tuple[Path, Path, Path]:
    """``(label map, probabilities .npz, probabilities .json)`` of ``case`` in ``output_dir``."""
    out = Path(output_dir)
    return out / f"{case}{ending}", out / f"{case}.npz", out / f"{case}.json"


def write_probabilities(npz_path: str | Path, json_path: str | Path, probabilities: np.ndarray,
                        geometry: Geometry, layout: LabelLayout, extra: dict | None = None) -> None:
    """Write ``probabilities (K, *spatial)`` as float16 ``.npz`` (key ``probabilities``) plus a JSON
    description (classes, geometry, shape, anything in ``extra``), both atomically."""
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: numpy must not append its own ".npz"
            np.savez_compressed(handle, probabilities=np.asarray(probabilities, dtype=np.float16))
    info = {"format_version": PROBABILITY_FORMAT_VERSION, "file": Path(npz_path).name, "key": "probabilities",
            "dtype": "float16", "shape": list(np.shape(probabilities)), "geometry": geometry.to_json(),
            "layout": layout.to_json(), **(extra or {})}
    atomic_write_json(json_path, info)


def read_probabilities(npz_path: str | Path) -> np.ndarray:
    """Read a ``CASE.npz`` written by :func:`write_probabilities` as float32 (no pickle)."""
    with np.load(npz_path, allow_pickle=False) as data:
        return data["probabilities"].astype(np.float32)


def write_prediction(labels: np.ndarray, label_path: str | Path, geometry: Geometry,
                     probabilities: np.ndarray | None = None, layout: LabelLayout | None = None,
                     extra: dict | None = None) -> list[Path]:
    """Write one case's outputs atomically; returns the paths written.

    The probabilities (when given) are written first and the label map last, so an existing
    label map means the case is complete.
    """
    label_path = Path(label_path)
    written: list[Path] = []
    if probabilities is not None:
        if layout is None:
            raise ValueError("writing probabilities needs the model's label layout")
        ending = file_ending(label_path)
        stem = label_path.name[: len(label_path.name) - len(ending)] if ending else label_path.stem
        npz_path, json_path = label_path.with_name(stem + ".npz"), label_path.with_name(stem + ".json")
        write_probabilities(npz_path, json_path, probabilities, geometry, layout,
                            {"label_file": label_path.name, **(extra or {})})
        written += [npz_path, json_path]
    write_label(labels, label_path, geometry)
    written.append(label_path)
    return written


__all__ = ["LabelLayout", "probabilities_to_labels", "output_ending_for", "prediction_paths", "write_probabilities",
           "read_probabilities", "write_prediction"]
