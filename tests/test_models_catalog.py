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
    assert extra.get("paper_gflops") is None or isinstance(extra["paper_gflops"], Real), (name, extra["paper_gflops"])
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


# ---------------------------------------------------------------- unetkit models (in-process)
def _models_json(capsys, *argv: str) -> list[dict]:
    from unetkit.cli import main
    assert main(["models", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_models_cli_tags_must_all_match_and_params_bound(capsys) -> None:
    rows = _models_json(capsys, "--tag", "cnn", "--tag", "lightweight", "--max-params", "2", "--no-size")
    names = {r["name"] for r in rows}
    # papers print 0.053M (EGE-UNet), 1.47M (UNeXt), 1.13M (U2-Net small); CMUNeXt 3.14M is over 2M
    assert {"egeunet", "unext", "u2net_small"} <= names and "cmunext" not in names
    assert "plain_unet" not in names  # a CNN, but not tagged lightweight
    assert all({"cnn", "lightweight"} <= set(r["tags"]) and r["default_params"] <= 2_000_000 for r in rows)
    assert all("params" not in r and "gflops" not in r for r in rows)  # --no-size: no FLOPs measured
    rows = _models_json(capsys, "--family", "r2unet", "--no-size")
    assert all(r["default_params"] is None for r in rows)  # and, without a range, nothing counted


def test_models_cli_min_params_on_the_default_configuration(capsys) -> None:
    # STU-Net-H: 1457.33M in 3D (paper, Table 1); the same widths in 2D have a third of the weights
    rows = _models_json(capsys, "--family", "stunet", "--min-params", "1000", "--no-size")
    assert [(r["name"], r["dims"]) for r in rows] == [("stunet_h", 3)]
    assert rows[0]["default_params"] == pytest.approx(1_457_330_000, rel=0.001)
    assert rows[0]["paper_params"] == 1_457_330_000 and "TotalSegmentator" in rows[0]["paper_setup"]


def test_models_cli_family_dims_and_paper_reference(capsys) -> None:
    rows = _models_json(capsys, "--family", "r2unet", "--dims", "2", "--no-size")
    assert [r["name"] for r in rows] == ["r2unet", "runet"] and {r["dims"] for r in rows} == {2}
    assert rows[0]["paper_params"] == 1_037_000 and "Alom" in rows[0]["paper"]
    from unetkit.cli import main
    assert main(["models", "--family", "r2unet", "--dims", "2", "--no-size", "--details"]) == 0
    out = capsys.readouterr().out
    assert "paper figure: 1.037M (2D, 1 input channel, 1 class" in out and "Alom" in out


def test_models_cli_rejects_unknown_tag_and_empty_range(capsys) -> None:
    from unetkit.cli import main
    assert main(["models", "--tag", "kann", "--no-size"]) == 2
    assert "unknown tag" in capsys.readouterr().err
    assert main(["models", "--min-params", "5", "--max-params", "1", "--no-size"]) == 2


# ---------------------------------------------------------------- docs/models.md
def test_docs_models_table_is_up_to_date(capsys) -> None:
    """docs/models.md's catalogue matches the registry (after merging models, regenerate it:
    ``python -m unetkit.models.docs``)."""
    from unetkit.models.docs import DEFAULT_PATH, main
    assert DEFAULT_PATH.is_file()
    assert main(["--check"]) == 0, capsys.readouterr().err


def test_docs_generator_rewrites_only_between_markers(tmp_path, capsys) -> None:
    from unetkit.models.docs import BEGIN, DEFAULT_PATH, END, main
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    before, after = text.split(BEGIN)[0], text.split(END)[1]
    stale = tmp_path / "models.md"
    stale.write_text(f"{before}{BEGIN}\n| old | table |\n{END}{after}", encoding="utf-8")
    assert main(["--check", "--path", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--path", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == text  # the prose around the markers is kept as it was
    assert main(["--check", "--path", str(stale)]) == 0
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("# Models\n", encoding="utf-8")
    assert main(["--check", "--path", str(no_markers)]) == 2


def test_docs_table_has_one_row_per_model_with_the_paper_figure() -> None:
    from unetkit.models.docs import DEFAULT_PATH
    rows = [line for line in DEFAULT_PATH.read_text(encoding="utf-8").splitlines() if line.startswith("| `")]
    table_rows = {line.split("`")[1]: line for line in rows if line.count("|") >= 9}
    assert set(list_models()) <= set(table_rows)
    # R2U-Net's paper prints ~1.037M for 1 input channel, 1 class (Alom et al. 2018, Sec. IV)
    assert "| 1.037M |" in table_rows["r2unet"] and "Alom" in table_rows["r2unet"]
