"""``plan_dataset``: fingerprint a raw dataset (or reuse its fingerprint) and write plans.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from unetkit.data.dataset import load_dataset
from unetkit.data.errors import DataError
from unetkit.data.signature import dataset_signatures
from unetkit.planning.planner import DEVICE_MEMORY_GB, NetworkRules, PlannerSettings, network_rules, plan_experiment
from unetkit.planning.plans import validate_plans
from unetkit.planning.jsonfmt import write_readable_json
from unetkit.utils.atomic import read_json
from unetkit.utils.paths import WorkPaths


def budget_for(memory_gb: float | None, device: str | None, rules: NetworkRules | None = None) -> float:
    """The planning budget (GB): ``memory_gb`` when given, else the device preset.

    The ``gpu`` preset (also the default) is the planner's own target: 8 GB for the default
    planner and ResEnc M, 24 GB for ResEnc L, 40 GB for ResEnc XL (nnU-Net's values).
    """
    if memory_gb is not None:
        if memory_gb <= 0:
            raise ValueError(f"memory budget must be positive, got {memory_gb} GB")
        return float(memory_gb)
    device = device or "gpu"
    if device not in DEVICE_MEMORY_GB:
        raise ValueError(f"unknown device preset {device!r}; choose one of {sorted(DEVICE_MEMORY_GB)}")
    if device == "gpu" and rules is not None:
        return float(rules.default_memory_gb)
    return DEVICE_MEMORY_GB[device]


def _fingerprint_staleness(fp: dict, signatures: dict[str, str], num_channels: int) -> str | None:
    """Why ``fp`` does not describe the dataset as it is now, or None when it does.

    A fingerprint of another version of the dataset (cases added, removed, renamed, or a file
    edited in place) would silently mislead the planner; it is re-extracted instead.
    """
    from unetkit.data.signature import compare_signatures

    recorded = fp.get("case_signatures")
    if not isinstance(recorded, dict):
        return "it records no file signatures (made by an older unetkit)"
    if fp.get("num_channels") != num_channels:
        return f"it has {fp.get('num_channels')} channel(s), dataset.json now declares {num_channels}"
    diff = compare_signatures(recorded, signatures)
    if diff:
        return f"the raw data changed since ({diff.describe()})"
    return None


def plan_dataset(dataset_root: str | Path, workdir: str | Path | None = None, memory_gb: float | None = None,
                 num_processes: int | None = None, force: bool = False, device: str | None = None,
                 name: str | None = None, log: Callable[[str], None] | None = None,
                 progress: Callable[[int, int], None] | None = None, planner: str = "default",
                 plans_from: str | Path | None = None) -> Path:
    """Write ``WORKDIR/NAME/fingerprint.json`` and ``plans.json`` for a raw dataset.

    Args:
        dataset_root: raw dataset folder (dataset.json, imagesTr, labelsTr).
        workdir: work root (default ``./unetkit_work``); NAME is the dataset folder's name.
        memory_gb: planning budget in nnU-Net's GPU-memory units (8 = nnU-Net's default).
            ``None`` takes the ``device`` preset (``gpu``, the default: the planner's own target).
        num_processes: fingerprint worker processes (default: CPUs, at most 8).
        force: re-extract the fingerprint even if fingerprint.json exists and matches the
            dataset's cases.
        device: ``"gpu"`` or ``"cpu"`` budget preset, used when ``memory_gb`` is None.
        name: dataset name in the work folder (default: the folder's name).
        log: optional callback for one-line progress messages.
        progress: optional ``progress(done, total)`` callback during fingerprinting.
        planner: ``default`` (nnU-Net's ExperimentPlanner, plain U-Net) or ``resenc_m``,
            ``resenc_l``, ``resenc_xl`` (nnU-Net's nnUNetPlannerResEncM/L/XL: plans for the
            ``resenc_unet_*`` models).
        plans_from: another dataset's plans.json or work folder whose network, patch and batch
            the shared configurations take (:mod:`unetkit.planning.transfer`), so that a model
            trained there can be fine-tuned here; spacing and normalization stay this dataset's.

    Returns:
        Path of the written plans.json.
    """
    from unetkit.utils.locks import folder_lock

    from unetkit.planning.transfer import load_source_plans

    say = log or (lambda message: None)
    rules = network_rules(planner)
    budget = budget_for(memory_gb, device, rules)
    dataset = load_dataset(dataset_root)
    paths = WorkPaths.for_dataset(dataset_root, workdir, name)
    source = load_source_plans(plans_from) if plans_from is not None else None  # checked before any work
    with folder_lock(paths.root, "unetkit plan"):
        return _plan_locked(dataset, dataset_root, paths, PlannerSettings(memory_gb=budget, network=rules), memory_gb,
                            device, num_processes, force, say, progress, source)


def _current_fingerprint(dataset, paths: WorkPaths, num_processes: int | None, force: bool,
                         say: Callable[[str], None], progress: Callable[[int, int], None] | None) -> dict:
    """fingerprint.json when it describes the raw files as they are now, else a new extraction."""
    from unetkit.data.fingerprint import extract_fingerprint, load_fingerprint

    cases = dataset.training_cases()
    # Taken before the files are read: an edit during extraction shows up on the next run.
    signatures = dataset_signatures(cases)
    if paths.fingerprint.is_file() and not force:
        try:
            fingerprint = load_fingerprint(paths.fingerprint)
        except DataError as exc:
            say(f"existing fingerprint unusable ({exc.message}); extracting again")
        else:
            stale = _fingerprint_staleness(fingerprint, signatures, dataset.num_channels)
            if stale is None:
                say(f"reusing fingerprint {paths.fingerprint} (use --force to extract again)")
                return fingerprint
            say(f"existing fingerprint is out of date: {stale}; extracting again")
    say(f"extracting fingerprint of {len(cases)} cases")
    fingerprint = extract_fingerprint(dataset, num_processes=num_processes, progress=progress)
    fingerprint["dataset_name"] = paths.root.name
    fingerprint["case_signatures"] = signatures
    write_readable_json(paths.fingerprint, fingerprint)
    return fingerprint


def _plan_locked(dataset, dataset_root, paths: WorkPaths, settings: PlannerSettings, memory_gb: float | None,
                 device: str | None, num_processes: int | None, force: bool, say: Callable[[str], None],
                 progress: Callable[[int, int], None] | None, source: tuple[dict, Path] | None = None) -> Path:
    from unetkit.planning.transfer import transfer_plans

    fingerprint = _current_fingerprint(dataset, paths, num_processes, force, say, progress)
    plans = plan_experiment(fingerprint, {str(k): v for k, v in dataset.channel_names.items()},
                            {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataset.labels.items()},
                            num_segmentation_heads=dataset.num_segmentation_heads,
                            settings=settings)
    plans["dataset_name"] = paths.root.name
    # Where the raw data lives and its file format: the end-of-training validation writes its
    # predictions in that format and evaluates them against the raw labelsTr.
    plans["raw_dataset"] = str(Path(dataset_root).resolve())
    plans["file_ending"] = dataset.file_ending
    if dataset.regions_class_order is not None:
        # Region-based datasets: training and inference need the order in which regions are
        # painted back into one label map (nnU-Net's regions_class_order).
        plans["regions_class_order"] = list(dataset.regions_class_order)
    if device is not None and memory_gb is None:
        plans["device_preset"] = device
    if source is not None:
        plans = transfer_plans(plans, source[0], source[1], say)
    validate_plans(plans, paths.plans)

    # Like nnU-Net: configurations a person added to an existing plans.json are kept; the
    # generated ones are replaced.
    if paths.plans.is_file():
        try:
            old = read_json(paths.plans)
            extra = {k: v for k, v in old.get("configurations", {}).items() if k not in plans["configurations"]}
        except (ValueError, AttributeError, json.JSONDecodeError):
            extra = {}
        # A cascade whose previous stage the new plan no longer has goes, with that stage's old entry.
        stages = {k: v for k, v in extra.items() if isinstance(v, dict)}
        orphans = {k for k, v in stages.items()
                   if v.get("previous_stage") and v["previous_stage"] not in plans["configurations"]}
        orphans |= {k for k, v in stages.items() if v.get("next_stage") in orphans}
        if orphans:
            say(f"dropping {sorted(orphans)} from the existing plans.json: the cascade is no longer planned")
            extra = {k: v for k, v in extra.items() if k not in orphans}
        if extra:
            say(f"keeping hand-added configurations {sorted(extra)} from the existing plans.json")
            plans["configurations"].update(extra)
            validate_plans(plans, paths.plans)
    _write_if_changed(paths.plans, plans, say)
    return paths.plans


def _write_if_changed(path: Path, plans: dict, say: Callable[[str], None]) -> None:
    """Write plans.json unless it already holds exactly ``plans`` (a refingerprint that plans alike)."""
    from unetkit.planning.jsonfmt import dumps

    try:
        if path.is_file() and read_json(path) == json.loads(dumps(plans)):
            say(f"plans unchanged: {path}")
            return
    except ValueError:
        pass
    write_readable_json(path, plans)
