"""The model catalogue: the tag vocabulary, the paper-reference keys every registration carries in
``extra``, and one summary row per registered model for ``unetkit models`` and docs/models.md.

Every ``register_model(..., extra=...)`` gives (tests/test_models_catalog.py holds each model to it):

- ``"tags"``: a non-empty list from :data:`TAGS` (what the network is built from);
- ``"paper_params"``: the parameter count the paper prints, as a number, or None where it prints none;
- ``"paper_setup"``: the configuration that figure holds for (input channels, classes, widths), or,
  without a figure, which configuration or reference count is used instead;
- ``"divisible_by"``: the multiple every patch side must be (1: any size, or the plan's strides decide);
- optionally ``"paper_gflops"``, ``"paper_patch"`` (the input the GFLOPs are for) and ``"patch_kwarg"``.

Parameter counts here are those of the default configuration ("by name alone"), for 1 input
channel and 2 classes, built on PyTorch's ``meta`` device: shapes only, no memory, milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from unetkit.models.registry import count_parameters, create_model, list_models, model_info

#: The tag vocabulary, with what each tag means. A model's tags are all that apply.
TAGS: dict[str, str] = {
    "cnn": "convolutions do the bulk of the work",
    "transformer": "self-attention transformer blocks (ViT, Swin, focal modulation)",
    "hybrid": "two kinds of blocks combined (e.g. a CNN encoder with a transformer, Mamba or MLP stage)",
    "mamba": "state-space (Mamba) sequence layers",
    "rwkv": "RWKV linear-attention sequence layers",
    "mlp": "token-mixing MLP blocks",
    "kan": "Kolmogorov-Arnold network layers",
    "xlstm": "xLSTM / Vision-LSTM sequence layers",
    "attention": "attention gates or attention modules",
    "residual": "residual (identity-shortcut) blocks",
    "dense": "densely connected blocks or skip pathways",
    "multiscale": "multi-scale features (full-scale skips, pyramids, multi-resolution inputs)",
    "nested": "nested U-shapes (U-Net++, U2-Net)",
    "recurrent": "recurrent convolutional units",
    "lightweight": "designed to be small (around a few million parameters or fewer)",
    "pretrainable-encoder": "an encoder meant to be initialized from pretrained weights",
}

#: Spellings used before the catalogue, each with the key that replaced it.
LEGACY_KEYS: dict[str, str] = {
    "paper_parameters": "paper_params", "paper_config": "paper_setup",
    "paper_configuration": "paper_setup", "reference_configuration": "paper_setup",
}

#: Channels and classes the catalogue's parameter counts are for (as ``unetkit models`` prints).
COUNT_IN_CHANNELS, COUNT_CLASSES = 1, 2


@dataclass(frozen=True)
class CatalogRow:
    """One registered model as the catalogue shows it."""

    name: str
    family: str
    spatial_dims: tuple[int, ...]
    tags: tuple[str, ...]
    paper: str
    paper_params: float | None
    paper_setup: str
    divisible_by: int | None


def catalog_row(name: str) -> CatalogRow:
    """The catalogue's view of a registered model (no network is built)."""
    info = model_info(name)
    extra = info.extra
    return CatalogRow(name=name, family=info.family, spatial_dims=tuple(info.spatial_dims),
                      tags=tuple(extra.get("tags") or ()), paper=info.paper,
                      paper_params=extra.get("paper_params"), paper_setup=str(extra.get("paper_setup") or ""),
                      divisible_by=extra.get("divisible_by"))


@lru_cache(maxsize=None)  # a registered name's defaults never change within a process
def default_parameter_count(name: str, spatial_dims: int) -> int:
    """Parameters of ``name`` by name alone in ``spatial_dims`` dimensions, for
    :data:`COUNT_IN_CHANNELS` input channel(s) and :data:`COUNT_CLASSES` classes, built on the
    meta device (shapes only: cheap even for a billion-parameter model)."""
    with torch.device("meta"):
        model = create_model(name, spatial_dims, COUNT_IN_CHANNELS, COUNT_CLASSES)
    return count_parameters(model)


def select_models(*, family: str | None = None, spatial_dims: int | None = None,
                  tags: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Registered names of this family and dimension that carry every tag in ``tags``."""
    wanted = set(tags)
    return [n for n in list_models(spatial_dims=spatial_dims, family=family)
            if wanted <= set(model_info(n).extra.get("tags") or ())]


def format_count(value: float | None) -> str:
    """A parameter count in millions as a person reads it: ``31.03M``; None (no figure) as ``-``."""
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M"


def format_paper_figure(value: Any) -> str:
    """A paper's printed count in millions, with the digits the paper gives (``1.037M``,
    ``0.053M``); None (the paper prints none) as ``-``."""
    if value is None:
        return "-"
    return f"{float(value) / 1e6:g}M"
