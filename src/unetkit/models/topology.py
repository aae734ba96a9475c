"""A U-Net topology as a plan writes it, checked and expanded to one tuple per stage and axis.

plans.json describes a network by numbers (``n_stages``, ``features_per_stage``, ``kernel_sizes``,
``strides``, per-stage counts), as nnU-Net v2 does (Isensee et al., Nature Methods 2021,
Supplementary Note 3). A plan always writes full lists; a user creating a model by name may write
nothing, a single number, or lists. This module turns any of those into one explicit,
validated form and fills what is missing with nnU-Net's rules, so every family builds from the same
checked topology and errors name the keyword that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Union

#: Features of the first stage, doubled per stage (nnU-Net's ``UNet_base_num_features``).
BASE_FEATURES = 32
#: Feature cap per dimension (nnU-Net's ``UNet_max_features_3d`` / ``UNet_max_features_2d``).
MAX_FEATURES = {2: 512, 3: 320}
#: Stages of a model created by name alone.
DEFAULT_N_STAGES = 5

IntOrSeq = Union[int, Sequence[int]]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Topology:
    """Resolution stages of a U-Net encoder, shallowest first; every entry explicit.

    Attributes:
        spatial_dims: 2 or 3.
        features_per_stage: output feature maps of each stage.
        kernel_sizes: per stage, the convolution kernel per axis.
        strides: per stage, the downsampling stride per axis (the first stage's is usually 1).
    """

    spatial_dims: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[Shape, ...]
    strides: tuple[Shape, ...]

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def divisor(self) -> Shape:
        """Per axis, the product of all strides: a patch must be a multiple of it."""
        out = [1] * self.spatial_dims
        for stride in self.strides:
            out = [o * s for o, s in zip(out, stride)]
        return tuple(out)


def default_features(n_stages: int, spatial_dims: int) -> tuple[int, ...]:
    """nnU-Net's widths: 32 doubled per stage, capped at 320 (3D) or 512 (2D)."""
    return tuple(min(MAX_FEATURES[spatial_dims], BASE_FEATURES * 2 ** i) for i in range(n_stages))


def make_topology(spatial_dims: int, n_stages: int | None = None,
                  features_per_stage: IntOrSeq | None = None,
                  kernel_sizes: IntOrSeq | Sequence[IntOrSeq] | None = None,
                  strides: IntOrSeq | Sequence[IntOrSeq] | None = None) -> Topology:
    """Check and expand the topology keywords of a plan.

    Missing values follow nnU-Net: ``n_stages`` from the lengths of the given lists, else 5;
    features 32 doubled per stage with the cap of :func:`default_features`; kernel 3 on every axis;
    strides 1 for the first stage and 2 after. A single number stands for every stage (and axis);
    per stage, a number stands for every axis.

    Raises:
        ValueError: naming the keyword, the expected length and what was given.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if n_stages is None:
        lengths = {len(v) for v in (features_per_stage, kernel_sizes, strides)
                   if isinstance(v, Sequence) and not isinstance(v, str)}
        n_stages = lengths.pop() if len(lengths) == 1 else DEFAULT_N_STAGES
    if not _is_int(n_stages) or n_stages < 2:
        raise ValueError(f"n_stages must be an integer >= 2 (a U-Net needs an encoder and a decoder), got {n_stages!r}")
    n_stages = int(n_stages)
    if features_per_stage is None:
        features = default_features(n_stages, spatial_dims)
    else:
        features = per_stage_ints("features_per_stage", features_per_stage, n_stages, minimum=1)
    kernels = per_stage_shapes("kernel_sizes", 3 if kernel_sizes is None else kernel_sizes, n_stages, spatial_dims)
    if strides is None:
        strides = [1] + [2] * (n_stages - 1)
    stride_shapes = per_stage_shapes("strides", strides, n_stages, spatial_dims)
    return Topology(spatial_dims, features, kernels, stride_shapes)


def per_stage_ints(name: str, value: IntOrSeq, n: int, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as ``n`` integers (a single integer is repeated), each at least ``minimum``."""
    values = [value] * n if _is_int(value) else list(value)  # type: ignore[arg-type]
    if len(values) != n:
        raise ValueError(f"{name} needs {n} entries, got {len(values)}: {values}")
    if not all(_is_int(v) and v >= minimum for v in values):
        raise ValueError(f"{name} must be integers >= {minimum}, got {values}")
    return tuple(int(v) for v in values)


def per_stage_shapes(name: str, value: IntOrSeq | Sequence[IntOrSeq], n: int, spatial_dims: int) -> tuple[Shape, ...]:
    """``value`` as ``n`` per-axis tuples of ``spatial_dims`` positive integers."""
    stages = [value] * n if _is_int(value) else list(value)  # type: ignore[arg-type]
    if len(stages) != n:
        raise ValueError(f"{name} needs {n} entries (one per stage), got {len(stages)}: {stages}")
    out = []
    for i, stage in enumerate(stages):
        shape = (stage,) * spatial_dims if _is_int(stage) else tuple(stage)
        if len(shape) != spatial_dims or not all(_is_int(v) and v >= 1 for v in shape):
            raise ValueError(f"{name}[{i}] must be {spatial_dims} positive integers for a {spatial_dims}D network, "
                             f"got {stage!r}")
        out.append(tuple(int(v) for v in shape))
    return tuple(out)


def _is_int(value: object) -> bool:
    """True for Python and numpy integers (plans may come from numpy code), false for bools."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_patch(topology: Topology, shape: Sequence[int]) -> None:
    """Raise a clear error when a patch does not fit the network's total downsampling."""
    if len(shape) != topology.spatial_dims:
        raise ValueError(f"expected a {topology.spatial_dims}D input (B, C, *patch), got spatial shape {tuple(shape)}")
    div = topology.divisor
    if any(s % d for s, d in zip(shape, div)):
        raise ValueError(f"patch size {tuple(shape)} must be a multiple of {div} per axis "
                         f"(the product of the strides {[list(s) for s in topology.strides]})")
