"""Suite checks of issue 12 that act before any training: the declared baseline (item 5) and the
label compatibility of zero-shot pairs (item 6).

The raw datasets are dataset.json files only (the checks read nothing else), written by hand so
the right answer is visible in each test.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from unetkit.benchmark.runner import run_benchmark
from unetkit.benchmark.suite import SuiteError, check_zero_shot_labels, load_suite


def _raw(root: Path, name: str, labels: dict[str, int]) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    spec = {"channel_names": {"0": "grey"}, "labels": labels, "numTraining": 0, "file_ending": ".png"}
    (folder / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")


def _suite(folder: Path, zero_shot: str, models: str = "[plain_unet, unext]", extra: str = "") -> Path:
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(f"""
        name: checks
        datasets:
          Vessels: {{test: {{every: 2}}}}
          Polyps: {{test: {{every: 2}}}}
          Shifted: {{test: {{every: 2}}}}
        models: {models}
        zero_shot: [{zero_shot}]
    """) + extra, encoding="utf-8")
    return path


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    # Vessels and Polyps: one foreground label of value 1 under different names; Shifted: the
    # name "vessel" with value 2.
    _raw(tmp_path, "Vessels", {"background": 0, "vessel": 1})
    _raw(tmp_path, "Polyps", {"background": 0, "polyp": 1})
    _raw(tmp_path, "Shifted", {"background": 0, "vessel": 2})
    return tmp_path


def test_zero_shot_with_other_label_names_fails_before_training(raw):
    # vessel=1 vs polyp=1: the same value, but nothing says they are the same structure, so the
    # Vessels model's "1" would be scored as a polyp. The suite is refused, naming both datasets,
    # before any folder is made or model trained.
    path = _suite(raw, "{source: Vessels, target: Polyps}")
    with pytest.raises(SuiteError, match=r"zero_shot\[0\].*Vessels \(vessel=1\) and Polyps \(polyp=1\) differ"):
        check_zero_shot_labels(load_suite(path))
    out = raw / "results"
    with pytest.raises(SuiteError, match="Vessels .* Polyps"):
        run_benchmark(path, out, log=lambda message: None)
    assert not out.exists()


def test_zero_shot_label_mapping_and_values(raw):
    # An explicit mapping vessel -> polyp makes the names agree; the values (1 and 1) already do.
    check_zero_shot_labels(load_suite(_suite(raw, "{source: Vessels, target: Polyps, labels: {vessel: polyp}}")))
    # Same name, value 1 vs 2: predictions are never remapped, so this cannot be scored.
    with pytest.raises(SuiteError, match=r"Vessels \(vessel=1\) and Shifted \(vessel=2\) differ"):
        check_zero_shot_labels(load_suite(_suite(raw, "{source: Vessels, target: Shifted}")))
    # A mapping from a name the source does not have is a typo, not a mapping.
    with pytest.raises(SuiteError, match=r"zero_shot\[0\]\.labels: 'vesel' is not a label of Vessels"):
        check_zero_shot_labels(load_suite(_suite(raw, "{source: Vessels, target: Polyps, labels: {vesel: polyp}}")))


def test_baseline_is_declared_or_the_first_model(raw):
    path = _suite(raw, "", models="[unext, plain_unet]")
    assert load_suite(path).baseline == "unext"  # no baseline: the first listed model
    declared = _suite(raw, "", models="[unext, plain_unet]", extra="baseline: plain_unet\n")
    assert load_suite(declared).baseline == "plain_unet"
    wrong = _suite(raw, "", models="[unext, plain_unet]", extra="baseline: plain_unett\n")
    with pytest.raises(SuiteError, match="baseline: 'plain_unett' is not one of the suite's models"):
        load_suite(wrong)
