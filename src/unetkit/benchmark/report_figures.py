"""Figures of the benchmark report: Pareto plots, per-case distributions, example overlays.

Every function draws with matplotlib's object API on an Agg canvas (no global backend, no
display) and returns PNG bytes, which the report embeds as base64 so the HTML file stands
alone.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from unetkit.data.io import read_images, read_label

# Label k is drawn in COLOURS[(k - 1) % len]: saturated tab10 colours on grey images; on colour
# photographs (skin, endoscopy: mostly red and brown) bright colours that are rare there.
_LABEL_COLOURS = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple", "tab:olive",
                  "tab:blue", "tab:pink", "tab:brown")
_RGB_LABEL_COLOURS = ("lime", "cyan", "yellow", "magenta", "white", "deepskyblue", "orange")
_FRONT_COLOUR = "tab:red"
_POINT_COLOUR = "tab:blue"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _grid(n: int, columns: int = 3) -> tuple[int, int]:
    columns = max(1, min(columns, n))
    return math.ceil(n / columns), columns


# ---------------------------------------------------------------------------------- Pareto

def pareto_front(costs: Sequence[float], scores: Sequence[float], higher_is_better: bool = True) -> list[bool]:
    """Which points are Pareto-optimal: no other point costs at most as much and scores at
    least as well, with one of the two strictly. Points with a non-finite value are never on
    the front."""
    cost = np.asarray(costs, dtype=float)
    score = np.asarray(scores, dtype=float) * (1.0 if higher_is_better else -1.0)
    finite = np.isfinite(cost) & np.isfinite(score)
    on_front = []
    for i in range(cost.size):
        if not finite[i]:
            on_front.append(False)
            continue
        dominated = finite & (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        on_front.append(not bool(dominated.any()))
    return on_front


def _log_axis(axis, span: float) -> None:
    """Plain numbers on a log axis (1, 2, 5, 10 ... rather than 2 x 10^0), minor labels only
    when the axis spans less than two decades (else they collide)."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(plain if span < 100 else NullFormatter())


def pareto_figure(panels: Sequence[tuple[str, Sequence[tuple[str, float, float]]]], cost_label: str,
                  metric_label: str, higher_is_better: bool = True, title: str | None = None) -> bytes:
    """One panel per (title, [(model, cost, score)]): score against cost (log axis when the
    costs span more than a factor 10), the Pareto front joined by a step line in red."""
    rows, columns = _grid(len(panels))
    figure = _new_figure(4.2 * columns, 3.4 * rows + (0.3 if title else 0.0))
    if title:
        figure.suptitle(title, fontsize=9)
    for index, (title, points) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        kept = [(m, c, s) for m, c, s in points if np.isfinite(c) and np.isfinite(s) and c > 0]
        axes.set_title(title, fontsize=10)
        axes.set_xlabel(cost_label, fontsize=9)
        axes.set_ylabel(metric_label, fontsize=9)
        axes.tick_params(labelsize=8)
        axes.grid(True, alpha=0.3)
        if not kept:
            axes.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=axes.transAxes)
            continue
        names = [m for m, _, _ in kept]
        cost = np.array([c for _, c, _ in kept])
        score = np.array([s for _, _, s in kept])
        front = np.array(pareto_front(cost, score, higher_is_better))
        if cost.max() / cost.min() > 10:
            axes.set_xscale("log")
            _log_axis(axes.xaxis, cost.max() / cost.min())
        axes.scatter(cost[~front], score[~front], color=_POINT_COLOUR, s=28, zorder=3, label="dominated")
        axes.scatter(cost[front], score[front], color=_FRONT_COLOUR, s=40, marker="D", zorder=4,
                     label="Pareto front")
        order = np.argsort(cost[front])
        axes.step(cost[front][order], score[front][order], where="post", color=_FRONT_COLOUR, alpha=0.6,
                  linewidth=1.2)
        for name, x, y in zip(names, cost, score):
            axes.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if index == 0:
            axes.legend(fontsize=7, loc="lower right")
        axes.margins(x=0.15, y=0.12)
    return figure_png(figure)


# ---------------------------------------------------------------------- distributions

def distribution_figure(panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float]]]]], metric_label: str,
                        seed: int = 0) -> bytes:
    """Box plots with the cases as jittered points, one panel per (dataset, [(model, values)]).
    Non-finite values are left out and counted in the axis label."""
    rows, columns = _grid(len(panels), 2)
    widest = max((len(models) for _, models in panels), default=1)
    figure = _new_figure(max(4.5, 0.9 * widest + 1.5) * columns, 3.6 * rows)
    rng = np.random.default_rng(seed)
    for index, (title, models) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        data, labels = [], []
        for name, values in models:
            array = np.asarray(values, dtype=float)
            finite = array[np.isfinite(array)]
            left_out = array.size - finite.size
            data.append(finite)
            labels.append(name + (f"\n({left_out} n/a)" if left_out else ""))
        positions = np.arange(1, len(data) + 1)
        axes.boxplot([d if d.size else [np.nan] for d in data], positions=positions, widths=0.55,
                     showfliers=False, medianprops={"color": "black"})
        for position, values in zip(positions, data):
            axes.scatter(position + rng.uniform(-0.18, 0.18, values.size), values, s=9, alpha=0.6,
                         color=_POINT_COLOUR, zorder=3)
        axes.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
        axes.set_title(title, fontsize=10)
        axes.set_ylabel(metric_label, fontsize=9)
        axes.tick_params(axis="y", labelsize=8)
        axes.grid(True, axis="y", alpha=0.3)
    return figure_png(figure)


# ---------------------------------------------------------------------------- overlays

def _display_image(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(array for imshow scaled to [0, 1], is_rgb): three channels as RGB, else the first
    channel in grey between its 0.5th and 99.5th percentiles."""
    if image.shape[0] == 3:
        rgb = np.moveaxis(image.astype(float), 0, -1)
        if image.dtype == np.uint8:
            return rgb / 255.0, True
        low, high = float(rgb.min()), float(rgb.max())
        return (rgb - low) / (high - low) if high > low else np.zeros_like(rgb), True
    grey = image[0].astype(float)
    low, high = np.percentile(grey, [0.5, 99.5])
    return np.clip((grey - low) / (high - low), 0, 1) if high > low else np.zeros_like(grey), False


def load_overlay(image_paths: Sequence[str | Path], reference_path: str | Path, prediction_path: str | Path,
                 case: str | None = None) -> dict:
    """Read one case for an overlay: the image, the reference and the prediction as 2D arrays.

    2D cases are shown whole; for 3D volumes the axial slice (numpy axis 0) with the most
    reference foreground is taken (the middle slice when the reference is empty). Returns
    ``{"image", "rgb", "reference", "prediction", "where", "aspect"}``. Raises DataError for
    unreadable files and ValueError when the shapes differ.
    """
    image, geometry = read_images(list(image_paths), case)
    reference, _ = read_label(reference_path, case)
    prediction, _ = read_label(prediction_path, case)
    if reference.shape != image.shape[1:] or prediction.shape != image.shape[1:]:
        raise ValueError(f"shapes differ: image {image.shape[1:]}, reference {reference.shape}, "
                         f"prediction {prediction.shape}")
    where = "whole image"
    aspect = 1.0
    if reference.ndim == 3:
        foreground = (reference > 0).reshape(reference.shape[0], -1).sum(axis=1)
        z = int(np.argmax(foreground)) if foreground.max() > 0 else reference.shape[0] // 2
        image, reference, prediction = image[:, z], reference[z], prediction[z]
        where = f"axial slice {z} of {foreground.size}"
        spacing = geometry.spacing
        aspect = float(spacing[1] / spacing[2]) if len(spacing) == 3 and spacing[2] > 0 else 1.0
    display, rgb = _display_image(image)
    return {"image": display, "rgb": rgb, "reference": reference, "prediction": prediction, "where": where,
            "aspect": aspect}


def _draw_labels(axes, display: np.ndarray, rgb: bool, label: np.ndarray, aspect: float) -> None:
    axes.imshow(display, cmap=None if rgb else "gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
    overlay = np.zeros((*label.shape, 4))
    palette = _RGB_LABEL_COLOURS if rgb else _LABEL_COLOURS
    for value in np.unique(label[label > 0]):
        colour = to_rgba(palette[(int(value) - 1) % len(palette)])
        mask = label == value
        overlay[mask] = (*colour[:3], 0.35)
        axes.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)
    axes.imshow(overlay, aspect=aspect, interpolation="nearest")


def overlay_figure(rows: Sequence[tuple[str, dict | str]]) -> bytes:
    """One row per (title, case from :func:`load_overlay` or an error message): image,
    reference and prediction side by side, labels as coloured fill with contours."""
    figure = _new_figure(8.4, 2.9 * len(rows))
    for r, (title, case) in enumerate(rows):
        panels = [figure.add_subplot(len(rows), 3, 3 * r + c + 1) for c in range(3)]
        for axes in panels:
            axes.set_xticks([])
            axes.set_yticks([])
        if isinstance(case, str):
            panels[0].set_title(title, fontsize=9, loc="left")
            panels[1].text(0.5, 0.5, case, ha="center", va="center", wrap=True, fontsize=8,
                           transform=panels[1].transAxes)
            continue
        panels[0].imshow(case["image"], cmap=None if case["rgb"] else "gray", vmin=0, vmax=1,
                         aspect=case["aspect"], interpolation="nearest")
        _draw_labels(panels[1], case["image"], case["rgb"], case["reference"], case["aspect"])
        _draw_labels(panels[2], case["image"], case["rgb"], case["prediction"], case["aspect"])
        panels[0].set_title(f"{title}\nimage ({case['where']})", fontsize=9, loc="left")
        panels[1].set_title("reference", fontsize=9)
        panels[2].set_title("prediction", fontsize=9)
    return figure_png(figure)
