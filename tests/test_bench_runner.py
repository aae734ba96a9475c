"""``unetkit bench``: suite validation, the results folder contract, resume, failures, zero-shot, Ray.

One module-scoped benchmark (two tiny synthetic 2D datasets, a working and a broken model, one
zero-shot pair, 1 epoch of 2 iterations, two runs at a time with one thread each) is shared by
the tests that read its results; the Ray test runs one of its runs again on a local Ray instance.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
from references import require_module

from unetkit.benchmark.runner import execute_run, run_benchmark, run_ids
from unetkit.benchmark.stats import load_table
from unetkit.benchmark.suite import SuiteError, load_suite
from unetkit.data.io import read_label
from unetkit.data.synthetic import write_raw_dataset

BUDGET = """
budget:
  epochs: 1
  iterations_per_epoch: 2
  val_iterations: 1
  batch_size: 2
  num_workers: 0
  deterministic: true
  planner: {device: cpu}
"""
# A small plain U-Net: the plan's depth is kept, only the widths shrink (speed).
TINY = "{n_stages: 4, features_per_stage: [4, 8, 16, 32]}"


def _suite_text(models: str, extra: str = "", datasets: str | None = None) -> str:
    datasets = datasets or """
datasets:
  SynA:
    raw: SynA
    test: {every: 4, offset: 3}
  SynB:
    raw: SynB
    test_cases: [case_000, case_001]
"""
    return f"name: tiny\n{datasets}\nmodels:\n{models}\n{BUDGET}\npredict: {{mirror: false}}\n" \
           f"efficiency: {{repeats: 2, warmup: 0}}\n{extra}"


def _write(folder: Path, text: str, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def raw_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench_raw")
    write_raw_dataset(root / "SynA", num_cases=8, ndim=2, num_classes=1, shape_range=(40, 56))
    write_raw_dataset(root / "SynB", num_cases=6, ndim=2, num_classes=1, shape_range=(40, 56), seed=3)
    return root


@pytest.fixture(scope="module")
def bench(raw_root) -> dict:
    suite = _write(raw_root, _suite_text(
        f"  - {{name: plain_unet, kwargs: {TINY}}}\n"
        "  - {name: plain_unet, label: broken, kwargs: {no_such_kwarg: 1}}",
        "zero_shot:\n  - {source: SynA, target: SynB}\n"))
    out = raw_root / "results"
    summary = run_benchmark(suite, out, jobs=2, threads=1, log=lambda m: None)
    return {"suite": suite, "out": out, "summary": summary}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("text, key", [
    ("datasets: {A: {raw: A}}\nmodels: [plain_unet]\nbudget: {epoch: 1}\n", "budget.epoch"),
    ("datasets: {A: {raw: A}}\nmodels: [plain_unet]\nbudget: {epochs: 0}\n", "epochs"),
    ("datasets: {A: {raw: A, test: {every: 5, offset: 5}}}\nmodels: [plain_unet]\n", "datasets.A.test.offset"),
    ("datasets: {A: {raw: A, folds: [0, 7]}}\nmodels: [plain_unet]\n", "datasets.A.folds[1]"),
    ("datasets: {A: {raw: A, folds: [0], test: imagesTs}}\nmodels: [plain_unet]\n", "datasets.A"),
    ("datasets: {A: {raw: A, tset: imagesTs}}\nmodels: [plain_unet]\n", "datasets.A.tset"),
    ("datasets: {A: {raw: A}}\nmodels: [plain_unet, plain_unet]\n", "models[1]"),
    ("datasets: {A: {raw: A}}\nmodels: [{kwargs: {}}]\n", "models[0]"),
    ("datasets: {A__B: {raw: A}}\nmodels: [plain_unet]\n", "datasets.A__B"),
    ("datasets: {A: {raw: A}}\nmodels: [plain_unet]\nzero_shot: [{source: A, target: C}]\n", "zero_shot[0].target"),
    ("datasets: {A: {raw: A}}\nmodels: [plain_unet]\nbudget: {planner: {device: tpu}}\n", "budget.planner.device"),
    ("datasets: {A: {raw: A}}\nmodels: [plain_unet]\npredict: {mirror: 1}\n", "predict.mirror"),
    ("datasets: {A: {raw: A}}\n", "models"),
    ("datasets: [A]\nmodels: [plain_unet]\n", "datasets"),
])
def test_suite_errors_name_the_file_and_key(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert str(path) in message and key in message, message


def test_suite_reads_defaults_and_paths(tmp_path):
    path = _write(tmp_path, """
        name: demo
        raw_root: raw
        datasets:
          Hippo: {raw: Hippocampus, test: {every: 5, offset: 4}, configuration: 3d_fullres}
          DRIVE: {test: imagesTs}
          Kvasir: {raw: /data/Kvasir, max_cases: 40, folds: [0, 1]}
        models: [plain_unet, {name: unext, kwargs: {dims: [8, 16, 32, 40, 64]}, label: unext_small}]
        budget: {epochs: 2, planner: {device: cpu}}
        zero_shot: [{source: DRIVE, target: Kvasir}]
    """)
    suite = load_suite(path)
    assert suite.datasets["Hippo"].raw == (tmp_path / "raw" / "Hippocampus").resolve()
    assert suite.datasets["DRIVE"].raw == (tmp_path / "raw" / "DRIVE").resolve()
    assert suite.datasets["Kvasir"].raw == Path("/data/Kvasir")
    assert suite.datasets["Kvasir"].split.fold_ids == ["0", "1"]
    assert suite.training == {"epochs": 2} and suite.planner == {"device": "cpu"}
    assert run_ids(suite)[-2:] == ["DRIVE__plain_unet__test__on__Kvasir", "DRIVE__unext_small__test__on__Kvasir"]
    assert load_suite(path, raw_root=tmp_path / "elsewhere").datasets["DRIVE"].raw == (tmp_path / "elsewhere" / "DRIVE")


def test_unknown_model_and_missing_raw_are_suite_errors(tmp_path, raw_root):
    bad = _write(tmp_path, _suite_text("  - plain_unett"), "bad.yaml")
    with pytest.raises(SuiteError, match="models\\[0\\].*plain_unet"):
        run_benchmark(bad, tmp_path / "out", raw_root=raw_root, log=lambda m: None)
    missing = _write(tmp_path, _suite_text("  - plain_unet", datasets="datasets:\n  Nope: {raw: Nope}\n"), "m.yaml")
    with pytest.raises(SuiteError, match="datasets.Nope.raw.*no dataset.json"):
        run_benchmark(missing, tmp_path / "out2", raw_root=raw_root, log=lambda m: None)


# ----------------------------------------------------------------------------- the results folder

def test_results_folder_has_every_file_of_the_contract(bench):
    out = bench["out"]
    for name in ("suite.yaml", "metadata.json", "datasets.json", "runs.csv", "table.csv", "zero_shot.csv",
                 "cases.csv"):
        assert (out / name).is_file(), name
    assert (out / "work" / "SynA" / "plans.json").is_file()
    run = out / "runs" / "SynA__plain_unet__test"
    for name in ("summary.json", "per_case.csv", "run.json", "spec.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["case_003.png", "case_007.png"]
    meta = json.loads((out / "metadata.json").read_text())
    for key in ("unetkit", "torch", "python", "platform", "cpu", "cores", "memory_gb", "gpu", "device", "suite",
                "started_at", "finished_at", "command"):
        assert key in meta, key
    assert meta["suite"] == "tiny" and meta["finished_at"]
    datasets = json.loads((out / "datasets.json").read_text())
    a = datasets["SynA"]
    assert (a["configuration"], a["dims"], a["num_cases"], a["num_test_cases"]) == ("2d", 2, 8, 2)
    assert Path(a["plans"]).is_file() and Path(a["fingerprint"]).is_file()
    # Held-out cases never reach planning or training: the view holds the 6 training cases only.
    assert json.loads((out / "work" / "SynA" / "fingerprint.json").read_text())["num_cases"] == 6


def test_table_loads_and_dice_matches_the_written_files(bench):
    out = bench["out"]
    table = load_table(out / "table.csv")
    assert {(r["model"], r["dataset"], r["case"]) for r in table} == {
        ("plain_unet", "SynA", "case_003"), ("plain_unet", "SynA", "case_007"),
        ("plain_unet", "SynB", "case_000"), ("plain_unet", "SynB", "case_001")}
    cases = {(r["run_id"], r["case"]): r for r in _csv(out / "cases.csv")}
    for row in table:
        assert row["fold"] == "test" and row["source_dataset"] == row["dataset"]
        for column in ("params_m", "gflops", "latency_ms", "fps"):
            assert float(row[column]) > 0, column
        c = cases[(row["run_id"], row["case"])]
        pred, _ = read_label(c["prediction_path"], row["case"])
        ref, _ = read_label(c["reference_path"], row["case"])
        p, r = pred == 1, ref == 1
        denominator = p.sum() + r.sum()
        # table.csv scores empty references: both empty = 1 (summary.json keeps nnU-Net's NaN)
        expected = 2 * np.logical_and(p, r).sum() / denominator if denominator else 1.0
        assert float(row["dice"]) == pytest.approx(expected, abs=1e-9)
        assert int(row["n_empty_reference"]) == int(not r.any()) and c["reference_empty"] == str(not r.any()).lower()
        assert float(row["diagonal_mm"]) == pytest.approx(math.hypot(*ref.shape))  # spacing 1
        assert Path(c["image_path"]).is_file() and Path(c["image_path"]).is_absolute()


def test_failed_run_is_recorded_and_others_finish(bench):
    out = bench["out"]
    runs = {r["run_id"]: r for r in _csv(out / "runs.csv")}
    assert runs["SynA__plain_unet__test"]["status"] == "done"
    assert float(runs["SynA__plain_unet__test"]["mean_dice"]) >= 0
    broken = runs["SynA__broken__test"]
    assert broken["status"] == "failed" and "no_such_kwarg" in broken["error"]
    assert "Traceback" in (out / "runs" / "SynA__broken__test" / "error.txt").read_text()
    # The zero-shot run of the broken model fails because its source did, without starting a process.
    assert runs["SynA__broken__test__on__SynB"]["status"] == "failed"
    assert set(bench["summary"].failed) == {"SynA__broken__test", "SynB__broken__test",
                                            "SynA__broken__test__on__SynB"}


def test_zero_shot_table(bench):
    rows = load_table(bench["out"] / "zero_shot.csv")
    assert sorted(r["case"] for r in rows) == ["case_000", "case_001"]
    for r in rows:
        assert (r["model"], r["dataset"], r["source_dataset"], r["run_id"]) == \
               ("plain_unet", "SynB", "SynA", "SynA__plain_unet__test__on__SynB")
    spec = json.loads((bench["out"] / "runs" / "SynA__plain_unet__test__on__SynB" / "spec.json").read_text())
    assert spec["configuration"] == "2d_plain_unet" and "SynA" in spec["workdir"] + spec["source_run_json"]


def test_rerun_skips_finished_runs_and_retries_failed_on_request(bench):
    out = bench["out"]
    run_json = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")}
    summary = run_benchmark(bench["suite"], out, jobs=2, threads=1, log=lambda m: None)
    assert summary.ran == [] and len(summary.skipped) == len(run_json)
    assert {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")} == run_json

    summary = run_benchmark(bench["suite"], out, threads=1, retry_failed=True, only=["SynB__broken__test"],
                            log=lambda m: None)
    assert summary.ran == ["SynB__broken__test"] and summary.failed == ["SynB__broken__test"]
    after = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/run.json")}
    assert after["SynB__broken__test"] != run_json["SynB__broken__test"]
    assert {k: v for k, v in after.items() if k != "SynB__broken__test"} == \
           {k: v for k, v in run_json.items() if k != "SynB__broken__test"}
    assert len(load_table(out / "table.csv")) == 4  # tables rebuilt, still consistent


def test_a_killed_run_is_recorded(bench, tmp_path):
    source = bench["out"] / "runs" / "SynA__plain_unet__test" / "spec.json"
    spec = json.loads(source.read_text())
    spec["output"] = str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "spec.json"
    path.write_text(json.dumps(spec))
    record = execute_run(str(path), 1, timeout=0.5)
    assert record["status"] == "failed" and "timed out" in record["error"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    assert (tmp_path / "run" / "error.txt").is_file()


def test_list_shows_status(bench, capsys):
    from unetkit.cli import main

    assert main(["bench", str(bench["suite"]), "-o", str(bench["out"]), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "done     SynA__plain_unet__test" in lines and "failed   SynA__broken__test" in lines


def test_cli_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, unetkit.cli.bench_cmd; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# ----------------------------------------------------------------------------- Ray

def test_ray_backend_gives_the_same_table(bench, tmp_path):
    require_module("ray", "pip install -e '.[dev]'")
    raw_root = bench["suite"].parent
    suite = _write(tmp_path, _suite_text(f"  - {{name: plain_unet, kwargs: {TINY}}}",
                                         datasets="datasets:\n  SynA:\n    raw: SynA\n    test: {every: 4, offset: 3}\n"))
    out = tmp_path / "ray_results"
    summary = run_benchmark(suite, out, backend="ray", ray_num_cpus=2, ray_cpus_per_run=1, threads=1,
                            raw_root=raw_root, log=lambda m: None)
    assert summary.failed == [] and summary.ran == ["SynA__plain_unet__test"]
    local = {(r["model"], r["dataset"], r["case"]): r for r in load_table(bench["out"] / "table.csv")
             if r["dataset"] == "SynA"}
    ray_rows = {(r["model"], r["dataset"], r["case"]): r for r in load_table(out / "table.csv")}
    assert set(ray_rows) == set(local)
    for key, row in ray_rows.items():
        for metric in ("dice", "iou", "precision", "recall", "hd95", "nsd", "params_m", "gflops"):
            assert float(row[metric]) == pytest.approx(float(local[key][metric]), rel=1e-9, abs=1e-12), metric


@pytest.mark.parametrize("name", ["shared_quick.yaml", "tiny_synthetic.yaml"])
def test_shipped_suites_are_valid(name, tmp_path):
    from unetkit.benchmark.suite import validate_models

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "suites" / name
    suite = load_suite(path, raw_root=tmp_path)
    validate_models(suite)
    assert len(suite.models) >= 2 and suite.datasets
    if name == "shared_quick.yaml":
        assert len(suite.models) >= 6 and set(suite.datasets) == {"Hippocampus", "DRIVE", "ISBI2012", "Kvasir-SEG"}
