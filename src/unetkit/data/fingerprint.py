"""The dataset fingerprint: what the training data looks like, measured once.

The planner (:mod:`unetkit.planning`) decides everything from this summary, so it is extracted
once per dataset and kept in ``WORKDIR/NAME/fingerprint.json`` (format in
``docs/architecture.md``). Per case it records

* the voxel spacing (millimetres, numpy axis order) and the spatial shape after cropping to the
  nonzero region (voxels where any channel is nonzero);
* the fraction of the voxels that cropping kept;
* foreground intensities per channel (voxels whose label is > 0, inside the crop);
* how many voxels of each foreground class the label map holds.

The rules follow nnU-Net v2's fingerprint extractor so that plans agree with nnU-Net's; two
implementation choices differ and are documented in ``docs/planning.md``:

* The crop box is the box of the *unfilled* nonzero mask. nnU-Net fills holes in the mask
  first, but filling enclosed holes cannot move a bounding box, so the box (and every number
  derived from it) is identical, and the costly 3D hole filling is skipped.
* Intensity statistics weight every case equally, as nnU-Net's "draw the same number of
  foreground voxels from each case" does, but without drawing with replacement: a case with
  fewer foreground voxels than its share contributes all of them, each weighted by
  ``share / count``; a case with more contributes a fixed-seed sample of ``share`` voxels. The
  statistics are then the expectation of nnU-Net's estimate rather than one noisy draw of it,
  and memory stays bounded by the same 10e7-voxel total.

Extraction runs in a process pool (one task per case) and is the slow part of ``unetkit plan``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from unetkit.data.dataset import Case, RawDataset, load_dataset
from unetkit.data.errors import DataError
from unetkit.data.io import read_images, read_label

FORMAT_VERSION = 1
#: Total foreground voxels (per channel, over the whole dataset) used for the intensity
#: statistics; nnU-Net's value (``10e7``).
NUM_FOREGROUND_SAMPLES_TOTAL = int(10e7)
#: Seed of the per-case sampling of foreground intensities (combined with the case name).
SAMPLING_SEED = 1234
#: Keys every fingerprint.json must have (see docs/architecture.md).
REQUIRED_KEYS = ("format_version", "num_cases", "num_channels", "spacings", "shapes_after_crop",
                 "median_relative_size_after_cropping", "foreground_intensity_properties_per_channel")


@dataclass
class CaseFingerprint:
    """What one case contributes to the fingerprint.

    Attributes:
        name: case identifier.
        spacing: voxel size per numpy axis, millimetres.
        shape_before_crop: spatial shape as stored, voxels.
        shape_after_crop: spatial shape of the nonzero region's bounding box, voxels.
        foreground_values: per channel, float32 foreground intensities (all of them, or a
            fixed-seed sample when the case has more than its share).
        foreground_weight: weight of each value in ``foreground_values`` so that every case with
            foreground totals the same weight (1.0); 0.0 when the case has no foreground.
        class_voxels: voxel count per label value present in the label map (whole map).
    """

    name: str
    spacing: tuple[float, ...]
    shape_before_crop: tuple[int, ...]
    shape_after_crop: tuple[int, ...]
    foreground_values: list[np.ndarray]
    foreground_weight: float
    class_voxels: dict[int, int]

    @property
    def relative_size_after_crop(self) -> float:
        return float(np.prod(self.shape_after_crop, dtype=np.float64)
                     / np.prod(self.shape_before_crop, dtype=np.float64))


def nonzero_bbox(data: np.ndarray) -> tuple[slice, ...]:
    """Bounding box (as slices over the spatial axes) of voxels nonzero in any channel.

    Args:
        data: image ``(C, *spatial)``.

    Returns:
        One slice per spatial axis. An all-zero image gives the whole array (it is kept, not
        cropped away). The box equals that of nnU-Net's hole-filled mask, since filling holes
        never reaches outside the box of the mask it fills.
    """
    mask = np.any(data != 0, axis=0) if data.shape[0] > 1 else data[0] != 0
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other)) if other else np.flatnonzero(mask)
        if hits.size == 0:
            return tuple(slice(0, s) for s in mask.shape)
        slices.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(slices)


def _case_rng(name: str) -> np.random.Generator:
    # Seeded by the case name, not its position, so a case's sample does not change when other
    # cases are added or the pool hands out work in another order.
    return np.random.default_rng([SAMPLING_SEED, zlib.crc32(name.encode("utf-8"))])


def analyze_case(case: Case, samples_per_case: int, allowed_labels: Sequence[int] | None = None) -> CaseFingerprint:
    """Measure one case: spacing, crop, foreground intensities, class voxel counts.

    Args:
        case: the case's channel files and label file.
        samples_per_case: this case's share of foreground intensity samples, per channel.
        allowed_labels: label values declared in dataset.json; any other value is an error.

    Raises:
        DataError: unreadable file, label/image shape mismatch, NaN/Inf intensities, or a label
            value not declared in dataset.json (naming the case and file).
    """
    if case.label is None:
        raise DataError("training case has no label file in labelsTr", case.images[0] if case.images else None,
                        case.name)
    image, geometry = read_images(case.images, case.name)
    label, _ = read_label(case.label, case.name)
    if label.shape != image.shape[1:]:
        raise DataError(f"label shape {label.shape} differs from image shape {image.shape[1:]}", case.label, case.name)

    values, counts = np.unique(label, return_counts=True)
    class_voxels = {int(v): int(n) for v, n in zip(values, counts)}
    if allowed_labels is not None:
        unknown = sorted(set(class_voxels) - set(int(v) for v in allowed_labels))
        if unknown:
            raise DataError(f"label values {unknown} are not declared in dataset.json 'labels' "
                            f"(declared: {sorted(allowed_labels)})", case.label, case.name)

    box = nonzero_bbox(image)
    cropped = image[(slice(None), *box)]
    if np.issubdtype(cropped.dtype, np.floating):
        for c in range(cropped.shape[0]):
            if not np.isfinite(cropped[c]).all():
                raise DataError(f"channel {c} has NaN or Inf values", case.images[min(c, len(case.images) - 1)],
                                case.name)
    fg_mask = label[box] > 0
    n_fg = int(fg_mask.sum())
    fg_values: list[np.ndarray] = []
    weight = 0.0
    if n_fg > samples_per_case:
        chosen = np.sort(_case_rng(case.name).choice(np.flatnonzero(fg_mask), samples_per_case, replace=False))
        weight = 1.0 / samples_per_case
        fg_values = [cropped[c].reshape(-1)[chosen].astype(np.float32) for c in range(cropped.shape[0])]
    elif n_fg > 0:
        weight = 1.0 / n_fg
        fg_values = [cropped[c][fg_mask].astype(np.float32) for c in range(cropped.shape[0])]
    else:
        fg_values = [np.empty(0, dtype=np.float32) for _ in range(cropped.shape[0])]

    return CaseFingerprint(name=case.name, spacing=tuple(float(s) for s in geometry.spacing),
                           shape_before_crop=tuple(int(s) for s in image.shape[1:]),
                           shape_after_crop=tuple(int(s.stop - s.start) for s in box),
                           foreground_values=fg_values, foreground_weight=weight, class_voxels=class_voxels)


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Percentiles (0..100) of weighted samples, interpolating between weight midpoints.

    With equal weights this is close to ``np.percentile`` (exact at the median of an odd
    count); it is what np.percentile would return on a sample in which each value appears in
    proportion to its weight.
    """
    order = np.argsort(values, kind="stable")
    v = values[order].astype(np.float64)
    w = weights[order].astype(np.float64)
    cum = np.cumsum(w)
    total = cum[-1]
    positions = (cum - 0.5 * w) / total
    return np.interp(np.asarray(percentiles, dtype=np.float64) / 100.0, positions, v)


def intensity_statistics(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    """mean, median, std, min, max, percentile_99_5, percentile_00_5 of weighted intensities (None if empty)."""
    if values.size == 0:
        # No labelled foreground anywhere: unknown, written as JSON null (not NaN, which is not JSON).
        return {k: None for k in ("mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5")}
    v = values.astype(np.float64)
    mean = float(np.average(v, weights=weights))
    std = float(math.sqrt(max(float(np.average((v - mean) ** 2, weights=weights)), 0.0)))
    p005, median, p995 = weighted_percentiles(values, weights, (0.5, 50.0, 99.5))
    return {"mean": mean, "median": float(median), "std": std, "min": float(v.min()), "max": float(v.max()),
            "percentile_99_5": float(p995), "percentile_00_5": float(p005)}


def _worker_init() -> None:
    # One process per core already; keep ITK and BLAS from spawning threads on top of that.
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except Exception:  # pragma: no cover - SimpleITK is a hard dependency; defensive only
        pass


def _analyze_star(args: tuple) -> CaseFingerprint:
    return analyze_case(*args)


def default_num_processes() -> int:
    """Worker processes used when none is given: the CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _pool_context() -> multiprocessing.context.BaseContext:
    # forkserver: workers fork from a clean server process that has imported this module once
    # (fast start, and no threads of the parent - ITK, torch - inherited half-initialised).
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["unetkit.data.fingerprint"])
        return ctx
    return multiprocessing.get_context("spawn")


def analyze_cases(cases: Sequence[Case], samples_per_case: int, allowed_labels: Sequence[int] | None = None,
                  num_processes: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[CaseFingerprint]:
    """Run :func:`analyze_case` over ``cases``, in a process pool when ``num_processes`` > 1.

    Results come back in the order of ``cases``. ``progress(done, total)`` is called after each
    case. The first failing case's :class:`DataError` is raised as is.
    """
    num_processes = default_num_processes() if num_processes is None else max(1, int(num_processes))
    num_processes = min(num_processes, len(cases)) or 1
    tasks = [(case, samples_per_case, allowed_labels) for case in cases]
    results: list[CaseFingerprint] = []
    if num_processes == 1:
        for i, task in enumerate(tasks):
            results.append(_analyze_star(task))
            if progress:
                progress(i + 1, len(tasks))
        return results
    # Small chunks keep all workers busy to the end; >1 case per chunk amortises the IPC for
    # datasets of many tiny cases.
    chunksize = max(1, min(8, len(tasks) // (num_processes * 8)))
    with ProcessPoolExecutor(max_workers=num_processes, mp_context=_pool_context(),
                             initializer=_worker_init) as pool:
        for i, result in enumerate(pool.map(_analyze_star, tasks, chunksize=chunksize)):
            results.append(result)
            if progress:
                progress(i + 1, len(tasks))
    return results


def summarize(dataset: RawDataset, results: Sequence[CaseFingerprint], samples_per_case: int) -> dict:
    """Aggregate per-case measurements into the fingerprint dictionary (docs/architecture.md)."""
    num_channels = dataset.num_channels
    intensity: dict[str, dict[str, float]] = {}
    for c in range(num_channels):
        vals = [r.foreground_values[c] for r in results if r.foreground_values and r.foreground_values[c].size]
        wts = [np.full(r.foreground_values[c].size, r.foreground_weight) for r in results
               if r.foreground_values and r.foreground_values[c].size]
        if vals:
            intensity[str(c)] = intensity_statistics(np.concatenate(vals), np.concatenate(wts))
        else:
            intensity[str(c)] = intensity_statistics(np.empty(0, np.float32), np.empty(0))
    total_voxels = float(sum(np.prod(r.shape_before_crop, dtype=np.float64) for r in results))
    fg_classes = dataset.foreground_labels
    class_voxel_fraction = {}
    class_case_fraction = {}
    for k in fg_classes:
        class_voxel_fraction[str(k)] = float(sum(r.class_voxels.get(k, 0) for r in results) / max(total_voxels, 1.0))
        class_case_fraction[str(k)] = float(sum(1 for r in results if r.class_voxels.get(k, 0) > 0)
                                            / max(len(results), 1))
    return {
        "format_version": FORMAT_VERSION,
        "dataset_name": dataset.name,
        "num_cases": len(results),
        "num_channels": num_channels,
        "case_names": [r.name for r in results],
        "spacings": [list(r.spacing) for r in results],
        "shapes_after_crop": [list(r.shape_after_crop) for r in results],
        "shapes_before_crop": [list(r.shape_before_crop) for r in results],
        "median_relative_size_after_cropping": float(np.median([r.relative_size_after_crop for r in results])),
        "foreground_intensity_properties_per_channel": intensity,
        "class_voxel_fraction": class_voxel_fraction,
        "class_case_fraction": class_case_fraction,
        "num_foreground_samples_per_case": int(samples_per_case),
    }


def extract_fingerprint(dataset: RawDataset | str | Path, num_processes: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> dict:
    """Measure every training case of a raw dataset and return the fingerprint dictionary.

    Args:
        dataset: a :class:`RawDataset` or the raw dataset folder.
        num_processes: worker processes (default: usable CPUs, at most 8; 1 runs in-process).
        progress: optional ``progress(done, total)`` callback.

    Raises:
        DataError: no labelled training cases, a case whose channel files do not match
            dataset.json, or any per-case problem (see :func:`analyze_case`).
    """
    if not isinstance(dataset, RawDataset):
        dataset = load_dataset(dataset)
    cases = dataset.training_cases()
    unlabelled = [c.name for c in cases if c.label is None]
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (" ..." if len(unlabelled) > 5 else "")
        raise DataError(f"{len(unlabelled)} training case(s) have images but no label in labelsTr: {shown}",
                        dataset.root / "labelsTr")
    if not cases:
        raise DataError("no training cases found (expected imagesTr/CASE_0000" + dataset.file_ending
                        + " and labelsTr/CASE" + dataset.file_ending + ")", dataset.root)
    samples_per_case = max(1, int(NUM_FOREGROUND_SAMPLES_TOTAL // len(cases)))
    allowed = dataset.label_values
    results = analyze_cases(cases, samples_per_case, allowed, num_processes, progress)
    for r in results:
        if len(r.foreground_values) != dataset.num_channels:
            raise DataError(f"image has {len(r.foreground_values)} channel(s) but dataset.json declares "
                            f"{dataset.num_channels}", None, r.name)
    dims = {len(r.spacing) for r in results}
    if len(dims) > 1:
        raise DataError(f"cases mix 2D and 3D images (spatial dimensions {sorted(dims)})", dataset.root)
    return summarize(dataset, results, samples_per_case)


def load_fingerprint(path: str | Path) -> dict:
    """Read fingerprint.json and check the keys the planner needs.

    Raises:
        DataError: the file is missing, malformed, or lacks a key (naming it).
    """
    from unetkit.utils.atomic import read_json

    path = Path(path)
    if not path.is_file():
        raise DataError("fingerprint not found; run `unetkit plan` to create it", path)
    try:
        fp = read_json(path)
    except ValueError as exc:
        raise DataError(str(exc), path) from exc
    if not isinstance(fp, dict):
        raise DataError("fingerprint must be a JSON object", path)
    for key in REQUIRED_KEYS:
        if key not in fp:
            raise DataError(f"fingerprint lacks required key {key!r}", path)
    if fp["format_version"] != FORMAT_VERSION:
        raise DataError(f"fingerprint format_version {fp['format_version']!r} is not {FORMAT_VERSION}; "
                        "rerun `unetkit plan --force`", path)
    if len(fp["spacings"]) != len(fp["shapes_after_crop"]) or not fp["spacings"]:
        raise DataError("'spacings' and 'shapes_after_crop' must be non-empty lists of equal length", path)
    return fp
