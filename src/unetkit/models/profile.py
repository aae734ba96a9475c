"""Efficiency of a registered model: parameters, FLOPs, latency and peak memory.

``profile_model`` is what ``unetkit profile`` and ``unetkit models`` print and what the benchmark
stage records as efficiency metrics. Methods (stated in the result under ``"methods"``):

- parameters: :func:`unetkit.models.count_parameters` (shared tensors once).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass, run on the ``meta``
  device (shapes only: no memory, no time). It counts matrix multiplications, convolutions and
  attention, 2 FLOPs per multiply-accumulate; element-wise work (norms, activations, the
  selective scan's recurrence) is not counted. ``macs = flops / 2`` is the unit most papers call
  "FLOPs" (e.g. UNETR's 41.19 G).
- latency: ``warmup`` forward passes, then the median (and min / max) wall time of ``repeats``
  passes under ``torch.inference_mode`` (CUDA: synchronized before and after each pass).
- peak memory: CUDA: ``torch.cuda.max_memory_allocated`` during the timed passes minus the
  memory allocated before them. CPU: the growth of the process's peak resident set size
  (``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs``) over the
  timed passes, measured from the resident size before them; it includes allocator caching and
  is an upper bound of the tensors' own memory. Where the reset is not possible,
  ``ru_maxrss`` growth is reported and the method says so.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from unetkit.models.registry import count_parameters, create_model, model_info, model_patch, patch_keyword

#: Patches used when none is given (those of UNETR's and TransUNet's papers; multiples of 32).
DEFAULT_PATCH = {3: (96, 96, 96), 2: (224, 224)}


def _build(name: str, spatial_dims: int, in_channels: int, num_classes: int, kwargs: dict[str, Any] | None,
           deep_supervision: bool, patch: Sequence[int]) -> torch.nn.Module:
    ds = deep_supervision and model_info(name).deep_supervision
    kwargs = dict(kwargs or {})
    patch_kwarg = patch_keyword(name)
    if patch_kwarg and kwargs.get(patch_kwarg) is None:  # sized for the patch it is measured on
        kwargs[patch_kwarg] = model_patch(name, patch)
    return create_model(name, spatial_dims, in_channels, num_classes, deep_supervision=ds, **kwargs)


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (``FlopCounterMode``: 2 per multiply-accumulate)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return int(counter.get_total_flops())


def model_size(name: str, spatial_dims: int, patch: Sequence[int] | None = None, in_channels: int = 1,
               num_classes: int = 2, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters and FLOPs of the default (or ``kwargs``) configuration, on the meta device."""
    patch = tuple(int(p) for p in (patch or DEFAULT_PATCH[spatial_dims]))
    with torch.device("meta"):
        model = _build(name, spatial_dims, in_channels, num_classes, kwargs, deep_supervision=False, patch=patch).eval()
        params = count_parameters(model)
        flops = count_flops(model, torch.empty(1, in_channels, *patch))
    return {"params": params, "flops": flops, "macs": flops // 2, "patch": list(patch)}


def _read_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def profile_model(name: str, spatial_dims: int | None = None, in_channels: int = 1, num_classes: int = 2,
                  patch: Sequence[int] | None = None, batch: int = 1, device: str = "cpu", repeats: int = 5,
                  warmup: int = 2, kwargs: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Parameters, FLOPs, median forward latency and peak memory of model ``name``.

    Args:
        name: a registered model.
        spatial_dims: 2 or 3 (default: ``len(patch)``, else the model's first supported dimension).
        in_channels, num_classes: input and output channels.
        patch: spatial input size (default 96^3 / 224^2).
        batch: batch size of the timed passes (FLOPs are per sample and for the batch).
        device: ``cpu``, ``cuda`` or ``auto``.
        repeats, warmup: timed and untimed forward passes.
        kwargs: architecture keywords (default: the model's defaults).

    Returns:
        A JSON-ready dict: name, dims, patch, batch, device, params, flops (per sample),
        gflops, gmacs, latency_ms (median, min, max, all), peak_memory_mb, methods.
    """
    info = model_info(name)
    if spatial_dims is None:
        spatial_dims = len(patch) if patch else info.spatial_dims[0]
    patch = tuple(int(p) for p in (patch or DEFAULT_PATCH[spatial_dims]))
    if len(patch) != spatial_dims:
        raise ValueError(f"patch {list(patch)} has {len(patch)} axes, spatial_dims is {spatial_dims}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    size = model_size(name, spatial_dims, patch, in_channels, num_classes, kwargs)
    torch.manual_seed(seed)
    model = _build(name, spatial_dims, in_channels, num_classes, kwargs, deep_supervision=False, patch=patch).to(dev).eval()
    x = torch.randn(batch, in_channels, *patch, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            mem_method = "torch.cuda.max_memory_allocated - memory_allocated before the timed passes"
        else:
            reset = _reset_peak_rss()
            base = _read_status("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            mem_method = ("peak RSS (VmHWM, reset via /proc/self/clear_refs) - RSS before the timed passes" if reset
                          else "ru_maxrss growth over the timed passes (process peak; 0 if an earlier peak was higher)")
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - t0)
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated(dev) - base
        elif mem_method.startswith("peak RSS"):
            peak = (_read_status("VmHWM") or 0) - (base or 0)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    ms = [t * 1e3 for t in times]
    return {
        "name": name, "family": info.family, "spatial_dims": spatial_dims, "patch": list(patch), "batch": batch,
        "in_channels": in_channels, "num_classes": num_classes, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "params": size["params"], "flops": size["flops"],
        "gflops": size["flops"] / 1e9, "gmacs": size["macs"] / 1e9,
        "latency_ms": {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "all": ms},
        "repeats": repeats, "warmup": warmup, "peak_memory_mb": max(peak, 0) / 2 ** 20,
        "methods": {"flops": "torch.utils.flop_counter.FlopCounterMode on the meta device, one sample, "
                             "2 FLOPs per MAC; matmul/conv/attention only",
                    "latency": "median wall time of forward passes under inference_mode after warm-up",
                    "memory": mem_method},
    }


def format_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table of ``rows`` (dicts) with ``columns`` = (header, key)."""
    cells = [[h for h, _ in columns]] + [[str(r.get(k, "")) for _, k in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
