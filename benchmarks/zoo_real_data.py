"""Every registered model trained for a few iterations on real data through ``unetkit train`` (issue 17).

The generic model tests (tests/test_models.py) run each model's tiny configuration on random
tensors; this benchmark runs the *default* (paper) configuration through the command a user types,
on a real dataset, and prints one row per model: dims, parameters, GFLOPs per sample at the
default patch of ``unetkit models``, the paper's figure, wall seconds, mean train loss, and the
outcome (``ok``, ``failed`` with the last error line, or ``timeout``).

A model that supports 3D trains on the 3D dataset (Hippocampus, 3d_fullres, patch 40x56x40 in
the shared plan), a 2D-only model on the 2D dataset (ISBI 2012, 2d, patch 320x256). The work
folder must hold planned and preprocessed datasets::

    unetkit import ../shared/datasets/ISBI2012_EM W/ISBI_raw ...   # see README "Import"
    unetkit plan W/ISBI_raw --workdir W/work --device cpu && unetkit preprocess W/ISBI_raw --workdir W/work
    python benchmarks/zoo_real_data.py --workdir W/work --raw-2d W/ISBI_raw --raw-3d W/Hippo_raw \\
        [--names unet medt ...] [--iterations 1] [--timeout 900] [--json out.json]

Runs are sequential, each in its own process with its own model folder
(``models/CONFIG__NAME/fold_0``); a folder that already holds a finished run is reused unless
``--rerun``. On 2 CPU cores most models take 10-60 s; the largest (STU-Net H, Perspective+ at its
published width) exceed the machine's memory or the timeout and are reported as such.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def train_command(raw: Path, workdir: Path, config: str, name: str, iterations: int) -> list[str]:
    return [sys.executable, "-m", "unetkit", "train", str(raw), "-c", config, "-f", "0", "--workdir", str(workdir),
            "--arch", name, "--epochs", "1", "--iterations-per-epoch", str(iterations), "--val-iterations", "1",
            "--batch-size", "2", "--no-validation", "--device", "cpu", "--num-workers", "0", "--quiet"]


def run_one(name: str, dims: int, raw: Path, workdir: Path, args) -> dict:
    """Train ``name`` once; returns the row (outcome, wall seconds, losses)."""
    config = "3d_fullres" if dims == 3 else "2d"
    fold = workdir / raw.name / "models" / f"{config}__{name}" / "fold_0"
    row = {"name": name, "dims": dims, "dataset": raw.name, "configuration": config}
    if args.rerun or not (fold / "checkpoint_final.json").is_file():
        shutil.rmtree(fold, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            done = subprocess.run(train_command(raw, workdir, config, name, args.iterations), check=False,
                                  capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return {**row, "outcome": "timeout", "wall_seconds": args.timeout}
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            return {**row, "outcome": "failed", "error": lines[-1][:200] if lines else f"exit {done.returncode}"}
    progress = json.loads((fold / "progress.json").read_text())
    history = progress["history"]
    row.update(outcome="ok", train_loss=history["train_loss"][-1], val_loss=history["val_loss"][-1],
               seconds_per_iteration=progress.get("timing", {}).get("median_seconds_per_iteration"),
               trained_at=time.strftime("%Y-%m-%d %H:%M", time.gmtime(history["timestamp"][-1])))
    return row


def add_catalog_columns(row: dict) -> dict:
    from unetkit.models.catalog import catalog_row
    from unetkit.models.profile import model_size

    info = catalog_row(row["name"])
    patch = (96, 96, 96) if row["dims"] == 3 else (224, 224)
    size = model_size(row["name"], row["dims"], patch, in_channels=1, num_classes=2)
    return {**row, "params": size["params"], "gflops": size["flops"] / 1e9, "gflops_patch": list(patch),
            "paper_params": info.paper_params}


def table(rows: list[dict]) -> str:
    header = ("| model | dims | dataset | params | GFLOPs (patch) | paper figure | s / iteration | train loss | "
              "trained at (UTC) | outcome |")
    out = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = f"{r['paper_params'] / 1e6:.3f}M" if r.get("paper_params") else "-"
        loss = f"{r['train_loss']:.4f}" if r.get("train_loss") is not None else "-"
        patch = "x".join(str(p) for p in r["gflops_patch"])
        outcome = r["outcome"] + (f": {r['error']}" if r.get("error") else "")
        step = f"{r['seconds_per_iteration']:.1f}" if r.get("seconds_per_iteration") else "-"
        out.append(f"| {r['name']} | {r['dims']}D | {r['dataset']} | {r['params'] / 1e6:.2f}M | {r['gflops']:.1f} "
                   f"({patch}) | {paper} | {step} | {loss} | {r.get('trained_at', '-')} | {outcome} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--raw-2d", type=Path, required=True, help="raw 2D dataset (planned and preprocessed, 2d)")
    parser.add_argument("--raw-3d", type=Path, help="raw 3D dataset (3d_fullres); without it 3D-only models are skipped")
    parser.add_argument("--names", nargs="+", help="models to run (default: every registered name)")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--rerun", action="store_true", help="train again where a finished run exists")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from unetkit.models import list_models, model_info

    rows = []
    for name in args.names or list_models():
        dims_supported = model_info(name).spatial_dims
        dims = 3 if 3 in dims_supported and args.raw_3d else 2
        if dims not in dims_supported:
            print(f"{name}: 3D only and no --raw-3d; skipped", flush=True)
            continue
        row = add_catalog_columns(run_one(name, dims, args.raw_3d if dims == 3 else args.raw_2d, args.workdir, args))
        rows.append(row)
        print(f"{name}: {row['outcome']} {row.get('wall_seconds', '-')} s", flush=True)
    print(table(rows))
    print(f"\ncommand: python {' '.join(sys.argv)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    failed = [r["name"] for r in rows if r["outcome"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
