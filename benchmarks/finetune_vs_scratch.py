"""Fine-tuning from a pretrained model against training from scratch, on real shared data.

1. Import DRIVE (retinal vessels, RGB, 20 training images) and ISBI 2012 (EM membranes, grey, 30
   slices) from the shared datasets; plan both (CPU budget) and add the same small 2D network
   configuration to both plans (``2d_small``: 4 stages, 8-64 features, patch 128x128, batch 4).
2. Pretrain on all cases of the source (Kvasir-SEG subset by default, or DRIVE) (``--pretrain-iterations``).
3. On ISBI 2012 fold 0, for each seed: train from scratch and fine-tune from the DRIVE model
   (``pretrained``, ``pretrained_channels=average`` for RGB -> grey, optional encoder warm-up),
   with the same seed, the same batches and the same number of iterations. The learning curve is
   the pseudo-Dice of every epoch (``val_iterations`` batches of fold 0's validation cases).

Run::

    python benchmarks/finetune_vs_scratch.py --out /tmp/ft [--seeds 0 1] [--epochs 6]

Everything is written under ``--out`` (raw imports, work folders, ``results.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

SMALL_2D = {"inherits_from": "2d", "patch_size": [128, 128], "batch_size": 4,
            "architecture": {"name": "plain_unet", "kwargs": {
                "n_stages": 4, "features_per_stage": [8, 16, 32, 64], "kernel_sizes": [[3, 3]] * 4,
                "strides": [[1, 1], [2, 2], [2, 2], [2, 2]], "n_conv_per_stage": [2] * 4,
                "n_conv_per_stage_decoder": [2] * 3}}}


def prepare(raw: Path, work: Path, configurations: list[str]) -> None:
    """Plan (CPU budget), add the small configurations, preprocess the 2D data once."""
    from unetkit.planning.api import plan_dataset
    from unetkit.preprocessing.preprocess import preprocess_dataset
    from unetkit.utils.atomic import atomic_write_json

    plans_path = plan_dataset(raw, workdir=work, device="cpu", num_processes=1)
    plans = json.loads(plans_path.read_text())
    for name in configurations:
        plans["configurations"][name] = SMALL_2D
    atomic_write_json(plans_path, plans)
    preprocess_dataset(raw, workdir=work, configurations=["2d"], num_processes=1, progress=False)


def curve(output_dir: Path) -> list[float]:
    return json.loads((output_dir / "progress.json").read_text())["history"]["mean_fg_dice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of 10 iterations on the target")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="epochs of 10 iterations on DRIVE")
    parser.add_argument("--source", choices=["DRIVE", "Kvasir"], default="Kvasir", help="pretraining dataset")
    parser.add_argument("--source-cases", type=int, default=100, help="Kvasir-SEG images imported (of 1000)")
    parser.add_argument("--finetune-lr", type=float, default=None, help="learning rate when fine-tuning (1e-2)")
    parser.add_argument("--freeze", type=int, default=0, help="freeze_encoder_iterations when fine-tuning")
    args = parser.parse_args()
    from unetkit.data.importers import import_dataset
    from unetkit.training.trainer import train

    out = args.out.resolve()
    drive, isbi = out / "raw" / args.source, out / "raw" / "ISBI2012"
    if not drive.is_dir() and args.source == "DRIVE":
        import_dataset(args.shared / "DRIVE", drive, images="training/images", masks="training/1st_manual",
                       image_suffix="_training", mask_suffix="_manual1", labels="background=0,vessel=1",
                       num_processes=1)
        prepare(drive, out / "work", ["2d_small"])
    elif not drive.is_dir():
        import_dataset(args.shared / "Kvasir-SEG", drive, images="images", masks="masks", threshold=127,
                       labels="background=0,polyp=1", limit=args.source_cases, num_processes=1)
        prepare(drive, out / "work", ["2d_small"])
    if not isbi.is_dir():
        import_dataset(args.shared / "ISBI2012_EM", isbi, images="train/image", masks="train/label",
                       invert_mask=True, labels="background=0,membrane=1", num_processes=1)
        prepare(isbi, out / "work", ["2d_scratch", "2d_finetune"])
    common = {"iterations_per_epoch": 10, "val_iterations": 4, "num_workers": 0, "device": "cpu",
              "save_every": 100, "plot_every": 100}
    import shutil

    shutil.rmtree(out / "work" / args.source / "models", ignore_errors=True)  # pretrain afresh every time
    t0 = time.perf_counter()
    source = train(out / "work", drive, "2d_small", "all", {**common, "epochs": args.pretrain_epochs, "seed": 0},
                   echo=False).output_dir
    results = {"pretrain": {"dataset": args.source, "iterations": 10 * args.pretrain_epochs,
                            "seconds": time.perf_counter() - t0, "pseudo_dice": curve(source)}, "runs": []}
    for seed in args.seeds:
        for name, extra in (("2d_scratch", {}),
                            ("2d_finetune", {"pretrained": str(source), "pretrained_channels": "average",
                                             "freeze_encoder_iterations": args.freeze,
                                             **({"lr": args.finetune_lr} if args.finetune_lr else {})})):
            folder = out / "work" / "ISBI2012" / "models" / f"{name}__plain_unet" / "fold_0"
            shutil.rmtree(folder, ignore_errors=True)
            res = train(out / "work", isbi, name, 0, {**common, "epochs": args.epochs, "seed": seed, **extra},
                        echo=False)
            results["runs"].append({"seed": seed, "run": name, "pseudo_dice": curve(res.output_dir)})
            print(json.dumps(results["runs"][-1]), flush=True)
    results["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["pretrain"]))


if __name__ == "__main__":
    main()
