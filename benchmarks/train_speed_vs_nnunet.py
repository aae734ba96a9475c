#!/usr/bin/env python
"""Training speed: unetkit against nnU-Net v2 on the same Hippocampus split, network and batches.

In one run, on this machine, the script

1. links the paired Hippocampus cases into an nnU-Net v2 raw dataset (one folder both tools read);
2. runs ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` and takes nnU-Net's 3d_fullres patch size,
   batch size, batch Dice and network (stages, widths, kernels, strides, convolutions per stage);
3. runs ``unetkit plan`` and ``unetkit preprocess`` and writes nnU-Net's patch, batch and network
   into unetkit's plans.json, so both train exactly the same architecture on the same patches;
4. writes one 5-fold split (nnU-Net's own rule, sorted names and KFold seed 12345) as unetkit's
   splits.json and as nnU-Net's splits_final.json;
5. trains nnU-Net (``nnUNetv2_train ... -device cpu`` with a short trainer subclass written into the
   nnU-Net venv's package for the run and removed afterwards) and unetkit (``unetkit train``),
   each for the same epochs x iterations with the same number of data-loading workers;
6. measures the floor: the same network's bare training step (forward, deep-supervision loss,
   backward, gradient clipping, SGD step) on a batch already in memory, eager and with
   torch.compile, and nnU-Net's own network and loss the same way (eager);
7. prints for each trainer the median seconds per iteration (data waiting included), iterations per
   second, the share of step time spent waiting for data, the ratio unetkit/nnU-Net in iterations
   per second (goal: at least 1.3), the floors, and the commands it ran.

Usage::

    python benchmarks/train_speed_vs_nnunet.py [--epochs 3] [--iterations 10] [--num-workers 2]
        [--data ../shared/datasets/Hippocampus] [--nnunet-venv .venv-nnunet] [--compile]
        [--max-cases N] [--json results.json] [--keep]

The nnU-Net environment comes from ``benchmarks/setup_nnunet_venv.sh``. This is a benchmark, not a
test: run it on a quiet machine (the load average is printed with the results); the first
iterations of each trainer include start-up and, with --compile, compilation, which the median
leaves out when there are enough iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_preprocess_vs_nnunet import DATASET_ID, DEFAULT_DATA, build_raw, run, unetkit_cli  # noqa: E402  (same raw layout)

TRAINER_NAME = "nnUNetTrainer_UnetkitBench"
CONFIG = "3d_fullres"

# A short nnU-Net trainer: nnU-Net's own loop with a clock around the wait for each batch and each
# step, no final sliding-window validation (not part of the iteration speed), timings to JSON.
TRAINER_TEMPLATE = '''
import json
import time
from os.path import join

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {name}(nnUNetTrainer):
    """Written by unetkit's benchmarks/train_speed_vs_nnunet.py for one run; removed afterwards."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = {epochs}
        self.num_iterations_per_epoch = {iterations}
        self.num_val_iterations_per_epoch = {val_iterations}

    def run_training(self):
        self.on_train_start()
        steps, waits = [], []
        for epoch in range(self.current_epoch, self.num_epochs):
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                t0 = time.perf_counter()
                batch = next(self.dataloader_train)
                t1 = time.perf_counter()
                outputs.append(self.train_step(batch))
                steps.append(time.perf_counter() - t0)
                waits.append(t1 - t0)
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val = [self.validation_step(next(self.dataloader_val))
                       for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val)
            self.on_epoch_end()
        self.on_train_end()
        with open(join(self.output_folder, "unetkit_bench_timing.json"), "w") as handle:
            # per-epoch pseudo-Dice per class (nnU-Net's own validation proxy), for take-off tables
            dice = [[float(v) for v in epoch_dice]
                    for epoch_dice in self.logger.local_logger.my_fantastic_logging["dice_per_class_or_region"]]
            json.dump({{"step_seconds": steps, "wait_seconds": waits, "pseudo_dice": dice}}, handle)

    def perform_actual_validation(self, *args, **kwargs):
        pass
'''

# nnU-Net's network and loss, one bare step timed on a ready batch (run with the venv's python).
NNUNET_FLOOR = '''
import json, sys, time, statistics
import numpy as np, torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

plans_file, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
cfg = json.load(open(plans_file))["configurations"]["3d_fullres"]
arch = cfg["architecture"]
net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                             1, 3, allow_init=True, deep_supervision=True)
pools = np.vstack(arch["arch_kwargs"]["strides"])
scales = list(list(i) for i in 1 / np.cumprod(pools, axis=0))[:-1]
w = np.array([1 / (2 ** i) for i in range(len(scales))]); w[-1] = 0; w = w / w.sum()
loss = DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": cfg["batch_dice"], "smooth": 1e-5, "do_bg": False,
                                              "ddp": False}, {}, weight_ce=1, weight_dice=1,
                                             dice_class=MemoryEfficientSoftDiceLoss), w)
opt = torch.optim.SGD(net.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
b, patch = cfg["batch_size"], cfg["patch_size"]
g = torch.Generator().manual_seed(0)
x = torch.randn(b, 1, *patch, generator=g)
y = torch.randint(0, 3, (b, 1, *patch), generator=g).float()
ys = [torch.nn.functional.interpolate(y, size=[round(p * s) for p, s in zip(patch, sc)], mode="nearest-exact")
      for sc in scales]
times = []
for i in range(steps + 2):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    l = loss(net(x), ys)
    l.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
    opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps({"median": statistics.median(times[2:]), "steps": steps}))
'''


def unetkit_floor(plans_entry: dict, steps: int, compile_: bool, threads: int, channels_last: bool = False) -> float:
    """Median seconds of unetkit's bare training step (same network, loss, clipping, SGD) on a ready batch.

    ``channels_last`` measures the memory format the trainer uses on the CPU by default.
    """
    import torch

    from unetkit.models import create_model
    from unetkit.training.loss import LossSpec, build_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    arch = plans_entry["architecture"]
    net = create_model(arch["name"], len(plans_entry["patch_size"]), 1, 3, deep_supervision=True, **arch["kwargs"])
    fmt = torch.channels_last_3d if len(plans_entry["patch_size"]) == 3 else torch.channels_last
    if channels_last:
        net = net.to(memory_format=fmt)
    model = torch.compile(net) if compile_ else net
    loss_fn = build_loss(LossSpec(batch_dice=bool(plans_entry["batch_dice"])))
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, weight_decay=3e-5, nesterov=True)
    g = torch.Generator().manual_seed(0)
    b, patch = plans_entry["batch_size"], plans_entry["patch_size"]
    x = torch.randn(b, 1, *patch, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 3, (b, 1, *patch), generator=g).to(torch.int16)
    warmup = 3 if compile_ else 2
    times = []
    for _ in range(steps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[warmup:])


def nnunet_site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def nnunet_arch_into_unetkit(nn_cfg: dict) -> dict:
    """nnU-Net's 3d_fullres network/patch/batch as the keys of a unetkit configuration entry."""
    kw = nn_cfg["architecture"]["arch_kwargs"]
    n = kw["n_stages"]
    as_list = lambda v: [v] * n if isinstance(v, int) else list(v)  # noqa: E731
    return {
        "patch_size": list(nn_cfg["patch_size"]),
        "batch_size": int(nn_cfg["batch_size"]),
        "batch_dice": bool(nn_cfg["batch_dice"]),
        "architecture": {"name": "plain_unet", "kwargs": {
            "n_stages": n, "features_per_stage": list(kw["features_per_stage"]),
            "kernel_sizes": [list(k) for k in kw["kernel_sizes"]], "strides": [list(s) for s in kw["strides"]],
            "n_conv_per_stage": as_list(kw["n_conv_per_stage"]),
            "n_conv_per_stage_decoder": list(kw["n_conv_per_stage_decoder"])}},
    }


def summarize(steps: list[float], waits: list[float]) -> dict:
    return {"median_seconds_per_iteration": statistics.median(steps),
            "data_wait_share": sum(waits) / max(sum(steps), 1e-12), "iterations": len(steps)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared Hippocampus folder")
    parser.add_argument("--nnunet-venv", type=Path, default=REPO / ".venv-nnunet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per epoch (both)")
    parser.add_argument("--val-iterations", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=2, help="data-loading processes (both)")
    parser.add_argument("--num-processes", type=int, default=2, help="preprocessing processes (both)")
    parser.add_argument("--floor-steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true",
                        help="train unetkit with --compile (default: eager with channels-last, the trainer's CPU default)")
    parser.add_argument("--max-cases", type=int, default=None, help="use only the first N cases (smoke runs)")
    parser.add_argument("--skip-nnunet", action="store_true", help="only unetkit and the floors")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    threads = os.cpu_count() or 1  # nnU-Net's CPU training uses every core; so does unetkit's default
    nn_python = args.nnunet_venv / "bin" / "python"
    if not args.skip_nnunet and not nn_python.is_file():
        raise SystemExit(f"error: no nnU-Net venv at {args.nnunet_venv}; run benchmarks/setup_nnunet_venv.sh")
    tmp = Path(tempfile.mkdtemp(prefix="unetkit-train-bench-"))
    trainer_file = None
    commands: list[str] = []
    results: dict = {"load_average_before": os.getloadavg(), "epochs": args.epochs, "iterations": args.iterations,
                     "num_workers": args.num_workers, "torch_threads": threads}
    try:
        raw = build_raw(args.data, tmp / "raw", args.max_cases)
        name = raw.name
        nn_env = {**os.environ, "nnUNet_raw": str(tmp / "raw"), "nnUNet_preprocessed": str(tmp / "nn_pre"),
                  "nnUNet_results": str(tmp / "nn_results"), "nnUNet_n_proc_DA": str(args.num_workers),
                  "nnUNet_compile": "false"}
        uk_work = tmp / "uk"

        # -- plans: nnU-Net's network, patch and batch for both ----------------------------------
        if not args.skip_nnunet:
            cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID),
                   "-c", CONFIG, "-np", str(args.num_processes)]
            commands.append(shlex.join(cmd))
            run(cmd, nn_env, tmp / "nnunet_preprocess.log")
            nn_plans_file = tmp / "nn_pre" / name / "nnUNetPlans.json"
            shared = nnunet_arch_into_unetkit(json.loads(nn_plans_file.read_text())["configurations"][CONFIG])
        args_plan = ["plan", str(raw), "--workdir", str(uk_work), "--num-processes", str(args.num_processes), "--quiet"]
        commands.append(shlex.join(["unetkit", *args_plan]))
        run(unetkit_cli(*args_plan))
        plans_path = uk_work / name / "plans.json"
        plans = json.loads(plans_path.read_text())
        if args.skip_nnunet:
            shared = {k: plans["configurations"][CONFIG][k] for k in ("patch_size", "batch_size", "batch_dice",
                                                                      "architecture")}
        plans["configurations"][CONFIG].update(shared)
        plans_path.write_text(json.dumps(plans, indent=2))
        args_pre = ["preprocess", str(raw), "--workdir", str(uk_work), "-c", CONFIG,
                    "--num-processes", str(args.num_processes), "--no-progress"]
        commands.append(shlex.join(["unetkit", *args_pre]))
        run(unetkit_cli(*args_pre))
        results["shared_setup"] = shared

        # -- one split for both ---------------------------------------------------------------------
        from unetkit.training.splits import make_splits

        cases = sorted(p.name[: -len(".json")] for p in (uk_work / name / "preprocessed" / CONFIG).glob("*.json"))
        splits = make_splits(cases)
        (uk_work / name / "splits.json").write_text(json.dumps(splits, indent=2))
        if not args.skip_nnunet:
            (tmp / "nn_pre" / name / "splits_final.json").write_text(json.dumps(splits, indent=2))

        # -- nnU-Net training ---------------------------------------------------------------------------
        if not args.skip_nnunet:
            trainer_file = nnunet_site_packages(nn_python) / "training" / "nnUNetTrainer" / f"{TRAINER_NAME}.py"
            trainer_file.write_text(TRAINER_TEMPLATE.format(name=TRAINER_NAME, epochs=args.epochs,
                                                            iterations=args.iterations,
                                                            val_iterations=args.val_iterations))
            cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_train"), str(DATASET_ID), CONFIG, "0",
                   "-tr", TRAINER_NAME, "-device", "cpu"]
            commands.append(shlex.join(cmd))
            results["nnunet_wall_seconds"] = run(cmd, nn_env, tmp / "nnunet_train.log")
            timing_file = next((tmp / "nn_results").rglob("unetkit_bench_timing.json"))
            t = json.loads(timing_file.read_text())
            results["nnunet"] = summarize(t["step_seconds"], t["wait_seconds"])

        # -- unetkit training ---------------------------------------------------------------------------
        args_train = ["train", name, "-c", CONFIG, "-f", "0", "--workdir", str(uk_work),
                      "--epochs", str(args.epochs), "--iterations-per-epoch", str(args.iterations),
                      "--val-iterations", str(args.val_iterations), "--num-workers", str(args.num_workers),
                      "--device", "cpu", "--quiet"] + (["--compile"] if args.compile else [])
        commands.append(shlex.join(["unetkit", *args_train]))
        results["unetkit_compiled"] = bool(args.compile)
        results["unetkit_wall_seconds"] = run(unetkit_cli(*args_train), None, tmp / "unetkit_train.log")
        out = uk_work / name / "models" / f"{CONFIG}__plain_unet" / "fold_0"
        results["unetkit"] = json.loads((out / "progress.json").read_text())["timing"]

        # -- floors ---------------------------------------------------------------------------------------
        entry = json.loads(plans_path.read_text())["configurations"][CONFIG]
        results["floor_eager"] = unetkit_floor(entry, args.floor_steps, False, threads)
        results["floor_eager_channels_last"] = unetkit_floor(entry, args.floor_steps, False, threads, True)
        results["floor_compiled"] = unetkit_floor(entry, args.floor_steps, True, threads)
        if not args.skip_nnunet:
            proc = subprocess.run([str(nn_python), "-c", NNUNET_FLOOR, str(nn_plans_file), str(args.floor_steps),
                                   str(threads)], capture_output=True, text=True, env=nn_env)
            if proc.returncode == 0:
                results["floor_nnunet_network_eager"] = json.loads(proc.stdout.strip().splitlines()[-1])["median"]
            else:
                print(f"note: nnU-Net floor failed:\n{proc.stderr[-2000:]}")
        results["load_average_after"] = os.getloadavg()
        results["commands"] = commands
    finally:
        if trainer_file is not None:
            trainer_file.unlink(missing_ok=True)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(r: dict) -> None:
    s = r["shared_setup"]
    print()
    print(f"Hippocampus {CONFIG}: patch {s['patch_size']}, batch {s['batch_size']}, "
          f"{s['architecture']['kwargs']['n_stages']} stages {s['architecture']['kwargs']['features_per_stage']}; "
          f"{r['epochs']} epochs x {r['iterations']} iterations, {r['num_workers']} data workers, "
          f"{r['torch_threads']} torch threads")
    print(f"{'':28s}{'s/iteration':>12s}{'it/s':>9s}{'data wait':>11s}{'vs floor':>10s}   (floor: own network, eager for nnU-Net)")
    rows = []
    if "nnunet" in r:
        rows.append(("nnU-Net v2.8.1 (eager)", r["nnunet"], r.get("floor_nnunet_network_eager", r["floor_eager"])))
    compiled = r.get("unetkit_compiled", False)
    rows.append((f"unetkit ({'compiled' if compiled else 'eager, channels-last'})", r["unetkit"],
                 r["floor_compiled"] if compiled else r["floor_eager_channels_last"]))
    for label, t, floor in rows:
        sec = t["median_seconds_per_iteration"]
        print(f"{label:28s}{sec:12.3f}{1 / sec:9.3f}{100 * t['data_wait_share']:10.1f}%{sec / floor:9.2f}x")
    if "nnunet" in r:
        ratio = r["nnunet"]["median_seconds_per_iteration"] / r["unetkit"]["median_seconds_per_iteration"]
        print(f"unetkit / nnU-Net iterations per second: {ratio:.2f}x (goal >= 1.3x)")
    print(f"floor (bare step on a ready batch): unetkit network eager {r['floor_eager']:.3f}s, "
          f"eager channels-last {r['floor_eager_channels_last']:.3f}s, compiled {r['floor_compiled']:.3f}s"
          + (f", nnU-Net network eager {r['floor_nnunet_network_eager']:.3f}s" if "floor_nnunet_network_eager" in r
             else ""))
    print(f"load average before {tuple(round(x, 2) for x in r['load_average_before'])}, "
          f"after {tuple(round(x, 2) for x in r['load_average_after'])}")
    print("commands:")
    for c in r["commands"]:
        print(f"  {c}")


if __name__ == "__main__":
    sys.exit(main())
