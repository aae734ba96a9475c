"""Benchmarking: run suites, compare models with honest statistics, report, advise.

The way through (each step reads the previous one's files, docs/benchmark_results.md):

- :mod:`unetkit.benchmark.runner` (``unetkit bench``): models x datasets under one recipe,
  local processes or Ray, resumable; writes the results folder and its tidy table;
- :mod:`unetkit.benchmark.report` (``unetkit report``): the HTML/Markdown/CSV report;
- :mod:`unetkit.benchmark.advisor` (``unetkit advise``): models ranked for a new dataset.

They import torch only where they train or profile. The statistics below read a tidy table, one row per (model, dataset, case) with per-case metric columns
(see :mod:`unetkit.benchmark.stats`). This package provides:

- per model and dataset, the mean with a bootstrap confidence interval (:func:`summarize`,
  :func:`bootstrap_ci`);
- paired comparisons with a baseline: Wilcoxon signed-rank over cases, Holm-corrected, with
  effect sizes (:func:`paired_tests`, :func:`holm`, :func:`rank_biserial`, :func:`cohens_dz`);
- across datasets: Friedman test, Iman-Davenport F, Nemenyi critical difference and pairwise
  p-values (:func:`score_matrix`, :func:`friedman_nemenyi`, :func:`critical_difference`), for
  two models the Wilcoxon test over datasets (:func:`wilcoxon_over_datasets`), and
  the critical-difference diagram (:func:`cd_diagram`, :func:`cd_groups`);
- U-Bench's U-Score of accuracy and efficiency (:func:`u_score`, :func:`anchors_from_suite`,
  :data:`UBENCH_ANCHORS`).

Definitions, assumptions and how to read the outputs: docs/benchmark_statistics.md.
The statistics import no torch.
"""

from .cd_diagram import cd_diagram, cd_groups
from .stats import (
    KEY_COLUMNS,
    MIN_PAIRS,
    bootstrap_ci,
    cohens_dz,
    critical_difference,
    friedman_nemenyi,
    holm,
    load_table,
    nemenyi_q_alpha,
    paired_tests,
    rank_biserial,
    score_matrix,
    summarize,
    wilcoxon_over_datasets,
)
from .uscore import (
    UBENCH_ANCHORS,
    UScoreAnchors,
    anchors_from_suite,
    u_score,
    u_score_components,
    u_score_table,
)

__all__ = [
    "KEY_COLUMNS", "load_table", "bootstrap_ci", "summarize", "holm", "rank_biserial", "cohens_dz",
    "paired_tests", "MIN_PAIRS", "score_matrix", "nemenyi_q_alpha", "critical_difference", "friedman_nemenyi",
    "wilcoxon_over_datasets", "cd_groups", "cd_diagram",
    "UScoreAnchors", "UBENCH_ANCHORS", "u_score", "u_score_components", "anchors_from_suite", "u_score_table",
]
