#!/usr/bin/env python
"""Time unetkit's plan + preprocess against nnU-Net v2's ``nnUNetv2_plan_and_preprocess``.

Both tools get the same Hippocampus cases (the stems present in both ``images/`` and
``labels/``), linked into nnU-Net's raw layout in a temporary folder, the same number of
processes and the same configurations, in one run. Each tool runs as its own command line
(start-up and imports included on both sides), one after the other, with its outputs in fresh
temporary folders. The script prints both wall times, the ratio, the two plans side by side
(spacing, patch size, batch size, number of stages) and the exact commands it ran.

Usage::

    python benchmarks/plan_preprocess_vs_nnunet.py [--data ../shared/datasets/Hippocampus]
        [--num-processes 8] [--nnunet-venv .venv-nnunet] [--configurations 2d 3d_fullres]
        [--max-cases N] [--keep]

The nnU-Net environment is made by ``benchmarks/setup_nnunet_venv.sh``. This is a benchmark,
not a test: run it on a quiet machine; timings from a shared machine mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "Hippocampus"
DATASET_ID = 904  # an id unlikely to clash with a user's own nnU-Net datasets (folder is temporary anyway)
LABELS = {"background": 0, "Anterior": 1, "Posterior": 2}


def build_raw(source: Path, raw_root: Path, max_cases: int | None = None) -> Path:
    """Link the paired Hippocampus stems into ``raw_root/Dataset904_Hippocampus`` (nnU-Net v2 layout).

    Returns the dataset folder. Files are symlinks, so nothing is copied.
    """
    images_dir, labels_dir = source / "TrainingSet" / "images", source / "TrainingSet" / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise SystemExit(f"error: {source} does not hold TrainingSet/images and TrainingSet/labels")
    ending = ".nii.gz"
    stems = sorted({p.name[: -len(ending)] for p in images_dir.glob(f"*{ending}")}
                   & {p.name[: -len(ending)] for p in labels_dir.glob(f"*{ending}")})
    if max_cases:
        stems = stems[:max_cases]
    ds = raw_root / f"Dataset{DATASET_ID:03d}_Hippocampus"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for stem in stems:
        os.symlink((images_dir / f"{stem}{ending}").resolve(), ds / "imagesTr" / f"{stem}_0000{ending}")
        os.symlink((labels_dir / f"{stem}{ending}").resolve(), ds / "labelsTr" / f"{stem}{ending}")
    (ds / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "channel_names": {"0": "MRI"}, "labels": LABELS,
        "numTraining": len(stems), "file_ending": ending}, indent=2))
    return ds


def run(cmd: list[str], env: dict | None = None, log: Path | None = None) -> float:
    """Run ``cmd`` and return its wall time (s); stop the benchmark with its output if it fails.

    Shared by every benchmark script here (they import it from this module).
    """
    print(f"$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if log is not None:
        log.write_text(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:])
        raise SystemExit(f"error: command failed with exit code {proc.returncode}: {shlex.join(cmd)}")
    return seconds


def unetkit_cli(*args: str) -> list[str]:
    """``unetkit ARGS`` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-c", "import sys; from unetkit.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def plan_summary_unetkit(plans: dict, config: str) -> dict:
    c = plans["configurations"].get(config)
    if c is None:
        return {}
    kw = (c.get("architecture") or {}).get("kwargs") or {}
    return {"spacing": c.get("spacing"), "patch": c.get("patch_size"), "batch": c.get("batch_size"),
            "stages": kw.get("n_stages"), "norm": c.get("normalization_schemes")}


def plan_summary_nnunet(plans: dict, config: str) -> dict:
    c = plans["configurations"].get(config)
    if c is None:
        return {}
    arch = (c.get("architecture") or {}).get("arch_kwargs") or {}
    return {"spacing": c.get("spacing"), "patch": c.get("patch_size"), "batch": c.get("batch_size"),
            "stages": arch.get("n_stages"), "norm": c.get("normalization_schemes")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Hippocampus folder (TrainingSet/...)")
    parser.add_argument("--num-processes", "-np", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--nnunet-venv", type=Path, default=REPO / ".venv-nnunet")
    parser.add_argument("--configurations", "-c", nargs="+", default=["2d", "3d_fullres"])
    parser.add_argument("--max-cases", type=int, default=None, help="only the first N paired cases (smoke runs)")
    parser.add_argument("--only", choices=["unetkit", "nnunet"], default=None, help="run one side only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders and print where")
    args = parser.parse_args(argv)

    nnunet_cli = args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"
    if args.only != "unetkit" and not nnunet_cli.exists():
        raise SystemExit(f"error: {nnunet_cli} not found; create it with `bash benchmarks/setup_nnunet_venv.sh "
                         f"{args.nnunet_venv}` (or pass --only unetkit)")
    tmp = Path(tempfile.mkdtemp(prefix="unetkit_bench_"))
    try:
        raw_root = tmp / "raw"
        raw = build_raw(args.data, raw_root, args.max_cases)
        n_cases = len(list((raw / "labelsTr").iterdir()))
        n = str(args.num_processes)
        rows: dict[str, dict] = {}
        commands: dict[str, list[str]] = {}

        if args.only != "nnunet":
            work = tmp / "unetkit_work"
            unetkit = [sys.executable, "-c", "import sys; from unetkit.cli import main; sys.exit(main())"]
            plan_cmd = [*unetkit, "plan", str(raw), "--workdir", str(work)]
            help_text = subprocess.run([*unetkit, "plan", "--help"], capture_output=True, text=True).stdout
            if "--num-processes" in help_text:
                plan_cmd += ["--num-processes", n]
            prep_cmd = [*unetkit, "preprocess", str(raw), "--workdir", str(work), "--num-processes", n,
                        "--no-progress", "-c", *args.configurations]
            t_plan = run(plan_cmd, log=tmp / "unetkit_plan.log")
            t_prep = run(prep_cmd, log=tmp / "unetkit_preprocess.log")
            rows["unetkit"] = {"seconds": t_plan + t_prep, "plan_s": t_plan, "preprocess_s": t_prep,
                               "plans": json.loads((work / raw.name / "plans.json").read_text())}
            commands["unetkit"] = [shlex.join(plan_cmd), shlex.join(prep_cmd)]

        if args.only != "unetkit":
            env = dict(os.environ, nnUNet_raw=str(raw_root), nnUNet_preprocessed=str(tmp / "nnunet_preprocessed"),
                       nnUNet_results=str(tmp / "nnunet_results"), nnUNet_compile="f")
            cmd = [str(nnunet_cli), "-d", str(DATASET_ID), "-np", *([n] * len(args.configurations)),
                   "-npfp", n, "-c", *args.configurations]
            t = run(cmd, env=env, log=tmp / "nnunet.log")
            plans_path = tmp / "nnunet_preprocessed" / raw.name / "nnUNetPlans.json"
            rows["nnunet"] = {"seconds": t, "plans": json.loads(plans_path.read_text())}
            commands["nnunet"] = ["env " + " ".join(f"{k}={env[k]}" for k in
                                                    ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
                                  + " " + shlex.join(cmd)]

        print(f"\nHippocampus: {n_cases} cases, {n} process(es), configurations {' '.join(args.configurations)}, "
              f"{os.cpu_count()} CPU(s) visible")
        print(f"{'tool':<10} {'wall s':>9}")
        for tool, row in rows.items():
            extra = (f"   (plan {row['plan_s']:.1f} s + preprocess {row['preprocess_s']:.1f} s)"
                     if "plan_s" in row else "")
            print(f"{tool:<10} {row['seconds']:>9.1f}{extra}")
        if len(rows) == 2:
            ratio = rows["nnunet"]["seconds"] / rows["unetkit"]["seconds"]
            print(f"speed-up (nnU-Net time / unetkit time): {ratio:.2f}x  (goal: >= 3x)")

        print("\nplans side by side")
        print(f"{'config':<11} {'field':<8} {'unetkit':<34} {'nnU-Net':<34}")
        for cfg in args.configurations:
            u = plan_summary_unetkit(rows["unetkit"]["plans"], cfg) if "unetkit" in rows else {}
            v = plan_summary_nnunet(rows["nnunet"]["plans"], cfg) if "nnunet" in rows else {}
            for field in ("spacing", "patch", "batch", "stages", "norm"):
                print(f"{cfg:<11} {field:<8} {str(u.get(field, '-')):<34} {str(v.get(field, '-')):<34}")

        print("\ncommands")
        for tool, cmds in commands.items():
            for c in cmds:
                print(f"  [{tool}] {c}")
        print(f"  [this]   {shlex.join([sys.executable, *sys.argv])}")
        if args.keep:
            print(f"\noutputs kept in {tmp}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
