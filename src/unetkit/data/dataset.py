"""The raw dataset layout: nnU-Net v2's, read as it is.

A raw dataset is a folder with::

    dataset.json            channel_names, labels, numTraining, file_ending, ...
    imagesTr/CASE_0000.ext  one file per channel, 4-digit channel index
    labelsTr/CASE.ext       one label map per case
    imagesTs/CASE_0000.ext  optional, unlabelled

``dataset.json`` may instead list the files explicitly under ``"dataset"``
(``{"CASE": {"images": [...], "label": "..."}}``, paths relative to the dataset folder), as
nnU-Net v2 allows. A 2D picture may hold all its channels (RGB) in one ``_0000`` file.

:func:`load_dataset` parses and validates ``dataset.json`` strictly (a malformed file is a
:class:`DatasetJsonError` naming the key); :meth:`RawDataset.training_cases` pairs the files
on disk. Deeper checks of the files' contents live in :mod:`unetkit.data.checks`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from unetkit.data.errors import DatasetJsonError
from unetkit.data.io import SUPPORTED_ENDINGS
from unetkit.utils.atomic import recover_directory
from unetkit.utils.names import require_name

CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One case: its identifier, its channel files in channel order, and its label (or None)."""

    name: str
    images: tuple[Path, ...]
    label: Path | None


@dataclass
class RawDataset:
    """A parsed raw dataset folder. Construct with :func:`load_dataset`."""

    root: Path
    spec: dict
    channel_names: dict[int, str]
    labels: dict[str, int | tuple[int, ...]]
    file_ending: str
    num_training: int
    ignore_label: int | None = None
    regions_class_order: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        return self.spec.get("name") or self.root.name

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, tuple) for v in self.labels.values())

    @property
    def label_values(self) -> list[int]:
        """Sorted label values declared in ``dataset.json`` (ignore label included)."""
        values: set[int] = set()
        for v in self.labels.values():
            values.update(v if isinstance(v, tuple) else (v,))
        return sorted(values)

    @property
    def foreground_labels(self) -> list[int]:
        """Declared label values other than background (0) and the ignore label."""
        return [v for v in self.label_values if v != 0 and v != self.ignore_label]

    @property
    def num_segmentation_heads(self) -> int:
        """Network outputs: one per region for region-based training, else one per class."""
        if self.has_regions:
            return sum(1 for k, v in self.labels.items() if k != "background" and v != self.ignore_label
                       and v != 0)
        return len([v for v in self.label_values if v != self.ignore_label])

    def training_cases(self) -> list[Case]:
        """Cases in ``imagesTr``/``labelsTr`` (or the explicit ``dataset`` mapping), sorted by name."""
        if "dataset" in self.spec:
            return _cases_from_mapping(self)
        return _cases_from_folder(self.root / "imagesTr", self.root / "labelsTr", self)

    def test_cases(self) -> list[Case]:
        """Unlabelled cases in ``imagesTs`` (empty if the folder is absent)."""
        return _cases_from_folder(self.root / "imagesTs", None, self)


def _require(condition: bool, message: str, path: Path) -> None:
    if not condition:
        raise DatasetJsonError(message, path)


def load_dataset(root: str | Path) -> RawDataset:
    """Parse ``root/dataset.json`` and return a :class:`RawDataset`.

    Raises:
        DatasetJsonError: the file is missing, is not valid JSON, lacks a required key, or has
            a value of the wrong type (the message names the key and what was found).
    """
    root = Path(root)
    path = root / "dataset.json"
    recover_directory(root)  # a replacement (import --overwrite) killed half way is finished first
    if not root.is_dir():
        raise DatasetJsonError("dataset folder not found", root)
    if not path.is_file():
        raise DatasetJsonError("dataset.json not found; a raw dataset needs dataset.json, imagesTr/ and "
                               "labelsTr/ (use `unetkit import` to convert other layouts)", path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetJsonError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path) from exc
    except UnicodeDecodeError as exc:
        raise DatasetJsonError("not a UTF-8 text file", path) from exc
    _require(isinstance(spec, dict), "top level must be a JSON object", path)
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        _require(key in spec, f"missing required key {key!r}", path)
    # nnU-Net v1 called it "modality"; accept it so old datasets keep working.
    raw_channels = spec.get("channel_names", spec.get("modality"))
    _require(isinstance(raw_channels, dict) and len(raw_channels) > 0,
             "'channel_names' must be a non-empty object like {\"0\": \"CT\"}", path)
    channel_names: dict[int, str] = {}
    for k, v in raw_channels.items():
        _require(str(k).isdigit(), f"'channel_names' key {k!r} is not a channel index", path)
        _require(isinstance(v, str), f"'channel_names' value for {k!r} must be a string, found {v!r}", path)
        channel_names[int(k)] = v
    _require(sorted(channel_names) == list(range(len(channel_names))),
             f"'channel_names' indices must be 0..{len(channel_names) - 1}, found {sorted(channel_names)}", path)

    raw_labels = spec["labels"]
    _require(isinstance(raw_labels, dict) and len(raw_labels) > 0,
             "'labels' must be a non-empty object like {\"background\": 0, \"tumour\": 1}", path)
    labels: dict[str, int | tuple[int, ...]] = {}
    for name, value in raw_labels.items():
        if isinstance(value, bool) or not isinstance(value, (int, list)):
            raise DatasetJsonError(f"label {name!r} must be an integer (or a list of integers for a region), "
                                   f"found {value!r}", path)
        if isinstance(value, list):
            _require(len(value) > 0 and all(isinstance(x, int) and not isinstance(x, bool) for x in value),
                     f"region {name!r} must be a non-empty list of integers, found {value!r}", path)
            labels[name] = value[0] if len(value) == 1 else tuple(value)
        else:
            _require(value >= 0, f"label {name!r} has negative value {value}", path)
            labels[name] = value
    _require(0 in [v for v in labels.values() if isinstance(v, int)],
             "'labels' must declare background as 0", path)

    num_training = spec["numTraining"]
    _require(isinstance(num_training, int) and not isinstance(num_training, bool) and num_training >= 0,
             f"'numTraining' must be a non-negative integer, found {num_training!r}", path)
    ending = spec["file_ending"]
    _require(isinstance(ending, str) and ending.startswith("."),
             f"'file_ending' must be a string like \".nii.gz\", found {ending!r}", path)
    _require(ending.lower() in SUPPORTED_ENDINGS,
             f"'file_ending' {ending!r} is not supported; use one of {', '.join(SUPPORTED_ENDINGS)}", path)

    ignore_label = None
    if "ignore" in labels:
        ig = labels["ignore"]
        _require(isinstance(ig, int), "the 'ignore' label must be a single integer", path)
        ignore_label = ig
        others = [v for k, v in labels.items() if k != "ignore"]
        flat = [x for v in others for x in (v if isinstance(v, tuple) else (v,))]
        _require(ig > max(flat), f"the 'ignore' label ({ig}) must be the highest label value", path)

    regions_order = spec.get("regions_class_order")
    if regions_order is not None:
        _require(isinstance(regions_order, list) and all(isinstance(x, int) for x in regions_order),
                 "'regions_class_order' must be a list of integers", path)
        regions_order = tuple(regions_order)
    has_regions = any(isinstance(v, tuple) for v in labels.values())
    if has_regions:
        _require(regions_order is not None, "regions are declared in 'labels' but 'regions_class_order' is missing",
                 path)

    if "dataset" in spec:
        _require(isinstance(spec["dataset"], dict), "'dataset' must map case names to {images, label}", path)

    return RawDataset(root=root, spec=spec, channel_names=channel_names, labels=labels, file_ending=ending,
                      num_training=num_training, ignore_label=ignore_label, regions_class_order=regions_order)


def _cases_from_folder(images_dir: Path, labels_dir: Path | None, ds: RawDataset) -> list[Case]:
    if not images_dir.is_dir():
        return []
    ending = ds.file_ending
    channels: dict[str, dict[int, Path]] = {}
    for f in images_dir.iterdir():
        if not f.is_file() or not f.name.endswith(ending) or f.name.startswith("."):
            continue
        stem = f.name[: -len(ending)]
        m = CHANNEL_SUFFIX.match(stem)
        if not m:
            continue  # reported by the checks as a misnamed file
        channels.setdefault(m.group("case"), {})[int(m.group("channel"))] = f
    cases = []
    for name in sorted(channels):
        files = channels[name]
        images = tuple(files[c] for c in sorted(files))
        label = None
        if labels_dir is not None:
            candidate = labels_dir / f"{name}{ending}"
            label = candidate if candidate.is_file() else None
        cases.append(Case(name=name, images=images, label=label))
    return cases


def resolve_inside(root: Path, relative: str) -> Path:
    """Resolve ``relative`` against ``root``; refuse paths that escape the dataset folder."""
    candidate = (root / relative).resolve()
    if root.resolve() not in (candidate, *candidate.parents):
        raise DatasetJsonError(f"path {relative!r} escapes the dataset folder", root / "dataset.json")
    return candidate


def _cases_from_mapping(ds: RawDataset) -> list[Case]:
    cases = []
    for name, entry in sorted(ds.spec["dataset"].items()):
        # The key becomes the case's file names downstream (CASE.npy, predictions).
        require_name(name, 'case name (key of "dataset")', ds.root / "dataset.json", DatasetJsonError)
        if not isinstance(entry, dict) or "images" not in entry:
            raise DatasetJsonError(f"'dataset' entry {name!r} needs an 'images' list", ds.root / "dataset.json")
        images = entry["images"]
        if isinstance(images, str):
            images = [images]
        paths = tuple(resolve_inside(ds.root, p) for p in images)
        label = entry.get("label")
        cases.append(Case(name=name, images=paths,
                          label=None if label is None else resolve_inside(ds.root, label)))
    return cases
