"""Convert cases: write each image (and its combined label map) into the dataset being built.

Images are kept as they are: NIfTI volumes are copied byte for byte (geometry untouched), pictures
are written as lossless PNG, RGB kept as one 3-channel ``_0000`` file (nnU-Net's 2D convention).
An RGB picture whose three channels are equal everywhere is a grey picture stored as RGB: with
``color="auto"`` it is written as one grey channel (:func:`restore_rgb` turns those back into 3
channels when the dataset also holds colour pictures, so that every case has one layout).

Workers never raise for a user's data problem: a case that fails leaves no file behind and comes
back as a failed :class:`CaseResult` with the reason and a short kind.
"""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.importing.masks import MaskRule, MaskValueError, convert_mask
from unetkit.data.io import Geometry, file_ending, read_image, write_image, write_label


@dataclass(frozen=True)
class ConvertTask:
    """One case to convert (plain data so that it travels to a worker process).

    ``mask_groups``: with ``combine="labels"`` group k becomes label k (the masks of one group
    are joined); with ``union`` every mask is joined. Empty for unlabelled test images.
    """

    name: str
    image: str
    mask_groups: tuple[tuple[str, ...], ...]
    out_dir: str
    file_ending: str
    rule: MaskRule
    combine: str
    test: bool = False  # written to imagesTs/ (and labelsTs/ when it has masks)
    color: str = "auto"


@dataclass
class CaseResult:
    name: str
    ok: bool
    reason: str = ""
    file: str = ""
    kind: str = ""                # short skip kind when not ok
    channels: int = 0
    grey_from_rgb: bool = False   # an RGB picture with equal channels, written as one channel
    dtype: str = ""
    values: tuple[int, ...] = ()
    mask_kinds: tuple[str, ...] = ()      # classify_mask's kind of each mask file
    anti_aliased_distinct: tuple[int, ...] = ()  # distinct values of each anti-aliased mask
    threshold_used: tuple[float, ...] = ()
    thresholded: int = 0
    kept: int = 0
    notes: tuple[str, ...] = ()


def _picture_problem(image: np.ndarray) -> str | None:
    if image.ndim != 3:
        return f"expected a 2D picture, found shape {image.shape[1:]}"
    if image.dtype not in (np.uint8, np.uint16) and not (
            np.issubdtype(image.dtype, np.integer) and image.min() >= 0 and image.max() <= 65535):
        return f"{image.dtype} pixels cannot be stored losslessly as PNG"
    if image.shape[0] == 3 and image.dtype != np.uint8 and image.max() > 255:
        return "16-bit RGB pictures cannot be stored as PNG by Pillow"
    if image.shape[0] not in (1, 3):
        return f"picture has {image.shape[0]} channels; expected grey (1) or RGB (3)"
    return None


def _write_case_image(task: ConvertTask, image: np.ndarray, geometry: Geometry, img_dir: Path) -> tuple[int, bool]:
    """Write the image; returns (channels written, was a grey picture stored as RGB)."""
    image_path = Path(task.image)
    if image.ndim - 1 == 2 and image.shape[0] == 4:
        raise DataError("RGBA picture with a varying alpha channel; save it as RGB or grey", image_path, task.name)
    if task.file_ending == ".png":
        problem = _picture_problem(image)
        if problem:
            raise DataError(problem, image_path, task.name)
        grey = task.color == "auto" and image.shape[0] == 3 and bool(
            np.array_equal(image[0], image[1]) and np.array_equal(image[0], image[2]))
        if grey:
            image = image[:1]
        write_image(image, img_dir / f"{task.name}_0000.png", geometry)
        return int(image.shape[0]), grey
    if image.shape[0] == 1 and file_ending(image_path) == task.file_ending:
        img_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image_path, img_dir / f"{task.name}_0000{task.file_ending}")
    else:
        for c in range(image.shape[0]):
            write_image(image[c:c + 1], img_dir / f"{task.name}_{c:04d}{task.file_ending}", geometry)
    return int(image.shape[0]), False


def _check_mask_matches(label: np.ndarray, mgeo: Geometry, image: np.ndarray, geometry: Geometry,
                        image_path: str, mask_path: str, case: str) -> None:
    if label.shape != image.shape[1:]:
        raise DataError(f"mask shape {label.shape} differs from the image's {image.shape[1:]} ({image_path})",
                        mask_path, case)
    if geometry.origin is not None and mgeo.origin is not None and not mgeo.matches(geometry):
        raise DataError(f"mask geometry (spacing {mgeo.spacing}, origin {mgeo.origin}) differs from the "
                        f"image's (spacing {geometry.spacing}, origin {geometry.origin}, {image_path})",
                        mask_path, case)


def _combined_label(task: ConvertTask, image: np.ndarray, geometry: Geometry, result: CaseResult) -> np.ndarray:
    """Read every mask of the case and combine them (union, or group k -> label k)."""
    combined: np.ndarray | None = None
    kinds, soft, thresholds, notes = [], [], set(), set()
    single = len(task.mask_groups) == 1 and len(task.mask_groups[0]) == 1
    for k, group in enumerate(task.mask_groups, start=1):
        for mask_path in group:
            label, mgeo, info = convert_mask(Path(mask_path), task.rule, task.name)
            _check_mask_matches(label, mgeo, image, geometry, task.image, mask_path, task.name)
            kinds.append(info.get("kind", "mapped"))
            if info.get("kind") == "anti_aliased":
                soft.append(info["distinct"])
            if info.get("applied") == "threshold":
                thresholds.add(info["threshold"])
                result.thresholded += 1
            elif info.get("applied") == "kept":
                result.kept += 1
            if info.get("note"):
                notes.add(info["note"])
            if task.combine == "labels" and not single:
                label = np.where(label > 0, k, 0).astype(np.int16)
            # union: element-wise maximum; labels: later groups win where they overlap
            combined = label if combined is None else (
                np.maximum(combined, label) if task.combine == "union" else np.where(label > 0, label, combined))
    assert combined is not None
    result.mask_kinds, result.anti_aliased_distinct = tuple(kinds), tuple(soft)
    result.threshold_used, result.notes = tuple(sorted(thresholds)), tuple(sorted(notes))
    return combined


def case_files(out_dir: Path, name: str, ending: str, test: bool) -> list[Path]:
    """Every file a case may have written."""
    img_dir = out_dir / ("imagesTs" if test else "imagesTr")
    label_dir = out_dir / ("labelsTs" if test else "labelsTr")
    return list(img_dir.glob(f"{name}_[0-9][0-9][0-9][0-9]{ending}")) + [label_dir / f"{name}{ending}"]


def convert_case(task: ConvertTask) -> CaseResult:
    """Convert one case: write its image (and label) under ``task.out_dir``; never raises DataError."""
    out = Path(task.out_dir)
    is_test = task.test or not task.mask_groups
    stage = "unreadable image"
    try:
        image, geometry = read_image(task.image)
        stage = "image format"
        channels, grey = _write_case_image(task, image, geometry, out / ("imagesTs" if is_test else "imagesTr"))
        result = CaseResult(task.name, True, channels=channels, grey_from_rgb=grey, dtype=str(image.dtype),
                            file=task.image)
        if not task.mask_groups:
            return result
        stage = "mask"
        combined = _combined_label(task, image, geometry, result)
        write_label(combined.astype(np.int16), out / ("labelsTs" if is_test else "labelsTr") /
                    f"{task.name}{task.file_ending}", geometry)
        result.values = tuple(int(v) for v in np.unique(combined))
        return result
    except DataError as exc:
        # Remove whatever this case already wrote, so a skipped case leaves no file behind.
        for f in case_files(out, task.name, task.file_ending, is_test):
            if f.is_file():
                f.unlink()
        if isinstance(exc, MaskValueError):
            kind = "mask values"
        elif stage == "mask":
            kind = "unreadable mask" if "cannot read" in exc.message or "not found" in exc.message else "mask shape"
        else:
            kind = stage
        return CaseResult(task.name, False, reason=exc.message, file=exc.path or task.image, kind=kind)


def restore_rgb(out_dir: Path, results: list[CaseResult], tasks: list[ConvertTask]) -> int:
    """Write grey-stored RGB pictures back as 3 equal channels (the dataset also holds colour ones)."""
    restored = 0
    for result, task in zip(results, tasks):
        if result.ok and result.grey_from_rgb:
            path = out_dir / ("imagesTs" if task.test or not task.mask_groups else "imagesTr") / f"{task.name}_0000.png"
            grey, geometry = read_image(path)
            write_image(np.repeat(grey, 3, axis=0), path, geometry)
            result.channels, result.grey_from_rgb = 3, False
            restored += 1
    return restored


def _noop() -> None:
    """Submitted once so that the pool's workers exist before the progress bar's thread starts."""


def run_tasks(tasks: list[ConvertTask], n_proc: int, progress: Callable[[int, int], None] | bool) -> list[CaseResult]:
    """Convert every task, in order, inline or in a process pool, advancing the progress display."""
    results: list[CaseResult] = []
    total = len(tasks)
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
        chunk = max(1, min(16, len(tasks) // (4 * n_proc)))
        converted = map(convert_case, tasks) if pool is None else pool.map(convert_case, tasks, chunksize=chunk)
        for r in converted:
            results.append(r)
            if callback:
                callback(len(results), total)
    finally:
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return results
