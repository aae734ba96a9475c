"""Checkpoints that execute no code when loaded, written atomically.

A checkpoint ``NAME`` (``checkpoint_latest``, ``checkpoint_best``, ``checkpoint_final``) in a fold
folder is three files:

``NAME.safetensors``
    The network's weights (``state_dict`` of the bare network: no ``module.``/``_orig_mod.``
    prefixes). Everything inference needs besides the JSON; safetensors holds raw tensors only.
``NAME.state.pt``
    The resumable training state that is made of tensors: the optimizer's ``state_dict``
    (momentum buffers), the gradient scaler's state and the torch CPU/CUDA RNG states, saved
    with ``torch.save`` and loaded **only** with ``torch.load(weights_only=True)``, which refuses
    any pickle that would import or call anything but tensors and plain containers.
``NAME.json``
    Readable metadata: format version, epoch (the number of finished epochs), the training
    config, the plan (dataset-level keys and the configuration entry), the architecture (name,
    kwargs, channels, outputs), metrics and the pseudo-Dice history, the numpy and Python RNG
    states, and the SHA-256 of the two other files.

Writes: each file goes to a temporary name beside its destination and is fsynced; the three
renames then happen back to back, the JSON last. The JSON's hashes tie the three together: a
crash between the renames (a window of microseconds) is detected at load time as a mismatch
instead of silently mixing two epochs.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.utils.atomic import atomic_path, read_json, to_jsonable
from unetkit.utils.hashing import file_sha256

FORMAT_VERSION = 1
CHECKPOINT_NAMES = ("checkpoint_latest", "checkpoint_best", "checkpoint_final")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, inconsistent, or contains something other than plain data."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights, tensor training state and JSON metadata."""

    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def checkpoint_files(folder: str | Path, name: str) -> tuple[Path, Path, Path]:
    """``(weights, state, meta)`` paths of checkpoint ``name`` in ``folder``."""
    folder = Path(folder)
    return (folder / f"{name}.safetensors", folder / f"{name}.state.pt", folder / f"{name}.json")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random generator's state: tensors (torch CPU/CUDA) and JSON parts (numpy, Python)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    meta = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is in use)."""
    if "torch_cpu" in tensors:
        torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    if "torch_cuda" in tensors and torch.cuda.is_available():
        states = list(tensors["torch_cuda"].to(torch.uint8))
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    if "numpy" in meta:
        kind, keys, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "python" in meta:
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: str | Path, name: str, model: torch.nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    grad_scaler: Any | None = None,
                    meta: dict[str, Any] | None = None) -> tuple[Path, Path, Path]:
    """Write checkpoint ``name`` (weights, tensor state, JSON) atomically; returns the three paths.

    ``meta`` is stored in the JSON (it must be JSON-serializable after numpy conversion); the
    RNG states and file hashes are added here.
    """
    weights_path, state_path, meta_path = checkpoint_files(folder, name)
    from safetensors.torch import save_file

    weights = {k: v.detach().to("cpu", copy=True).contiguous()
               for k, v in unwrap_model(model).state_dict().items()}
    rng_tensors, rng_meta = rng_state()
    state: dict[str, Any] = {"rng": rng_tensors}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if grad_scaler is not None and getattr(grad_scaler, "is_enabled", lambda: False)():
        state["grad_scaler"] = grad_scaler.state_dict()
    with ExitStack() as stack:
        # Entered in this order, the renames happen in reverse: weights, state, then the JSON.
        tmp_meta = stack.enter_context(atomic_path(meta_path))
        tmp_state = stack.enter_context(atomic_path(state_path))
        tmp_weights = stack.enter_context(atomic_path(weights_path))
        save_file(weights, str(tmp_weights), metadata={"format": "pt", "unetkit_checkpoint": name})
        torch.save(state, tmp_state)
        full_meta = dict(meta or {})
        full_meta.update({"format_version": FORMAT_VERSION, "name": name, "rng": rng_meta,
                          "files": {"weights": weights_path.name, "state": state_path.name},
                          "sha256": {"weights": file_sha256(tmp_weights), "state": file_sha256(tmp_state)}})
        _write_json_to(tmp_meta, full_meta)
    return weights_path, state_path, meta_path


def _write_json_to(tmp: Path, obj: Any) -> None:
    """Write JSON to an already-temporary path (the caller renames it)."""
    import json

    tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n", encoding="utf-8")


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` weights file (a format that cannot carry code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_state_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.state.pt`` file with ``torch.load(weights_only=True)``.

    A file whose unpickling would import a module or call a function (a planted malicious
    pickle, or an nnU-Net ``.pth`` holding numpy objects) is refused with :class:`CheckpointError`
    before anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training-state file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable training-state file ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - weights_only's refusal (an UnpicklingError); nothing was run
        raise CheckpointError(f"{path}: refused to load: the file contains objects other than tensors and "
                              f"plain containers (it could run code when loaded). Details: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dictionary of training state, found {type(state).__name__}")
    return state


def load_checkpoint(folder: str | Path, name: str, verify: bool = True,
                    with_state: bool = True) -> Checkpoint:
    """Load checkpoint ``name`` from ``folder``; ``verify`` checks the files' SHA-256 against the JSON.

    ``with_state`` false reads only weights and JSON (what inference needs).
    """
    weights_path, state_path, meta_path = checkpoint_files(folder, name)
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: checkpoint metadata not found")
    try:
        meta = read_json(meta_path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: not a unetkit checkpoint of format version {FORMAT_VERSION}")
    if verify:
        expected = meta.get("sha256", {})
        paths = {"weights": weights_path, **({"state": state_path} if with_state else {})}
        for key, path in paths.items():
            if not path.is_file():
                raise CheckpointError(f"{path}: missing ({meta_path.name} refers to it)")
            if expected.get(key) != file_sha256(path):
                raise CheckpointError(f"{path}: content does not match {meta_path.name} (the checkpoint was "
                                      f"interrupted while being written, or a file was replaced)")
    weights = load_weights(weights_path)
    state = load_state_file(state_path) if with_state else {}
    return Checkpoint(weights=weights, state=state, meta=meta)


def latest_resumable(folder: str | Path) -> str | None:
    """Name of the checkpoint to resume from: ``checkpoint_latest`` if present, else ``checkpoint_final``."""
    for name in ("checkpoint_latest", "checkpoint_final"):
        if checkpoint_files(folder, name)[2].is_file():
            return name
    return None


def remove_checkpoint(folder: str | Path, name: str) -> None:
    """Delete checkpoint ``name``'s files (JSON first so a half-removed checkpoint is never read)."""
    weights_path, state_path, meta_path = checkpoint_files(folder, name)
    for path in (meta_path, state_path, weights_path):
        path.unlink(missing_ok=True)


__all__ = ["Checkpoint", "CheckpointError", "CHECKPOINT_NAMES", "checkpoint_files", "save_checkpoint",
           "load_checkpoint", "load_weights", "load_state_file", "latest_resumable", "rng_state",
           "set_rng_state", "unwrap_model", "remove_checkpoint"]
