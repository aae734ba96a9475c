"""Plan a dataset with another dataset's network (nnU-Net's ``move_plans_between_datasets``).

``unetkit plan TARGET --plans-from SOURCE`` plans TARGET as usual (its own fingerprint, so its own
target spacing, transposition and intensity normalization), then replaces, in every configuration
both plans have, the network (``architecture``: name and topology), the patch and the batch size by
the source's. The weights of a model trained on the source then fit a network trained on the
target (``unetkit train --pretrained``). A configuration only the target has keeps its own plan;
one only the source has is not copied (it would need preprocessing the target was not planned for).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

from unetkit.planning.plans import PlansError, load_plans, resolve_configuration

#: Keys of a configuration taken from the source: what the weights' shapes depend on, and the
#: patch/batch the source's network was sized for.
TRANSFERRED_KEYS = ("architecture", "patch_size", "batch_size", "estimated_feature_map_elements")


def source_plans_path(source: str | Path) -> Path:
    """``plans.json`` itself, or the one in a work folder ``WORKDIR/NAME``."""
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        path = path / "plans.json"
    if not path.is_file():
        raise PlansError(f"--plans-from: no plans.json at {path} (give a plans.json or the source's work folder "
                         "WORKDIR/NAME)", path)
    return path


def transfer_plans(target: dict, source: dict, source_path: Path,
                   say: Callable[[str], None] = lambda message: None) -> dict:
    """``target`` with the network, patch and batch of ``source`` in every shared configuration."""
    plans = copy.deepcopy(target)
    moved = []
    for name, entry in plans["configurations"].items():
        if name not in source.get("configurations", {}):
            say(f"--plans-from: {source_path} has no configuration {name!r}; {name} keeps its own plan")
            continue
        theirs = resolve_configuration(source["configurations"], name, source_path)
        if len(theirs["patch_size"]) != len(resolve_configuration(plans["configurations"], name)["spacing"]):
            say(f"--plans-from: configuration {name!r} has another number of axes in {source_path}; kept")
            continue
        for key in TRANSFERRED_KEYS:
            if key in theirs:
                entry[key] = copy.deepcopy(theirs[key])
        moved.append(name)
    if not moved:
        raise PlansError(f"--plans-from: no configuration of {source_path} "
                         f"({sorted(source.get('configurations', {}))}) matches the target's "
                         f"({sorted(plans['configurations'])})", source_path)
    channels = (source.get("num_input_channels"), plans.get("num_input_channels"))
    if channels[0] != channels[1]:
        say(f"--plans-from: the source has {channels[0]} input channel(s), the target {channels[1]}: the first "
            "convolution will not fit (unetkit train --pretrained-channels average|repeat adapts it)")
    plans["plans_from"] = {"path": str(source_path), "dataset_name": source.get("dataset_name"),
                           "configurations": moved, "keys": list(TRANSFERRED_KEYS)}
    say(f"--plans-from: network, patch and batch of {moved} taken from {source_path}; spacing and "
        "normalization are the target's own")
    return plans


def load_source_plans(source: str | Path) -> tuple[dict, Path]:
    """The source's validated plans and the path they came from."""
    path = source_plans_path(source)
    return load_plans(path), path


__all__ = ["TRANSFERRED_KEYS", "load_source_plans", "source_plans_path", "transfer_plans"]
