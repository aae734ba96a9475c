"""Background batch loading that cannot deadlock or die silently, plus the training batch function.

:class:`BatchLoader` yields ``make_batch(i)`` for ``i = start_index, start_index + 1, ...`` in
order. Batch ``i`` is a pure function of ``i`` (the batch function seeds itself from
``(seed, i)``), so the stream is identical with 0, 1 or 8 workers, and resuming training at
iteration ``i`` continues the very same stream.

Design:

* **Start method: forkserver.** ``fork`` copies a parent that may hold OpenMP/MKL thread pools
  or a CUDA context; a child then deadlocks in its first parallel op or cannot use CUDA.
  ``spawn`` is safe but re-imports torch for every worker (seconds each). ``forkserver``
  is as safe as ``spawn`` (the server is a fresh single-threaded process) and, because the
  server preloads torch and this module, each further worker is a cheap fork of it. As with
  ``spawn``, ``make_batch`` must be picklable (a module-level class, e.g.
  :class:`TrainingBatchFn`).
* **Ordering and back-pressure.** Worker ``w`` makes batches ``i`` with
  ``(i - start) % num_workers == w``; the main process keeps at most ``prefetch`` batches
  outstanding per worker and reads them back in order, so memory stays bounded and no queue
  can fill up and block a writer.
* **Transport.** Batches are dicts of numpy arrays / torch tensors; torch's multiprocessing
  reductions put tensors in shared memory, so a batch crosses processes without being copied
  through a pipe. Workers use one torch thread each (they run beside the training step).
* **Watchdog.** While waiting, the main process polls every 0.1 s whether the worker is alive.
  A worker that raises sends its traceback text; the main process raises
  :class:`WorkerError` with it. A worker that is killed (SIGKILL, out-of-memory killer) is
  reported as :class:`WorkerError` within about a second, with its exit code. Workers exit on
  their own when the main process disappears, and ignore SIGINT (Ctrl-C goes to the main
  process, which shuts them down).
* **Shutdown.** :meth:`BatchLoader.close` (also on context-manager exit, on any exception or
  KeyboardInterrupt raised while iterating, and at garbage collection) asks workers to stop,
  joins them briefly, then terminates and finally kills the stragglers: no child survives.
* ``wait_seconds`` is the total time ``__next__`` spent waiting for data (with
  ``num_workers=0``: the time making batches in-process), for the data-waiting share of step
  time.

Public API (used by the trainer)::

    fn = make_training_batch_fn(dataset_folder, plans_configuration, batch_size, seed,
                                case_names=fold_train_cases)
    with BatchLoader(fn, num_workers=2, prefetch=2, start_index=iteration) as loader:
        for batch in loader:          # {"data", "target", "keys", "index"}
            ...
        loader.wait_seconds

With ``device="cuda"`` the batch function only samples in the workers and augments on the GPU in
the main process: ``BatchLoader`` calls ``make_batch.finalize(batch)`` there when the batch
function has such a method (or ``finalize=`` is given).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.multiprocessing  # noqa: F401  registers tensor reductions (shared memory) with ForkingPickler
from multiprocessing.reduction import ForkingPickler

#: Seconds between liveness checks while waiting for a worker.
POLL_SECONDS = 0.1
#: Seconds a worker may take to stop after being asked, before it is terminated, then killed.
JOIN_SECONDS = 2.0

_STOP = None  # task-queue sentinel


class WorkerError(RuntimeError):
    """A data-loading worker failed; the message carries the worker's traceback or exit code."""


def _context() -> mp.context.BaseContext:
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        ctx = mp.get_context("forkserver")
        # Only effective before the server starts; harmless afterwards.
        ctx.set_forkserver_preload(["torch", "numpy", "unetkit.training.loader"])
        return ctx
    return mp.get_context("spawn")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is not running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed; the out-of-memory killer does this when RAM runs out)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _worker_main(worker_id: int, make_batch: Callable[[int], dict], tasks: Any, results: Any,
                 num_threads: int) -> None:
    """Worker loop: take an index, put ``("ok", i, pickled batch)`` or ``("error", i, traceback)``.

    The batch is pickled here, inside the ``try``, rather than by the queue's feeder thread:
    an unpicklable batch then becomes a reported error instead of a message printed in the
    worker and a main process waiting forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(num_threads)
    parent = mp.parent_process()
    while True:
        try:
            index = tasks.get(timeout=1.0)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                results.cancel_join_thread()
                return
            continue
        if index is _STOP:
            results.cancel_join_thread()  # the main process is closing; unread batches do not matter
            return
        try:
            payload = bytes(ForkingPickler.dumps(make_batch(index)))
        except BaseException:  # report everything, including SystemExit from user code
            results.put(("error", index, f"worker {worker_id} (pid {os.getpid()}) failed making batch "
                                         f"{index}:\n{traceback.format_exc()}"))
            results.close()
            results.join_thread()  # make sure the report leaves before the process does
            return
        results.put(("ok", index, payload))


class BatchLoader:
    """Iterator over ``make_batch(i)``, ``i = start_index, start_index + 1, ...`` (endless).

    Args:
        make_batch: picklable callable ``index -> batch dict`` (with workers).
        num_workers: background processes; 0 makes batches in the calling process.
        prefetch: batches in flight per worker.
        start_index: first batch index (resume at the iteration reached).
        finalize: called on each batch in the main process (e.g. GPU augmentation); defaults
            to ``make_batch.finalize`` when the batch function defines it.
        worker_threads: torch threads per worker, and for making a batch in the calling process
            (``num_workers=0``) too: oneDNN's depthwise convolutions (the Gaussian blur) round
            differently with other thread counts, and the batches must not depend on the workers.
    """

    def __init__(self, make_batch: Callable[[int], dict], num_workers: int, prefetch: int = 2,
                 start_index: int = 0, finalize: Callable[[dict], dict] | None = None,
                 worker_threads: int = 1):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.make_batch = make_batch
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.next_index = int(start_index)
        self.finalize = finalize if finalize is not None else getattr(make_batch, "finalize", None)
        self.worker_threads = int(worker_threads)
        self.wait_seconds = 0.0
        self.batches = 0
        self._closed = False
        self._workers: list[Any] = []
        self._tasks: list[Any] = []
        self._results: list[Any] = []
        self._sent = int(start_index)  # next index to hand out
        self._start = int(start_index)
        if self.num_workers:
            self._start_workers(worker_threads)

    # ----------------------------------------------------------------------------- workers

    def _start_workers(self, worker_threads: int) -> None:
        ctx = _context()
        try:
            for w in range(self.num_workers):
                tasks, results = ctx.Queue(), ctx.Queue()
                proc = ctx.Process(target=_worker_main, name=f"unetkit-data-{w}",
                                   args=(w, self.make_batch, tasks, results, worker_threads), daemon=True)
                proc.start()
                self._tasks.append(tasks)
                self._results.append(results)
                self._workers.append(proc)
            for _ in range(self.prefetch * self.num_workers):
                self._send_next()
        except BaseException:
            self.close()
            raise

    def _worker_of(self, index: int) -> int:
        return (index - self._start) % self.num_workers

    def _send_next(self) -> None:
        self._tasks[self._worker_of(self._sent)].put(self._sent)
        self._sent += 1

    def _receive(self, index: int) -> dict:
        w = self._worker_of(index)
        proc, results = self._workers[w], self._results[w]
        while True:
            try:
                kind, got, payload = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not proc.is_alive():
                    # it may have put its last message just before dying: look once more
                    try:
                        kind, got, payload = results.get(timeout=POLL_SECONDS)
                    except queue.Empty:
                        raise WorkerError(f"data-loading worker {w} (pid {proc.pid}) {_describe_exit(proc.exitcode)} "
                                          f"while making batch {index}; training cannot continue "
                                          "without its batches") from None
                else:
                    continue
            except (EOFError, OSError, ConnectionError) as exc:
                raise WorkerError(f"lost the connection to data-loading worker {w} (pid {proc.pid}, "
                                  f"{_describe_exit(proc.exitcode)}): {exc}") from exc
            if kind == "error":
                raise WorkerError(payload)
            if got != index:
                raise WorkerError(f"worker {w} returned batch {got}, expected {index}")
            try:
                return ForkingPickler.loads(payload)
            except Exception as exc:  # shared memory of a worker that died meanwhile
                raise WorkerError(f"cannot receive batch {index} from data-loading worker {w} "
                                  f"(pid {proc.pid}, {_describe_exit(proc.exitcode)}): {exc!r}") from exc

    # ----------------------------------------------------------------------------- iteration

    def __iter__(self) -> "BatchLoader":
        return self

    def __next__(self) -> dict:
        if self._closed:
            raise StopIteration
        index = self.next_index
        t0 = time.perf_counter()
        try:
            if self.num_workers == 0:
                batch = self._make_in_process(index)
            else:
                batch = self._receive(index)
                self._send_next()
        except BaseException:
            self.close()
            raise
        self.wait_seconds += time.perf_counter() - t0
        self.next_index += 1
        self.batches += 1
        if self.finalize is not None:
            batch = self.finalize(batch)
        return batch

    def _make_in_process(self, index: int) -> dict:
        """``make_batch(index)`` here, with the workers' thread count (then restored)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.worker_threads)
        try:
            return self.make_batch(index)
        finally:
            torch.set_num_threads(threads)

    # ----------------------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Stop and reap every worker (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for tasks in self._tasks:
            try:
                tasks.put(_STOP)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + JOIN_SECONDS
        for proc in self._workers:
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self._workers:
            if proc.is_alive():
                proc.terminate()
        for proc in self._workers:
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        for q in self._tasks + self._results:
            try:
                q.cancel_join_thread()
                q.close()
            except (OSError, ValueError):
                pass
        for proc in self._workers:
            try:
                proc.close()
            except ValueError:
                pass
        self._workers, self._tasks, self._results = [], [], []

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._workers]

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- batch function

def batch_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of batch ``index``: independent streams from ``(seed, index, stream)``."""
    return np.random.default_rng([int(seed), int(index), int(stream)])


class TrainingBatchFn:
    """``index -> batch``: sample patches and augment them (picklable for worker processes).

    Build it with :func:`make_training_batch_fn`. The dataset is opened lazily in each process,
    so pickling sends only paths and numbers. With a CPU ``device`` everything happens in
    ``__call__``; with a GPU ``device``, ``__call__`` only samples and :meth:`finalize`
    (called by :class:`BatchLoader` in the main process) augments on the GPU.
    """

    def __init__(self, dataset_folder: str | Path, patch_size: Sequence[int], batch_size: int, seed: int,
                 case_names: Sequence[str] | None = None, augment: bool = True,
                 oversample_foreground: float = 0.33, probabilistic_oversampling: bool = False,
                 device: str = "cpu", augmentation: Any = None, previous_stage: str | Path | None = None,
                 previous_labels: Sequence[int] = ()):
        from unetkit.training.augmentation import default_augmentation

        self.dataset_folder = str(dataset_folder)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.case_names = None if case_names is None else list(case_names)
        self.augment = bool(augment)
        self.oversample_foreground = float(oversample_foreground)
        self.probabilistic_oversampling = bool(probabilistic_oversampling)
        self.device = str(device)
        self.config = augmentation if augmentation is not None else default_augmentation(self.patch_size)
        # Cascade: the previous stage's predictions become one-hot input channels (cascade_augmentation).
        self.previous_stage = None if previous_stage is None else str(previous_stage)
        self.previous_labels = [int(v) for v in previous_labels]
        self._sampler = None
        if not self.on_cpu:
            # only the sampling happens in __call__; bind finalize for BatchLoader to find
            self.finalize = self._finalize

    @property
    def on_cpu(self) -> bool:
        return torch.device(self.device).type == "cpu"

    @property
    def initial_patch_size(self) -> tuple[int, ...]:
        return self.config.initial_patch_size if self.augment else self.patch_size

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sampler"] = None
        state.pop("finalize", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if not self.on_cpu:
            self.finalize = self._finalize

    def sampler(self):
        """The process-local :class:`PatchSampler` (opened on first use)."""
        if self._sampler is None:
            from unetkit.training.dataset import CachedDataset
            from unetkit.training.sampling import PatchSampler

            ds = CachedDataset(self.dataset_folder, self.case_names, previous_stage=self.previous_stage)
            self._sampler = PatchSampler(ds, self.patch_size, self.batch_size, self.oversample_foreground,
                                         self.probabilistic_oversampling, self.initial_patch_size)
        return self._sampler

    def sample(self, index: int) -> dict:
        batch = self.sampler().sample_batch(batch_rng(self.seed, index, 0))
        batch["index"] = int(index)
        return batch

    def _augment(self, batch: dict, device: str) -> dict:
        from unetkit.training.augmentation import augment_batch, crop_batch

        if self.augment:
            batch = augment_batch(batch, self.config, batch_rng(self.seed, batch["index"], 1), device=device)
        else:
            batch = crop_batch(batch, self.patch_size, device=device)
        if self.previous_stage is None:
            return batch
        from unetkit.training.cascade_augmentation import previous_stage_to_data

        rng = batch_rng(self.seed, batch["index"], 2) if self.augment else None
        return previous_stage_to_data(batch, self.previous_labels, rng)

    def __call__(self, index: int) -> dict:
        batch = self.sample(index)
        if self.on_cpu:
            return self._augment(batch, "cpu")
        # GPU: ship numpy-free tensors; augmentation happens in finalize on the device
        batch["data"] = torch.from_numpy(batch["data"])
        batch["target"] = torch.from_numpy(batch["target"])
        return batch

    def _finalize(self, batch: dict) -> dict:
        return self._augment(batch, self.device)


def make_training_batch_fn(dataset_folder: str | Path, plans_configuration: dict, batch_size: int | None,
                           seed: int, case_names: Sequence[str] | None = None, augment: bool = True,
                           oversample_foreground: float = 0.33, probabilistic_oversampling: bool = False,
                           device: str = "cpu", previous_stage: str | Path | None = None,
                           previous_labels: Sequence[int] = (), **augmentation_overrides: Any) -> TrainingBatchFn:
    """Compose sampler and augmentation into the batch function the trainer gives ``BatchLoader``.

    Args:
        dataset_folder: ``WORKDIR/NAME/preprocessed/CONFIG``.
        plans_configuration: the configuration's entry of ``plans.json`` (uses ``patch_size``
            and, when ``batch_size`` is None, ``batch_size``).
        batch_size: samples per batch (None: the plan's).
        seed: base seed; batch ``i`` is seeded from ``(seed, i)``.
        case_names: the fold's cases (None: all finished cases).
        augment: False for validation batches (centre crop of a patch-size box, no augmentation).
        oversample_foreground, probabilistic_oversampling: see :class:`PatchSampler`.
        device: where augmentation runs ("cuda" moves it to the GPU, in the main process).
        previous_stage: a cascade stage's ``predicted_next_stage`` folder; its label maps of
            ``previous_labels`` become extra one-hot input channels (nnU-Net's cascade transforms).
        **augmentation_overrides: fields of :class:`AugmentationConfig` (e.g.
            ``label_interpolation="nearest"``), applied on top of :func:`default_augmentation`.
    """
    from unetkit.training.augmentation import default_augmentation

    patch = tuple(int(p) for p in plans_configuration["patch_size"])
    bs = int(plans_configuration["batch_size"] if batch_size is None else batch_size)
    config = default_augmentation(patch, **augmentation_overrides)
    return TrainingBatchFn(dataset_folder, patch, bs, seed, case_names=case_names, augment=augment,
                           oversample_foreground=oversample_foreground,
                           probabilistic_oversampling=probabilistic_oversampling, device=device,
                           augmentation=config, previous_stage=previous_stage, previous_labels=previous_labels)
