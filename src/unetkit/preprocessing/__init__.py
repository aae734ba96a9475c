"""Preprocessing: raw dataset + plans.json -> the training cache (``unetkit preprocess``).

Public API:

* :func:`preprocess_dataset` - every training case into ``WORKDIR/NAME/preprocessed/CONFIG/``,
  in parallel, resumable.
* :func:`preprocess_case` - one case in memory (inference uses it on new images).
* :func:`restore_to_original` - a prediction on the cache grid back onto the raw image's grid.
* :func:`load_case` - read a cached case (memory-mapped).
"""

from unetkit.preprocessing.cache import load_case, preprocessing_fingerprint
from unetkit.preprocessing.preprocess import (PreprocessSummary, preprocess_case, preprocess_dataset,
                                              restore_to_original)

__all__ = ["preprocess_dataset", "preprocess_case", "restore_to_original", "load_case",
           "preprocessing_fingerprint", "PreprocessSummary"]
