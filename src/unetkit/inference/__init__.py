"""Inference: predict new images with trained models (``unetkit predict``).

Public API:

* :class:`Predictor` - ``Predictor.from_model_dir(MODEL_DIR or [dirs], folds, checkpoint, device)``,
  then ``.predict_array(image (C, *spatial), geometry) -> (labels, probabilities)`` or
  ``.predict_files(inputs, output_dir, save_probabilities=..., skip_existing=...)``.
* :func:`predict_files` - the same in one call.
* :func:`sliding_window_logits`, :func:`gaussian_importance_map` - the sliding-window core.
* :func:`ensemble_folders`, :func:`average_probabilities` - combine saved probabilities.

See docs/inference.md.
"""

from unetkit.inference.ensemble import average_probabilities, ensemble_folders
from unetkit.inference.export import LabelLayout, probabilities_to_labels, read_probabilities, write_prediction
from unetkit.inference.predictor import (ConfigurationModel, InputCase, ModelInputError, PredictionSummary, Predictor,
                                         check_inputs, collect_inputs, load_configuration, predict_files)
from unetkit.inference.sliding_window import (count_forward_passes, gaussian_importance_map, sliding_window_logits,
                                              tile_grid, tile_starts)

__all__ = ["Predictor", "predict_files", "load_configuration", "ConfigurationModel", "InputCase", "ModelInputError",
           "PredictionSummary", "collect_inputs", "check_inputs", "sliding_window_logits", "gaussian_importance_map",
           "tile_grid", "tile_starts", "count_forward_passes", "ensemble_folders", "average_probabilities",
           "LabelLayout", "probabilities_to_labels", "read_probabilities", "write_prediction"]
