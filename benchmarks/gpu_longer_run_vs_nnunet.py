"""Both tools on one GPU at equal epochs: Hippocampus fold 0, nnU-Net's plan and batch, AMP (issue 14).

Meant for a short lease of a GPU machine with neither tool's data prepared: from an nnU-Net-format
raw dataset (the training cases) and a held-out test folder (``images/``, ``labels/``), it plans and
preprocesses with both tools, writes nnU-Net's 3d_fullres network, patch and batch into unetkit's
plan, trains both **at the same time** on the one GPU (fold 0, ``--epochs`` x 250 iterations,
50 validation batches per epoch, each tool with half the CPU cores for data loading), predicts the
test cases with both (mirroring) and scores both with ``unetkit evaluate``. A run cut short by
``--train-seconds`` is predicted from its latest checkpoint and reported with the epochs it
finished. Prints a table and writes ``--out/gpu_run.json``::

    python benchmarks/gpu_longer_run_vs_nnunet.py --raw RAW/Dataset908_Hippocampus --test TEST \\
        --epochs 10 --out OUT

nnU-Net runs in this interpreter (``nnunetv2`` importable, no console scripts needed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_speed_vs_nnunet import TRAINER_TEMPLATE, nnunet_arch_into_unetkit

from unetkit.utils.atomic import atomic_write_json

TRAINER = "nnUNetTrainer_UnetkitGpuRun"
CONFIG = "3d_fullres"


def nnunet(entry: str, *args: str) -> list[str]:
    module, function = entry.split(":")
    code = f"import sys; from {module} import {function} as f; sys.argv = ['nnunet', *sys.argv[1:]]; sys.exit(f())"
    return [sys.executable, "-c", code, *args]


def unetkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "unetkit", *args]


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, check=True)
    return round(time.perf_counter() - t0, 1)


def prepare(args, work: Path, env: dict) -> None:
    """Both tools' plans and caches; nnU-Net's network, patch and batch written into unetkit's plan."""
    dataset_id = args.raw.name[len("Dataset"):len("Dataset") + 3]
    n = str(os.cpu_count() or 2)
    run(nnunet("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_and_preprocess_entry",
               "-d", dataset_id, "-c", CONFIG, "-np", n, "-npfp", n), work / "nnunet_plan.log", env)
    nn_plans = json.loads((work / "nn_pre" / args.raw.name / "nnUNetPlans.json").read_text())
    shared = nnunet_arch_into_unetkit(nn_plans["configurations"][CONFIG])
    run(unetkit("plan", str(args.raw), "--workdir", str(work / "uk"), "--num-processes", n, "--quiet"),
        work / "unetkit_plan.log")
    plans_path = work / "uk" / args.raw.name / "plans.json"
    plans = json.loads(plans_path.read_text())
    plans["configurations"][CONFIG].update(shared)
    plans_path.write_text(json.dumps(plans, indent=2))
    run(unetkit("preprocess", str(args.raw), "--workdir", str(work / "uk"), "-c", CONFIG, "--num-processes", n,
                "--no-progress"), work / "unetkit_preprocess.log")


def trainer_text(epochs: int) -> str:
    """nnU-Net's trainer for this run: ``epochs`` x 250 iterations, 50 validation batches, and a
    checkpoint every epoch (a run cut short is predicted from its latest one)."""
    text = TRAINER_TEMPLATE.format(name=TRAINER, epochs=epochs, iterations=250, val_iterations=50)
    return text.replace("self.num_val_iterations_per_epoch = 50",
                        "self.num_val_iterations_per_epoch = 50\n        self.save_every = 1")


def train_both(args, work: Path, env: dict) -> dict:
    """Both trainings at once on the GPU; each stopped at ``--train-seconds`` if still running."""
    half = str(max(1, (os.cpu_count() or 2) // 2 - 1))
    cmds = {"nnunet": (nnunet("nnunetv2.run.run_training:run_training_entry", args.raw.name[7:10], CONFIG, "0",
                              "-tr", TRAINER), {**env, "nnUNet_n_proc_DA": half}),
            "unetkit": (unetkit("train", args.raw.name, "-c", CONFIG, "-f", "0", "--workdir", str(work / "uk"),
                                "--epochs", str(args.epochs), "--iterations-per-epoch", "250", "--val-iterations",
                                "50", "--device", "cuda", "--num-workers", half, "--no-validation", "--quiet"), None)}
    out, t0 = {}, time.perf_counter()
    with contextlib.ExitStack() as stack:
        procs = {tool: subprocess.Popen(cmd, stdout=stack.enter_context(open(work / f"{tool}_train.log", "w")),
                                        stderr=subprocess.STDOUT, env=tool_env)
                 for tool, (cmd, tool_env) in cmds.items()}
        for tool, proc in procs.items():
            try:
                proc.wait(timeout=max(1.0, args.train_seconds - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out[tool] = {"returncode": proc.returncode, "wall_seconds": round(time.perf_counter() - t0, 1)}
    return out


def predict_and_score(args, work: Path, env: dict, trained: dict) -> None:
    nn_fold = work / "nn_results" / args.raw.name / f"{TRAINER}__nnUNetPlans__{CONFIG}" / "fold_0"
    uk_fold = work / "uk" / args.raw.name / "models" / f"{CONFIG}__plain_unet" / "fold_0"
    nn_ck = "checkpoint_final.pth" if (nn_fold / "checkpoint_final.pth").is_file() else "checkpoint_latest.pth"
    uk_ck = "final" if (uk_fold / "checkpoint_final.json").is_file() else "latest"
    jobs = {"nnunet": (nnunet("nnunetv2.inference.predict_from_raw_data:predict_entry_point_modelfolder",
                              "-i", str(args.test / "images"), "-o", str(work / "pred_nnunet"), "-m",
                              str(nn_fold.parent), "-f", "0", "-chk", nn_ck, "--disable_progress_bar"), env),
            "unetkit": (unetkit("predict", "-i", str(args.test / "images"), "-o", str(work / "pred_unetkit"), "-m",
                                str(uk_fold), "--checkpoint", uk_ck, "--device", "cuda", "--quiet"), None)}
    for tool, (cmd, tool_env) in jobs.items():
        trained[tool]["checkpoint"] = nn_ck if tool == "nnunet" else uk_ck
        try:  # one tool's failure must not lose the other's result
            trained[tool]["predict_seconds"] = run(cmd, work / f"{tool}_predict.log", tool_env)
            run(unetkit("evaluate", str(work / f"pred_{tool}"), str(args.test / "labels"), "-l", "1", "2", "-o",
                        str(work / f"eval_{tool}"), "--quiet"), work / f"{tool}_eval.log")
        except subprocess.CalledProcessError as exc:
            trained[tool]["error"] = str(exc)
            continue
        summary = json.loads((work / f"eval_{tool}" / "summary.json").read_text())
        trained[tool]["test_dice"] = [summary["mean"][k]["Dice"] for k in ("1", "2")]
    timing = nn_fold / "unetkit_bench_timing.json"
    if timing.is_file():
        steps = json.loads(timing.read_text())["step_seconds"]
        trained["nnunet"]["epochs_done"] = len(steps) // 250
        trained["nnunet"]["seconds_per_iteration_median"] = sorted(steps)[len(steps) // 2]
    progress = uk_fold / "progress.json"
    if progress.is_file():
        p = json.loads(progress.read_text())
        trained["unetkit"]["epochs_done"] = len(p["history"]["pseudo_dice"])
        trained["unetkit"]["seconds_per_iteration_median"] = p.get("timing", {}).get("median_seconds_per_iteration")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True, help="nnU-Net-format raw dataset (DatasetXXX_Name)")
    parser.add_argument("--test", type=Path, required=True, help="folder with images/ and labels/")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-seconds", type=float, default=330, help="stop both trainings after this long")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.raw, args.test = args.raw.resolve(), args.test.resolve()
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "nnUNet_raw": str(args.raw.parent), "nnUNet_preprocessed": str(work / "nn_pre"),
           "nnUNet_results": str(work / "nn_results"), "nnUNet_compile": "false"}
    import nnunetv2

    t0 = time.perf_counter()
    prepare(args, work, env)
    prepared = round(time.perf_counter() - t0, 1)
    # The trainer class must sit in nnU-Net's package (it finds trainers there by name) while it trains
    # and predicts; it is removed afterwards.
    trainer_file = Path(nnunetv2.__file__).parent / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    trainer_file.write_text(trainer_text(args.epochs))
    try:
        trained = train_both(args, work, env)
        predict_and_score(args, work, env, trained)
    finally:
        trainer_file.unlink(missing_ok=True)
    result = {"epochs": args.epochs, "iterations_per_epoch": 250, "prepare_seconds": prepared, **trained}
    atomic_write_json(args.out / "gpu_run.json", result)
    print("| tool | epochs done | test Dice anterior / posterior | s/iteration (median) | train wall s | checkpoint |")
    print("|---|---|---|---|---|---|")
    for tool in ("unetkit", "nnunet"):
        r = trained[tool]
        dice = " / ".join(f"{d:.3f}" for d in r.get("test_dice", []))
        print(f"| {tool} | {r.get('epochs_done')} | {dice} | {r.get('seconds_per_iteration_median')} | "
              f"{r['wall_seconds']} | {r.get('checkpoint')} |")
    print(f"command: python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
