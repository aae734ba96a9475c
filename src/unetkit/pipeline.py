"""The whole way in one call: plan -> preprocess -> train -> validate -> postprocess -> predict -> evaluate.

``unetkit run`` and ``unetkit demo`` are this function with command-line arguments. It only
calls the stages' public functions, in the data's order, and each stage still writes its own
files, so any step can be rerun by hand and a rerun of the pipeline continues where it
stopped: plans and the cache are reused when current, a trained fold is resumed (or reported
done), and written predictions are kept.

Where things land (``W = WORKDIR/NAME``)::

    W/plans.json, W/preprocessed/CONFIG/           plan and cache
    W/models/CONFIG__ARCH/fold_F/                  checkpoints, train.log, progress.png
    W/models/CONFIG__ARCH/fold_F/validation/       cross-validation predictions + summary.json
    W/models/CONFIG__ARCH/postprocessing.json      decided on the validation predictions
    W/predictions/CONFIG__ARCH/                    test predictions (+ summary.json, per_case.csv)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from unetkit.data.errors import DataError


@dataclass
class PipelineResult:
    """Where each step's result is, and the headline numbers."""

    plans: Path
    configuration: str
    model_dir: Path
    fold_dirs: list[Path] = field(default_factory=list)
    validation_dice: dict[int, float | None] = field(default_factory=dict)   # fold -> mean foreground Dice
    postprocessing: Path | None = None
    predictions: Path | None = None
    num_predicted: int = 0
    evaluation: Path | None = None
    test_dice: float | None = None                    # mean foreground Dice on the test cases
    test_dice_per_label: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def default_configuration(plans: dict) -> str:
    """3d_fullres for volumes, 2d for pictures (nnU-Net's usual first choice)."""
    configurations = plans.get("configurations") or {}
    for name in ("3d_fullres", "2d"):
        if name in configurations:
            return name
    if not configurations:
        raise DataError("plans.json has no configuration")
    return next(iter(configurations))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_pipeline(raw: str | Path, workdir: str | Path | None = None, *, configuration: str | None = None,
                 folds: Sequence[int] = (0,), overrides: dict[str, Any] | None = None, device: str = "auto",
                 memory_gb: float | None = None, test_input: str | Path | None = None,
                 test_labels: str | Path | None = None, output: str | Path | None = None, mirror: bool = True,
                 validate: bool = True, num_processes: int | None = None, on_changed_data: str = "stop",
                 log: Callable[[str], None] | None = None) -> PipelineResult:
    """Plan, preprocess, train ``folds``, validate, select, predict and evaluate a raw dataset.

    Args:
        raw: raw dataset folder (nnU-Net v2 layout; ``unetkit import`` makes one).
        workdir: work root (default ``./unetkit_work``).
        configuration: plan configuration (default: 3d_fullres for volumes, 2d for pictures).
        folds: cross-validation folds to train (nnU-Net trains all five; one is the quick default).
        overrides: training settings (``epochs``, ``iterations_per_epoch``, ``arch``, ...).
        device: ``auto``, ``cpu`` or ``cuda`` for training and prediction.
        memory_gb: planning budget; default nnU-Net's 8 GB on a GPU, the CPU preset without one.
        test_input: images to predict (default ``RAW/imagesTs`` when it exists).
        test_labels: references for the test predictions (default ``RAW/labelsTs`` when it exists).
        output: where test predictions go (default ``W/predictions/CONFIG__ARCH``).
        mirror: test-time mirroring for validation and test predictions.
        validate: predict the folds' validation cases and select postprocessing on them.
        on_changed_data: what to do with a trained fold whose training cases changed since
            (``stop``, ``retrain`` or ``reuse``; see :func:`unetkit.training.trainer.train`).

    Every stage compares the raw files' signatures with the ones its earlier output was made
    from: the fingerprint and the changed cache entries are redone, a model trained on other
    data stops the run (or is retrained), and kept predictions are redone when their input or
    the model changed.
    """
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.utils.paths import WorkPaths

    say = log or (lambda message: None)
    raw = Path(raw)
    paths = WorkPaths.for_dataset(raw, workdir)
    overrides = dict(overrides or {})
    if device != "auto":
        overrides.setdefault("device", device)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    plans_path, plans, configuration = _plan(raw, workdir, configuration, device, memory_gb, num_processes, say)
    seconds["plan"] = time.perf_counter() - t

    t = time.perf_counter()
    entry = plans["configurations"][configuration]
    preprocess_dataset(raw, workdir, configurations=[configuration], num_processes=num_processes, progress=False)
    say(f"preprocess: -> {paths.preprocessed(entry.get('data_identifier', configuration))}")
    seconds["preprocess"] = time.perf_counter() - t
    if entry.get("previous_stage"):  # a cascade stage: every fold of the previous stage first
        _train_previous_stage(raw, workdir, entry["previous_stage"], overrides, device, mirror, num_processes,
                              on_changed_data, seconds, say)

    result = PipelineResult(plans=plans_path, configuration=configuration, model_dir=Path())
    t = time.perf_counter()
    retrained = _train_folds(result, raw, workdir, configuration, folds, overrides, on_changed_data, say)
    seconds["train"] = time.perf_counter() - t

    if validate:
        t = time.perf_counter()
        _validate_and_select(result, folds, retrained, raw, plans, device, mirror, num_processes, say)
        seconds["validate"] = time.perf_counter() - t

    _predict_and_evaluate_test(result, raw, paths.root, test_input, test_labels, output, folds, retrained, plans,
                               device, mirror, num_processes, seconds, say)
    result.seconds = seconds
    return result


def _predict_and_evaluate_test(result: PipelineResult, raw: Path, root: Path, test_input: str | Path | None,
                               test_labels: str | Path | None, output: str | Path | None, folds: Sequence[int],
                               retrained: set[int], plans: dict, device: str, mirror: bool, num_processes: int | None,
                               seconds: dict[str, float], say: Callable[[str], None]) -> None:
    """Predict the test images (default ``RAW/imagesTs``) and evaluate them against the test labels
    (default ``RAW/labelsTs``), each step skipped with a message when its input is absent."""
    test_input = Path(test_input) if test_input else (raw / "imagesTs" if (raw / "imagesTs").is_dir() else None)
    if test_input is None:
        say("predict: no test images (RAW/imagesTs absent and none given); stopping after training")
        return
    t = time.perf_counter()
    output = Path(output) if output else root / "predictions" / result.model_dir.name
    _predict_test(result, test_input, output, folds, retrained, device, mirror, say)
    seconds["predict"] = time.perf_counter() - t

    test_labels = Path(test_labels) if test_labels else (raw / "labelsTs" if (raw / "labelsTs").is_dir() else None)
    if test_labels is None:
        say("evaluate: no test labels (RAW/labelsTs absent and none given); predictions not evaluated")
        return
    t = time.perf_counter()
    _evaluate_test(result, output, test_labels, plans, num_processes, say)
    seconds["evaluate"] = time.perf_counter() - t


def _plan(raw: Path, workdir: str | Path | None, configuration: str | None, device: str, memory_gb: float | None,
          num_processes: int | None, say: Callable[[str], None]) -> tuple[Path, dict, str]:
    """Plan with the GPU or CPU preset (unless a budget is given); the configuration to train."""
    from unetkit.planning import load_plans, plan_dataset

    gpu = device == "cuda" or (device == "auto" and _cuda_available())
    preset = None if memory_gb is not None else ("gpu" if gpu else "cpu")
    plans_path = plan_dataset(raw, workdir, memory_gb=memory_gb, device=preset, num_processes=num_processes,
                              log=say)
    plans = load_plans(plans_path)
    configuration = configuration or default_configuration(plans)
    if configuration not in plans["configurations"]:
        raise DataError(f"configuration {configuration!r} is not in the plans (found "
                        f"{', '.join(plans['configurations'])})", plans_path)
    entry = plans["configurations"][configuration]
    say(f"plan: {configuration} patch {entry['patch_size']}, batch {entry['batch_size']} -> {plans_path}")
    return plans_path, plans, configuration


def _train_folds(result: PipelineResult, raw: Path, workdir: str | Path | None, configuration: str,
                 folds: Sequence[int], overrides: dict[str, Any], on_changed_data: str,
                 say: Callable[[str], None]) -> set[int]:
    """Train (or resume, or report as done) each fold; returns the folds that trained now."""
    from unetkit.training.trainer import train

    retrained: set[int] = set()
    for fold in folds:
        # resume=True: a rerun continues an interrupted fold, or reports a finished one as done.
        trained = train(workdir, raw, configuration, fold, overrides, resume=True, echo=False,
                        on_changed_data=on_changed_data)
        result.fold_dirs.append(trained.output_dir)
        if trained.seconds_per_iteration is not None:  # it trained now: earlier predictions are stale
            retrained.add(int(fold))
        say(f"train: fold {fold}, {trained.epochs_done} epochs -> {trained.output_dir}")
    result.model_dir = result.fold_dirs[0].parent
    return retrained


def _train_previous_stage(raw: Path, workdir: str | Path | None, previous: str, overrides: dict[str, Any],
                          device: str, mirror: bool, num_processes: int | None, on_changed_data: str,
                          seconds: dict[str, float], say: Callable[[str], None]) -> None:
    """Preprocess, train and validate every fold of ``previous`` (3d_lowres): each fold's final
    validation writes its cases' predictions for the cascade stage (``predicted_next_stage``).
    The time spent goes into ``seconds["previous_stage"]``."""
    from unetkit.inference.validation import predict_validation
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.dataset import CachedDataset
    from unetkit.training.splits import load_or_create_splits
    from unetkit.training.trainer import train
    from unetkit.utils.paths import WorkPaths

    start = time.perf_counter()
    paths = WorkPaths.for_dataset(raw, workdir)
    preprocess_dataset(raw, workdir, configurations=[previous], num_processes=num_processes, progress=False)
    cases = CachedDataset(paths.preprocessed(previous)).cases
    folds = range(len(load_or_create_splits(paths.splits, cases)))
    say(f"cascade: training {previous} folds {list(folds)} first; their validation predicts every case for the "
        "cascade stage")
    for fold in folds:
        trained = train(workdir, raw, previous, fold, overrides, resume=True, echo=False,
                        on_changed_data=on_changed_data)
        predict_validation(trained.output_dir, device=device, mirror=mirror, num_processes=num_processes,
                           skip_existing=trained.seconds_per_iteration is None)
        say(f"train: {previous} fold {fold}, {trained.epochs_done} epochs -> {trained.output_dir}")
    seconds["previous_stage"] = time.perf_counter() - start


def _predict_test(result: PipelineResult, test_input: Path, output: Path, folds: Sequence[int], retrained: set[int],
                  device: str, mirror: bool, say: Callable[[str], None]) -> None:
    """Predict the test images; kept predictions are reused unless a fold trained now."""
    from unetkit.inference.cascade import run_previous_stages
    from unetkit.inference.predictor import Predictor, collect_inputs

    cases = collect_inputs(test_input)
    predictor = Predictor.from_model_dir(result.model_dir, folds=list(folds), device=device, mirror=mirror,
                                         progress=False)
    run_previous_stages(predictor, cases, output, skip_existing=not retrained, log=say, mirror=mirror,
                        progress=False)
    summary = predictor.predict_files(cases, output, skip_existing=not retrained)
    result.predictions = output
    result.num_predicted = len(summary.case_seconds) + len(summary.skipped)
    redone = f" ({len(summary.stale)} made earlier from other inputs or by another model: predicted again)" \
        if summary.stale else ""
    say(f"predict: {result.num_predicted} case(s) -> {output}{redone}")


def _validate_and_select(result: PipelineResult, folds: Sequence[int], retrained: set[int], raw: Path, plans: dict,
                         device: str, mirror: bool, num_processes: int | None, say: Callable[[str], None]) -> None:
    """Predict the folds' validation cases, then decide the postprocessing on them."""
    from unetkit.evaluation.postprocessing import determine_postprocessing_pairs, save_postprocessing
    from unetkit.inference.validation import predict_validation
    from unetkit.utils.atomic import read_json

    for fold, fold_dir in zip(folds, result.fold_dirs):
        validation = predict_validation(fold_dir, device=device, mirror=mirror,
                                        skip_existing=int(fold) not in retrained,
                                        num_processes=num_processes)
        dice = (validation.summary or {}).get("foreground_mean", {}).get("Dice")
        result.validation_dice[int(fold)] = dice
        say(f"validate: fold {fold} mean foreground Dice {_fmt(dice)} -> {validation.folder}")
    # nnU-Net's rule, on this configuration's own cross-validation predictions (`unetkit
    # select` does the same across every trained configuration and their ensembles).
    ending = str(plans.get("file_ending") or "")
    pairs = [(case, fold_dir / "validation" / f"{case}{ending}", raw / "labelsTr" / f"{case}{ending}")
             for fold_dir in result.fold_dirs
             for case in read_json(fold_dir / "training_config.json")["val_cases"]]
    spec = determine_postprocessing_pairs(pairs, plans["labels"], num_processes=num_processes)
    result.postprocessing = save_postprocessing(spec, result.model_dir)
    steps = spec.get("steps") or []
    say(f"postprocess: {len(steps)} step(s) kept (mean foreground Dice "
        f"{_fmt(spec['dice_before']['foreground_mean'])} -> {_fmt(spec['dice_after']['foreground_mean'])}) "
        f"-> {result.postprocessing}")


def _evaluate_test(result: PipelineResult, output: Path, test_labels: Path, plans: dict,
                   num_processes: int | None, say: Callable[[str], None]) -> None:
    """Evaluate the test predictions against their references; the numbers go into ``result``."""
    from unetkit.evaluation.evaluate import evaluate_folders

    evaluation = evaluate_folders(output, test_labels, plans["labels"], num_processes=num_processes,
                                  allow_missing=True)
    result.evaluation = output / "summary.json"
    result.test_dice = evaluation["foreground_mean"].get("Dice")
    result.test_dice_per_label = {evaluation["label_names"].get(k, k): evaluation["mean"][k]["Dice"]
                                  for k in evaluation["labels"]}
    say(f"evaluate: mean foreground Dice {_fmt(result.test_dice)} "
        f"({', '.join(f'{k} {_fmt(v)}' for k, v in result.test_dice_per_label.items())}) -> {result.evaluation}")


__all__ = ["run_pipeline", "PipelineResult", "default_configuration"]
