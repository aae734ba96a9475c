"""Start a training run from another model's weights (fine-tuning), and freeze its encoder.

``--pretrained SOURCE`` names a unetkit checkpoint: a ``.safetensors`` weights file, a fold folder
(``checkpoint_final``, else ``checkpoint_best``, else ``checkpoint_latest``) or a model folder
``CONFIG__ARCH`` (``fold_all`` if present, else the lowest-numbered fold). Only safetensors are read,
so nothing in the source can run code; when the checkpoint's JSON is beside the weights, its SHA-256
is checked first.

Every tensor whose name and shape match is copied into the new network. The rest is reported with
a reason: a segmentation head for another label set (only the number of outputs differs), the
first convolution for another channel count (only the number of inputs differs; optionally
adapted, see :func:`adapt_first_conv`), another shape, or a name the other network lacks. A source
of which no encoder tensor fits is refused: its weights would not help, and the user most likely
gave the wrong model.

"Encoder" means the top-level modules whose names start with :data:`ENCODER_PREFIXES` (``encoder``,
``enc``, ``stem``, ``down``, ``patch_embed``, ...), which is how every network of the model zoo
names its contracting path; a network without such modules has no encoder to freeze.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unetkit.training.checkpoint import (CheckpointError, checkpoint_files, file_sha256, load_checkpoint,
                                         load_weights)

#: Top-level module names (prefixes) that make up a network's encoder in the model zoo.
ENCODER_PREFIXES = ("enc", "stem", "down", "patch_embed", "pos_embed", "root", "body")
#: How ``--pretrained-channels`` adapts a first convolution made for another number of input channels.
CHANNEL_MODES = ("average", "repeat")


class PretrainedError(RuntimeError):
    """The pretrained source cannot be read or does not fit the network; the message says why."""


@dataclass
class PretrainedSource:
    """Weights read from a pretrained checkpoint, with where they came from."""

    weights_path: Path
    sha256: str
    weights: dict[str, torch.Tensor]
    meta: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """What training_config.json and the checkpoints store about the source."""
        arch = (self.meta or {}).get("architecture", {})
        return {"path": str(self.weights_path), "sha256": self.sha256,
                "architecture": arch.get("name"), "dataset_name": (self.meta or {}).get("dataset_name")}


@dataclass
class TransferReport:
    """What :func:`transfer_weights` copied, adapted and skipped (name -> reason)."""

    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"loaded": list(self.loaded), "adapted": dict(self.adapted), "skipped": dict(self.skipped)}

    def lines(self) -> list[str]:
        """Log lines: loaded tensors grouped by module, then each adapted and skipped one with its reason."""
        groups: dict[str, int] = {}
        for name in self.loaded:
            key = ".".join(name.split(".")[:2])
            groups[key] = groups.get(key, 0) + 1
        out = [f"pretrained: loaded {len(self.loaded)} tensors: "
               + ", ".join(f"{k} ({n})" for k, n in groups.items())]
        out += [f"pretrained: adapted {name}: {why}" for name, why in self.adapted.items()]
        out += [f"pretrained: skipped {name}: {why}" for name, why in self.skipped.items()]
        return out


def _fold_folder(model_dir: Path) -> Path:
    """``fold_all`` if present, else the lowest-numbered ``fold_N`` holding a checkpoint."""
    folds = [p for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"fold_(\d+|all)", p.name)]
    folds = [p for p in folds if any(checkpoint_files(p, n)[0].is_file()
                                     for n in ("checkpoint_final", "checkpoint_best", "checkpoint_latest"))]
    if not folds:
        raise PretrainedError(f"{model_dir}: no checkpoint here, and no fold_N folder holding one")
    folds.sort(key=lambda p: (p.name != "fold_all", int(p.name[5:]) if p.name[5:].isdigit() else -1))
    return folds[0]


def resolve_source(path: str | Path) -> tuple[Path, str | None]:
    """The weights file and the checkpoint name (None for a bare safetensors file) ``path`` means."""
    path = Path(path).expanduser().resolve()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise PretrainedError(f"{path}: pretrained weights must be a .safetensors file (a unetkit "
                                  "checkpoint); pickled files (.pt/.pth) are not read")
        name = path.name[: -len(".safetensors")]
        return path, name if (path.parent / f"{name}.json").is_file() else None
    if not path.is_dir():
        raise PretrainedError(f"{path}: pretrained model not found")
    folder = path
    if not any(checkpoint_files(path, n)[0].is_file() for n in ("checkpoint_final", "checkpoint_best",
                                                               "checkpoint_latest")):
        folder = _fold_folder(path)
    for name in ("checkpoint_final", "checkpoint_best", "checkpoint_latest"):
        weights = checkpoint_files(folder, name)[0]
        if weights.is_file():
            return weights, name if checkpoint_files(folder, name)[2].is_file() else None
    raise PretrainedError(f"{folder}: no checkpoint to start from")  # pragma: no cover - _fold_folder checked


def load_source(path: str | Path) -> PretrainedSource:
    """Read the pretrained weights (safetensors only), checked against their checkpoint JSON if any."""
    weights_path, name = resolve_source(path)
    try:
        if name is not None:
            ckpt = load_checkpoint(weights_path.parent, name, verify=True, with_state=False)
            weights, meta = ckpt.weights, ckpt.meta
        else:
            weights, meta = load_weights(weights_path), None
    except CheckpointError as exc:
        raise PretrainedError(f"cannot read the pretrained model: {exc}") from exc
    return PretrainedSource(weights_path, file_sha256(weights_path), weights, meta)


def is_encoder_name(name: str) -> bool:
    """Whether the tensor ``name`` belongs to the encoder (see :data:`ENCODER_PREFIXES`)."""
    return name.split(".")[0].startswith(ENCODER_PREFIXES)


def first_conv_name(network: torch.nn.Module) -> str | None:
    """Name of the weight of the first convolution (the one that sees the input channels)."""
    for name, module in network.named_modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            return f"{name}.weight"
    return None


def adapt_first_conv(weight: torch.Tensor, in_channels: int, mode: str) -> torch.Tensor:
    """A first-convolution weight ``(out, C_s, ...)`` made for ``in_channels`` inputs.

    ``average``: every new channel is the mean over the source's channels; ``repeat``: new channel
    ``c`` is source channel ``c mod C_s``. Both are then scaled by ``C_s / in_channels`` so that an
    image given identically in every channel produces the same response as in the source network
    (exactly for ``average``; for ``repeat`` when ``in_channels`` is a multiple of ``C_s``).
    """
    source_channels = weight.shape[1]
    if mode == "average":
        base = weight.mean(dim=1, keepdim=True).expand(-1, in_channels, *weight.shape[2:])
    elif mode == "repeat":
        base = weight[:, [c % source_channels for c in range(in_channels)]]
    else:
        raise PretrainedError(f"--pretrained-channels must be one of {CHANNEL_MODES}, found {mode!r}")
    return (base * (source_channels / in_channels)).contiguous()


def _mismatch_reason(name: str, have: tuple, want: tuple, first_conv: str | None, num_classes: int) -> str:
    if len(have) == len(want) and have[0] == want[0] and have[2:] == want[2:] and name == first_conv:
        return (f"first convolution for another channel count (pretrained {have[1]} input channel(s), this "
                f"network {want[1]}); --pretrained-channels average|repeat adapts it")
    if len(have) == len(want) and have[1:] == want[1:] and want[0] == num_classes:
        return f"segmentation head for another label set (pretrained {have[0]} outputs, this network {want[0]})"
    return f"shape {list(have)} in the pretrained model, {list(want)} in this network"


def transfer_weights(network: torch.nn.Module, source: dict[str, torch.Tensor], num_classes: int,
                     channels: str | None = None) -> TransferReport:
    """Copy every tensor of ``source`` whose name and shape fit ``network``; report the rest.

    Raises :class:`PretrainedError`, leaving ``network`` untouched, when no encoder tensor fits.
    """
    target = network.state_dict()
    first_conv = first_conv_name(network)
    report, new_values = TransferReport(), {}
    for name, want in target.items():
        if name not in source:
            report.skipped[name] = "not in the pretrained model (kept as initialised)"
            continue
        have = source[name]
        if tuple(have.shape) == tuple(want.shape):
            new_values[name] = have
            report.loaded.append(name)
            continue
        reason = _mismatch_reason(name, tuple(have.shape), tuple(want.shape), first_conv, num_classes)
        if reason.startswith("first convolution") and channels is not None:
            new_values[name] = adapt_first_conv(have, want.shape[1], channels)
            report.adapted[name] = f"{have.shape[1]} -> {want.shape[1]} input channels by {channels}"
        else:
            report.skipped[name] = reason
    for name in source:
        if name not in target:
            report.skipped[name] = "not in this network (dropped)"
    encoder = [n for n in target if is_encoder_name(n)] or list(target)
    if not any(n in new_values for n in encoder):
        shown = "; ".join(f"{n}: {report.skipped[n]}" for n in encoder[:3])
        raise PretrainedError(f"no tensor of the encoder fits the pretrained model ({shown}); it was made for "
                              "another architecture or topology (use `unetkit plan --plans-from` or the same --arch)")
    with torch.no_grad():
        for name, value in new_values.items():
            target[name].copy_(value.to(dtype=target[name].dtype))
    return report


def encoder_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The encoder's parameters (empty when the network names no module as an encoder)."""
    return [p for n, p in network.named_parameters() if is_encoder_name(n)]


def set_encoder_trainable(network: torch.nn.Module, trainable: bool) -> int:
    """Freeze (``False``) or unfreeze the encoder; returns how many parameter tensors it touched."""
    params = encoder_parameters(network)
    if not params:
        raise PretrainedError(f"{type(network).__name__} has no module named as an encoder "
                              f"({', '.join(ENCODER_PREFIXES)}...); freeze_encoder_iterations cannot apply")
    for p in params:
        p.requires_grad_(trainable)
    return len(params)


__all__ = ["CHANNEL_MODES", "ENCODER_PREFIXES", "PretrainedError", "PretrainedSource", "TransferReport",
           "adapt_first_conv", "encoder_parameters", "first_conv_name", "is_encoder_name", "load_source",
           "resolve_source", "set_encoder_trainable", "transfer_weights"]
