"""``unetkit bench``: run a suite of models x datasets x splits and collect every per-case metric.

The driver (this module) does everything that must happen once and in one place, then fans the
runs out:

1. read and check the suite (:mod:`unetkit.benchmark.suite`); copy it into the results folder;
2. per dataset, build a *view* of the raw data in ``work/NAME/raw/`` (symbolic links: the
   training pool as ``imagesTr``/``labelsTr``, each split's test cases under
   ``work/NAME/tests/FOLD/{images,labels}``), so held-out test cases never enter the fingerprint,
   the plans or the training cache;
3. plan and preprocess every dataset **once** with the suite's planner budget: all runs of a
   dataset share one plans.json (the same patch, spacing and normalisation for every model)
   and nobody races to write it; models with keyword arguments get their own configuration
   ``CONFIG_LABEL`` that inherits everything from the dataset's configuration but the
   architecture;
4. write ``runs/RUN_ID/spec.json`` per run and execute the runs not finished yet, each in its own
   process (:mod:`unetkit.benchmark.worker`): local subprocesses (``--jobs N`` at a time) or
   Ray tasks (``--backend ray``, ``--address`` to join a cluster);
5. zero-shot runs (a model trained on A evaluated on B's test cases with A's plans) once their
   source runs are done;
6. rebuild runs.csv, table.csv, zero_shot.csv and cases.csv from ``runs/*/``
   (:mod:`unetkit.benchmark.tables`) and finish metadata.json.

A run with ``run.json`` status ``done`` is skipped on a rerun; a failed one is retried only with
``retry_failed``. The folder format is docs/benchmark_results.md; the suite format
docs/benchmark.md.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from unetkit.benchmark.suite import (
    DatasetSpec,
    ModelSpec,
    Suite,
    SuiteError,
    check_zero_shot_labels,
    load_suite,
    validate_models,
)
from unetkit.benchmark.tables import rebuild_tables
from unetkit.benchmark.worker import cpu_name, now_iso
from unetkit.utils.atomic import atomic_write_json, atomic_write_text, read_json

Log = Callable[[str], None]
#: Plan keywords every U-Net-like family understands (kept when another family rejects the rest).
TOPOLOGY_KEYS = ("n_stages", "features_per_stage", "kernel_sizes", "strides")
#: Spec keys that must match for a finished run to count as a result of the current suite.
SPEC_IDENTITY = ("arch", "model_kwargs", "configuration", "train_fold", "training", "test_cases", "predict")


# ----------------------------------------------------------------------------- datasets

@dataclass
class TestSet:
    fold: str                       # "0".."4" or "test"
    train_fold: int | str           # the trainer's fold: the CV fold, or "all" for a fixed split
    images: Path                    # folder of CASE_XXXX.ext links
    labels: Path                    # folder of CASE.ext links
    case_images: dict[str, list[str]] = field(default_factory=dict)   # case -> original channel files


@dataclass
class PreparedDataset:
    name: str
    configuration: str
    model_configurations: dict[str, str]       # model label -> configuration name
    tests: dict[str, TestSet]
    labels: dict[str, Any]
    info: dict[str, Any]                       # the datasets.json entry


def _select_evenly(names: list[str], count: int) -> list[str]:
    """``count`` names spread evenly over the sorted list (deterministic, no clustering at one end)."""
    if count >= len(names):
        return list(names)
    index = np.unique(np.round(np.linspace(0, len(names) - 1, count)).astype(int))
    return [names[i] for i in index]


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (absolute), replacing a link that points elsewhere."""
    target = target.resolve()
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return
        link.unlink()
    elif link.exists():
        link.unlink()
    link.symlink_to(target)


def _fill_folder(folder: Path, files: dict[str, Path]) -> None:
    """Make ``folder`` hold exactly the links ``{name: target}`` (stale links from an earlier suite removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for existing in folder.iterdir():
        if existing.name not in files and (existing.is_symlink() or existing.is_file()):
            existing.unlink()
    for name, target in files.items():
        _link(target, folder / name)


def _case_files(cases: list, ending: str) -> tuple[dict[str, Path], dict[str, Path]]:
    images, labels = {}, {}
    for case in cases:
        for c, path in enumerate(case.images):
            images[f"{case.name}_{c:04d}{ending}"] = Path(path)
        labels[f"{case.name}{ending}"] = Path(case.label)
    return images, labels


def _labelled_test_cases(root: Path, where: str) -> tuple[list, str]:
    """Cases of ``root/imagesTs`` with their ``root/labelsTs`` files."""
    from unetkit.data.dataset import Case, load_dataset

    raw = load_dataset(root)
    cases = []
    missing = []
    for case in raw.test_cases():
        label = root / "labelsTs" / f"{case.name}{raw.file_ending}"
        if not label.is_file():
            missing.append(case.name)
        cases.append(Case(case.name, case.images, label))
    if not cases:
        raise SuiteError(f"{where}: test: imagesTs, but {root / 'imagesTs'} holds no images")
    if missing:
        raise SuiteError(f"{where}: test: imagesTs needs a label per test image in {root / 'labelsTs'}; "
                         f"missing for {len(missing)} case(s): {', '.join(missing[:5])}")
    return cases, raw.file_ending


def build_view(spec: DatasetSpec, work: Path, where: str) -> tuple[Path, dict[str, TestSet], dict[str, Any]]:
    """Write the dataset's raw view and test folders; returns (view root, test sets, facts)."""
    from unetkit.data.dataset import load_dataset
    from unetkit.training.splits import load_or_create_splits
    from unetkit.utils.paths import WorkPaths

    if not (spec.raw / "dataset.json").is_file():
        raise SuiteError(f"{where}.raw: {spec.raw} is not a raw dataset (no dataset.json); import it first "
                         "with `unetkit import` (docs/datasets.md)")
    raw = load_dataset(spec.raw)
    cases = raw.training_cases()
    unlabelled = [c.name for c in cases if c.label is None or not Path(c.label).is_file()]
    if unlabelled:
        raise SuiteError(f"{where}.raw: {len(unlabelled)} training case(s) of {spec.raw} have no label: "
                         f"{', '.join(unlabelled[:5])}")
    by_name = {c.name: c for c in cases}
    names = sorted(by_name)
    if spec.max_cases:
        names = _select_evenly(names, spec.max_cases)
    split = spec.split
    test_ending = raw.file_ending
    if split.kind == "every":
        test_names = [n for i, n in enumerate(names) if i % split.every == split.offset]
        train_names = [n for n in names if n not in set(test_names)]
        test_cases = [by_name[n] for n in test_names]
    elif split.kind == "cases":
        unknown = [n for n in split.test_cases if n not in by_name]
        if unknown:
            raise SuiteError(f"{where}.test_cases: not cases of {spec.raw}: {', '.join(unknown[:5])} "
                             f"(cases look like {', '.join(names[:3])})")
        if spec.max_cases:
            names = sorted(set(names) | set(split.test_cases))
        train_names = [n for n in names if n not in set(split.test_cases)]
        test_cases = [by_name[n] for n in split.test_cases]
    elif split.kind == "imagesTs":
        train_names = names
        test_cases, test_ending = _labelled_test_cases(spec.raw, where)
    elif split.kind == "raw":
        if not (split.test_raw / "dataset.json").is_file():
            raise SuiteError(f"{where}.test.raw: {split.test_raw} is not a raw dataset (no dataset.json)")
        other = load_dataset(split.test_raw)
        train_names = names
        test_cases = other.training_cases()
        test_ending = other.file_ending
        if not test_cases:
            raise SuiteError(f"{where}.test.raw: {split.test_raw} has no labelled cases")
    else:
        train_names, test_cases = names, []
    if split.kind != "folds" and len(train_names) < 2:
        raise SuiteError(f"{where}: only {len(train_names)} training case(s) left after the split")

    paths = WorkPaths(work / spec.name)
    view = paths.root / "raw"
    images, labels = _case_files([by_name[n] for n in train_names], raw.file_ending)
    _fill_folder(view / "imagesTr", images)
    _fill_folder(view / "labelsTr", labels)
    dataset_json = {k: v for k, v in raw.spec.items() if k not in ("dataset", "numTest")}
    dataset_json.update({"name": spec.name, "numTraining": len(train_names),
                         "unetkit_bench_view_of": str(spec.raw)})
    atomic_write_json(view / "dataset.json", dataset_json)

    tests: dict[str, TestSet] = {}
    if split.kind == "folds":
        splits = load_or_create_splits(paths.splits, train_names)
        for fold in split.folds:
            if fold >= len(splits):
                raise SuiteError(f"{where}.folds: {paths.splits} has {len(splits)} folds; fold {fold} does not exist")
            fold_cases = [by_name[n] for n in splits[fold]["val"]]
            tests[str(fold)] = _test_set(paths.root, str(fold), fold, fold_cases, raw.file_ending)
    else:
        tests["test"] = _test_set(paths.root, "test", "all", test_cases, test_ending)
    # Cross-validation tests on the training pool itself; a fixed split adds its test cases.
    num_cases = len(train_names) + (len(test_cases) if split.kind != "folds" else 0)
    facts = {"num_cases": num_cases, "num_train_cases": len(train_names),
             "num_test_cases": sum(len(t.case_images) for t in tests.values()),
             "split": split.describe(), "view": str(view)}
    return view, tests, facts


def _test_set(root: Path, fold: str, train_fold: int | str, cases: list, ending: str) -> TestSet:
    images, labels = _case_files(cases, ending)
    folder = root / "tests" / fold
    _fill_folder(folder / "images", images)
    _fill_folder(folder / "labels", labels)
    case_images = {c.name: [str(Path(p).resolve()) for p in c.images] for c in cases}
    return TestSet(fold, train_fold, folder / "images", folder / "labels", case_images)


def _model_kwargs(model: ModelSpec, base: dict, plans: dict) -> dict[str, Any]:
    """The architecture keywords of a model's own configuration: the plan's topology + its kwargs.

    Mirrors what ``unetkit train --arch`` does (keep the plan's keywords the model takes, else
    only the topology); an invalid keyword of the suite is kept, so that run fails with the
    model's own error message, recorded in runs.csv.
    """
    import torch

    from unetkit.models import create_model

    plan_arch = base["architecture"]
    merged = {**plan_arch.get("kwargs", {}), **dict(model.kwargs)}
    if model.name == plan_arch["name"]:
        return merged
    try:
        with torch.device("meta"):
            create_model(model.name, len(base["patch_size"]), int(plans["num_input_channels"]),
                         int(plans["num_segmentation_heads"]), deep_supervision=False, **merged)
    except TypeError:
        merged = {**{k: v for k, v in plan_arch.get("kwargs", {}).items() if k in TOPOLOGY_KEYS},
                  **dict(model.kwargs)}
    except Exception:  # noqa: BLE001 - the run reports the model's error itself
        pass
    return merged


def _add_model_configurations(plans_path: Path, configuration: str, models: list[ModelSpec]) -> dict[str, str]:
    """Add ``CONFIG_LABEL`` configurations for models with kwargs or a label; return label -> configuration."""
    from unetkit.planning.jsonfmt import write_readable_json
    from unetkit.planning.plans import load_plans

    resolved = load_plans(plans_path)
    base = resolved["configurations"][configuration]
    raw_plans = read_json(plans_path)
    chosen: dict[str, str] = {}
    changed = False
    for model in models:
        if not model.kwargs and model.label == model.name:
            chosen[model.label] = configuration
            continue
        name = f"{configuration}_{model.label}"
        entry = {"inherits_from": configuration,
                 "architecture": {"name": model.name, "kwargs": _model_kwargs(model, base, resolved)}}
        if raw_plans["configurations"].get(name) != entry:
            raw_plans["configurations"][name] = entry
            changed = True
        chosen[model.label] = name
    if changed:
        write_readable_json(plans_path, raw_plans)
    return chosen


def prepare_dataset(suite: Suite, spec: DatasetSpec, work: Path, log: Log,
                    num_processes: int | None = None) -> PreparedDataset:
    """View, plan, preprocess and add the models' configurations of one dataset (once per suite run)."""
    from unetkit.data.dataset import load_dataset
    from unetkit.planning import load_plans, plan_dataset
    from unetkit.preprocessing import preprocess_dataset

    where = f"{suite.path}: datasets.{spec.name}"
    view, tests, facts = build_view(spec, work, where)
    log(f"{spec.name}: {facts['num_train_cases']} training case(s), {facts['num_test_cases']} test case(s) "
        f"({facts['split']}); planning")
    plans_path = plan_dataset(view, workdir=work, memory_gb=suite.planner.get("memory_gb"),
                              device=suite.planner.get("device"), name=spec.name, num_processes=num_processes)
    plans = load_plans(plans_path)
    configs = plans["configurations"]
    configuration = spec.configuration or ("3d_fullres" if "3d_fullres" in configs else "2d")
    if configuration not in configs:
        raise SuiteError(f"{where}.configuration: {configuration!r} is not in {plans_path} "
                         f"(available: {', '.join(sorted(configs))})")
    log(f"{spec.name}: preprocessing {configuration}")
    preprocess_dataset(view, workdir=work, configurations=[configuration], name=spec.name, progress=False,
                       num_processes=num_processes)
    model_configurations = _add_model_configurations(plans_path, configuration, suite.models)

    raw = load_dataset(view)
    entry = configs[configuration]
    fingerprint = read_json(plans_path.parent / "fingerprint.json")
    shapes = np.array(fingerprint.get("shapes_after_crop") or [[0]], dtype=float)
    spacings = np.array(fingerprint.get("spacings") or [[1.0]], dtype=float)
    info = {"raw": str(spec.raw), "configuration": configuration, "dims": len(plans["transpose_forward"]),
            "modality": {str(k): v for k, v in raw.channel_names.items()}, "num_cases": facts["num_cases"],
            "num_test_cases": facts["num_test_cases"], "num_train_cases": facts["num_train_cases"],
            "labels": {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.labels.items()},
            "file_ending": raw.file_ending, "median_shape": [float(v) for v in np.median(shapes, axis=0)],
            "median_spacing": [float(v) for v in np.median(spacings, axis=0)],
            "foreground_fraction": float(sum((fingerprint.get("class_voxel_fraction") or {}).values())),
            "fingerprint": str(plans_path.parent / "fingerprint.json"), "plans": str(plans_path),
            "split": facts["split"], "view": facts["view"], "patch_size": list(entry["patch_size"]),
            "batch_size": entry["batch_size"],
            "tests": {fold: {"images": str(t.images), "labels": str(t.labels), "cases": sorted(t.case_images)}
                      for fold, t in tests.items()}}
    return PreparedDataset(spec.name, configuration, model_configurations, tests,
                           {k: (list(v) if isinstance(v, tuple) else v) for k, v in raw.spec["labels"].items()}, info)


def _zero_shot_set(target: PreparedDataset, work: Path) -> TestSet:
    """The target's test cases for zero-shot runs: its one test set, or the union of its folds'."""
    if len(target.tests) == 1:
        return next(iter(target.tests.values()))
    images, labels, case_images = {}, {}, {}
    for t in target.tests.values():
        for f in t.images.iterdir():
            images[f.name] = f
        for f in t.labels.iterdir():
            labels[f.name] = f
        case_images.update(t.case_images)
    folder = work / target.name / "tests" / "zero_shot"
    _fill_folder(folder / "images", images)
    _fill_folder(folder / "labels", labels)
    return TestSet("zero_shot", "all", folder / "images", folder / "labels", case_images)


# ----------------------------------------------------------------------------- runs

def run_ids(suite: Suite) -> list[str]:
    """Every run id the suite defines (in-domain first), without touching any data."""
    ids = [f"{ds.name}__{m.label}__{fold}" for ds in suite.datasets.values() for m in suite.models
           for fold in ds.split.fold_ids]
    for pair in suite.zero_shot:
        fold = suite.datasets[pair.source].split.fold_ids[0]
        ids += [f"{pair.source}__{m.label}__{fold}__on__{pair.target}" for m in suite.models]
    return ids


def _test_signatures(test: TestSet) -> dict[str, str]:
    """``{case: signature of its original image files and its label}`` of a test set."""
    from unetkit.data.io import file_ending
    from unetkit.data.signature import files_signature

    labels = {f.name[: -len(file_ending(f))]: f for f in test.labels.iterdir()} if test.labels.is_dir() else {}
    return {case: files_signature([*files, *([labels[case]] if case in labels else [])])
            for case, files in sorted(test.case_images.items())}


def data_signatures(ds: PreparedDataset) -> dict[str, dict[str, str]]:
    """The raw files a dataset's runs depend on: ``{"train": {case: sig}, "test:FOLD": {case: sig}}``."""
    from unetkit.data.dataset import load_dataset
    from unetkit.data.signature import dataset_signatures

    out = {"train": dataset_signatures(load_dataset(ds.info["view"]).training_cases())}
    for fold, test in ds.tests.items():
        out[f"test:{fold}"] = _test_signatures(test)
    return out


def make_specs(suite: Suite, prepared: dict[str, PreparedDataset], results: Path) -> list[dict[str, Any]]:
    """The spec of every run; zero-shot runs last (they need their source run's model)."""
    work = results / "work"
    specs: list[dict[str, Any]] = []
    signatures = {name: data_signatures(ds) for name, ds in prepared.items()}
    common = {"workdir": str(work), "training": suite.training, "predict": suite.predict,
              "efficiency": suite.efficiency}
    for ds in prepared.values():
        for model in suite.models:
            for fold, test in ds.tests.items():
                run_id = f"{ds.name}__{model.label}__{fold}"
                specs.append({**common, "run_id": run_id, "kind": "in_domain", "model": model.label,
                              "arch": model.name, "model_kwargs": dict(model.kwargs), "dataset": ds.name,
                              "source_dataset": ds.name, "configuration": ds.model_configurations[model.label],
                              "base_configuration": ds.configuration, "fold": fold, "train_fold": test.train_fold,
                              "test_images": str(test.images), "test_labels": str(test.labels),
                              "test_cases": sorted(test.case_images), "test_case_images": test.case_images,
                              "labels": ds.labels, "output": str(results / "runs" / run_id),
                              "data_signatures": {"train": signatures[ds.name]["train"],
                                                  "test": signatures[ds.name][f"test:{fold}"]}})
    for pair in suite.zero_shot:
        source, target = prepared[pair.source], prepared[pair.target]
        test = _zero_shot_set(target, work)
        fold = next(iter(source.tests))
        for model in suite.models:
            source_id = f"{source.name}__{model.label}__{fold}"
            run_id = f"{source_id}__on__{target.name}"
            specs.append({**common, "run_id": run_id, "kind": "zero_shot", "model": model.label, "arch": model.name,
                          "model_kwargs": dict(model.kwargs), "dataset": target.name, "source_dataset": source.name,
                          "configuration": source.model_configurations[model.label],
                          "base_configuration": source.configuration, "fold": fold,
                          "train_fold": source.tests[fold].train_fold, "source_run_id": source_id,
                          "source_run_json": str(results / "runs" / source_id / "run.json"),
                          "test_images": str(test.images), "test_labels": str(test.labels),
                          "test_cases": sorted(test.case_images), "test_case_images": test.case_images,
                          "labels": target.labels, "output": str(results / "runs" / run_id),
                          "data_signatures": {"train": signatures[source.name]["train"],
                                              "test": _test_signatures(test)}})
    return specs


def _status(spec: dict[str, Any]) -> tuple[str, dict | None]:
    """``("done" | "failed" | "pending" | "stale", record)`` of a run in the results folder."""
    path = Path(spec["output"]) / "run.json"
    if not path.is_file():
        return "pending", None
    try:
        record = read_json(path)
    except (ValueError, OSError):
        return "pending", None
    if spec["kind"] == "zero_shot" and record.get("status") == "done":
        # The source model was trained again (a retry): the zero-shot result is out of date.
        source = Path(spec["source_run_json"])
        if not source.is_file() or read_json(source).get("finished_at") != record.get("source_finished_at"):
            return "stale", record
    if record.get("failed_stage") == "prepare":
        return "pending", record  # its dataset could not be prepared last time: always tried again
    if record.get("failed_stage") == "source" and _source_done(spec):
        return "pending", record  # its source model exists now (retried)
    return record.get("status", "failed"), record


def _data_changes(spec: dict[str, Any]) -> str | None:
    """Which raw cases changed since the run's result was made (None when none did)."""
    from unetkit.data.signature import compare_signatures

    old_path = Path(spec["output"]) / "spec.json"
    if not old_path.is_file():
        return None
    old = read_json(old_path).get("data_signatures")
    if not isinstance(old, dict):
        return None  # made by an older unetkit: nothing to compare with, kept like before
    parts = []
    for part in ("train", "test"):
        diff = compare_signatures(old.get(part) or {}, spec["data_signatures"][part])
        if diff:
            parts.append(f"{part} cases {diff.describe()}")
    return "; ".join(parts) or None


def _spec_changes(spec: dict[str, Any]) -> list[str]:
    old_path = Path(spec["output"]) / "spec.json"
    if not old_path.is_file():
        return []
    old = read_json(old_path)
    return [k for k in SPEC_IDENTITY if json.dumps(old.get(k), sort_keys=True) != json.dumps(spec.get(k), sort_keys=True)]


# ----------------------------------------------------------------------------- execution

def _die_with_parent() -> None:
    """In the worker (before exec): SIGKILL it when the driver dies, however the driver dies.

    The worker runs in its own session so that a timeout can kill its whole group; without this,
    a driver killed with SIGKILL would leave it training on, and the rerun's worker would find
    the fold locked by it. Linux only (prctl PR_SET_PDEATHSIG); elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def execute_run(spec_path: str, threads: int, timeout: float | None = None) -> dict[str, Any]:
    """Run one spec in a fresh worker process; always returns (and leaves) a run.json record.

    Used by both backends (a Ray task calls it on the node that runs it). The worker writes
    run.json itself; when the process dies without one (segfault, OOM kill, timeout) the
    record is written here, with the exit status and the end of the run's log.
    """
    spec_file = Path(spec_path)
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    out = spec_file.parent
    (out / "run.json").unlink(missing_ok=True)
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OMP_WAIT_POLICY": env.get("OMP_WAIT_POLICY", "PASSIVE"), "PYTHONUNBUFFERED": "1"})
    started = now_iso()
    t0 = time.perf_counter()
    reason = None
    with open(out / "log.txt", "ab") as log_file:
        log_file.write(f"\n=== {started} {spec['run_id']} ({threads} thread(s))\n".encode())
        log_file.flush()
        # A new session: on timeout the whole process group (data-loading workers included) is killed.
        proc = subprocess.Popen([sys.executable, "-m", "unetkit.benchmark.worker", str(spec_file)],
                                stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
            reason = f"timed out after {timeout:g} s (killed)"
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    if (out / "run.json").is_file():
        record = read_json(out / "run.json")
        if spec["kind"] == "zero_shot" and Path(spec["source_run_json"]).is_file():
            record["source_finished_at"] = read_json(spec["source_run_json"]).get("finished_at")
            atomic_write_json(out / "run.json", record)
        return record
    if reason is None:
        reason = (f"worker killed by signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0
                  else f"worker exited with code {code} without a result")
    log_tail = (out / "log.txt").read_text(encoding="utf-8", errors="replace")[-4000:]
    atomic_write_text(out / "error.txt", f"run {spec['run_id']} failed: {reason}\n\nend of log.txt:\n{log_tail}")
    record = {k: spec.get(k) for k in ("run_id", "kind", "model", "arch", "dataset", "source_dataset",
                                       "configuration", "fold")}
    record.update({"status": "failed", "error": f"process: {reason}", "failed_stage": "process",
                   "started_at": started, "finished_at": now_iso(), "seconds": time.perf_counter() - t0,
                   "spec": str(spec_file)})
    atomic_write_json(out / "run.json", record)
    return record


def _run_local(todo: list[tuple[dict, Path]], jobs: int, threads: int, timeout: float | None,
               report: Callable[[dict], None]) -> None:
    if jobs <= 1:
        for _, path in todo:
            report(execute_run(str(path), threads, timeout))
        return
    with ThreadPoolExecutor(jobs, thread_name_prefix="unetkit-bench") as pool:
        futures = [pool.submit(execute_run, str(path), threads, timeout) for _, path in todo]
        for future in as_completed(futures):
            report(future.result())


class RayBackend:
    """Runs specs as Ray tasks; starts a local Ray instance unless ``address`` names a cluster.

    The results folder must be reachable under the same path from every node (shared storage):
    workers read their spec and write their run folder there.
    """

    def __init__(self, address: str | None, cpus_per_run: int, gpus_per_run: float, num_cpus: int | None,
                 log: Log) -> None:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError("the Ray backend needs Ray: pip install 'unetkit[ray]'") from exc
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=num_cpus, **options)
            self.started = True
        resources = ray.cluster_resources()
        log(f"ray: {resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s); "
            f"{cpus_per_run} CPU(s) per run")
        self.task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(execute_run)

    def run(self, todo: list[tuple[dict, Path]], threads: int, timeout: float | None,
            report: Callable[[dict], None]) -> None:
        pending = {self.task.remote(str(path), threads, timeout): spec for spec, path in todo}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            try:
                record = self.ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a lost node or worker: recorded, the others go on
                record = {k: spec.get(k) for k in ("run_id", "kind", "model", "arch", "dataset", "source_dataset",
                                                   "configuration", "fold")}
                record.update({"status": "failed", "error": f"ray: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                               "failed_stage": "ray", "finished_at": now_iso()})
                out = Path(spec["output"])
                atomic_write_text(out / "error.txt", f"run {spec['run_id']} failed in Ray:\n{exc}\n")
                atomic_write_json(out / "run.json", record)
            report(record)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# ----------------------------------------------------------------------------- metadata

def machine_metadata() -> dict[str, Any]:
    import torch

    import unetkit

    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    cuda = torch.cuda.is_available()
    return {"unetkit": unetkit.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "memory_gb": round(memory_gb, 1) if memory_gb else None,
            "gpu": torch.cuda.get_device_name(0) if cuda else None, "device": "cuda" if cuda else "cpu",
            "host": platform.node()}


# ----------------------------------------------------------------------------- the benchmark

@dataclass
class BenchSummary:
    results: Path
    ran: list[str]
    skipped: list[str]
    failed: list[str]
    counts: dict[str, int]


def run_benchmark(suite_path: str | Path, output: str | Path, *, backend: str = "local", address: str | None = None,
                  jobs: int = 1, threads: int | None = None, ray_cpus_per_run: int | None = None,
                  ray_gpus_per_run: float = 0.0, ray_num_cpus: int | None = None, retry_failed: bool = False,
                  raw_root: str | Path | None = None, timeout: float | None = None, only: list[str] | None = None,
                  log: Log = lambda m: print(m, file=sys.stderr), command: str | None = None) -> BenchSummary:
    """Run (or resume) a suite into ``output``; see the module docstring for the steps.

    Args:
        suite_path: the suite YAML (docs/benchmark.md).
        output: the results folder (docs/benchmark_results.md); created if absent.
        backend: ``local`` (subprocesses) or ``ray``.
        address: Ray cluster address (``ray://...`` or ``host:port``); None starts a local instance.
        jobs: local runs at the same time.
        threads: torch threads per run (default: cores / jobs locally, the task's CPUs on Ray).
        ray_cpus_per_run, ray_gpus_per_run: resources each Ray task asks for.
        ray_num_cpus: CPUs of a local Ray instance (default: all).
        retry_failed: run failed runs again (default: keep their failure).
        raw_root: where relative dataset paths point (overrides the suite's raw_root).
        timeout: seconds after which a run is killed and recorded as failed.
        only: run only these run ids (the tables still cover every finished run).
    """
    suite = load_suite(suite_path, raw_root)
    validate_models(suite)
    check_zero_shot_labels(suite)
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be local or ray, found {backend!r}")
    results = Path(output).resolve()
    meta = _start_results_folder(suite, results, backend, command, log)
    cores = os.cpu_count() or 1
    prepared, failed_prepare = _prepare_datasets(suite, results, log)
    specs = _select_specs(make_specs(suite, prepared, results), only)
    skip_zero_shot = [p for p in suite.zero_shot if p.source in failed_prepare or p.target in failed_prepare]
    if skip_zero_shot:
        log(f"zero-shot pairs skipped (a dataset failed to prepare): "
            f"{', '.join(f'{p.source}->{p.target}' for p in skip_zero_shot)}")

    ran: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    if backend == "ray":
        per_run = ray_cpus_per_run or max(1, cores // max(1, jobs))
        run_threads = threads or per_run
        executor: Any = RayBackend(address, per_run, ray_gpus_per_run, ray_num_cpus, log)
    else:
        run_threads = threads or max(1, cores // max(1, jobs))
        executor = None
    total = len(specs)
    counter = {"n": 0}

    def report(record: dict) -> None:
        counter["n"] += 1
        ran.append(record["run_id"])
        if record.get("status") == "done":
            dice = record.get("mean_dice")
            dice_text = f", mean Dice {dice:.4f}" if isinstance(dice, (int, float)) else ""
            log(f"[{counter['n']}/{total}] {record['run_id']}: done in {record.get('seconds', 0):.0f} s{dice_text}")
        else:
            failed.append(record["run_id"])
            log(f"[{counter['n']}/{total}] {record['run_id']}: FAILED ({record.get('error')}); "
                f"see {Path(record.get('spec', '')).parent / 'error.txt'}")

    try:
        for phase in ("in_domain", "zero_shot"):
            todo = _phase_todo(specs, phase, retry_failed, run_threads, report, counter, skipped, failed, log)
            if skipped and phase == "in_domain":
                retry_hint = "" if retry_failed else "; failed ones are retried with --retry-failed"
                log(f"{len(skipped)} run(s) already finished (skipped{retry_hint})")
            if not todo:
                continue
            log(f"{phase.replace('_', '-')}: {len(todo)} run(s), {backend} backend, {run_threads} thread(s) per run")
            if executor is not None:
                executor.run(todo, run_threads, timeout, report)
            else:
                _run_local(todo, jobs, run_threads, timeout, report)
    finally:
        if executor is not None:
            executor.close()
        counts = rebuild_tables(results)
        meta["finished_at"] = now_iso()
        atomic_write_json(results / "metadata.json", meta)
    return BenchSummary(results, ran, skipped, failed, counts)


def _start_results_folder(suite: Any, results: Path, backend: str, command: str | None, log: Log) -> dict:
    """runs/, the suite copy (a changed suite is reported) and metadata.json; returns the metadata."""
    (results / "runs").mkdir(parents=True, exist_ok=True)
    suite_copy = results / "suite.yaml"
    if suite_copy.is_file() and suite_copy.read_text(encoding="utf-8") != suite.text:
        log(f"note: {suite_copy} differs from {suite.path}; finished runs whose settings changed are reported "
            "below and kept (use a new --output to start afresh)")
    atomic_write_text(suite_copy, suite.text)
    meta = {**machine_metadata(), "suite": suite.name, "suite_file": str(suite.path), "baseline": suite.baseline,
            "backend": backend, "started_at": now_iso(), "finished_at": None,
            "command": command or " ".join(sys.argv)}
    atomic_write_json(results / "metadata.json", meta)
    return meta


def _prepare_datasets(suite: Any, results: Path, log: Log) -> tuple[dict[str, PreparedDataset], dict[str, str]]:
    """Plan and preprocess each dataset once; a dataset that fails is recorded, the others go on."""
    prepared: dict[str, PreparedDataset] = {}
    failed_prepare: dict[str, str] = {}
    for spec in suite.datasets.values():
        try:
            prepared[spec.name] = prepare_dataset(suite, spec, results / "work", log)
        except SuiteError:
            raise
        except Exception as exc:  # noqa: BLE001 - the dataset's runs are recorded as failed, the others go on
            failed_prepare[spec.name] = f"prepare: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log(f"{spec.name}: preparation failed: {exc}")
    atomic_write_json(results / "datasets.json", {name: p.info for name, p in prepared.items()})
    for name, error in failed_prepare.items():
        _record_unprepared(suite, name, error, results)
    return prepared, failed_prepare


def _select_specs(specs: list[dict], only: list[str] | None) -> list[dict]:
    """The runs ``--only`` names (all without it); an unknown id is an error listing the suite's runs."""
    if not only:
        return specs
    unknown = sorted(set(only) - {s["run_id"] for s in specs})
    if unknown:
        raise SuiteError(f"--only: unknown run id(s) {', '.join(unknown)}; the suite's runs: "
                         f"{', '.join(s['run_id'] for s in specs)}")
    return [s for s in specs if s["run_id"] in set(only)]


def _phase_todo(specs: list[dict], phase: str, retry_failed: bool, run_threads: int, report: Callable[[dict], None],
                counter: dict, skipped: list[str], failed: list[str], log: Log) -> list[tuple[dict, Path]]:
    """The runs of ``phase`` still to do, each with its spec.json written; finished runs (whose data
    did not change) and kept failures are counted as skipped."""
    todo: list[tuple[dict, Path]] = []
    for spec in (s for s in specs if s["kind"] == phase):
        status, _ = _status(spec)
        changed = _data_changes(spec) if status == "done" else None
        if changed:
            log(f"{spec['run_id']}: its data changed since ({changed}); running it again")
        if not changed and (status == "done" or (status == "failed" and not retry_failed)):
            changes = _spec_changes(spec)
            if changes:
                log(f"note: {spec['run_id']} was made with other settings ({', '.join(changes)}); kept")
            counter["n"] += 1
            skipped.append(spec["run_id"])
            if status == "failed":
                failed.append(spec["run_id"])
            continue
        path = Path(spec["output"]) / "spec.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**spec, "threads": run_threads})
        if phase == "zero_shot" and not _source_done(spec):
            report(_record_failure(spec, "source", f"source run {spec['source_run_id']} did not finish "
                                                  "(see its error.txt)"))
            continue
        todo.append((spec, path))
    return todo


def _source_done(spec: dict[str, Any]) -> bool:
    path = Path(spec["source_run_json"])
    return path.is_file() and read_json(path).get("status") == "done"


def _record_failure(spec: dict[str, Any], stage: str, error: str) -> dict[str, Any]:
    """A failed run.json (and error.txt) written by the driver for a run that could not start."""
    out = Path(spec["output"])
    out.mkdir(parents=True, exist_ok=True)
    record = {k: spec.get(k) for k in ("run_id", "kind", "model", "arch", "dataset", "source_dataset",
                                       "configuration", "fold")}
    record.update({"status": "failed", "error": f"{stage}: {error}", "failed_stage": stage, "finished_at": now_iso(),
                   "spec": str(out / "spec.json")})
    atomic_write_text(out / "error.txt", f"run {spec['run_id']} failed during {stage}: {error}\n")
    atomic_write_json(out / "run.json", record)
    return record


def _record_unprepared(suite: Suite, name: str, error: str, results: Path) -> None:
    """Every in-domain run of a dataset that could not be prepared gets a failed run.json."""
    ds = suite.datasets[name]
    for model in suite.models:
        for fold in ds.split.fold_ids:
            run_id = f"{name}__{model.label}__{fold}"
            out = results / "runs" / run_id
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "error.txt", f"run {run_id} failed: dataset {name} could not be prepared\n{error}\n")
            atomic_write_json(out / "run.json", {"run_id": run_id, "kind": "in_domain", "model": model.label,
                                                 "arch": model.name, "dataset": name, "source_dataset": name,
                                                 "configuration": ds.configuration, "fold": fold, "status": "failed",
                                                 "error": error, "failed_stage": "prepare", "finished_at": now_iso()})
