"""nnU-Net-trained weights predicted by unetkit's predictor: does inference carry a Dice difference?

Takes the model that ``batch_swap_vs_nnunet.py --mode nnunet-trainer-unetkit-init --seeds S``
trained with nnU-Net's own trainer, copies its weights key by key into a unetkit checkpoint (the
seed table's unetkit model folder of seed 1 gives the plan and architecture: nnU-Net's 3d_fullres
network), predicts the 52 test cases with ``unetkit predict`` and scores them with ``unetkit
evaluate``, beside nnU-Net's own prediction of the same weights. Run in nnU-Net's venv::

    PYTHONPATH=src .venv-nnunet/bin/python benchmarks/predict_nnunet_weights_with_unetkit.py \\
        --workdir /tmp/seedbench --seed 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from batch_swap_vs_nnunet import CONFIG, DATASET, allow_main_site_packages, unetkit_cli


def convert(nn_checkpoint: Path, template: Path, out: Path) -> int:
    """A unetkit ``checkpoint_final`` in ``out`` holding nnU-Net's weights; returns the tensor count."""
    import torch
    from recipe_vs_nnunet import convert_state_dict
    from safetensors.torch import load_file, save_file

    from unetkit.utils.atomic import atomic_write_json
    from unetkit.utils.hashing import file_sha256

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("checkpoint_final.json", "checkpoint_final.state.pt", "training_config.json"):
        shutil.copy(template / name, out / name)
    import numpy as np

    # nnU-Net's checkpoint holds numpy scalars in its logs besides the tensors: allow those data
    # types and nothing that could run code.
    numpy_data = [np._core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in ("float32", "float64", "int64"))]
    with torch.serialization.safe_globals(numpy_data):
        weights = torch.load(nn_checkpoint, map_location="cpu", weights_only=True)["network_weights"]
    converted = {k: v.contiguous() for k, v in convert_state_dict(weights).items()}
    expected = load_file(str(template / "checkpoint_final.safetensors"))
    if converted.keys() != expected.keys():
        raise SystemExit(f"error: the weights of {nn_checkpoint} do not map onto the network of {template}: "
                         f"keys only on one side: {sorted(set(converted) ^ set(expected))}")
    save_file(converted, str(out / "checkpoint_final.safetensors"))
    meta = json.loads((out / "checkpoint_final.json").read_text())
    meta["sha256"]["weights"] = file_sha256(out / "checkpoint_final.safetensors")
    atomic_write_json(out / "checkpoint_final.json", meta)
    return len(converted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="an accuracy_vs_nnunet.py work folder")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    allow_main_site_packages()
    root = args.workdir / "hippocampus"
    run_root = root / f"nntrainer_ukinit_seed{args.seed}"
    nn_checkpoint = (run_root / "nn_results" / DATASET / f"nnUNetTrainer__nnUNetPlans__{CONFIG}" / "fold_all"
                     / "checkpoint_final.pth")
    template = root / "seed1" / "uk" / DATASET / "models" / f"{CONFIG}__plain_unet" / "fold_all"
    fold = run_root / "unetkit_model" / "fold_all"
    count = convert(nn_checkpoint, template, fold)
    pred, ev = run_root / "pred_by_unetkit", run_root / "eval_pred_by_unetkit"
    subprocess.run(unetkit_cli("predict", "-i", str(root / "test" / "images"), "-o", str(pred), "-m", str(fold),
                               "--checkpoint", "final", "--device", "cpu", "--quiet"), check=True)
    subprocess.run(unetkit_cli("evaluate", str(pred), str(root / "test" / "labels"), "-l", "1", "2", "-o", str(ev),
                               "--quiet"), check=True)
    print(f"{count} tensors copied from {nn_checkpoint}")
    print("| predictor | test Dice anterior / posterior | mean |\n|---|---|---|")
    for name, summary in (("nnU-Net", run_root / "eval" / "summary.json"), ("unetkit", ev / "summary.json")):
        s = json.loads(summary.read_text())
        print(f"| {name} | {s['mean']['1']['Dice']:.4f} / {s['mean']['2']['Dice']:.4f} | "
              f"{s['foreground_mean']['Dice']:.4f} |")
    print(f"\ncommand: PYTHONPATH=src {Path(sys.executable)} {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
