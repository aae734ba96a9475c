#!/usr/bin/env python
"""Accuracy and prediction speed: unetkit against nnU-Net v2, each trained the same way on the same split.

For each dataset the script, on this machine,

1. builds one nnU-Net v2 raw dataset holding **only the training cases** (both tools plan,
   preprocess and train on it) and a separate test folder (images ``CASE_0000.ext`` and labels):
   - Hippocampus (3d_fullres): the 260 paired case names sorted; index % 5 == 4 is the 52-case
     test set, the other 208 train;
   - DRIVE (2d, 565x584 RGB): the 20 training pictures train, the 20 test pictures (with their
     1st_manual labels) test; label 1 = vessel;
   - ISBI 2012 (2d, 512x512 EM): training slices 0-23 train, 24-29 test; label 1 = membrane
     (black in the shared label images);
2. plans and preprocesses with nnU-Net (``nnUNetv2_plan_and_preprocess``) and with unetkit, and
   puts nnU-Net's network and patch into unetkit's plan; both train at batch ``--batch-size`` (2);
3. trains both for the same number of iterations (``--epochs`` x iterations per epoch, the same
   polynomial learning-rate schedule over the epochs, the same validation batches per epoch,
   which only pick ``checkpoint_best``) on all training cases (fold ``all`` in both tools, so the
   test cases are never seen); nnU-Net with a short trainer subclass (the one from
   ``train_speed_vs_nnunet.py``: set epochs/iterations, step timings to JSON, no final
   validation), unetkit with ``unetkit train -f all``;
4. predicts the test images with ``checkpoint_final`` of each (mirroring on, step 0.5, CPU),
   each twice: from scratch and again with ``--continue`` (every case skipped) to measure the
   start-up, so seconds per case = (full - start-up) / cases; the floor (network forward, batch 1,
   x tiles x mirror passes; the median of measurements before unetkit's, between the two tools'
   and after nnU-Net's predictions) is measured in the same run;
5. evaluates both tools' predictions with the same evaluator (``unetkit evaluate``, metrics in
   physical units) and prints one table per dataset: test Dice per label and mean for each, the
   difference in points, prediction seconds per case, the floor and the ratios, training seconds
   per iteration, the load average and the commands; then whether each goal is met.

Every seed of ``--seeds`` (default 0 1 2) is one run per tool in its own folder
``WORKDIR/KEY/seedS/``: unetkit trains with ``--seed S`` (and its default start, the best of
``--init-candidates`` 4 draws; ``--init-candidates 1`` gives nnU-Net's single draw); nnU-Net has no
seed option, so its run in that folder is an independent unseeded one. The data, the test folder and nnU-Net's preprocessing
are shared by the seeds. After the per-seed tables comes the seed table (issue 14): test Dice per
class and mean for every run, mean +- sd over the runs, and the take-off iteration of each run
(the end of the first epoch whose validation pseudo-Dice exceeds 0.5 for every class, read from
unetkit's progress.json and from nnU-Net's own logger), with two goals: unetkit's mean within one
sd of nnU-Net's or better, and no more runs without take-off than nnU-Net. Hippocampus defaults to
500 iterations as 50 epochs x 10 (about 30 minutes per seed for both tools on 2 CPU cores,
prediction included).

Phases (``--phase train|predict|all``) share ``--workdir``, so trained models are reused and the
prediction timing can be rerun on a quiet machine::

    python benchmarks/accuracy_vs_nnunet.py --datasets hippocampus --workdir /tmp/acc_bench/work   # 3 seeds
    python benchmarks/accuracy_vs_nnunet.py --datasets hippocampus --seeds 3 4   # two more seeds, same folder
    python benchmarks/accuracy_vs_nnunet.py --datasets hippocampus --phase report   # every seed so far
    python benchmarks/accuracy_vs_nnunet.py --datasets hippocampus --workdir W2 --reuse-nnunet-predictions
        # W2: a copy of W's seed folders without unetkit's models: unetkit retrained, nnU-Net's runs reused
    python benchmarks/accuracy_vs_nnunet.py --datasets isbi drive --iterations 50 --phase train
    python benchmarks/accuracy_vs_nnunet.py --datasets isbi drive --phase predict --json out.json
    python benchmarks/accuracy_vs_nnunet.py --datasets isbi --iterations 4 --max-test-cases 3   # smoke

Goals (issue 4): test Dice no worse than nnU-Net's at equal iterations (within 0.5 points);
prediction within 1.1x of the floor, beating nnU-Net; at least 2x faster than nnU-Net on the large
2D pictures (per seed). At a few hundred iterations a single run's Dice depends mostly on when
learning takes off, so only the seed table's means and spreads support a comparison; timings on
a shared machine are noisy (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_preprocess_vs_nnunet import run, unetkit_cli  # noqa: E402
from predict_speed_vs_nnunet import agreement, passes_per_case  # noqa: E402
from train_speed_vs_nnunet import (TRAINER_TEMPLATE, nnunet_arch_into_unetkit, nnunet_site_packages,  # noqa: E402
                                   summarize)

TRAINER_NAME = "nnUNetTrainer_UnetkitAccBench"

DATASETS = {
    # key: nnU-Net id, folder name, configuration, ending, label names, default iterations
    "hippocampus": {"id": 908, "name": "Hippocampus", "config": "3d_fullres", "ending": ".nii.gz",
                    "labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "iterations": 500, "epochs": 50},
    "drive": {"id": 909, "name": "DRIVE", "config": "2d", "ending": ".png",
              "labels": {"background": 0, "vessel": 1}, "iterations": 50, "epochs": 5},
    "isbi": {"id": 910, "name": "ISBI", "config": "2d", "ending": ".png",
             "labels": {"background": 0, "membrane": 1}, "iterations": 50, "epochs": 5},
}
TITLES = {"hippocampus": "Hippocampus", "drive": "DRIVE", "isbi": "ISBI 2012 EM"}


# ----------------------------------------------------------------------------- datasets

def _dataset_json(ds: Path, name: str, channels: dict, labels: dict, n: int, ending: str) -> None:
    (ds / "dataset.json").write_text(json.dumps({"name": name, "channel_names": channels, "labels": labels,
                                                 "numTraining": n, "file_ending": ending}, indent=2))


def build_hippocampus(ds: Path, test: Path, max_test: int | None) -> dict:
    src = SHARED / "Hippocampus" / "TrainingSet"
    ending = ".nii.gz"
    stems = sorted({p.name[: -len(ending)] for p in (src / "images").glob(f"*{ending}")}
                   & {p.name[: -len(ending)] for p in (src / "labels").glob(f"*{ending}")})
    train = [s for i, s in enumerate(stems) if i % 5 != 4]
    tests = [s for i, s in enumerate(stems) if i % 5 == 4][:max_test]
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for stem in train:
        os.symlink((src / "images" / f"{stem}{ending}").resolve(), ds / "imagesTr" / f"{stem}_0000{ending}")
        os.symlink((src / "labels" / f"{stem}{ending}").resolve(), ds / "labelsTr" / f"{stem}{ending}")
    _dataset_json(ds, "Hippocampus", {"0": "MRI"}, DATASETS["hippocampus"]["labels"], len(train), ending)
    (test / "images").mkdir(parents=True)
    (test / "labels").mkdir()
    for stem in tests:
        os.symlink((src / "images" / f"{stem}{ending}").resolve(), test / "images" / f"{stem}_0000{ending}")
        os.symlink((src / "labels" / f"{stem}{ending}").resolve(), test / "labels" / f"{stem}{ending}")
    return {"train": len(train), "test": len(tests), "total_paired": len(stems)}


def _pictures(ds: Path, test: Path, key: str, channels: dict, train: list, tests: list, foreground) -> dict:
    """PNG copies: training pairs into ``ds``, test pairs into ``test/images`` and ``test/labels``."""
    import numpy as np

    from unetkit.data.io import Geometry, read_image, read_label, write_image, write_label

    geometry = Geometry((1.0, 1.0))
    for folder, pairs, images, labels in ((ds, train, "imagesTr", "labelsTr"), (test, tests, "images", "labels")):
        (folder / images).mkdir(parents=True)
        (folder / labels).mkdir()
        for name, image_path, label_path in pairs:
            image, _ = read_image(image_path)
            label, _ = read_label(label_path)
            write_image(image, folder / images / f"{name}_0000.png", geometry)
            write_label(foreground(label).astype(np.uint8), folder / labels / f"{name}.png", geometry)
    _dataset_json(ds, DATASETS[key]["name"], channels, DATASETS[key]["labels"], len(train), ".png")
    return {"train": len(train), "test": len(tests)}


def build_drive(ds: Path, test: Path, max_test: int | None) -> dict:
    src = SHARED / "DRIVE"

    def pairs(split: str) -> list:
        out = []
        for p in sorted((src / split / "images").glob("*.tif")):
            number = p.name.split("_")[0]
            out.append((f"drive_{number}", p, src / split / "1st_manual" / f"{number}_manual1.gif"))
        return out

    return _pictures(ds, test, "drive", {"0": "R", "1": "G", "2": "B"}, pairs("training"), pairs("test")[:max_test],
                     lambda label: label > 0)


def build_isbi(ds: Path, test: Path, max_test: int | None) -> dict:
    src = SHARED / "ISBI2012_EM" / "train"
    slices = sorted((p for p in (src / "image").glob("*.png") if p.stem.isdigit()), key=lambda p: int(p.stem))
    pairs = [(f"isbi_{int(p.stem):02d}", p, src / "label" / p.name) for p in slices]
    train = [x for x, p in zip(pairs, slices) if int(p.stem) <= 23]
    tests = [x for x, p in zip(pairs, slices) if int(p.stem) >= 24][:max_test]
    # membranes are black (0) in the shared labels, cells white (255): label 1 = membrane
    return _pictures(ds, test, "isbi", {"0": "EM"}, train, tests, lambda label: label == 0)


BUILDERS = {"hippocampus": build_hippocampus, "drive": build_drive, "isbi": build_isbi}


# ----------------------------------------------------------------------------- layout

class Layout:
    """Everything of one dataset under ``WORKDIR/KEY/`` (kept between phases)."""

    def __init__(self, workdir: Path, key: str, seed: int):
        spec = DATASETS[key]
        self.key, self.spec, self.config, self.seed = key, spec, spec["config"], seed
        self.root = workdir / key
        self.folder = f"Dataset{spec['id']:03d}_{spec['name']}"
        self.raw_root = self.root / "raw"
        self.raw = self.raw_root / self.folder
        self.test = self.root / "test"
        self.nn_pre = self.root / "nn_pre"  # shared by every seed (nnU-Net's preprocessing has no randomness)
        # one folder per seed for everything trained or predicted: a seed's run never reuses another's
        self.run_root = self.root / f"seed{seed}"
        self.nn_results = self.run_root / "nn_results"
        self.nn_model = self.nn_results / self.folder / f"{TRAINER_NAME}__nnUNetPlans__{self.config}"
        self.uk_work = self.run_root / "uk"
        self.uk_model = self.uk_work / self.folder / "models" / f"{self.config}__plain_unet"
        self.train_json = self.run_root / "train_results.json"
        self.predict_json = self.run_root / "predict_results.json"

    def nn_env(self, workers: int) -> dict:
        return {**os.environ, "nnUNet_raw": str(self.raw_root), "nnUNet_preprocessed": str(self.nn_pre),
                "nnUNet_results": str(self.nn_results), "nnUNet_n_proc_DA": str(workers), "nnUNet_compile": "false"}

    def nn_env_text(self) -> str:
        return (f"env nnUNet_raw={self.raw_root} nnUNet_preprocessed={self.nn_pre} "
                f"nnUNet_results={self.nn_results} nnUNet_compile=false")


class NNUNetTrainerFile:
    """The short nnU-Net trainer, present in the venv's package while nnU-Net trains or predicts."""

    def __init__(self, nn_python: Path, epochs: int, iterations: int, val_iterations: int):
        self.path = nnunet_site_packages(nn_python) / "training" / "nnUNetTrainer" / f"{TRAINER_NAME}.py"
        self.text = TRAINER_TEMPLATE.format(name=TRAINER_NAME, epochs=epochs, iterations=iterations,
                                            val_iterations=val_iterations)

    def __enter__(self):
        self.path.write_text(self.text)
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def children_cpu() -> float:
    """CPU seconds (user + system) of every finished child process (and the descendants they waited for)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_run(cmd: list[str], env: dict | None = None, log: Path | None = None) -> tuple[float, float]:
    """``run`` returning (wall seconds, CPU seconds of the command and its processes).

    On a machine shared with other jobs the CPU time moves much less than the wall time: other
    processes lengthen the wall clock by taking turns on the cores, not the command's CPU seconds.
    """
    before = children_cpu()
    wall = run(cmd, env, log)
    return wall, children_cpu() - before


def forward_floor(model_dir: Path, repeats: int) -> dict:
    """The bare network forward (batch 1, eval, inference mode) of the trained fold_all network:
    median wall seconds and median CPU seconds of this process (all torch threads)."""
    import torch

    from unetkit.inference.predictor import load_configuration

    model = load_configuration(model_dir, ["all"], "final", "cpu")
    net = model.networks[0]
    x = torch.randn(1, model.in_channels, *model.patch_size)
    walls, cpus = [], []
    with torch.inference_mode():
        for _ in range(repeats + 2):
            t0, c0 = time.perf_counter(), time.process_time()
            net(x)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return {"wall": statistics.median(walls[2:]), "cpu": statistics.median(cpus[2:])}


# ----------------------------------------------------------------------------- phase: train

def take_off(pseudo_dice: list[list[float]], per_epoch: int, threshold: float = 0.5) -> int | None:
    """The training iteration at the end of the first epoch whose validation pseudo-Dice exceeds
    ``threshold`` for every class (issue 14's take-off), or None when no epoch does."""
    for epoch, per_class in enumerate(pseudo_dice):
        if per_class and all(value == value and value > threshold for value in per_class):  # NaN fails
            return (epoch + 1) * per_epoch
    return None


def prepare_data(lay: Layout, args, result: dict) -> None:
    """The train-only raw dataset and the test folder, built once per dataset (every seed shares them)."""
    if not (lay.raw / "dataset.json").is_file():
        shutil.rmtree(lay.root, ignore_errors=True)
        result["cases"] = BUILDERS[lay.key](lay.raw, lay.test, args.max_test_cases)
        (lay.root / "cases.json").write_text(json.dumps(result["cases"]))
    else:
        result["cases"] = json.loads((lay.root / "cases.json").read_text())


def plan_nnunet(lay: Layout, args, result: dict) -> dict:
    """nnU-Net's plan and preprocessing (once per dataset, shared by the seeds), its batch size set to
    ``--batch-size``; returns nnU-Net's network and patch in unetkit's plan format."""
    env = lay.nn_env(args.num_workers)
    n = str(args.num_processes)
    nn_plans_file = lay.nn_pre / lay.folder / "nnUNetPlans.json"
    cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(lay.spec["id"]),
           "-c", lay.config, "-np", n, "-npfp", n]
    result["commands"].append(f"{lay.nn_env_text()} {shlex.join(cmd)}")
    if not nn_plans_file.is_file():  # (a rerun reuses the plans and the preprocessed data)
        run(cmd, env, lay.root / "nnunet_plan_and_preprocess.log")
    nn_plans = json.loads(nn_plans_file.read_text())
    nn_cfg = nn_plans["configurations"][lay.config]
    result["nnunet_plan"] = {"batch_size_planned": nn_cfg.get("batch_size_planned", nn_cfg["batch_size"]),
                             "normalization": nn_cfg["normalization_schemes"], "spacing": nn_cfg["spacing"]}
    nn_cfg.setdefault("batch_size_planned", nn_cfg["batch_size"])
    nn_cfg["batch_size"] = args.batch_size
    nn_plans_file.write_text(json.dumps(nn_plans, indent=2))
    return nnunet_arch_into_unetkit(nn_cfg)


def plan_unetkit(lay: Layout, args, shared: dict | None, result: dict) -> None:
    """unetkit's plan and preprocessing in this seed's work folder, with nnU-Net's network, patch and
    batch written into it (``shared``; None: unetkit's own plan)."""
    n = str(args.num_processes)
    plans_path = lay.uk_work / lay.folder / "plans.json"
    args_plan = ["plan", str(lay.raw), "--workdir", str(lay.uk_work), "--num-processes", n, "--quiet"]
    result["commands"].append(shlex.join(["unetkit", *args_plan]))
    if not plans_path.is_file():
        run(unetkit_cli(*args_plan), None, lay.run_root / "unetkit_plan.log")
    plans = json.loads(plans_path.read_text())
    entry = plans["configurations"][lay.config]
    if shared is None:
        shared = {k: entry[k] for k in ("patch_size", "batch_dice", "architecture")}
    shared = {**shared, "batch_size": args.batch_size}
    entry.update(shared)
    plans_path.write_text(json.dumps(plans, indent=2))
    result["shared_setup"] = shared
    result["unetkit_plan"] = {"normalization": entry["normalization_schemes"], "spacing": entry["spacing"]}
    args_pre = ["preprocess", str(lay.raw), "--workdir", str(lay.uk_work), "-c", lay.config, "--num-processes", n,
                "--no-progress"]
    result["commands"].append(shlex.join(["unetkit", *args_pre]))
    run(unetkit_cli(*args_pre), None, lay.run_root / "unetkit_preprocess.log")


def train_nnunet(lay: Layout, args, nn_python: Path, schedule: tuple[int, int], previous: dict, result: dict) -> None:
    """nnU-Net on fold ``all`` (every training case; the test cases are not in the raw dataset).
    nnU-Net has no seed option: each seed folder holds one independent, unseeded run."""
    epochs, per_epoch = schedule
    cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_train"), str(lay.spec["id"]), lay.config, "all",
           "-tr", TRAINER_NAME, "-device", "cpu"]
    result["commands"].append(f"{lay.nn_env_text()} nnUNet_n_proc_DA={args.num_workers} {shlex.join(cmd)}")
    fold = lay.nn_model / "fold_all"
    if (fold / "checkpoint_final.pth").is_file() and "nnunet" in previous:
        result["nnunet"] = previous["nnunet"]
        print(f"nnU-Net: reusing {fold}/checkpoint_final.pth", flush=True)
        return
    shutil.rmtree(fold, ignore_errors=True)
    with NNUNetTrainerFile(nn_python, epochs, per_epoch, args.val_iterations):
        load = load_avg()
        wall = run(cmd, lay.nn_env(args.num_workers), lay.run_root / "nnunet_train.log")
    t = json.loads((fold / "unetkit_bench_timing.json").read_text())
    result["nnunet"] = {**summarize(t["step_seconds"], t["wait_seconds"]), "wall_seconds": wall,
                        "pseudo_dice": t["pseudo_dice"], "take_off": take_off(t["pseudo_dice"], per_epoch),
                        "load_average_before": load, "load_average_after": load_avg()}


def train_unetkit(lay: Layout, args, schedule: tuple[int, int], previous: dict, result: dict) -> None:
    """unetkit on fold ``all`` with ``--seed`` = this layout's seed."""
    epochs, per_epoch = schedule
    args_train = ["train", lay.folder, "-c", lay.config, "-f", "all", "--workdir", str(lay.uk_work),
                  "--epochs", str(epochs), "--iterations-per-epoch", str(per_epoch),
                  "--val-iterations", str(args.val_iterations), "--batch-size", str(args.batch_size),
                  "--seed", str(lay.seed), "--num-workers", str(args.num_workers), "--device", "cpu",
                  "--no-validation", "--quiet",
                  *(["--init-candidates", str(args.init_candidates)] if args.init_candidates else [])]
    result["commands"].append(shlex.join(["unetkit", *args_train]))
    fold = lay.uk_model / "fold_all"
    from unetkit.training.config import TrainingConfig

    candidates = args.init_candidates or TrainingConfig().init_candidates
    # A model trained before --init-candidates existed made the single draw.
    same_start = previous.get("unetkit", {}).get("init_candidates", 1) == candidates
    if (fold / "checkpoint_final.json").is_file() and "unetkit" in previous and same_start:
        result["unetkit"] = previous["unetkit"]
        print(f"unetkit: reusing {fold}/checkpoint_final", flush=True)
        return
    shutil.rmtree(fold, ignore_errors=True)
    load = load_avg()
    wall = run(unetkit_cli(*args_train), None, lay.run_root / "unetkit_train.log")
    progress = json.loads((fold / "progress.json").read_text())
    dice = progress["history"]["pseudo_dice"]
    started = json.loads((fold / "training_config.json").read_text())
    result["unetkit"] = {**progress["timing"], "wall_seconds": wall, "pseudo_dice": dice,
                         "take_off": take_off(dice, per_epoch), "load_average_before": load,
                         "load_average_after": load_avg(), "init_candidates": candidates,
                         "init_selection": started.get("init_selection")}


def phase_train(lay: Layout, args, nn_python: Path | None, this_command: str) -> dict:
    iterations = args.iterations or lay.spec["iterations"]
    epochs = min(args.epochs or lay.spec["epochs"], iterations)
    if iterations % epochs:
        raise SystemExit(f"error: --iterations {iterations} is not a multiple of --epochs {epochs}")
    per_epoch = iterations // epochs
    if args.retrain and lay.run_root.exists():
        shutil.rmtree(lay.run_root)
    previous = json.loads(lay.train_json.read_text()) if lay.train_json.is_file() else {}
    result: dict = {"dataset": lay.key, "configuration": lay.config, "seed": lay.seed, "iterations": iterations,
                    "epochs": epochs, "iterations_per_epoch": per_epoch, "val_iterations": args.val_iterations,
                    "batch_size": args.batch_size, "num_workers": args.num_workers,
                    "load_average_before": load_avg(), "command": this_command, "commands": []}
    if previous and any(previous.get(k) != result[k] for k in ("iterations", "epochs", "batch_size")):
        raise SystemExit(f"error: {lay.run_root} was trained with other settings ({previous.get('epochs')} x "
                         f"{previous.get('iterations_per_epoch')}, batch {previous.get('batch_size')}); "
                         "use another --workdir or --retrain")
    prepare_data(lay, args, result)
    lay.run_root.mkdir(parents=True, exist_ok=True)
    shared = plan_nnunet(lay, args, result) if nn_python is not None else None
    plan_unetkit(lay, args, shared, result)
    if nn_python is not None:
        train_nnunet(lay, args, nn_python, (epochs, per_epoch), previous, result)
        lay.train_json.write_text(json.dumps({**previous, **result}, indent=2))
    train_unetkit(lay, args, (epochs, per_epoch), previous, result)
    result["load_average_after"] = load_avg()
    lay.train_json.write_text(json.dumps({**previous, **result}, indent=2))
    return result


# ----------------------------------------------------------------------------- phase: predict

def dice_summary(summary_file: Path, labels: dict) -> dict:
    s = json.loads(summary_file.read_text())
    out = {}
    for name, value in labels.items():
        if value == 0:
            continue
        m = s["mean"][str(value)]
        out[name] = m["Dice"]
        out[f"{name} HD95"] = m.get("HD95")
    out["mean"] = s["foreground_mean"]["Dice"]
    out["cases"] = s["num_cases"]
    return out


def phase_predict(lay: Layout, args, nn_python: Path | None, threads: int, this_command: str) -> dict:
    if not lay.train_json.is_file():
        raise SystemExit(f"error: nothing trained in {lay.run_root}; run --phase train first")
    trained = json.loads(lay.train_json.read_text())
    inputs, gt = lay.test / "images", lay.test / "labels"
    n_cases = len(list(gt.iterdir()))
    result: dict = {"dataset": lay.key, "configuration": lay.config, "test_cases": n_cases, "threads": threads,
                    "load_average_before": load_avg(), "command": this_command, "commands": []}
    commands = result["commands"]
    ending = lay.spec["ending"]
    labels_arg = [str(v) for v in lay.spec["labels"].values() if v]

    floor_before = forward_floor(lay.uk_model, args.floor_repeats)

    # unetkit
    out_uk = lay.run_root / "pred_unetkit"
    shutil.rmtree(out_uk, ignore_errors=True)
    uk_args = ["predict", "-i", str(inputs), "-o", str(out_uk), "-m", str(lay.uk_model / "fold_all"),
               "--checkpoint", "final", "--device", "cpu", "--threads", str(threads), "--quiet"]
    commands.append(shlex.join(["unetkit", *uk_args]))
    load = load_avg()
    full, full_cpu = timed_run(unetkit_cli(*uk_args), None, lay.run_root / "unetkit_predict.log")
    startup, startup_cpu = timed_run(unetkit_cli(*uk_args, "--continue"))
    result["unetkit"] = {"wall": full, "startup": startup, "per_case": (full - startup) / n_cases,
                         "cpu": full_cpu, "startup_cpu": startup_cpu, "cpu_per_case": (full_cpu - startup_cpu) / n_cases,
                         "load_average_before": load, "load_average_after": load_avg()}

    # nnU-Net
    out_nn = lay.run_root / "pred_nnunet"
    earlier = json.loads(lay.predict_json.read_text()) if lay.predict_json.is_file() else {}
    reuse_nn = args.reuse_nnunet_predictions and "dice" in earlier.get("nnunet", {}) and out_nn.is_dir()
    if reuse_nn:  # the same nnU-Net model predicted these test cases before (unetkit retrained alone)
        result["nnunet"] = earlier["nnunet"]
        commands += [c for c in earlier.get("commands", []) if "nnUNetv2_predict" in c]
        print(f"nnU-Net: reusing the predictions in {out_nn}", flush=True)
    if nn_python is not None and not reuse_nn:
        floor_between = forward_floor(lay.uk_model, args.floor_repeats)
        shutil.rmtree(out_nn, ignore_errors=True)
        nn_cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(inputs),
                  "-o", str(out_nn), "-m", str(lay.nn_model), "-f", "all", "-chk", "checkpoint_final.pth",
                  "-device", "cpu", "--disable_progress_bar", "-npp", str(args.nnunet_processes),
                  "-nps", str(args.nnunet_processes)]
        commands.append(f"{lay.nn_env_text()} {shlex.join(nn_cmd)}")
        with NNUNetTrainerFile(nn_python, trained["epochs"], trained["iterations_per_epoch"],
                               trained["val_iterations"]):
            load = load_avg()
            full, full_cpu = timed_run(nn_cmd, lay.nn_env(args.num_workers), lay.run_root / "nnunet_predict.log")
            startup, startup_cpu = timed_run(nn_cmd + ["--continue_prediction"], lay.nn_env(args.num_workers))
        result["nnunet"] = {"wall": full, "startup": startup, "per_case": (full - startup) / n_cases,
                            "cpu": full_cpu, "startup_cpu": startup_cpu,
                            "cpu_per_case": (full_cpu - startup_cpu) / n_cases,
                            "load_average_before": load, "load_average_after": load_avg()}

    floor_after = forward_floor(lay.uk_model, args.floor_repeats)
    passes = passes_per_case(lay.uk_model, inputs, ("all",))
    floors = [floor_before, *([floor_between] if nn_python is not None and not reuse_nn else []), floor_after]
    forward = statistics.median(f["wall"] for f in floors)
    forward_cpu = statistics.median(f["cpu"] for f in floors)
    result.update({"forward_seconds": forward, "forward_seconds_before_after": [f["wall"] for f in floors],
                   "forward_cpu_seconds": forward_cpu, "forward_cpu_seconds_before_after": [f["cpu"] for f in floors],
                   "passes_per_case": statistics.mean(passes), "floor_per_case": forward * statistics.mean(passes),
                   "floor_cpu_per_case": forward_cpu * statistics.mean(passes)})

    # the same evaluator for both
    for tool, pred in (("unetkit", out_uk), ("nnunet", out_nn)):
        if tool not in result or (tool == "nnunet" and reuse_nn):
            continue
        ev = lay.run_root / f"eval_{tool}"
        shutil.rmtree(ev, ignore_errors=True)
        cmd = ["evaluate", str(pred), str(gt), "-l", *labels_arg, "-o", str(ev), "-np", str(args.num_processes),
               "--quiet"]
        commands.append(shlex.join(["unetkit", *cmd]))
        run(unetkit_cli(*cmd))
        result[tool]["dice"] = dice_summary(ev / "summary.json", lay.spec["labels"])
    if "nnunet" in result:
        result["label_agreement"] = agreement(out_uk, out_nn, ending)
    result["load_average_after"] = load_avg()
    lay.predict_json.write_text(json.dumps(result, indent=2))
    return result


# ----------------------------------------------------------------------------- report

def table(key: str, tr: dict, pr: dict | None) -> list[str]:
    """One dataset's table; returns the goal lines too."""
    s = tr["shared_setup"]
    kw = s["architecture"]["kwargs"]
    cases = tr.get("cases", {})
    lines = [f"{TITLES[key]} ({tr['configuration']}): {cases.get('train')} training / "
             f"{pr['test_cases'] if pr else cases.get('test')} test cases; nnU-Net's network "
             f"({kw['n_stages']} stages {kw['features_per_stage']}), patch {s['patch_size']}, batch {s['batch_size']}, "
             f"{tr['iterations']} iterations = {tr['epochs']} epochs x {tr['iterations_per_epoch']} "
             f"(+{tr['val_iterations']} validation batches per epoch), checkpoint_final, CPU"]
    w = 26

    def row(label: str, uk, nn, extra: str = "") -> None:
        lines.append(f"  {label:<{w}}{uk:>12}{nn:>12}{extra:>16}")

    row("", "unetkit", "nnU-Net", "uk - nnU (pts)")
    goals = []
    if pr:
        uk_d, nn_d = pr["unetkit"]["dice"], pr.get("nnunet", {}).get("dice")
        for name in [*[n for n, v in DATASETS[key]["labels"].items() if v], "mean"]:
            a, b = uk_d[name], (nn_d or {}).get(name)
            row(f"test Dice {name}", f"{a:.4f}", "-" if b is None else f"{b:.4f}",
                "" if b is None else f"{100 * (a - b):+.2f}")
        uk_s, floor = pr["unetkit"]["per_case"], pr["floor_per_case"]
        nn_s = pr.get("nnunet", {}).get("per_case")
        row("predict s/case", f"{uk_s:.3f}", "-" if nn_s is None else f"{nn_s:.3f}")
        row("floor s/case", f"{floor:.3f}", "", f"({pr['forward_seconds']:.3f} s x {pr['passes_per_case']:.1f})")
        row("predict / floor", f"{uk_s / floor:.2f}x", "-" if nn_s is None else f"{nn_s / floor:.2f}x")
        if nn_s is not None:
            row("nnU-Net / unetkit time", "", "", f"{nn_s / uk_s:.2f}x")
        if "cpu_per_case" in pr["unetkit"]:
            uk_c, floor_c = pr["unetkit"]["cpu_per_case"], pr["floor_cpu_per_case"]
            nn_c = pr.get("nnunet", {}).get("cpu_per_case")
            row("predict CPU s/case", f"{uk_c:.3f}", "-" if nn_c is None else f"{nn_c:.3f}")
            row("floor CPU s/case", f"{floor_c:.3f}", "", f"({pr['forward_cpu_seconds']:.3f} s x {pr['passes_per_case']:.1f})")
            row("predict CPU / floor CPU", f"{uk_c / floor_c:.2f}x", "-" if nn_c is None else f"{nn_c / floor_c:.2f}x")
            if nn_c is not None:
                row("nnU-Net / unetkit CPU", "", "", f"{nn_c / uk_c:.2f}x")
        row("start-up s (left out)", f"{pr['unetkit']['startup']:.1f}",
            "-" if nn_s is None else f"{pr['nnunet']['startup']:.1f}")
    t_uk, t_nn = tr.get("unetkit", {}), tr.get("nnunet", {})
    row("train s/iteration (median)", f"{t_uk['median_seconds_per_iteration']:.2f}" if t_uk else "-",
        f"{t_nn['median_seconds_per_iteration']:.2f}" if t_nn else "-",
        f"nnU/uk {t_nn['median_seconds_per_iteration'] / t_uk['median_seconds_per_iteration']:.2f}x"
        if t_uk and t_nn else "")
    row("train wall s", f"{t_uk.get('wall_seconds', float('nan')):.0f}" if t_uk else "-",
        f"{t_nn.get('wall_seconds', float('nan')):.0f}" if t_nn else "-")
    la = lambda d: "/".join(f"{x:.1f}" for x in d["load_average_before"][:1] + d["load_average_after"][:1])  # noqa: E731
    row("load avg train (bef/aft)", la(t_uk) if t_uk else "-", la(t_nn) if t_nn else "-")
    if pr:
        row("load avg predict (bef/aft)", la(pr["unetkit"]), la(pr["nnunet"]) if "nnunet" in pr else "-")
        floors = " / ".join(f"{x:.3f}" for x in pr["forward_seconds_before_after"])
        if "forward_cpu_seconds_before_after" in pr:
            floors += "; CPU " + " / ".join(f"{x:.3f}" for x in pr["forward_cpu_seconds_before_after"])
        agree = pr.get("label_agreement")
        lines.append(f"  floor forward (median of before / between / after the predictions: {floors} s); label agreement "
                     f"unetkit vs nnU-Net (different weights): {'-' if agree is None else f'{100 * agree:.2f} %'}")
        lines.append(f"  normalization unetkit {tr['unetkit_plan']['normalization']}, nnU-Net "
                     f"{tr.get('nnunet_plan', {}).get('normalization', '-')}")
        if nn_d is not None:
            diff = 100 * (uk_d["mean"] - nn_d["mean"])
            goals.append(f"  goal Dice within 0.5 points of nnU-Net or better: {'met' if diff >= -0.5 else 'NOT met'} "
                         f"({diff:+.2f} points, mean over labels)")
        cpu = pr["unetkit"].get("cpu_per_case")
        cpu_text = "" if cpu is None else f"; CPU time {cpu / pr['floor_cpu_per_case']:.2f}x"
        goals.append(f"  goal prediction <= 1.1x the floor: {'met' if uk_s / floor <= 1.1 else 'NOT met'} in wall time "
                     f"({uk_s / floor:.2f}x" + (f", nnU-Net {nn_s / floor:.2f}x" if nn_s is not None else "")
                     + f"{cpu_text})")
        if nn_s is not None:
            if tr["configuration"] == "2d":
                goals.append(f"  goal >= 2x faster than nnU-Net on large 2D pictures: "
                             f"{'met' if nn_s / uk_s >= 2 else 'NOT met'} ({nn_s / uk_s:.2f}x)")
            else:
                goals.append(f"  goal faster than nnU-Net: {'met' if nn_s / uk_s > 1 else 'NOT met'} "
                             f"({nn_s / uk_s:.2f}x)")
    lines += goals
    lines.append(f"  made by (train): {tr['command']}")
    if pr:
        lines.append(f"  made by (predict): {pr['command']}")
    return lines


def seed_table(key: str, runs: list[tuple[dict, dict | None]]) -> list[str]:
    """Issue 14's table: test Dice per class and mean for every seed and tool, mean +- sd over the
    seeds, and the take-off iteration (first epoch with every class's pseudo-Dice > 0.5)."""
    names = [n for n, v in DATASETS[key]["labels"].items() if v]
    head = " / ".join(names)
    lines = [f"  seed table: test Dice {head} (mean over classes); take-off = iteration at the end of the first epoch "
             "whose validation pseudo-Dice exceeds 0.5 for every class ('never': not within the run)",
             f"  {'tool':<10}{'seed':>6}  {'test Dice ' + head:<34}{'mean':>8}{'take-off':>10}"]
    summary = {}
    for tool, title in (("unetkit", "unetkit"), ("nnunet", "nnU-Net")):
        means, never, per_class = [], 0, {n: [] for n in names}
        for tr, pr in runs:
            dice = (pr or {}).get(tool, {}).get("dice")
            if tool not in tr:
                continue
            took = tr[tool].get("take_off")
            never += took is None
            seed = tr["seed"] if tool == "unetkit" else f"run{tr['seed']}"
            if dice is None:
                lines.append(f"  {title:<10}{seed!s:>6}  {'(not predicted)':<34}{'':>8}{took or 'never'!s:>10}")
                continue
            means.append(dice["mean"])
            for n in names:
                per_class[n].append(dice[n])
            text = " / ".join(f"{dice[n]:.3f}" for n in names)
            lines.append(f"  {title:<10}{seed!s:>6}  {text:<34}{dice['mean']:>8.3f}{took or 'never'!s:>10}")
        if not means:
            continue
        sd = statistics.stdev(means) if len(means) > 1 else float("nan")
        text = " / ".join(f"{statistics.mean(v):.3f}" for v in per_class.values())
        lines.append(f"  {title:<10}{'mean':>6}  {text:<34}{statistics.mean(means):>8.3f}"
                     f"{f'{never} never':>10}   (sd of the mean Dice {sd:.3f}, n = {len(means)})")
        summary[tool] = {"mean": statistics.mean(means), "sd": sd, "n": len(means), "never": never}
    if "unetkit" in summary and "nnunet" in summary:
        uk, nn = summary["unetkit"], summary["nnunet"]
        within = uk["mean"] >= nn["mean"] - (nn["sd"] if nn["sd"] == nn["sd"] else 0.0)
        lines.append(f"  goal mean test Dice within one sd of nnU-Net's or better: {'met' if within else 'NOT met'} "
                     f"(unetkit {uk['mean']:.3f} vs nnU-Net {nn['mean']:.3f} +- {nn['sd']:.3f})")
        lines.append(f"  goal no more runs without take-off than nnU-Net: "
                     f"{'met' if uk['never'] <= nn['never'] else 'NOT met'} (unetkit {uk['never']} of {uk['n']}, "
                     f"nnU-Net {nn['never']} of {nn['n']})")
    return lines


def report(keys: list[str], workdir: Path, show_commands: bool) -> dict:
    out, block = {}, []
    for key in keys:
        runs = []
        for seed_dir in sorted((workdir / key).glob("seed*"), key=lambda p: int(p.name[4:] or -1)):
            lay = Layout(workdir, key, int(seed_dir.name[4:]))
            if not lay.train_json.is_file():
                continue
            tr = json.loads(lay.train_json.read_text())
            pr = json.loads(lay.predict_json.read_text()) if lay.predict_json.is_file() else None
            runs.append((tr, pr))
            out.setdefault(key, {})[f"seed{lay.seed}"] = {"train": tr, "predict": pr}
            block.append(f"seed {lay.seed}:")
            block += table(key, tr, pr)
            if show_commands:
                block.append("  commands run:")
                block += [f"    {c}" for c in tr["commands"] + (pr["commands"] if pr else [])]
            block.append("")
        if runs:
            block.append(f"{TITLES[key]}: {len(runs)} seed(s)")
            block += seed_table(key, runs)
            block.append("")
    print("\n" + "=" * 100)
    print("unetkit vs nnU-Net v2.8.1: test accuracy at equal iterations and prediction speed "
          "(Dice from `unetkit evaluate` for both; s/case excludes start-up)")
    print("=" * 100)
    print("\n".join(block))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["hippocampus", "isbi", "drive"])
    parser.add_argument("--phase", choices=["train", "predict", "all", "report"], default="all",
                        help="train (data, plans, training), predict (prediction, floor, evaluation), all, or "
                             "report (print the tables of what WORKDIR holds)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/acc_bench/work"),
                        help="kept between phases: datasets, plans, trained models, predictions, results")
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations per tool (default: Hippocampus 500, DRIVE and ISBI 50)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="the iterations are spread over this many epochs (default: Hippocampus 50, DRIVE and ISBI 5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="one run per seed and tool (unetkit --seed S; nnU-Net is unseeded: one independent run "
                             "per seed folder); the report shows every seed in WORKDIR (default 0 1 2)")
    parser.add_argument("--val-iterations", type=int, default=2,
                        help="validation batches per epoch, both tools (pseudo-Dice; only picks checkpoint_best)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=2, help="data-loading processes (both)")
    parser.add_argument("--num-processes", type=int, default=2, help="preprocessing/evaluation processes")
    parser.add_argument("--nnunet-processes", type=int, default=2, help="nnU-Net prediction's -npp and -nps")
    parser.add_argument("--floor-repeats", type=int, default=5)
    parser.add_argument("--max-test-cases", type=int, default=None, help="only the first N test cases (smoke runs)")
    parser.add_argument("--retrain", action="store_true", help="start the dataset's work folder afresh")
    parser.add_argument("--skip-nnunet", action="store_true", help="unetkit only (its own plan)")
    parser.add_argument("--init-candidates", type=int, default=None,
                        help="unetkit train's --init-candidates (default: unetkit's, 4; 1 reproduces the seed "
                             "table measured before the best-of-4 start)")
    parser.add_argument("--reuse-nnunet-predictions", action="store_true",
                        help="predict phase: keep nnU-Net's earlier predictions and scores of this seed folder "
                             "(its model was reused too), predict and score unetkit only")
    parser.add_argument("--nnunet-venv", type=Path, default=REPO / ".venv-nnunet")
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = parser.parse_args(argv)
    # a SIGTERM unwinds like an error: the nnU-Net trainer file is removed, running commands are killed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    import torch

    threads = os.cpu_count() or 1  # nnU-Net's CPU prediction uses every core; unetkit gets the same
    torch.set_num_threads(threads)
    nn_python = None
    if not args.skip_nnunet:
        nn_python = args.nnunet_venv / "bin" / "python"
        if not nn_python.is_file():
            raise SystemExit(f"error: no nnU-Net venv at {args.nnunet_venv}; run benchmarks/setup_nnunet_venv.sh")
    this_command = shlex.join(["python", "benchmarks/accuracy_vs_nnunet.py", *(argv if argv is not None else sys.argv[1:])])
    args.workdir = args.workdir.resolve()
    for key in args.datasets:
        for seed in args.seeds if args.phase != "report" else []:
            lay = Layout(args.workdir, key, seed)
            if args.phase in ("train", "all"):
                print(f"--- {key}, seed {seed}: train", flush=True)
                phase_train(lay, args, nn_python, this_command)
            if args.phase in ("predict", "all"):
                print(f"--- {key}, seed {seed}: predict", flush=True)
                phase_predict(lay, args, nn_python, threads, this_command)
    results = report(args.datasets, args.workdir, show_commands=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
