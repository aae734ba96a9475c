"""`unetkit report`: the HTML/Markdown/CSV report of a benchmark results folder.

The results folder is synthetic (tests/bench_fixtures.py): 5 models x 3 datasets (2D grey PNG,
2D RGB PNG, 3D NIfTI with two labels) x 12 cases, one failed run, one missed structure
(HD95 = inf), zero-shot rows. The numbers in the report must be those of
unetkit.benchmark.stats / uscore on the same table; the HTML must render in headless Chromium
without console errors (skipped when chromium, chromedriver or selenium is absent).
"""

from __future__ import annotations

import csv
import html
import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import FAILED_ERROR, write_results_folder, write_table_results
from scipy.stats import wilcoxon as sps_wilcoxon

from unetkit.benchmark import (
    anchors_from_suite,
    friedman_nemenyi,
    load_table,
    paired_tests,
    score_matrix,
    summarize,
    u_score_table,
)
from unetkit.benchmark.report import build_report
from unetkit.benchmark.report_figures import load_overlay, pareto_front
from unetkit.cli import main
from unetkit.data.errors import DataError
from unetkit.data.io import Geometry, write_image, write_label

RESAMPLES = 2000  # enough for the comparison (same seed on both sides), quicker than 10 000


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _close(text: str, value: float) -> bool:
    number = float(text)
    return (math.isnan(number) and math.isnan(value)) or number == pytest.approx(value, rel=1e-12, abs=1e-12)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = write_results_folder(tmp_path_factory.mktemp("bench") / "results")
    return root, build_report(root, n_resamples=RESAMPLES)


# ------------------------------------------------------------------------- contents

def test_writes_self_contained_files(full):
    root, written = full
    for kind in ("html", "markdown", "leaderboard", "paired_tests", "uscore", "cd_png", "cd_svg"):
        assert written[kind].is_file() and written[kind].parent == root / "report", kind
    page = written["html"].read_text(encoding="utf-8")
    # Nothing fetched from elsewhere: figures are data: URIs, styles inline.
    assert "http://" not in page and "https://" not in page
    assert '<link rel="stylesheet"' not in page and "<script src" not in page
    assert page.count('src="data:image/png;base64,') == 8  # CD, 3 Pareto, distributions, 3 overlays
    assert 'id="cd-diagram"' in page and 'id="leaderboard-Spleen3D"' in page
    assert "latency measured on CPU Synthetic CPU @ 2.0GHz, 2 cores" in page


def test_leaderboard_numbers_are_those_of_stats(full):
    root, written = full
    table = load_table(root / "table.csv")
    summary = {(s["model"], s["dataset"]): s for s in summarize(table, "dice", n_resamples=RESAMPLES)}
    tests = {(t["model"], t["dataset"]): t for t in paired_tests(table, "plain_unet", "dice", n_resamples=RESAMPLES)}
    rows = [r for r in _rows(written["leaderboard"]) if r["status"] == "done"]
    assert len(rows) == len(summary) == 14  # 5 models x 3 datasets minus the failed run
    for row in rows:
        expected = summary[(row["model"], row["dataset"])]
        for column in ("mean", "ci_low", "ci_high", "median", "std"):
            assert _close(row[f"dice_{column}"], expected[column]), (row["model"], row["dataset"], column)
        assert int(row["n"]) == expected["n"]
        if row["model"] == "plain_unet":
            assert row["mark"] == "baseline"
            continue
        test = tests[(row["model"], row["dataset"])]
        for mine, theirs in (("delta_mean", "mean_diff"), ("delta_ci_low", "ci_low"), ("delta_ci_high", "ci_high"),
                             ("p_wilcoxon", "p"), ("p_holm", "p_holm"), ("rank_biserial", "rank_biserial"),
                             ("cohens_dz", "cohens_dz")):
            assert _close(row[mine], test[theirs]), (row["model"], row["dataset"], mine)
        assert row["mark"] == test["mark"]
    # Ranked by mean Dice within each dataset.
    for dataset in ("Retina2D", "Skin2D", "Spleen3D"):
        means = [float(r["dice_mean"]) for r in rows if r["dataset"] == dataset]
        assert means == sorted(means, reverse=True)
    # The same numbers, formatted, in the HTML and the Markdown.
    top = summary[("resenc_unet", "Spleen3D")]
    shown = f"{top['mean']:.3f} [{top['ci_low']:.3f}, {top['ci_high']:.3f}]"
    assert shown in written["html"].read_text(encoding="utf-8")
    assert shown in written["markdown"].read_text(encoding="utf-8")


def test_paired_tests_and_uscore_csv(full):
    root, written = full
    table = load_table(root / "table.csv")
    expected = paired_tests(table, "plain_unet", "dice", n_resamples=RESAMPLES)
    rows = _rows(written["paired_tests"])
    assert [(r["dataset"], r["model"]) for r in rows] == [(t["dataset"], t["model"]) for t in expected]
    for row, test in zip(rows, expected):
        assert _close(row["p_holm"], test["p_holm"]) and _close(row["mean_diff"], test["mean_diff"])
    uscore = u_score_table(table, anchors_from_suite(table))
    rows = _rows(written["uscore"])
    assert len(rows) == len(uscore)
    for row, entry in zip(rows, uscore):
        assert (row["model"], row["dataset"]) == (entry["model"], entry["dataset"])
        assert _close(row["u_score"], entry["u_score"])


def test_overall_ranks_leave_out_the_incomplete_model(full):
    root, written = full
    table = load_table(root / "table.csv")
    complete = [r for r in table if r["model"] != "resenc_unet"]  # its Skin2D run failed
    models, datasets, scores = score_matrix(complete, "dice")
    ranks = friedman_nemenyi(scores, models, datasets)
    page = written["html"].read_text(encoding="utf-8")
    for model, rank in ranks["average_ranks"].items():
        assert f"<td>{model}</td><td class=\"num\" data-v=\"{rank!r}\">{rank:.2f}</td>" in page
    assert f"Nemenyi CD = {ranks['cd']:.3f}" in page
    assert "resenc_unet (no results on Skin2D)" in page


def test_failed_runs_inf_and_zero_shot_are_shown(full):
    root, written = full
    page = written["html"].read_text(encoding="utf-8")
    markdown = written["markdown"].read_text(encoding="utf-8")
    failed = [r for r in _rows(written["leaderboard"]) if r["status"] == "failed"]
    assert [(r["model"], r["dataset"], r["error"]) for r in failed] == [("resenc_unet", "Skin2D", FAILED_ERROR)]
    assert FAILED_ERROR in page and FAILED_ERROR in markdown
    assert "runs/Skin2D__resenc_unet__test/error.txt" in page and "Traceback" in page
    # HD95 of a missed structure (egeunet, Spleen3D, first case): ranked with the declared penalty.
    # The fixture's table.csv has no diagonal_mm, so the penalty is the diagonal of the median image
    # in datasets.json: 16 x 40 x 40 voxels of 3.0 x 0.8 x 0.8 mm = 48 x 32 x 32 mm, diagonal
    # sqrt(48^2 + 32^2 + 32^2) = sqrt(4352) = 65.97 mm. Beside it: the finite-only mean and the count.
    rows = [r for r in load_table(root / "table.csv") if (r["model"], r["dataset"]) == ("egeunet", "Spleen3D")]
    finite = [float(r["hd95"]) for r in rows if math.isfinite(float(r["hd95"]))]
    assert len(finite) == len(rows) - 1
    penalised = (sum(finite) + math.sqrt(4352.0)) / len(rows)
    expected = f"{penalised:.1f} (finite-only {np.mean(finite):.1f}, 1 missed)"
    assert expected in page and expected in markdown
    assert "a missed structure counts as the median image's diagonal (66.0 mm, datasets.json)" in html.unescape(page)
    assert ">inf<" not in page and ">nan<" not in page
    # Zero-shot: summarize over the zero-shot table, beside the in-domain number on the target.
    zero = summarize(load_table(root / "zero_shot.csv"), "dice", n_resamples=RESAMPLES)
    assert 'id="zero-shot"' in page
    for entry in zero:
        assert f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]" in page


# ------------------------------------------------------------------------- degenerate

def test_one_model(tmp_path):
    root = write_results_folder(tmp_path / "r", models=["plain_unet"], datasets=["Retina2D", "Spleen3D"],
                                failed=None, zero_shot=False, images=False)
    written = build_report(root, n_resamples=200, overlays=False)
    page = written["html"].read_text(encoding="utf-8")
    assert 'id="cd-absent"' in page and "need at least 2" in page
    assert "none (they need at least two models with results)" in page and "No U-Score" in page
    assert "cd_png" not in written
    rows = _rows(written["leaderboard"])
    assert [r["model"] for r in rows] == ["plain_unet", "plain_unet"]
    assert _rows(written["paired_tests"]) == []


def test_one_dataset_and_no_plain_unet(tmp_path):
    root = write_results_folder(tmp_path / "r", models=["resenc_unet", "mednext_s", "egeunet"],
                                datasets=["Spleen3D"], failed=None, num_cases=8)
    written = build_report(root, n_resamples=200)
    page = written["html"].read_text(encoding="utf-8")
    assert "Only 1 dataset has results" in page and 'id="cd-absent"' in page
    # The suite declares no baseline: its first model is the baseline, chosen before any result.
    assert "against resenc_unet (the suite&#x27;s first model (the suite declares no baseline:))" in page
    assert "zero-shot" in page.lower() and "no rows" in page  # zero_shot.csv with a header only


def test_two_models_get_a_wilcoxon_test_over_datasets(tmp_path):
    root = write_results_folder(tmp_path / "r", models=["plain_unet", "egeunet"], failed=None, images=False)
    written = build_report(root, n_resamples=200, overlays=False)
    page = html.unescape(written["html"].read_text(encoding="utf-8"))
    # Demšar (2006): two models across datasets get the Wilcoxon test over datasets, not a CD diagram.
    assert "Two models: Wilcoxon signed-rank test over the 3 datasets" in page
    assert 'id="cd-diagram"' not in page and "cd_png" not in written


def test_errors_name_the_file(tmp_path, capsys):
    root = write_results_folder(tmp_path / "r", models=["plain_unet", "egeunet"], datasets=["Retina2D"],
                                failed=None, images=False)
    (root / "table.csv").rename(root / "table.bak")
    with pytest.raises(DataError, match=r"table\.csv: file not found"):
        build_report(root)
    assert main(["report", str(root)]) == 1
    assert "table.csv" in capsys.readouterr().err
    (root / "table.bak").rename(root / "table.csv")

    text = (root / "table.csv").read_text(encoding="utf-8").splitlines()
    broken = text[3].split(",")
    broken[6] = "abc"  # the dice column
    (root / "table.csv").write_text("\n".join(text[:3] + [",".join(broken)] + text[4:]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"table\.csv: line 4: dice='abc' is not a number"):
        build_report(root)

    (root / "table.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    runs = (root / "runs.csv").read_text(encoding="utf-8").replace(",status,", ",state,", 1)
    (root / "runs.csv").write_text(runs, encoding="utf-8")
    with pytest.raises(DataError, match=r"runs\.csv: header lacks column\(s\) status"):
        build_report(root)

    (root / "metadata.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"metadata\.json: not valid JSON"):
        build_report(root)
    with pytest.raises(DataError, match="results folder not found"):
        build_report(tmp_path / "nowhere")


def test_cli(tmp_path, capsys):
    root = write_results_folder(tmp_path / "r", models=["plain_unet", "mednext_s", "egeunet"],
                                datasets=["Retina2D", "Skin2D"], failed=None, images=False)
    out = tmp_path / "out"
    assert main(["report", str(root), "--output", str(out), "--resamples", "200", "--no-overlays"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(out / "report.html") and str(out / "leaderboard.csv") in printed
    assert all(Path(p).is_file() for p in printed)
    assert main(["report", str(root), "--baseline", "swin_unet"]) == 2
    assert "baseline 'swin_unet' has no results" in capsys.readouterr().err


# ------------------------------------------------------------------------- figures

def test_pareto_front():
    # (cost, score): B dominates C (cheaper and better); A and D trade off; E is tied with D in
    # cost but worse; NaN is never on the front.
    costs = [1.0, 2.0, 3.0, 5.0, 5.0, math.nan]
    scores = [0.5, 0.8, 0.7, 0.9, 0.85, 0.99]
    assert pareto_front(costs, scores) == [True, True, False, True, False, False]
    assert pareto_front([1.0, 2.0], [5.0, 3.0], higher_is_better=False) == [True, True]


def test_overlay_slice_and_rgb(tmp_path):
    geometry = Geometry(spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    image = np.random.default_rng(0).normal(size=(1, 6, 10, 12)).astype(np.float32)
    reference = np.zeros((6, 10, 12), np.int16)
    reference[2, 3:5, 3:5] = 1
    reference[4, 2:8, 2:9] = 2  # the most foreground: this slice is shown
    write_image(image, tmp_path / "img_0000.nii.gz", geometry)
    write_label(reference, tmp_path / "ref.nii.gz", geometry)
    write_label(np.roll(reference, 1, axis=2), tmp_path / "pred.nii.gz", geometry)
    case = load_overlay([tmp_path / "img_0000.nii.gz"], tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz")
    assert case["where"] == "axial slice 4 of 6" and not case["rgb"]
    assert np.array_equal(case["reference"], reference[4]) and case["image"].shape == (10, 12)

    rgb = np.random.default_rng(1).integers(0, 255, (3, 8, 8)).astype(np.uint8)
    write_image(rgb, tmp_path / "rgb_0000.png", Geometry(spacing=(1.0, 1.0)))
    write_label(np.eye(8, dtype=np.int16), tmp_path / "l.png", Geometry(spacing=(1.0, 1.0)))
    case = load_overlay([tmp_path / "rgb_0000.png"], tmp_path / "l.png", tmp_path / "l.png")
    assert case["rgb"] and case["image"].shape == (8, 8, 3)
    assert case["image"] == pytest.approx(np.moveaxis(rgb, 0, -1) / 255.0)


# ------------------------------------------------------------------------- browser

def _browser() -> tuple[str, str]:
    """(chromium binary, chromedriver) or skip with the reason."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if binary is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium chromium-driver)")
    driver = shutil.which("chromedriver")
    if driver is None:
        pytest.skip("no chromedriver (Debian: apt-get install chromium-driver)")
    return binary, driver


def test_html_renders_in_headless_chromium(full, tmp_path):
    binary, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    _, written = full
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium's driver manager would otherwise try the network.
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(written["html"].resolve().as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth]);")
        assert len(images) == 8
        assert all(complete and width > 0 for _, complete, width in images), images
        assert browser.execute_script("return document.querySelectorAll('table[id^=\"leaderboard-\"]').length;") == 3
        assert browser.execute_script("return document.getElementById('cd-diagram').naturalWidth;") > 0
        # The sorting script runs: clicking "model" sorts Retina2D's rows by name.
        browser.execute_script("document.querySelector('#leaderboard-Retina2D th:nth-child(2)').click();")
        names = browser.execute_script(
            "return Array.from(document.querySelectorAll('#leaderboard-Retina2D tbody tr td:nth-child(2)'))"
            ".map(c => c.textContent);")
        assert names == sorted(names)
        height = browser.execute_script("return document.body.scrollHeight;")
        browser.set_window_size(1400, min(height + 100, 16000))
        screenshot = Path(os.environ.get("UNETKIT_REPORT_SCREENSHOT", tmp_path / "report.png"))
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 0
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
    finally:
        browser.quit()


# ------------------------------------------------------------ issue 12: verdicts that cannot mislead

def _md_row(markdown: str, model: str) -> str:
    return next(line for line in markdown.splitlines()
                if line.startswith("| ") and f"| {model} |" in line and not line.startswith("| rank |"))


def test_item1_catastrophic_case_reads_as_better_with_mean_and_median(tmp_path):
    # 11 of 12 cases better by +0.010..+0.020, one case worse by 0.375 (the worked example of
    # tests/test_stats.py): T+ = 66, T- = 12, exact p = 140/4096 = 0.034, r = +0.69; mean
    # difference -0.0175, median +0.0145. The verdict follows the signed ranks: "+ better".
    rows = []
    for i in range(12):
        base = 0.70 + 0.01 * i
        diff = -0.375 if i == 11 else 0.010 + 0.001 * i
        rows += [{"model": "plain_unet", "dataset": "D", "case": f"c{i:02d}", "dice": base},
                 {"model": "model", "dataset": "D", "case": f"c{i:02d}", "dice": base + diff}]
    root = write_table_results(tmp_path / "r", rows, suite="models: [plain_unet, model]\n")
    written = build_report(root, n_resamples=500, overlays=False)
    row = _md_row(written["markdown"].read_text(encoding="utf-8"), "model")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[7].startswith("-0.017 [") and cells[8] == "+0.015"  # -0.0175 and +0.0145 in floats and cells[9] == "12"  # mean, median, pairs
    assert cells[10] == "0.034" and cells[11].startswith("r 0.69") and cells[12] == "+ better"


def _png_mask(path: Path, square: tuple[int, int, int] | None) -> None:
    """A 24 x 32 label picture, empty or with a filled square (row, column, side)."""
    label = np.zeros((24, 32), dtype=np.uint8)
    if square is not None:
        r, c, side = square
        label[r:r + side, c:c + side] = 1
    write_label(label, path, Geometry(spacing=(1.0, 1.0)))


def _evaluated_run(results: Path, model: str, references: Path, predictions: dict[str, tuple | None]) -> None:
    """runs/D__MODEL__test/ as the worker leaves it: predictions, summary.json (unetkit evaluate),
    spec.json and run.json."""
    from unetkit.evaluation.evaluate import evaluate_folders

    run = results / "runs" / f"D__{model}__test"
    for case, square in predictions.items():
        _png_mask(run / "predictions" / f"{case}.png", square)
    evaluate_folders(run / "predictions", references, {"background": 0, "polyp": 1}, output_dir=run, num_processes=1)
    (run / "spec.json").write_text(json.dumps({"test_case_images": {}}), encoding="utf-8")
    record = {"run_id": run.name, "kind": "in_domain", "model": model, "dataset": "D", "source_dataset": "D",
              "fold": "test", "status": "done", "prediction_dir": str(run / "predictions")}
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")


def test_item2_false_positives_on_empty_references_count(tmp_path):
    # 12 cases of 24 x 32 pixels; c00..c09 have an empty reference, c10 and c11 a 6 x 6 square.
    # plain_unet predicts exactly the reference everywhere (empty where it is empty);
    # fp_model does too on c10 and c11 but puts a 3 x 3 false positive on every empty case.
    # nnU-Net's convention (summary.json): plain_unet's Dice is NaN on c00..c09, so a paired test
    # would keep only c10 and c11 (both Dice 1: no difference, no verdict).
    # Scored convention (table.csv): plain_unet 1 on all 12 cases, fp_model 0 on c00..c09 and 1 on
    # c10, c11. Differences: ten -1 and two 0 -> 12 pairs; zero differences dropped, ten tied -1:
    # T+ = 0, T- = 55, and of the 2^10 equally likely sign patterns only all-minus and all-plus
    # are that extreme: p = 2 / 1024 = 0.00195 (one comparison, Holm leaves it): "- worse".
    # HD95: fp_model's prediction on an empty reference has HD95 = inf, penalised with the image
    # diagonal sqrt(24^2 + 32^2) = 40 mm: mean (10 * 40 + 0 + 0) / 12 = 33.3, finite-only 0.0.
    from unetkit.benchmark.tables import rebuild_tables

    results = tmp_path / "results"
    references = tmp_path / "labels"
    squares = {f"c{i:02d}": (None if i < 10 else (8, 10, 6)) for i in range(12)}
    for case, square in squares.items():
        _png_mask(references / f"{case}.png", square)
    _evaluated_run(results, "plain_unet", references, squares)
    _evaluated_run(results, "fp_model", references,
                   {case: (square if square is not None else (2, 2, 3)) for case, square in squares.items()})
    summary = json.loads((results / "runs" / "D__plain_unet__test" / "summary.json").read_text())
    assert summary["metric_per_case"][0]["metrics"]["1"]["Dice"] is None  # evaluate keeps nnU-Net's NaN
    rebuild_tables(results)
    (results / "metadata.json").write_text(json.dumps({"suite": "empty"}), encoding="utf-8")
    (results / "suite.yaml").write_text("models: [plain_unet, fp_model]\n", encoding="utf-8")

    table = load_table(results / "table.csv")
    dice = {(r["model"], r["case"]): float(r["dice"]) for r in table}
    assert all(dice[("plain_unet", c)] == 1.0 for c in squares)
    assert [dice[("fp_model", c)] for c in squares] == [0.0] * 10 + [1.0, 1.0]
    assert [int(r["n_empty_reference"]) for r in table if r["model"] == "fp_model"] == [1] * 10 + [0, 0]
    assert {float(r["diagonal_mm"]) for r in table} == {40.0}

    (test,) = paired_tests(table, "plain_unet", "dice", n_resamples=200)
    assert test["n_pairs"] == 12 and (test["t_plus"], test["t_minus"]) == (0.0, 55.0)
    assert test["p"] == pytest.approx(2 / 1024) and test["mark"] == "-"

    written = build_report(results, n_resamples=200, overlays=False)
    markdown = written["markdown"].read_text(encoding="utf-8")
    assert "10 of 12 test cases have an empty reference" in markdown
    assert "Empty references are scored (MONAI's DiceMetric with ignore_empty=False)" in markdown
    cells = [c.strip() for c in _md_row(markdown, "fp_model").strip("|").split("|")]
    assert cells[4] == "33.3 (finite-only 0.0, 10 missed)"
    assert cells[10] == "0.002" and cells[12] == "- worse"


def test_item3_two_models_wilcoxon_over_datasets_and_friedman_gate(tmp_path):
    # Two models on 6 datasets, "strong" ahead of "weak" on each by 0.01, 0.02, ..., 0.06:
    # differences all positive and distinct, T+ = 21, T- = 0, exact two-sided p = 2 / 2^6 =
    # 0.03125 < 0.05: strong is significantly better across datasets (Demšar 2006, sec. 3.1.3).
    rows = []
    for j in range(6):
        for i in range(3):
            rows += [{"model": "weak", "dataset": f"D{j}", "case": f"c{i}", "dice": 0.5 + 0.01 * i},
                     {"model": "strong", "dataset": f"D{j}", "case": f"c{i}", "dice": 0.5 + 0.01 * i + 0.01 * (j + 1)}]
    root = write_table_results(tmp_path / "two", rows, suite="models: [weak, strong]\n")
    written = build_report(root, n_resamples=200, overlays=False)
    page = html.unescape(written["html"].read_text(encoding="utf-8"))
    d = np.array([0.01 * (j + 1) for j in range(6)])
    assert sps_wilcoxon(-d).pvalue == pytest.approx(0.03125)
    assert "T+ = 0.0, T- = 21.0 for weak - strong, p = 0.031" in page
    assert "strong is significantly better across datasets" in page
    assert "cd_png" not in written and 'id="cd-diagram"' not in page

    # Three models on three datasets in a Latin square of ranks (a>b>c, b>c>a, c>a>b): every
    # average rank is 2, Friedman chi2 = 0, p = 1: no post-hoc groups, and the diagram says so.
    order = {"E0": ("a", "b", "c"), "E1": ("b", "c", "a"), "E2": ("c", "a", "b")}
    rows = [{"model": m, "dataset": ds, "case": f"c{i}", "dice": 0.9 - 0.1 * order[ds].index(m) + 0.001 * i}
            for ds in order for m in "abc" for i in range(3)]
    root = write_table_results(tmp_path / "three", rows, suite="models: [a, b, c]\n")
    written = build_report(root, n_resamples=200, overlays=False)
    page = html.unescape(written["html"].read_text(encoding="utf-8"))
    assert "Friedman chi\u00b2 = 0.00 (df 2), p = 1.000" in page
    assert "No significant difference overall" in page and "no groups are drawn" in page
    assert "Nemenyi CD =" not in page and "cd_png" in written


def test_item4_hd95_misses_are_penalised(tmp_path):
    # 12 cases, images of diagonal 100 mm. "careful" finds every structure at HD95 10 mm;
    # "misser" is at 2 mm on 9 cases and misses the structure on 3 (HD95 = inf).
    # Finite-only, misser looks better (2.0 vs 10.0), and a paired test that drops the infinite
    # pairs sees 9 differences of -8: p = 2 / 2^9 = 0.0039, "misser significantly better".
    # Penalised (miss = 100 mm): misser's mean is (9 * 2 + 3 * 100) / 12 = 26.5 > 10, so careful
    # ranks first; the 12 differences are nine -8 (tied: rank 5) and three +90 (rank 11):
    # T- = 45, T+ = 33, far from significant (exact enumeration of 2^12 sign patterns).
    rows = []
    for i in range(12):
        missed = i >= 9
        rows += [{"model": "careful", "dataset": "D", "case": f"c{i:02d}", "dice": 0.8, "hd95": 10.0,
                  "diagonal_mm": 100.0},
                 {"model": "misser", "dataset": "D", "case": f"c{i:02d}", "dice": 0.0 if missed else 0.9,
                  "hd95": math.inf if missed else 2.0, "diagonal_mm": 100.0}]
    root = write_table_results(tmp_path / "r", rows, suite="models: [careful, misser]\n")
    written = build_report(root, metric="hd95", n_resamples=200, overlays=False)
    board = _rows(written["leaderboard"])
    assert [r["model"] for r in board] == ["careful", "misser"]
    assert float(board[1]["hd95_mean"]) == pytest.approx(26.5)
    assert float(board[1]["hd95_mean_finite"]) == 2.0 and board[1]["hd95_n_inf"] == "3"
    assert board[1]["n_pairs"] == "12" and board[1]["mark"] == ""
    # Reference p: all 2^12 sign patterns of the ranks (5 x 9, 11 x 3), T+ as or more extreme.
    ranks = np.array([5.0] * 9 + [11.0] * 3)
    signs = (np.arange(4096)[:, None] >> np.arange(12)) & 1
    t_plus = (signs * ranks).sum(axis=1)
    expected_p = np.mean(np.abs(t_plus - 39.0) >= abs(33.0 - 39.0))  # 39 = (45 + 33) / 2, the null mean
    assert float(board[1]["p_wilcoxon"]) == pytest.approx(expected_p)
    assert expected_p > 0.5
    markdown = written["markdown"].read_text(encoding="utf-8")
    assert "26.5 (finite-only 2.0, 3 missed)" in markdown
    assert "a missed structure counts as the image diagonal in mm" in markdown


def test_item5_baseline_is_declared_not_chosen_from_results(tmp_path):
    # "last" is best on every case, "first" is worst; neither is plain_unet. The baseline is the
    # suite's declared one, else its first model, never the best-ranked one.
    rows = [{"model": m, "dataset": "D", "case": f"c{i}", "dice": v + 0.01 * i}
            for i in range(12) for m, v in (("first", 0.5), ("middle", 0.6), ("last", 0.7))]
    root = write_table_results(tmp_path / "r", rows, suite="models: [first, middle, last]\n")
    markdown = build_report(root, n_resamples=200, overlays=False)["markdown"].read_text(encoding="utf-8")
    assert "against first (the suite's first model (the suite declares no baseline:))" in markdown
    (root / "suite.yaml").write_text("models: [first, middle, last]\nbaseline: middle\n", encoding="utf-8")
    markdown = build_report(root, n_resamples=200, overlays=False)["markdown"].read_text(encoding="utf-8")
    assert "against middle (declared in the suite (baseline:))" in markdown
    # A declared baseline whose runs all failed gives no paired tests, not another model.
    (root / "suite.yaml").write_text("models: [first, middle, last]\nbaseline: gone\n", encoding="utf-8")
    markdown = build_report(root, n_resamples=200, overlays=False)["markdown"].read_text(encoding="utf-8")
    assert "none: the baseline gone (declared in the suite (baseline:)) has no results" in markdown


def test_item7_family_pairs_and_minimum_stated(tmp_path):
    # Baseline "base" and three models on one dataset; "few" has only 8 cases, each 0.05 above
    # the baseline (p = 2 / 2^8 = 0.0078 before Holm) but 8 < 10 pairs: not marked, and the
    # report says why. "up" and "down": 12 cases, every one 0.02 * (i + 1) above / below: exact
    # p = 2 / 4096 each. Holm over the family of 3 comparisons on D (sorted p: up, down, few):
    # up 3 * 2/4096, down max(that, 2 * 2/4096), few max(that, 1 * 2/256) = 0.0078.
    rows = []
    for i in range(12):
        rows += [{"model": "base", "dataset": "D", "case": f"c{i:02d}", "dice": 0.5},
                 {"model": "up", "dataset": "D", "case": f"c{i:02d}", "dice": 0.5 + 0.02 * (i + 1)},
                 {"model": "down", "dataset": "D", "case": f"c{i:02d}", "dice": 0.5 - 0.02 * (i + 1) - 0.001}]
        if i < 8:
            rows.append({"model": "few", "dataset": "D", "case": f"c{i:02d}", "dice": 0.5 + 0.05 + 0.001 * i})
    root = write_table_results(tmp_path / "r", rows, suite="models: [base, up, down, few]\n")
    written = build_report(root, n_resamples=200, overlays=False)
    tests = {r["model"]: r for r in _rows(written["paired_tests"])}
    assert {m: int(r["family_size"]) for m, r in tests.items()} == {"up": 3, "down": 3, "few": 3}
    assert float(tests["up"]["p_holm"]) == pytest.approx(3 * 2 / 4096)
    assert float(tests["down"]["p_holm"]) == pytest.approx(3 * 2 / 4096)
    assert float(tests["few"]["p_holm"]) == pytest.approx(2 / 256)
    assert (tests["up"]["mark"], tests["down"]["mark"], tests["few"]["mark"]) == ("+", "-", "")
    assert tests["few"]["note"] == "too few pairs to mark (8 < 10)"
    markdown = written["markdown"].read_text(encoding="utf-8")
    assert "not marked: too few pairs to mark (8 < 10)" in _md_row(markdown, "few")
    assert "Holm corrects over the family of one dataset's comparisons with the baseline" in markdown
    assert "significance is marked only with at least 10 pairs, since below 6 pairs" in markdown


def test_cli_min_pairs(tmp_path, capsys):
    # The 12 pairs of item 1 (p = 0.034) are marked with the default minimum of 10 and not with 13.
    rows = []
    for i in range(12):
        base = 0.70 + 0.01 * i
        rows += [{"model": "plain_unet", "dataset": "D", "case": f"c{i:02d}", "dice": base},
                 {"model": "model", "dataset": "D", "case": f"c{i:02d}", "dice": base + (-0.375 if i == 11 else 0.01)}]
    root = write_table_results(tmp_path / "r", rows, suite="models: [plain_unet, model]\n")
    assert main(["report", str(root), "--no-overlays", "--resamples", "200", "--min-pairs", "13"]) == 0
    (test,) = _rows(root / "report" / "paired_tests.csv")
    assert test["mark"] == "" and test["note"] == "too few pairs to mark (12 < 13)"
    capsys.readouterr()
