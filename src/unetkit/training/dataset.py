"""Read the preprocessed cache (``WORKDIR/NAME/preprocessed/CONFIG/``) for training.

The cache format is fixed by ``docs/architecture.md`` ("Preprocessed cache"); this module only
reads it:

* ``CASE.npy``            float32 ``(C, *spatial)``, opened as a read-only memory map;
* ``CASE_seg.npy``        int16 ``(1, *spatial)``, opened as a read-only memory map;
* ``CASE_locations.npz``  one int64 array ``class_k`` of shape ``(N, ndim)`` per foreground class
  ``k``: voxel coordinates used for foreground oversampling;
* ``CASE.json``           per-case properties, written last, so its presence marks a finished case.

Memory maps keep a worker's resident memory at the size of the patches it crops, not of the
dataset, and several workers share the page cache. Nothing is unpickled
(``allow_pickle=False`` everywhere).

For the ``2d`` configuration of a 3D dataset the arrays stay 3D; :class:`CachedDataset` returns
them as they are and :class:`unetkit.training.sampling.PatchSampler` picks slices along axis 0.

Public API (used by the trainer)::

    ds = CachedDataset(folder, case_names=None)
    ds.cases                     # list[str], sorted
    data, seg, props, locs = ds.load(name)
    # data: memmap (C, *spatial) float32; seg: memmap (1, *spatial) int16
    # props: dict from CASE.json; locs: dict[int, ndarray (N, ndim) int64]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from unetkit.data.errors import DataError

#: Upper bound of class-location bytes kept in memory per process (per worker). Locations are
#: read from disk again for cases beyond it; 64 MB holds several thousand typical cases.
LOCATION_CACHE_BYTES = 64 * 1024 * 1024


class CachedDataset:
    """The finished cases of one preprocessed configuration folder.

    Args:
        folder: ``WORKDIR/NAME/preprocessed/CONFIG``.
        case_names: the cases to use (a fold's training or validation list). ``None`` uses every
            finished case (one whose ``CASE.json`` exists). Names without a finished case raise a
            :class:`DataError` listing them, so a stale ``splits.json`` is caught at start.

    Properties and class locations are cached per process (locations up to
    :data:`LOCATION_CACHE_BYTES`); image arrays are memory-mapped on every :meth:`load`, which
    costs tens of microseconds and keeps no file handle between calls.
    """

    def __init__(self, folder: str | Path, case_names: Sequence[str] | None = None,
                 previous_stage: str | Path | None = None):
        self.folder = Path(folder)
        # Cascade: the previous stage's label maps on this cache's grid (unetkit.training.cascade),
        # read by :meth:`previous` (nnU-Net's ``seg_from_previous_stage``).
        self.previous_stage = None if previous_stage is None else Path(previous_stage)
        if not self.folder.is_dir():
            raise DataError("preprocessed folder not found; run `unetkit preprocess` first", self.folder)
        # A finished case has CASE.json (written last) beside CASE.npy; other JSON files that a
        # stage may keep in the folder (summaries) have no array and are not cases.
        finished = sorted(p.name[: -len(".json")] for p in self.folder.glob("*.json")
                          if not p.name.startswith(".") and p.with_suffix(".npy").is_file())
        if case_names is None:
            self.cases: list[str] = finished
        else:
            names = list(case_names)
            have = set(finished)
            missing = [n for n in names if n not in have]
            if missing:
                shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                raise DataError(f"{len(missing)} requested case(s) have no finished preprocessed case "
                                f"(CASE.json): {shown}; rerun `unetkit preprocess`", self.folder)
            self.cases = names
        if not self.cases:
            raise DataError("no preprocessed cases found (no CASE.json files)", self.folder)
        self._properties: dict[str, dict] = {}
        self._locations: dict[str, dict[int, np.ndarray]] = {}
        self._location_bytes = 0

    def __len__(self) -> int:
        return len(self.cases)

    def __repr__(self) -> str:
        return f"CachedDataset({str(self.folder)!r}, {len(self.cases)} cases)"

    # ------------------------------------------------------------------------------- reading

    def properties(self, name: str) -> dict:
        """``CASE.json`` as a dict (cached)."""
        props = self._properties.get(name)
        if props is None:
            path = self.folder / f"{name}.json"
            try:
                props = json.loads(path.read_text())
            except FileNotFoundError as exc:
                raise DataError("case properties not found", path, name) from exc
            except json.JSONDecodeError as exc:
                raise DataError(f"case properties are not valid JSON ({exc})", path, name) from exc
            self._properties[name] = props
        return props

    def class_locations(self, name: str) -> dict[int, np.ndarray]:
        """Foreground voxel samples per class: ``{k: int64 (N, ndim)}`` (cached within budget)."""
        locs = self._locations.get(name)
        if locs is not None:
            return locs
        path = self.folder / f"{name}_locations.npz"
        locs = {}
        try:
            with np.load(path, allow_pickle=False) as npz:
                for key in npz.files:
                    if not key.startswith("class_"):
                        continue
                    try:
                        k = int(key[len("class_"):])
                    except ValueError:
                        raise DataError(f"unexpected key {key!r}; expected class_<int>", path, name) from None
                    arr = np.asarray(npz[key], dtype=np.int64)
                    if arr.ndim != 2:
                        raise DataError(f"{key} has shape {arr.shape}; expected (N, ndim)", path, name)
                    locs[k] = arr
        except FileNotFoundError as exc:
            raise DataError("class locations not found", path, name) from exc
        size = sum(a.nbytes for a in locs.values())
        if self._location_bytes + size <= LOCATION_CACHE_BYTES:
            self._locations[name] = locs
            self._location_bytes += size
        return locs

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(data, seg)`` as read-only memory maps, shapes checked against each other."""
        data_path = self.folder / f"{name}.npy"
        seg_path = self.folder / f"{name}_seg.npy"
        try:
            data = np.load(data_path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise DataError("preprocessed image not found", data_path, name) from exc
        except ValueError as exc:
            raise DataError(f"cannot read preprocessed image ({exc})", data_path, name) from exc
        try:
            seg = np.load(seg_path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise DataError("preprocessed label map not found", seg_path, name) from exc
        except ValueError as exc:
            raise DataError(f"cannot read preprocessed label map ({exc})", seg_path, name) from exc
        if data.ndim not in (3, 4):
            raise DataError(f"image has shape {data.shape}; expected (C, *spatial) with 2 or 3 spatial axes",
                            data_path, name)
        if seg.shape != (1, *data.shape[1:]):
            raise DataError(f"label map shape {seg.shape} does not match image shape {data.shape} "
                            f"(expected (1, {', '.join(map(str, data.shape[1:]))}))", seg_path, name)
        return data, seg

    def previous(self, name: str, shape: Sequence[int]) -> np.ndarray:
        """The previous stage's prediction of ``name``, int16 ``(1, *shape)`` memory map (cascade)."""
        from unetkit.training.cascade import load_prediction

        if self.previous_stage is None:
            raise ValueError(f"{self!r} has no previous stage")
        return load_prediction(self.previous_stage, name, shape, mmap=True)

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray, dict, dict[int, np.ndarray]]:
        """``(data memmap (C,*spatial), seg memmap (1,*spatial), properties, class_locations)``."""
        data, seg = self.arrays(name)
        return data, seg, self.properties(name), self.class_locations(name)
