"""Shared fixtures: synthetic raw datasets and the real datasets in ../shared/datasets."""

from __future__ import annotations

import os

# Before torch loads OpenMP: on a shared, oversubscribed CPU, spinning OpenMP threads make small
# tensor ops 10-20x slower; passive waiting keeps the test suite fast (see docs/models.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest

from unetkit.data.synthetic import write_raw_dataset

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of a dataset in ../shared/datasets, or skip the test with the reason."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not found at {path} (needs ../shared/datasets beside the checkout)")
    return path


@pytest.fixture
def raw3d(tmp_path) -> Path:
    """A tiny 3D raw dataset (8 NIfTI cases, 1 channel, 2 foreground classes)."""
    return write_raw_dataset(tmp_path / "Synthetic3D", num_cases=8, ndim=3)


@pytest.fixture
def raw2d(tmp_path) -> Path:
    """A tiny 2D raw dataset (8 PNG cases, 1 channel, 1 foreground class)."""
    return write_raw_dataset(tmp_path / "Synthetic2D", num_cases=8, ndim=2, num_classes=1,
                             shape_range=(40, 56))


@pytest.fixture
def trained_model(raw3d, tmp_path) -> tuple[Path, Path]:
    """(raw dataset, trained configuration folder with fold 0): 1 epoch x 3 iterations, about 10 s."""
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import train

    work = tmp_path / "work"
    plan_dataset(raw3d, work, num_processes=1)
    preprocess_dataset(raw3d, work, configurations=["3d_fullres"], num_processes=1, progress=False)
    result = train(work, raw3d, "3d_fullres", 0, {"epochs": 1, "iterations_per_epoch": 3, "val_iterations": 1,
                                                  "num_workers": 0, "device": "cpu", "batch_size": 2}, echo=False)
    return raw3d, result.output_dir.parent

def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """List every test marked ``reference`` with its outcome, so a log shows that the independent
    references (MONAI, dynamic-network-architectures, nnU-Net, scipy, ...) ran rather than skipped."""
    rows = []
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            keywords = getattr(report, "keywords", {})
            if "reference" in keywords and (report.when == "call" or outcome in ("skipped", "error")):
                rows.append((outcome.upper(), report.nodeid))
    if rows:
        terminalreporter.section("independent references")
        counts = {o: sum(1 for r in rows if r[0] == o) for o in ("PASSED", "FAILED", "ERROR", "SKIPPED")}
        for outcome, nodeid in sorted(rows, key=lambda r: r[1]):
            terminalreporter.write_line(f"{outcome:8s} {nodeid}")
        terminalreporter.write_line(", ".join(f"{n} {o.lower()}" for o, n in counts.items() if n))
