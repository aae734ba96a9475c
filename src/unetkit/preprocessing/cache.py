"""The preprocessed cache on disk: file names, atomic writes, completion markers, reading back.

Layout (docs/architecture.md, "Preprocessed cache") of ``WORKDIR/NAME/preprocessed/CONFIG/``::

    CASE.npy            float32 (C, *spatial)   image, normalized
    CASE_seg.npy        int16   (1, *spatial)   labels on the same grid
    CASE_locations.npz  class_k -> int64 (N, ndim) sampled voxel coordinates of class k
    CASE.json           properties; written LAST, so its presence marks a finished case

Arrays are plain ``.npy`` so that the training loader can memory-map them and read a patch
without decompressing a whole volume; nothing is pickled. Every file goes through
:func:`unetkit.utils.atomic.atomic_path`, so an interrupted run leaves either complete files
or ``.tmp-*`` leftovers (removed by :func:`remove_stale_temporaries` on the next run), never a
truncated file under a real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from unetkit.utils.atomic import TMP_PREFIX, atomic_path, to_jsonable

MAX_LOCATION_SAMPLES = 10_000   # per class, as nnU-Net
MIN_LOCATION_COVERAGE = 0.01    # at least this share of a class's voxels is kept
LOCATION_SEED = 1234


def case_files(folder: str | Path, case: str) -> dict[str, Path]:
    """The four file paths of ``case`` in a cache folder, keyed data/seg/locations/properties."""
    folder = Path(folder)
    return {"data": folder / f"{case}.npy", "seg": folder / f"{case}_seg.npy",
            "locations": folder / f"{case}_locations.npz", "properties": folder / f"{case}.json"}


def preprocessing_fingerprint(plans: dict, configuration: str) -> str:
    """sha256 (hex) of everything in the plans that changes a cached case of ``configuration``.

    That is the configuration entry's preprocessing keys (``data_identifier``, ``spacing``,
    ``normalization_schemes``, ``use_mask_for_norm``, ``resampling``), ``transpose_forward``, the
    foreground intensity properties of the channels normalized with ``CT`` (the only scheme
    that uses them) and the labels (which classes get locations). Training-only keys (patch and batch size, architecture) are left out on
    purpose: editing them must not throw away a finished cache.
    """
    entry = plans["configurations"][configuration]
    # Only CT normalization reads the dataset's intensity statistics; for the other schemes
    # they change with every edited case without changing any cached array.
    schemes = entry.get("normalization_schemes") or []
    intensity = plans.get("foreground_intensity_properties_per_channel") or {}
    used = {str(c): intensity.get(str(c)) for c, scheme in enumerate(schemes) if scheme == "CT"}
    payload = {
        "configuration": {k: entry.get(k) for k in ("data_identifier", "spacing", "normalization_schemes",
                                                     "use_mask_for_norm", "resampling")},
        "transpose_forward": plans.get("transpose_forward"),
        "foreground_intensity_properties_per_channel": used,
        "labels": plans.get("labels"),
    }
    text = json.dumps(to_jsonable(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sample_class_locations(seg: np.ndarray, classes: Sequence[int], seed: int = LOCATION_SEED,
                           max_samples: int = MAX_LOCATION_SAMPLES,
                           min_coverage: float = MIN_LOCATION_COVERAGE) -> dict[str, np.ndarray]:
    """Sample voxel coordinates of each class for foreground oversampling during training.

    For class ``k`` with ``n`` voxels, ``max(min(max_samples, n), ceil(n * min_coverage))``
    distinct voxels are drawn without replacement (nnU-Net's rule: at most 10 000, but never
    fewer than 1 % so that large structures stay well covered), with a fixed seed so that
    reruns give the same file.

    Args:
        seg: label map ``spatial`` (no channel axis).
        classes: the class values to sample (foreground labels).

    Returns:
        ``{"class_k": int64 (N, ndim)}`` for every requested class; ``(0, ndim)`` when absent.
    """
    rng = np.random.RandomState(seed)
    out: dict[str, np.ndarray] = {}
    flat = seg.ravel()
    wanted = np.isin(flat, np.asarray(list(classes), dtype=flat.dtype)) if len(classes) else np.zeros(0, bool)
    idx = np.flatnonzero(wanted) if len(classes) else np.zeros(0, np.int64)
    values = flat[idx]
    order = np.argsort(values, kind="stable")
    idx, values = idx[order], values[order]
    for k in classes:
        lo, hi = np.searchsorted(values, k, side="left"), np.searchsorted(values, k, side="right")
        n = int(hi - lo)
        if n == 0:
            out[f"class_{int(k)}"] = np.zeros((0, seg.ndim), dtype=np.int64)
            continue
        target = max(min(max_samples, n), int(np.ceil(n * min_coverage)))
        pick = idx[lo:hi][rng.choice(n, target, replace=False)] if target < n else idx[lo:hi]
        out[f"class_{int(k)}"] = np.stack(np.unravel_index(pick, seg.shape), axis=1).astype(np.int64)
    return out


# Cache files are written atomically (temp name + rename: a killed run never leaves a truncated
# file under a real name) but without a per-file fsync, which costs milliseconds per file and
# dominated the run time on datasets of many small cases. preprocess_dataset flushes once at
# the end, and is_case_done checks the arrays' sizes, so a case cut short by a power loss is
# redone on the next run.
DURABLE = False


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, durable=DURABLE) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, durable=DURABLE) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _save_json(path: Path, obj: dict) -> None:
    with atomic_path(path, durable=DURABLE) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=1) + "\n", encoding="utf-8")


def write_case(folder: str | Path, case: str, data: np.ndarray, seg: np.ndarray | None,
               locations: dict[str, np.ndarray] | None, properties: dict) -> None:
    """Write one case's files atomically, ``CASE.json`` last (it marks the case finished).

    An existing ``CASE.json`` is removed first, so that a crash while a case is being redone
    cannot leave the old marker beside new, partly written arrays.
    """
    files = case_files(folder, case)
    Path(folder).mkdir(parents=True, exist_ok=True)
    files["properties"].unlink(missing_ok=True)
    _save_npy(files["data"], data.astype(np.float32, copy=False))
    if seg is not None:
        _save_npy(files["seg"], seg.astype(np.int16, copy=False))
        _save_npz(files["locations"], locations or {})
    else:
        files["seg"].unlink(missing_ok=True)
        files["locations"].unlink(missing_ok=True)
    _save_json(files["properties"], properties)


def link_case(source_folder: str | Path, folder: str | Path, case: str, properties: dict) -> None:
    """Give ``folder`` the same arrays as ``source_folder`` for ``case`` (hard links), plus its own JSON.

    Two configurations often produce identical arrays (the ``2d`` and ``3d_fullres`` caches of
    an isotropic dataset, where both keep the native spacing). Linking stores and writes them
    once; the cache is read-only, so sharing the bytes is safe. Falls back to copying where the
    file system cannot link. ``CASE.json`` is still written last.
    """
    src, dst = case_files(source_folder, case), case_files(folder, case)
    Path(folder).mkdir(parents=True, exist_ok=True)
    dst["properties"].unlink(missing_ok=True)
    for key in ("data", "seg", "locations"):
        if not src[key].is_file():
            dst[key].unlink(missing_ok=True)
            continue
        with atomic_path(dst[key], durable=DURABLE) as tmp:
            tmp.unlink()
            try:
                os.link(src[key], tmp)
            except OSError:
                shutil.copyfile(src[key], tmp)
    _save_json(dst["properties"], properties)


def read_properties(folder: str | Path, case: str) -> dict | None:
    """The case's ``CASE.json``, or None when it is missing or unreadable (an unfinished case)."""
    path = case_files(folder, case)["properties"]
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_case_done(folder: str | Path, case: str, fingerprint: str, needs_seg: bool = True,
                 raw_signature: str | None = None) -> bool:
    """True when the case was finished with the same preprocessing fingerprint and its arrays exist.

    With ``raw_signature`` (:func:`unetkit.data.signature.case_signature` of the raw files now)
    the entry must also have been made from files with that signature: a label fixed in place
    makes its cache entry stale.
    """
    props = read_properties(folder, case)
    if props is None or props.get("plans_fingerprint") != fingerprint:
        return False
    if raw_signature is not None and props.get("raw_signature") != raw_signature:
        return False
    files = case_files(folder, case)
    if not _npy_complete(files["data"]):
        return False
    if needs_seg and not (_npy_complete(files["seg"]) and _npz_complete(files["locations"])):
        return False
    return True


def _npy_complete(path: Path) -> bool:
    """True when ``path`` is a readable .npy whose size matches its header (not truncated)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            expected = handle.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return os.path.getsize(path) == expected
    except (OSError, ValueError):
        return False


def _npz_complete(path: Path) -> bool:
    """True when ``path`` is a readable .npz archive (its directory sits at the end of the file)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            npz.files
        return True
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False


def cached_case_names(folder: str | Path) -> list[str]:
    """Names of the cases that have a ``CASE.json`` in ``folder`` (finished or being redone)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.glob("*.json") if not p.name.startswith(TMP_PREFIX))


def remove_case(folder: str | Path, case: str) -> None:
    """Delete a case's files from the cache, ``CASE.json`` first (so it is never half there)."""
    files = case_files(folder, case)
    for key in ("properties", "data", "seg", "locations"):
        files[key].unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete ``.tmp-*`` files an interrupted (killed) run left in ``folder``; returns how many.

    Only safe while holding the dataset's work-folder lock (:func:`unetkit.utils.locks.folder_lock`,
    as ``preprocess_dataset`` does): the files of a running writer are ``.tmp-*`` too.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in os.scandir(folder):
        if entry.name.startswith(TMP_PREFIX) and entry.is_file():
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def load_case(folder: str | Path, case: str, mmap: bool = True
              ) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray], dict]:
    """Read a cached case: ``(data, seg or None, locations, properties)``.

    With ``mmap`` the arrays are memory-mapped (read-only), so a patch read touches only its
    own bytes.
    """
    files = case_files(folder, case)
    props = read_properties(folder, case)
    if props is None:
        raise FileNotFoundError(f"{files['properties']}: case {case!r} is not (completely) preprocessed")
    mode = "r" if mmap else None
    data = np.load(files["data"], mmap_mode=mode, allow_pickle=False)
    seg = np.load(files["seg"], mmap_mode=mode, allow_pickle=False) if files["seg"].is_file() else None
    locations: dict[str, np.ndarray] = {}
    if files["locations"].is_file():
        with np.load(files["locations"], allow_pickle=False) as npz:
            locations = {k: npz[k] for k in npz.files}
    return data, seg, locations, props
