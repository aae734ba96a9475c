"""Benchmark statistics checked against their references on fixed data.

References: scipy.stats.bootstrap (same resamples, so equal to rounding), scipy.stats.wilcoxon,
hand-computed Holm / rank-biserial / d_z / Friedman / Iman-Davenport / U-Score values (worked
in the comments), Demšar 2006 Table 5a for q_alpha, and, when importable, statsmodels'
multipletests(method="holm") and scikit-posthocs' posthoc_nemenyi_friedman:
``pip install --no-deps --target /tmp/spref scikit-posthocs pandas statsmodels patsy seaborn pytz tzdata``
then ``PYTHONPATH=/tmp/spref pytest tests/test_stats.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from references import require_module
from scipy import stats as sps

from unetkit.benchmark import (
    UBENCH_ANCHORS,
    anchors_from_suite,
    bootstrap_ci,
    cd_diagram,
    cd_groups,
    cohens_dz,
    critical_difference,
    friedman_nemenyi,
    holm,
    load_table,
    nemenyi_q_alpha,
    paired_tests,
    rank_biserial,
    score_matrix,
    summarize,
    u_score,
    u_score_components,
    u_score_table,
)

# ------------------------------------------------------------------------------ bootstrap


@pytest.mark.parametrize("method", ["percentile", "BCa"])
@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bootstrap_ci_equals_scipy(method, statistic):
    values = np.random.default_rng(3).beta(5, 2, size=37)
    mine = bootstrap_ci(values, n_resamples=5000, confidence=0.9, seed=11, method=method, statistic=statistic)
    ref = sps.bootstrap((values,), statistic, n_resamples=5000, confidence_level=0.9,
                        method="BCa" if method == "BCa" else "percentile",
                        rng=np.random.default_rng(11)).confidence_interval
    assert mine == pytest.approx((ref.low, ref.high), rel=1e-12, abs=1e-12)


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([0.7, 0.7, 0.7], method="BCa") == pytest.approx((0.7, 0.7))
    assert bootstrap_ci([0.4]) == (0.4, 0.4)
    low, high = bootstrap_ci(np.linspace(0, 1, 21))
    assert low < 0.5 < high
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_ci([0.1, math.nan])
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([0.1, 0.2], method="bca")


# ------------------------------------------------------------------------------ Holm and effect sizes


def test_holm_hand_values():
    # p = [0.01, 0.04, 0.03, 0.005], m = 4, sorted: 0.005, 0.01, 0.03, 0.04
    #   4 * 0.005 = 0.02; 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; 1 * 0.04 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1 and monotone: 2 * 0.5 = 1.0, then max(1.0, 0.6) = 1.0
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    # NaN stays NaN and does not count in m: m = 2 -> 2 * 0.01, max(0.02, 0.02)
    out = holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    # Benjamini-Hochberg is a different procedure: it would give 0.02 for both (not Holm).
    assert sps.false_discovery_control([0.01, 0.02]) == pytest.approx([0.02, 0.02])
    assert holm([0.01, 0.02]) == pytest.approx([0.02, 0.02])
    assert holm([0.01, 0.04, 0.03, 0.005])[1] != pytest.approx(sps.false_discovery_control([0.01, 0.04, 0.03, 0.005])[1])


@pytest.mark.reference
def test_holm_equals_statsmodels():
    multitest = require_module("statsmodels.stats.multitest", "pip install -e '.[dev]'")
    p = np.random.default_rng(5).uniform(0, 0.2, size=12)
    p[3] = p[7]  # a tie
    reference = multitest.multipletests(p, method="holm")[1]
    assert holm(p) == pytest.approx(reference, abs=1e-15)


def test_rank_biserial_hand_values():
    # d = [1, 2, -3, 4, 5]: ranks of |d| = 1..5; T+ = 1+2+4+5 = 12, T- = 3, r = (12-3)/15 = 0.6
    assert rank_biserial([1, 2, -3, 4, 5]) == pytest.approx(0.6)
    # zeros dropped ("wilcox"): same as above
    assert rank_biserial([0, 1, 2, -3, 4, 5]) == pytest.approx(0.6)
    # ties: |d| = 1, 1, 2, 2, 3 -> ranks 1.5, 1.5, 3.5, 3.5, 5; T+ = 1.5+3.5+3.5 = 8.5, T- = 6.5
    assert rank_biserial([1, -1, 2, 2, -3]) == pytest.approx(2 / 15)
    # "zsplit": d = [0, 1, -2]: ranks 1, 2, 3; T+ = 2 + 0.5, T- = 3 + 0.5 -> r = -1/6
    assert rank_biserial([0, 1, -2], zero_method="zsplit") == pytest.approx(-1 / 6)
    assert rank_biserial([2, 3]) == 1.0 and rank_biserial([-2, -3]) == -1.0
    assert math.isnan(rank_biserial([0, 0]))
    # consistent with scipy's signed-rank statistic: two-sided statistic = min(T+, T-) = 3
    assert sps.wilcoxon([1, 2, -3, 4, 5]).statistic == 3.0


def test_cohens_dz_hand_values():
    # d = 1..5: mean 3, sd (ddof=1) = sqrt(2.5) -> 3 / 1.5811388 = 1.8973666
    assert cohens_dz([1, 2, 3, 4, 5]) == pytest.approx(3 / math.sqrt(2.5))
    assert cohens_dz([0.0, 0.0, 0.0]) == 0.0
    assert cohens_dz([0.1, 0.1]) == math.inf
    assert math.isnan(cohens_dz([0.3]))


# ------------------------------------------------------------------------------ tidy table and paired tests


def _table():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, size=14)
    rows = []
    for model, shift in (("base", 0.0), ("better", 0.05), ("same", 0.0)):
        noise = rng.normal(0, 0.02, size=14)
        for dataset in ("D1", "D2"):
            for i, value in enumerate(base + shift + noise):
                rows.append({"model": model, "dataset": dataset, "case": f"c{i:02d}", "dice": float(value)})
    return rows


def test_paired_tests_against_scipy_and_hand_holm(tmp_path):
    rows = _table()
    # leave a hole: "same" lacks case c00 on D1, and has NaN on c01 of D1
    rows = [r for r in rows if not (r["model"] == "same" and r["dataset"] == "D1" and r["case"] == "c00")]
    for r in rows:
        if r["model"] == "same" and r["dataset"] == "D1" and r["case"] == "c01":
            r["dice"] = math.nan
    out = paired_tests(rows, baseline="base", metric="dice", n_resamples=2000)
    assert [(r["dataset"], r["model"]) for r in out] == [("D1", "better"), ("D1", "same"), ("D2", "better"),
                                                         ("D2", "same")]
    by = {(r["dataset"], r["model"]): r for r in out}
    values = {(r["model"], r["dataset"], r["case"]): r["dice"] for r in rows}
    for (dataset, model), r in by.items():
        cases = [f"c{i:02d}" for i in range(14)]
        pairs = [(values[(model, dataset, c)], values[("base", dataset, c)]) for c in cases
                 if (model, dataset, c) in values and not math.isnan(values[(model, dataset, c)])]
        d = np.array([a - b for a, b in pairs])
        assert r["n_pairs"] == d.size
        assert r["mean_diff"] == pytest.approx(d.mean())
        assert r["p"] == pytest.approx(sps.wilcoxon(d).pvalue)  # no ties: exact distribution
        assert r["wilcoxon_method"] == "exact"
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(bootstrap_ci(d, 2000))
        assert r["rank_biserial"] == pytest.approx(rank_biserial(d))
        assert r["cohens_dz"] == pytest.approx(cohens_dz(d))
    assert by[("D1", "same")]["n_pairs"] == 12
    assert by[("D1", "same")]["n_dropped"] == 1 and by[("D1", "same")]["n_baseline_only"] == 1
    # Holm within each dataset (two comparisons): hand formula
    for dataset in ("D1", "D2"):
        p1, p2 = by[(dataset, "better")]["p"], by[(dataset, "same")]["p"]
        small, large = sorted([p1, p2])
        expected = {small: min(1, 2 * small), large: max(min(1, 2 * small), min(1, large))}
        assert by[(dataset, "better")]["p_holm"] == pytest.approx(expected[p1])
        assert by[(dataset, "same")]["p_holm"] == pytest.approx(expected[p2])
        assert by[(dataset, "better")]["mark"] == "+" and by[(dataset, "better")]["significant"]
    # lower-is-better flips the mark; family="all" adjusts over the four comparisons
    flipped = paired_tests(rows, "base", "dice", higher_is_better=False, family="all", n_resamples=200)
    assert {r["mark"] for r in flipped if r["model"] == "better"} == {"-"}
    assert [r["p_holm"] for r in flipped] == pytest.approx(list(holm([r["p"] for r in flipped])))
    # the same table from a CSV file
    csv_path = tmp_path / "tidy.csv"
    csv_path.write_text("model,dataset,case,dice\n" + "".join(
        f"{r['model']},{r['dataset']},{r['case']},{r['dice']!r}\n" for r in rows))
    from_csv = paired_tests(csv_path, "base", "dice", n_resamples=2000)
    assert [r["p"] for r in from_csv] == pytest.approx([r["p"] for r in out], nan_ok=True)


def test_paired_tests_ties_infinities_and_errors():
    rows = []
    for i, (a, b) in enumerate([(1.0, 2.0), (3.0, 3.0), (2.0, 1.0), (5.0, 3.0), (math.inf, 4.0), (7.0, 4.0),
                                (6.0, 4.0)]):
        rows += [{"model": "m", "dataset": "d", "case": f"c{i}", "hd95": a},
                 {"model": "base", "dataset": "d", "case": f"c{i}", "hd95": b}]
    (r,) = paired_tests(rows, "base", "hd95", higher_is_better=False, n_resamples=500)
    d = np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 2.0])  # the infinite pair is dropped
    assert r["n_pairs"] == 6 and r["n_dropped"] == 1
    # ties and a zero: permutation over 2^5 sign flips, i.e. exact enumeration, as scipy's "auto"
    assert r["wilcoxon_method"].startswith("exact")
    assert r["p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        paired_tests(rows, "nope", "hd95")
    with pytest.raises(KeyError, match="no column 'dice'"):
        paired_tests(rows, "base", "dice")


def test_load_table_errors(tmp_path):
    with pytest.raises(ValueError, match="already appears"):
        load_table([{"model": "a", "dataset": "d", "case": "c", "dice": 1},
                    {"model": "a", "dataset": "d", "case": "c", "dice": 0.5}])
    bad = tmp_path / "bad.csv"
    bad.write_text("model,case,dice\na,c,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['dataset'\]"):
        load_table(bad)
    with pytest.raises(ValueError, match="is not a number"):
        summarize([{"model": "a", "dataset": "d", "case": "c", "dice": "oops"}], "dice")


def test_summarize():
    rows = [{"model": "a", "dataset": "d", "case": f"c{i}", "dice": v}
            for i, v in enumerate([0.5, 0.7, math.nan, 0.9, 0.8])]
    (s,) = summarize(rows, "dice", n_resamples=1000)
    assert s["n"] == 4 and s["n_nan"] == 1
    assert s["mean"] == pytest.approx(0.725) and s["median"] == pytest.approx(0.75)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(bootstrap_ci([0.5, 0.7, 0.9, 0.8], 1000))


# ------------------------------------------------------------------------------ Friedman / Nemenyi

# Demšar (2006), Table 5a: critical values q_alpha of the two-tailed Nemenyi test, k = 2..10.
# The table's third decimal is sometimes truncated rather than rounded (k=3: 2.3437 -> 2.343),
# hence the tolerance of one unit in the last printed digit.
DEMSAR_Q = {
    0.05: [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164],
    0.10: [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920],
}


@pytest.mark.parametrize("alpha", [0.05, 0.10])
def test_q_alpha_matches_demsar_table(alpha):
    for k, expected in zip(range(2, 11), DEMSAR_Q[alpha]):
        assert nemenyi_q_alpha(k, alpha) == pytest.approx(expected, abs=1e-3), k
    assert round(nemenyi_q_alpha(6, 0.05), 3) == 2.850


# 4 models x 5 datasets, higher is better. Ranks per dataset (1 = best):
#   d1: A1 B2 C3 D4 | d2: B1 A2 D3 C4 | d3: A1 C2 B3 D4 | d4: B1 A2 D3 C4 | d5: A1 B2 C3 D4
# average ranks: A 7/5 = 1.4, B 9/5 = 1.8, C 16/5 = 3.2, D 18/5 = 3.6
# Friedman (Demšar eq.): 12N/(k(k+1)) * (sum R^2 - k(k+1)^2/4) = 3 * (1.96+3.24+10.24+12.96 - 25) = 10.2
# Iman-Davenport: (N-1) chi2 / (N(k-1) - chi2) = 4 * 10.2 / (15 - 10.2) = 8.5, df (3, 12)
# CD = 2.569 * sqrt(4 * 5 / (6 * 5)) = 2.0976: A-D (2.2) differ, A-C and B-D (1.8) do not
SCORES = np.array([[0.90, 0.85, 0.80, 0.70, 0.95],
                   [0.88, 0.86, 0.75, 0.72, 0.90],
                   [0.80, 0.70, 0.78, 0.60, 0.85],
                   [0.70, 0.72, 0.60, 0.65, 0.80]])


def test_friedman_nemenyi_hand_example():
    result = friedman_nemenyi(SCORES, models=list("ABCD"))
    assert result["average_ranks"] == pytest.approx({"A": 1.4, "B": 1.8, "C": 3.2, "D": 3.6})
    assert result["friedman_chi2"] == pytest.approx(10.2)
    assert result["friedman_p"] == pytest.approx(sps.chi2.sf(10.2, 3))
    assert result["iman_davenport_f"] == pytest.approx(8.5)
    assert result["iman_davenport_p"] == pytest.approx(sps.f.sf(8.5, 3, 12))
    assert result["cd"] == pytest.approx(2.569 * math.sqrt(20 / 30), abs=1e-3)
    assert result["cd"] == pytest.approx(critical_difference(4, 5))
    significant = np.array(result["significant"])
    assert significant[0, 3] and significant[3, 0]
    assert not significant[0, 2] and not significant[1, 3] and not significant[0, 1]
    # p equals alpha exactly at a rank gap of CD (the test and the diagram agree)
    gap_p = sps.studentized_range.sf(result["cd"] / math.sqrt(20 / 30) * math.sqrt(2), 4, np.inf)
    assert gap_p == pytest.approx(0.05)
    # lower-is-better reverses the ranks
    reverse = friedman_nemenyi(SCORES, models=list("ABCD"), higher_is_better=False)
    assert reverse["average_ranks"]["A"] == pytest.approx(5 - 1.4)
    # ties are averaged, and scipy's tie-corrected statistic is used
    tied = friedman_nemenyi({"A": {"x": 1, "y": 2}, "B": {"x": 1, "y": 1}, "C": {"x": 0, "y": 3}})
    assert tied["ranks"][0][0] == 1.5 and tied["ranks"][1][0] == 1.5


@pytest.mark.reference
def test_nemenyi_p_equals_scikit_posthocs():
    sp = require_module("scikit_posthocs", "pip install -e '.[dev]'")
    result = friedman_nemenyi(SCORES, models=list("ABCD"))
    # scikit-posthocs ranks ascending within blocks (rows = blocks); rank differences are
    # symmetric, so the p-values agree whichever direction is "best".
    reference = sp.posthoc_nemenyi_friedman(SCORES.T).to_numpy()
    assert np.array(result["nemenyi_p"]) == pytest.approx(reference, abs=1e-12)


def test_friedman_errors_and_score_matrix():
    with pytest.raises(ValueError, match="at least 3 models"):
        friedman_nemenyi(SCORES[:2])
    with pytest.raises(ValueError, match="at least 2 datasets"):
        friedman_nemenyi(SCORES[:, :1])
    rows = [{"model": m, "dataset": d, "case": c, "dice": v}
            for m, d, c, v in [("a", "x", "1", 0.5), ("a", "x", "2", 0.7), ("a", "y", "1", 0.9),
                               ("b", "x", "1", 0.4), ("b", "y", "1", math.nan), ("b", "y", "2", 0.6)]]
    models, datasets, matrix = score_matrix(rows, "dice")
    assert models == ["a", "b"] and datasets == ["x", "y"]
    assert matrix == pytest.approx(np.array([[0.6, 0.9], [0.4, 0.6]]))
    with pytest.raises(ValueError, match=r"\('b', 'z'\)"):
        score_matrix(rows + [{"model": "a", "dataset": "z", "case": "1", "dice": 0.1}], "dice")


# ------------------------------------------------------------------------------ CD diagram


def test_cd_groups_and_diagram(tmp_path):
    ranks = {"A": 1.4, "B": 1.8, "C": 3.2, "D": 3.6}
    # CD 2.0976: from A the run reaches C (1.8), not D (2.2); from B it reaches D (1.8)
    assert cd_groups(ranks, 2.0976) == [["A", "B", "C"], ["B", "C", "D"]]
    assert cd_groups(ranks, 0.3) == []
    assert cd_groups(ranks, 0.4) == [["A", "B"], ["C", "D"]]
    assert cd_groups(ranks, 5.0) == [["A", "B", "C", "D"]]
    written = cd_diagram(ranks, 2.0976, tmp_path / "out" / "cd", title="Dice, 5 datasets")
    assert [p.name for p in written] == ["cd.png", "cd.svg"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = written[1].read_text()
    assert "<svg" in svg
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cd.png", "cd.svg"]  # no temporaries


# ------------------------------------------------------------------------------ U-Score


def test_u_score_ubench_worked_example():
    # U-Net on BUSI, the example values of U-Bench's calculator: IoU 0.6557507, 34.527041 M params,
    # 65.522368512 GFLOPs, 137.05495085406875 FPS; anchors: BUSI IoU 0.5837592 .. 0.7062627,
    # ln params 0.39 .. 4.32, ln GFLOPs 0.88 .. 4.20, FPS 24.28 .. 121.63.
    #   a = (0.6557507 - 0.5837592) / (0.7062627 - 0.5837592) = 0.0719915 / 0.1225035 = 0.587669
    #   p = (4.32 - ln 34.527041) / (4.32 - 0.39) = (4.32 - 3.541709) / 3.93 = 0.198030
    #   g = (4.20 - ln 65.522369) / 3.32 = (4.20 - 4.182391) / 3.32 = 0.005304 -> floor 0.05
    #   s = (137.05 - 24.28) / 97.35 = 1.158 -> clipped to 1
    #   E = 3 / (1/0.198030 + 1/0.05 + 1/1) = 3 / (5.049740 + 20 + 1) = 0.115164
    #   U = 2 / (1/0.587669 + 1/0.115164) = 2 / (1.701638 + 8.683250) = 0.192588  (U-Bench: 19.26)
    parts = u_score_components(0.6557507, 34.527041, 65.522368512, 137.05495085406875, UBENCH_ANCHORS["busi"])
    assert parts["accuracy"] == pytest.approx(0.587669, abs=1e-6)
    assert parts["params"] == pytest.approx(0.198030, abs=1e-6)
    assert parts["flops"] == 0.05 and parts["speed"] == 1.0
    assert parts["efficiency"] == pytest.approx(0.115164, abs=1e-6)
    assert parts["u_score"] == pytest.approx(0.192588, abs=1e-6)
    assert round(100 * parts["u_score"], 2) == 19.26
    # vectorized: the same model at twice the IoU range's top scores higher
    scores = u_score(np.array([0.6557507, 0.75]), 34.527041, 65.522368512, 137.0, UBENCH_ANCHORS["busi"])
    assert scores.shape == (2,) and scores[1] > scores[0]


def _suite():
    # 3 models on one dataset "ds" (2 cases each), efficiency on e-powers so the logs are integers.
    e = math.e
    spec = {"M1": ([0.55, 0.65], e, e ** 2, 10.0),   # mean IoU 0.60, ln params 1, ln GFLOPs 2
            "M2": ([0.65, 0.75], e ** 2, e ** 3, 50.0),  # mean IoU 0.70, ln 2, ln 3
            "M3": ([0.75, 0.85], e ** 3, e ** 4, 100.0)}  # mean IoU 0.80, ln 3, ln 4
    return [{"model": m, "dataset": "ds", "case": f"c{i}", "iou": iou, "params_m": p, "gflops": g, "fps": f}
            for m, (ious, p, g, f) in spec.items() for i, iou in enumerate(ious)]


def test_anchors_from_suite_and_u_score_by_hand():
    # numpy's linear percentiles of 3 sorted values v0 <= v1 <= v2: P10 = v0 + 0.2 (v1 - v0),
    # P90 = v1 + 0.8 (v2 - v1). IoU 0.6, 0.7, 0.8 -> 0.62, 0.78; ln params 1, 2, 3 -> 1.2, 2.8;
    # ln GFLOPs 2, 3, 4 -> 2.2, 3.8; FPS 10, 50, 100 -> 18, 90.
    anchors = anchors_from_suite(_suite())
    a = anchors["ds"]
    assert (a.iou_p10, a.iou_p90) == pytest.approx((0.62, 0.78))
    assert (a.log_params_p10, a.log_params_p90) == pytest.approx((1.2, 2.8))
    assert (a.log_gflops_p10, a.log_gflops_p90) == pytest.approx((2.2, 3.8))
    assert (a.fps_p10, a.fps_p90) == pytest.approx((18.0, 90.0))
    table = {r["model"]: r for r in u_score_table(_suite())}
    # M2: a = 0.08/0.16 = 0.5; p = 0.8/1.6 = 0.5; g = 0.8/1.6 = 0.5; s = 32/72 = 0.444444
    #     E = 3 / (2 + 2 + 2.25) = 0.48; U = 2 / (2 + 1/0.48) = 2 / 4.083333 = 0.489796
    assert table["M2"]["efficiency"] == pytest.approx(0.48)
    assert table["M2"]["u_score"] == pytest.approx(0.489796, abs=1e-6)
    # M1: a < 0 -> floor 0.05; p, g clip to 1; s < 0 -> 0.05; E = 3 / 22; U = 2 / (20 + 22/3) = 0.073171
    assert table["M1"]["u_score"] == pytest.approx(2 / (20 + 22 / 3))
    # M3: a = 1; p = (2.8 - 3)/1.6 -> 0.05; g -> 0.05; s = 1; E = 3 / 41; U = 2 / (1 + 41/3) = 0.136364
    assert table["M3"]["u_score"] == pytest.approx(2 / (1 + 41 / 3))
    with pytest.raises(KeyError, match="no U-Score anchors for dataset 'ds'"):
        u_score_table(_suite(), anchors=UBENCH_ANCHORS)
    with pytest.raises(ValueError, match="at least 2 models"):
        anchors_from_suite([r for r in _suite() if r["model"] == "M1"])


# ------------------------------------------------------------------ verdicts that cannot mislead

def _catastrophe_table() -> list[dict]:
    """Issue 12, item 1: 'model' beats 'base' on 11 of 12 cases and fails badly on one.

    Differences model - base: +0.010, +0.011, ..., +0.020 (11 cases) and -0.375 (case c11).
    """
    rows = []
    for i in range(12):
        base = 0.70 + 0.01 * i
        diff = -0.375 if i == 11 else 0.010 + 0.001 * i
        rows += [{"model": "base", "dataset": "D", "case": f"c{i:02d}", "dice": base},
                 {"model": "model", "dataset": "D", "case": f"c{i:02d}", "dice": base + diff}]
    return rows


def test_direction_of_a_significant_difference_comes_from_the_signed_ranks():
    # Worked by hand. |d| ranks: the 11 small gains get ranks 1..11, the loss of 0.375 rank 12.
    # T+ = 1 + ... + 11 = 66, T- = 12, T+ + T- = 78: rank-biserial r = (66 - 12) / 78 = +0.692.
    # Exact two-sided p = 2 * #{subsets of {1..12} with rank sum <= 12} / 2^12. Subsets by sum
    # (partitions into distinct parts): sum 0..12 -> 1,1,1,2,2,3,4,5,6,8,10,12,15 = 70, so
    # p = 140 / 4096 = 0.0342 < 0.05 (one comparison: Holm leaves it).
    # Mean difference = (0.010 + ... + 0.020 - 0.375) / 12 = (11 * 0.015 - 0.375) / 12 = -0.0175;
    # median: sorted, the 6th and 7th of 12 are 0.014 and 0.015, so +0.0145. The test says "higher on most cases": better.
    rows = _catastrophe_table()
    (r,) = paired_tests(rows, "base", "dice", n_resamples=500)
    d = np.array([0.010 + 0.001 * i for i in range(11)] + [-0.375])
    assert (r["t_plus"], r["t_minus"]) == (66.0, 12.0)
    assert r["wilcoxon_statistic"] == 12.0
    assert r["p"] == pytest.approx(140 / 4096) and r["p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert r["rank_biserial"] == pytest.approx(54 / 78)
    assert r["mean_diff"] == pytest.approx(-0.0175)
    assert r["median_diff"] == pytest.approx(0.0145)
    assert r["direction"] == "higher" and r["significant"] and r["mark"] == "+"
    # Lower-is-better reads the same signed ranks the other way round.
    (flipped,) = paired_tests(rows, "base", "dice", higher_is_better=False, n_resamples=200)
    assert flipped["mark"] == "-"
