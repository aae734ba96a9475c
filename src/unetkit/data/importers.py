"""Convert the layouts people really have into a raw dataset (nnU-Net v2 layout) in one call.

The source is a folder holding an image folder and one or more mask folders, paired by file
stem: ``images/NAME.ext`` with ``masks/NAME_mask.ext`` (suffixes and prefixes such as
``_mask``, ``_segmentation``, ``_manual1`` are stripped before pairing, detected automatically
when not given). Masks may be PNG, GIF, TIFF, lossy JPEG (thresholded) or NIfTI label maps;
several masks per image are combined (union, or one label per mask). Images are kept as they
are: NIfTI volumes are copied byte for byte (geometry untouched), pictures are written as
lossless PNG, RGB kept as one 3-channel ``_0000`` file (nnU-Net's 2D natural-image convention).

Why the care: an import that guesses silently produces a dataset that trains on the wrong
labels. So every decision (threshold, inversion, value mapping, suffixes) is recorded in
``dataset.json`` under ``unetkit_import``, every file left out is listed with its reason, and
the dataset is built in a temporary folder that is renamed into place only when complete
(:func:`unetkit.utils.atomic.atomic_directory`): on any error nothing is left at the
destination.

Entry point: :func:`import_dataset`, which returns an :class:`ImportReport`.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import (LOSSY_ENDINGS, MEDICAL_ENDINGS, PICTURE_ENDINGS, Geometry, file_ending,
                             read_image, strip_ending, write_image, write_label)
from unetkit.utils.atomic import atomic_directory, atomic_write_json

#: Mask-name suffixes tried when ``mask_suffixes`` is not given (after ``""``), in this order.
KNOWN_MASK_SUFFIXES = ("_mask", "_masks", "_segmentation", "_seg", "_label", "_labels", "_manual1",
                       "_gt", "-mask", "_Segmentation", "_mask_0000")
#: Mask-name prefixes tried when ``mask_prefix`` is not given (after ``""``).
KNOWN_MASK_PREFIXES = ("mask_", "seg_", "label_", "gt_", "mask-", "seg-", "label-")
#: Image folder names tried when ``images`` is not given.
DEFAULT_IMAGE_FOLDERS = ("images", "image", "imgs", "img", "imagesTr")
#: Mask folder names tried when ``masks`` is not given.
DEFAULT_MASK_FOLDERS = ("masks", "mask", "labels", "label", "segmentations", "gt", "labelsTr")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_TRAILING_TOKEN = re.compile(r"([_-][A-Za-z0-9]+)$")


# ------------------------------------------------------------------------------ result types

@dataclass(frozen=True)
class Skipped:
    """A source file (or case) that was not imported, and why."""

    file: str
    reason: str
    case: str | None = None

    def to_json(self) -> dict:
        return {"file": self.file, "case": self.case, "reason": self.reason}


@dataclass
class ImportReport:
    """What :func:`import_dataset` did.

    Attributes:
        output: the finished raw dataset folder.
        cases: training case names written to ``imagesTr``/``labelsTr``, sorted.
        test_cases: case names written to ``imagesTs``, sorted.
        skipped: every source file or case left out, with the reason.
        left_out_by_limit: pairs (and test images) not converted because of ``limit``.
        dataset_json: the ``dataset.json`` written (including the ``unetkit_import`` record).
        seconds: wall time of the import.
    """

    output: Path
    cases: list[str]
    test_cases: list[str]
    skipped: list[Skipped]
    left_out_by_limit: int
    dataset_json: dict
    seconds: float

    def lines(self) -> list[str]:
        """Human-readable summary, one line each; every skip is listed with its reason."""
        rec = self.dataset_json.get("unetkit_import", {})
        out = [f"imported {len(self.cases)} training case(s)"
               + (f" and {len(self.test_cases)} test case(s)" if self.test_cases else "")
               + f" into {self.output} in {self.seconds:.1f} s",
               f"channels: {self.dataset_json['channel_names']}, labels: {self.dataset_json['labels']}, "
               f"file ending {self.dataset_json['file_ending']}"]
        rule = rec.get("mask_rule")
        if rule:
            out.append(f"mask rule: {rule['description']}")
        for note in rec.get("notes", []):
            out.append(f"note: {note}")
        if self.left_out_by_limit:
            out.append(f"left out {self.left_out_by_limit} file(s) because of --limit")
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} file(s):")
            out.extend(f"  {s.file}: {s.reason}" for s in self.skipped)
        else:
            out.append("skipped nothing")
        return out


# ------------------------------------------------------------------------------ options

@dataclass(frozen=True)
class MaskRule:
    """How a mask file's values become label values (picklable: sent to worker processes)."""

    threshold: float | None = None  # explicit threshold (foreground is value > threshold)
    invert: bool = False            # foreground is value <= threshold instead
    label_map: tuple[tuple[int, int], ...] | None = None  # explicit value -> label mapping


@dataclass(frozen=True)
class _Task:
    """One case to convert (plain data so that it travels to a worker process)."""

    name: str
    image: str
    masks: tuple[str, ...]  # empty for unlabelled test images
    out_dir: str
    file_ending: str
    rule: MaskRule
    combine: str
    test: bool = False      # written to imagesTs/ (and labelsTs/ when it has masks)


@dataclass
class _Result:
    name: str
    ok: bool
    reason: str = ""
    file: str = ""
    channels: int = 0
    dtype: str = ""
    values: tuple[int, ...] = ()
    thresholded: int = 0      # masks binarised by a threshold
    threshold_used: tuple[float, ...] = ()
    kept: int = 0             # masks whose values were kept as labels
    notes: tuple[str, ...] = ()


def parse_labels(text: str | dict | None) -> dict[str, int] | None:
    """Parse ``background=0,vessel=1`` into ``{"background": 0, "vessel": 1}`` (dicts pass through)."""
    if text is None or isinstance(text, dict):
        return None if text is None else {str(k): int(v) for k, v in text.items()}
    labels: dict[str, int] = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"labels: expected NAME=VALUE pairs like background=0,vessel=1, found {item!r}")
        labels[name.strip()] = int(value)
    if 0 not in labels.values():
        raise ValueError(f"labels: background must be declared as 0, found {labels}")
    return labels


def parse_label_map(text: str | dict | Sequence | None) -> tuple[tuple[int, int], ...] | None:
    """Parse ``255:1,128:2`` (mask value -> label value) into sorted pairs."""
    if text is None:
        return None
    if isinstance(text, dict):
        items = [(int(k), int(v)) for k, v in text.items()]
    elif isinstance(text, str):
        items = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            src, sep, dst = item.partition(":")
            try:
                items.append((int(src), int(dst)))
            except ValueError:
                raise ValueError(f"label map: expected VALUE:LABEL pairs like 255:1, found {item!r}") from None
            if not sep:
                raise ValueError(f"label map: expected VALUE:LABEL pairs like 255:1, found {item!r}")
    else:
        items = [(int(a), int(b)) for a, b in text]
    return tuple(sorted(items))


# ------------------------------------------------------------------------------ pairing

def _list_files(folder: Path, what: str, skipped: list[Skipped]) -> list[Path]:
    """Image/mask files directly in ``folder``; anything else is reported as skipped."""
    files = []
    for f in sorted(folder.iterdir()):
        if f.is_dir():
            skipped.append(Skipped(str(f), f"sub-folder of the {what} folder, not searched"))
        elif not file_ending(f):
            skipped.append(Skipped(str(f), f"not an image file (in the {what} folder)"))
        elif f.name.startswith("."):
            skipped.append(Skipped(str(f), "hidden file"))
        else:
            files.append(f)
    return files


def _common_token(stems: Iterable[str]) -> str | None:
    """The trailing ``_token`` shared by every stem (``_training`` for DRIVE), if any."""
    stems = list(stems)
    if len(stems) < 2:
        return None
    tokens = set()
    for s in stems:
        m = _TRAILING_TOKEN.search(s)
        if not m or m.start() == 0:
            return None
        tokens.add(m.group(1))
    return tokens.pop() if len(tokens) == 1 else None


def _key(stem: str, prefix: str, suffix: str) -> str | None:
    """Strip ``prefix``/``suffix`` from ``stem``; None when they are not there."""
    if prefix:
        if not stem.startswith(prefix):
            return None
        stem = stem[len(prefix):]
    if suffix:
        if not stem.endswith(suffix) or len(stem) == len(suffix):
            return None
        stem = stem[: -len(suffix)]
    return stem or None


def _keyed(files: Sequence[Path], prefix: str, suffix: str,
           stems: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """Group ``files`` by their name with ``prefix``/``suffix`` stripped (non-matching files left out)."""
    out: dict[str, list[Path]] = {}
    for f, stem in zip(files, stems if stems is not None else [strip_ending(f) for f in files]):
        k = _key(stem, prefix, suffix)
        if k is not None:
            out.setdefault(k, []).append(f)
    return out


def _choose_affixes(images: Sequence[Path], masks: Sequence[Path], image_prefix: str | None,
                    image_suffix: str | None, mask_prefix: str | None,
                    mask_suffix: str | None, same_folder: bool = False) -> tuple[str, str, str, str]:
    """Pick the prefix/suffix rules that pair the most files (ties: the least stripping).

    Given values are used as they are; missing ones are chosen among ``""``, the known
    conventions and a trailing token shared by every file name. Only affixes that occur in at
    least one name are tried, so this stays fast for thousands of files. When images and masks
    share a folder, masks need a prefix or suffix (else every file would pair with itself).
    """
    img_stems = [strip_ending(f) for f in images]
    msk_stems = [strip_ending(f) for f in masks]

    def candidates(given: str | None, known: Iterable[str], token: str | None, stems: list[str],
                   at_start: bool) -> list[str]:
        if given is not None:
            return [given]
        out = [""]
        for k in (*known, *([token] if token else [])):
            if k not in out and any(s.startswith(k) if at_start else s.endswith(k) for s in stems):
                out.append(k)
        return out

    ip = candidates(image_prefix, (), None, img_stems, True)
    is_ = candidates(image_suffix, ("_image", "_img"), _common_token(img_stems), img_stems, False)
    mp = candidates(mask_prefix, KNOWN_MASK_PREFIXES, None, msk_stems, True)
    ms = candidates(mask_suffix, KNOWN_MASK_SUFFIXES, _common_token(msk_stems), msk_stems, False)
    mask_keys = {(c, d): set(_keyed(masks, c, d, msk_stems)) for c in mp for d in ms}
    best, best_count = (ip[0], is_[0], mp[0], ms[0]), -1
    for a in ip:
        for b in is_:
            keys_i = {k for k, v in _keyed(images, a, b, img_stems).items() if len(v) == 1}
            for c in mp:
                for d in ms:
                    if same_folder and not c and not d:
                        continue
                    count = len(keys_i & mask_keys[(c, d)])
                    if count > best_count:  # strict: earlier (less stripping) wins ties
                        best, best_count = (a, b, c, d), count
    return best


def _safe_name(key: str) -> str:
    return _SAFE_NAME.sub("_", key)


# ------------------------------------------------------------------------------ conversion (workers)

def _mask_to_grey(array: np.ndarray, lossy: bool, path: Path) -> tuple[np.ndarray, str | None]:
    """Reduce a ``(C, *spatial)`` mask to one channel; refuse genuinely coloured masks."""
    if array.shape[0] == 1:
        return array[0], None
    colour = array[: min(3, array.shape[0])]
    if all(np.array_equal(colour[0], colour[c]) for c in range(1, colour.shape[0])):
        return colour[0], "grey mask stored as RGB: first channel used"
    spread = colour.max(axis=0).astype(np.int64) - colour.min(axis=0).astype(np.int64)
    if lossy and float(np.mean(spread > 48)) < 0.01:
        # JPEG's chroma artefacts make the channels of a grey mask differ slightly.
        return np.rint(colour.astype(np.float32).mean(axis=0)).astype(array.dtype), \
            "lossy RGB mask: channel mean used"
    raise DataError(f"mask is a coloured picture ({array.shape[0]} differing channels); colours have no class "
                    "meaning here: store the mask as a grey or palette-free integer image", path)


def _default_threshold(mask: np.ndarray) -> float:
    if mask.dtype == np.uint16:
        return 32767.0
    if np.issubdtype(mask.dtype, np.floating) and mask.size and float(mask.max()) <= 1.0:
        return 0.5
    return 127.0


def _convert_mask(path: Path, rule: MaskRule, case: str) -> tuple[np.ndarray, Geometry, dict]:
    """Read one mask and turn it into integer labels; the dict says what rule applied."""
    array, geometry = read_image(path)
    lossy = file_ending(path) in LOSSY_ENDINGS
    mask, note = _mask_to_grey(array, lossy, path)
    info: dict = {"note": note}
    if rule.label_map is not None:
        mapping = dict(rule.label_map)
        values = np.unique(mask)
        unknown = [v.item() for v in values if v.item() not in mapping and v.item() != 0]
        if unknown:
            raise DataError(f"mask values {unknown[:10]} are not in the label map {mapping}"
                            + ("; lossy JPEG masks need --threshold, not a value map" if lossy else ""), path, case)
        out = np.zeros(mask.shape, dtype=np.int16)
        for src, dst in mapping.items():
            out[mask == src] = dst
        info["kind"] = "mapped"
        return out, geometry, info
    top = np.iinfo(mask.dtype).max if np.issubdtype(mask.dtype, np.integer) else None
    values = np.unique(mask)
    binary_like = top is not None and top in (255, 65535) and set(values.tolist()) <= {0, top}
    if rule.threshold is not None or lossy or binary_like or rule.invert:
        if rule.invert and not (rule.threshold is not None or lossy or binary_like):
            raise DataError(f"inverting needs a binary mask, found {len(values)} values "
                            f"{values[:8].tolist()}; pass a threshold", path, case)
        t = float(rule.threshold) if rule.threshold is not None else _default_threshold(mask)
        fg = mask <= t if rule.invert else mask > t
        info.update(kind="threshold", threshold=t)
        return fg.astype(np.int16), geometry, info
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(mask)) or not np.array_equal(np.rint(mask), mask):
            raise DataError("mask has non-integer values; pass a threshold to binarise it", path, case)
    is_picture = file_ending(path) in PICTURE_ENDINGS
    if values.size and (values.min() < 0 or values.max() > (127 if is_picture else 32767)):
        raise DataError(f"mask has {len(values)} distinct values in [{values.min()}, {values.max()}], neither "
                        "binary (0/255) nor small class numbers; pass --threshold T to binarise it or "
                        "--label-map VALUE:LABEL to map its values", path, case)
    info["kind"] = "kept"
    return mask.astype(np.int16), geometry, info


def _convert_case(task: _Task) -> _Result:
    """Convert one case: write its image (and label) under ``task.out_dir``; never raises DataError."""
    out = Path(task.out_dir)
    image_path = Path(task.image)
    is_test = task.test or not task.masks
    img_dir = out / ("imagesTs" if is_test else "imagesTr")
    label_dir = out / ("labelsTs" if is_test else "labelsTr")
    notes: list[str] = []
    try:
        src_ending = file_ending(image_path)
        image, geometry = read_image(image_path)
        if image.ndim - 1 == 2 and image.shape[0] == 4:
            raise DataError("RGBA picture with a varying alpha channel; save it as RGB or grey", image_path,
                            task.name)
        if task.file_ending == ".png":
            if image.ndim != 3:
                raise DataError(f"expected a 2D picture, found shape {image.shape[1:]}", image_path, task.name)
            if image.dtype not in (np.uint8, np.uint16) and not (
                    np.issubdtype(image.dtype, np.integer) and image.min() >= 0 and image.max() <= 65535):
                raise DataError(f"{image.dtype} pixels cannot be stored losslessly as PNG", image_path, task.name)
            if image.shape[0] == 3 and image.dtype != np.uint8 and image.max() > 255:
                raise DataError("16-bit RGB pictures cannot be stored as PNG by Pillow", image_path, task.name)
            if image.shape[0] not in (1, 3):
                raise DataError(f"picture has {image.shape[0]} channels; expected grey (1) or RGB (3)",
                                image_path, task.name)
            write_image(image, img_dir / f"{task.name}_0000.png", geometry)
        else:
            if image.shape[0] == 1 and src_ending == task.file_ending:
                img_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image_path, img_dir / f"{task.name}_0000{task.file_ending}")
            else:
                for c in range(image.shape[0]):
                    write_image(image[c:c + 1], img_dir / f"{task.name}_{c:04d}{task.file_ending}", geometry)
        result = _Result(task.name, True, channels=int(image.shape[0]), dtype=str(image.dtype), file=task.image)
        if not task.masks:
            return result
        combined: np.ndarray | None = None
        thresholded, kept, thresholds = 0, 0, []
        for k, mask_path in enumerate(task.masks, start=1):
            label, mgeo, info = _convert_mask(Path(mask_path), task.rule, task.name)
            if info.get("note"):
                notes.append(info["note"])
            if info["kind"] == "threshold":
                thresholded += 1
                thresholds.append(info["threshold"])
            elif info["kind"] == "kept":
                kept += 1
            if label.shape != image.shape[1:]:
                raise DataError(f"mask shape {label.shape} differs from the image's {image.shape[1:]} "
                                f"({image_path})", mask_path, task.name)
            if geometry.origin is not None and mgeo.origin is not None and not mgeo.matches(geometry):
                raise DataError(f"mask geometry (spacing {mgeo.spacing}, origin {mgeo.origin}) differs from the "
                                f"image's (spacing {geometry.spacing}, origin {geometry.origin}, {image_path})",
                                mask_path, task.name)
            if combined is None:
                combined = label if task.combine == "union" or len(task.masks) == 1 else np.where(label > 0, k, 0)
            elif task.combine == "union":
                combined = np.maximum(combined, label)
            else:  # one label per mask; later masks win where they overlap
                combined = np.where(label > 0, k, combined)
        assert combined is not None
        write_label(combined.astype(np.int16), label_dir / f"{task.name}{task.file_ending}", geometry)
        result.values = tuple(int(v) for v in np.unique(combined))
        result.thresholded, result.kept, result.threshold_used = thresholded, kept, tuple(sorted(set(thresholds)))
        result.notes = tuple(sorted(set(notes)))
        return result
    except DataError as exc:
        # Remove whatever this case already wrote, so a skipped case leaves no file behind.
        for f in list(img_dir.glob(f"{task.name}_[0-9][0-9][0-9][0-9]{task.file_ending}")) + \
                [label_dir / f"{task.name}{task.file_ending}"]:
            if f.is_file():
                f.unlink()
        return _Result(task.name, False, reason=exc.message, file=exc.path or task.image)


# ------------------------------------------------------------------------------ the import

def _resolve_folder(source: Path, given: str | None, defaults: Sequence[str], what: str) -> Path:
    if given is not None:
        folder = source / given
        if not folder.is_dir():
            raise DataError(f"{what} folder {given!r} not found", folder)
        return folder
    for name in defaults:
        if (source / name).is_dir():
            return source / name
    raise DataError(f"no {what} folder given and none of {', '.join(defaults)} exists; pass --{what} PATH", source)


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def import_dataset(source: str | Path, dest: str | Path, *, images: str | None = None,
                   masks: str | Sequence[str] | None = None, image_suffix: str | None = None,
                   image_prefix: str | None = None, mask_suffix: str | Sequence[str] | None = None,
                   mask_prefix: str | None = None, test_images: str | None = None,
                   test_image_suffix: str | None = None, test_masks: str | None = None,
                   test_mask_suffix: str | None = None, labels: str | dict | None = None,
                   label_map: str | dict | None = None, threshold: float | None = None,
                   invert_mask: bool = False, combine: str = "union", channel_name: str | None = None,
                   name: str | None = None, limit: int | None = None, num_processes: int | None = None,
                   overwrite: bool = False,
                   progress: Callable[[int, int], None] | bool = False) -> ImportReport:
    """Convert ``source`` (image and mask folders) into a raw dataset at ``dest``.

    Args:
        source: folder holding the data in its published layout.
        dest: raw dataset folder to create (must not exist unless ``overwrite``).
        images: image folder relative to ``source`` (default: the first of ``images``, ``image``, ...).
        masks: mask folder(s) relative to ``source``; several folders give several masks per image.
        image_suffix, image_prefix: stripped from image names before pairing (e.g. ``_training``);
            detected when not given.
        mask_suffix: stripped from mask names before pairing (e.g. ``_manual1``); several
            suffixes with one mask folder give several masks per image; detected when not given.
        mask_prefix: stripped from mask names before pairing; detected when not given.
        test_images: folder of unlabelled images, copied to ``imagesTs``.
        test_image_suffix: stripped from test image names (default: a trailing token they all share).
        test_masks: folder of the test images' masks (DRIVE's ``test/1st_manual``), converted by
            the same rules as the training masks into ``labelsTs``; a test image without its
            mask is skipped with the reason.
        test_mask_suffix: stripped from test mask names (default: the training masks' suffix).
        labels: ``"background=0,vessel=1"`` or a dict; default from the masks.
        label_map: ``"255:1,128:2"``: mask value -> label value (unlisted non-zero values are an error).
        threshold: binarise masks: foreground is value > threshold. Default: 127 for 8-bit masks
            that are lossy (JPEG) or strictly 0/255; other masks keep their integer values.
        invert_mask: foreground is value <= threshold (ISBI 2012: 0 = membrane).
        combine: with several masks per image, ``union`` (element-wise maximum) or ``labels``
            (mask k becomes label k; later masks win where they overlap).
        channel_name: name of a single-channel image's channel in ``dataset.json`` (``CT`` selects
            CT normalization downstream); default ``image`` for volumes, ``grey`` for pictures.
        name: dataset name in ``dataset.json`` (default: ``dest``'s folder name).
        limit: convert only the first ``limit`` pairs (and test images) by sorted name.
        num_processes: worker processes (default: up to 4, at most the CPU count); 1 runs inline.
        overwrite: replace an existing ``dest`` (atomically, only once the new one is complete).
        progress: True for a rich progress bar, or a callback ``(done, total)``.

    Returns:
        An :class:`ImportReport`; its ``skipped`` lists every file left out and why.

    Raises:
        DataError: a folder is missing, no pair was found, masks disagree on channels or labels.
        FileExistsError: ``dest`` exists and ``overwrite`` is false.
    """
    t0 = time.perf_counter()
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise DataError("source folder not found", source)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists; pass --overwrite to replace it")
    if dest.resolve() == source.resolve():
        raise DataError("destination is the source folder itself", dest)
    if combine not in ("union", "labels"):
        raise ValueError(f"combine must be 'union' or 'labels', found {combine!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, found {limit}")
    declared = parse_labels(labels)
    rule = MaskRule(threshold=threshold, invert=invert_mask, label_map=parse_label_map(label_map))
    if rule.label_map is not None and (threshold is not None or invert_mask):
        raise ValueError("a label map cannot be combined with a threshold or inversion")

    skipped: list[Skipped] = []
    image_dir = _resolve_folder(source, images, DEFAULT_IMAGE_FOLDERS, "images")
    mask_folders = _as_list(masks)
    if mask_folders is None:
        mask_folders = [str(_resolve_folder(source, None, DEFAULT_MASK_FOLDERS, "masks").relative_to(source))]
    mask_dirs = [_resolve_folder(source, m, (), "masks") for m in mask_folders]
    suffixes = _as_list(mask_suffix)
    if suffixes is not None and len(mask_dirs) > 1 and len(suffixes) not in (1, len(mask_dirs)):
        raise ValueError(f"{len(suffixes)} mask suffixes for {len(mask_dirs)} mask folders; give one, or one each")
    # Mask sources: (folder, suffix or None=detect). One folder with several suffixes = several sources.
    if len(mask_dirs) == 1 and suffixes and len(suffixes) > 1:
        sources = [(mask_dirs[0], s) for s in suffixes]
    else:
        sources = [(d, (suffixes[i] if len(suffixes) > 1 else suffixes[0]) if suffixes else None)
                   for i, d in enumerate(mask_dirs)]

    image_files = _list_files(image_dir, "images", skipped)
    if not image_files:
        raise DataError("no image files found", image_dir)
    listed: dict[Path, list[Path]] = {}
    for d in {d for d, _ in sources}:
        listed[d] = list(image_files) if d.resolve() == image_dir.resolve() else _list_files(d, "masks", skipped)

    rules: dict = {"images": str(image_dir.relative_to(source)), "mask_sources": []}
    source_keys: list[dict[str, list[Path]]] = []
    chosen_img: tuple[str, str] | None = None
    for d, suffix in sources:
        # With one folder and several suffixes, each suffix must only see its own files.
        ip, is_, mp, ms = _choose_affixes(image_files, listed[d], image_prefix if chosen_img is None else chosen_img[0],
                                          image_suffix if chosen_img is None else chosen_img[1], mask_prefix, suffix,
                                          same_folder=d.resolve() == image_dir.resolve())
        chosen_img = chosen_img or (ip, is_)
        source_keys.append(_keyed(listed[d], mp, ms))
        rules["mask_sources"].append({"folder": str(d.relative_to(source)), "prefix": mp, "suffix": ms})
    assert chosen_img is not None
    rules["image_prefix"], rules["image_suffix"] = chosen_img
    keyed_masks = {f for keys in source_keys for fs in keys.values() for f in fs}
    if image_dir.resolve() in {d.resolve() for d in listed}:
        # Images and masks in one folder: the files that follow a mask rule are masks, the rest images.
        image_files = [f for f in image_files if f not in keyed_masks]
        for d in listed:
            if d.resolve() == image_dir.resolve():
                listed[d] = [f for f in listed[d] if f in keyed_masks]
    image_keys = _keyed(image_files, *chosen_img)

    # Files that match no rule at all.
    keyed_images = {f for fs in image_keys.values() for f in fs}
    for f in image_files:
        if f not in keyed_images:
            skipped.append(Skipped(str(f), f"name does not match the image rule (prefix {chosen_img[0]!r}, "
                                           f"suffix {chosen_img[1]!r})"))
    for d in listed:
        for f in listed[d]:
            if f not in keyed_masks:
                skipped.append(Skipped(str(f), "name does not match any mask rule "
                                               f"({', '.join(repr(s['prefix'] + 'NAME' + s['suffix']) for s in rules['mask_sources'])})"))

    pairs: list[tuple[str, Path, tuple[Path, ...]]] = []
    safe_seen: dict[str, str] = {}
    for key in sorted(image_keys):
        files = image_keys[key]
        if len(files) > 1:
            for f in files:
                skipped.append(Skipped(str(f), f"{len(files)} images share the name {key!r} "
                                               f"({', '.join(x.name for x in files)})", key))
            continue
        case_masks: list[Path] = []
        problem = None
        for src, keys in zip(rules["mask_sources"], source_keys):
            found = keys.get(key, [])
            if not found:
                problem = (f"no mask found in {src['folder']}/ (looked for "
                           f"{src['prefix']}{key}{src['suffix']}.*)")
                break
            if len(found) > 1:
                problem = f"{len(found)} masks match in {src['folder']}/: {', '.join(x.name for x in found)}"
                break
            case_masks.append(found[0])
        if problem:
            skipped.append(Skipped(str(files[0]), problem, key))
            continue
        safe = _safe_name(key)
        if safe in safe_seen:
            skipped.append(Skipped(str(files[0]), f"case name {safe!r} already used by {safe_seen[safe]!r}", key))
            continue
        safe_seen[safe] = key
        pairs.append((safe, files[0], tuple(case_masks)))
    paired_masks = {m for _, _, ms in pairs for m in ms}
    for src, keys in zip(rules["mask_sources"], source_keys):
        for key, fs in sorted(keys.items()):
            for f in fs:
                if f in paired_masks:
                    continue
                if key not in image_keys:
                    reason = (f"mask without image (no {chosen_img[0]}{key}{chosen_img[1]}.* in "
                              f"{rules['images']}/)")
                else:
                    reason = "its image was skipped (see above)"
                skipped.append(Skipped(str(f), reason, key))
    if not pairs:
        raise DataError(f"no image/mask pairs found between {image_dir} and "
                        f"{', '.join(str(d) for d in mask_dirs)}; pass --image-suffix/--mask-suffix", source)

    test_pairs: list[tuple[str, Path]] = []
    if test_images is not None:
        test_dir = _resolve_folder(source, test_images, (), "test-images")
        test_files = _list_files(test_dir, "test images", skipped)
        stems = [strip_ending(f) for f in test_files]
        tsuffix = test_image_suffix if test_image_suffix is not None else (
            chosen_img[1] if chosen_img[1] and all(s.endswith(chosen_img[1]) for s in stems)
            else (_common_token(stems) or ""))
        rules["test_images"], rules["test_image_suffix"] = str(test_dir.relative_to(source)), tsuffix
        seen: dict[str, Path] = {}
        for f, stem in zip(test_files, stems):
            key = _key(stem, "", tsuffix) or stem
            safe = _safe_name(key)
            if safe in seen:
                skipped.append(Skipped(str(f), f"test case name {safe!r} already used by {seen[safe].name}", safe))
                continue
            seen[safe] = f
            test_pairs.append((safe, f))
        test_pairs.sort()
    test_mask_of: dict[str, Path] = {}
    if test_masks is not None:
        if test_images is None:
            raise ValueError("test masks need test images (--test-images)")
        tmask_dir = _resolve_folder(source, test_masks, (), "test-masks")
        tmask_files = _list_files(tmask_dir, "test masks", skipped)
        first = rules["mask_sources"][0]
        tmsuffix = test_mask_suffix if test_mask_suffix is not None else first["suffix"]
        keyed = _keyed(tmask_files, first["prefix"] if test_mask_suffix is None else "", tmsuffix)
        rules["test_masks"], rules["test_mask_suffix"] = str(tmask_dir.relative_to(source)), tmsuffix
        kept_pairs = []
        for safe, f in test_pairs:
            found = keyed.get(safe, [])
            if len(found) != 1:
                why = "no mask" if not found else f"{len(found)} masks ({', '.join(x.name for x in found)})"
                skipped.append(Skipped(str(f), f"test image has {why} in {rules['test_masks']}/ (looked for "
                                               f"{safe}{tmsuffix}.*)", safe))
                continue
            test_mask_of[safe] = found[0]
            kept_pairs.append((safe, f))
        for key, fs in sorted(keyed.items()):
            if key not in test_mask_of:
                for f in fs:
                    skipped.append(Skipped(str(f), "test mask without test image", key))
        test_pairs = kept_pairs

    left_out = 0
    if limit is not None:
        left_out = max(0, len(pairs) - limit) + max(0, len(test_pairs) - limit)
        pairs, test_pairs = pairs[:limit], test_pairs[:limit]

    endings = {file_ending(f) for _, f, _ in pairs} | {file_ending(f) for _, f in test_pairs}
    if endings <= set(PICTURE_ENDINGS):
        out_ending = ".png"
    elif endings <= set(MEDICAL_ENDINGS):
        out_ending = ".nii.gz"
    else:
        raise DataError(f"images mix pictures and volumes ({', '.join(sorted(endings))}); import them separately",
                        image_dir)

    n_proc = num_processes if num_processes is not None else min(4, os.cpu_count() or 1)
    total = len(pairs) + len(test_pairs)
    with atomic_directory(dest, overwrite=overwrite) as tmp:
        tasks = [_Task(n, str(i), tuple(str(m) for m in ms), str(tmp), out_ending, rule, combine)
                 for n, i, ms in pairs]
        tasks += [_Task(n, str(i), (str(test_mask_of[n]),) if n in test_mask_of else (), str(tmp), out_ending, rule,
                        combine, test=True) for n, i in test_pairs]
        results = _run_tasks(tasks, n_proc, progress, total)
        train_res = [r for r, t in zip(results, tasks) if not t.test]
        test_res = [r for r, t in zip(results, tasks) if t.test]
        for r in results:
            if not r.ok:
                skipped.append(Skipped(r.file, r.reason, r.name))
        good = [r for r in train_res if r.ok]
        good_test = [r for r in test_res if r.ok]
        if not good:
            raise DataError(f"every case failed to convert; first problem: {skipped[-1].file}: {skipped[-1].reason}",
                            source)
        channel_counts = {r.channels for r in good + good_test}
        if len(channel_counts) > 1:
            by = {c: [r.name for r in good + good_test if r.channels == c][:5] for c in channel_counts}
            raise DataError(f"images have differing channel counts: {by}; a dataset needs one channel layout",
                            image_dir)
        n_channels = channel_counts.pop()
        if out_ending == ".png" and n_channels == 3:
            channel_names = {"0": "R", "1": "G", "2": "B"}
        elif n_channels == 1:
            channel_names = {"0": channel_name or ("grey" if out_ending == ".png" else "image")}
        else:
            channel_names = {str(c): f"{channel_name or 'channel'}_{c}" for c in range(n_channels)}
        found_values = sorted({v for r in good + good_test for v in r.values})
        if declared is not None:
            undeclared = [v for v in found_values if v not in declared.values()]
            if undeclared:
                where = [r.name for r in good + good_test if set(r.values) & set(undeclared)][:5]
                raise DataError(f"label values {undeclared} found (cases {', '.join(where)}) are not declared in "
                                f"labels {declared}", source)
            label_names = declared
        elif len(sources) > 1 and combine == "labels":
            label_names = {"background": 0}
            for k, src in enumerate(rules["mask_sources"], start=1):
                base = src["suffix"].strip("_-") or src["prefix"].strip("_-") or Path(src["folder"]).name
                label_names[base if base not in label_names else f"{base}_{k}"] = k
        elif all(r.kept == 0 for r in good):
            label_names = {"background": 0, "foreground": 1}
        else:
            label_names = {"background": 0, **{f"class_{v}": v for v in found_values if v != 0}}
        thresholds = sorted({t for r in good for t in r.threshold_used})
        n_thr, n_kept = sum(r.thresholded for r in good), sum(r.kept for r in good)
        if rule.label_map is not None:
            desc = f"mask values mapped {dict(rule.label_map)} (other values are errors)"
        else:
            parts = []
            if n_thr:
                sign = "<=" if invert_mask else ">"
                parts.append(f"{n_thr} mask(s) binarised: label 1 where value {sign} "
                             f"{', '.join(f'{t:g}' for t in thresholds)}"
                             + (" (inverted)" if invert_mask else "")
                             + ("" if threshold is not None else " (default threshold)"))
            if n_kept:
                parts.append(f"{n_kept} mask(s) kept their integer values as labels")
            desc = "; ".join(parts)
        if len(sources) > 1:
            desc += f"; {len(sources)} masks per image combined by {combine}"
        notes = sorted({n for r in good for n in r.notes})
        used = {image_dir.resolve(), *(d.resolve() for d in mask_dirs)}
        if test_images is not None:
            used.add((source / test_images).resolve())
        if test_masks is not None:
            used.add((source / test_masks).resolve())
        for parent in sorted({u.parent for u in used}):
            for sib in sorted(parent.iterdir()):
                if sib.is_dir() and sib.resolve() not in used and not sib.name.startswith("."):
                    shown = os.path.relpath(sib.resolve(), source.resolve())
                    notes.append(f"folder {shown}/ was not read (not given as images, masks or test images)")
        spec = {
            "name": name or dest.name,
            "channel_names": channel_names,
            "labels": label_names,
            "numTraining": len(good),
            "file_ending": out_ending,
            "unetkit_import": {
                "source": str(source.resolve()),
                "rules": rules,
                "mask_rule": {"description": desc, "threshold": thresholds[0] if len(thresholds) == 1 else thresholds,
                              "threshold_given": threshold is not None, "invert": invert_mask,
                              "label_map": None if rule.label_map is None else {str(a): b for a, b in rule.label_map},
                              "combine": combine, "masks_thresholded": n_thr, "masks_values_kept": n_kept},
                "counts": {"training": len(good), "test": len(good_test),
                           "test_labelled": sum(1 for r in good_test if r.name in test_mask_of),
                           "skipped": len(skipped),
                           "left_out_by_limit": left_out},
                "limit": limit,
                "notes": notes,
                "skipped": [s.to_json() for s in skipped],
            },
        }
        atomic_write_json(tmp / "dataset.json", spec)
    return ImportReport(output=dest, cases=sorted(r.name for r in good), test_cases=sorted(r.name for r in good_test),
                        skipped=skipped, left_out_by_limit=left_out, dataset_json=spec,
                        seconds=time.perf_counter() - t0)


def _noop() -> None:
    """Submitted once so that the pool's workers exist before the progress bar's thread starts."""


def _run_tasks(tasks: list[_Task], n_proc: int, progress: Callable[[int, int], None] | bool,
               total: int) -> list[_Result]:
    """Convert every task, in order, inline or in a process pool, advancing the progress display."""
    results: list[_Result] = []
    callback: Callable[[int, int], None] | None = progress if callable(progress) else None
    pool = None
    if n_proc > 1 and len(tasks) >= 4:
        # "fork" where available: works from any script (spawn re-imports __main__). The workers
        # are started (by the no-op) before the progress bar's refresh thread, never forked with it.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        pool = ProcessPoolExecutor(max_workers=n_proc, mp_context=ctx)
    bar = None
    try:
        if pool is not None:
            pool.submit(_noop).result()
        if progress is True:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            bar = Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           TimeRemainingColumn(), transient=True)
            task_id = bar.add_task("import", total=total)
            bar.start()
            callback = lambda done, _total: bar.update(task_id, completed=done)  # noqa: E731
        if pool is None:
            for t in tasks:
                results.append(_convert_case(t))
                if callback:
                    callback(len(results), total)
        else:
            chunk = max(1, min(16, len(tasks) // (4 * n_proc)))
            for r in pool.map(_convert_case, tasks, chunksize=chunk):
                results.append(r)
                if callback:
                    callback(len(results), total)
    finally:
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results
