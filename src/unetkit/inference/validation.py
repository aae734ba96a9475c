"""Cross-validation predictions of a trained fold, as nnU-Net writes them after training.

After ``unetkit train`` finishes a fold, its validation cases are predicted in full (sliding
window, mirroring, the final checkpoint) and written on their original grid::

    models/CONFIG__ARCH/fold_F/validation/CASE.ext    label map, the raw dataset's format
    models/CONFIG__ARCH/fold_F/validation/CASE.npz    "probabilities" (K, *spatial), float16
    models/CONFIG__ARCH/fold_F/validation/summary.json, per_case.csv   (when the raw labels are found)

These are what ``unetkit select`` ranks configurations and ensembles on, and what the
postprocessing is decided on. Everything is read from files the earlier stages wrote: the fold's
``training_config.json`` (its validation cases), the checkpoint, and the preprocessed cache
(image and ``CASE.json`` with the geometry to write back), so the raw images are not read and
preprocessed again. The raw labels are found through ``plans.json``'s ``raw_dataset``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import Geometry
from unetkit.inference import provenance
from unetkit.inference.export import prediction_paths, probabilities_to_labels, write_prediction
from unetkit.inference.predictor import Predictor, load_configuration, resolve_device
from unetkit.utils.atomic import read_json

VALIDATION_FOLDER = "validation"


@dataclass
class ValidationResult:
    """What :func:`predict_validation` did."""

    folder: Path
    cases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    summary: dict | None = None           # the evaluation summary when the references were found
    note: str | None = None               # why there is no evaluation


def _work_root(fold_dir: Path) -> Path:
    # WORKDIR/NAME/models/CONFIG__ARCH/fold_F -> WORKDIR/NAME
    return fold_dir.resolve().parents[2]


def predict_validation(fold_dir: str | Path, *, device: str = "auto", mirror: bool = True,
                       save_probabilities: bool = True, checkpoint: str = "final", skip_existing: bool = False,
                       evaluate: bool = True, num_processes: int | None = None,
                       log: Callable[[str], None] | None = None) -> ValidationResult:
    """Predict a trained fold's validation cases into ``fold_dir/validation`` and evaluate them.

    Args:
        fold_dir: ``WORKDIR/NAME/models/CONFIG__ARCH/fold_F`` after training.
        mirror: test-time mirroring (nnU-Net validates with it).
        save_probabilities: also write ``CASE.npz`` (needed by ``unetkit select`` for ensembles).
        skip_existing: keep cases already written by this model from the same cache entries.
        evaluate: evaluate against ``plans.json``'s ``raw_dataset``/labelsTr when it exists.

    Raises:
        DataError: the fold has no ``training_config.json``, or a validation case is not in the
            preprocessed cache.
    """
    from unetkit.utils.names import check_data_identifier

    say = log or (lambda message: None)
    start = time.perf_counter()
    fold_dir = Path(fold_dir)
    config_path = fold_dir / "training_config.json"
    if not config_path.is_file():
        raise DataError("no training_config.json: not a trained fold folder", fold_dir)
    run_config = read_json(config_path)
    cases = list(run_config.get("val_cases") or [])
    model = load_configuration(fold_dir, checkpoint=checkpoint, device="cpu")
    predictor = Predictor([model], device=resolve_device(device), mirror=mirror, progress=False)
    plans = model.plans
    root = _work_root(fold_dir)
    cache_dir = root / "preprocessed" / check_data_identifier(model.entry, model.configuration, fold_dir)
    ending = str(plans.get("file_ending") or ".nii.gz")
    out = fold_dir / VALIDATION_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    result = ValidationResult(out)
    say(f"predicting {len(cases)} validation case(s) into {out}")
    signature = predictor.signature()
    recorded = provenance.read_record(out, signature)
    inputs = {case: _cache_signature(cache_dir, case) for case in cases}
    stages = _Stages.of(fold_dir, model, say)
    try:
        _predict_cases(cases, out, ending, recorded, inputs, skip_existing, save_probabilities, cache_dir,
                       predictor, model, mirror, result, stages)
    finally:
        provenance.write_record(out, signature, {**{k: v for k, v in recorded.items() if k not in inputs},
                                                 **{c: inputs[c] for c in [*result.skipped, *result.cases]}})
    result.seconds = time.perf_counter() - start
    if evaluate:
        result.summary, result.note = _evaluate(out, plans, cases, ending, num_processes)
        if result.summary is not None:
            fg = result.summary["foreground_mean"].get("Dice", float("nan"))
            say(f"validation mean foreground Dice {fg:.4f} over {result.summary['num_cases']} case(s) "
                f"({out / 'summary.json'})")
        elif result.note:
            say(f"validation not evaluated: {result.note}")
    return result


def _cache_signature(cache_dir: Path, case: str) -> str:
    """What a validation prediction depends on besides the model: the cache entry it was made from."""
    from unetkit.preprocessing.cache import read_properties

    props = read_properties(cache_dir, case) or {}
    return f"{props.get('raw_signature')}:{props.get('plans_fingerprint')}"


@dataclass
class _Stages:
    """The cascade around a fold: where its input from the previous stage comes from, and the
    next stages it predicts for (``predicted_next_stage``, as nnU-Net's final validation)."""

    previous: Path | None = None                 # models/PREV__ARCH/predicted_next_stage/CONFIG
    previous_name: str = ""                      # PREV (3d_lowres)
    labels: list[int] = field(default_factory=list)
    say: Callable[[str], None] = print
    next: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (its cache, output folder)

    @classmethod
    def of(cls, fold_dir: Path, model, say: Callable[[str], None]) -> "_Stages":
        from unetkit.planning.plans import load_plans
        from unetkit.training.cascade import next_stages, predictions_folder, previous_stage, stage_labels

        models_root, arch = fold_dir.resolve().parents[1], fold_dir.resolve().parent.name.split("__", 1)[-1]
        stages = cls(labels=stage_labels(model.plans), say=say)
        if previous_stage(model.entry):
            stages.previous_name = previous_stage(model.entry)
            stages.previous = predictions_folder(models_root, stages.previous_name, arch, model.configuration)
        names = next_stages(model.entry)
        if names:
            plans = load_plans(_work_root(fold_dir) / "plans.json")
            for name in names:
                entry = plans["configurations"].get(name)
                if entry is None:
                    say(f"note: next stage {name!r} is not in plans.json; not predicted for it")
                    continue
                stages.next[name] = (_work_root(fold_dir) / "preprocessed" / entry["data_identifier"],
                                     predictions_folder(models_root, model.configuration, arch, name))
        return stages

    def done(self, case: str) -> bool:
        return all((folder / f"{case}.npy").is_file() for _, folder in self.next.values())

    def input(self, case: str, data: np.ndarray) -> np.ndarray:
        """The network input: the cached image, plus the previous stage's one-hot for a cascade stage."""
        if self.previous is None:
            return data
        from unetkit.training.cascade import load_prediction, require_predictions, with_previous_stage

        require_predictions(self.previous, [case], self.previous_name, self.previous.name)
        return with_previous_stage(data, load_prediction(self.previous, case, data.shape[1:]), self.labels)

    def write_next(self, case: str, probs: np.ndarray, entry: dict, to_labels: Callable, regions: bool) -> None:
        """Each next stage's input: these probabilities on its cache grid, as a label map."""
        from unetkit.preprocessing.cache import read_properties
        from unetkit.training.cascade import write_next_stage

        for name, (cache, folder) in self.next.items():
            props = read_properties(cache, case)
            if not props or "shape_after_resampling" not in props:
                self.say(f"note: {case} is not preprocessed for {name} ({cache}); run `unetkit preprocess` for it "
                    "and validate again to predict the next stage")
                continue
            write_next_stage(probs, props["shape_after_resampling"], folder, case, entry, to_labels, regions)


def _predict_cases(cases: list[str], out: Path, ending: str, recorded: dict[str, str], inputs: dict[str, str],
                   skip_existing: bool, save_probabilities: bool, cache_dir: Path, predictor: Predictor, model,
                   mirror: bool, result: ValidationResult, stages: _Stages) -> None:
    from unetkit.preprocessing import restore_to_original
    from unetkit.preprocessing.cache import load_case

    plans = model.plans
    for case in cases:
        label_path, npz_path, _ = prediction_paths(out, case, ending)
        if (skip_existing and label_path.is_file() and (not save_probabilities or npz_path.is_file())
                and recorded.get(case) == inputs[case] and stages.done(case)):
            result.skipped.append(case)
            continue
        try:
            data, _, _, properties = load_case(cache_dir, case)
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"validation case {case!r} is not in the preprocessed cache {cache_dir}: {exc}",
                            cache_dir, case) from exc
        missing = [k for k in ("geometry", "bbox", "original_shape", "shape_after_crop", "shape_after_resampling",
                               "spacing_after_transpose", "target_spacing") if k not in properties]
        if missing:
            raise DataError(f"{case}.json lacks {', '.join(missing)}: not written by `unetkit preprocess`; "
                            "preprocess again", cache_dir, case)
        probs = predictor.probabilities_on_cache_grid(0, stages.input(case, np.asarray(data))).cpu().numpy()
        stages.write_next(case, probs, model.entry, lambda p: probabilities_to_labels(p, predictor.layout),
                          predictor.layout.uses_regions)
        probs = restore_to_original(probs, properties, plans, model.configuration)
        labels = probabilities_to_labels(probs, predictor.layout)
        geometry = Geometry.from_json(properties["geometry"])
        write_prediction(labels, label_path, geometry, probs if save_probabilities else None, predictor.layout,
                         {"case": case, "models": [model.describe()], "mirror": mirror})
        result.cases.append(case)


def _evaluate(out: Path, plans: dict, cases: list[str], ending: str, num_processes: int | None
              ) -> tuple[dict | None, str | None]:
    from unetkit.evaluation.evaluate import evaluate_pairs, resolve_labels, write_results

    raw = plans.get("raw_dataset")
    if not raw:
        return None, "plans.json does not say where the raw dataset is (planned by an older unetkit)"
    gt_dir = Path(raw) / "labelsTr"
    pairs, missing = [], []
    for case in cases:
        reference = gt_dir / f"{case}{ending}"
        (pairs if reference.is_file() else missing).append((case, out / f"{case}{ending}", reference))
    if missing:
        return None, f"{len(missing)} reference(s) not found in {gt_dir} (e.g. {missing[0][2].name})"
    labels, names, ignore = resolve_labels(plans.get("labels") or {}, None)
    summary = evaluate_pairs(pairs, labels, ignore_label=ignore, label_names=names, num_processes=num_processes)
    summary["prediction_folder"] = str(out)
    summary["reference_folder"] = str(gt_dir)
    summary["file_ending"] = ending
    summary["metric_per_case"] = summary.pop("metric_per_case")
    write_results(summary, out)
    return summary, None


__all__ = ["predict_validation", "ValidationResult", "VALIDATION_FOLDER"]
