#!/usr/bin/env bash
# Create the nnU-Net v2 comparison environment used by the benchmarks and by docs/planning.md.
#
#   bash benchmarks/setup_nnunet_venv.sh [VENV]      (default: <repo>/.venv-nnunet, git-ignored)
#
# What it installs and why:
#   1. torch==2.13.0, CPU build, first (pip finds the wheel in the configured find-links folder
#      /opt/wheels when present; TORCH_EXTRA_INDEX may name a CPU-only index elsewhere).
#   2. nnunetv2==2.8.1, dynamic-network-architectures==0.4.4 and batchgeneratorsv2 with
#      --no-deps, then their dependencies by name with torch pinned (constraint file).
#      Reason: dynamic-network-architectures requires timm, and timm requires torchvision.
#      Resolving that chain makes pip replace torch 2.13.0 CPU by a multi-GB CUDA build of a
#      newer torch (PyPI's torchvision wheels do not import beside torch 2.13.0). timm is only
#      imported by the Primus/EVA architectures (dynamic_network_architectures.architectures.
#      primus, dinov2_eva); the import paths of nnUNetv2_plan_and_preprocess and nnUNetv2_train
#      with the default PlainConvUNet never touch timm or torchvision (checked at the end).
#      So timm and torchvision are left out: the lightest working combination.
# Idempotent: rerunning on a finished venv only repeats the import check.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-nnunet}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --quiet)
CONSTRAINTS="$VENV/torch-constraint.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

if ! "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    "${PIP[@]}" "torch==$TORCH_VERSION" ${TORCH_EXTRA_INDEX:+--extra-index-url "$TORCH_EXTRA_INDEX"}
fi
# batchgenerators is pinned: nnU-Net's label resampling is its resize_segmentation, whose rule
# changed between releases (0.25.1: each class thresholded at 0.5 in turn; 0.25.5: argmax with
# nearest-neighbour ties), and unetkit's resample_label is tested voxel for voxel against 0.25.5.
if ! "$PY" -c "import nnunetv2, dynamic_network_architectures, batchgeneratorsv2, sys, importlib.metadata as m
sys.exit(m.version('batchgenerators') != '0.25.5')" 2>/dev/null; then
    "${PIP[@]}" --no-deps "nnunetv2==2.8.1" "dynamic-network-architectures==0.4.4" "batchgeneratorsv2==0.3.6"
    # nnunetv2's, acvl-utils', batchgenerators(v2)' and dynamic-network-architectures' own
    # requirements, minus timm (and so torchvision).
    "${PIP[@]}" -c "$CONSTRAINTS" \
        "acvl-utils>=0.2.6,<0.3" "batchgenerators==0.25.5" tqdm scipy "numpy>=1.24" scikit-learn \
        "scikit-image>=0.19.3" "SimpleITK>=2.2.1" pandas graphviz tifffile requests nibabel matplotlib \
        seaborn imagecodecs yacs einops "blosc2>=3.3.2" connected-components-3d
fi

# The modules nnUNetv2_plan_and_preprocess and nnUNetv2_train import; fails loudly if any of
# them needed a missing package.
"$PY" - <<'PY'
import importlib, sys
mods = [
    "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints",
    "nnunetv2.experiment_planning.experiment_planners.default_experiment_planner",
    "nnunetv2.preprocessing.preprocessors.default_preprocessor",
    "nnunetv2.run.run_training",
    "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "dynamic_network_architectures.architectures.unet",
]
for m in mods:
    importlib.import_module(m)
import torch
print(f"nnU-Net venv ready: python {sys.version.split()[0]}, torch {torch.__version__}, "
      f"torchvision {'imported' if 'torchvision' in sys.modules else 'not needed'}")
PY
echo "activate with: source $VENV/bin/activate  (commands: nnUNetv2_plan_and_preprocess, nnUNetv2_train)"
