"""Evaluation: metrics in millimetres, folder evaluation, postprocessing, model selection.

Public API:

* :func:`compute_metrics` - Dice, IoU, precision, recall, HD95, ASSD and NSD of one case per
  label or region (:mod:`unetkit.evaluation.metrics` states every convention).
* :func:`evaluate_folders` - predictions vs references by case name; writes ``summary.json`` and
  ``per_case.csv``; :func:`load_summary` reads a summary back.
* :func:`determine_postprocessing`, :func:`apply_postprocessing`, :func:`load_postprocessing` -
  nnU-Net's largest-connected-component postprocessing, decided on cross-validation.
* :func:`select_best_configuration` - rank trained configurations and their pairwise ensembles
  on cross-validation (nnU-Net's find_best_configuration).

The submodules import only numpy/scipy/cc3d (no torch), so inference can use them cheaply.
"""

from unetkit.evaluation.evaluate import evaluate_folders, evaluate_pairs, load_summary, pair_folders, resolve_labels
from unetkit.evaluation.metrics import compute_metrics, label_key, parse_label_key, surface_voxels
from unetkit.evaluation.postprocessing import (apply_postprocessing, determine_postprocessing,
                                               determine_postprocessing_pairs, keep_largest_component,
                                               load_postprocessing, postprocess_folder, save_postprocessing)
from unetkit.evaluation.selection import select_best_configuration

__all__ = ["compute_metrics", "label_key", "parse_label_key", "surface_voxels", "evaluate_folders", "evaluate_pairs",
           "load_summary", "pair_folders", "resolve_labels", "apply_postprocessing", "determine_postprocessing",
           "determine_postprocessing_pairs", "keep_largest_component", "load_postprocessing", "postprocess_folder",
           "save_postprocessing", "select_best_configuration"]
