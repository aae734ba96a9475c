"""Check a raw dataset for everything that would break a later stage, and report it all at once.

:func:`check_dataset` walks a raw dataset (nnU-Net v2 layout, see :mod:`unetkit.data.dataset`)
in three passes:

1. ``dataset.json`` and the folder layout, without reading any image: malformed JSON, paths in
   the explicit ``"dataset"`` mapping that escape the folder, misnamed files, wrong endings,
   orphan labels, images without label, missing channel files, ``numTraining``,
   non-consecutive declared labels.
2. Every case's files, read in a process pool (one task per case): unreadable or truncated
   files, NaN/Inf, empty or constant images, channel count, image/label shape and geometry,
   label values that are not whole numbers or not declared.
3. Across cases: mixed dimensionality, spacing outliers and anisotropy, outlier shapes.

Nothing stops at the first problem (a malformed ``dataset.json`` is the only exception, since
nothing else can be interpreted without it). Each :class:`Problem` names the file, the case
and what is wrong, so a user can fix the data in one round.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from unetkit.data.dataset import CHANNEL_SUFFIX, RawDataset, load_dataset, resolve_inside
from unetkit.data.errors import DataError, DatasetJsonError
from unetkit.data.importing.records import partial_import_problem
from unetkit.data.io import LOSSY_ENDINGS, Geometry, file_ending, read_image
from unetkit.utils.names import name_problem

Severity = Literal["error", "warning"]

# A case whose spacing on some axis is this many times larger or smaller than the median.
SPACING_OUTLIER_FACTOR = 5.0
# Largest / smallest spacing above which a case counts as anisotropic (nnU-Net's threshold).
ANISOTROPY_RATIO = 3.0
# A case with this many times more (or fewer) voxels than the median case is an outlier.
SHAPE_OUTLIER_FACTOR = 8.0
# Cross-case statistics (median spacing, median size) need at least this many cases.
MIN_CASES_FOR_OUTLIERS = 4


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Attributes:
        severity: ``"error"`` (later stages would fail or learn garbage) or ``"warning"``
            (legal but suspicious; the check still passes).
        kind: short slug naming the kind of problem, e.g. ``"orphan-label"``; stable, so
            scripts and tests can filter on it.
        path: the offending file (or folder / ``dataset.json``), or ``None``.
        case: the case identifier, or ``None`` for dataset-level problems.
        message: what is wrong and, where it helps, what was expected.
    """

    severity: Severity
    kind: str
    path: str | None
    case: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.case is not None:
            where.append(f"case {self.case!r}")
        if self.path is not None:
            where.append(self.path)
        return f"{self.severity} [{self.kind}] " + "".join(w + ": " for w in where) + self.message

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckReport:
    """What :func:`check_dataset_report` found: the problems and how many cases were checked."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    num_cases: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def summary(self) -> str:
        """One line: ``N errors, M warnings in K cases``."""
        e, w = len(self.errors), len(self.warnings)
        return (f"{e} error{'s' if e != 1 else ''}, {w} warning{'s' if w != 1 else ''} "
                f"in {self.num_cases} case{'s' if self.num_cases != 1 else ''}")

    def to_json(self) -> dict[str, Any]:
        return {"format_version": 1, "dataset": str(self.root), "num_cases": self.num_cases,
                "num_errors": len(self.errors), "num_warnings": len(self.warnings),
                "problems": [p.to_json() for p in self.problems]}


def _err(kind: str, path: Path | str | None, case: str | None, message: str) -> Problem:
    return Problem("error", kind, None if path is None else str(path), case, message)


def _warn(kind: str, path: Path | str | None, case: str | None, message: str) -> Problem:
    return Problem("warning", kind, None if path is None else str(path), case, message)


# ------------------------------------------------------------------------------ pass 1: layout

@dataclass
class _CaseFiles:
    """The files found for one case before anything is read."""

    name: str
    images: list[Path]                # in channel order, only files that exist
    label: Path | None
    labelled: bool                    # a training case (needs a label) or a test case
    defer_channel_count: bool = False  # a single _0000 file that may hold all channels (RGB)


def _is_ignored_name(name: str) -> bool:
    # Hidden files (.DS_Store), our own temporary files (.tmp-*) and OS thumbnails.
    return name.startswith(".") or name.lower() in ("thumbs.db", "desktop.ini")


def _skip_or_broken(f: Path, problems: list[Problem]) -> bool:
    """True for entries that are not files (folders are ignored, broken links reported)."""
    if f.is_file():
        return False
    if f.is_symlink():
        problems.append(_err("unreadable", f, None, f"broken link: its target {os.readlink(f)} does not exist"))
    return True


def _scan_images(ds: RawDataset, folder: Path, problems: list[Problem]) -> dict[str, dict[int, Path]]:
    """Group ``folder``'s files by case and channel index, reporting misnamed files."""
    ending = ds.file_ending
    channels: dict[str, dict[int, Path]] = {}
    for f in sorted(folder.iterdir()):
        if _is_ignored_name(f.name) or _skip_or_broken(f, problems):
            continue
        if not f.name.endswith(ending):
            other = file_ending(f)
            if other:
                problems.append(_err("wrong-ending", f, _case_from_name(f, other), (
                    f"file ends with {other!r} but dataset.json's file_ending is {ending!r}; "
                    "all images and labels of a dataset must use the same ending")))
            else:
                problems.append(_warn("stray-file", f, None,
                                      f"not an image with the dataset's ending {ending!r}; it is ignored"))
            continue
        stem = f.name[: -len(ending)]
        m = CHANNEL_SUFFIX.match(stem)
        if not m:
            problems.append(_err("misnamed-image", f, stem, (
                f"image files must be named CASE_XXXX{ending} with a 4-digit channel index "
                f"(e.g. {stem}_0000{ending}); this file is ignored")))
            continue
        channels.setdefault(m.group("case"), {})[int(m.group("channel"))] = f
    return channels


def _case_from_name(path: Path, ending: str) -> str:
    """Case name guessed from a file name: ending and channel suffix removed."""
    stem = path.name[: len(path.name) - len(ending)]
    m = CHANNEL_SUFFIX.match(stem)
    return m.group("case") if m else stem


def _channel_problems(ds: RawDataset, folder: Path, name: str, found: dict[int, Path],
                      problems: list[Problem]) -> bool:
    """Report missing / unexpected channel files; return True if the count is deferred to reading."""
    n = ds.num_channels
    ending = ds.file_ending
    if sorted(found) == [0] and n > 1:
        # One file may hold every channel (a colour picture); reading the file decides.
        return True
    for c in sorted(set(range(n)) - set(found)):
        present = ", ".join(p.name for p in (found[k] for k in sorted(found)))
        problems.append(_err("missing-channel", folder / f"{name}_{c:04d}{ending}", name, (
            f"channel file missing: dataset.json declares {n} channel(s) "
            f"({', '.join(ds.channel_names[k] for k in sorted(ds.channel_names))}) but only "
            f"{present} exist(s)")))
    for c in sorted(set(found) - set(range(n))):
        problems.append(_err("unexpected-channel", found[c], name, (
            f"channel index {c} is not declared: dataset.json's channel_names has indices 0..{n - 1}")))
    return False


def _layout_from_folders(ds: RawDataset, problems: list[Problem]) -> list[_CaseFiles]:
    root = ds.root
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    ending = ds.file_ending
    cases: list[_CaseFiles] = []
    if not images_dir.is_dir():
        problems.append(_err("missing-folder", images_dir, None,
                             "imagesTr/ not found; a raw dataset needs imagesTr/ with CASE_XXXX files"))
    if not labels_dir.is_dir():
        problems.append(_err("missing-folder", labels_dir, None,
                             "labelsTr/ not found; a raw dataset needs labelsTr/ with one label map per case"))
    channels = _scan_images(ds, images_dir, problems) if images_dir.is_dir() else {}

    label_files: dict[str, Path] = {}
    if labels_dir.is_dir():
        for f in sorted(labels_dir.iterdir()):
            if _is_ignored_name(f.name) or _skip_or_broken(f, problems):
                continue
            if not f.name.endswith(ending):
                other = file_ending(f)
                if other:
                    problems.append(_err("wrong-ending", f, _case_from_name(f, other), (
                        f"label ends with {other!r} but dataset.json's file_ending is {ending!r}")))
                else:
                    problems.append(_warn("stray-file", f, None,
                                          f"not a label with the dataset's ending {ending!r}; it is ignored"))
                continue
            label_files[f.name[: -len(ending)]] = f

    for name, f in label_files.items():
        if name in channels:
            continue
        hint = ""
        m = CHANNEL_SUFFIX.match(name)
        if m and m.group("case") in channels:
            hint = f"; label files carry no channel suffix (expected {m.group('case')}{ending})"
        problems.append(_err("orphan-label", f, name, (
            f"label has no image: imagesTr/{name}_0000{ending} not found{hint}")))

    for name in sorted(channels):
        found = channels[name]
        defer = _channel_problems(ds, images_dir, name, found, problems)
        label = label_files.get(name)
        if label is None and labels_dir.is_dir():
            problems.append(_err("missing-label", labels_dir / f"{name}{ending}", name, (
                f"image {found[min(found)].name} has no label; every training case needs "
                f"labelsTr/{name}{ending} (move unlabelled cases to imagesTs/)")))
        cases.append(_CaseFiles(name, [found[c] for c in sorted(found)], label, True, defer))

    test_dir = root / "imagesTs"
    if test_dir.is_dir():
        for name, found in sorted(_scan_images(ds, test_dir, problems).items()):
            defer = _channel_problems(ds, test_dir, name, found, problems)
            cases.append(_CaseFiles(name, [found[c] for c in sorted(found)], None, False, defer))
    return cases


def _layout_from_mapping(ds: RawDataset, problems: list[Problem]) -> list[_CaseFiles]:
    """Cases listed explicitly in dataset.json's ``"dataset"`` mapping (paths relative to root)."""
    json_path = ds.root / "dataset.json"
    cases: list[_CaseFiles] = []
    for name, entry in sorted(ds.spec["dataset"].items()):
        problem = name_problem(name)
        if problem is not None:
            problems.append(_err("bad-name", json_path, None, (
                f'key {name!r} of "dataset" {problem}; case names become file names, so each must be one '
                "plain name")))
            continue
        images = entry.get("images") if isinstance(entry, dict) else None
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            problems.append(_err("dataset-json", json_path, name,
                                 "'dataset' entry needs 'images': a non-empty list of paths"))
            continue
        label_rel = entry.get("label")
        if label_rel is not None and not isinstance(label_rel, str):
            problems.append(_err("dataset-json", json_path, name, f"'label' must be a path, found {label_rel!r}"))
            continue
        resolved: list[Path] = []
        bad = False
        for rel in images + ([label_rel] if label_rel is not None else []):
            try:
                resolved.append(resolve_inside(ds.root, rel))
            except DatasetJsonError:
                problems.append(_err("path-escape", json_path, name, (
                    f"path {rel!r} escapes the dataset folder {ds.root}; paths in 'dataset' must stay inside it")))
                bad = True
        if bad:
            continue
        for rel, p in zip(images + ([label_rel] if label_rel is not None else []), resolved):
            if not p.is_file():
                problems.append(_err("missing-file", p, name, f"file listed in dataset.json ({rel!r}) not found"))
                bad = True
        image_paths = resolved[: len(images)]
        label = resolved[len(images)] if label_rel is not None else None
        if label is None:
            problems.append(_err("missing-label", json_path, name, "'dataset' entry has no 'label'"))
        n = ds.num_channels
        defer = len(image_paths) == 1 and n > 1
        if not defer and len(image_paths) != n:
            problems.append(_err("missing-channel" if len(image_paths) < n else "unexpected-channel",
                                 image_paths[-1], name,
                                 f"{len(image_paths)} image file(s) listed but dataset.json declares {n} channel(s)"))
        if bad:
            continue
        cases.append(_CaseFiles(name, image_paths, label, True, defer))
    return cases


def _label_spec_problems(ds: RawDataset) -> list[Problem]:
    """Declared labels must be 0..K without gaps (the ignore label, if any, excepted)."""
    values = [v for v in ds.label_values if v != ds.ignore_label]
    if values != list(range(len(values))):
        missing = sorted(set(range(max(values) + 1)) - set(values))
        return [_err("non-consecutive-labels", ds.root / "dataset.json", None, (
            f"declared label values {values} are not consecutive 0..K (missing {missing}); "
            "renumber the labels so that the network's outputs map onto them"))]
    return []


# ------------------------------------------------------------------------------ pass 2: content

def _nifti_raw_check(path: Path) -> tuple[str | None, int, int]:
    """Check a NIfTI file's raw voxel data: ``(why it is truncated or None, NaN count, Inf count)``.

    SimpleITK silently zero-fills a truncated NIfTI file and reads NaN as 0, so neither can
    be seen in the array it returns. Here the header (via nibabel) gives the data offset,
    shape and type; the (decompressed) bytes must be complete, and float data is scanned for
    NaN/Inf as stored on disk.
    """
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        offset = int(header.get_data_offset())
        count = int(np.prod(header.get_data_shape()))
        dtype = header.get_data_dtype()
    except Exception:
        return None, 0, 0  # not a readable header at all: the image reader reports it
    expected = offset + count * dtype.itemsize
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as handle:
                data = handle.read()
        except EOFError:
            return "file is truncated: its compressed stream ends early", 0, 0
        except (OSError, zlib.error) as exc:
            return f"corrupt compressed data ({exc})", 0, 0
    else:
        data = path.read_bytes()
    if len(data) < expected:
        return f"file is truncated: it holds {len(data)} bytes but its header promises {expected}", 0, 0
    if dtype.kind != "f" or dtype.names is not None:
        return None, 0, 0
    voxels = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    n_nan = int(np.isnan(voxels).sum())
    n_inf = int(np.isinf(voxels).sum())
    return None, n_nan, n_inf


def _read_checked(path: Path, case: str, problems: list[Problem]) -> tuple[np.ndarray, Geometry] | None:
    """Read one file, turning every failure into a Problem naming the file."""
    try:
        if file_ending(path) in (".nii", ".nii.gz"):
            reason, n_nan, n_inf = _nifti_raw_check(path)
            if reason is not None:
                problems.append(_err("truncated", path, case, reason))
                return None
            if n_nan or n_inf:
                problems.append(_nan_problem(path, case, n_nan, n_inf))
        return read_image(path)
    except DataError as exc:
        problems.append(_err("unreadable", path, case, exc.message))
    except Exception as exc:  # any reader failure is a data problem of this file
        problems.append(_err("unreadable", path, case, f"cannot read file ({type(exc).__name__}: {exc})"))
    return None


def _nan_problem(path: Path, case: str, n_nan: int, n_inf: int) -> Problem:
    return _err("nan-inf", path, case,
                f"file contains {n_nan} NaN and {n_inf} Inf value(s); replace them before training")


def _geometry_difference(a: Geometry, b: Geometry) -> str:
    parts = []
    if not np.allclose(a.spacing, b.spacing, rtol=1e-3, atol=1e-3):
        parts.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)}")
    if a.origin is not None and b.origin is not None and not np.allclose(a.origin, b.origin, rtol=1e-3, atol=1e-3):
        parts.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)}")
    if a.direction is not None and b.direction is not None and \
            not np.allclose(a.direction, b.direction, rtol=1e-3, atol=1e-3):
        parts.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return "; ".join(parts) or "geometry differs"


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _image_content_problems(array: np.ndarray, path: Path, case: str, problems: list[Problem]) -> None:
    if array.size == 0:
        problems.append(_err("empty-image", path, case, f"image has no voxels (shape {array.shape[1:]})"))
        return
    finite = np.isfinite(array) if np.issubdtype(array.dtype, np.floating) else None
    if finite is not None and not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum() - n_nan)
        problems.append(_nan_problem(path, case, n_nan, n_inf))
        if not finite.any():
            return
        values = array[finite]
    else:
        values = array
    lo, hi = values.min(), values.max()
    if lo == hi:
        what = "all zero" if lo == 0 else f"constant (every voxel is {lo})"
        problems.append(_err("empty-image", path, case, f"image is {what}; it carries no information"))
    elif array.shape[0] > 1:
        for c in range(array.shape[0]):
            channel = array[c]
            if channel.min() == channel.max():
                problems.append(_warn("constant-channel", path, case,
                                      f"channel {c} of this file is constant ({channel.flat[0]})"))


def _label_problems(path: Path, case: str, declared: list[int], ignore: int | None,
                    problems: list[Problem]) -> tuple[np.ndarray, Geometry] | None:
    """Read and check a label map; return it (spatial array) for the shape/geometry comparison."""
    if file_ending(path) in LOSSY_ENDINGS:
        problems.append(_warn("lossy-label", path, case, (
            "label stored as lossy JPEG: compression blurs class boundaries and invents values; "
            "store labels as PNG or NIfTI")))
    result = _read_checked(path, case, problems)
    if result is None:
        return None
    array, geometry = result
    if array.shape[0] > 1:
        if all(np.array_equal(array[0], array[c]) for c in range(1, min(array.shape[0], 3))):
            array = array[:1]
        else:
            problems.append(_err("label-channels", path, case, (
                f"label map has {array.shape[0]} differing channels (a colour picture?); a label map must be "
                "single-channel with integer class values")))
            return None
    label = array[0]
    if np.issubdtype(label.dtype, np.floating):
        finite = np.isfinite(label)
        if not finite.all():
            problems.append(_err("non-integer-label", path, case,
                                 f"label map contains {int((~finite).sum())} NaN/Inf value(s)"))
            return label, geometry
        fractional = label != np.rint(label)
        if fractional.any():
            examples = ", ".join(f"{v:g}" for v in np.unique(label[fractional])[:5])
            problems.append(_err("non-integer-label", path, case, (
                f"label map has {int(fractional.sum())} non-integer value(s) (e.g. {examples}); labels must be "
                "whole class numbers (was it resampled with interpolation?)")))
            return label, geometry
    values = [int(v) for v in np.unique(label)]
    undeclared = sorted(set(values) - set(declared))
    if undeclared:
        hint = ""
        if 255 in undeclared and 1 in declared and 255 not in declared:
            hint = " (a 0/255 mask? map 255 to 1, e.g. with `unetkit import`)"
        shown = ", ".join(map(str, undeclared[:10])) + (", ..." if len(undeclared) > 10 else "")
        problems.append(_err("undeclared-label", path, case, (
            f"label values [{shown}] are not declared in dataset.json's labels "
            f"(declared: {', '.join(map(str, declared))}){hint}")))
    elif set(values) <= {0, ignore}:
        problems.append(_warn("empty-label", path, case,
                              "label map is all background: this case has no foreground to learn from"))
    return label, geometry


def _check_case(job: dict[str, Any]) -> tuple[list[Problem], dict[str, Any] | None]:
    """Read one case's files and check them; never raises (every failure becomes a Problem).

    Runs in a worker process, so it takes and returns plain data.
    """
    case: str = job["case"]
    problems: list[Problem] = []
    try:
        return _check_case_inner(job, problems)
    except Exception as exc:  # a bug or an exotic file: report it against the case, keep going
        first = job["images"][0] if job["images"] else job["label"]
        problems.append(_err("unreadable", first, case, f"checking this case failed ({type(exc).__name__}: {exc})"))
        return problems, None


def _check_case_inner(job: dict[str, Any], problems: list[Problem]) -> tuple[list[Problem], dict[str, Any] | None]:
    case: str = job["case"]
    images = [Path(p) for p in job["images"]]
    n_expected: int = job["num_channels"]
    reads: list[tuple[Path, np.ndarray, Geometry]] = []
    for path in images:
        result = _read_checked(path, case, problems)
        if result is not None:
            reads.append((path, *result))

    ref_path, ref_array, ref_geo = reads[0] if reads else (None, None, None)
    for path, array, geo in reads:
        _image_content_problems(array, path, case, problems)
        if path is ref_path:
            continue
        if array.shape[1:] != ref_array.shape[1:]:
            problems.append(_err("shape-mismatch", path, case, (
                f"channel shape {array.shape[1:]} differs from {ref_path.name}'s {ref_array.shape[1:]}")))
        elif not geo.matches(ref_geo):
            problems.append(_err("geometry-mismatch", path, case, (
                f"channel geometry differs from {ref_path.name}'s: {_geometry_difference(geo, ref_geo)}")))

    # Channel count: one channel per file, or one file (a colour picture) holding them all.
    num_channels = None
    if len(reads) == len(images) and reads:
        if len(reads) == 1:
            num_channels = ref_array.shape[0]
            if num_channels != n_expected:
                if job["defer_channel_count"] and num_channels == 1:
                    missing = ", ".join(f"{case}_{c:04d}{job['ending']}" for c in range(1, n_expected))
                    problems.append(_err("missing-channel", ref_path, case, (
                        f"dataset.json declares {n_expected} channels but this case has one single-channel "
                        f"file; missing {missing}")))
                else:
                    problems.append(_err("wrong-channel-count", ref_path, case, (
                        f"file holds {num_channels} channels{' (a colour picture?)' if num_channels in (3, 4) else ''} "
                        f"but dataset.json declares {n_expected} channel(s) in channel_names")))
        else:
            for path, array, _ in reads:
                if array.shape[0] != 1:
                    problems.append(_err("wrong-channel-count", path, case, (
                        f"file holds {array.shape[0]} channels; when a case has several channel files each must "
                        "hold exactly one")))
            num_channels = sum(a.shape[0] for _, a, _ in reads)

    summary: dict[str, Any] | None = None
    if ref_array is not None:
        summary = {"case": case, "path": str(ref_path), "ndim": ref_array.ndim - 1,
                   "shape": list(ref_array.shape[1:]), "spacing": list(ref_geo.spacing),
                   "num_channels": num_channels}

    if job["label"] is not None:
        label_path = Path(job["label"])
        result = _label_problems(label_path, case, job["declared"], job["ignore"], problems)
        if result is not None and ref_array is not None:
            label, label_geo = result
            if label.shape != ref_array.shape[1:]:
                problems.append(_err("shape-mismatch", label_path, case, (
                    f"label shape {label.shape} differs from image {ref_path.name}'s shape {ref_array.shape[1:]}")))
            elif not label_geo.matches(ref_geo):
                problems.append(_err("geometry-mismatch", label_path, case, (
                    f"label geometry differs from image {ref_path.name}'s: "
                    f"{_geometry_difference(label_geo, ref_geo)}")))
    return problems, summary


def _worker_init() -> None:
    # Several processes already share the CPUs; keep each reader single-threaded.
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except Exception:
        pass


def _run_jobs(jobs: list[dict[str, Any]], num_processes: int) -> list[tuple[list[Problem], dict | None]]:
    """Run :func:`_check_case` over ``jobs``, in a process pool when it is worth it."""
    if num_processes <= 1 or len(jobs) < 2:
        return [_check_case(job) for job in jobs]
    results: list[tuple[list[Problem], dict | None]] = []
    # The platform's default start method (fork on Linux): unlike spawn it does not re-run the
    # caller's __main__ module, so check_dataset works from unguarded scripts too.
    with ProcessPoolExecutor(max_workers=min(num_processes, len(jobs)), initializer=_worker_init) as pool:
        futures: list[Future | None] = []
        for job in jobs:
            try:
                futures.append(pool.submit(_check_case, job))
            except Exception:  # the pool already broke; the job is reported below
                futures.append(None)
        for job, future in zip(jobs, futures):
            try:
                if future is None:
                    raise BrokenProcessPool("pool unusable")
                results.append(future.result())
            except Exception as exc:  # the worker died (e.g. a reader crashed on a corrupt file)
                first = job["images"][0] if job["images"] else job["label"]
                problem = _err("check-failed", first, job["case"], (
                    f"the checker process died while reading this case ({type(exc).__name__}); rerun with "
                    "--num-processes 1 to see the reader's error"))
                results.append(([problem], None))
    return results


# ------------------------------------------------------------------------------ pass 3: across cases

def _cross_case_problems(summaries: list[dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    if not summaries:
        return problems
    ndims = Counter(s["ndim"] for s in summaries)
    majority_ndim, majority_count = ndims.most_common(1)[0]
    if len(ndims) > 1:
        for s in summaries:
            if s["ndim"] != majority_ndim:
                problems.append(_err("inconsistent-dimensionality", s["path"], s["case"], (
                    f"image is {s['ndim']}D (shape {tuple(s['shape'])}) but {majority_count} of {len(summaries)} "
                    f"cases are {majority_ndim}D; all cases must have the same dimensionality")))
    same = [s for s in summaries if s["ndim"] == majority_ndim]
    if len(same) < MIN_CASES_FOR_OUTLIERS:
        return problems
    spacings = np.array([s["spacing"] for s in same], dtype=float)
    median_spacing = np.median(spacings, axis=0)
    median_ratio = float(median_spacing.max() / median_spacing.min()) if median_spacing.min() > 0 else 1.0
    if median_ratio > ANISOTROPY_RATIO:
        problems.append(_warn("anisotropic-spacing", None, None, (
            f"median spacing {_fmt(median_spacing)} mm is anisotropic (ratio {median_ratio:.1f}); planning "
            "treats the coarse axis separately")))
    voxels = np.array([float(np.prod(s["shape"])) for s in same])
    median_voxels = float(np.median(voxels))
    for s, spacing, nvox in zip(same, spacings, voxels):
        if spacing.min() > 0 and median_spacing.min() > 0:
            factor = np.maximum(spacing / median_spacing, median_spacing / spacing)
            if factor.max() > SPACING_OUTLIER_FACTOR:
                problems.append(_warn("spacing-outlier", s["path"], s["case"], (
                    f"spacing {_fmt(spacing)} mm differs {factor.max():.1f}x from the median {_fmt(median_spacing)}; "
                    "check the file's header")))
            ratio = float(spacing.max() / spacing.min())
            if ratio > ANISOTROPY_RATIO and median_ratio <= ANISOTROPY_RATIO:
                problems.append(_warn("anisotropic-spacing", s["path"], s["case"], (
                    f"spacing {_fmt(spacing)} mm is anisotropic (ratio {ratio:.1f}) while the dataset's median "
                    f"{_fmt(median_spacing)} is not")))
        if median_voxels > 0 and (nvox > SHAPE_OUTLIER_FACTOR * median_voxels
                                  or nvox * SHAPE_OUTLIER_FACTOR < median_voxels):
            problems.append(_warn("outlier-shape", s["path"], s["case"], (
                f"shape {tuple(s['shape'])} ({int(nvox)} voxels) is {max(nvox / median_voxels, median_voxels / nvox):.0f}x "
                f"{'larger' if nvox > median_voxels else 'smaller'} than the median case; is it the same kind of image?")))
    return problems


# ------------------------------------------------------------------------------ entry points

def default_num_processes() -> int:
    """Default worker count: up to 4, never more than the machine's CPUs."""
    return max(1, min(4, os.cpu_count() or 1))


def check_dataset_report(root: str | Path, num_processes: int | None = None) -> CheckReport:
    """Check the raw dataset at ``root`` and return every problem plus the number of cases.

    Args:
        root: the dataset folder (with ``dataset.json``).
        num_processes: worker processes reading the files; ``None`` for
            :func:`default_num_processes`, 1 to read in this process.
    """
    root = Path(root)
    report = CheckReport(root=root)
    try:
        ds = load_dataset(root)
    except DatasetJsonError as exc:
        report.problems.append(_err("dataset-json", exc.path, None, exc.message))
        return report
    problems: list[Problem] = []
    problems.extend(_label_spec_problems(ds))
    partial = partial_import_problem(ds.spec)
    if partial:  # written by an import that skipped data without the user's consent
        problems.append(_err("partial-import", root / "dataset.json", None, partial))
    if "dataset" in ds.spec:
        cases = _layout_from_mapping(ds, problems)
    else:
        cases = _layout_from_folders(ds, problems)
    labelled = [c for c in cases if c.labelled and c.label is not None]
    if len(labelled) != ds.num_training:
        problems.append(_err("num-training", root / "dataset.json", None, (
            f"numTraining is {ds.num_training} but {len(labelled)} labelled training case(s) were found")))

    declared = ds.label_values
    jobs = [{"case": c.name, "images": [str(p) for p in c.images],
             "label": None if c.label is None else str(c.label), "num_channels": ds.num_channels,
             "defer_channel_count": c.defer_channel_count, "declared": declared, "ignore": ds.ignore_label,
             "ending": ds.file_ending}
            for c in cases if c.images]
    results = _run_jobs(jobs, default_num_processes() if num_processes is None else num_processes)
    summaries = []
    for case_problems, summary in results:
        problems.extend(case_problems)
        if summary is not None:
            summaries.append(summary)
    problems.extend(_cross_case_problems(summaries))
    report.problems = problems
    report.num_cases = len(cases)
    return report


def check_dataset(root: str | Path, num_processes: int | None = None) -> list[Problem]:
    """Check the raw dataset at ``root``; return every problem found (empty when all is well).

    Errors mean a later stage would fail or silently learn from broken data; warnings are
    legal but suspicious. A malformed ``dataset.json`` is reported as the single problem.
    """
    return check_dataset_report(root, num_processes).problems
