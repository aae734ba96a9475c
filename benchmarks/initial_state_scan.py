"""The state the network of ``unetkit train --seed S`` starts from, for many seeds (issue 14).

For each seed: torch seeded as ``unetkit train`` seeds it, the plan's network built (the
weights training starts from), then, without any training step, the training loss (Dice + CE
with deep supervision) on a few fixed augmented training batches and the mean softmax
probability of each class. Prints one row per seed and the mean +- sd. A start whose loss lies
far above the others is the kind that took off late or never in the seed table (seeds 0 and 19
on Hippocampus; docs/training.md, "What the seed table shows").

Reads an ``accuracy_vs_nnunet.py`` work folder (seed 0's unetkit plan and cache)::

    python benchmarks/initial_state_scan.py --workdir /tmp/seedbench --seeds 40

About 2 s per seed on 2 CPU cores. Two variants:

* ``--candidates K``: the network ``unetkit train --seed S`` now starts from, the best of K draws
  by the loss on that seed's first 4 training batches (training/init_selection.py); it is then
  scored on the fixed batches like the single draws (about 8 s per seed with K = 4).
* ``--network nnunet`` (run in nnU-Net's venv with unetkit on the path, ``PYTHONPATH=src
  .venv-nnunet/bin/python ...``): nnU-Net's own network, built by ``get_network_from_plans`` from
  its plan after ``torch.manual_seed(S)``, on the same batches with the same loss; ``--compare
  A.json B.json`` then tests whether two scans' initial losses come from one distribution
  (Kolmogorov-Smirnov and Mann-Whitney U, scipy.stats).
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


def loss_and_probabilities(network: torch.nn.Module, entry: dict, batches: list[dict]) -> tuple[float, list[float]]:
    """(mean loss, mean class probabilities) of ``network`` on ``batches``, without a step."""
    from unetkit.training.loss import LossSpec, build_loss

    loss_fn = build_loss(LossSpec(batch_dice=bool(entry.get("batch_dice", False))))
    losses, probabilities = [], []
    network.train()
    with torch.no_grad():
        for batch in batches:
            outputs = network(batch["data"])
            losses.append(loss_fn(outputs, batch["target"]).item())
            probabilities.append(torch.softmax(outputs[0], 1).mean((0, *range(2, outputs[0].ndim))).numpy())
    return float(np.mean(losses)), np.mean(probabilities, 0).round(3).tolist()


def unetkit_network(work: Path, plans: dict, entry: dict, seed: int, candidates: int) -> tuple[torch.nn.Module, int]:
    """The network ``unetkit train --seed seed --init-candidates candidates`` starts from, and the
    candidate it is (the choice is made on the seed's own first training batches, as in training)."""
    from unetkit.training.config import TrainingConfig
    from unetkit.training.init_selection import select_initialization
    from unetkit.training.loss import LossSpec, build_loss
    from unetkit.training.trainer import (
        INIT_SCORE_BATCHES,
        build_network,
        label_info,
        network_spec,
    )

    config = TrainingConfig(epochs=50, batch_size=2, arch="plain_unet", seed=seed)
    spec = network_spec(plans, entry, config, label_info(plans).num_heads)
    own = fixed_batches(work, entry, INIT_SCORE_BATCHES, seed) if candidates > 1 else []
    torch.manual_seed(seed)  # as configure_determinism does before the network is built
    network, record = select_initialization(lambda: build_network(spec), candidates, own,
                                            build_loss(LossSpec(batch_dice=bool(entry.get("batch_dice", False)))),
                                            lambda data: data)
    return network, record.chosen


def nnunet_network(nn_pre: Path, seed: int) -> torch.nn.Module:
    """nnU-Net's 3d_fullres network as its trainer builds it, after ``torch.manual_seed(seed)``."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    base = nn_pre / DATASET
    manager = PlansManager(json.loads((base / "nnUNetPlans.json").read_text()))
    cm = manager.get_configuration(CONFIG)
    num_outputs = len(json.loads((base / "dataset.json").read_text())["labels"])
    torch.manual_seed(seed)
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 1, num_outputs, allow_init=True,
                                  deep_supervision=True)


def compare(first: Path, second: Path) -> int:
    from scipy import stats

    a = np.array([r["loss"] for r in json.loads(first.read_text())])
    b = np.array([r["loss"] for r in json.loads(second.read_text())])
    ks, mw = stats.ks_2samp(a, b), stats.mannwhitneyu(a, b)
    print(f"{first}: n {len(a)}, mean {a.mean():.3f} +- {a.std(ddof=1):.3f}, above 1.75: {int((a > 1.75).sum())}")
    print(f"{second}: n {len(b)}, mean {b.mean():.3f} +- {b.std(ddof=1):.3f}, above 1.75: {int((b > 1.75).sum())}")
    print(f"Kolmogorov-Smirnov D {ks.statistic:.3f}, p {ks.pvalue:.3g}; Mann-Whitney U {mw.statistic:.0f}, "
          f"p {mw.pvalue:.3g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="an accuracy_vs_nnunet.py work folder")
    parser.add_argument("--seeds", type=int, default=40, help="seeds 0 .. N-1")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=1, help="unetkit's --init-candidates (1: one draw)")
    parser.add_argument("--network", choices=("unetkit", "nnunet"), default="unetkit")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare", type=Path, nargs=2, metavar="SCAN_JSON", help="compare two scans' losses")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.network == "nnunet":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from batch_swap_vs_nnunet import allow_main_site_packages

        allow_main_site_packages()  # unetkit's batches and loss need safetensors, which nnU-Net's venv lacks
    work = args.workdir / "hippocampus" / "seed0" / "uk" / DATASET
    plans = json.loads((work / "plans.json").read_text())
    entry = plans["configurations"][CONFIG]
    torch.set_num_threads(1)
    batches = fixed_batches(work, entry, args.batches, seed=1234)
    rows = []
    print("| seed | network | initial loss | mean probability per class |\n|---|---|---|---|")
    for seed in range(args.seeds):
        if args.network == "nnunet":
            network, which = nnunet_network(args.workdir / "hippocampus" / "nn_pre", seed), "nnU-Net"
        else:
            network, chosen = unetkit_network(work, plans, entry, seed, args.candidates)
            which = f"candidate {chosen} of {args.candidates}"
        loss, probabilities = loss_and_probabilities(network, entry, batches)
        rows.append({"seed": seed, "network": which, "loss": loss, "probabilities": probabilities})
        print(f"| {seed} | {which} | {loss:.3f} | {' / '.join(f'{p:.2f}' for p in probabilities)} |", flush=True)
    losses = np.array([r["loss"] for r in rows])
    print(f"\ninitial loss over {len(rows)} seeds: mean {losses.mean():.3f} +- {losses.std(ddof=1):.3f}, "
          f"highest: seeds {[int(s) for s in np.argsort(-losses)[:3]]}, above 1.75: {int((losses > 1.75).sum())}")
    print(f"command: python {' '.join(sys.argv)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
