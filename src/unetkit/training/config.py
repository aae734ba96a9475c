"""Training hyperparameters as one plain, JSON-serializable dataclass.

Every number that shapes a training run lives in :class:`TrainingConfig`, with nnU-Net v2's
defaults (SGD with Nesterov momentum 0.99, learning rate 1e-2, weight decay 3e-5, polynomial
decay with exponent 0.9 over 1000 epochs of 250 iterations, gradient norm clipped at 12).
Nothing is hard-coded in the trainer and nothing is changed by subclassing: a value is taken,
in increasing priority, from

1. the defaults below,
2. the optional ``"training"`` object of the configuration's entry in ``plans.json``
   (for instance ``{"epochs": 300, "lr": 0.005}``),
3. the command line (``unetkit train --epochs 50``).

``batch_size`` and ``arch`` default to ``None``, meaning "what the plan says".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


class ConfigError(ValueError):
    """A training setting is unknown or has an invalid value; the message names the source."""


@dataclass
class TrainingConfig:
    """All settings of one training run (nnU-Net v2's values by default)."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    batch_size: int | None = None          # global batch (all processes together); None: the plan's
    lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    nesterov: bool = True
    poly_exponent: float = 0.9
    grad_clip: float = 12.0                # max L2 norm of all gradients together
    arch: str | None = None                # model registry name; None: the plan's architecture
    deep_supervision: bool = True
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_smooth: float = 1e-5
    batch_dice: bool | None = None         # None: the plan's ``batch_dice``
    oversample_foreground: float = 0.33    # share of each batch centred on a foreground voxel
    ema_momentum: float = 0.9              # pseudo-Dice moving average used for the best checkpoint
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    compile: bool = False                  # torch.compile the network
    amp: bool = True                       # mixed precision (CUDA only; ignored on the CPU)
    channels_last: bool | None = None      # channels-last memory format; None: on the CPU only, where
                                           # it made the 3D step 1.24x faster (docs/training.md)
    num_workers: int = 2                   # data-loading worker threads/processes; 0: in the main process
    prefetch: int = 2                      # batches prepared ahead per worker
    seed: int = 12345                      # network initialisation and the per-batch data seeds
    init_candidates: int = 4               # networks drawn; the one with the lowest loss on the first
                                           # batches is trained (1: nnU-Net's single draw; init_selection)
    deterministic: bool = False            # deterministic kernels (slower); needed for exact resume
    save_every: int = 1                    # write checkpoint_latest every N epochs
    plot_every: int = 1                    # redraw progress.png every N epochs
    pretrained: str | None = None          # checkpoint/model folder to start from (fine-tuning)
    pretrained_channels: str | None = None # average | repeat: adapt a first conv made for other channels
    freeze_encoder_iterations: int = 0     # train with the encoder frozen for this many iterations first
    extra: dict = field(default_factory=dict)  # free-form notes carried into checkpoints

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, every field included (stored in training_config.json and checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "training config") -> "TrainingConfig":
        """Build from a mapping; unknown keys and wrong types are a :class:`ConfigError`."""
        return cls().updated(values, source)

    def updated(self, values: Mapping[str, Any] | None, source: str) -> "TrainingConfig":
        """Return a copy with ``values`` applied (``None`` values are skipped), checked.

        ``source`` names where the values came from (``plans.json: configurations.2d.training``,
        ``command line``) so that an error tells the user which file or option to fix.
        """
        if not values:
            return dataclasses.replace(self)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected an object of training settings, found {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown training setting {key!r}; known settings: "
                                  f"{', '.join(sorted(known))}")
            if value is None:
                continue
            changes[key] = _coerce(key, value, known[key].type, source)
        new = dataclasses.replace(self, **changes)
        new.validate(source)
        return new

    def validate(self, source: str = "training config") -> None:
        """Raise :class:`ConfigError` for values that cannot work (non-positive counts, ...)."""
        positive_ints = ("epochs", "iterations_per_epoch", "save_every", "plot_every", "init_candidates")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: {name} must be at least 1, found {getattr(self, name)}")
        for name in ("val_iterations", "num_workers", "prefetch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{source}: {name} must be 0 or more, found {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"{source}: batch_size must be at least 1, found {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"{source}: lr must be positive, found {self.lr}")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise ConfigError(f"{source}: weight_decay must be >= 0 and grad_clip > 0")
        if not 0.0 <= self.oversample_foreground <= 1.0:
            raise ConfigError(f"{source}: oversample_foreground must lie in [0, 1], found {self.oversample_foreground}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError(f"{source}: ema_momentum must lie in [0, 1), found {self.ema_momentum}")
        if self.freeze_encoder_iterations < 0:
            raise ConfigError(f"{source}: freeze_encoder_iterations must be 0 or more, "
                              f"found {self.freeze_encoder_iterations}")
        if self.pretrained_channels not in (None, "average", "repeat"):
            raise ConfigError(f"{source}: pretrained_channels must be average or repeat, "
                              f"found {self.pretrained_channels!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{source}: device must be auto, cpu, cuda or cuda:N, found {self.device!r}")


_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}


def _coerce(key: str, value: Any, annotation: Any, source: str) -> Any:
    """Check ``value`` against the field's annotation (a string under postponed evaluation)."""
    text = str(annotation)
    allowed = [t for name, t in _TYPES.items() if name in text.replace("None", "")]
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{source}: {key} must be {' or '.join(t.__name__ for t in allowed)}, found {value!r}")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tuple(allowed)):
        return value
    raise ConfigError(f"{source}: {key} must be {' or '.join(t.__name__ for t in allowed)}, found {value!r}")


def resolve_config(plan_configuration: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   configuration_name: str = "?") -> TrainingConfig:
    """Defaults, then the plan's ``training`` object, then ``overrides`` (the command line wins).

    Unset plan-dependent values (``batch_size``, ``arch``, ``batch_dice``) are filled in from the
    configuration entry, so the returned config states exactly what the run will do.
    """
    config = TrainingConfig().updated(plan_configuration.get("training"),
                                      f"plans.json: configurations.{configuration_name}.training")
    config = config.updated(overrides, "command line")
    fill: dict[str, Any] = {}
    if config.batch_size is None:
        fill["batch_size"] = int(plan_configuration["batch_size"])
    if config.arch is None:
        fill["arch"] = str(plan_configuration["architecture"]["name"])
    if config.batch_dice is None:
        fill["batch_dice"] = bool(plan_configuration.get("batch_dice", False))
    return dataclasses.replace(config, **fill)
