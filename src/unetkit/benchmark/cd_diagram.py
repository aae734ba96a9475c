"""Critical-difference diagram (Demšar 2006) of average ranks over datasets.

The diagram shows every model at its average rank on one axis (rank 1, the best, on the
left), the Nemenyi critical difference (CD) as a bar of that length above the axis, and thick
horizontal bars under the axis joining groups of models whose average ranks differ by at most
CD, i.e. models the Nemenyi test does not tell apart at the chosen alpha. Two models not joined
by any bar differ significantly. The bars are drawn only when the Friedman test rejected; else
the diagram says "no significant difference overall".

Drawn with matplotlib's object API on an Agg canvas (no global backend switch, no display),
written atomically as PNG and SVG.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unetkit.utils.atomic import atomic_path

# Rank gaps within this tolerance of CD count as "not more than CD" (rounding of averages).
_TOLERANCE = 1e-9


def cd_groups(avg_ranks: Mapping[str, float], cd: float) -> list[list[str]]:
    """Maximal groups of models whose average ranks span at most ``cd``.

    Models are sorted by rank; a group is a run of consecutive models from the first to the
    last one within ``cd`` of it, kept when it has at least two models and is not contained in
    a group already found. These are the bars of the diagram. Returns lists of model names,
    best first.
    """
    if cd < 0:
        raise ValueError(f"the critical difference must be non-negative, got {cd}")
    ordered = sorted(avg_ranks.items(), key=lambda item: (item[1], item[0]))
    groups: list[list[str]] = []
    last_end = -1
    for start in range(len(ordered)):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][1] - ordered[start][1] <= cd + _TOLERANCE:
            end += 1
        if end > start and end > last_end:
            groups.append([name for name, _ in ordered[start:end + 1]])
            last_end = end
    return groups


def cd_diagram(avg_ranks: Mapping[str, float], cd: float, path: str | os.PathLike, *,
               title: str | None = None, width: float = 7.0, formats: Sequence[str] = ("png", "svg"),
               dpi: int = 200, significant: bool = True) -> list[Path]:
    """Draw the critical-difference diagram and write it as ``path`` with each suffix in
    ``formats`` (``results/cd.png`` and ``results/cd.svg`` for ``path="results/cd"``).

    Args:
        avg_ranks: ``{model: average rank}``, 1 = best (``friedman_nemenyi(...)["average_ranks"]``).
        cd: Nemenyi critical difference (``friedman_nemenyi(...)["cd"]``).
        path: output path; an existing suffix is replaced by each format's.
        title: optional title, e.g. ``"Dice, 5 datasets, alpha = 0.05"``.
        width: figure width in inches; the height follows the number of models.
        formats: matplotlib formats to write.
        dpi: resolution of raster formats.
        significant: whether the Friedman / Iman-Davenport test rejected. When it did not, the
            Nemenyi comparisons must not be read (Demšar 2006): no CD bar and no groups are
            drawn, and the diagram says "no significant difference overall".

    Returns the paths written.
    """
    if len(avg_ranks) < 2:
        raise ValueError(f"a critical-difference diagram needs at least 2 models, got {list(avg_ranks)}")
    if not formats:
        raise ValueError("formats must name at least one file format, e.g. ('png', 'svg')")
    ordered = sorted(avg_ranks.items(), key=lambda item: (item[1], item[0]))
    k = len(ordered)
    groups = cd_groups(avg_ranks, cd) if significant else []
    if not significant:
        cd = 0.0  # no CD bar: the post-hoc test is not run
    low = 1
    high = max(k, int(-(-max(r for _, r in ordered) // 1)))

    # Layout in data units: x is the rank, y grows downward from the axis at y = 0.
    n_left = (k + 1) // 2
    label_step = 0.55
    group_step = 0.22
    cd_y = -0.9
    group_top = 0.35
    labels_top = group_top + group_step * max(len(groups), 1) + 0.35
    bottom = labels_top + label_step * max(n_left, k - n_left) + 0.2
    top = cd_y - 0.5 if cd > 0 or not significant else -0.6
    if title:
        top -= 0.5
    height = max(2.0, 0.42 * (bottom - top))

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    span = high - low
    margin = 0.45 * span + 0.8
    axes.set_xlim(low - margin, high + margin)
    axes.set_ylim(bottom, top)

    # Rank axis with ticks.
    axes.plot([low, high], [0, 0], color="black", linewidth=1.2)
    for tick in range(low, high + 1):
        axes.plot([tick, tick], [0, -0.12], color="black", linewidth=1.0)
        axes.text(tick, -0.18, str(tick), ha="center", va="bottom", fontsize=9)
    for half in range(low, high):
        axes.plot([half + 0.5, half + 0.5], [0, -0.06], color="black", linewidth=0.7)

    # Critical difference bar, starting at rank 1.
    if cd > 0:
        axes.plot([low, low + cd], [cd_y, cd_y], color="black", linewidth=1.5)
        for end in (low, low + cd):
            axes.plot([end, end], [cd_y - 0.08, cd_y + 0.08], color="black", linewidth=1.5)
        axes.text(low + cd / 2, cd_y - 0.12, f"CD = {cd:.3f}", ha="center", va="bottom", fontsize=9)
    if not significant:
        axes.text((low + high) / 2, cd_y, "no significant difference overall (Friedman / Iman-Davenport)",
                  ha="center", va="center", fontsize=9, fontstyle="italic")
    if title:
        axes.text((low + high) / 2, top + 0.15, title, ha="center", va="top", fontsize=10, fontweight="bold")

    # Models: the better half labelled on the left, the rest on the right, with elbow lines.
    for index, (name, rank) in enumerate(ordered):
        if index < n_left:
            y = labels_top + label_step * index
            x_text = low - 0.25 * margin
            axes.plot([rank, rank, x_text], [0, y, y], color="black", linewidth=0.9)
            axes.text(x_text - 0.05, y, f"{name} ({rank:.2f})", ha="right", va="center", fontsize=9)
        else:
            y = labels_top + label_step * (k - 1 - index)
            x_text = high + 0.25 * margin
            axes.plot([rank, rank, x_text], [0, y, y], color="black", linewidth=0.9)
            axes.text(x_text + 0.05, y, f"({rank:.2f}) {name}", ha="left", va="center", fontsize=9)
        axes.plot([rank], [0], marker="o", markersize=3, color="black")

    # Groups not significantly different: thick bars slightly wider than their rank span.
    for row, group in enumerate(groups):
        first, last = avg_ranks[group[0]], avg_ranks[group[-1]]
        y = group_top + group_step * row
        axes.plot([first - 0.05, last + 0.05], [y, y], color="tab:red", linewidth=3.5, solid_capstyle="round")

    destination = Path(path)
    written = []
    for fmt in formats:
        target = destination.with_suffix("." + fmt)
        with atomic_path(target) as tmp:
            figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(target)
    return written
