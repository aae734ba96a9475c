"""The training loop: plain functions over a small state, every number from a TrainingConfig.

``train(workdir, dataset, configuration, fold, overrides)`` is what ``unetkit train`` runs:

1. read ``plans.json`` and the configuration entry; resolve the :class:`TrainingConfig`
   (defaults < the plan's ``training`` object < command line);
2. make or read ``splits.json`` and pick the fold's training and validation cases;
3. build the network from the model registry (the plan's architecture, or ``--arch``), the loss
   (:mod:`unetkit.training.loss`), SGD with Nesterov momentum and the polynomial schedule;
4. for each epoch: set the learning rate ``lr * (1 - epoch / epochs) ** 0.9``, run
   ``iterations_per_epoch`` training steps (forward, loss, backward, gradient-norm clipping,
   step; fp16 autocast with a gradient scaler on CUDA), then ``val_iterations`` validation
   batches accumulating hard TP/FP/FN per class for the pseudo-Dice, as nnU-Net's online
   evaluation; log, plot, and write ``checkpoint_latest`` (and ``checkpoint_best`` when the
   moving average of the pseudo-Dice improves);
5. write ``checkpoint_final``.

Determinism and resume: batch ``i`` of the run is a pure function of ``(seed, i)``
(:class:`unetkit.training.loader.BatchLoader`), the network is initialised from ``seed``, and a
checkpoint restores weights, optimizer state, gradient scaler, RNG states and the history. A run
killed at any moment and resumed with ``--resume`` continues from the last finished epoch and,
with ``--deterministic``, ends with the same weights as an uninterrupted run.

Distributed training (torchrun) is described in :mod:`unetkit.training.distributed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from unetkit.training.cascade import stage_labels as cascade_labels
from unetkit.training.checkpoint import (CheckpointError, checkpoint_files, latest_resumable, load_checkpoint,
                                         remove_checkpoint, save_checkpoint, set_rng_state, unwrap_model)
from unetkit.training.config import TrainingConfig, resolve_config
from unetkit.training.distributed import (DistContext, all_reduce_numpy, barrier, init_distributed,
                                          local_oversample, shutdown, split_batch)
from unetkit.training.loss import LossSpec, build_loss, dice_from_counts, online_tp_fp_fn
from unetkit.training.progress import (EpochBar, RunLog, TrainingHistory, format_seconds, plot_progress,
                                       write_progress_json)
from unetkit.training.splits import load_or_create_splits, select_fold
from unetkit.utils.atomic import atomic_write_json
from unetkit.utils.paths import WorkPaths

#: Validation batches are seeded from ``seed + VAL_SEED_OFFSET`` so they never repeat training batches.
VAL_SEED_OFFSET = 1_000_003


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says what to do."""


# ----------------------------------------------------------------------------- labels

@dataclass(frozen=True)
class LabelInfo:
    """What the plan's ``labels`` mean for the network's outputs."""

    num_heads: int
    ignore_label: int | None
    regions: tuple[tuple[int, ...], ...] | None   # region training: label values per output
    names: tuple[str, ...]                         # foreground classes / regions, output order
    regions_class_order: tuple[int, ...] | None = None


def label_info(plans: dict) -> LabelInfo:
    """Decode ``plans["labels"]``: plain labels (softmax) or regions (lists, sigmoid); ignore label."""
    labels: dict[str, Any] = plans["labels"]
    ignore = labels.get("ignore")
    if ignore is not None and not isinstance(ignore, int):
        raise TrainingError(f"plans.json: the 'ignore' label must be one integer, found {ignore!r}")
    entries = [(k, v) for k, v in labels.items() if k not in ("background", "ignore") and v != 0]
    has_regions = any(isinstance(v, list) for _, v in entries)
    names = tuple(k for k, _ in entries)
    order = plans.get("regions_class_order")
    if has_regions:
        regions = tuple(tuple(v) if isinstance(v, list) else (int(v),) for _, v in entries)
        num_heads = len(regions)
        return LabelInfo(num_heads, ignore, regions, names, tuple(order) if order else None)
    values = sorted({int(v) for _, v in entries})
    expected = list(range(1, len(values) + 1))
    if values != expected:
        raise TrainingError(f"plans.json: label values must be consecutive 0..{len(values)} (found {[0] + values}); "
                            "relabel the dataset (unetkit import) or declare regions")
    return LabelInfo(len(values) + 1, ignore, None, names)


# ----------------------------------------------------------------------------- building blocks

def poly_lr(config: TrainingConfig, epoch: int) -> float:
    """nnU-Net's polynomial decay: ``lr * (1 - epoch / epochs) ** exponent``, set once per epoch."""
    return config.lr * (1 - epoch / config.epochs) ** config.poly_exponent


def make_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (nnU-Net: momentum 0.99, weight decay 3e-5)."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def network_spec(plans: dict, entry: dict, config: TrainingConfig, num_heads: int,
                 log: Callable[..., None] = lambda *a: None) -> dict[str, Any]:
    """What to build: the registry model ``config.arch`` with the plan's topology.

    The returned dict (name, spatial_dims, in_channels, num_classes, deep_supervision, kwargs)
    is exactly what :func:`build_network` builds and what the checkpoint records, so inference
    rebuilds the same network. With ``--arch`` naming another family, keywords that family does
    not take are dropped (and logged), keeping the plan's stages, widths, kernels and strides;
    deep supervision is used only if the model has it.
    """
    from unetkit.models import model_info, model_patch, patch_keyword

    arch = entry["architecture"]
    info = model_info(config.arch)
    deep_supervision = bool(config.deep_supervision and info.deep_supervision)
    if config.deep_supervision and not info.deep_supervision:
        log(f"--arch {config.arch}: the model has no deep-supervision outputs; training on its single output")
    from unetkit.training.cascade import extra_channels

    # A cascade stage also sees the previous stage's one-hot prediction (one channel per foreground label).
    spec = {"name": config.arch, "spatial_dims": len(entry["patch_size"]),
            "in_channels": int(plans["num_input_channels"]) + extra_channels(plans, entry), "num_classes": int(num_heads),
            "deep_supervision": deep_supervision, "kwargs": dict(arch.get("kwargs", {}))}
    patch_kwarg = patch_keyword(config.arch)
    if patch_kwarg:  # fixed-size tables (ViT positions) are built for the patch it trains on
        spec["kwargs"][patch_kwarg] = model_patch(config.arch, entry["patch_size"])
    try:
        with torch.device("meta"):  # validates the keywords without allocating anything
            build_network(spec)
    except TypeError as exc:
        if config.arch == arch["name"]:
            raise TrainingError(f"plans.json: architecture {arch['name']!r} rejects the plan's kwargs: {exc}") from exc
        topology = ("n_stages", "features_per_stage", "kernel_sizes", "strides")
        spec["kwargs"] = {k: v for k, v in spec["kwargs"].items() if k in topology or k == patch_kwarg}
        log(f"--arch {config.arch}: dropped plan keywords it does not take ({exc}); kept {sorted(spec['kwargs'])}")
    return spec


def build_network(spec: dict[str, Any]) -> torch.nn.Module:
    """Build the network described by :func:`network_spec` (or a checkpoint's ``architecture``)."""
    from unetkit.models import create_model

    return create_model(spec["name"], spec["spatial_dims"], spec["in_channels"], spec["num_classes"],
                        deep_supervision=spec["deep_supervision"], **spec["kwargs"])


def apply_pretrained(network: torch.nn.Module, config: TrainingConfig, num_heads: int,
                     log: Callable[..., None]) -> dict[str, Any]:
    """Load ``config.pretrained`` into ``network`` (name- and shape-matched); returns the record to store."""
    from unetkit.training.pretrained import PretrainedError, load_source, transfer_weights

    try:
        source = load_source(config.pretrained)
        report = transfer_weights(network, source.weights, num_heads, config.pretrained_channels)
    except PretrainedError as exc:
        raise TrainingError(f"--pretrained {config.pretrained}: {exc}") from exc
    log(f"pretrained: {source.weights_path} (sha256 {source.sha256})")
    for line in report.lines():
        log(line)
    return {**source.record(), **report.to_dict()}


def update_encoder_freeze(network: torch.nn.Module, config: TrainingConfig, iteration: int,
                          log: Callable[..., None]) -> None:
    """Encoder frozen while ``iteration < freeze_encoder_iterations``, trainable from then on.

    Frozen parameters get no gradient, and SGD leaves a parameter without gradient untouched
    (no step, no weight decay, no momentum), so the encoder stays exactly as loaded.
    """
    from unetkit.training.pretrained import PretrainedError, encoder_parameters, set_encoder_trainable

    if not config.freeze_encoder_iterations:
        return
    frozen = iteration < config.freeze_encoder_iterations
    params = encoder_parameters(network)
    if params and all(p.requires_grad != frozen for p in params):
        return  # already in the wanted state
    try:
        count = set_encoder_trainable(network, not frozen)
    except PretrainedError as exc:
        raise TrainingError(str(exc)) from exc
    log(f"iteration {iteration}: encoder ({count} tensors) {'frozen' if frozen else 'trainable again'}")


def configure_determinism(config: TrainingConfig, device: torch.device) -> None:
    """Seed every generator; with ``deterministic``, ask torch for deterministic kernels."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2 ** 32)
    random.seed(config.seed)
    if device.type != "cuda":
        # CPU kernels give the same result for the same thread count; nothing to switch.
        return
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def autocast_context(device: torch.device, enabled: bool):
    """fp16 autocast on CUDA when enabled; nothing on the CPU (autocast there is slow)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def memory_format(config: TrainingConfig, device: torch.device, ndim: int) -> torch.memory_format:
    """The memory format for ``ndim``-dimensional batches (4: 2D, 5: 3D).

    Channels-last lets oneDNN's convolutions skip layout conversions: on the 2-core CPU the
    Hippocampus 3D step went from 14.0 to 11.3 s (batch 9, patch 40x56x40); on an H100 it was no
    faster, so by default it is used on the CPU only.
    """
    enabled = config.channels_last if config.channels_last is not None else device.type == "cpu"
    if not enabled:
        return torch.contiguous_format
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def train_step(model: torch.nn.Module, batch: dict, loss_fn: Callable, optimizer: torch.optim.Optimizer,
               scaler: Any, config: TrainingConfig, device: torch.device) -> torch.Tensor:
    """One optimisation step on ``batch``; returns the detached loss (on the device, no sync)."""
    data = batch["data"].to(device, non_blocking=True,
                            memory_format=memory_format(config, device, batch["data"].ndim))
    target = batch["target"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, config.amp):
        outputs = model(data)
        loss = loss_fn(outputs, target)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
    return loss.detach()


@torch.no_grad()
def validation_step(model: torch.nn.Module, batch: dict, loss_fn: Callable, spec: LossSpec,
                    config: TrainingConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and hard ``(3, K)`` TP/FP/FN counts of the full-resolution output on one batch."""
    data = batch["data"].to(device, non_blocking=True,
                            memory_format=memory_format(config, device, batch["data"].ndim))
    target = batch["target"].to(device, non_blocking=True)
    with autocast_context(device, config.amp):
        outputs = model(data)
        loss = loss_fn(outputs, target)
    full = outputs if isinstance(outputs, torch.Tensor) else outputs[0]
    return loss.detach(), online_tp_fp_fn(full, target, spec)


# ----------------------------------------------------------------------------- data

class StridedBatchFn:
    """Batch ``i`` of this process is global batch ``i * stride + offset`` (picklable).

    With W processes, rank r draws global batches r, W + r, 2W + r, ...: all different, each
    still a pure function of the seed and its global index.
    """

    def __init__(self, inner: Callable[[int], dict], stride: int, offset: int) -> None:
        self.inner, self.stride, self.offset = inner, int(stride), int(offset)

    def __call__(self, index: int) -> dict:
        return self.inner(index * self.stride + self.offset)


#: Training batches each initialisation candidate is scored on (init_selection).
INIT_SCORE_BATCHES = 4


def make_loader(folder: Path, entry: dict, cases: Sequence[str], *, batch_size: int, oversample: float,
                seed: int, augment: bool, start_index: int, config: TrainingConfig, ctx: DistContext,
                previous_stage: Path | None = None, previous_labels: Sequence[int] = ()) -> Any:
    """A :class:`~unetkit.training.loader.BatchLoader` over this process's share of the batches
    (a cascade stage's batches carry the ``previous_stage`` predictions as one-hot channels)."""
    from unetkit.training.loader import BatchLoader

    fn, finalize = make_batch_fn(folder, entry, cases, batch_size=batch_size, oversample=oversample, seed=seed,
                                 augment=augment, ctx=ctx, previous_stage=previous_stage,
                                 previous_labels=previous_labels)
    return BatchLoader(fn, num_workers=config.num_workers, prefetch=max(1, config.prefetch),
                       start_index=start_index, finalize=finalize)


def make_batch_fn(folder: Path, entry: dict, cases: Sequence[str], *, batch_size: int, oversample: float,
                  seed: int, augment: bool, ctx: DistContext, previous_stage: Path | None = None,
                  previous_labels: Sequence[int] = ()) -> tuple[Callable[[int], dict], Callable | None]:
    """``(index -> this process's batch, the batch function's finalize hook or None)``."""
    from unetkit.training.loader import make_training_batch_fn

    device = str(ctx.device) if ctx.device.type == "cuda" else "cpu"
    fn = make_training_batch_fn(folder, entry, batch_size, seed, case_names=list(cases), augment=augment,
                                oversample_foreground=oversample, device=device, previous_stage=previous_stage,
                                previous_labels=previous_labels)
    finalize = getattr(fn, "finalize", None)
    if ctx.enabled:
        fn = StridedBatchFn(fn, ctx.world_size, ctx.rank)
    return fn, finalize


# ----------------------------------------------------------------------------- the run

@dataclass
class TrainingRun:
    """Everything resolved before the first step: where, what, with which settings."""

    paths: WorkPaths
    plans: dict
    configuration: str
    entry: dict
    fold: int | str
    config: TrainingConfig
    labels: LabelInfo
    output_dir: Path
    train_cases: list[str]
    val_cases: list[str]
    preprocessed: Path
    network: dict[str, Any] | None = None   # network_spec(...), set when the network is built
    data_signatures: dict[str, str | None] = field(default_factory=dict)  # case -> raw files' signature
    pretrained: dict[str, Any] | None = None  # source (path, sha256) and what was loaded, when fine-tuning
    previous_stage: Path | None = None        # cascade: the previous stage's predicted_next_stage folder
    previous_stage_signatures: dict[str, str] = field(default_factory=dict)  # cascade: case -> prediction hash
    init_selection: dict[str, Any] | None = None  # the initialisations compared (fresh runs, init_candidates > 1)


@dataclass
class TrainResult:
    """What a finished (or already complete) run reports."""

    output_dir: Path
    epochs_done: int
    best_ema_dice: float | None
    last_pseudo_dice: list[float] = field(default_factory=list)
    seconds_per_iteration: float | None = None
    data_wait_share: float | None = None
    network: torch.nn.Module | None = None   # the trained bare network (in-process callers, tests)


def prepare_run(workdir: str | Path | None, dataset: str | Path, configuration: str, fold: int | str,
                overrides: dict[str, Any] | None = None, write: bool = True,
                saved_config: dict | None = None) -> TrainingRun:
    """Resolve plans, config, split and output folder for one training run.

    ``saved_config`` (on resume) replaces the defaults and the plan's values: a resumed run keeps
    its settings unless the command line changes them (``--epochs`` to train longer, say).
    """
    from unetkit.planning.plans import configuration as plan_configuration
    from unetkit.planning.plans import load_plans
    from unetkit.training.cascade import prediction_signatures, predictions_folder
    from unetkit.training.dataset import CachedDataset
    from unetkit.utils.names import check_data_identifier

    paths = WorkPaths.for_dataset(dataset, workdir)
    plans = load_plans(paths.plans)
    entry = plan_configuration(plans, configuration)
    if saved_config is not None:
        config = TrainingConfig.from_dict(saved_config, "checkpoint").updated(overrides, "command line")
    else:
        config = resolve_config(entry, overrides, configuration)
    preprocessed = paths.preprocessed(check_data_identifier(entry, configuration, paths.plans))
    cases = CachedDataset(preprocessed).cases
    splits = [] if str(fold) == "all" else load_or_create_splits(paths.splits, cases, write=write)
    train_cases, val_cases = select_fold(splits, fold, cases, str(paths.splits))
    if not val_cases:
        raise TrainingError(f"{paths.splits}: fold {fold} has no validation cases")
    entry = fit_patch_to_model(entry, config.arch)
    output_dir = paths.model_dir(configuration, config.arch, fold)
    previous = entry.get("previous_stage")
    previous_folder = None if previous is None else predictions_folder(output_dir.parents[1], previous, config.arch,
                                                                      configuration)
    return TrainingRun(paths=paths, plans=plans, configuration=configuration, entry=entry, fold=fold,
                       config=config, labels=label_info(plans), output_dir=output_dir,
                       train_cases=train_cases, val_cases=val_cases, preprocessed=preprocessed,
                       data_signatures=cache_signatures(preprocessed, [*train_cases, *val_cases]),
                       previous_stage=previous_folder,
                       previous_stage_signatures={} if previous_folder is None else
                       prediction_signatures(previous_folder, [*train_cases, *val_cases]))


def cache_signatures(folder: Path, cases: Sequence[str]) -> dict[str, str | None]:
    """``{case: raw-file signature}`` recorded in the cache entries (what a model is trained on)."""
    from unetkit.preprocessing.cache import read_properties

    return {case: (read_properties(folder, case) or {}).get("raw_signature") for case in sorted(set(cases))}


def fit_patch_to_model(entry: dict, arch: str) -> dict:
    """The plan entry with its patch rounded up to what ``arch`` can take.

    Some zoo models pool a fixed number of times and need every patch side divisible by a
    number (``model_info(arch).extra["divisible_by"]``, e.g. 16 for CMUNeXt) that the plan's
    patch need not be (nnU-Net plans Hippocampus at 40x56x40). Such a model gets the plan's
    patch with each side rounded up to the next multiple (40x56x40 -> 48x64x48): the same plan
    otherwise, and the patch it trains on is the one recorded in the checkpoint, so prediction
    uses it too. Models that pad their input themselves (``pads_input``) keep the plan's patch.
    """
    from unetkit.models import model_info

    extra = model_info(arch).extra or {}
    divisor = extra.get("divisible_by")
    if not isinstance(divisor, int) or divisor <= 1 or extra.get("pads_input"):
        return entry
    patch = [int(p) for p in entry["patch_size"]]
    fitted = [-(-p // divisor) * divisor for p in patch]
    if fitted == patch:
        return entry
    return {**entry, "patch_size": fitted, "patch_size_planned": patch,
            "patch_size_note": f"rounded up to multiples of {divisor} for {arch}"}


def _plans_for_checkpoint(run: TrainingRun) -> dict:
    """The dataset-level plan keys plus this configuration's entry (what inference needs)."""
    keep = {k: v for k, v in run.plans.items() if k != "configurations"}
    keep["configurations"] = {run.configuration: run.entry}
    return keep


def _checkpoint_meta(run: TrainingRun, epoch: int, history: TrainingHistory, best_ema: float | None,
                     model: torch.nn.Module, ctx: DistContext) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "configuration": run.configuration,
        "fold": run.fold,
        "dataset_name": run.plans.get("dataset_name", run.paths.root.name),
        "training_config": run.config.to_dict(),
        "plans": _plans_for_checkpoint(run),
        "architecture": dict(run.network or {}),
        "labels": {"labels": run.plans["labels"], "ignore_label": run.labels.ignore_label,
                   "regions": [list(r) for r in run.labels.regions] if run.labels.regions else None,
                   "regions_class_order": list(run.labels.regions_class_order) if run.labels.regions_class_order
                   else None, "names": list(run.labels.names)},
        "patch_size": run.entry["patch_size"],
        "best_ema_dice": best_ema,
        "history": history.to_dict(),
        "world_size": ctx.world_size,
        "data_signatures": dict(run.data_signatures),
        "previous_stage_signatures": dict(run.previous_stage_signatures),
        "num_parameters": sum(p.numel() for p in unwrap_model(model).parameters()),
        "torch_version": torch.__version__,
        "pretrained": run.pretrained,
    }


def parameters_spread(network: torch.nn.Module, ctx: DistContext) -> float:
    """Largest difference of any parameter between processes (0.0 when DDP kept them in sync)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).double() for p in unwrap_model(network).parameters()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float((high - low).abs().max().item())


def _clean_nan(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


#: What ``train(..., on_changed_data=...)`` does with a model made from other data.
CHANGED_DATA_POLICIES = ("stop", "retrain", "reuse")


def train(workdir: str | Path | None, dataset: str | Path, configuration: str, fold: int | str,
          overrides: dict[str, Any] | None = None, resume: bool = False, echo: bool = True,
          ctx: DistContext | None = None, on_changed_data: str = "stop") -> TrainResult:
    """Train one configuration on one fold; see the module docstring for the steps.

    ``overrides`` are command-line values (``None`` entries are ignored). Under torchrun the
    process group is joined here (and left at the end) unless ``ctx`` is given.

    ``on_changed_data`` decides what a resume does when the checkpoint was trained on cases
    whose raw files have changed since (or on another set of cases): ``stop`` raises a
    :class:`TrainingError` naming them, ``retrain`` deletes the fold's checkpoints and trains
    from scratch, ``reuse`` keeps the model anyway (logged).
    """
    if on_changed_data not in CHANGED_DATA_POLICIES:
        raise TrainingError(f"on_changed_data must be one of {CHANGED_DATA_POLICIES}, found {on_changed_data!r}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    own_ctx = ctx is None
    if ctx is None:
        ctx = init_distributed(overrides.get("device", "auto"))
    try:
        result = _train(workdir, dataset, configuration, fold, overrides, resume, echo, ctx, on_changed_data)
    except BaseException:
        if own_ctx:
            shutdown(ctx, peers_done=False)
        raise
    if own_ctx:
        shutdown(ctx)
    return result


def _find_resume(workdir, dataset, configuration, fold, overrides) -> tuple[str | None, Path | None, dict]:
    """Locate a checkpoint to resume from; returns (name, folder, its meta)."""
    probe = prepare_run(workdir, dataset, configuration, fold, overrides, write=False)
    name = latest_resumable(probe.output_dir)
    if name is None:
        return None, probe.output_dir, {}
    meta = json.loads(checkpoint_files(probe.output_dir, name)[2].read_text())
    return name, probe.output_dir, meta


def _train(workdir, dataset, configuration, fold, overrides, resume, echo, ctx: DistContext,
           on_changed_data: str = "stop") -> TrainResult:
    from unetkit.utils.locks import folder_lock

    resume_name, meta = None, {}
    if resume:
        resume_name, _, meta = _find_resume(workdir, dataset, configuration, fold, overrides)
    run = prepare_run(workdir, dataset, configuration, fold, overrides, write=ctx.is_main,
                      saved_config=meta.get("training_config"))
    _check_cache_is_current(run, dataset)
    if run.previous_stage is not None:
        from unetkit.training.cascade import require_predictions

        require_predictions(run.previous_stage, [*run.train_cases, *run.val_cases], run.entry["previous_stage"],
                            configuration)
    out = run.output_dir
    if not resume and latest_resumable(out) is not None:
        raise TrainingError(f"{out} already holds checkpoints of an earlier run; pass --resume to continue it, "
                            f"or delete the folder to start again")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    # One training process per fold folder (the ranks of one torchrun job are one run).
    lock = folder_lock(out, "unetkit train") if ctx.is_main else contextlib.nullcontext()
    with lock:
        note = None
        if resume_name is not None:
            resume_name, note = _check_same_data(run, resume_name, meta, on_changed_data, ctx)
        barrier(ctx)
        log = RunLog(out / "train.log", enabled=ctx.is_main, echo=echo)
        try:
            if note:
                log(note)
            return _run_loop(run, resume_name, log, ctx)
        finally:
            log.close()


def _check_cache_is_current(run: TrainingRun, dataset: str | Path) -> None:
    """Refuse to train on cache entries older than the raw files (when ``dataset`` is a raw folder)."""
    from unetkit.data.dataset import load_dataset
    from unetkit.data.signature import case_signature

    if not (Path(dataset) / "dataset.json").is_file():
        return  # a dataset name: only the work folder is known
    cases = {c.name: c for c in load_dataset(dataset).training_cases()}
    stale = sorted(name for name, recorded in run.data_signatures.items()
                   if recorded is not None and name in cases
                   and case_signature(cases[name].images, cases[name].label) != recorded)
    if stale:
        shown = ", ".join(stale[:8]) + (f" and {len(stale) - 8} more" if len(stale) > 8 else "")
        raise TrainingError(f"the raw files of {len(stale)} case(s) changed since they were preprocessed "
                            f"({shown}); run `unetkit preprocess {dataset}` first (it redoes only those cases)")


def _check_same_data(run: TrainingRun, resume_name: str, meta: dict, policy: str, ctx: DistContext
                     ) -> tuple[str | None, str | None]:
    """The checkpoint to resume (None after ``retrain`` removed it) and a note for the log.

    Compares the data the checkpoint was trained on (``data_signatures``) with the cache now.
    """
    from unetkit.data.signature import compare_signatures

    recorded = meta.get("data_signatures")
    if not isinstance(recorded, dict):
        return resume_name, None  # written by an older unetkit: nothing to compare with
    current = dict(run.data_signatures)
    recorded_previous = meta.get("previous_stage_signatures")
    if run.previous_stage_signatures and isinstance(recorded_previous, dict):  # cascade: 3d_lowres retrained?
        label = f"{run.entry.get('previous_stage')} prediction of "
        recorded = {**recorded, **{label + k: v for k, v in recorded_previous.items()}}
        current.update({label + k: v for k, v in run.previous_stage_signatures.items()})
    diff = compare_signatures(recorded, current)
    if not diff:
        return resume_name, None
    if policy == "reuse":
        return resume_name, (f"note: continuing with {resume_name} although the training data changed since "
                             f"({diff.describe()}), as asked (--on-changed-data reuse)")
    if policy == "stop":
        raise TrainingError(
            f"{run.output_dir}/{resume_name} was trained on other data than the preprocessed cases now "
            f"({diff.describe()}). To train this fold again on the data as it is now, pass "
            f"--on-changed-data retrain (its checkpoints are deleted) or delete {run.output_dir}; to use the "
            f"old model anyway, pass --on-changed-data reuse")
    if ctx.is_main:
        for name in ("checkpoint_latest", "checkpoint_best", "checkpoint_final"):
            remove_checkpoint(run.output_dir, name)
        for stale in ("progress.json", "training_config.json"):
            (run.output_dir / stale).unlink(missing_ok=True)
        validation = run.output_dir / "validation"
        if validation.is_dir():
            import shutil

            shutil.rmtree(validation)
    return None, (f"note: the training data changed since {resume_name} was written ({diff.describe()}); "
                  "its checkpoints were deleted and the fold is trained again from scratch (--on-changed-data "
                  "retrain)")


def _initial_state(run: TrainingRun, resume_name: str | None, network: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, scaler: Any, log: RunLog, ctx: DistContext
                   ) -> tuple[int, float | None, TrainingHistory]:
    """``(start_epoch, best_ema, history)``: restored from ``resume_name``, or a fresh (maybe pretrained) start.

    Pretrained weights are applied only to a fresh start: a resumed run continues from its own
    checkpoint and keeps the record of the source it was started from.
    """
    cfg, out = run.config, run.output_dir
    history = TrainingHistory(cfg.ema_momentum)
    start_epoch, best_ema = 0, None
    if resume_name is not None:
        try:
            ckpt = load_checkpoint(out, resume_name)
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume: {exc}") from exc
        try:
            network.load_state_dict(ckpt.weights)
        except RuntimeError as exc:
            raise TrainingError(f"cannot resume from {out}/{resume_name}: its weights do not fit the network "
                                f"({cfg.arch}); was --arch or the plan changed? ({exc})") from exc
        if "optimizer" in ckpt.state:
            optimizer.load_state_dict(ckpt.state["optimizer"])
        if "grad_scaler" in ckpt.state and scaler.is_enabled():
            scaler.load_state_dict(ckpt.state["grad_scaler"])
        start_epoch = int(ckpt.meta["epoch"])
        best_ema = ckpt.meta.get("best_ema_dice")
        history = TrainingHistory(cfg.ema_momentum, ckpt.meta.get("history"))
        history.truncate(start_epoch)
        set_rng_state(ckpt.state.get("rng", {}), ckpt.meta.get("rng", {}))
        if ckpt.meta.get("world_size", 1) != ctx.world_size:
            log(f"note: the checkpoint was written by {ckpt.meta.get('world_size')} process(es), now "
                f"{ctx.world_size}; batches after the resume differ from an uninterrupted run")
        run.pretrained = ckpt.meta.get("pretrained")
        log(f"resumed from {resume_name} after epoch {start_epoch}")
    else:
        if ctx.is_main and (out / "progress.json").exists():
            log("no checkpoint to resume from; starting from scratch")
        if cfg.pretrained:
            run.pretrained = apply_pretrained(network, cfg, run.labels.num_heads, log)
    if cfg.freeze_encoder_iterations and ctx.enabled:
        raise TrainingError("freeze_encoder_iterations is not supported with distributed training (DDP needs the "
                            "same trainable parameters on every step); train the warm-up in one process")
    return start_epoch, best_ema, history


@dataclass
class _StepClock:
    """Training-step timing of this session (not of epochs before a resume)."""

    step_times: list[float] = field(default_factory=list)
    wait_total: float = 0.0
    step_total: float = 0.0

    @property
    def wait_share(self) -> float:
        return self.wait_total / max(self.step_total, 1e-9)

    def as_dict(self) -> dict[str, float | int]:
        return {"median_seconds_per_iteration": float(np.median(self.step_times)),
                "data_wait_share": self.wait_share, "iterations_timed": len(self.step_times)}


@dataclass
class _Loop:
    """What one training session's epochs share."""

    run: TrainingRun
    network: torch.nn.Module  # unwrapped (what the encoder freeze and the final spread check see)
    model: torch.nn.Module  # compiled and/or DDP-wrapped, what the steps call
    optimizer: torch.optim.Optimizer
    scaler: Any
    loss_fn: Callable
    spec: LossSpec
    ctx: DistContext
    log: RunLog
    clock: _StepClock = field(default_factory=_StepClock)


def _log_header(run: TrainingRun, local_sizes: Sequence[int], log: RunLog, ctx: DistContext) -> None:
    cfg = run.config
    log(f"unetkit train: {run.paths.root.name} {run.configuration} fold {run.fold} -> {run.output_dir}")
    log(f"device {ctx.device} x {ctx.world_size} process(es); torch {torch.__version__}; "
        f"python {platform.python_version()}")
    if "patch_size_planned" in run.entry:
        log(f"patch {run.entry['patch_size_planned']} of the plan {run.entry['patch_size_note']}: "
            f"{run.entry['patch_size']}")
    log(f"training cases {len(run.train_cases)}, validation cases {len(run.val_cases)}; "
        f"patch {run.entry['patch_size']}, global batch {cfg.batch_size} (per process {list(local_sizes)})")
    log("config " + json.dumps(cfg.to_dict()))


def _wrap_model(network: torch.nn.Module, cfg: TrainingConfig, log: RunLog, ctx: DistContext) -> torch.nn.Module:
    model = network
    if cfg.compile:
        log("compiling the network with torch.compile (the first iterations are slow)")
        model = torch.compile(network)
    if ctx.enabled:
        device = ctx.device
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def _train_epoch(loop: _Loop, loader: Any, epoch: int, bar: EpochBar,
                 history: TrainingHistory) -> tuple[float, float, float]:
    """One epoch's training iterations; returns (mean loss here, data-wait seconds, seconds)."""
    cfg, iters = loop.run.config, loop.run.config.iterations_per_epoch
    t_epoch = time.perf_counter()
    loop.model.train()
    losses, wait_epoch = [], 0.0
    last_dice = history.values["ema_fg_dice"][-1] if len(history) else None
    dice_text = "-" if last_dice is None or math.isnan(last_dice) else f"{last_dice:.4f}"
    with bar.epoch(epoch, cfg.epochs, iters, format_seconds(history.eta_seconds(cfg.epochs)), dice_text):
        for it in range(iters):
            update_encoder_freeze(loop.network, cfg, epoch * iters + it, loop.log)
            t0, w0 = time.perf_counter(), loader.wait_seconds
            loss = train_step(loop.model, next(loader), loop.loss_fn, loop.optimizer, loop.scaler, cfg,
                              loop.ctx.device)
            losses.append(loss)
            bar.advance(loss.item() if (bar.enabled and (it % 5 == 0 or it == iters - 1)) else None)
            dt = time.perf_counter() - t0
            loop.clock.step_times.append(dt)
            loop.clock.step_total += dt
            wait_epoch += loader.wait_seconds - w0
    loop.clock.wait_total += wait_epoch
    return float(torch.stack(losses).float().mean().item()), wait_epoch, time.perf_counter() - t_epoch


def _validate_epoch(loop: _Loop, loader: Any) -> tuple[float, np.ndarray]:
    """Validation loss and summed tp/fp/fn counts of this process's validation iterations."""
    cfg = loop.run.config
    loop.model.eval()
    val_losses, counts = [], None
    for _ in range(cfg.val_iterations):
        vloss, c = validation_step(loop.model, next(loader), loop.loss_fn, loop.spec, cfg, loop.ctx.device)
        val_losses.append(vloss)
        counts = c if counts is None else counts + c
    val_loss = float(torch.stack(val_losses).float().mean().item()) if val_losses else float("nan")
    counts_np = counts.cpu().numpy() if counts is not None else np.zeros((3, len(loop.run.labels.names)))
    return val_loss, counts_np


def _save_epoch(loop: _Loop, done: int, history: TrainingHistory, best_ema: float | None, improved: bool) -> None:
    """Checkpoints (latest every save_every, best, final), progress.json and the plot (rank 0)."""
    run, cfg, out = loop.run, loop.run.config, loop.run.output_dir
    meta = _checkpoint_meta(run, done, history, _clean_nan(best_ema), loop.model, loop.ctx)
    save = dict(optimizer=loop.optimizer, grad_scaler=loop.scaler, meta=meta)
    if done < cfg.epochs and done % cfg.save_every == 0:
        save_checkpoint(out, "checkpoint_latest", loop.model, **save)
    if improved:
        save_checkpoint(out, "checkpoint_best", loop.model, **save)
    if done == cfg.epochs:
        save_checkpoint(out, "checkpoint_final", loop.model, **save)
        remove_checkpoint(out, "checkpoint_latest")
    write_progress_json(out / "progress.json", history,
                        {"configuration": run.configuration, "fold": run.fold,
                         "class_names": list(run.labels.names), "timing": loop.clock.as_dict()})
    if done % cfg.plot_every == 0 or done == cfg.epochs:
        plot_progress(out / "progress.png", history, list(run.labels.names))


def _run_epoch(loop: _Loop, loaders: tuple[Any, Any], epoch: int, bar: EpochBar, history: TrainingHistory,
               best_ema: float | None) -> float | None:
    """Train and validate one epoch, log it, save its outputs; returns the best EMA pseudo-Dice so far."""
    cfg, ctx = loop.run.config, loop.ctx
    t_epoch = time.perf_counter()
    lr = poly_lr(cfg, epoch)
    set_lr(loop.optimizer, lr)
    train_loss, wait_epoch, train_seconds = _train_epoch(loop, loaders[0], epoch, bar, history)
    val_loss, counts_np = _validate_epoch(loop, loaders[1])
    # Every process contributes; all end up with identical numbers.
    train_loss, val_loss = (float(v) for v in all_reduce_numpy(ctx, np.array([train_loss, val_loss]), average=True))
    counts_np = all_reduce_numpy(ctx, counts_np)
    dice = dice_from_counts(counts_np) if cfg.val_iterations else [float("nan")] * len(loop.run.labels.names)
    epoch_seconds = time.perf_counter() - t_epoch
    wait_share = wait_epoch / max(train_seconds, 1e-9)
    ema = history.add(epoch, train_loss, val_loss, dice, lr, epoch_seconds, wait_share)
    improved = not math.isnan(ema) and (best_ema is None or ema > best_ema)
    if improved:
        best_ema = ema
    loop.log(f"epoch {epoch + 1}/{cfg.epochs}: lr {lr:.5f}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
             f"pseudo-Dice {[round(d, 4) for d in dice]}  EMA {ema:.4f}{' (best)' if improved else ''}  "
             f"{epoch_seconds:.1f}s (data wait {100 * wait_share:.1f}%)  "
             f"ETA {format_seconds(history.eta_seconds(cfg.epochs))}")
    if ctx.is_main:
        _save_epoch(loop, epoch + 1, history, best_ema, improved)
    barrier(ctx)
    return best_ema


def _draw_network(run: TrainingRun, resume_name: str | None, loader_args: dict, spec: LossSpec,
                  log: RunLog) -> torch.nn.Module:
    """The network training starts from, on the device: the best of ``init_candidates`` draws
    (:mod:`unetkit.training.init_selection`) for a fresh run, one draw when resuming or fine-tuning
    (those weights are replaced by the checkpoint's or the source's)."""
    from unetkit.training.init_selection import select_initialization
    from unetkit.training.loader import BatchLoader

    cfg, device = run.config, loader_args["ctx"].device
    candidates = cfg.init_candidates if resume_name is None and not cfg.pretrained else 1
    batches: list[dict] = []
    if candidates > 1:
        fn, finalize = make_batch_fn(run.preprocessed, run.entry, run.train_cases, seed=cfg.seed, augment=True,
                                     **{k: v for k, v in loader_args.items() if k != "config"})
        with BatchLoader(fn, num_workers=0, finalize=finalize) as loader:  # training's first batches
            batches = [next(loader) for _ in range(INIT_SCORE_BATCHES)]
    # The training loss without its all-reduce: each process scores on its own batches, and DDP
    # starts every process from rank 0's weights anyway.
    loss_fn = build_loss(dataclasses.replace(spec, ddp=False))
    network, record = select_initialization(lambda: build_network(run.network).to(device), candidates, batches,
                                            loss_fn, lambda data: data.to(device))
    if candidates > 1:
        run.init_selection = record.to_dict()
        log(record.describe())
    return network


def _run_loop(run: TrainingRun, resume_name: str | None, log: RunLog, ctx: DistContext) -> TrainResult:
    cfg, out, device = run.config, run.output_dir, ctx.device
    configure_determinism(cfg, device)
    local_sizes = split_batch(cfg.batch_size, ctx.world_size)
    oversample = local_oversample(cfg.batch_size, ctx.world_size, ctx.rank, cfg.oversample_foreground)
    _log_header(run, local_sizes, log, ctx)

    run.network = network_spec(run.plans, run.entry, cfg, run.labels.num_heads, log)
    loader_args = dict(batch_size=local_sizes[ctx.rank], oversample=oversample, config=cfg, ctx=ctx,
                       previous_stage=run.previous_stage, previous_labels=cascade_labels(run.plans))
    spec = LossSpec(batch_dice=bool(cfg.batch_dice), ignore_label=run.labels.ignore_label,
                    regions=run.labels.regions, smooth=cfg.dice_smooth, dice_weight=cfg.dice_weight,
                    ce_weight=cfg.ce_weight, ddp=ctx.enabled)
    network = _draw_network(run, resume_name, loader_args, spec, log)
    network = network.to(memory_format=memory_format(cfg, device, run.network["spatial_dims"] + 2))
    log(f"network {cfg.arch}: {sum(p.numel() for p in network.parameters()):,} parameters")
    optimizer = make_optimizer(network, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    start_epoch, best_ema, history = _initial_state(run, resume_name, network, optimizer, scaler, log, ctx)

    if start_epoch >= cfg.epochs:
        log(f"nothing to do: {start_epoch} of {cfg.epochs} epochs are done (pass --epochs to train longer)")
        return TrainResult(out, start_epoch, best_ema,
                           history.values["pseudo_dice"][-1] if len(history) else [])

    if ctx.is_main:
        atomic_write_json(out / "training_config.json",
                          {"configuration": run.configuration, "fold": run.fold, "world_size": ctx.world_size,
                           "train_cases": run.train_cases, "val_cases": run.val_cases,
                           "data_signatures": run.data_signatures, "pretrained": run.pretrained,
                           "init_selection": run.init_selection, "config": cfg.to_dict()})
    loop = _Loop(run, network, _wrap_model(network, cfg, log, ctx), optimizer, scaler, build_loss(spec), spec,
                 ctx, log)

    iters, val_iters = cfg.iterations_per_epoch, cfg.val_iterations
    train_loader = make_loader(run.preprocessed, run.entry, run.train_cases, seed=cfg.seed, augment=True,
                               start_index=start_epoch * iters, **loader_args)
    val_loader = None
    if val_iters:
        val_loader = make_loader(run.preprocessed, run.entry, run.val_cases, seed=cfg.seed + VAL_SEED_OFFSET,
                                 augment=False, start_index=start_epoch * val_iters, **loader_args)
    bar = EpochBar(enabled=ctx.is_main)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            best_ema = _run_epoch(loop, (train_loader, val_loader), epoch, bar, history, best_ema)
    finally:
        train_loader.close()
        if val_loader is not None:
            val_loader.close()
    return _finish(loop, history, best_ema)


def _finish(loop: _Loop, history: TrainingHistory, best_ema: float | None) -> TrainResult:
    """Check that DDP processes agree, log the session's timing, and build the result."""
    cfg, ctx, log = loop.run.config, loop.ctx, loop.log
    if ctx.enabled:
        spread = parameters_spread(loop.network, ctx)
        log(f"parameters of the {ctx.world_size} processes differ by at most {spread:.3g}")
        if spread > 0:
            raise TrainingError(f"distributed processes ended with different parameters (max difference {spread})")
    clock = loop.clock
    med = float(np.median(clock.step_times)) if clock.step_times else None
    log(f"finished {cfg.epochs} epochs; median {med:.3f}s per iteration, data wait "
        f"{100 * clock.wait_share:.1f}% of step time; best EMA pseudo-Dice "
        f"{best_ema if best_ema is None else round(best_ema, 4)}" if med is not None else "finished")
    return TrainResult(loop.run.output_dir, cfg.epochs, _clean_nan(best_ema), history.values["pseudo_dice"][-1],
                       med, clock.wait_share, unwrap_model(loop.network))

