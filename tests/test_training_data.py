"""Training data side: cache reading, patch sampling with oversampling, background loading.

Caches are written here directly in the documented format (docs/architecture.md,
"Preprocessed cache"), so these tests do not depend on the preprocessing stage.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.data.errors import DataError
from unetkit.training.dataset import CachedDataset
from unetkit.training.loader import BatchLoader, TrainingBatchFn, WorkerError, make_training_batch_fn
from unetkit.training.sampling import PatchSampler, crop_and_pad, forced_foreground


# --------------------------------------------------------------------------- cache writer

def write_case(folder: Path, name: str, image: np.ndarray, label: np.ndarray) -> None:
    """One cache case: CASE.npy (C,*s) float32, CASE_seg.npy (1,*s) int16, locations, CASE.json last."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{name}.npy", image.astype(np.float32))
    np.save(folder / f"{name}_seg.npy", label[None].astype(np.int16))
    classes = sorted(int(k) for k in np.unique(label) if k > 0)
    np.savez(folder / f"{name}_locations.npz",
             **{f"class_{k}": np.argwhere(label == k).astype(np.int64) for k in classes})
    (folder / f"{name}.json").write_text(json.dumps({"case": name, "foreground_classes": classes,
                                                     "shape_after_resampling": list(label.shape)}))


def blob_cache(folder: Path, n: int, shape: tuple[int, ...], seed: int = 0, channels: int = 1) -> Path:
    """Cases with a small foreground cube (labels 1 and 2) somewhere in noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.normal(size=(channels, *shape)).astype(np.float32)
        label = np.zeros(shape, np.int16)
        lo = [int(rng.integers(0, max(1, s - 3))) for s in shape]
        label[tuple(slice(a, a + 3) for a in lo)] = 1
        label[tuple(slice(a, a + 1) for a in lo)] = 2
        write_case(folder, f"case_{i:03d}", image, label)
    return folder


@pytest.fixture
def cache3d(tmp_path) -> Path:
    return blob_cache(tmp_path / "3d_fullres", 6, (30, 36, 28))


# --------------------------------------------------------------------------- dataset

def test_dataset_lists_finished_cases_and_loads_memmaps(cache3d):
    (cache3d / "unfinished.npy").write_bytes(b"")          # no CASE.json: not finished
    (cache3d / "summary.json").write_text("{}")             # a JSON without arrays: not a case
    ds = CachedDataset(cache3d)
    assert ds.cases == [f"case_{i:03d}" for i in range(6)]
    data, seg, props, locs = ds.load("case_002")
    assert isinstance(data, np.memmap) and isinstance(seg, np.memmap)
    assert data.shape == (1, 30, 36, 28) and data.dtype == np.float32
    assert seg.shape == (1, 30, 36, 28) and seg.dtype == np.int16
    assert props["case"] == "case_002"
    assert set(locs) == {1, 2} and locs[1].shape[1] == 3 and locs[1].dtype == np.int64
    assert all(seg[0][tuple(v)] == 1 for v in locs[1])


def test_dataset_names_missing_cases(cache3d):
    with pytest.raises(DataError, match="case_999"):
        CachedDataset(cache3d, ["case_000", "case_999"])
    assert CachedDataset(cache3d, ["case_003"]).cases == ["case_003"]


def test_dataset_rejects_mismatched_shapes(cache3d):
    np.save(cache3d / "case_001_seg.npy", np.zeros((1, 5, 5, 5), np.int16))
    with pytest.raises(DataError, match="does not match"):
        CachedDataset(cache3d).load("case_001")


# --------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("batch_size,forced", [(2, 1), (7, 2), (9, 3), (12, 4), (1, 0)])
def test_forced_foreground_follows_nnunet_rounding(batch_size, forced):
    flags = forced_foreground(batch_size, 0.33)
    assert sum(flags) == forced and flags == sorted(flags)  # the last ones


def test_box_bounds_floor_the_negative_half_as_nnunet(cache3d):
    """nnU-Net's data loader bounds a box start by ``lbs = - need_to_pad // 2`` (Python: floor of the
    negative half) and ``ubs = shape + need_to_pad // 2 + need_to_pad % 2 - patch``. Worked out by hand
    for a Hippocampus-sized case (36, 50, 35), final patch (40, 56, 40), sampling patch (73, 80, 64):
    need_to_pad = (33, 24, 24) is widened to box - shape = (37, 30, 29) because the case is smaller
    than the box, so lbs = (-19, -15, -15) and ubs = (36+18+1-73, 50+15-80, 35+14+1-64) = (-18, -15, -14).
    """
    sampler = PatchSampler(CachedDataset(cache3d), (40, 56, 40), 2, initial_patch_size=(73, 80, 64))
    shape, box, final = (36, 50, 35), (73, 80, 64), (40, 56, 40)
    rng = np.random.default_rng(0)
    starts = np.array([sampler.bbox_lower(shape, box, final, False, {}, rng) for _ in range(200)])
    assert [sorted(set(starts[:, d])) for d in range(3)] == [[-19, -18], [-15], [-15, -14]]
    # a forced box is centred on its voxel (box // 2 = (36, 40, 32)) unless that goes below lbs
    voxel = np.array([[17, 25, 17]])
    assert sampler.bbox_lower(shape, box, final, True, {1: voxel}, rng) == [-19, -15, -15]
    assert sampler.bbox_lower(shape, box, final, True, {1: voxel - 1}, rng) == [-19, -15, -15]  # clamped
    assert sampler.bbox_lower(shape, box, final, True, {1: voxel + 2}, rng) == [-17, -13, -13]


def test_crop_and_pad_outside_is_zero():
    arr = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5) + 1
    out = np.full((2, 6, 3), -7, np.float32)
    crop_and_pad(arr, (-1, 3), (6, 3), out)
    assert np.array_equal(out[:, 1:5, :2], arr[:, :, 3:5])
    assert (out[:, 0] == 0).all() and (out[:, 5] == 0).all() and (out[:, :, 2] == 0).all()


def test_sampler_shapes_and_oversampling(cache3d):
    ds = CachedDataset(cache3d)
    sampler = PatchSampler(ds, (16, 16, 16), 7, initial_patch_size=(24, 26, 20))
    rng = np.random.default_rng(0)
    for _ in range(10):
        batch = sampler.sample_batch(rng)
        assert batch["data"].shape == (7, 1, 24, 26, 20) and batch["data"].dtype == np.float32
        assert batch["target"].shape == (7, 1, 24, 26, 20) and batch["target"].dtype == np.int16
        assert len(batch["keys"]) == 7 and set(batch["keys"]) <= set(ds.cases)
        # the forced samples have foreground at the centre of the final patch (the crop keeps it)
        for j in (5, 6):
            centre = batch["target"][j, 0, 4:20, 5:21, 2:18]
            assert (centre > 0).any()


def test_foreground_share_matches_one_third(tmp_path):
    # a single foreground voxel in a big volume: random patches almost never contain it
    folder = tmp_path / "c"
    label = np.zeros((80, 80, 80), np.int16)
    label[70, 5, 60] = 1
    write_case(folder, "only", np.zeros((1, 80, 80, 80), np.float32), label)
    sampler = PatchSampler(CachedDataset(folder), (8, 8, 8), 9)
    rng = np.random.default_rng(1)
    with_fg = np.array([[bool((b > 0).any()) for b in sampler.sample_batch(rng)["target"]] for _ in range(20)])
    assert with_fg[:, 6:].all()                      # last round(9 * 0.33) = 3 always
    assert with_fg[:, :6].mean() < 0.1               # the others only by chance


def test_probabilistic_oversampling(tmp_path):
    folder = tmp_path / "c"
    label = np.zeros((60, 60, 60), np.int16)
    label[50, 5, 40] = 1
    write_case(folder, "only", np.zeros((1, 60, 60, 60), np.float32), label)
    sampler = PatchSampler(CachedDataset(folder), (8, 8, 8), 10, oversample_foreground=0.5,
                           probabilistic_oversampling=True)
    rng = np.random.default_rng(2)
    share = np.mean([(b > 0).any() for _ in range(30) for b in sampler.sample_batch(rng)["target"]])
    assert 0.35 < share < 0.65


def test_small_case_is_padded(tmp_path):
    folder = tmp_path / "small"
    image = np.full((2, 5, 6, 7), 3.0, np.float32)
    label = np.ones((5, 6, 7), np.int16)
    write_case(folder, "tiny", image, label)
    sampler = PatchSampler(CachedDataset(folder), (8, 10, 12), 3)
    batch = sampler.sample_batch(np.random.default_rng(0))
    assert batch["data"].shape == (3, 2, 8, 10, 12)
    for j in range(3):
        data, seg = batch["data"][j], batch["target"][j, 0]
        # the whole case fits: exactly its voxels are 3 / label 1, the padding is 0 / background
        assert (data == 3).sum() == 2 * 5 * 6 * 7 and (data[data != 3] == 0).all()
        assert (seg == 1).sum() == 5 * 6 * 7 and (seg[seg != 1] == 0).all()


def test_2d_configuration_of_3d_cache_slices_axis0(tmp_path):
    folder = tmp_path / "2d"
    z = 12
    image = np.broadcast_to(np.arange(1, z + 1, dtype=np.float32)[:, None, None], (z, 20, 20))[None].copy()
    label = np.zeros((z, 20, 20), np.int16)
    label[7, 8:12, 8:12] = 1  # foreground only in slice 7
    write_case(folder, "vol", image, label)
    sampler = PatchSampler(CachedDataset(folder), (16, 16), 6)
    batch = sampler.sample_batch(np.random.default_rng(0))
    assert batch["data"].shape == (6, 1, 16, 16) and batch["target"].shape == (6, 1, 16, 16)
    for j in range(6):
        values = np.unique(batch["data"][j])
        assert len(values[values != 0]) == 1  # one slice (plus padding)
    forced = batch["data"][4:]                # last round(6 * 0.33) = 2
    assert all(np.unique(f[f != 0]).tolist() == [8.0] for f in forced)
    assert all((t > 0).any() for t in batch["target"][4:])


def test_true_2d_cache(tmp_path):
    folder = tmp_path / "pics"
    rng = np.random.default_rng(0)
    for i in range(3):
        label = np.zeros((40, 50), np.int16)
        label[10:14, 30:35] = 1
        write_case(folder, f"p{i}", rng.normal(size=(3, 40, 50)).astype(np.float32), label)
    sampler = PatchSampler(CachedDataset(folder), (32, 32), 3, initial_patch_size=(45, 45))
    batch = sampler.sample_batch(rng)
    assert batch["data"].shape == (3, 3, 45, 45) and batch["target"].shape == (3, 1, 45, 45)
    assert (batch["target"][2] > 0).any()


def test_sampling_is_reproducible(cache3d):
    sampler = PatchSampler(CachedDataset(cache3d), (16, 16, 16), 4)
    a = sampler.sample_batch(np.random.default_rng(5))
    b = sampler.sample_batch(np.random.default_rng(5))
    assert a["keys"] == b["keys"] and np.array_equal(a["data"], b["data"])


# --------------------------------------------------------------------------- loader

class FailingFn:
    """Raises on one index (module level so that worker processes can unpickle it)."""

    def __init__(self, bad: int):
        self.bad = bad

    def __call__(self, index: int) -> dict:
        if index == self.bad:
            raise ValueError(f"broken case at index {index}")
        return {"data": torch.full((2, 3), float(index)), "keys": [str(index)]}


class SlowFn:
    def __call__(self, index: int) -> dict:
        time.sleep(0.05 if index < 2 else 30)
        return {"data": torch.zeros(4), "keys": [str(index)]}


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(")")[-1].split()[0] == "Z":
                    return True  # a zombie is dead, only not yet reaped by its parent
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def batch_fn(cache3d) -> TrainingBatchFn:
    conf = {"patch_size": [16, 16, 16], "batch_size": 3}
    return make_training_batch_fn(cache3d, conf, None, seed=123)


def test_training_batch_fn_output(batch_fn):
    batch = batch_fn(0)
    assert batch["data"].shape == (3, 1, 16, 16, 16) and batch["data"].dtype == torch.float32
    assert batch["target"].shape == (3, 1, 16, 16, 16) and batch["target"].dtype == torch.int16
    assert len(batch["keys"]) == 3 and batch["index"] == 0


def test_same_batches_with_0_1_2_workers_and_resume(batch_fn):
    streams = {}
    for workers in (0, 1, 2):
        with BatchLoader(batch_fn, num_workers=workers, prefetch=2) as loader:
            streams[workers] = [next(loader) for _ in range(4)]
            assert loader.wait_seconds > 0
    with BatchLoader(batch_fn, num_workers=2, start_index=2) as loader:
        resumed = [next(loader) for _ in range(2)]
    for workers in (1, 2):
        for a, b in zip(streams[0], streams[workers]):
            assert a["keys"] == b["keys"] and a["index"] == b["index"]
            assert torch.equal(a["data"], b["data"]) and torch.equal(a["target"], b["target"])
    for a, b in zip(streams[0][2:], resumed):
        assert a["index"] == b["index"] and torch.equal(a["data"], b["data"])
    assert not torch.equal(streams[0][0]["data"], streams[0][1]["data"])


def test_worker_exception_carries_traceback():
    loader = BatchLoader(FailingFn(bad=1), num_workers=2)
    pids = loader.worker_pids
    assert torch.equal(next(loader)["data"], torch.zeros(2, 3))
    with pytest.raises(WorkerError) as info:
        next(loader)
    text = str(info.value)
    assert "Traceback" in text and "ValueError: broken case at index 1" in text and "__call__" in text
    assert all(_gone(pid) for pid in pids)  # the loader shut itself down


def test_in_process_exception_propagates():
    loader = BatchLoader(FailingFn(bad=0), num_workers=0)
    with pytest.raises(ValueError, match="broken case"):
        next(loader)


def test_killed_worker_is_detected_quickly():
    loader = BatchLoader(SlowFn(), num_workers=1, prefetch=1)
    next(loader)
    os.kill(loader.worker_pids[0], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="SIGKILL"):
        next(loader)
        next(loader)
    assert time.monotonic() - t0 < 5.0


def test_close_and_garbage_collection_leave_no_children(batch_fn):
    loader = BatchLoader(SlowFn(), num_workers=2)
    pids = loader.worker_pids
    next(loader)
    loader.close()
    assert all(_gone(pid) for pid in pids)
    with pytest.raises(StopIteration):
        next(loader)

    loader = BatchLoader(batch_fn, num_workers=1)
    next(loader)
    pids = loader.worker_pids
    del loader
    gc.collect()
    assert all(_gone(pid) for pid in pids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_augmentation_runs_in_main_process(cache3d):
    conf = {"patch_size": [16, 16, 16], "batch_size": 3}
    fn = make_training_batch_fn(cache3d, conf, None, seed=1, device="cuda")
    with BatchLoader(fn, num_workers=1) as loader:
        batch = next(loader)
    assert batch["data"].is_cuda and batch["target"].is_cuda and batch["data"].shape == (3, 1, 16, 16, 16)
    cpu = make_training_batch_fn(cache3d, conf, None, seed=1)
    assert batch["keys"] == cpu(0)["keys"]
