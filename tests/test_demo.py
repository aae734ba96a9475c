"""The README's first command: `unetkit demo` runs every stage and ends with a report.

A small version (6 cases, 2 test cases, 2 iterations per training) so that it fits the default
suite; the full demo is the same code with larger numbers.
"""

from __future__ import annotations

import csv
import json


def test_demo_runs_the_whole_way_and_writes_the_report(tmp_path, capsys) -> None:
    from unetkit.cli import main

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--cases", "6", "--test-cases", "2", "--epochs", "1",
                 "--iterations", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "test Dice on 2 held-out cases" in printed
    # Prediction and evaluation of the held-out cases.
    summary = json.loads((out / "work" / "DemoBlobs" / "predictions" / "3d_fullres__plain_unet" / "summary.json")
                         .read_text())
    assert summary["num_cases"] == 2
    # The benchmark's tidy table: two models x two test cases, and the report beside it.
    with open(out / "bench" / "table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({r["model"] for r in rows}) == ["attention_unet", "plain_unet"] and len(rows) == 4
    html = (out / "bench" / "report" / "report.html").read_text()
    assert "attention_unet" in html and "plain_unet" in html and "http://" not in html
