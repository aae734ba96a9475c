"""Turn a raw dataset into the training cache, and map predictions back to the raw grid.

Per case and configuration (docs/architecture.md, "Preprocessed cache"):

1. crop to the nonzero region (any channel nonzero, holes filled),
2. transpose the spatial axes by ``transpose_forward``,
3. normalize each channel by its scheme,
4. resample to the configuration's spacing (for the ``2d`` configuration of a 3D dataset,
   axis 0 keeps its own spacing),
5. write ``CASE.npy``, ``CASE_seg.npy``, ``CASE_locations.npz`` and finally ``CASE.json``.

Normalization runs before resampling, as in nnU-Net: the statistics then come from the
measured voxels, and the nonzero mask used by masked z-scoring fits the image exactly (a
resampled mask would not). Both are linear-ish maps, so the cached values are the same up to
the spline's clipping at the value range.

:func:`preprocess_dataset` runs every case in a process pool. Each worker reads its own input
files and writes its own outputs, so no volume crosses a process boundary; a case is read
once for all configurations that need it. A finished case (``CASE.json`` present with the
current preprocessing fingerprint) is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import Geometry
from unetkit.preprocessing import cache
from unetkit.preprocessing.cropping import crop_to_nonzero, uncrop
from unetkit.preprocessing.normalization import normalize
from unetkit.preprocessing.resampling import (DEFAULT_ANISOTROPY_THRESHOLD, compute_new_shape, resample_image,
                                              resample_label, resample_probabilities)

DEFAULT_MAX_PROCESSES = 8
STAGES = ("read", "crop", "normalize", "resample", "locations", "write")


# ------------------------------------------------------------------------------- plan access

def _configuration(plans: dict, configuration: str) -> dict:
    configs = plans.get("configurations") or {}
    if configuration not in configs:
        raise KeyError(f"configuration {configuration!r} is not in the plans; available: "
                       f"{', '.join(sorted(configs)) or 'none'}")
    return configs[configuration]


def _resampling_options(entry: dict) -> dict:
    opts = entry.get("resampling") or {}
    return {"image_order": int(opts.get("image_order", 3)),
            "label_order": int(opts.get("label_order", 1)),
            "anisotropy_threshold": float(opts.get("anisotropy_threshold", DEFAULT_ANISOTROPY_THRESHOLD)),
            "separate_axis_order": int(opts.get("separate_axis_order", 0))}


def foreground_labels(plans: dict) -> list[int]:
    """Label values that get foreground locations: every declared value except 0 and ``ignore``."""
    labels = plans.get("labels") or {}
    ignore = labels.get("ignore")
    values: set[int] = set()
    for name, value in labels.items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            values.add(int(v))
    return sorted(v for v in values if v != 0 and v != ignore)


def _transpose(plans: dict, ndim: int) -> tuple[list[int], list[int]]:
    forward = plans.get("transpose_forward") or list(range(ndim))
    backward = plans.get("transpose_backward") or [int(i) for i in np.argsort(forward)]
    if sorted(forward) != list(range(ndim)):
        raise ValueError(f"transpose_forward {forward} does not fit {ndim}-dimensional data")
    return [int(i) for i in forward], [int(i) for i in backward]


def target_spacing_for(plans: dict, configuration: str, spacing_after_transpose: Sequence[float]) -> list[float]:
    """The full target spacing (mm, transposed axis order) of ``configuration`` for one case.

    A configuration with fewer spacing entries than the data has axes (``2d`` on a 3D dataset)
    keeps the case's own spacing on the leading axes (the slice axis).
    """
    spacing = [float(s) for s in _configuration(plans, configuration)["spacing"]]
    extra = len(spacing_after_transpose) - len(spacing)
    if extra < 0:
        raise ValueError(f"configuration {configuration!r} has a {len(spacing)}-D spacing but the data is "
                         f"{len(spacing_after_transpose)}-D")
    return [float(s) for s in spacing_after_transpose[:extra]] + spacing


# ------------------------------------------------------------------------------- one case

@dataclass
class _Cropped:
    data: np.ndarray            # (C, *crop), input dtype
    label: np.ndarray | None    # crop, int16
    mask: np.ndarray            # crop, bool: nonzero region (labelled voxels included)
    bbox: list[list[int]]
    original_shape: list[int]
    geometry: Geometry


def _crop(images: np.ndarray, geometry: Geometry, label: np.ndarray | None) -> _Cropped:
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (C, *spatial) with 2 or 3 spatial axes, got shape {images.shape}")
    if len(geometry.spacing) != images.ndim - 1:
        raise ValueError(f"geometry has {len(geometry.spacing)} spacing values for {images.ndim - 1} spatial axes")
    if label is not None and tuple(label.shape) != tuple(images.shape[1:]):
        raise ValueError(f"label shape {tuple(label.shape)} differs from image shape {tuple(images.shape[1:])}")
    data, lab, mask, bbox = crop_to_nonzero(images, label)
    if lab is not None:
        lab = lab.astype(np.int16, copy=False)
        mask = mask | (lab > 0)  # annotated voxels count as inside, as nnU-Net's seg >= 0 rule
    return _Cropped(data, lab, mask, bbox, [int(s) for s in images.shape[1:]], geometry)


def _process_cropped(c: _Cropped, plans: dict, configuration: str, timings: dict[str, float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    t = timings if timings is not None else {}
    entry = _configuration(plans, configuration)
    ndim = c.data.ndim - 1
    forward, _ = _transpose(plans, ndim)

    t0 = time.perf_counter()
    axes = [0, *[a + 1 for a in forward]]
    data = c.data.transpose(axes)
    mask = c.mask.transpose(forward)
    label = None if c.label is None else c.label.transpose(forward)
    spacing_t = [float(c.geometry.spacing[a]) for a in forward]
    target = target_spacing_for(plans, configuration, spacing_t)
    data = normalize(data, entry["normalization_schemes"], entry.get("use_mask_for_norm") or [],
                     plans.get("foreground_intensity_properties_per_channel"), mask)
    t1 = time.perf_counter()
    t["normalize"] = t.get("normalize", 0.0) + t1 - t0

    shape_t = [int(s) for s in data.shape[1:]]
    new_shape = compute_new_shape(shape_t, spacing_t, target)
    opts = _resampling_options(entry)
    data = resample_image(data, new_shape, spacing_t, target, opts["image_order"], opts["separate_axis_order"],
                          opts["anisotropy_threshold"])
    seg = None
    if label is not None:
        label = resample_label(label, new_shape, spacing_t, target, opts["label_order"],
                               opts["separate_axis_order"], opts["anisotropy_threshold"])
        seg = label[None].astype(np.int16, copy=False)
    t["resample"] = t.get("resample", 0.0) + time.perf_counter() - t1

    fg = foreground_labels(plans)
    present = [] if label is None else [int(v) for v in np.unique(label) if int(v) in set(fg)]
    properties = {
        "configuration": configuration,
        "plans_fingerprint": cache.preprocessing_fingerprint(plans, configuration),
        "geometry": c.geometry.to_json(),
        "original_shape": c.original_shape,
        "bbox": c.bbox,
        "shape_after_crop": [b - a for a, b in c.bbox],
        "spacing_after_transpose": spacing_t,
        "shape_after_resampling": [int(s) for s in data.shape[1:]],
        "target_spacing": target,
        "foreground_classes": present,
    }
    return np.ascontiguousarray(data, dtype=np.float32), seg, properties


def preprocess_case(images: np.ndarray, geometry: Geometry, plans: dict, configuration: str,
                    label: np.ndarray | None = None, *, case: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one case in memory, exactly as the cache stores it.

    Args:
        images: ``(C, *spatial)`` as read by :func:`unetkit.data.io.read_images`.
        geometry: the images' geometry (spacing in numpy axis order, mm).
        plans: the parsed plans.json.
        configuration: a key of ``plans["configurations"]``.
        label: optional label map ``spatial`` on the same grid.
        case: optional case name, recorded in the properties.

    Returns:
        ``(data float32 (C, *new), seg int16 (1, *new) or None, properties)`` where
        ``properties`` holds the keys of ``CASE.json`` (needed by :func:`restore_to_original`).
    """
    data, seg, props = _process_cropped(_crop(np.asarray(images), geometry, label), plans, configuration)
    return data, seg, {"case": case, **props}


def restore_to_original(array: np.ndarray, properties: dict, plans: dict, configuration: str) -> np.ndarray:
    """Map an array on the cache grid back onto the case's original grid.

    Undoes, in reverse order, what :func:`preprocess_case` did: resampling (back to the cropped
    shape; probabilities linearly, label maps with the class-preserving label rule), the
    transposition, and the crop (padding with background: label 0, or probability 1 for class
    0 and 0 for the others; 0 for every channel of region-based outputs).

    Args:
        array: probabilities/logits ``(K, *shape_after_resampling)`` or a label map
            ``shape_after_resampling``.
        properties: the case's ``CASE.json`` (or the dict :func:`preprocess_case` returned).

    Returns:
        ``(K, *original_shape)`` float32 or ``original_shape`` of the label map's dtype.
    """
    entry = _configuration(plans, configuration)
    cache_shape = [int(s) for s in properties["shape_after_resampling"]]
    ndim = len(cache_shape)
    array = np.asarray(array)
    is_label = array.ndim == ndim
    if tuple(array.shape[array.ndim - ndim:]) != tuple(cache_shape) or array.ndim not in (ndim, ndim + 1):
        raise ValueError(f"array shape {array.shape} does not match the case's cache grid {tuple(cache_shape)} "
                         f"(expected {tuple(cache_shape)} or (K, *{tuple(cache_shape)}))")
    forward, backward = _transpose(plans, ndim)
    crop_shape_t = [int(properties["shape_after_crop"][a]) for a in forward]
    current = [float(s) for s in properties["target_spacing"]]
    original = [float(s) for s in properties["spacing_after_transpose"]]
    opts = _resampling_options(entry)
    if is_label:
        restored = resample_label(array, crop_shape_t, current, original, opts["label_order"],
                                  opts["separate_axis_order"], opts["anisotropy_threshold"])
        restored = restored.transpose(backward)
        return uncrop(restored, properties["bbox"], tuple(properties["original_shape"]), 0)
    restored = resample_probabilities(array.astype(np.float32, copy=False), crop_shape_t, current, original, 1,
                                      opts["separate_axis_order"], opts["anisotropy_threshold"])
    restored = restored.transpose([0, *[a + 1 for a in backward]])
    fill = np.zeros(restored.shape[0], dtype=np.float32)
    has_regions = any(isinstance(v, (list, tuple)) for v in (plans.get("labels") or {}).values())
    if not has_regions:
        fill[0] = 1.0
    return uncrop(restored, properties["bbox"], tuple(properties["original_shape"]), fill)


# ------------------------------------------------------------------------------- worker

@dataclass
class _Task:
    case: str
    images: tuple[str, ...]
    label: str | None
    configurations: list[tuple[str, str]]   # (configuration name, output folder)
    signature: str | None = None            # the raw files' signature, recorded in CASE.json


@dataclass
class _Result:
    case: str
    configurations: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def _run_task(task: _Task, plans: dict) -> _Result:
    """Read one case, preprocess it for each requested configuration, write the files."""
    from unetkit.data.io import read_images, read_label

    timings: dict[str, float] = {}
    done: list[str] = []
    try:
        t0 = time.perf_counter()
        images, geometry = read_images([Path(p) for p in task.images], task.case)
        label = None
        if task.label is not None:
            label, _ = read_label(task.label, task.case)
            if tuple(label.shape) != tuple(images.shape[1:]):
                raise DataError(f"label shape {tuple(label.shape)} differs from the image shape "
                                f"{tuple(images.shape[1:])} ({task.images[0]})", task.label, task.case)
        t1 = time.perf_counter()
        timings["read"] = t1 - t0
        cropped = _crop(images, geometry, label)
        timings["crop"] = time.perf_counter() - t1
        fg = foreground_labels(plans)
        forward, _ = _transpose(plans, images.ndim - 1)
        spacing_t = [float(geometry.spacing[a]) for a in forward]
        written: dict[str, str] = {}  # what determines the arrays -> folder that already holds them
        for configuration, folder in task.configurations:
            key = _array_key(plans, configuration, spacing_t)
            if key in written:
                t2 = time.perf_counter()
                props = dict(cache.read_properties(written[key], task.case) or {})
                props.update(configuration=configuration, raw_signature=task.signature,
                             plans_fingerprint=cache.preprocessing_fingerprint(plans, configuration))
                cache.link_case(written[key], folder, task.case, props)
                timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t2
                done.append(configuration)
                continue
            data, seg, props = _process_cropped(cropped, plans, configuration, timings)
            t2 = time.perf_counter()
            locations = None if seg is None else cache.sample_class_locations(seg[0], fg)
            t3 = time.perf_counter()
            timings["locations"] = timings.get("locations", 0.0) + t3 - t2
            cache.write_case(folder, task.case, data, seg, locations,
                             {"case": task.case, "raw_signature": task.signature, **props})
            written[key] = folder
            timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t3
            done.append(configuration)
    except DataError as exc:
        return _Result(task.case, done, timings, str(exc))
    except (ValueError, KeyError, MemoryError, OSError) as exc:
        return _Result(task.case, done, timings, f"case {task.case!r}: {type(exc).__name__}: {exc}")
    return _Result(task.case, done, timings)


def _array_key(plans: dict, configuration: str, spacing_after_transpose: list[float]) -> str:
    """Everything that determines a case's cached arrays under ``configuration`` (not its JSON)."""
    entry = _configuration(plans, configuration)
    return json.dumps([entry.get("normalization_schemes"), entry.get("use_mask_for_norm"),
                       _resampling_options(entry), target_spacing_for(plans, configuration, spacing_after_transpose)],
                      sort_keys=True)


_WORKER_PLANS: dict | None = None


def _init_worker(plans: dict) -> None:
    global _WORKER_PLANS
    _WORKER_PLANS = plans


def _run_task_in_worker(task: _Task) -> _Result:
    assert _WORKER_PLANS is not None
    return _run_task(task, _WORKER_PLANS)


# ------------------------------------------------------------------------------- dataset

@dataclass
class PreprocessSummary:
    """What a :func:`preprocess_dataset` run did (seconds are wall clock / summed worker time)."""

    output_folders: dict[str, Path]
    processed: dict[str, int]
    skipped: dict[str, int]
    failed: list[str]
    seconds: float
    stage_seconds: dict[str, float]
    num_processes: int
    changed: list[str] = field(default_factory=list)   # redone: their raw files changed
    removed: list[str] = field(default_factory=list)   # dropped: no longer in the dataset

    def describe(self) -> str:
        lines = []
        if self.changed:
            lines.append(f"{len(self.changed)} case(s) redone because their raw files changed: "
                         f"{', '.join(self.changed[:10])}{' ...' if len(self.changed) > 10 else ''}")
        if self.removed:
            lines.append(f"{len(self.removed)} case(s) removed from the cache (no longer in the dataset): "
                         f"{', '.join(self.removed[:10])}{' ...' if len(self.removed) > 10 else ''}")
        for cfg, folder in self.output_folders.items():
            lines.append(f"{cfg}: {self.processed.get(cfg, 0)} case(s) preprocessed, "
                         f"{self.skipped.get(cfg, 0)} already done -> {folder}")
        total = sum(self.stage_seconds.values())
        if total > 0:
            parts = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in self.stage_seconds.items() if v > 0)
            lines.append(f"{self.seconds:.1f} s wall with {self.num_processes} process(es); worker time: {parts}")
        return "\n".join(lines)


def default_num_processes() -> int:
    """``min(os.cpu_count(), 8)``: more processes than that mostly contend for the disk."""
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_PROCESSES))


def _pool_context():
    import multiprocessing as mp

    # Linux: fork. Workers start at once, share the parent's imported modules, and do not re-run
    # the caller's __main__ script (spawn and forkserver do, which breaks unguarded scripts).
    # They are forked before the progress bar's thread starts (see _execute); ITK registers
    # fork handlers for its own thread pool. Elsewhere fork is unsafe, so spawn.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context("spawn")


def preprocess_dataset(dataset_root: str | Path, workdir: str | Path | None = None,
                       configurations: Sequence[str] | None = None, num_processes: int | None = None,
                       progress: bool = True, plans: dict | None = None, name: str | None = None
                       ) -> PreprocessSummary:
    """Preprocess every training case of a raw dataset into ``WORKDIR/NAME/preprocessed/``.

    A case already in the cache is kept only if it was made with the same preprocessing plan
    from raw files with the same signature (:mod:`unetkit.data.signature`); a case edited in
    place is redone, and the cache entries of cases no longer in the dataset are removed. The
    dataset's work folder is locked for the run (:mod:`unetkit.utils.locks`).

    Args:
        dataset_root: the raw dataset folder (dataset.json, imagesTr/, labelsTr/).
        workdir: work root (default ``./unetkit_work``); plans are read from ``WORKDIR/NAME/plans.json``.
        configurations: configuration names (default: all in the plans).
        num_processes: worker processes (default :func:`default_num_processes`); 1 runs inline.
        progress: show a progress bar on the terminal.
        plans: use these plans instead of reading plans.json (tests, notebooks).
        name: dataset name under the work root (default: the dataset folder's name).

    Raises:
        DataError: plans.json is missing, a configuration is unknown, a case has no label, or
            some cases failed (all others are finished and cached; the message lists the failures).
    """
    from unetkit.data.dataset import load_dataset
    from unetkit.utils.locks import folder_lock
    from unetkit.utils.paths import WorkPaths

    start = time.perf_counter()
    dataset = load_dataset(dataset_root)
    paths = WorkPaths.for_dataset(dataset_root, workdir, name)
    with folder_lock(paths.root, "unetkit preprocess"):
        plans = _resolved(plans if plans is not None else _read_plans(paths.plans), paths.plans)
        folders, fingerprints = _output_folders(plans, configurations, paths)
        cases = dataset.training_cases()
        unlabelled = [c.name for c in cases if c.label is None]
        if unlabelled:
            raise DataError(f"{len(unlabelled)} training case(s) have no label in labelsTr: "
                            f"{', '.join(unlabelled[:5])}{' ...' if len(unlabelled) > 5 else ''}",
                            dataset.root / "labelsTr")
        tasks, skipped, changed, removed = _plan_tasks(cases, folders, fingerprints)
        n_proc = max(1, min(num_processes or default_num_processes(), len(tasks) or 1))
        results = _execute(tasks, plans, n_proc, progress) if tasks else []
        if tasks and hasattr(os, "sync"):
            os.sync()  # one flush for the whole run instead of an fsync per file (see cache.DURABLE)
    summary = _summarize(results, folders, skipped, time.perf_counter() - start, n_proc)
    summary.changed, summary.removed = changed, removed
    if summary.failed:
        failed = summary.failed
        listing = "\n  ".join(failed[:20]) + (f"\n  ... and {len(failed) - 20} more" if len(failed) > 20 else "")
        raise DataError(f"{len(failed)} case(s) failed (the other cases are cached; fix these and rerun):\n  "
                        f"{listing}", dataset.root)
    return summary


def _read_plans(path: Path) -> dict:
    from unetkit.utils.atomic import read_json

    if not path.is_file():
        raise DataError("plans.json not found; run `unetkit plan` on this dataset first", path)
    try:
        return read_json(path)
    except ValueError as exc:
        raise DataError(str(exc), path) from exc


def _resolved(plans: dict, path: Path) -> dict:
    """The plans with every configuration's ``inherits_from`` chain applied (3d_cascade_fullres)."""
    from unetkit.planning.plans import resolve_configuration

    configs = plans.get("configurations")
    if not isinstance(configs, dict):
        raise DataError("'configurations' must be a JSON object", path)
    resolved = dict(plans)
    resolved["configurations"] = {name: resolve_configuration(configs, name, path) for name in configs}
    return resolved


def _output_folders(plans: dict, configurations: Sequence[str] | None, paths
                    ) -> tuple[dict[str, Path], dict[str, str]]:
    """``({config: cache folder}, {config: preprocessing fingerprint})``, one config per data_identifier."""
    from unetkit.utils.names import check_data_identifier, require_name

    available = list((plans.get("configurations") or {}).keys())
    selected = list(configurations) if configurations else available
    for cfg in selected:
        if cfg not in available:
            raise DataError(f"configuration {cfg!r} is not in the plans; available: {', '.join(available) or 'none'}",
                            paths.plans)
    # One output folder per data_identifier; configurations sharing one must preprocess alike.
    folders: dict[str, Path] = {}
    fingerprints: dict[str, str] = {}
    by_identifier: dict[str, str] = {}
    for cfg in selected:
        require_name(cfg, 'configuration name (key of "configurations")', paths.plans)
        ident = check_data_identifier(plans["configurations"][cfg], cfg, paths.plans)
        fp = cache.preprocessing_fingerprint(plans, cfg)
        if ident in by_identifier:
            if fingerprints[by_identifier[ident]] != fp:
                raise DataError(f"configurations {by_identifier[ident]!r} and {cfg!r} share data_identifier "
                                f"{ident!r} but preprocess differently", paths.plans)
            continue
        by_identifier[ident] = cfg
        folders[cfg] = paths.preprocessed(ident)
        fingerprints[cfg] = fp
    return folders, fingerprints


def _plan_tasks(cases: list, folders: dict[str, Path], fingerprints: dict[str, str]
                ) -> tuple[list[_Task], dict[str, int], list[str], list[str]]:
    """The cases to (re)do; ``(tasks, skipped per config, changed cases, removed cases)``."""
    from unetkit.data.signature import case_signature

    names = {c.name for c in cases}
    removed: set[str] = set()
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        cache.remove_stale_temporaries(folder)  # safe: the caller holds the work folder's lock
        for gone in set(cache.cached_case_names(folder)) - names:
            cache.remove_case(folder, gone)  # a case deleted from the dataset must not be trained on
            removed.add(gone)
    tasks: list[_Task] = []
    skipped = {cfg: 0 for cfg in folders}
    changed: set[str] = set()
    for case in cases:
        signature = case_signature(case.images, case.label)
        todo = []
        for cfg, folder in folders.items():
            if cache.is_case_done(folder, case.name, fingerprints[cfg], raw_signature=signature):
                skipped[cfg] += 1
                continue
            todo.append((cfg, str(folder)))
            props = cache.read_properties(folder, case.name)
            if props is not None and props.get("raw_signature") not in (None, signature):
                changed.add(case.name)
        if todo:
            tasks.append(_Task(case.name, tuple(str(p) for p in case.images),
                               None if case.label is None else str(case.label), todo, signature))
    return tasks, skipped, sorted(changed), sorted(removed)


def _summarize(results: list[_Result], folders: dict[str, Path], skipped: dict[str, int], seconds: float,
               n_proc: int) -> PreprocessSummary:
    processed = {cfg: 0 for cfg in folders}
    stage_seconds = {k: 0.0 for k in STAGES}
    failed = []
    for r in results:
        for k, v in r.timings.items():
            stage_seconds[k] = stage_seconds.get(k, 0.0) + v
        if r.error:
            failed.append(r.error)
        for cfg in r.configurations:
            processed[cfg] += 1
    return PreprocessSummary(folders, processed, skipped, failed, seconds, stage_seconds, n_proc)


def _execute(tasks: list[_Task], plans: dict, n_proc: int, progress: bool) -> list[_Result]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    show = progress and sys.stderr.isatty()
    bar = Progress(TextColumn("preprocessing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not show, transient=False)
    results: list[_Result] = []
    if n_proc == 1:
        with bar:
            job = bar.add_task("cases", total=len(tasks))
            for task in tasks:
                results.append(_run_task(task, plans))
                bar.advance(job)
        return results
    executor = ProcessPoolExecutor(max_workers=n_proc, mp_context=_pool_context(), initializer=_init_worker,
                                   initargs=(plans,))
    try:
        # Keep a bounded number of tasks in flight (the rest wait here, not in a pipe). The first
        # submit forks all workers, before the progress bar starts its refresh thread.
        pending: set[Future] = set()
        queue = list(reversed(tasks))
        while queue and len(pending) < 2 * n_proc:
            pending.add(executor.submit(_run_task_in_worker, queue.pop()))
        with bar:
            job = bar.add_task("cases", total=len(tasks))
            while queue or pending:
                while queue and len(pending) < 2 * n_proc:
                    pending.add(executor.submit(_run_task_in_worker, queue.pop()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    results.append(fut.result())
                    bar.advance(job)
    except BaseException:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return results
