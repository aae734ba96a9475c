"""U-Score: one number for segmentation quality and efficiency, as U-Bench defines it.

U-Bench (Tang et al. 2025, "U-Bench: A Comprehensive Understanding of U-Net through
100-Variant Benchmarking", arXiv:2510.07041) ranks models by a harmonic mean of accuracy and
efficiency so that neither can buy the score alone. The definition below follows the authors'
reference implementation, the "U-Score calculator" of the project page
(https://fenghetan9.github.io/ubench, source ``index.html`` of github.com/FengheTan9/ubench,
linked from the U-Bench README, section 5):

1. Each raw quantity is normalized to [0, 1] between anchor percentiles P10 and P90:

   - accuracy   a = clip((IoU - P10_iou) / (P90_iou - P10_iou), 0, 1), anchors **per dataset**;
   - parameters p = clip((P90 - ln params) / (P90 - P10), 0, 1), anchors on ln(params in
     millions): fewer parameters score higher;
   - FLOPs      g = clip((P90 - ln GFLOPs) / (P90 - P10), 0, 1), anchors on ln(GFLOPs):
     fewer FLOPs score higher;
   - speed      s = clip((FPS - P10_fps) / (P90_fps - P10_fps), 0, 1): faster scores higher.

   (A zero-width anchor range is widened to 1e-12, as the calculator does.)
2. Every normalized term is floored at 0.05, so that one zero does not zero the score
   (the calculator floors the accuracy term too, not only the three efficiency terms).
3. Efficiency E = harmonic mean of p, g, s with equal weights: 3 / (1/p + 1/g + 1/s).
4. U-Score = weighted harmonic mean of a and E with alpha = 0.5:
   1 / (alpha/a + (1 - alpha)/E) = 2 / (1/a + 1/E).

U-Bench reports U-Score x 100; :func:`u_score` returns the fraction in [0.05, 1].

Anchors come either from U-Bench's published constants (:data:`UBENCH_ANCHORS`, for placing
a model among U-Bench's 100 variants) or from the models of one's own suite
(:func:`anchors_from_suite`: percentiles over the suite's models, so a score says where a model
sits among those compared). Scores made with different anchors are not comparable.

Units: ``params`` in millions, ``flops`` in GFLOPs per forward pass of one input as the chosen
anchors count them, ``fps`` in images (forward passes) per second. U-Bench's efficiency anchors
come from its own profiler at its input size; unetkit counts 2 FLOPs per multiply-accumulate
(docs/models.md), and lightweight-model papers usually report multiply-accumulates as "GFLOPs",
so convert before using :data:`UBENCH_ANCHORS` (see docs/benchmark_statistics.md).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from .stats import Table, _as_float, load_table

FLOOR = 0.05
ALPHA = 0.5
_EPS = 1e-12

EFFICIENCY_COLUMNS = ("params_m", "gflops", "fps")


@dataclass(frozen=True)
class UScoreAnchors:
    """Normalization anchors for one dataset: 10th and 90th percentiles over a set of models.

    ``log_params_*`` and ``log_gflops_*`` are natural logarithms of parameters in millions and
    of GFLOPs; ``iou_*`` are IoU fractions (0-1); ``fps_*`` frames per second.
    """

    iou_p10: float
    iou_p90: float
    log_params_p10: float
    log_params_p90: float
    log_gflops_p10: float
    log_gflops_p90: float
    fps_p10: float
    fps_p90: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict, for JSON reports."""
        return asdict(self)


# U-Bench's efficiency anchors (shared by all datasets) and IoU anchors per dataset, copied as
# numbers from the U-Score calculator of https://fenghetan9.github.io/ubench (FengheTan9/ubench,
# index.html, function calculateUscore and table datasetValues). The parameter and FLOP anchors
# are ln(1.48 M) .. ln(75.2 M) and ln(2.41 G) .. ln(66.7 G).
_UBENCH_EFFICIENCY = {"log_params_p10": 0.39, "log_params_p90": 4.32,
                      "log_gflops_p10": 0.88, "log_gflops_p90": 4.20,
                      "fps_p10": 24.28, "fps_p90": 121.63}
_UBENCH_IOU = {
    "busi": (0.5837592, 0.7062627),
    "busbra": (0.77664876, 0.839330144),
    "tnscui": (0.664944187, 0.784390885),
    "isic": (0.81180614, 0.84177554),
    "skincancer": (0.7906120483830283, 0.8538840522323546),
    "kvasir": (0.75085247, 0.8428773),
    "robotool": (0.6940658864425706, 0.8462163286238785),
    "chasedb": (0.4657582467803476, 0.8117408180656985),
    "drive": (0.15081815, 0.6244703),
    "dsb": (0.84518087, 0.8814354),
    "glas": (0.63124824, 0.83085126),
    "monusac": (0.5333726221401941, 0.6691882627377632),
    "cell": (0.7750129177712127, 0.8449313275090908),
    "covid": (0.6272003645175361, 0.6967376585434479),
    "montgomery": (0.9157433067449976, 0.9587296),
    "dca": (0.5091263834701759, 0.6327484215070674),
    "acdc": (0.7268479093509606, 0.8477579210353294),
    "promise": (0.7816956737173072, 0.8686860589568378),
    "synapse": (0.548646052, 0.721961595),
    "cystoidfluid": (0.6349444722562034, 0.8339477863820954),
}
#: U-Bench's published anchors, keyed by the calculator's dataset keys (busi = BUSI, isic =
#: ISIC2018, chasedb = CHASE, dsb = DSB2018, covid = COVID-QU-Ex, dca = DCA1, ...).
UBENCH_ANCHORS: dict[str, UScoreAnchors] = {
    name: UScoreAnchors(iou_p10=low, iou_p90=high, **_UBENCH_EFFICIENCY) for name, (low, high) in _UBENCH_IOU.items()
}


def _up(x: Any, p10: float, p90: float) -> np.ndarray:
    return np.clip((np.asarray(x, dtype=float) - p10) / max(p90 - p10, _EPS), 0.0, 1.0)


def _down_log(x: Any, log_p10: float, log_p90: float) -> np.ndarray:
    values = np.asarray(x, dtype=float)
    if np.any(values <= 0):
        raise ValueError(f"parameters and FLOPs must be positive for the log normalization, got {values}")
    return np.clip((log_p90 - np.log(values)) / max(log_p90 - log_p10, _EPS), 0.0, 1.0)


def u_score_components(iou: Any, params: Any, flops: Any, fps: Any, anchors: UScoreAnchors,
                       alpha: float = ALPHA, floor: float = FLOOR) -> dict[str, Any]:
    """The U-Score and its parts: ``accuracy`` a, ``params`` p, ``flops`` g, ``speed`` s (each
    normalized and floored), ``efficiency`` E and ``u_score``. Arguments broadcast like numpy
    arrays; scalars give floats. See the module docstring for the formula and units."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    a = np.maximum(_up(iou, anchors.iou_p10, anchors.iou_p90), floor)
    p = np.maximum(_down_log(params, anchors.log_params_p10, anchors.log_params_p90), floor)
    g = np.maximum(_down_log(flops, anchors.log_gflops_p10, anchors.log_gflops_p90), floor)
    s = np.maximum(_up(fps, anchors.fps_p10, anchors.fps_p90), floor)
    efficiency = 3.0 / (1.0 / p + 1.0 / g + 1.0 / s)
    score = 1.0 / (alpha / a + (1.0 - alpha) / efficiency)
    parts = {"accuracy": a, "params": p, "flops": g, "speed": s, "efficiency": efficiency, "u_score": score}
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in parts.items()}


def u_score(iou: Any, params: Any, flops: Any, fps: Any, anchors: UScoreAnchors,
            alpha: float = ALPHA, floor: float = FLOOR) -> Any:
    """U-Score in [floor, 1] (U-Bench prints it x 100).

    Args:
        iou: mean IoU of the model on the dataset (fraction, 0-1).
        params: parameters in millions.
        flops: GFLOPs per forward pass, counted as the anchors were.
        fps: forward passes per second.
        anchors: the dataset's :class:`UScoreAnchors` (``UBENCH_ANCHORS["busi"]``, or one
            entry of :func:`anchors_from_suite`).
        alpha: weight of accuracy in the harmonic mean (U-Bench: 0.5).
        floor: lower bound of each normalized term (U-Bench: 0.05).
    """
    return u_score_components(iou, params, flops, fps, anchors, alpha, floor)["u_score"]


def _per_model_dataset(table: Table, iou_column: str) -> dict[tuple[str, str], dict[str, float]]:
    """Mean IoU (NaN cases left out) and mean efficiency columns per (model, dataset)."""
    sums: dict[tuple[str, str], dict[str, list[float]]] = {}
    for index, row in enumerate(table):
        entry = sums.setdefault((str(row["model"]), str(row["dataset"])),
                                {c: [] for c in (iou_column, *EFFICIENCY_COLUMNS)})
        for column in (iou_column, *EFFICIENCY_COLUMNS):
            entry[column].append(_as_float(row, column, index))
    out: dict[tuple[str, str], dict[str, float]] = {}
    for key, columns in sums.items():
        means = {}
        for column, values in columns.items():
            array = np.asarray(values, dtype=float)
            array = array[~np.isnan(array)]
            if array.size == 0:
                raise ValueError(f"model {key[0]!r} on dataset {key[1]!r} has no {column} value")
            means[column] = float(array.mean())
        out[key] = means
    return out


def anchors_from_suite(table: Table | str | os.PathLike, iou_column: str = "iou") -> dict[str, UScoreAnchors]:
    """U-Score anchors computed from the models of a benchmark suite.

    ``table`` is the tidy table of :mod:`unetkit.benchmark.stats` with an IoU column
    (``iou_column``, per case) and per-row ``params_m``, ``gflops`` and ``fps`` (the model's
    values, repeated on its rows). Per dataset, the IoU anchors are the 10th and 90th
    percentiles (numpy's linear interpolation) of the models' mean IoU on that dataset; the
    efficiency anchors are those percentiles over the models' values (one per model: the mean
    over its rows), on ln(params_m), ln(gflops) and fps, shared by all datasets, as in U-Bench.

    Returns ``{dataset: UScoreAnchors}``. Needs at least 2 models (with one, both percentiles
    are that model's value).
    """
    rows = load_table(table)
    stats = _per_model_dataset(rows, iou_column)
    models = list(dict.fromkeys(model for model, _ in stats))
    datasets = list(dict.fromkeys(dataset for _, dataset in stats))
    if len(models) < 2:
        raise ValueError(f"anchors from a suite need at least 2 models, got {models}; use UBENCH_ANCHORS "
                         "or add models")
    efficiency = {}
    for column, log in (("params_m", True), ("gflops", True), ("fps", False)):
        per_model = np.array([np.mean([v[column] for (m, _), v in stats.items() if m == model]) for model in models])
        if log:
            if np.any(per_model <= 0):
                raise ValueError(f"{column} must be positive for every model, got "
                                 f"{dict(zip(models, per_model.tolist()))}")
            per_model = np.log(per_model)
        efficiency[column] = np.percentile(per_model, [10, 90])
    anchors = {}
    for dataset in datasets:
        ious = np.array([v[iou_column] for (_, d), v in stats.items() if d == dataset])
        low, high = np.percentile(ious, [10, 90])
        anchors[dataset] = UScoreAnchors(
            iou_p10=float(low), iou_p90=float(high),
            log_params_p10=float(efficiency["params_m"][0]), log_params_p90=float(efficiency["params_m"][1]),
            log_gflops_p10=float(efficiency["gflops"][0]), log_gflops_p90=float(efficiency["gflops"][1]),
            fps_p10=float(efficiency["fps"][0]), fps_p90=float(efficiency["fps"][1]))
    return anchors


def u_score_table(table: Table | str | os.PathLike, anchors: Mapping[str, UScoreAnchors] | None = None,
                  iou_column: str = "iou", alpha: float = ALPHA, floor: float = FLOOR) -> list[dict[str, Any]]:
    """U-Score of every (model, dataset) of a tidy table.

    ``anchors`` maps dataset names to :class:`UScoreAnchors`; ``None`` computes them from the
    table with :func:`anchors_from_suite`. Returns one dict per pair with ``model``,
    ``dataset``, mean ``iou``, ``params_m``, ``gflops``, ``fps``, the normalized parts,
    ``efficiency`` and ``u_score`` (fraction), in first-seen order.
    """
    rows = load_table(table)
    if anchors is None:
        anchors = anchors_from_suite(rows, iou_column)
    out = []
    for (model, dataset), values in _per_model_dataset(rows, iou_column).items():
        if dataset not in anchors:
            raise KeyError(f"no U-Score anchors for dataset {dataset!r}; anchors exist for {sorted(anchors)}")
        parts = u_score_components(values[iou_column], values["params_m"], values["gflops"], values["fps"],
                                   anchors[dataset], alpha, floor)
        out.append({"model": model, "dataset": dataset, "iou": values[iou_column], "params_m": values["params_m"],
                    "gflops": values["gflops"], "fps": values["fps"], **parts})
    return out


__all__ = ["UScoreAnchors", "UBENCH_ANCHORS", "FLOOR", "ALPHA", "u_score", "u_score_components",
           "anchors_from_suite", "u_score_table"]
