"""Read plans.json and check that it holds what later stages need.

plans.json is meant to be edited by hand (a larger patch, another batch size, a variant
configuration), so it is validated on every read: a missing or ill-typed key is a
:class:`PlansError` naming the file, the configuration and the key, instead of a KeyError deep
inside preprocessing or training.

A configuration may inherit from another one and override a few keys, as in nnU-Net::

    "3d_fullres_bs4": {"inherits_from": "3d_fullres", "batch_size": 4}

:func:`load_plans` resolves such entries (a shallow update of the parent's keys) so readers
always see complete configurations.
"""

from __future__ import annotations

import copy
from pathlib import Path

from unetkit.data.errors import DataError
from unetkit.utils.names import require_name

SUPPORTED_FORMAT_VERSIONS = (1,)
TOP_LEVEL_KEYS = ("format_version", "num_input_channels", "channel_names", "labels", "num_segmentation_heads",
                  "transpose_forward", "transpose_backward", "foreground_intensity_properties_per_channel",
                  "configurations")
CONFIGURATION_KEYS = ("data_identifier", "spacing", "patch_size", "batch_size", "batch_dice",
                      "normalization_schemes", "use_mask_for_norm", "resampling", "architecture")
ARCHITECTURE_KWARGS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                       "n_conv_per_stage_decoder")
RESAMPLING_KEYS = ("image_order", "label_order", "anisotropy_threshold", "separate_axis_order")
NORMALIZATION_SCHEMES = ("CT", "ZScore", "NoNorm", "RescaleTo01", "RGBTo01")


class PlansError(DataError):
    """plans.json is missing, malformed, or lacks a key a later stage needs."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_int_list(v, length: int | None = None, positive: bool = True) -> bool:
    return (isinstance(v, list) and (length is None or len(v) == length)
            and all(_is_int(x) and (x > 0 or not positive) for x in v))


def resolve_configuration(configurations: dict, name: str, path: Path | None = None) -> dict:
    """The configuration ``name`` with any ``inherits_from`` chain applied (parents first)."""
    seen: list[str] = []
    chain: list[dict] = []
    current = name
    while True:
        if current in seen:
            raise PlansError(f"configuration {name!r}: 'inherits_from' forms a cycle ({' -> '.join(seen + [current])})",
                             path)
        if current not in configurations:
            where = f"configuration {seen[-1]!r} inherits from" if seen else "no configuration"
            raise PlansError(f"{where} {current!r}; available: {sorted(configurations)}", path)
        seen.append(current)
        entry = configurations[current]
        if not isinstance(entry, dict):
            raise PlansError(f"configuration {current!r} must be a JSON object", path)
        chain.append(entry)
        parent = entry.get("inherits_from")
        if parent is None:
            break
        current = parent
    merged: dict = {}
    for entry in reversed(chain):
        merged.update(copy.deepcopy({k: v for k, v in entry.items() if k != "inherits_from"}))
    return merged


def validate_configuration(name: str, cfg: dict, num_channels: int, path: Path | None = None) -> None:
    """Check one resolved configuration's keys, types and mutual consistency."""
    def fail(message: str) -> None:
        raise PlansError(f"configuration {name!r}: {message}", path)

    for key in CONFIGURATION_KEYS:
        if key not in cfg:
            fail(f"missing key {key!r}")
    spacing = cfg["spacing"]
    if not (isinstance(spacing, list) and len(spacing) in (2, 3)
            and all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in spacing)):
        fail(f"'spacing' must be 2 or 3 positive numbers (mm), found {spacing!r}")
    ndim = len(spacing)
    if not _is_int_list(cfg["patch_size"], ndim):
        fail(f"'patch_size' must be {ndim} positive integers (voxels), found {cfg['patch_size']!r}")
    if not (_is_int(cfg["batch_size"]) and cfg["batch_size"] > 0):
        fail(f"'batch_size' must be a positive integer, found {cfg['batch_size']!r}")
    if not isinstance(cfg["batch_dice"], bool):
        fail(f"'batch_dice' must be true or false, found {cfg['batch_dice']!r}")
    schemes = cfg["normalization_schemes"]
    if not (isinstance(schemes, list) and len(schemes) == num_channels and all(s in NORMALIZATION_SCHEMES
                                                                             for s in schemes)):
        fail(f"'normalization_schemes' must list one of {list(NORMALIZATION_SCHEMES)} per channel "
             f"({num_channels}), found {schemes!r}")
    masks = cfg["use_mask_for_norm"]
    if not (isinstance(masks, list) and len(masks) == num_channels and all(isinstance(m, bool) for m in masks)):
        fail(f"'use_mask_for_norm' must list true/false per channel ({num_channels}), found {masks!r}")
    resampling = cfg["resampling"]
    if not isinstance(resampling, dict):
        fail("'resampling' must be an object")
    for key in RESAMPLING_KEYS:
        if key not in resampling:
            fail(f"missing key 'resampling.{key}'")
    arch = cfg["architecture"]
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        fail("'architecture' must be an object with a 'name' string")
    kwargs = arch.get("kwargs")
    if not isinstance(kwargs, dict):
        fail("missing key 'architecture.kwargs'")
    if arch["name"] != "plain_unet":
        return  # other architectures validate their own kwargs in unetkit.models
    for key in ARCHITECTURE_KWARGS:
        if key not in kwargs:
            fail(f"missing key 'architecture.kwargs.{key}'")
    n = kwargs["n_stages"]
    if not (_is_int(n) and n >= 1):
        fail(f"'architecture.kwargs.n_stages' must be a positive integer, found {n!r}")
    for key in ("features_per_stage", "n_conv_per_stage"):
        if not _is_int_list(kwargs[key], n):
            fail(f"'architecture.kwargs.{key}' must be {n} positive integers, found {kwargs[key]!r}")
    if not _is_int_list(kwargs["n_conv_per_stage_decoder"], n - 1):
        fail(f"'architecture.kwargs.n_conv_per_stage_decoder' must be {n - 1} positive integers, "
             f"found {kwargs['n_conv_per_stage_decoder']!r}")
    for key in ("kernel_sizes", "strides"):
        value = kwargs[key]
        if not (isinstance(value, list) and len(value) == n and all(_is_int_list(v, ndim) for v in value)):
            fail(f"'architecture.kwargs.{key}' must be {n} lists of {ndim} positive integers, found {value!r}")
    divisor = [1] * ndim
    for stride in kwargs["strides"]:
        divisor = [d * s for d, s in zip(divisor, stride)]
    if any(p % d for p, d in zip(cfg["patch_size"], divisor)):
        fail(f"'patch_size' {cfg['patch_size']} is not divisible by the network's total stride {divisor}; "
             "change the patch or the strides together")


def _check_stages(name: str, cfg: dict, configurations: dict, path: Path | None) -> None:
    """``previous_stage`` / ``next_stage`` (the cascade) must name configurations of the plans."""
    stages = [("previous_stage", cfg.get("previous_stage"))]
    nxt = cfg.get("next_stage")
    stages += [("next_stage", n) for n in (nxt if isinstance(nxt, list) else [nxt])]
    for key, other in stages:
        if other is not None and other not in configurations:
            raise PlansError(f"configuration {name!r}: {key} {other!r} is not a configuration of the plans; "
                             f"available: {sorted(configurations)}", path)


def validate_plans(plans: dict, path: Path | None = None) -> dict:
    """Check a plans dictionary and return it with every configuration resolved.

    Raises:
        PlansError: naming the missing or malformed key (and configuration).
    """
    if not isinstance(plans, dict):
        raise PlansError("plans must be a JSON object", path)
    for key in TOP_LEVEL_KEYS:
        if key not in plans:
            raise PlansError(f"missing key {key!r}", path)
    if plans["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        raise PlansError(f"format_version {plans['format_version']!r} is not supported "
                         f"({list(SUPPORTED_FORMAT_VERSIONS)}); rerun `unetkit plan`", path)
    num_channels = plans["num_input_channels"]
    if not (_is_int(num_channels) and num_channels > 0):
        raise PlansError(f"'num_input_channels' must be a positive integer, found {num_channels!r}", path)
    for key in ("transpose_forward", "transpose_backward"):
        t = plans[key]
        if not (isinstance(t, list) and sorted(t) == list(range(len(t))) and len(t) in (2, 3)):
            raise PlansError(f"{key!r} must be a permutation of the spatial axes, found {t!r}", path)
    if not isinstance(plans["configurations"], dict) or not plans["configurations"]:
        raise PlansError("'configurations' must be a non-empty object", path)
    resolved = dict(plans)
    resolved["configurations"] = {}
    for name in plans["configurations"]:
        # Both become folder names: models/CONFIG__ARCH/ and preprocessed/DATA_IDENTIFIER/.
        require_name(name, "configuration name (key of \"configurations\")", path, PlansError)
        cfg = resolve_configuration(plans["configurations"], name, path)
        validate_configuration(name, cfg, num_channels, path)
        _check_stages(name, cfg, plans["configurations"], path)
        require_name(cfg.get("data_identifier"), f"configurations.{name}.data_identifier", path, PlansError)
        resolved["configurations"][name] = cfg
    return resolved


def load_plans(path: str | Path) -> dict:
    """Read and validate plans.json; configurations come back resolved (no ``inherits_from``).

    Raises:
        PlansError: the file is missing or malformed, or a key later stages need is missing.
    """
    from unetkit.utils.atomic import read_json

    path = Path(path)
    if not path.is_file():
        raise PlansError("plans not found; run `unetkit plan DATASET` first", path)
    try:
        plans = read_json(path)
    except ValueError as exc:
        raise PlansError(str(exc).split(": ", 1)[-1], path) from exc
    return validate_plans(plans, path)


def configuration(plans: dict, name: str) -> dict:
    """One configuration of loaded plans, with a clear error listing the available ones."""
    configs = plans.get("configurations", {})
    if name not in configs:
        raise PlansError(f"configuration {name!r} is not in the plans; available: {sorted(configs)}")
    return configs[name]
