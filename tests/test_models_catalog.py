"""The model catalogue: every registered model's paper metadata (issue 17's contract), the
``unetkit models`` filters, and docs/models.md's generated table.

The contract tests run over ``list_models()``, so a model merged later is held to them the moment
it is registered.
"""

from __future__ import annotations

import json
from numbers import Real

import pytest

from unetkit.models import list_models, model_info

# The vocabulary as issue 17 states it (written out here, not imported from the code under test).
ISSUE_TAGS = {"cnn", "transformer", "hybrid", "mamba", "rwkv", "mlp", "kan", "xlstm", "attention", "residual",
              "dense", "multiscale", "nested", "recurrent", "lightweight", "pretrainable-encoder"}
OLD_SPELLINGS = ("paper_parameters", "paper_config", "paper_configuration", "reference_configuration")


def test_tag_vocabulary_is_the_issues() -> None:
    from unetkit.models.catalog import TAGS
    assert set(TAGS) == ISSUE_TAGS and all(TAGS.values())


@pytest.mark.parametrize("name", list_models())
def test_model_has_known_tags(name: str) -> None:
    tags = model_info(name).extra.get("tags")
    assert isinstance(tags, list) and tags, f"{name}: extra['tags'] must be a non-empty list"
    assert set(tags) <= ISSUE_TAGS, f"{name}: unknown tags {sorted(set(tags) - ISSUE_TAGS)}"
    assert len(set(tags)) == len(tags), f"{name}: repeated tags {tags}"


@pytest.mark.parametrize("name", list_models())
def test_model_has_paper_figure_and_setup(name: str) -> None:
    extra = model_info(name).extra
    assert "paper_params" in extra, f"{name}: extra['paper_params'] (a number, or None) is missing"
    figure = extra["paper_params"]
    assert figure is None or (isinstance(figure, Real) and not isinstance(figure, bool) and figure > 0), figure
    setup = extra.get("paper_setup")
    assert isinstance(setup, str) and setup.strip(), f"{name}: extra['paper_setup'] must be a non-empty string"
    for key in ("paper_gflops",):
        assert extra.get(key) is None or isinstance(extra[key], Real), (name, key, extra[key])
    if extra.get("paper_patch") is not None:
        assert all(isinstance(p, int) and p > 0 for p in extra["paper_patch"]), (name, extra["paper_patch"])


@pytest.mark.parametrize("name", list_models())
def test_model_has_integer_divisor(name: str) -> None:
    divisor = model_info(name).extra.get("divisible_by")
    assert isinstance(divisor, int) and not isinstance(divisor, bool) and divisor >= 1, (name, divisor)


@pytest.mark.parametrize("name", list_models())
def test_model_uses_no_old_spelling(name: str) -> None:
    old = sorted(set(model_info(name).extra) & set(OLD_SPELLINGS))
    assert not old, f"{name}: rename {old} to 'paper_params' / 'paper_setup'"
