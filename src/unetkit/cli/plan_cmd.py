"""Extract the dataset fingerprint and write plans.json (nnU-Net v2's self-configuration rules).

Writes WORKDIR/NAME/fingerprint.json (reused on later runs unless --force; it is the slow
part) and WORKDIR/NAME/plans.json: configurations 2d, 3d_fullres and, when the full-resolution
patch covers too little of the median image, 3d_lowres. plans.json is plain JSON; edit it
freely (unetkit checks it on every read).

Budget: --memory-gb is in nnU-Net's GPU-memory units (8 = nnU-Net's default plan). On a
CPU-only machine use --device cpu (a 0.5 GB budget: smaller patches and batches, so a training
iteration takes seconds, not minutes). See docs/planning.md.

Planner: --planner default plans nnU-Net's plain U-Net; resenc_m, resenc_l and resenc_xl plan like
nnU-Net's nnUNetPlannerResEncM/L/XL (targets 8, 24, 40 GB unless --memory-gb or --device says
otherwise) and write the resenc_unet_m/l/xl model into plans.json, which `unetkit train` builds.

examples:
  unetkit plan raw/Hippocampus
  unetkit plan raw/Hippocampus --device cpu --workdir work
  unetkit plan raw/Hippocampus --memory-gb 24 --force
  unetkit plan raw/Hippocampus --planner resenc_l
  unetkit plan raw/DRIVE --plans-from unetkit_work/Kvasir   # Kvasir's network, for fine-tuning
"""

from __future__ import annotations

import argparse
import sys

from unetkit.planning.planner import PLANNER_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="raw dataset folder (dataset.json, imagesTr/, labelsTr/)")
    parser.add_argument("--workdir", default=None, help="work root (default ./unetkit_work); writes WORKDIR/NAME/")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--memory-gb", type=float, default=None,
                        help="planning budget in GB of GPU memory, nnU-Net's units (default 8, or the --device preset)")
    budget.add_argument("--device", choices=["gpu", "cpu"], default=None,
                        help="budget preset: gpu = 8 GB (nnU-Net's default), cpu = 0.5 GB (iterations of seconds "
                             "on a few CPU cores)")
    parser.add_argument("--planner", choices=list(PLANNER_NAMES), default="default",
                        help=("default = nnU-Net's ExperimentPlanner (plain U-Net); resenc_m/resenc_l/resenc_xl = "
                              "nnU-Net's residual-encoder planners (resenc_unet_* models, 8/24/40 GB targets)"))
    parser.add_argument("--num-processes", "-np", type=int, default=None,
                        help="worker processes for fingerprinting (default: CPUs, at most 8)")
    parser.add_argument("--plans-from", metavar="SOURCE_WORKDIR_OR_PLANS", default=None,
                        help="take the network, patch and batch of each shared configuration from another "
                             "dataset's plans (its work folder WORKDIR/NAME or plans.json), so that its trained "
                             "weights fit (unetkit train --pretrained); spacing and normalization stay this dataset's")
    parser.add_argument("--force", action="store_true", help="extract the fingerprint again even if it exists")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the path of plans.json")


def _summary(plans: dict) -> str:
    lines = [f"plans for {plans['dataset_name']} (planner {plans.get('planner_preset', 'default')}, "
             f"budget {plans['memory_budget_gb']:g} GB, "
             f"transpose {plans['transpose_forward']}):"]
    for name, cfg in plans["configurations"].items():
        kw = cfg["architecture"]["kwargs"]
        spacing = "x".join(f"{s:.3g}" for s in cfg["spacing"])
        lines.append(f"  {name:<11} spacing {spacing} mm, patch {'x'.join(map(str, cfg['patch_size']))}, "
                     f"batch {cfg['batch_size']}, {cfg['architecture']['name']} with {kw['n_stages']} stages "
                     f"{kw['features_per_stage']}, "
                     f"norm {cfg['normalization_schemes']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from unetkit.planning import load_plans, plan_dataset

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr)

    last = {"shown": -1}

    def progress(done: int, total: int) -> None:
        if args.quiet or not sys.stderr.isatty():
            return
        percent = done * 100 // total
        if percent != last["shown"]:
            last["shown"] = percent
            print(f"\rfingerprint: {done}/{total} cases", end="" if done < total else "\n", file=sys.stderr)

    try:
        # Neither --memory-gb nor --device: the planner's own target (8 GB; ResEnc L 24, XL 40).
        path = plan_dataset(args.dataset, workdir=args.workdir, memory_gb=args.memory_gb,
                            num_processes=args.num_processes, force=args.force, device=args.device,
                            log=log, progress=progress, planner=args.planner,
                            plans_from=args.plans_from)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(_summary(load_plans(path)), file=sys.stderr)
    print(path)
    return 0
