"""Prediction with a cascade stage: the previous stage first, then the stage itself.

A ``3d_cascade_fullres`` model takes, besides the images, the ``3d_lowres`` prediction of the
same case (nnU-Net: ``nnUNetv2_predict ... -prev_stage_predictions FOLDER``). unetkit runs both:
the low-resolution configuration trained beside it (``models/3d_lowres__ARCH``, all its trained folds)
predicts every input into ``OUTPUT/previous_stage_3d_lowres/`` (label maps on the input's grid,
no postprocessing, as nnU-Net feeds them), and the cascade stage then reads each case's map from
there, preprocesses it as a label map and adds its one-hot channels to the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from unetkit.inference.predictor import InputCase, ModelInputError, Predictor

PREVIOUS_STAGE_FOLDER = "previous_stage_{}"


def previous_stage_model_dir(model_dir: Path, previous: str) -> Path:
    """``models/PREVIOUS__ARCH`` beside a cascade stage's ``models/CONFIG__ARCH`` (or one of its folds)."""
    model_dir = Path(model_dir)
    config_dir = model_dir.parent if model_dir.name.startswith("fold_") else model_dir
    arch = config_dir.name.split("__", 1)[1] if "__" in config_dir.name else ""
    found = config_dir.parent / f"{previous}__{arch}"
    if not found.is_dir():
        raise ModelInputError(f"{config_dir.name} is a cascade stage and needs the {previous} model trained beside "
                              f"it; train it first (`unetkit train DATASET -c {previous} -f F`, all folds)", found)
    return found


def run_previous_stages(predictor: Predictor, cases: Sequence[InputCase], output_dir: str | Path, *,
                        previous_folds: Sequence[int | str] | None = None, checkpoint: str = "final",
                        skip_existing: bool = False, log: Callable[[str], None] = print,
                        **options: Any) -> Path | None:
    """Predict ``cases`` with the previous stage of ``predictor``'s cascade model, if it has one.

    Sets ``predictor.previous_stage_dir`` to the folder written and returns it (None: no cascade
    stage among the models). The previous stage predicts with ``previous_folds`` (default: every
    trained fold, as its cross-validation trained all of them). ``options`` are :class:`Predictor` keyword arguments (device
    settings, mirroring, step size); postprocessing is not applied to the previous stage.
    """
    stages = {m.previous_stage: m for m in predictor.models if m.previous_stage}
    if not stages:
        return None
    if len(stages) > 1:
        raise ModelInputError(f"the models are cascade stages of different previous stages {sorted(stages)}; "
                              "predict them one at a time")
    (previous, model), = stages.items()
    lowres_dir = previous_stage_model_dir(model.model_dir, previous)
    out = Path(output_dir) / PREVIOUS_STAGE_FOLDER.format(previous)
    log(f"cascade: {model.configuration} takes the {previous} prediction as input; predicting {previous} first "
        f"({lowres_dir}) -> {out}")
    options = {**options, "postprocessing": None}
    first = Predictor.from_model_dir(lowres_dir, previous_folds, checkpoint, predictor.device, **options)
    first.predict_files(list(cases), out, skip_existing=skip_existing)
    log(f"cascade: now {model.configuration} with the {previous} prediction")
    predictor.previous_stage_dir = out
    return out
