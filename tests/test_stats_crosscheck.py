"""The report's numbers on real benchmark results, recomputed independently from table.csv alone.

``tests/data/bench_crosscheck/table.csv`` is a snapshot of real results: the table.csv that
``unetkit bench tests/data/bench_crosscheck/suite.yaml -o OUT --raw-root R --jobs 1`` wrote on
2026-12-04 (2 shared CPU cores, about 2 minutes), after importing ISBI2012_EM and DRIVE from the
shared datasets into R with the ``unetkit import`` commands of docs/benchmark.md. Three narrow
models (plain_unet, unext, egeunet) trained for 12 iterations each: smoke-level segmentations
(unext predicts no vessel on 15 of DRIVE's 20 test images: HD95 infinite, a miss), which is what a
cross-check needs, not a leaderboard. Training is far too slow for CI, hence the snapshot.

The test copies only that file (plus the suite, for the declared baseline) into a results folder,
builds the report, and compares leaderboard.csv, paired_tests.csv and the Friedman analysis with
numbers computed here from the CSV by pandas, scipy.stats and scikit-posthocs.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from references import require_module
from scipy import stats as sps

from unetkit.benchmark.report import analyze, build_report
from unetkit.benchmark.report_data import load_results

SNAPSHOT = Path(__file__).parent / "data" / "bench_crosscheck"
RESAMPLES = 2000
SEED = 0

pytestmark = pytest.mark.reference  # every test here checks the report against scipy / scikit-posthocs


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[pd.DataFrame, dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("crosscheck") / "results"
    root.mkdir()
    shutil.copy(SNAPSHOT / "table.csv", root / "table.csv")
    shutil.copy(SNAPSHOT / "suite.yaml", root / "suite.yaml")
    table = pd.read_csv(SNAPSHOT / "table.csv")
    (root / "metadata.json").write_text(json.dumps({"suite": "bench_crosscheck"}), encoding="utf-8")
    with open(root / "runs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run_id", "kind", "model", "dataset", "status"])
        for run_id, group in table.groupby("run_id", sort=False):
            writer.writerow([run_id, "in_domain", group["model"].iloc[0], group["dataset"].iloc[0], "done"])
    written = build_report(root, n_resamples=RESAMPLES, seed=SEED, overlays=False)
    return table, written, root


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_snapshot_is_real_and_complete():
    table = pd.read_csv(SNAPSHOT / "table.csv")
    assert sorted(table["model"].unique()) == ["egeunet", "plain_unet", "unext"]
    assert table.groupby("dataset")["case"].nunique().to_dict() == {"DRIVE": 20, "ISBI2012": 10}
    assert len(table) == 3 * 30
    # DRIVE images are 565 x 584 pixels, ISBI2012 slices 512 x 512 (spacing 1): their diagonals.
    assert np.allclose(table.loc[table["dataset"] == "DRIVE", "diagonal_mm"], np.hypot(565, 584))
    assert np.allclose(table.loc[table["dataset"] == "ISBI2012", "diagonal_mm"], np.hypot(512, 512))


def test_leaderboard_means_intervals_and_hd95(report):
    table, written, _ = report
    board = {(r["model"], r["dataset"]): r for r in _csv(written["leaderboard"])}
    assert len(board) == 6
    for (model, dataset), group in table.groupby(["model", "dataset"]):
        row = board[(model, dataset)]
        dice = group["dice"].to_numpy()
        assert float(row["dice_mean"]) == pytest.approx(dice.mean(), rel=1e-12)
        assert float(row["dice_median"]) == pytest.approx(np.median(dice), rel=1e-12)
        if np.ptp(dice) > 0:
            ci = sps.bootstrap((dice,), np.mean, n_resamples=RESAMPLES, confidence_level=0.95, method="percentile",
                               rng=np.random.default_rng(SEED)).confidence_interval
            assert (float(row["dice_ci_low"]), float(row["dice_ci_high"])) == pytest.approx((ci.low, ci.high),
                                                                                            rel=1e-12, abs=1e-12)
        hd95 = group["hd95"].to_numpy()
        missed = np.isinf(hd95)
        penalised = np.where(missed, group["diagonal_mm"].to_numpy(), hd95)
        assert float(row["hd95_mean"]) == pytest.approx(penalised.mean(), rel=1e-12)
        assert int(row["hd95_n_inf"]) == int(missed.sum())
        if (~missed).any():
            assert float(row["hd95_mean_finite"]) == pytest.approx(hd95[~missed].mean(), rel=1e-12)
    # unext's Dice on DRIVE is 0 on every case: 15 empty predictions (HD95 = inf, penalised with
    # the diagonal) and 5 with a few pixels off the vessels (finite HD95).
    assert int(board[("unext", "DRIVE")]["hd95_n_inf"]) == 15
    # Rank 1 per dataset is the highest mean Dice (pandas).
    means = table.groupby(["dataset", "model"])["dice"].mean()
    for dataset in ("ISBI2012", "DRIVE"):
        best = means[dataset].idxmax()
        assert board[(best, dataset)]["rank"] == "1"


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment, written out: sorted ascending, (m - i) * p_(i), running max."""
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[index]))
        adjusted[index] = running
    return adjusted


def test_paired_tests_against_scipy(report):
    table, written, _ = report
    tests = {(r["dataset"], r["model"]): r for r in _csv(written["paired_tests"])}
    assert {r["baseline"] for r in tests.values()} == {"plain_unet"}  # declared in the suite
    wide = table.pivot(index=["dataset", "case"], columns="model", values="dice")
    for dataset in ("ISBI2012", "DRIVE"):
        block = wide.loc[dataset]
        models = ["unext", "egeunet"]
        p = np.array([sps.wilcoxon(block[m] - block["plain_unet"]).pvalue for m in models])
        adjusted = _holm(p)
        statsmodels = require_module("statsmodels.stats.multitest", "pip install -e '.[dev]'")
        assert adjusted == pytest.approx(statsmodels.multipletests(p, method="holm")[1], rel=1e-12)
        for model, p_value, p_adjusted in zip(models, p, adjusted):
            row = tests[(dataset, model)]
            d = (block[model] - block["plain_unet"]).to_numpy()
            assert int(row["n_pairs"]) == d.size
            assert float(row["mean_diff"]) == pytest.approx(d.mean(), rel=1e-12)
            assert float(row["median_diff"]) == pytest.approx(np.median(d), rel=1e-12)
            assert float(row["p"]) == pytest.approx(p_value, rel=1e-9)
            assert float(row["p_holm"]) == pytest.approx(p_adjusted, rel=1e-9)
            nonzero = d[d != 0]
            ranks = sps.rankdata(np.abs(nonzero))
            t_plus, t_minus = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
            assert float(row["rank_biserial"]) == pytest.approx((t_plus - t_minus) / (t_plus + t_minus))
            expected = ("+" if t_plus > t_minus else "-") if p_adjusted < 0.05 and d.size >= 10 else ""
            assert row["mark"] == expected


def test_friedman_ranks_and_nemenyi_against_scipy_and_scikit_posthocs(report):
    table, _, root = report
    sp = require_module("scikit_posthocs", "pip install -e '.[dev]'")
    overall = analyze(load_results(root), n_resamples=200).overall
    means = table.groupby(["dataset", "model"])["dice"].mean().unstack()  # datasets x models
    means = means.loc[overall["datasets"], overall["models"]]
    chi2, p = sps.friedmanchisquare(*[means[m].to_numpy() for m in overall["models"]])
    assert overall["test"] == "friedman"
    assert overall["friedman_chi2"] == pytest.approx(chi2, rel=1e-12)
    assert overall["friedman_p"] == pytest.approx(p, rel=1e-12)
    k, n = means.shape[1], means.shape[0]
    f_stat = (n - 1) * chi2 / (n * (k - 1) - chi2)  # Iman-Davenport (Demšar 2006, eq. 2)
    assert overall["iman_davenport_f"] == pytest.approx(f_stat, rel=1e-12)
    assert overall["iman_davenport_p"] == pytest.approx(sps.f.sf(f_stat, k - 1, (k - 1) * (n - 1)), rel=1e-12)
    ranks = means.rank(axis=1, ascending=False).mean(axis=0)  # 1 = highest Dice
    assert overall["average_ranks"] == pytest.approx(ranks.to_dict())
    nemenyi = sp.posthoc_nemenyi_friedman(means.to_numpy()).to_numpy()
    assert np.array(overall["nemenyi_p"]) == pytest.approx(nemenyi, abs=1e-12)
    assert overall["rejects"] == (overall["iman_davenport_p"] < 0.05)
