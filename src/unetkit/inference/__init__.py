"""Inference: predict new images with trained models (``unetkit predict``).

Public API:

* :class:`Predictor` - ``Predictor.from_model_dir(MODEL_DIR or [dirs], folds, checkpoint, device)``,
  then ``.predict_array(image (C, *spatial), geometry) -> (labels, probabilities)`` or
  ``.predict_files(inputs, output_dir, save_probabilities=..., skip_existing=...)``.
* :func:`predict_files` - the same in one call.
* :func:`sliding_window_logits`, :func:`gaussian_importance_map` - the sliding-window core.
* :func:`ensemble_folders`, :func:`average_probabilities` - combine saved probabilities.

See docs/inference.md. The names load lazily (PEP 562), so that ``unetkit.inference.export``
and ``unetkit.inference.tiling`` import without torch (the ONNX predictor needs that).
"""

import importlib
from typing import Any

_SOURCES = {
    "average_probabilities": "ensemble", "ensemble_folders": "ensemble",
    "LabelLayout": "export", "probabilities_to_labels": "export", "read_probabilities": "export",
    "write_prediction": "export",
    "ConfigurationModel": "predictor", "InputCase": "predictor", "ModelInputError": "predictor",
    "PredictionSummary": "predictor", "Predictor": "predictor", "check_inputs": "predictor",
    "collect_inputs": "predictor", "load_configuration": "predictor", "predict_files": "predictor",
    "count_forward_passes": "sliding_window", "gaussian_importance_map": "sliding_window",
    "sliding_window_logits": "sliding_window", "tile_grid": "sliding_window", "tile_starts": "sliding_window",
}


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'unetkit.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"unetkit.inference.{module}"), name)


__all__ = sorted(_SOURCES)
