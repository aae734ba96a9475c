"""The state the network of ``unetkit train --seed S`` starts from, for many seeds (issue 14).

For each seed: torch seeded as ``unetkit train`` seeds it, the plan's network built (the
weights training starts from), then, without any training step, the training loss (Dice + CE
with deep supervision) on a few fixed augmented training batches and the mean softmax
probability of each class. Prints one row per seed and the mean +- sd. A start whose loss lies
far above the others is the kind that took off late or never in the seed table (seeds 0 and 19
on Hippocampus; docs/training.md, "What the seed table shows").

Reads an ``accuracy_vs_nnunet.py`` work folder (seed 0's unetkit plan and cache)::

    python benchmarks/initial_state_scan.py --workdir /tmp/seedbench --seeds 40

About 2 s per seed on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

DATASET = "Dataset908_Hippocampus"
CONFIG = "3d_fullres"


def fixed_batches(work: Path, entry: dict, count: int, seed: int) -> list[dict]:
    from unetkit.training.loader import make_training_batch_fn

    folder = work / "preprocessed" / CONFIG
    cases = sorted(p.name[:-5] for p in folder.glob("*.json"))
    batch_fn = make_training_batch_fn(folder, entry, 2, seed, case_names=cases, augment=True,
                                      oversample_foreground=0.33, device="cpu")
    return [batch_fn(i) for i in range(count)]


def initial_state(plans: dict, entry: dict, seed: int, batches: list[dict]) -> tuple[float, list[float]]:
    """(mean loss, mean class probabilities) of the untrained network of ``--seed seed``."""
    from unetkit.training.config import TrainingConfig
    from unetkit.training.loss import LossSpec, build_loss
    from unetkit.training.trainer import build_network, label_info, network_spec

    config = TrainingConfig(epochs=50, batch_size=2, arch="plain_unet", seed=seed)
    torch.manual_seed(seed)  # as configure_determinism does before the network is built
    network = build_network(network_spec(plans, entry, config, label_info(plans).num_heads)).train()
    loss_fn = build_loss(LossSpec(batch_dice=bool(entry.get("batch_dice", False))))
    losses, probabilities = [], []
    with torch.no_grad():
        for batch in batches:
            outputs = network(batch["data"])
            losses.append(loss_fn(outputs, batch["target"]).item())
            probabilities.append(torch.softmax(outputs[0], 1).mean((0, *range(2, outputs[0].ndim))).numpy())
    return float(np.mean(losses)), np.mean(probabilities, 0).round(3).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="an accuracy_vs_nnunet.py work folder")
    parser.add_argument("--seeds", type=int, default=40, help="seeds 0 .. N-1")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = args.workdir / "hippocampus" / "seed0" / "uk" / DATASET
    plans = json.loads((work / "plans.json").read_text())
    entry = plans["configurations"][CONFIG]
    torch.set_num_threads(1)
    batches = fixed_batches(work, entry, args.batches, seed=1234)
    rows = []
    print("| seed | initial loss | mean probability per class |\n|---|---|---|")
    for seed in range(args.seeds):
        loss, probabilities = initial_state(plans, entry, seed, batches)
        rows.append({"seed": seed, "loss": loss, "probabilities": probabilities})
        print(f"| {seed} | {loss:.3f} | {' / '.join(f'{p:.2f}' for p in probabilities)} |", flush=True)
    losses = np.array([r["loss"] for r in rows])
    print(f"\ninitial loss over {len(rows)} seeds: mean {losses.mean():.3f} +- {losses.std(ddof=1):.3f}, "
          f"highest: seeds {[int(s) for s in np.argsort(-losses)[:3]]}")
    print(f"command: python {' '.join(sys.argv)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
