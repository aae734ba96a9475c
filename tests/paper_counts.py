"""Comparing a parameter count with the figure a paper prints, to the precision it prints.

A paper's "58.26M" says the count lies in [58.255M, 58.265M): our count must round to the printed
figure. Where it does not, the test names a relative tolerance and the reason (a known layout
difference, or none found); that tolerance is the test's claim, stated in the table beside the
figure, not a blanket margin.
"""

from __future__ import annotations

import re

import torch


def printed_figure(text: str) -> tuple[float, float]:
    """``(value, half a unit of its last printed digit)`` of a count as printed: ``"58.26M"``,
    ``"0.053M"``, ``"~1.037M"`` or an exact ``"19,069,955"``."""
    match = re.fullmatch(r"~?([0-9][0-9,]*)(?:\.([0-9]+))?(M?)", text.strip())
    if match is None:
        raise ValueError(f"not a printed parameter count: {text!r}")
    whole, decimals, millions = match.group(1).replace(",", ""), match.group(2) or "", match.group(3)
    scale = 1e6 if millions else 1.0
    value = float(f"{whole}.{decimals}" if decimals else whole) * scale
    return value, 0.5 * 10.0 ** -len(decimals) * scale


def assert_matches_paper(count: int, printed: str, rel_tolerance: float = 0.0, what: str = "") -> None:
    """``count`` rounds to ``printed``, or lies within ``rel_tolerance`` of it when one is stated."""
    value, half_unit = printed_figure(printed)
    allowed = max(half_unit, rel_tolerance * value)
    assert abs(count - value) <= allowed, (f"{what}: {count:,} parameters, the paper prints {printed} "
                                           f"(allowed {allowed:,.0f}, off by {count - value:+,.0f})")


def keras_count(model: torch.nn.Module) -> int:
    """Parameters as Keras' ``model.summary()`` totals them: batch norms' moving mean and variance
    count too (as non-trainable parameters)."""
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in model.parameters()) + stats
