"""The seed table of benchmarks/accuracy_vs_nnunet.py (issue 14): take-off and goals, hand-worked."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("accuracy_vs_nnunet")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_take_off_is_the_end_of_the_first_epoch_with_every_class_above_one_half(bench) -> None:
    # 10 iterations per epoch. Epoch 0: posterior 0.6 but anterior 0.4 -> no; epoch 1: anterior NaN
    # (never occurred in the validation batches) -> no; epoch 2: 0.51 and 0.7 -> take-off at the end
    # of epoch 2 = iteration 30. Exactly 0.5 does not exceed 0.5.
    dice = [[0.4, 0.6], [float("nan"), 0.9], [0.51, 0.7], [0.9, 0.9]]
    assert bench.take_off(dice, 10) == 30
    assert bench.take_off([[0.5, 0.9], [0.2, 0.9]], 10) is None
    assert bench.take_off([], 10) is None


def _run(seed: int, uk: tuple[float, float], nn: tuple[float, float], uk_took, nn_took) -> tuple[dict, dict]:
    train = {"seed": seed, "unetkit": {"take_off": uk_took}, "nnunet": {"take_off": nn_took}}
    dice = lambda a, p: {"Anterior": a, "Posterior": p, "mean": (a + p) / 2}  # noqa: E731
    return train, {"unetkit": {"dice": dice(*uk)}, "nnunet": {"dice": dice(*nn)}}


def test_seed_table_means_sd_and_goals(bench) -> None:
    # unetkit means 0.80, 0.60, 0.70 -> mean 0.70; nnU-Net 0.80, 0.76, 0.78 -> mean 0.78, sd 0.02.
    # 0.70 < 0.78 - 0.02: the Dice goal is not met. unetkit never took off once, nnU-Net never: NOT met.
    runs = [_run(0, (0.8, 0.8), (0.8, 0.8), 100, 120), _run(1, (0.9, 0.3), (0.76, 0.76), None, 90),
            _run(2, (0.7, 0.7), (0.78, 0.78), 150, 200)]
    text = "\n".join(bench.seed_table("hippocampus", runs))
    assert "unetkit     mean  0.800 / 0.600" in text
    assert "0.700" in text and "(sd of the mean Dice 0.100, n = 3)" in text
    assert "(sd of the mean Dice 0.020, n = 3)" in text
    assert "goal mean test Dice within one sd of nnU-Net's or better: NOT met" in text
    assert "goal no more runs without take-off than nnU-Net: NOT met (unetkit 1 of 3, nnU-Net 0 of 3)" in text
    # unetkit 0.77 >= 0.78 - 0.02: within one sd
    runs[1] = _run(1, (0.81, 0.81), (0.76, 0.76), 80, 90)
    text = "\n".join(bench.seed_table("hippocampus", runs))
    assert "within one sd of nnU-Net's or better: met (unetkit 0.770 vs nnU-Net 0.780 +- 0.020)" in text
    assert "take-off than nnU-Net: met" in text
