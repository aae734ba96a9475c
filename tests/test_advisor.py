"""`unetkit advise`: dataset features, distance, ranking under constraints, errors, CLI.

The results folder is built here (docs/benchmark_results.md) with per-dataset scores chosen so
that the ranking differs between datasets: the test can then tell which dataset the advisor
took as nearest from the order it proposes.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from unetkit.benchmark.advisor import (W_DIMS, W_MODALITY, BenchmarkResults, DatasetFeatures, advise, dataset_distance,
                                       describe_raw_dataset, format_advice, load_results, modality_family,
                                       similarity_weights)
from unetkit.cli import main
from unetkit.data.errors import DataError
from unetkit.data.synthetic import write_raw_dataset

# dataset -> datasets.json facts. EM2D looks like write_raw_dataset's 2D grey data (about 48x48,
# one ellipse covering ~9%); Brain3D like its 3D MRI data.
DATASETS = {
    "Brain3D": {"dims": 3, "modality": {"0": "T2"}, "median_shape": [24, 24, 24], "median_spacing": [1.0, 1.0, 1.0],
                "foreground_fraction": 0.04, "labels": {"background": 0, "a": 1, "b": 2}, "num_cases": 40},
    "Polyp2D": {"dims": 2, "modality": {"0": "R", "1": "G", "2": "B"}, "median_shape": [480, 560],
                "median_spacing": [1.0, 1.0], "foreground_fraction": 0.15, "labels": {"background": 0, "polyp": 1},
                "num_cases": 100},
    "EM2D": {"dims": 2, "modality": {"0": "EM"}, "median_shape": [48, 48], "median_spacing": [1.0, 1.0],
             "foreground_fraction": 0.09, "labels": {"background": 0, "cell": 1}, "num_cases": 10},
}
# model -> {dataset: mean Dice}; a missing dataset = not run. swin_unet, transunet and egeunet
# are 2D-only in the registry.
SCORES = {
    "plain_unet": {"Brain3D": 0.85, "Polyp2D": 0.80, "EM2D": 0.70},
    "resenc_unet": {"Brain3D": 0.88, "Polyp2D": 0.78, "EM2D": 0.74},
    "mednext_s": {"Brain3D": 0.87, "Polyp2D": 0.79},      # failed on EM2D (runs.csv)
    "swin_unet": {"Polyp2D": 0.86, "EM2D": 0.60},
    "transunet": {"Polyp2D": 0.82, "EM2D": 0.68},
    "egeunet": {"Polyp2D": 0.70, "EM2D": 0.72},
}
# model -> (params M, GFLOPs, latency ms) for 2D; 3D costs are 10x the GFLOPs and latency.
COSTS = {"plain_unet": (30.0, 50.0, 20.0), "resenc_unet": (100.0, 150.0, 60.0), "mednext_s": (5.5, 14.0, 30.0),
         "swin_unet": (40.0, 30.0, 25.0), "transunet": (105.0, 60.0, 40.0), "egeunet": (0.05, 0.1, 4.0)}
FAILED = ("mednext_s", "EM2D", "RuntimeError: out of memory")
NUM_CASES = 8


def write_results(root: Path) -> Path:
    """A results folder with the files `advise` reads: datasets.json, table.csv, runs.csv, metadata.json."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    info = {name: {**facts, "raw": str(root / "raw" / name), "configuration": "2d" if facts["dims"] == 2 else
                   "3d_fullres", "num_test_cases": NUM_CASES, "file_ending": ".png",
                   "fingerprint": str(root / "work" / name / "fingerprint.json"),
                   "plans": str(root / "work" / name / "plans.json")} for name, facts in DATASETS.items()}
    (root / "datasets.json").write_text(json.dumps(info), encoding="utf-8")
    (root / "metadata.json").write_text(json.dumps({"cpu": "Test CPU", "cores": 2, "gpu": None, "device": "cpu"}),
                                        encoding="utf-8")
    table, runs = [], []
    for model, scores in SCORES.items():
        for dataset, mean in scores.items():
            params, gflops, latency = COSTS[model]
            scale = 10.0 if DATASETS[dataset]["dims"] == 3 else 1.0
            noise = rng.normal(0, 0.03, NUM_CASES)
            dice = mean + noise - noise.mean()  # exactly the intended mean
            run_id = f"{dataset}__{model}__test"
            for i, value in enumerate(dice):
                table.append({"model": model, "dataset": dataset, "case": f"{dataset}_{i:02d}",
                              "source_dataset": dataset, "fold": "test", "run_id": run_id, "dice": value,
                              "iou": value / (2 - value), "params_m": params, "gflops": gflops * scale,
                              "latency_ms": latency * scale, "fps": 1000 / (latency * scale)})
            runs.append({"run_id": run_id, "kind": "in_domain", "model": model, "dataset": dataset,
                         "status": "done", "error": ""})
    runs.append({"run_id": f"{FAILED[1]}__{FAILED[0]}__test", "kind": "in_domain", "model": FAILED[0],
                 "dataset": FAILED[1], "status": "failed", "error": FAILED[2]})
    for name, rows in (("table.csv", table), ("runs.csv", runs)):
        with open(root / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


@pytest.fixture
def results(tmp_path) -> Path:
    return write_results(tmp_path / "results")


@pytest.fixture
def raw_em(tmp_path) -> Path:
    """A 2D grey dataset like EM2D."""
    return write_raw_dataset(tmp_path / "NewEM", num_cases=6, ndim=2, num_classes=1, shape_range=(40, 56),
                             channel_names={"0": "EM"})


@pytest.fixture
def raw_mr(tmp_path) -> Path:
    """A 3D MRI dataset like Brain3D."""
    return write_raw_dataset(tmp_path / "NewMR", num_cases=4, ndim=3, num_classes=2)


def ranked(report: dict) -> list[str]:
    return [item["model"] for item in report["ranking"]]


def test_modality_families():
    assert [modality_family(n) for n in ("CT", "MRI", "T2w", "FLAIR", "R", "fundus photo", "grey", "EM",
                                         "X-ray", "image")] == \
        ["CT", "MR", "MR", "MR", "RGB", "RGB", "grey", "grey", "XR", "unknown"]


def test_distance_terms():
    em = DatasetFeatures("a", 2, 1, ("grey",), ("EM",), (48, 48), (1, 1), 0.09, 1, 10)
    assert dataset_distance(em, em)[0] == 0.0
    mr = DatasetFeatures("b", 3, 1, ("MR",), ("T2",), (48, 48, 48), (3, 1, 1), 0.09, 1, 10)
    total, terms = dataset_distance(em, mr)
    assert terms["dims"] == W_DIMS and terms["modality"] == W_MODALITY and total > W_DIMS + W_MODALITY
    rgb = DatasetFeatures("c", 2, 3, ("RGB",), ("R", "G", "B"), (480, 480), (1, 1), 0.09, 1, 10)
    assert dataset_distance(em, rgb)[0] < total
    weights = similarity_weights({"em": 0.0, "rgb": dataset_distance(em, rgb)[0], "mr": total})
    assert list(weights) == ["em", "rgb", "mr"] and math.isclose(sum(weights.values()), 1.0)


def test_nearest_dataset_drives_the_ranking(results, raw_em):
    features, source = describe_raw_dataset(raw_em, workdir=raw_em.parent / "work")
    assert (features.dims, features.modalities, features.num_cases, features.num_classes) == (2, ("grey",), 6, 1)
    assert "measured all 6" in source
    report = advise(features, load_results(results), n_resamples=200)
    assert report["neighbours"][0]["dataset"] == "EM2D" and report["neighbours"][0]["weight"] > 0.9
    assert report["neighbours"][-1]["dataset"] == "Brain3D"
    # EM2D's order; mednext_s failed there, so its score rests on unlike datasets: last, flagged.
    assert ranked(report) == ["resenc_unet", "egeunet", "plain_unet", "transunet", "swin_unet", "mednext_s"]
    best = report["ranking"][0]
    assert best["score"] == pytest.approx(0.74, abs=0.005)
    assert best["params_m"] == 100.0 and best["cost_dataset"] == "EM2D"
    evidence = best["evidence"][0]
    assert evidence["dataset"] == "EM2D" and evidence["ci_low"] < 0.74 < evidence["ci_high"]
    assert evidence["place"] == 1 and evidence["n"] == NUM_CASES
    assert "EM2D" in best["why"] and "100M params" in best["why"]
    last = report["ranking"][-1]
    assert any("failed on EM2D" in f and "out of memory" in f for f in last["flags"])
    assert any("little evidence" in f for f in last["flags"])
    text = format_advice(report)
    assert "resenc_unet" in text and "why:" in text and "Test CPU" in text


def test_constraints_exclude_with_reasons(results, raw_em):
    features, _ = describe_raw_dataset(raw_em, workdir=raw_em.parent / "work")
    bench = load_results(results)
    report = advise(features, bench, max_params=50, max_latency_ms=22, n_resamples=100)
    assert ranked(report) == ["egeunet", "plain_unet"]
    reasons = {item["model"]: " ".join(item["reasons"]) for item in report["excluded"]}
    assert "100M params > --max-params 50" in reasons["resenc_unet"]
    assert "--max-params" in reasons["transunet"] and "--max-latency-ms 22" in reasons["transunet"]
    assert "25 ms > --max-latency-ms 22" in reasons["swin_unet"]

    nothing = advise(features, bench, max_params=0.01, n_resamples=100)
    assert nothing["ranking"] == []
    assert "no benchmarked model fits" in nothing["message"]
    assert "--max-params: excluded 6" in nothing["message"]
    assert "--max-params 0.05 would admit" in nothing["message"]


def test_3d_dataset_gets_no_2d_only_model(results, raw_mr):
    features, _ = describe_raw_dataset(raw_mr, workdir=raw_mr.parent / "work")
    assert features.dims == 3 and features.modalities == ("MR",) and features.num_classes == 2
    report = advise(features, load_results(results), n_resamples=100)
    assert report["neighbours"][0]["dataset"] == "Brain3D"
    assert ranked(report) == ["resenc_unet", "mednext_s", "plain_unet"]
    assert report["ranking"][0]["gflops"] == 1500.0  # measured on Brain3D's (3D) patch
    reasons = {item["model"]: item["reasons"] for item in report["excluded"]}
    assert set(reasons) == {"swin_unet", "transunet", "egeunet"}
    assert all("2D-only model; the dataset is 3D" in r[0] for r in reasons.values())


def test_existing_fingerprint_is_reused_and_sampling(tmp_path, raw_em):
    work = tmp_path / "work"
    fingerprint = work / "NewEM" / "fingerprint.json"
    fingerprint.parent.mkdir(parents=True)
    fingerprint.write_text(json.dumps({
        "format_version": 1, "num_cases": 6, "num_channels": 1, "spacings": [[1.0, 1.0]] * 6,
        "shapes_after_crop": [[500, 500]] * 6, "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {}, "class_voxel_fraction": {"1": 0.2}}), encoding="utf-8")
    features, source = describe_raw_dataset(raw_em, workdir=work)
    assert source == str(fingerprint)
    assert features.median_shape == (500.0, 500.0) and features.foreground_fraction == pytest.approx(0.2)

    sampled, source = describe_raw_dataset(raw_em, workdir=tmp_path / "empty", max_cases=3)
    assert "measured 3 of 6" in source and sampled.num_cases == 6


@pytest.mark.parametrize("missing", ["datasets.json", "table.csv"])
def test_missing_results_file_is_named(results, missing):
    (results / missing).unlink()
    with pytest.raises(DataError, match=missing):
        load_results(results)


def test_missing_optional_files_are_noted(results, raw_em):
    (results / "runs.csv").unlink()
    (results / "metadata.json").unlink()
    bench = load_results(results)
    assert bench.runs is None and any("runs.csv" in n for n in bench.notes)
    features, _ = describe_raw_dataset(raw_em, workdir=raw_em.parent / "work")
    report = advise(features, bench, n_resamples=100)
    assert report["machine"].startswith("unknown machine") and report["ranking"][-1]["flags"][-1].startswith("little")


def test_model_unknown_to_the_registry_uses_benchmarked_dims(results, raw_mr):
    features, _ = describe_raw_dataset(raw_mr, workdir=raw_mr.parent / "work")
    bench = load_results(results)
    renamed = [{**row, "model": "custom_net"} if row["model"] == "swin_unet" else row for row in bench.table]
    report = advise(features, BenchmarkResults(bench.root, bench.datasets, renamed, bench.runs, bench.metadata, []),
                    n_resamples=100)
    custom = next(item for item in report["excluded"] if item["model"] == "custom_net")
    assert "benchmarked only on 2D data" in custom["reasons"][0]


def test_cli_json_and_errors(results, raw_em, capsys):
    assert main(["advise", str(raw_em), "--results", str(results), "--json", "--top", "2",
                 "--workdir", str(raw_em.parent / "work")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [item["model"] for item in report["ranking"]] == ["resenc_unet", "egeunet"]
    assert report["num_fitting"] == 6 and "measured all 6" in report["dataset_source"]

    assert main(["advise", str(raw_em), "--results", str(results), "--max-params", "0.01",
                 "--workdir", str(raw_em.parent / "work")]) == 1
    out = capsys.readouterr().out
    assert "no benchmarked model fits" in out and "--max-params" in out

    (results / "table.csv").unlink()
    assert main(["advise", str(raw_em), "--results", str(results)]) == 1
    assert "table.csv not found" in capsys.readouterr().err


def test_reads_the_shared_results_fixture(tmp_path, raw_em):
    """The report tests' results builder (tests/bench_fixtures.py, when present) reads here too."""
    fixtures = pytest.importorskip("bench_fixtures")
    root = fixtures.write_results_folder(tmp_path / "shared_results", num_cases=6, images=False)
    features, _ = describe_raw_dataset(raw_em, workdir=raw_em.parent / "work")
    report = advise(features, load_results(root), n_resamples=100)
    assert report["ranking"] and report["neighbours"][0]["dataset"] == "Retina2D"
