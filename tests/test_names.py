"""Names that become path components cannot leave their folder: one rule, checked where read.

Each entry point gets names an attacker or a typo could produce (``..`` paths, separators,
absolute paths, control characters, absurd lengths); the check must name the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetkit.data.errors import DataError
from unetkit.data.synthetic import write_raw_dataset
from unetkit.utils.names import MAX_NAME_LENGTH, name_problem

HOSTILE = ["../../../../tmp/evil", "..", "a/b", "/abs", "a\\b", "new\nline", "nul\x00", "x" * (MAX_NAME_LENGTH + 1),
           "", ".tmp-cache", "..hidden"]


@pytest.mark.parametrize("name", HOSTILE)
def test_rule_refuses_hostile_names(name) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["case_001", "BraTS-GLI-00000-000", "a.b", "x" * MAX_NAME_LENGTH, "ünïcode"])
def test_rule_keeps_ordinary_names(name) -> None:
    assert name_problem(name) is None


def _explicit_dataset(tmp_path: Path, key: str) -> Path:
    """A raw dataset whose dataset.json lists its cases explicitly, one of them under ``key``."""
    root = write_raw_dataset(tmp_path / "Explicit", num_cases=3, ndim=2, num_classes=1, shape_range=(24, 28))
    spec = json.loads((root / "dataset.json").read_text())
    spec["dataset"] = {name: {"images": [f"imagesTr/{name}_0000.png"], "label": f"labelsTr/{name}.png"}
                       for name in ("case_000", "case_001")}
    spec["dataset"][key] = {"images": ["imagesTr/case_002_0000.png"], "label": "labelsTr/case_002.png"}
    spec["numTraining"] = 3
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.mark.parametrize("key", ["../../../../tmp/evil", "sub/case", "/tmp/abs", "bad\nname"])
def test_dataset_json_case_keys_are_checked_where_read(tmp_path, key) -> None:
    from unetkit.data.dataset import load_dataset
    from unetkit.planning import plan_dataset

    root = _explicit_dataset(tmp_path, key)
    with pytest.raises(DataError) as info:
        load_dataset(root).training_cases()
    assert "dataset.json" in str(info.value) and repr(key) in str(info.value)
    before = sorted(p for p in tmp_path.parent.rglob("*") if "evil" in p.name)
    with pytest.raises(DataError):
        plan_dataset(root, tmp_path / "work", num_processes=1)
    assert sorted(p for p in tmp_path.parent.rglob("*") if "evil" in p.name) == before


def test_check_reports_bad_case_keys_with_file_and_key(tmp_path) -> None:
    from unetkit.data.checks import check_dataset_report

    root = _explicit_dataset(tmp_path, "../../escape")
    report = check_dataset_report(root, num_processes=1)
    bad = [p for p in report.problems if p.kind == "bad-name"]
    assert len(bad) == 1 and bad[0].path == str(root / "dataset.json") and "'../../escape'" in bad[0].message
    assert not report.ok


@pytest.mark.parametrize("field, value", [("data_identifier", "../../outside"), ("data_identifier", "/abs/dir"),
                                          ("configuration", "../2d")])
def test_plans_folder_names_are_checked(tmp_path, field, value) -> None:
    from unetkit.planning import load_plans, plan_dataset
    from unetkit.preprocessing import preprocess_dataset

    raw = write_raw_dataset(tmp_path / "Tiny", num_cases=4, ndim=2, num_classes=1, shape_range=(24, 28))
    path = plan_dataset(raw, tmp_path / "work", num_processes=1)
    plans = json.loads(path.read_text())
    if field == "data_identifier":
        plans["configurations"]["2d"]["data_identifier"] = value
        key = "configurations.2d.data_identifier"
    else:
        plans["configurations"][value] = plans["configurations"].pop("2d")
        key = "configuration name"
    path.write_text(json.dumps(plans))
    with pytest.raises(DataError) as info:
        load_plans(path)
    assert str(path) in str(info.value) and key in str(info.value) and repr(value) in str(info.value)
    with pytest.raises(DataError):
        preprocess_dataset(raw, tmp_path / "work", num_processes=1, progress=False)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "work" / "outside").exists()


@pytest.mark.parametrize("where, text", [
    ("datasets.bad\n", "datasets:\n  \"bad\\n\": {raw: A}\nmodels: [plain_unet]\n"),
    ("datasets.../x", "datasets:\n  ../x: {raw: A}\nmodels: [plain_unet]\n"),
    ("models[0].label", "datasets: {A: {raw: A}}\nmodels: [{name: plain_unet, label: ../../evil}]\n"),
    ("models[0].label", "datasets: {A: {raw: A}}\nmodels: [{name: plain_unet, label: \"ok\\n\"}]\n"),
    ("models[0].label", f"datasets: {{A: {{raw: A}}}}\nmodels: [{{name: plain_unet, label: {'y' * 300}}}]\n"),
])
def test_suite_names_are_checked(tmp_path, where, text) -> None:
    from unetkit.benchmark.suite import SuiteError, load_suite

    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(path) in str(info.value) and where in str(info.value)


def test_work_folder_name_is_checked(tmp_path) -> None:
    from unetkit.utils.paths import WorkPaths

    with pytest.raises(DataError, match="dataset name"):
        WorkPaths.for_dataset(tmp_path, tmp_path / "work", name="../../elsewhere")
