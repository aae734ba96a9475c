"""Patch sampling with foreground oversampling, as nnU-Net v2 does it.

A batch is ``batch_size`` cases drawn uniformly with replacement. For each one a box of the
*sampling* patch size (``initial_patch_size``: larger than the network patch so that rotation and
scaling later find real image everywhere) is placed in the case:

* **Random boxes** may start anywhere from ``floor(-need_to_pad / 2)`` to
  ``shape + ceil(need_to_pad / 2) - patch``, where ``need_to_pad = initial_patch - final_patch``
  (widened further when the case is smaller than the sampling patch): the same padding on both
  sides, so the *final* centre-cropped patch reaches every border voxel. nnU-Net writes the lower
  bound ``- need_to_pad // 2``, which Python evaluates as ``(-need_to_pad) // 2``: one voxel
  further out than ``-(need_to_pad // 2)`` when ``need_to_pad`` is odd.
* **Foreground boxes**: the last ``B - round(B * (1 - oversample))`` samples of every batch
  (``round(B * 0.33)`` for the usual sizes: 2 of 7, 3 of 9, 1 of 2) pick a foreground class
  present in the case, then one of its voxels from ``CASE_locations.npz``, and put it at the box
  centre (clamped to the lower bound only, as nnU-Net does). A case without foreground falls
  back to a random box. ``probabilistic_oversampling=True`` instead forces each sample with
  probability ``oversample``.

Regions of the box outside the case are padded with 0 in the image and 0 (background) in the
labels. nnU-Net pads labels with -1 and turns -1 into 0 at the end of its augmentation; the only
difference is a voxel-thin band at the case border after rotation, where -1 and 0 were separate
candidates of the label interpolation.

For the ``2d`` configuration of a 3D cache (arrays ``(C, Z, Y, X)``, 2-element patch) the box is
``(1, *patch)``: a slice along axis 0 (a foreground slice for oversampled samples), returned
without the singleton axis. True 2D caches (``(C, H, W)``) are cropped directly.

Public API (used by the trainer)::

    sampler = PatchSampler(dataset, patch_size, batch_size, oversample_foreground=0.33,
                           probabilistic_oversampling=False, initial_patch_size=None)
    batch = sampler.sample_batch(rng)   # rng: np.random.Generator
    # {"data": float32 (B, C, *initial_patch), "target": int16 (B, 1, *initial_patch),
    #  "keys": [case names]}   (numpy arrays)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from unetkit.training.dataset import CachedDataset


def forced_foreground(batch_size: int, oversample: float) -> list[bool]:
    """Which positions of a batch must contain foreground (nnU-Net's rounding, last samples)."""
    n_random = round(batch_size * (1 - oversample))
    return [j >= n_random for j in range(batch_size)]


def crop_and_pad(array: np.ndarray, lower: Sequence[int], size: Sequence[int], out: np.ndarray) -> None:
    """Copy ``array[:, lower:lower+size]`` into ``out`` (``(C, *size)``), zero where outside.

    ``lower`` may be negative and ``lower + size`` may exceed the array: the part of the box
    inside the array is copied, the rest of ``out`` is set to 0. One copy, no temporary.
    """
    src, dst = [slice(None)], [slice(None)]
    for lo, sz, sh in zip(lower, size, array.shape[1:]):
        a, b = max(lo, 0), min(lo + sz, sh)
        if b <= a:  # box entirely outside along this axis
            out[...] = 0
            return
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    covers_all = all(d.start == 0 and d.stop == sz for d, sz in zip(dst[1:], size))
    if not covers_all:
        out[...] = 0
    out[tuple(dst)] = array[tuple(src)]


class PatchSampler:
    """Draw training batches of sampling-size patches from a :class:`CachedDataset`.

    Args:
        dataset: the cases to draw from.
        patch_size: the network's patch (the final patch after augmentation), 2 or 3 values.
        batch_size: samples per batch.
        oversample_foreground: share of each batch forced to contain foreground (nnU-Net: 0.33).
        probabilistic_oversampling: force each sample with that probability instead of the
            deterministic last-samples rule.
        initial_patch_size: the sampling patch (from
            :func:`unetkit.training.augmentation.compute_initial_patch_size`); defaults to
            ``patch_size`` (validation: no spatial augmentation).
    """

    def __init__(self, dataset: CachedDataset, patch_size: Sequence[int], batch_size: int,
                 oversample_foreground: float = 0.33, probabilistic_oversampling: bool = False,
                 initial_patch_size: Sequence[int] | None = None):
        self.dataset = dataset
        self.final_patch = tuple(int(p) for p in patch_size)
        self.initial_patch = tuple(int(p) for p in (initial_patch_size or patch_size))
        if len(self.final_patch) not in (2, 3) or len(self.initial_patch) != len(self.final_patch):
            raise ValueError(f"patch_size {patch_size} and initial_patch_size {initial_patch_size} must both "
                             "have 2 or 3 entries")
        if any(i < f for i, f in zip(self.initial_patch, self.final_patch)):
            raise ValueError(f"initial_patch_size {self.initial_patch} is smaller than patch_size "
                             f"{self.final_patch}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise ValueError(f"oversample_foreground must be in [0, 1], got {oversample_foreground}")
        self.batch_size = int(batch_size)
        self.oversample = float(oversample_foreground)
        self.probabilistic = bool(probabilistic_oversampling)
        self._forced = forced_foreground(self.batch_size, self.oversample)
        self._num_channels: int | None = None

    # --------------------------------------------------------------------------- geometry

    def _box_shapes(self, spatial_ndim: int) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
        """``(sampling box, final box, is_pseudo_2d)`` in the case's own dimensionality."""
        n = len(self.initial_patch)
        if spatial_ndim == n:
            return self.initial_patch, self.final_patch, False
        if spatial_ndim == 3 and n == 2:
            return (1, *self.initial_patch), (1, *self.final_patch), True
        raise ValueError(f"a {n}D patch {self.final_patch} cannot be sampled from {spatial_ndim}D arrays")

    def bbox_lower(self, shape: Sequence[int], box: Sequence[int], final: Sequence[int], force_fg: bool,
                   class_locations: dict[int, np.ndarray], rng: np.random.Generator) -> list[int]:
        """Lower corner of the sampling box in a case of spatial ``shape`` (may be negative)."""
        dim = len(shape)
        need = [b - f for b, f in zip(box, final)]
        for d in range(dim):
            # a case smaller than the box: pad enough that the box fits, split over both sides
            if need[d] + shape[d] < box[d]:
                need[d] = box[d] - shape[d]
        lbs = [(-need[d]) // 2 for d in range(dim)]  # floor, as nnU-Net's ``- need_to_pad[d] // 2``
        ubs = [shape[d] + need[d] // 2 + need[d] % 2 - box[d] for d in range(dim)]
        if force_fg:
            eligible = [k for k in sorted(class_locations) if len(class_locations[k]) > 0]
            if eligible:
                k = eligible[int(rng.integers(len(eligible)))]
                voxels = class_locations[k]
                voxel = voxels[int(rng.integers(len(voxels)))]
                if len(voxel) != dim:
                    raise ValueError(f"class locations have {len(voxel)} coordinates, the arrays {dim} axes")
                return [max(lbs[d], int(voxel[d]) - box[d] // 2) for d in range(dim)]
        return [int(rng.integers(lbs[d], ubs[d] + 1)) for d in range(dim)]

    # --------------------------------------------------------------------------- sampling

    def sample_batch(self, rng: np.random.Generator) -> dict:
        """One batch: ``{"data": float32 (B,C,*initial_patch), "target": int16 (B,1,*initial_patch),
        "keys": [names]}``; every random choice comes from ``rng``."""
        cases = self.dataset.cases
        picks = rng.integers(len(cases), size=self.batch_size)
        keys = [cases[int(i)] for i in picks]
        data_out: np.ndarray | None = None
        seg_channels = 1 if getattr(self.dataset, "previous_stage", None) is None else 2  # cascade: + previous stage
        seg_out = np.empty((self.batch_size, seg_channels, *self.initial_patch), dtype=np.int16)
        for j, name in enumerate(keys):
            force = (rng.random() < self.oversample) if self.probabilistic else self._forced[j]
            data, seg = self.dataset.arrays(name)
            previous = self.dataset.previous(name, data.shape[1:]) if seg_channels == 2 else None
            if data_out is None:
                data_out = np.empty((self.batch_size, data.shape[0], *self.initial_patch), dtype=np.float32)
            elif data.shape[0] != data_out.shape[1]:
                raise ValueError(f"case {name!r} has {data.shape[0]} channels, earlier cases {data_out.shape[1]}")
            box, final, pseudo2d = self._box_shapes(data.ndim - 1)
            locations = self.dataset.class_locations(name) if force else {}
            lower = self.bbox_lower(data.shape[1:], box, final, force, locations, rng)
            for source, out in ((data, data_out[j]), (seg, seg_out[j][:1]), (previous, seg_out[j][1:])):
                if source is not None:  # previous: a cascade's extra label channel
                    crop_and_pad(source, lower, box, out[:, None] if pseudo2d else out)
        assert data_out is not None
        return {"data": data_out, "target": seg_out, "keys": keys}
