"""Independent references for the tests (MONAI, dynamic-network-architectures, nnU-Net v2).

A reference that is skipped in CI proves nothing, so these helpers skip only on a developer's
machine that lacks the reference; under CI (``CI`` set, as ``.ci/run`` runs) a missing reference
fails the test. ``.ci/run`` installs every reference: MONAI and scikit-posthocs through the ``dev``
extra, dynamic-network-architectures without its torchvision chain, nnU-Net v2 in its own venv
(``benchmarks/setup_nnunet_venv.sh``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
#: nnU-Net v2's comparison venv (benchmarks/setup_nnunet_venv.sh); UNETKIT_NNUNET_PYTHON overrides.
NNUNET_PYTHON = Path(os.environ.get("UNETKIT_NNUNET_PYTHON", REPO / ".venv-nnunet" / "bin" / "python"))


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def missing_reference(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where every reference must run."""
    if in_ci():
        pytest.fail(f"reference missing in CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)  # also from a module top (a whole file needs it)


def require_module(name: str, install_hint: str) -> ModuleType:
    """Import a reference library, or skip (locally) / fail (CI) with how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing_reference(f"{name} is not importable ({exc}); {install_hint}")
        raise  # unreachable: missing_reference raises


def require_nnunet_python() -> Path:
    """The python of nnU-Net v2's comparison venv, or skip (locally) / fail (CI)."""
    if not NNUNET_PYTHON.exists():
        missing_reference(f"nnU-Net venv not found at {NNUNET_PYTHON} (bash benchmarks/setup_nnunet_venv.sh)")
    return NNUNET_PYTHON
