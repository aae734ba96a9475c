"""Lay out a report :class:`~unetkit.benchmark.report.Analysis` as HTML and Markdown.

The HTML file is self-contained: inline CSS, figures as base64 PNG, a few lines of plain JS to
sort tables by a header click, nothing fetched from anywhere. Every user-provided string goes
through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .report import Analysis, metric_label
from .report_data import to_float
from .report_figures import distribution_figure, load_overlay, overlay_figure, pareto_figure

COSTS = (("gflops", "GFLOPs per forward pass of one patch"), ("params_m", "parameters (millions)"),
         ("latency_ms", "latency per patch (ms)"))
ERROR_LINES = 40  # lines of error.txt shown per failed run (its end: where the error is)


# ---------------------------------------------------------------------------- numbers

def fmt(value: Any, digits: int = 3) -> str:
    """A number for a reader: n/a for NaN/missing, the infinity sign for inf."""
    number = to_float(value)
    if math.isnan(number):
        return "n/a"
    if math.isinf(number):
        return "\u221e" if number > 0 else "-\u221e"
    return f"{number:.{digits}f}"


def fmt_signed(value: Any, digits: int = 3) -> str:
    """Like :func:`fmt` with an explicit + on non-negative numbers (differences)."""
    number = to_float(value)
    text = fmt(number, digits)
    return "+" + text if number >= 0 else text  # False for NaN


def fmt_ci(mean: Any, low: Any, high: Any, digits: int = 3, signed: bool = False) -> str:
    show = fmt_signed if signed else fmt
    text = show(mean, digits)
    if math.isfinite(to_float(low)) and math.isfinite(to_float(high)):
        text += f" [{show(low, digits)}, {show(high, digits)}]"
    return text


def fmt_p(value: Any) -> str:
    p = to_float(value)
    if math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_equals(value: Any) -> str:
    """'p = 0.023' or 'p < 0.001', for sentences."""
    text = fmt_p(value)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def fmt_cost(value: Any) -> str:
    """Efficiency numbers: 3 significant digits, whatever the scale."""
    number = to_float(value)
    if not math.isfinite(number):
        return fmt(number)
    return f"{number:.3g}" if abs(number) < 1000 else f"{number:,.0f}"


def _hd95_text(row: dict[str, Any]) -> str:
    """Mean HD95 with misses at their penalty; with misses, the finite-only mean and their count."""
    text = fmt(row.get("hd95_mean", row.get("hd95_mean_finite")), 1)
    missed = row.get("hd95_n_inf") or 0
    return text + (f" (finite-only {fmt(row.get('hd95_mean_finite'), 1)}, {missed} missed)" if missed else "")


def _mark_text(mark: str, note: str = "") -> str:
    if mark == "" and note:
        return f"not marked: {note}"
    return {"+": "+ better", "-": "- worse", "baseline": "baseline"}.get(mark, "n.s." if mark == "" else "")


def _empty_line(analysis: Analysis, dataset: str) -> str:
    """How many test cases of a dataset have an empty reference, and how they are scored."""
    if analysis.empty_references is None:
        return "Cases with an empty reference: unknown (table.csv predates the column; see Conventions)."
    empty, total = analysis.empty_references.get(dataset, (0, 0))
    return (f"{empty} of {total} test cases have an empty reference (for at least one label); both empty "
            "scores 1, a prediction there scores 0.")


def _paired_sentence(analysis: Analysis) -> str:
    """Which test, which Holm family, the minimum of pairs and why: stated once per report."""
    if not analysis.baseline:
        return analysis.baseline_reason
    return (f"against {analysis.baseline} ({analysis.baseline_reason}): two-sided Wilcoxon signed-rank over the "
            f"cases both have; Holm corrects over the family of one dataset's comparisons with the baseline "
            f"(m = models - 1, shown per row), alpha = {analysis.alpha:g}; the verdict's direction is the side "
            f"the signed ranks lean to (rank-biserial r), which is what the test tested, so it can differ from "
            f"the sign of the mean difference when one case dominates the mean; significance is marked only "
            f"with at least {analysis.min_pairs} pairs, since below 6 pairs the exact test cannot reach "
            f"p < 0.05 and below {analysis.min_pairs} one case decides the verdict")


# ---------------------------------------------------------------------------- figures

def report_figures(analysis: Analysis, cd_png: Path | None, overlays: bool = True) -> dict[str, Any]:
    """PNG bytes of every figure (or a sentence saying why one is absent)."""
    metric = analysis.metric
    label = metric_label(metric)
    figures: dict[str, Any] = {"cd": cd_png.read_bytes() if cd_png is not None else None}
    datasets = [d for d in analysis.datasets if any(r["status"] == "done" for r in analysis.leaderboard[d])]
    figures["pareto"] = {}
    figures["distributions"] = None
    if datasets:
        for cost, cost_label in COSTS:
            panels = []
            for dataset in datasets:
                points = [(r["model"], to_float(r.get(cost)), r[f"{metric}_mean"])
                          for r in analysis.leaderboard[dataset] if r["status"] == "done"]
                panels.append((dataset, points))
            title = f"latency measured on {analysis.machine}" if cost == "latency_ms" else None
            if any(math.isfinite(c) for _, points in panels for _, c, _ in points):
                figures["pareto"][cost] = pareto_figure(panels, cost_label, f"mean {label}",
                                                        analysis.higher_is_better, title)
        per_case: dict[tuple[str, str], list[float]] = {}
        for row in analysis.results.table:
            per_case.setdefault((row["model"], row["dataset"]), []).append(to_float(row.get(metric)))
        panels = [(dataset, [(r["model"], per_case[(r["model"], dataset)])
                             for r in analysis.leaderboard[dataset] if r["status"] == "done"]) for dataset in datasets]
        figures["distributions"] = distribution_figure(panels, label, seed=analysis.seed)
    figures["overlays"] = _overlays(analysis, datasets) if overlays else {}
    return figures


def _overlays(analysis: Analysis, datasets: Sequence[str]) -> dict[str, bytes | str]:
    """Per dataset, the best and worst case of the top-ranked model (bytes, or why not)."""
    cases = analysis.results.cases
    metric = analysis.metric
    out: dict[str, bytes | str] = {}
    for dataset in datasets:
        if cases is None:
            out[dataset] = "cases.csv is absent, so the image files are unknown."
            continue
        top = analysis.leaderboard[dataset][0]["model"]
        rows = [r for r in analysis.results.table if r["model"] == top and r["dataset"] == dataset
                and math.isfinite(to_float(r.get(metric)))]
        if not rows:
            out[dataset] = f"{top} has no case with a finite {metric} on {dataset}."
            continue
        rows.sort(key=lambda r: to_float(r[metric]), reverse=analysis.higher_is_better)
        picks = [("best", rows[0])] + ([("worst", rows[-1])] if len(rows) > 1 else [])
        panels = []
        for which, row in picks:
            title = f"{which} case of {top}: {row['case']} ({metric_label(metric)} {fmt(row[metric])})"
            files = _case_files(cases, row, analysis.results.root)
            if files is None:
                panels.append((title, "no row for this case in cases.csv"))
                continue
            try:
                panels.append((title, load_overlay(files[0], files[1], files[2], row["case"])))
            except Exception as exc:  # a missing or odd image file must not sink the whole report
                panels.append((title, f"cannot show this case: {exc}"))
        out[dataset] = overlay_figure(panels)
    return out


def _case_files(cases: list[dict[str, str]], row: dict[str, Any], root: Path) -> tuple[list[Path], Path, Path] | None:
    """(image paths, reference, prediction) of a table row, from the first matching cases.csv
    row: the same run when table.csv names it, else the same model, dataset and case of an
    in-domain run (cases.csv also holds zero-shot runs on the same target cases). Paths are
    absolute by contract; a relative one is taken relative to the results folder."""
    def where(text: str) -> Path:
        return Path(text) if Path(text).is_absolute() else root / text

    run_id = row.get("run_id")
    for entry in cases:
        if run_id:
            if entry["run_id"] != run_id or entry["case"] != row["case"]:
                continue
        elif (entry["model"], entry["dataset"], entry["case"]) != (row["model"], row["dataset"], row["case"]) or \
                "__on__" in entry["run_id"]:
            continue
        images = [where(p) for p in entry["image_path"].split(";") if p]
        return images, where(entry["reference_path"]), where(entry["prediction_path"])
    return None


# ---------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1280px;
padding:0 24px 48px;color:#1d1d1f;line-height:1.45;font-size:15px}
h1{margin:24px 0 4px;font-size:26px} h2{margin-top:36px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin-top:24px} nav{background:#f5f5f7;padding:8px 12px;border-radius:6px;margin:12px 0}
nav a{margin-right:14px;color:#0b5cad;text-decoration:none} nav a:hover{text-decoration:underline}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}
th,td{border:1px solid #d8d8dc;padding:4px 8px;vertical-align:top}
th{background:#f0f0f3;text-align:left;position:sticky;top:0}
table.sortable th{cursor:pointer} table.sortable th:hover{background:#e2e2e8}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fff1f0;color:#a8071a} tr.top td{background:#f0f9eb}
.better{color:#237804;font-weight:600} .worse{color:#a8071a;font-weight:600} .ns{color:#888}
.meta td:first-child{font-weight:600;white-space:nowrap} .note{color:#555;font-size:13px}
.absent{background:#fffbe6;border:1px solid #ffe58f;padding:8px 12px;border-radius:4px}
img.figure{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px;max-height:320px}
details{margin:4px 0} code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""

# Click a header to sort by it (numbers by data-v, else text; NaN and missing cells last).
_JS = """
(function () {
  function key(row, index) {
    var cell = row.cells[index];
    if (!cell || row.cells.length <= index) { return null; }
    var v = cell.getAttribute("data-v");
    if (v === null) { return cell.textContent.trim().toLowerCase(); }
    var number = parseFloat(v);
    return isNaN(number) ? null : number;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var up = th.getAttribute("data-dir") !== "up";
        rows.sort(function (a, b) {
          var x = key(a, th.cellIndex), y = key(b, th.cellIndex);
          if (x === null) { return y === null ? 0 : 1; }
          if (y === null) { return -1; }
          return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
        });
        th.setAttribute("data-dir", up ? "up" : "down");
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(text: str, value: Any = None, title: str | None = None, css: str = "num") -> str:
    """A table cell; ``value`` (a number) is what sorting uses."""
    attributes = f' class="{css}"'
    if value is not None:
        number = to_float(value)
        attributes += f' data-v="{"NaN" if math.isnan(number) else number!r}"'.replace("inf", "Infinity")
    if title:
        attributes += f' title="{_e(title)}"'
    return f"<td{attributes}>{_e(text)}</td>"


def _img(data: bytes, alt: str, element_id: str | None = None) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    identifier = f' id="{_e(element_id)}"' if element_id else ""
    return f'<img class="figure"{identifier} alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _table(headers: Sequence[str], rows: Sequence[str], css: str = "sortable", element_id: str | None = None) -> str:
    identifier = f' id="{_e(element_id)}"' if element_id else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (f'<table class="{css}"{identifier}><thead><tr>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _leaderboard_html(analysis: Analysis, dataset: str) -> str:
    metric = analysis.metric
    label = metric_label(metric)
    rows = analysis.leaderboard[dataset]
    if not rows:
        return '<p class="absent">No runs on this dataset.</p>'
    headers = ["rank", "model", f"{label} [{analysis.confidence:.0%} CI]", "IoU", "HD95 (mm)", "NSD", "n",
               f"\u0394 {label} vs {analysis.baseline or 'baseline'}: mean [CI]", "\u0394 median", "pairs",
               "p (Holm)", "r (rank-biserial)", "d_z", "vs baseline", "params (M)", "GFLOPs", "latency (ms)",
               "U-Score"]
    body = []
    for row in rows:
        if row["status"] != "done":
            body.append(f'<tr class="failed"><td></td><td>{_e(row["model"])}</td>'
                        f'<td colspan="{len(headers) - 2}">{_e(row["status"])}: {_e(row.get("error") or "no error text")}'
                        " (see Failed runs)</td></tr>")
            continue
        n_text = str(row["n"]) + (f" (+{row['n_nan']} n/a)" if row["n_nan"] else "") + \
            (f" (+{row['n_inf']} \u221e)" if row["n_inf"] else "")
        mark = row.get("mark", "")
        mark_css = {"+": "num better", "-": "num worse"}.get(mark, "num ns")
        cells = [
            _num(str(row["rank"]), row["rank"]),
            f"<td>{_e(row['model'])}</td>",
            _num(fmt_ci(row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]),
                 row[f"{metric}_mean"]),
            _num(fmt(row.get("iou_mean", row.get(f"{metric}_mean") if metric == "iou" else math.nan)),
                 row.get("iou_mean")),
            _num(_hd95_text(row), row.get("hd95_mean", row.get("hd95_mean_finite")),
                 "mean HD95 with a missed structure counted at the declared penalty (see Conventions); "
                 "finite-only: the mean over cases where the structure was found; missed: their number"),
            _num(fmt(row.get("nsd_mean", row.get(f"{metric}_mean") if metric == "nsd" else math.nan)),
                 row.get("nsd_mean")),
            _num(n_text, row["n"], "cases with a finite value (+ left out as undefined / infinite)"),
            _num(fmt_ci(row.get("delta_mean"), row.get("delta_ci_low"), row.get("delta_ci_high"), signed=True)
                 if "delta_mean" in row else "", row.get("delta_mean")),
            _num(fmt_signed(row.get("delta_median")) if "delta_median" in row else "", row.get("delta_median")),
            _num(str(row["n_pairs"]) if "n_pairs" in row else "", row.get("n_pairs"),
                 "cases where both the model and the baseline have a finite value"),
            _num(fmt_p(row.get("p_holm")) if "p_holm" in row else "", row.get("p_holm"),
                 f"Wilcoxon signed-rank p {fmt_p(row.get('p_wilcoxon'))}, Holm-adjusted over the "
                 f"{row.get('holm_family_size', '?')} comparisons with the baseline on this dataset"),
            _num(fmt(row.get("rank_biserial"), 2) if "rank_biserial" in row else "", row.get("rank_biserial")),
            _num(fmt(row.get("cohens_dz"), 2) if "cohens_dz" in row else "", row.get("cohens_dz")),
            f'<td class="{mark_css}">{_e(_mark_text(mark, row.get("test_note", "")) if "p_holm" in row or mark else "")}</td>',
            _num(fmt_cost(row.get("params_m")), row.get("params_m")),
            _num(fmt_cost(row.get("gflops")), row.get("gflops")),
            _num(fmt_cost(row.get("latency_ms")), row.get("latency_ms")),
            _num(fmt(row.get("u_score")), row.get("u_score")),
        ]
        css = ' class="top"' if row["rank"] == 1 else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return _table(headers, body, element_id=f"leaderboard-{dataset}")


def _overall_html(analysis: Analysis, figures: dict[str, Any]) -> str:
    overall = analysis.overall
    label = metric_label(analysis.metric)
    parts = []
    if not overall["available"]:
        parts.append(f'<p class="absent" id="cd-absent">{_e(overall["reason"])}</p>')
    else:
        models, datasets = overall["models"], overall["datasets"]
        ranks = np.asarray(overall["ranks"])
        scores = np.asarray(overall["scores"])
        order = sorted(range(len(models)), key=lambda i: overall["average_ranks"][models[i]])
        headers = ["model", "average rank", *[f"rank on {d}" for d in datasets], f"mean {label} over datasets",
                   "datasets won"]
        body = []
        for i in order:
            cells = [f"<td>{_e(models[i])}</td>", _num(fmt(overall["average_ranks"][models[i]], 2),
                                                       overall["average_ranks"][models[i]])]
            cells += [_num(fmt(r, 1), r) for r in ranks[i]]
            cells.append(_num(fmt(float(scores[i].mean())), float(scores[i].mean())))
            cells.append(_num(str(int(np.sum(ranks[i] == 1))), int(np.sum(ranks[i] == 1))))
            body.append(f"<tr>{''.join(cells)}</tr>")
        parts.append(_table(headers, body, element_id="overall-ranks"))
        parts.append(f"<p>{_e(_friedman_sentence(analysis))}</p>")
        if figures.get("cd") is not None:
            parts.append(_img(figures["cd"], f"critical-difference diagram of {label} ranks", "cd-diagram"))
            parts.append('<p class="note">Rank 1 (best) is on the left. ' + (
                "Models joined by a thick red bar are within the critical difference CD of each other: the "
                "Nemenyi test cannot tell them apart. Models sharing no bar differ significantly. "
                if overall["rejects"] else "The Friedman test did not reject, so no groups are drawn. ")
                + "The diagram says nothing about how large the differences are; read it with the "
                "leaderboards.</p>")
    if overall["excluded"]:
        listed = "; ".join(f"{model} ({why})" for model, why in overall["excluded"].items())
        parts.append(f'<p class="note">Not ranked across datasets, since Friedman\'s test needs every model on '
                     f"every dataset: {_e(listed)}.</p>")
    return "\n".join(parts)


def _friedman_sentence(analysis: Analysis) -> str:
    overall = analysis.overall
    if overall["test"] == "wilcoxon":
        test = overall["wilcoxon"]
        first, second = test["models"]
        text = (f"Two models: Wilcoxon signed-rank test over the {test['n']} datasets on their mean scores "
                f"(Demšar 2006; no Friedman test or critical difference for two models): T+ = {fmt(test['t_plus'], 1)}"
                f", T- = {fmt(test['t_minus'], 1)} for {first} - {second}, {p_equals(test['p'])}, alpha = "
                f"{analysis.alpha:g}. ")
        if test["significant"]:
            text += f"{test['better']} is significantly better across datasets."
        else:
            text += "No significant difference across datasets."
        if test["n"] < 6:
            text += f" With {test['n']} datasets p cannot fall below {2 / 2 ** test['n']:.3g}."
        return text
    text = (f"Friedman chi\u00b2 = {overall['friedman_chi2']:.2f} (df {overall['df_friedman']}), "
            f"{p_equals(overall['friedman_p'])}; Iman-Davenport F = {fmt(overall['iman_davenport_f'], 2)} "
            f"(df {overall['df_iman_davenport'][0]}, {overall['df_iman_davenport'][1]}), "
            f"{p_equals(overall['iman_davenport_p'])} (k = {overall['k']} models, N = {overall['n']} datasets, "
            f"alpha = {analysis.alpha:g}). ")
    if overall["rejects"]:
        text += (f"The average ranks differ more than chance explains, so Nemenyi's post-hoc test applies: "
                 f"Nemenyi CD = {overall['cd']:.3f}; the diagram shows which pairs differ.")
    else:
        text += ("No significant difference overall (Iman-Davenport p >= alpha): no post-hoc groups are drawn, "
                 "since Nemenyi's comparisons may only be read after the Friedman test rejects.")
    if overall["n"] < 5:
        text += f" With {overall['n']} datasets the test has little power."
    return text


def _zero_shot_html(analysis: Analysis) -> str:
    if not analysis.zero_shot:
        return f'<p class="absent">{_e(analysis.zero_shot_note)}</p>'
    label = metric_label(analysis.metric)
    headers = ["model", "trained on", "tested on", "n", f"zero-shot {label} [{analysis.confidence:.0%} CI]",
               f"in-domain {label} on target", "\u0394 (zero-shot - in-domain)", f"in-domain {label} on source"]
    body = []
    for row in analysis.zero_shot:
        body.append("<tr>" + "".join([
            f"<td>{_e(row['model'])}</td>", f"<td>{_e(row['source_dataset'])}</td>",
            f"<td>{_e(row['target_dataset'])}</td>", _num(str(row["n"]), row["n"]),
            _num(fmt_ci(row["mean"], row["ci_low"], row["ci_high"]), row["mean"]),
            _num(fmt(row["in_domain_target"]), row["in_domain_target"]),
            _num(fmt_signed(row["drop"]), row["drop"]),
            _num(fmt(row["in_domain_source"]), row["in_domain_source"])]) + "</tr>")
    return (_table(headers, body, element_id="zero-shot")
            + '<p class="note">Zero-shot: the model trained on the source dataset predicts the target\'s test '
              "cases without retraining. In-domain on target: the same architecture trained on the target "
              "(when the suite has that run).</p>")


def _error_text(analysis: Analysis, run_id: str) -> str | None:
    path = analysis.results.root / "runs" / run_id / "error.txt"
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return "\n".join(lines[-ERROR_LINES:])


def _failed_html(analysis: Analysis) -> str:
    if not analysis.failed:
        return "<p>Every run finished.</p>"
    headers = ["run", "kind", "model", "dataset", "status", "error"]
    body = []
    for run in analysis.failed:
        traceback = _error_text(analysis, run["run_id"])
        detail = (f"<details><summary>runs/{_e(run['run_id'])}/error.txt</summary><pre>{_e(traceback)}</pre>"
                  "</details>") if traceback else ""
        body.append(f'<tr class="failed"><td>{_e(run["run_id"])}</td><td>{_e(run.get("kind", ""))}</td>'
                    f'<td>{_e(run["model"])}</td><td>{_e(run["dataset"])}</td><td>{_e(run["status"])}</td>'
                    f'<td>{_e(run.get("error") or "no error text")}{detail}</td></tr>')
    return _table(headers, body, css="plain", element_id="failed-runs")


def _datasets_html(analysis: Analysis) -> str:
    info = analysis.results.datasets
    if not info:
        return '<p class="absent">datasets.json is absent.</p>'
    headers = ["dataset", "dims", "configuration", "channels", "labels", "cases", "test cases", "median shape",
               "median spacing"]
    body = []
    for name, entry in info.items():
        if not isinstance(entry, dict):
            continue
        labels = ", ".join(f"{k}={v}" for k, v in (entry.get("labels") or {}).items() if str(v) != "0")
        channels = ", ".join(str(v) for v in (entry.get("modality") or {}).values())
        body.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (
            name, entry.get("dims", ""), entry.get("configuration", ""), channels, labels, entry.get("num_cases", ""),
            entry.get("num_test_cases", ""), "x".join(str(s) for s in entry.get("median_shape") or []),
            "x".join(fmt_cost(s) for s in entry.get("median_spacing") or []))) + "</tr>")
    return _table(headers, body, css="plain", element_id="datasets")


def _meta_html(analysis: Analysis) -> str:
    meta = analysis.results.metadata
    rows = [("results", str(analysis.results.root)), ("suite", meta.get("suite", "")),
            ("efficiency measured on", analysis.machine + (f", {meta['memory_gb']} GB memory"
                                                            if meta.get("memory_gb") else "")),
            ("versions", f"unetkit {meta.get('unetkit', '?')}, torch {meta.get('torch', '?')}, "
                         f"python {meta.get('python', '?')}, {meta.get('platform', '')}"),
            ("run", f"{meta.get('started_at', '?')} to {meta.get('finished_at', '?')}"),
            ("command", meta.get("command", "")),
            ("ranked by", f"mean {metric_label(analysis.metric)} "
                          f"({'higher' if analysis.higher_is_better else 'lower'} is better)"),
            ("intervals", f"{analysis.confidence:.0%} percentile bootstrap over cases, "
                          f"{analysis.n_resamples} resamples, seed {analysis.seed}"),
            ("paired tests", _paired_sentence(analysis)),
            *(("convention", text) for text in analysis.conventions)]
    return ('<table class="meta plain">' + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
            + "</table>")


def render_html(analysis: Analysis, figures: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    label = metric_label(analysis.metric)
    title = f"unetkit benchmark report: {analysis.results.metadata.get('suite') or analysis.results.root.name}"
    sections = [("overall", "Overall ranking"), ("leaderboards", "Leaderboards"), ("pareto", "Accuracy vs cost"),
                ("distributions", "Per-case distributions"), ("overlays", "Examples"),
                ("zero-shot", "Zero-shot transfer"), ("failed", "Failed runs"), ("data", "Datasets"),
                ("reading", "How to read")]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">',  # no favicon request (a 404 in the console otherwise)
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_e(title)}</h1>", _meta_html(analysis),
           "<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in sections) + "</nav>"]
    for note in analysis.notes:
        out.append(f'<p class="absent">{_e(note)}</p>')

    out.append(f'<h2 id="overall">Overall ranking across datasets ({_e(label)})</h2>')
    out.append(_overall_html(analysis, figures))

    out.append('<h2 id="leaderboards">Leaderboards per dataset</h2>')
    out.append(f'<p class="note">Sorted by mean {_e(label)}; click a column header to sort. '
               f"\u0394 is the paired difference to the baseline over the cases both have (pairs): its mean with "
               f"the bootstrap interval, and its median; p is the Wilcoxon signed-rank test, Holm-adjusted over "
               f"the models compared with the baseline on the dataset; r is the matched-pairs rank-biserial "
               f"correlation (|r| 0.1 small, 0.3 medium, 0.5 large) and d_z the mean difference over the "
               f"standard deviation of the differences; + / - mark a significant improvement / deterioration in "
               f"the direction of the signed ranks (the sign of r), n.s. no significant difference; fewer than "
               f"{analysis.min_pairs} pairs are not marked. Params, GFLOPs (2 per "
               f"multiply-add, one patch) and latency (median forward time of one patch, batch 1) are those of "
               f"the network as trained on the dataset; latency measured on {_e(analysis.machine)}. "
               f"{_e(analysis.uscore_note)}</p>")
    for dataset in analysis.datasets:
        out.append(f"<h3>{_e(dataset)}</h3>")
        out.append(f'<p class="note">{_e(_empty_line(analysis, dataset))}</p>')
        out.append(_leaderboard_html(analysis, dataset))

    out.append('<h2 id="pareto">Accuracy vs cost</h2>')
    if figures["pareto"]:
        out.append(f'<p class="note">Mean {_e(label)} per dataset against each cost. Red diamonds joined by a step '
                   "line are the Pareto front: no other model is at least as accurate and at most as costly. "
                   f"Latency measured on {_e(analysis.machine)}.</p>")
        for cost, cost_label in COSTS:
            if cost in figures["pareto"]:
                out.append(f"<h3>{_e(label)} vs {_e(cost_label)}</h3>")
                out.append(_img(figures["pareto"][cost], f"{label} vs {cost_label}", f"pareto-{cost}"))
    else:
        out.append('<p class="absent">No efficiency numbers (params_m, gflops, latency_ms) in table.csv.</p>')

    out.append('<h2 id="distributions">Per-case distributions</h2>')
    if figures["distributions"] is not None:
        out.append('<p class="note">One point per test case; boxes span the quartiles, whiskers 1.5 IQR. '
                   "Models in leaderboard order.</p>")
        out.append(_img(figures["distributions"], f"per-case {label}", "distributions"))
    else:
        out.append('<p class="absent">No per-case results.</p>')

    out.append('<h2 id="overlays">Examples: best and worst case of the top model</h2>')
    if not figures["overlays"]:
        out.append('<p class="absent">Overlays were not drawn (no results, or turned off).</p>')
    for dataset, figure in figures["overlays"].items():
        out.append(f"<h3>{_e(dataset)}</h3>")
        if isinstance(figure, bytes):
            out.append(_img(figure, f"best and worst case on {dataset}", f"overlay-{dataset}"))
        else:
            out.append(f'<p class="absent">{_e(figure)}</p>')

    out.append('<h2 id="zero-shot">Zero-shot transfer</h2>')
    out.append(_zero_shot_html(analysis))
    out.append('<h2 id="failed">Failed runs</h2>')
    out.append(_failed_html(analysis))
    out.append('<h2 id="data">Datasets</h2>')
    out.append(_datasets_html(analysis))
    out.append('<h2 id="reading">How to read this report</h2>')
    out.append("<p>Intervals are about the population of cases a dataset represents (one trained model per "
               "run, so training randomness is not in them). A significant p with a tiny \u0394 is real but may "
               "not matter: judge the interval against the smallest difference that matters (often 0.01 Dice). "
               "Average ranks ignore how large the differences are. U-Scores made with different anchors are not "
               "comparable. Details: docs/report.md and docs/benchmark_statistics.md.</p>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- Markdown

def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(clean(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_leaderboard(analysis: Analysis, dataset: str) -> str:
    """One dataset's leaderboard as a Markdown table."""
    metric = analysis.metric
    rows = []
    for row in analysis.leaderboard[dataset]:
        if row["status"] != "done":
            rows.append(["", row["model"], f"**{row['status']}**: {row.get('error', '')}"] + [""] * 12)
            continue
        rows.append([str(row["rank"]), row["model"],
                     fmt_ci(row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]),
                     fmt(row.get("iou_mean")), _hd95_text(row), fmt(row.get("nsd_mean")), str(row["n"]),
                     fmt_ci(row.get("delta_mean"), row.get("delta_ci_low"), row.get("delta_ci_high"), signed=True)
                     if "delta_mean" in row else "",
                     fmt_signed(row.get("delta_median")) if "delta_median" in row else "",
                     str(row["n_pairs"]) if "n_pairs" in row else "",
                     fmt_p(row.get("p_holm")) if "p_holm" in row else "",
                     (f"r {fmt(row.get('rank_biserial'), 2)}, d_z {fmt(row.get('cohens_dz'), 2)}"
                      if "rank_biserial" in row else ""),
                     _mark_text(row.get("mark", ""), row.get("test_note", ""))
                     if "p_holm" in row or row.get("mark") else "",
                     f"{fmt_cost(row.get('params_m'))} M / {fmt_cost(row.get('gflops'))} GFLOPs / "
                     f"{fmt_cost(row.get('latency_ms'))} ms",
                     fmt(row.get("u_score"))])
    if not rows:
        return "No runs on this dataset."
    return _md_table(["rank", "model", f"{metric_label(metric)} [CI]", "IoU", "HD95 mm", "NSD", "n",
                      f"\u0394 vs {analysis.baseline or 'baseline'}: mean [CI]", "\u0394 median", "pairs",
                      "p (Holm)", "effect size", "vs baseline", "params / GFLOPs / latency", "U-Score"], rows)


def render_markdown(analysis: Analysis) -> str:
    """Leaderboards, paired tests, ranks, zero-shot and failed runs as Markdown."""
    metric = analysis.metric
    label = metric_label(metric)
    meta = analysis.results.metadata
    out = [f"# unetkit benchmark report: {meta.get('suite') or analysis.results.root.name}", "",
           f"- results: `{analysis.results.root}`",
           f"- efficiency measured on {analysis.machine}; latency = median forward time of one patch, batch 1",
           f"- ranked by mean {label}; {analysis.confidence:.0%} percentile bootstrap intervals over cases "
           f"({analysis.n_resamples} resamples, seed {analysis.seed})",
           "- paired tests: " + _paired_sentence(analysis),
           *(f"- convention: {text}" for text in analysis.conventions),
           f"- {analysis.uscore_note}", ""]
    out += [f"> {note}" for note in analysis.notes]

    out += ["## Overall ranking across datasets", ""]
    overall = analysis.overall
    if overall["available"]:
        models, datasets = overall["models"], overall["datasets"]
        ranks = np.asarray(overall["ranks"])
        order = sorted(range(len(models)), key=lambda i: overall["average_ranks"][models[i]])
        out.append(_md_table(["model", "average rank", *[f"rank {d}" for d in datasets]],
                             [[models[i], fmt(overall["average_ranks"][models[i]], 2),
                               *[fmt(r, 1) for r in ranks[i]]] for i in order]))
        out += ["", _friedman_sentence(analysis), ""]
        if overall["test"] == "friedman":
            out += [f"Critical-difference diagram: `cd_{metric}.png` / `cd_{metric}.svg` beside this file.", ""]
    else:
        out += [overall["reason"], ""]
    if overall["excluded"]:
        out += ["Not ranked across datasets (Friedman's test needs every model on every dataset): "
                + "; ".join(f"{model} ({why})" for model, why in overall["excluded"].items()), ""]

    for dataset in analysis.datasets:
        out += [f"## {dataset}", "", _empty_line(analysis, dataset), "", _md_leaderboard(analysis, dataset), ""]

    out += ["## Zero-shot transfer", ""]
    if analysis.zero_shot:
        out.append(_md_table(["model", "trained on", "tested on", "n", f"zero-shot {label} [CI]",
                              "in-domain on target", "\u0394"],
                             [[r["model"], r["source_dataset"], r["target_dataset"], str(r["n"]),
                               fmt_ci(r["mean"], r["ci_low"], r["ci_high"]), fmt(r["in_domain_target"]),
                               fmt_signed(r["drop"])] for r in analysis.zero_shot]))
    else:
        out.append(analysis.zero_shot_note)
    out += ["", "## Failed runs", ""]
    if analysis.failed:
        out.append(_md_table(["run", "model", "dataset", "status", "error"],
                             [[r["run_id"], r["model"], r["dataset"], r["status"], r.get("error") or ""]
                              for r in analysis.failed]))
    else:
        out.append("Every run finished.")
    out.append("")
    return "\n".join(out)


__all__ = ["render_html", "render_markdown", "report_figures", "fmt", "fmt_ci", "fmt_p"]
