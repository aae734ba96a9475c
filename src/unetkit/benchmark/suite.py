"""Benchmark suites: the YAML file ``unetkit bench`` runs, read and checked into a :class:`Suite`.

A suite names datasets (raw nnU-Net-layout folders, each with a configuration and a split),
models (registry names, optionally with keyword arguments) and one training budget that every
model gets (fairness), plus optional zero-shot pairs. docs/benchmark.md documents every key
with a commented example. Every problem is a :class:`SuiteError` naming the file and the key
(``datasets.DRIVE.split.test.every``), so a typo never surfaces an hour into a benchmark.

This module reads YAML and checks names against the model registry and the training settings;
it does not import torch until :func:`validate_models` is called.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from unetkit.utils.names import MAX_NAME_LENGTH, name_problem

#: Suite keys, dataset keys, split keys: anything else is refused (typos would silently do nothing).
SUITE_KEYS = ("name", "raw_root", "datasets", "models", "baseline", "budget", "zero_shot", "predict", "efficiency")
DATASET_KEYS = ("raw", "configuration", "folds", "test", "test_cases", "max_cases")
PREDICT_KEYS = ("mirror", "step_size", "device")
EFFICIENCY_KEYS = ("repeats", "warmup")
PLANNER_KEYS = ("device", "memory_gb")
#: Names become folder names and run ids (``DATASET__MODEL__FOLD``): no separators, no ``__``.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*(_[A-Za-z0-9.\-]+)*$")
FOLD_RANGE = range(5)


class SuiteError(ValueError):
    """The suite file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class SplitSpec:
    """How a dataset is split into training and test cases.

    ``kind`` is ``"folds"`` (nnU-Net's 5-fold cross-validation, ``folds`` lists the folds run;
    each fold is tested on its validation cases) or one fixed split: ``"every"`` (every
    ``every``-th case of the sorted names starting at ``offset`` is a test case), ``"cases"``
    (the names in ``test_cases``), ``"imagesTs"`` (the raw folder's imagesTs + labelsTs) or
    ``"raw"`` (the imagesTr + labelsTr of another raw folder, ``test_raw``).
    """

    kind: str
    folds: tuple[int, ...] = ()
    every: int = 0
    offset: int = 0
    test_cases: tuple[str, ...] = ()
    test_raw: Path | None = None

    @property
    def fold_ids(self) -> list[str]:
        """The run ids' fold part: ``"0"``..``"4"`` for cross-validation, else ``"test"``."""
        return [str(f) for f in self.folds] if self.kind == "folds" else ["test"]

    def describe(self) -> str:
        if self.kind == "folds":
            return f"cross-validation folds {list(self.folds)}"
        if self.kind == "every":
            return f"fixed split: every {self.every}th case from {self.offset} is a test case"
        if self.kind == "cases":
            return f"fixed split: {len(self.test_cases)} named test cases"
        if self.kind == "imagesTs":
            return "fixed split: imagesTs/labelsTs"
        return f"fixed split: test cases from {self.test_raw}"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    raw: Path                    # absolute raw folder
    configuration: str | None    # None: 2d for 2D data, 3d_fullres for 3D (decided once the data is read)
    split: SplitSpec
    max_cases: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model of the suite: ``label`` names it in run ids and tables (default: ``name``)."""

    name: str
    label: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ZeroShotSpec:
    """A model trained on ``source`` scored on ``target``'s test cases. ``labels`` maps source
    label names to target label names for structures named differently (same values)."""

    source: str
    target: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    datasets: dict[str, DatasetSpec]
    models: list[ModelSpec]
    training: dict[str, Any]          # TrainingConfig overrides, the same for every run
    planner: dict[str, Any]           # plan_dataset options: device preset or memory_gb
    zero_shot: list[ZeroShotSpec]
    predict: dict[str, Any]
    efficiency: dict[str, Any]
    text: str                         # the file as given (copied into the results folder)
    baseline: str = ""                # the paired tests' reference model: declared, else the first model

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings) for the results folder and the run specs."""
        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "text"}
        return out


# ----------------------------------------------------------------------------- reading

def _where(path: Path, key: str) -> str:
    return f"{path}: {key}" if key else str(path)


def _mapping(value: Any, path: Path, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SuiteError(f"{_where(path, key)}: expected a mapping (key: value lines), found {type(value).__name__} "
                         f"{value!r}")
    return dict(value)


def _unknown(mapping: Mapping, allowed: tuple[str, ...], path: Path, key: str) -> None:
    extra = [k for k in mapping if k not in allowed]
    if extra:
        prefix = f"{key}." if key else ""
        raise SuiteError(f"{_where(path, prefix + str(extra[0]))}: unknown key; allowed here: {', '.join(allowed)}")


def _int(value: Any, path: Path, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuiteError(f"{_where(path, key)}: expected an integer >= {minimum}, found {value!r}")
    return value


def _name(value: Any, path: Path, key: str, what: str) -> str:
    text = str(value)
    # fullmatch: with match, "$" also matches before a trailing newline ("a\n" passed).
    if not NAME_PATTERN.fullmatch(text) or name_problem(text) is not None:
        raise SuiteError(f"{_where(path, key)}: {what} {text!r} must be letters, digits, '.', '-' and single '_', "
                         f"at most {MAX_NAME_LENGTH} characters "
                         "(it becomes a folder name and part of run ids DATASET__MODEL__FOLD)")
    return text


def _resolve(base: Path, value: Any, path: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise SuiteError(f"{_where(path, key)}: expected a folder path, found {value!r}")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _split(entry: dict, path: Path, key: str, raw: Path, base: Path) -> SplitSpec:
    given = [k for k in ("folds", "test", "test_cases") if k in entry]
    if len(given) > 1:
        raise SuiteError(f"{_where(path, key)}: give one of folds, test, test_cases (found {', '.join(given)})")
    if not given:
        return SplitSpec("folds", folds=(0,))
    if "folds" in entry:
        folds = entry["folds"]
        if isinstance(folds, int) and not isinstance(folds, bool):
            folds = [folds]
        if not isinstance(folds, list) or not folds:
            raise SuiteError(f"{_where(path, key + '.folds')}: expected a list of folds such as [0] or [0, 1, 2, 3, 4], "
                             f"found {folds!r}")
        for i, f in enumerate(folds):
            if isinstance(f, bool) or not isinstance(f, int) or f not in FOLD_RANGE:
                raise SuiteError(f"{_where(path, f'{key}.folds[{i}]')}: a fold is 0..4 (nnU-Net's 5-fold split), "
                                 f"found {f!r}")
        if len(set(folds)) != len(folds):
            raise SuiteError(f"{_where(path, key + '.folds')}: a fold is listed twice: {folds}")
        return SplitSpec("folds", folds=tuple(folds))
    if "test_cases" in entry:
        cases = entry["test_cases"]
        if not isinstance(cases, list) or not cases:
            raise SuiteError(f"{_where(path, key + '.test_cases')}: expected a non-empty list of case names, "
                             f"found {cases!r}")
        names = tuple(str(c) for c in cases)
        if len(set(names)) != len(names):
            raise SuiteError(f"{_where(path, key + '.test_cases')}: a case is listed twice")
        return SplitSpec("cases", test_cases=names)
    test = entry["test"]
    if test == "imagesTs":
        return SplitSpec("imagesTs")
    if isinstance(test, Mapping):
        _unknown(test, ("every", "offset", "raw"), path, key + ".test")
        if "raw" in test:
            if len(test) > 1:
                raise SuiteError(f"{_where(path, key + '.test')}: 'raw' takes no other keys")
            test_raw = _resolve(base, test["raw"], path, key + ".test.raw")
            if test_raw == raw:
                raise SuiteError(f"{_where(path, key + '.test.raw')}: the test folder is the training folder; "
                                 "use test: imagesTs or a held-out split")
            return SplitSpec("raw", test_raw=test_raw)
        if "every" not in test:
            raise SuiteError(f"{_where(path, key + '.test')}: a held-out split needs 'every' (and optional 'offset'), "
                             "e.g. {every: 5, offset: 4}")
        every = _int(test["every"], path, key + ".test.every", 2)
        offset = _int(test.get("offset", 0), path, key + ".test.offset", 0)
        if offset >= every:
            raise SuiteError(f"{_where(path, key + '.test.offset')}: must be below every ({every}), found {offset}")
        return SplitSpec("every", every=every, offset=offset)
    raise SuiteError(f"{_where(path, key + '.test')}: expected imagesTs, {{every: N, offset: K}} or {{raw: FOLDER}}, "
                     f"found {test!r}")


def _models(value: Any, path: Path) -> list[ModelSpec]:
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{_where(path, 'models')}: expected a non-empty list of model names (or "
                         "{name: ..., kwargs: {...}, label: ...} entries)")
    models: list[ModelSpec] = []
    for i, item in enumerate(value):
        key = f"models[{i}]"
        if isinstance(item, str):
            models.append(ModelSpec(item, _name(item, path, key, "model name"), {}))
            continue
        entry = _mapping(item, path, key)
        _unknown(entry, ("name", "label", "kwargs"), path, key)
        if "name" not in entry:
            raise SuiteError(f"{_where(path, key)}: a model entry needs 'name' (a registry name)")
        name = str(entry["name"])
        label = _name(entry.get("label", name), path, key + ".label", "model label")
        kwargs = _mapping(entry.get("kwargs"), path, key + ".kwargs")
        models.append(ModelSpec(name, label, kwargs))
    seen: dict[str, int] = {}
    for i, m in enumerate(models):
        if m.label in seen:
            raise SuiteError(f"{_where(path, f'models[{i}]')}: model {m.label!r} is listed twice (models[{seen[m.label]}]); "
                             "give one of them another 'label'")
        seen[m.label] = i
    return models


def _budget(value: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(training overrides, planner options)``; training keys are TrainingConfig fields."""
    from unetkit.training.config import TrainingConfig

    budget = _mapping(value, path, "budget")
    planner = _mapping(budget.pop("planner", None), path, "budget.planner")
    _unknown(planner, PLANNER_KEYS, path, "budget.planner")
    if "device" in planner and planner["device"] not in ("cpu", "gpu"):
        raise SuiteError(f"{_where(path, 'budget.planner.device')}: cpu or gpu (the planner's memory preset), "
                         f"found {planner['device']!r}")
    if "memory_gb" in planner and not (isinstance(planner["memory_gb"], (int, float)) and planner["memory_gb"] > 0):
        raise SuiteError(f"{_where(path, 'budget.planner.memory_gb')}: a positive number, found {planner['memory_gb']!r}")
    if "device" in planner and "memory_gb" in planner:
        raise SuiteError(f"{_where(path, 'budget.planner')}: give device or memory_gb, not both")
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    for k in budget:
        if k == "arch":
            raise SuiteError(f"{_where(path, 'budget.arch')}: the architecture comes from 'models', not the budget")
        if k not in fields:
            raise SuiteError(f"{_where(path, 'budget.' + str(k))}: unknown key; the budget takes training settings "
                             f"({', '.join(sorted(fields - {'arch', 'extra'}))}) and 'planner'")
    try:
        TrainingConfig().updated(budget, f"{path}: budget")
    except ValueError as exc:  # ConfigError: names the key already
        raise SuiteError(str(exc)) from None
    return budget, planner


def load_suite(path: str | Path, raw_root: str | Path | None = None) -> Suite:
    """Read and check a suite file.

    Args:
        path: the YAML file.
        raw_root: folder that relative dataset paths resolve against (overrides the suite's
            ``raw_root``; default: the suite's ``raw_root``, itself relative to the suite file,
            else the suite file's folder).

    Raises:
        SuiteError: naming the file and the key of the first problem found.
    """
    import yaml

    path = Path(path).resolve()
    if not path.is_file():
        raise SuiteError(f"{path}: suite file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise SuiteError(f"{path}: the top level must be a mapping with datasets, models and budget")
    _unknown(data, SUITE_KEYS, path, "")
    for required in ("datasets", "models"):
        if required not in data:
            raise SuiteError(f"{_where(path, required)}: missing (a suite needs datasets and models)")
    name = _name(data.get("name", path.stem), path, "name", "suite name")
    if raw_root is not None:
        base = Path(raw_root).expanduser().resolve()
    elif data.get("raw_root") is not None:
        base = _resolve(path.parent, data["raw_root"], path, "raw_root")
    else:
        base = path.parent

    datasets: dict[str, DatasetSpec] = {}
    raw_datasets = _mapping(data["datasets"], path, "datasets")
    if not raw_datasets:
        raise SuiteError(f"{_where(path, 'datasets')}: no datasets")
    for ds_name, value in raw_datasets.items():
        key = f"datasets.{ds_name}"
        _name(ds_name, path, key, "dataset name")
        entry = {"raw": value} if isinstance(value, str) else _mapping(value, path, key)
        _unknown(entry, DATASET_KEYS, path, key)
        raw = _resolve(base, entry.get("raw", ds_name), path, key + ".raw")
        configuration = entry.get("configuration")
        if configuration is not None and not isinstance(configuration, str):
            raise SuiteError(f"{_where(path, key + '.configuration')}: a configuration name such as 2d or 3d_fullres, "
                             f"found {configuration!r}")
        max_cases = entry.get("max_cases")
        if max_cases is not None:
            max_cases = _int(max_cases, path, key + ".max_cases", 2)
        split = _split(entry, path, key, raw, base)
        datasets[str(ds_name)] = DatasetSpec(str(ds_name), raw, configuration, split, max_cases)

    models = _models(data["models"], path)
    training, planner = _budget(data.get("budget"), path)

    zero_shot: list[ZeroShotSpec] = []
    pairs = data.get("zero_shot") or []
    if not isinstance(pairs, list):
        raise SuiteError(f"{_where(path, 'zero_shot')}: expected a list of {{source: A, target: B}}")
    for i, item in enumerate(pairs):
        key = f"zero_shot[{i}]"
        entry = _mapping(item, path, key)
        _unknown(entry, ("source", "target", "labels"), path, key)
        for side in ("source", "target"):
            if entry.get(side) not in datasets:
                raise SuiteError(f"{_where(path, f'{key}.{side}')}: {entry.get(side)!r} is not one of the suite's "
                                 f"datasets ({', '.join(datasets)})")
        if entry["source"] == entry["target"]:
            raise SuiteError(f"{_where(path, key)}: source and target are the same dataset")
        names = _mapping(entry.get("labels"), path, key + ".labels")
        pair = ZeroShotSpec(str(entry["source"]), str(entry["target"]), {str(k): str(v) for k, v in names.items()})
        if pair in zero_shot:
            raise SuiteError(f"{_where(path, key)}: the pair {pair.source} -> {pair.target} is listed twice")
        zero_shot.append(pair)

    predict = _mapping(data.get("predict"), path, "predict")
    _unknown(predict, PREDICT_KEYS, path, "predict")
    if "mirror" in predict and not isinstance(predict["mirror"], bool):
        raise SuiteError(f"{_where(path, 'predict.mirror')}: true or false, found {predict['mirror']!r}")
    if "step_size" in predict and not (isinstance(predict["step_size"], (int, float))
                                       and 0 < predict["step_size"] <= 1):
        raise SuiteError(f"{_where(path, 'predict.step_size')}: a number in (0, 1], found {predict['step_size']!r}")
    efficiency = _mapping(data.get("efficiency"), path, "efficiency")
    _unknown(efficiency, EFFICIENCY_KEYS, path, "efficiency")
    for k, minimum in (("repeats", 1), ("warmup", 0)):
        if k in efficiency:
            _int(efficiency[k], path, f"efficiency.{k}", minimum)
    return Suite(path=path, name=name, datasets=datasets, models=models, training=training, planner=planner,
                 zero_shot=zero_shot, predict=predict, efficiency=efficiency, text=text,
                 baseline=_baseline(data.get("baseline"), models, path))


def _baseline(value: Any, models: list[ModelSpec], path: Path) -> str:
    """The declared baseline (a model label of the suite), else the first model: fixed before any
    result exists, so the paired tests cannot be pointed at a model chosen after looking."""
    labels = [m.label for m in models]
    if value is None:
        return labels[0]
    if str(value) not in labels:
        raise SuiteError(f"{_where(path, 'baseline')}: {value!r} is not one of the suite's models "
                         f"({', '.join(labels)})")
    return str(value)


def _foreground(labels: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in labels.items() if value != 0 and name != "ignore"}


def check_zero_shot_labels(suite: Suite) -> None:
    """Check, before anything is trained, that every zero-shot pair scores like with like.

    A model trained on the source predicts the source's label values, and they are scored against
    the target's values: the foreground labels must have the same names and values, after the
    pair's ``labels`` mapping (source name -> target name) renames the source's. Values are
    never remapped. Datasets whose dataset.json cannot be read are left to their preparation,
    which records the failure. Raises :class:`SuiteError` naming both datasets.
    """
    from unetkit.data.dataset import load_dataset
    from unetkit.data.errors import DataError

    for i, pair in enumerate(suite.zero_shot):
        key = f"zero_shot[{i}]"
        try:
            source = _foreground(load_dataset(suite.datasets[pair.source].raw).spec["labels"])
            target = _foreground(load_dataset(suite.datasets[pair.target].raw).spec["labels"])
        except DataError:
            continue
        unknown = [name for name in pair.labels if name not in source]
        if unknown:
            raise SuiteError(f"{_where(suite.path, key + '.labels')}: {', '.join(map(repr, unknown))} is not a label "
                             f"of {pair.source} (its labels: {', '.join(source)})")
        renamed = {pair.labels.get(name, name): value for name, value in source.items()}
        if renamed != target:
            shown_source = ", ".join(f"{pair.labels.get(n, n)}={v}" for n, v in source.items())
            raise SuiteError(
                f"{_where(suite.path, key)}: the labels of {pair.source} ({shown_source}) and {pair.target} "
                f"({', '.join(f'{n}={v}' for n, v in target.items())}) differ; a model trained on {pair.source} "
                f"would be scored against {pair.target}'s label values. Give 'labels: {{SOURCE_NAME: TARGET_NAME}}' "
                "for a structure named differently with the same value; different values cannot be scored")


def validate_models(suite: Suite) -> None:
    """Check every model name against the registry (imports the model zoo: torch)."""
    from unetkit.models import UnknownModelError, model_info

    for i, m in enumerate(suite.models):
        try:
            model_info(m.name)
        except UnknownModelError as exc:
            raise SuiteError(f"{suite.path}: models[{i}]: {exc}") from None
