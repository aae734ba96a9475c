"""Whole-run batch swap (issue 14): unetkit's trainer fed nnU-Net v2.8.1's own training batches.

The seed table (``accuracy_vs_nnunet.py``) showed one unetkit seed (0) whose posterior class
collapsed while the anterior class took off, where nnU-Net's runs all took off. The
component-by-component comparison (``recipe_vs_nnunet.py``) found loss, initialisation, optimiser
and three training steps equal, and sampling and augmentation equal in distribution. This script
asks the remaining question over a whole run: does the failure live in the batches or in the step?

For every seed it runs ``unetkit.training.trainer.train`` exactly as ``unetkit train --seed S``
does (same network initialisation, loss, optimiser, poly schedule, validation on unetkit's own
validation batches, checkpoints), except that the training batches come from
``nnUNetTrainer.get_dataloaders()`` (fold ``all``, batch 2, nnU-Net's sampling, larger initial
patch and augmentation, one process so the stream is a function of the seed). Then it predicts the
held-out test cases with ``unetkit predict`` and scores them with ``unetkit evaluate``, as the seed
table does. ``--mode control`` runs the same harness with unetkit's own loader (to show the harness
reproduces ``unetkit train``). ``--mode nnunet-trainer-unetkit-init`` is the reverse swap: nnU-Net's
whole trainer (its batches, step, schedule and validation) started from exactly the weights
``unetkit train --seed S`` starts from, then ``nnUNetv2_predict_from_modelfolder`` and the same
evaluator.

It reuses an ``accuracy_vs_nnunet.py`` work folder (its raw dataset, test folder, nnU-Net
preprocessing and the unetkit plan + cache of seed 0), writes ``WORKDIR/hippocampus/swap_seedS/`` (or
``control_seedS/``, ``nntrainer_ukinit_seedS/``) and prints one row per run. Runs inside nnU-Net's comparison venv with unetkit on the path::

    PYTHONPATH=src .venv-nnunet/bin/python benchmarks/batch_swap_vs_nnunet.py --workdir /tmp/seedbench --seeds 0 1
    PYTHONPATH=src .venv-nnunet/bin/python benchmarks/batch_swap_vs_nnunet.py --workdir /tmp/seedbench --seeds 0 \
        --mode nnunet-trainer-unetkit-init

About 10 minutes per seed on 2 idle CPU cores (training 500 iterations, then prediction).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATASET = "Dataset908_Hippocampus"
CONFIG = "3d_fullres"


def allow_main_site_packages() -> None:
    """unetkit needs safetensors, which nnU-Net's venv lacks: fall back (last on the path) to the
    interpreter's own site-packages that the venv was made from."""
    try:
        import safetensors  # noqa: F401
    except ImportError:
        base = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        sys.path.append(str(base / "site-packages"))


class NNUNetBatches:
    """unetkit's BatchLoader interface (``next``, ``wait_seconds``, ``close``) over nnU-Net's loader.

    nnU-Net's batches carry the target at every deep-supervision scale; unetkit's loss downsamples
    the full-resolution target itself (the same way: recipe_vs_nnunet.py, "target downsampling")."""

    def __init__(self, loader) -> None:
        self.loader, self.wait_seconds, self.batches = loader, 0.0, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        import torch

        t0 = time.perf_counter()
        batch = next(self.loader)
        self.wait_seconds += time.perf_counter() - t0
        self.batches += 1
        return {"data": torch.as_tensor(batch["data"]).float(), "target": torch.as_tensor(batch["target"][0])}

    def close(self) -> None:
        pass


def nnunet_training_loader(nn_pre: Path, batch: int):
    """nnU-Net's training loader for fold ``all`` at ``batch``, in this process (nnUNet_n_proc_DA=0)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    base = nn_pre / DATASET
    plans = json.loads((base / "nnUNetPlans.json").read_text())
    plans["configurations"][CONFIG]["batch_size"] = batch
    plans["continue_training"] = False  # what nnUNetv2_train passes for a fresh run
    dataset_json = json.loads((base / "dataset.json").read_text())
    trainer = nnUNetTrainer(plans, CONFIG, "all", dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    return train_loader


def swapped_make_loader(nn_pre: Path, batch: int, record: dict):
    """A stand-in for ``unetkit.training.trainer.make_loader``: the training loader (augment=True)
    becomes nnU-Net's, the validation loader stays unetkit's."""
    from unetkit.training import trainer as uk_trainer

    original = uk_trainer.make_loader

    def make_loader(folder, entry, cases, *, augment: bool, **kwargs):
        if not augment:
            return original(folder, entry, cases, augment=augment, **kwargs)
        # unetkit's _run_loop seeded numpy with --seed just before this call: nnU-Net's case
        # choice and augmentation draw from that state, so the batch stream is a function of the seed
        record["nnunet_training_cases"] = len(cases)
        return NNUNetBatches(nnunet_training_loader(nn_pre, batch))

    return make_loader


def zero_heads_build_network():
    """A stand-in for ``unetkit.training.trainer.build_network`` whose plain U-Net starts with zero
    segmentation heads (uniform initial predictions); everything else as built, same seed."""
    from unetkit.training import trainer as uk_trainer

    original = uk_trainer.build_network

    def build_network(spec):
        network = original(spec)
        for head in network.decoder.heads:
            torch_zero_(head.weight)
            torch_zero_(head.bias)
        return network

    return build_network


def torch_zero_(tensor) -> None:
    import torch

    with torch.no_grad():
        tensor.zero_()


def prepare_workdir(src_work: Path, dst_work: Path) -> None:
    """A fresh unetkit work folder sharing seed 0's plan and cache (no models)."""
    src, dst = src_work / DATASET, dst_work / DATASET
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "fingerprint.json", "splits.json"):
        if (src / name).is_file() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)
    if not (dst / "preprocessed").exists():
        (dst / "preprocessed").symlink_to((src / "preprocessed").resolve(), target_is_directory=True)


def unetkit_cli(*args: str) -> list[str]:
    """The main interpreter's unetkit (the one the seed table used), not the venv's."""
    python = Path(sys.base_prefix) / "bin" / "python3"
    return [str(python), "-m", "unetkit.cli", *args]


def train_one(root: Path, seed: int, mode: str, args) -> dict:
    from unetkit.training import trainer as uk_trainer

    control = mode in ("control", "zero-heads")
    run_root = root / {"control": f"control_seed{seed}", "zero-heads": f"zeroheads_seed{seed}"}.get(
        mode, f"swap_seed{seed}")
    work = run_root / "uk"
    prepare_workdir(root / "seed0" / "uk", work)
    fold = work / DATASET / "models" / f"{CONFIG}__plain_unet" / "fold_all"
    record: dict = {"seed": seed, "batches": "unetkit" if control else "nnU-Net"}
    if not (fold / "checkpoint_final.json").is_file():
        shutil.rmtree(fold, ignore_errors=True)
        if not control:
            uk_trainer.make_loader = swapped_make_loader(root / "nn_pre", args.batch_size, record)
        if mode == "zero-heads":
            uk_trainer.build_network = zero_heads_build_network()
            record["batches"] = "unetkit, zero heads"
        overrides = {"epochs": args.epochs, "iterations_per_epoch": args.iterations_per_epoch,
                     "val_iterations": args.val_iterations, "batch_size": args.batch_size, "seed": seed,
                     "init_candidates": args.init_candidates, "num_workers": 0, "device": "cpu"}
        t0 = time.perf_counter()
        # by name, as accuracy_vs_nnunet.py trains (the plan and cache in the work folder are what is used)
        uk_trainer.train(work, DATASET, CONFIG, "all", overrides, echo=False)
        record["train_seconds"] = round(time.perf_counter() - t0, 1)
    progress = json.loads((fold / "progress.json").read_text())
    record["pseudo_dice"] = progress["history"]["pseudo_dice"]
    pred, ev = run_root / "pred", run_root / "eval"
    if not (ev / "summary.json").is_file():
        env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
        subprocess.run(unetkit_cli("predict", "-i", str(root / "test" / "images"), "-o", str(pred), "-m", str(fold),
                                   "--checkpoint", "final", "--device", "cpu", "--quiet"), check=True, env=env)
        subprocess.run(unetkit_cli("evaluate", str(pred), str(root / "test" / "labels"), "-l", "1", "2", "-o",
                                   str(ev), "--quiet"), check=True, env=env)
    record["test"] = json.loads((ev / "summary.json").read_text())
    (run_root / "swap_result.json").write_text(json.dumps(record, indent=2))
    return record


def unetkit_initial_weights(work: Path, seed: int) -> dict:
    """The weights ``unetkit train --seed S --init-candidates 1`` starts from (the single draw: the
    first of the candidates the default compares): torch seeded with S, then the plan's network built
    (``_run_loop``: configure_determinism, network_spec, build_network; nothing in between draws)."""
    import torch

    from unetkit.training.config import TrainingConfig
    from unetkit.training.trainer import build_network, label_info, network_spec

    plans = json.loads((work / DATASET / "plans.json").read_text())
    cfg = TrainingConfig(epochs=50, batch_size=2, arch="plain_unet", seed=seed)
    torch.manual_seed(seed)
    spec = network_spec(plans, plans["configurations"][CONFIG], cfg, label_info(plans).num_heads, lambda *a: None)
    return build_network(spec).state_dict()


def load_into_nnunet(network, uk_weights: dict) -> int:
    """Copy unetkit's weights into nnU-Net's PlainConvUNet (key mapping of recipe_vs_nnunet.py;
    aliased nnU-Net keys share the storage, so each tensor is written once through any name)."""
    import torch

    sys.path.insert(0, str(HERE))
    from recipe_vs_nnunet import convert_state_dict

    copied = 0
    with torch.no_grad():
        for nn_key, tensor in network.state_dict().items():
            uk_key = next(iter(convert_state_dict({nn_key: tensor})), None)
            if uk_key is not None:
                tensor.copy_(uk_weights[uk_key])
                copied += 1
    return copied


def nnunet_trainer_from_unetkit_init(root: Path, seed: int, args) -> dict:
    """nnU-Net's own trainer (its batches, step and schedule), started from unetkit's seed-S weights."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    run_root = root / f"nntrainer_ukinit_seed{seed}"
    results = run_root / "nn_results"
    os.environ["nnUNet_results"] = str(results)
    model = results / DATASET / f"nnUNetTrainer__nnUNetPlans__{CONFIG}"
    record: dict = {"seed": seed, "batches": "nnU-Net trainer, unetkit init"}
    if not (model / "fold_all" / "checkpoint_final.pth").is_file():
        base = root / "nn_pre" / DATASET
        plans = json.loads((base / "nnUNetPlans.json").read_text())
        plans["configurations"][CONFIG]["batch_size"] = args.batch_size
        plans["continue_training"] = False
        trainer = nnUNetTrainer(plans, CONFIG, "all", json.loads((base / "dataset.json").read_text()),
                                device=torch.device("cpu"))
        trainer.num_epochs, trainer.num_iterations_per_epoch = args.epochs, args.iterations_per_epoch
        trainer.num_val_iterations_per_epoch = args.val_iterations
        trainer.initialize()
        record["copied_tensors"] = load_into_nnunet(trainer.network, unetkit_initial_weights(root / "seed0" / "uk",
                                                                                             seed))
        np.random.seed(seed)  # nnU-Net's sampling and augmentation draw from numpy's global state
        t0 = time.perf_counter()
        trainer.run_training()
        record["train_seconds"] = round(time.perf_counter() - t0, 1)
        (run_root / "pseudo_dice.json").write_text(json.dumps(
            [[float(v) for v in d] for d in trainer.logger.local_logger.my_fantastic_logging["dice_per_class_or_region"]]))
    record["pseudo_dice"] = json.loads((run_root / "pseudo_dice.json").read_text())
    pred, ev = run_root / "pred", run_root / "eval"
    if not (ev / "summary.json").is_file():
        exe = Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"
        subprocess.run([str(exe), "-i", str(root / "test" / "images"), "-o", str(pred), "-m", str(model), "-f", "all",
                        "-chk", "checkpoint_final.pth", "-device", "cpu", "--disable_progress_bar"], check=True)
        env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
        subprocess.run(unetkit_cli("evaluate", str(pred), str(root / "test" / "labels"), "-l", "1", "2", "-o",
                                   str(ev), "--quiet"), check=True, env=env)
    record["test"] = json.loads((ev / "summary.json").read_text())
    (run_root / "swap_result.json").write_text(json.dumps(record, indent=2))
    return record


def test_dice(summary: dict) -> list[float]:
    """Per-class mean test Dice from ``unetkit evaluate``'s summary.json (classes 1, 2)."""
    means = summary.get("mean", summary.get("per_class_mean", {}))
    return [float(means[str(k)]["Dice"]) for k in (1, 2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="an accuracy_vs_nnunet.py work folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mode", choices=("nnunet-batches", "control", "nnunet-trainer-unetkit-init", "zero-heads"),
                        default="nnunet-batches",
                        help="nnunet-batches: unetkit's trainer on nnU-Net's batches; control: on its own batches "
                             "(same harness); nnunet-trainer-unetkit-init: nnU-Net's whole trainer started from the "
                             "weights unetkit train --seed S starts from; zero-heads: unetkit's own run with "
                             "the segmentation heads initialised to zero")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--iterations-per-epoch", type=int, default=10)
    parser.add_argument("--val-iterations", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--init-candidates", type=int, default=1,
                        help="unetkit's --init-candidates for the unetkit-trained modes (1, the single draw these "
                             "swaps were measured with; nnunet-trainer-unetkit-init always copies that draw)")
    args = parser.parse_args(argv)
    allow_main_site_packages()
    sys.path.insert(0, str(HERE.parent / "src"))
    sys.path.insert(0, str(HERE))
    from accuracy_vs_nnunet import take_off  # the seed table's definition
    root = args.workdir / "hippocampus"
    os.environ.update({"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "nn_pre"),
                       "nnUNet_results": str(root / "nn_results_unused"), "nnUNet_n_proc_DA": "0",
                       "nnUNet_compile": "false"})
    print("| batches | seed | test Dice anterior / posterior | mean | take-off (iteration) | train s |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        if args.mode == "nnunet-trainer-unetkit-init":
            r = nnunet_trainer_from_unetkit_init(root, seed, args)
        else:
            r = train_one(root, seed, args.mode, args)
        dice = test_dice(r["test"])
        t = take_off(r["pseudo_dice"], args.iterations_per_epoch)
        print(f"| {r['batches']} | {seed} | {dice[0]:.3f} / {dice[1]:.3f} | {np.mean(dice):.3f} | "
              f"{t if t is not None else 'never'} | {r.get('train_seconds', '-')} |", flush=True)
    print(f"\ncommand: PYTHONPATH=src {Path(sys.executable)} {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
