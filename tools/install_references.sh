#!/usr/bin/env bash
# Install the independent references the test suite checks unetkit against, beside `.[dev]`:
#   - dynamic-network-architectures 0.4.4 (nnU-Net's network library) into this environment,
#     without its dependencies: they pull timm -> torchvision -> a multi-GB CUDA torch, and the
#     U-Net classes the tests compare against need only torch and numpy;
#   - nnU-Net v2.8.1 in its own venv at .venv-nnunet (benchmarks/setup_nnunet_venv.sh): the
#     resampling and plan parity tests call it in a subprocess, never import it.
# MONAI, statsmodels and scikit-posthocs come with the dev extra. .ci/run runs this script, and
# tests/references.py fails (in CI) or skips (elsewhere) a test whose reference is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --disable-pip-version-check --quiet --no-deps "dynamic-network-architectures==0.4.4"
bash benchmarks/setup_nnunet_venv.sh .venv-nnunet
