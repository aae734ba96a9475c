"""Planning rules (spacing, transpose, topology, memory, batch, lowres, normalization), plans.json
validation, plan_dataset/CLI, and agreement with nnU-Net v2.8.1's planner.

The expected plans in NNUNET_PLANS were produced by running nnU-Net v2.8.1's
``ExperimentPlanner`` (default planner, 8 GB unless stated) on exactly the constructed
fingerprints in CASES, in the comparison venv made by benchmarks/setup_nnunet_venv.sh.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from unetkit.cli import main as cli_main
from unetkit.planning import (DEVICE_MEMORY_GB, PlannerSettings, PlansError, load_plans, plan_configuration,
                              plan_dataset, plan_experiment, validate_plans)
from unetkit.planning.memory import feature_map_elements
from unetkit.planning.planner import fullres_target_spacing, normalization_for, transpose_for
from unetkit.planning.topology import features_per_stage, pad_to_multiple, pool_and_conv_props

from test_fingerprint import hippocampus_raw

def _cycle(values, n):
    return [values[i % len(values)] for i in range(n)]


L3 = {"background": 0, "a": 1, "b": 2}
#: Constructed fingerprints (spacings mm, shapes after crop) and nnU-Net v2.8.1's plan for each.
CASES = {
    "isotropic_brain": dict(
        spacings=[[1.0, 1.0, 1.0]] * 40,
        shapes=[[a, b, c] for a, b, c in zip(_cycle([130, 138, 145], 40), _cycle([160, 169, 175, 180], 40),
                                             _cycle([128, 138, 150], 40))],
        channel_names={"0": "T1", "1": "T2"}, labels=L3, rel=0.6),
    "anisotropic_ct": dict(
        spacings=[[s, 0.78, 0.78] for s in _cycle([1.25, 2.5, 5.0, 2.5, 5.0], 30)],
        shapes=[[z, 512, 512] for z in _cycle([80, 120, 150, 200], 30)],
        channel_names={"0": "CT"}, labels={"background": 0, "liver": 1}, rel=0.9),
    "thick_slices": dict(
        spacings=[[s, 1.5, 1.5] for s in _cycle([5.0, 6.0, 10.0, 10.0], 20)],
        shapes=[[z, 220, 230] for z in _cycle([9, 10, 11], 20)],
        channel_names={"0": "cineMRI"}, labels=L3, rel=1.0),
    "coarse_last_axis": dict(
        spacings=[[0.7, 0.7, s] for s in _cycle([3.0, 4.0, 5.0], 25)],
        shapes=[[400, 390, z] for z in _cycle([35, 40, 48], 25)],
        channel_names={"0": "noNorm"}, labels=L3, rel=0.8),
    "tiny": dict(
        spacings=[[1.0, 1.0, 1.0], [1.0, 0.98, 1.0], [1.02, 1.0, 1.0]],
        shapes=[[20, 24, 22], [22, 25, 20], [19, 23, 21]],
        channel_names={"0": "MRI"}, labels=L3, rel=1.0),
    "large_ct_lowres": dict(
        spacings=[[0.8, 0.8, 0.8]] * 50,
        shapes=[[a, b, c] for a, b, c in zip(_cycle([380, 400, 420], 50), _cycle([390, 400, 410, 430], 50),
                                             _cycle([360, 400, 440], 50))],
        channel_names={"0": "CT"}, labels=L3, rel=0.9),
    "rescale_small_crop": dict(
        spacings=[[2.0, 0.5, 0.5]] * 12,
        shapes=[[a, b, b] for a, b in zip(_cycle([55, 60, 66], 12), _cycle([280, 300, 320], 12))],
        channel_names={"0": "rescale_to_0_1"}, labels=L3, rel=0.5),
    "pictures_as_nnunet_sees_them": dict(
        spacings=[[999.0, 1.0, 1.0]] * 30, shapes=[[1, 584, 565]] * 30,
        channel_names={"0": "R", "1": "G", "2": "B"}, labels={"background": 0, "vessel": 1}, rel=1.0),
    "isotropic_half_gb": dict(
        spacings=[[1.0, 1.0, 1.0]] * 40,
        shapes=[[a, b, c] for a, b, c in zip(_cycle([130, 138, 145], 40), _cycle([160, 169, 175, 180], 40),
                                             _cycle([128, 138, 150], 40))],
        channel_names={"0": "T1"}, labels=L3, rel=1.0, gb=0.5),
}


NNUNET_PLANS = {
    'isotropic_brain': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[1.0, 1.0], patch_size=[192, 160], batch_size=106,
                    batch_dice=True, norm=['ZScore', 'ZScore'], mask=[True, True],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_fullres': dict(spacing=[1.0, 1.0, 1.0], patch_size=[128, 128, 128], batch_size=2,
                    batch_dice=False, norm=['ZScore', 'ZScore'], mask=[True, True],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'anisotropic_ct': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[0.78, 0.78], patch_size=[512, 512], batch_size=12,
                    batch_dice=True, norm=['CT'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_lowres': dict(spacing=[2.540993, 1.585579, 1.585579], patch_size=[96, 160, 160], batch_size=2,
                    batch_dice=False, norm=['CT'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
        '3d_fullres': dict(spacing=[1.25, 0.78, 0.78], patch_size=[96, 160, 160], batch_size=2,
                    batch_dice=True, norm=['CT'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'thick_slices': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[1.5, 1.5], patch_size=[224, 256], batch_size=14,
                    batch_dice=True, norm=['ZScore'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_fullres': dict(spacing=[5.0, 1.5, 1.5], patch_size=[16, 224, 256], batch_size=2,
                    batch_dice=False, norm=['ZScore'], mask=[False],
                    strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
                    kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'coarse_last_axis': {
        "transpose_forward": [2, 0, 1],
        '2d': dict(spacing=[0.7, 0.7], patch_size=[448, 448], batch_size=16,
                    batch_dice=True, norm=['NoNorm'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_fullres': dict(spacing=[3.0, 0.7, 0.7], patch_size=[32, 256, 224], batch_size=2,
                    batch_dice=False, norm=['NoNorm'], mask=[False],
                    strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'tiny': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[1.0, 1.0], patch_size=[24, 24], batch_size=3,
                    batch_dice=True, norm=['ZScore'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3]]),
        '3d_fullres': dict(spacing=[1.0, 1.0, 1.0], patch_size=[20, 24, 24], batch_size=2,
                    batch_dice=False, norm=['ZScore'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'large_ct_lowres': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[0.8, 0.8], patch_size=[448, 448], batch_size=16,
                    batch_dice=True, norm=['CT'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_lowres': dict(spacing=[1.578869, 1.578869, 1.578869], patch_size=[128, 128, 128], batch_size=2,
                    batch_dice=False, norm=['CT'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
        '3d_fullres': dict(spacing=[0.8, 0.8, 0.8], patch_size=[128, 128, 128], batch_size=2,
                    batch_dice=True, norm=['CT'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'rescale_small_crop': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[0.5, 0.5], patch_size=[320, 320], batch_size=32,
                    batch_dice=True, norm=['RescaleTo01'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_fullres': dict(spacing=[2.0, 0.5, 0.5], patch_size=[40, 224, 192], batch_size=2,
                    batch_dice=False, norm=['RescaleTo01'], mask=[False],
                    strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
    'pictures_as_nnunet_sees_them': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[1.0, 1.0], patch_size=[640, 640], batch_size=2,
                    batch_dice=True, norm=['ZScore', 'ZScore', 'ZScore'], mask=[False, False, False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
    },
    'isotropic_half_gb': {
        "transpose_forward": [0, 1, 2],
        '2d': dict(spacing=[1.0, 1.0], patch_size=[192, 160], batch_size=7,
                    batch_dice=True, norm=['ZScore'], mask=[False],
                    strides=[[1, 1], [2, 2], [2, 2], [2, 2], [2, 2], [2, 2]],
                    kernel_sizes=[[3, 3], [3, 3], [3, 3], [3, 3], [3, 3], [3, 3]]),
        '3d_lowres': dict(spacing=[1.806111, 1.806111, 1.806111], patch_size=[48, 64, 48], batch_size=2,
                    batch_dice=False, norm=['ZScore'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
        '3d_fullres': dict(spacing=[1.0, 1.0, 1.0], patch_size=[48, 64, 48], batch_size=2,
                    batch_dice=True, norm=['ZScore'], mask=[False],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                    kernel_sizes=[[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]),
    },
}


def _fingerprint(case: dict) -> dict:
    return {"spacings": case["spacings"], "shapes_after_crop": case["shapes"],
            "median_relative_size_after_cropping": case["rel"],
            "foreground_intensity_properties_per_channel": {}}


# ------------------------------------------------------------------------ agreement with nnU-Net

@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_matches_nnunet(name):
    case = CASES[name]
    plans = plan_experiment(_fingerprint(case), case["channel_names"], case["labels"],
                            settings=PlannerSettings(memory_gb=case.get("gb", 8.0)))
    expected = NNUNET_PLANS[name]
    assert plans["transpose_forward"] == expected["transpose_forward"]
    # NNUNET_PLANS records the planned configurations; nnU-Net adds the 3d_cascade_fullres
    # pointer entry whenever 3d_lowres exists (tests/test_cascade_reference.py compares it).
    cascade = {"3d_cascade_fullres"} if "3d_lowres" in expected else set()
    assert set(plans["configurations"]) == (set(expected) - {"transpose_forward"}) | cascade
    for config, exp in expected.items():
        if config == "transpose_forward":
            continue
        got = plans["configurations"][config]
        kwargs = got["architecture"]["kwargs"]
        assert got["patch_size"] == exp["patch_size"], config
        assert got["batch_size"] == exp["batch_size"], config
        assert got["batch_dice"] == exp["batch_dice"], config
        assert got["spacing"] == pytest.approx(exp["spacing"], abs=1e-5), config
        assert kwargs["strides"] == exp["strides"], config
        assert kwargs["kernel_sizes"] == exp["kernel_sizes"], config
        assert got["normalization_schemes"] == exp["norm"] and got["use_mask_for_norm"] == exp["mask"]
        n = kwargs["n_stages"]
        assert kwargs["features_per_stage"] == list(features_per_stage(n, 320 if len(got["spacing"]) == 3 else 512))
        assert kwargs["n_conv_per_stage"] == [2] * n and kwargs["n_conv_per_stage_decoder"] == [2] * (n - 1)
    validate_plans(plans)


def test_pure_2d_dataset_plans_like_nnunet_pictures():
    # unetkit reads pictures with 2 spacing entries; nnU-Net as (1, H, W) with spacing 999.
    case = CASES["pictures_as_nnunet_sees_them"]
    fp = {"spacings": [[1.0, 1.0]] * 30, "shapes_after_crop": [[584, 565]] * 30,
          "median_relative_size_after_cropping": 1.0, "foreground_intensity_properties_per_channel": {}}
    plans = plan_experiment(fp, case["channel_names"], case["labels"])
    assert list(plans["configurations"]) == ["2d"]
    assert plans["transpose_forward"] == [0, 1]
    got = plans["configurations"]["2d"]
    exp = NNUNET_PLANS["pictures_as_nnunet_sees_them"]["2d"]
    assert (got["patch_size"], got["batch_size"]) == (exp["patch_size"], exp["batch_size"])
    assert got["normalization_schemes"] == ["ZScore"] * 3  # R, G, B: per-channel z-score, as nnU-Net


# ----------------------------------------------------------------------------- individual rules

def test_target_spacing_median_when_isotropic():
    spacings = np.array([[1.0, 1.0, 1.0], [1.2, 0.9, 0.9], [0.8, 1.1, 1.0]])
    shapes = np.array([[100, 100, 100]] * 3)
    assert fullres_target_spacing(spacings, shapes).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_target_spacing_anisotropy_rule_takes_10th_percentile():
    spacings = np.array([[s, 1.0, 1.0] for s in (4.0, 5.0, 5.0, 6.0, 8.0, 10.0)])
    shapes = np.array([[20, 256, 256]] * 6)
    target = fullres_target_spacing(spacings, shapes)
    assert target[0] == pytest.approx(np.percentile(spacings[:, 0], 10))
    assert target[1:].tolist() == [1.0, 1.0]


def test_target_spacing_anisotropy_needs_few_voxels_too():
    spacings = np.array([[s, 1.0, 1.0] for s in (4.0, 5.0, 6.0)])
    shapes = np.array([[200, 256, 256]] * 3)  # many slices: keep the median
    assert fullres_target_spacing(spacings, shapes)[0] == pytest.approx(5.0)


def test_target_spacing_anisotropy_never_finer_than_other_axes():
    spacings = np.array([[0.5, 1.0, 1.0]] * 2 + [[5.0, 1.0, 1.0]] * 5)
    shapes = np.array([[20, 256, 256]] * 7)
    assert fullres_target_spacing(spacings, shapes)[0] == pytest.approx(1.0 + 1e-5)


def test_transpose_puts_coarsest_axis_first():
    assert transpose_for([0.7, 0.7, 3.0]) == ([2, 0, 1], [1, 2, 0])
    assert transpose_for([3.0, 0.7, 0.7]) == ([0, 1, 2], [0, 1, 2])
    assert transpose_for([1.0, 1.0]) == ([0, 1], [0, 1])


@pytest.mark.parametrize("names, rel, schemes, mask", [
    ({"0": "CT"}, 0.5, ["CT"], [False]),
    ({"0": "ct"}, 1.0, ["CT"], [False]),
    ({"0": "noNorm"}, 0.5, ["NoNorm"], [False]),
    ({"0": "rescale_to_0_1"}, 1.0, ["RescaleTo01"], [False]),
    ({"0": "rgb_to_0_1"}, 1.0, ["RGBTo01"], [False]),
    ({"0": "T1", "1": "FLAIR"}, 0.5, ["ZScore", "ZScore"], [True, True]),
    ({"0": "MRI"}, 0.75, ["ZScore"], [False]),
    ({"0": "CT", "1": "PET"}, 0.7, ["CT", "ZScore"], [False, True]),
])
def test_normalization_by_channel_name(names, rel, schemes, mask):
    assert normalization_for(names, rel) == (schemes, mask)


def test_topology_isotropic_and_anisotropic():
    iso = pool_and_conv_props([1.0, 1.0, 1.0], [36, 50, 35])
    assert iso.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert iso.patch_size == (40, 56, 40) and iso.divisor == (8, 8, 8)
    aniso = pool_and_conv_props([5.0, 1.5, 1.5], [10, 220, 230])
    assert aniso.kernel_sizes[0] == (1, 3, 3)          # no conv across thick slices at first
    assert aniso.strides[1] == (1, 2, 2)               # in-plane pooled first
    assert aniso.num_pool_per_axis[0] <= 1             # 10 slices: at most one pool (edge >= 4)
    assert all(p % d == 0 for p, d in zip(aniso.patch_size, aniso.divisor))
    assert pad_to_multiple([35.5, 40, 41], [8, 8, 8]) == (40, 40, 48)


def test_memory_estimate_matches_dynamic_network_architectures():
    # Values from dynamic-network-architectures 0.4.4 PlainConvUNet.compute_conv_feature_map_size.
    assert feature_map_elements((40, 56, 40), (32, 64, 128, 256), [(1, 1, 1)] + [(2, 2, 2)] * 3,
                                [2] * 4, [2] * 3, num_classes=3) == 19174400
    assert feature_map_elements((40, 96, 80), (32, 64, 128, 256, 320),
                                [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)], [2] * 5, [2] * 4,
                                num_classes=4, deep_supervision=True) == 83083200


def test_batch_capped_at_5_percent_of_dataset_but_at_least_2():
    few = plan_configuration([1.0, 1.0, 1.0], [36, 50, 35], 3, approx_dataset_voxels=36 * 50 * 35 * 260)
    assert few["batch_size"] == 9  # budget alone would allow far more; 5% of 260 cases caps it
    tiny = plan_configuration([1.0, 1.0, 1.0], [36, 50, 35], 3, approx_dataset_voxels=36 * 50 * 35 * 2)
    assert tiny["batch_size"] == 2
    free = plan_configuration([1.0, 1.0, 1.0], [36, 50, 35], 3, approx_dataset_voxels=1e12)
    assert free["batch_size"] > 9


def test_smaller_budget_never_gives_a_bigger_plan():
    case = CASES["isotropic_brain"]
    previous = None
    for gb in (16.0, 8.0, 4.0, 2.0, 1.0, 0.5, 0.25):
        cfg = plan_experiment(_fingerprint(case), case["channel_names"], case["labels"],
                              settings=PlannerSettings(memory_gb=gb))["configurations"]["3d_fullres"]
        work = np.prod(cfg["patch_size"]) * cfg["batch_size"]
        if previous is not None:
            assert work <= previous
        previous = work


def test_lowres_created_for_large_images_and_dropped_when_not_smaller():
    big = CASES["large_ct_lowres"]
    configs = plan_experiment(_fingerprint(big), big["channel_names"], big["labels"])["configurations"]
    assert set(configs) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
    assert configs["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    assert configs["3d_cascade_fullres"] == {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    assert configs["3d_fullres"]["batch_dice"] is True and configs["3d_lowres"]["batch_dice"] is False
    full_voxels = np.prod(configs["3d_fullres"]["median_image_size_in_voxels"])
    low_voxels = np.prod(configs["3d_lowres"]["median_image_size_in_voxels"])
    assert full_voxels / low_voxels >= 2
    assert np.prod(configs["3d_lowres"]["patch_size"]) / low_voxels >= 0.25 - 0.01
    small = CASES["tiny"]
    assert "3d_lowres" not in plan_experiment(_fingerprint(small), small["channel_names"],
                                              small["labels"])["configurations"]


def test_cpu_preset_keeps_hippocampus_network_with_smaller_batch():
    fp = {"spacings": [[1.0, 1.0, 1.0]] * 260, "shapes_after_crop": [[36, 50, 35]] * 260,
          "median_relative_size_after_cropping": 1.0, "foreground_intensity_properties_per_channel": {}}
    labels = {"background": 0, "anterior": 1, "posterior": 2}
    gpu = plan_experiment(fp, {"0": "MRI"}, labels)["configurations"]["3d_fullres"]
    cpu = plan_experiment(fp, {"0": "MRI"}, labels, settings=PlannerSettings(memory_gb=DEVICE_MEMORY_GB["cpu"])
                          )["configurations"]["3d_fullres"]
    assert cpu["patch_size"] == gpu["patch_size"] == [40, 56, 40]
    assert cpu["architecture"] == gpu["architecture"]
    assert 2 <= cpu["batch_size"] < gpu["batch_size"]


def test_budget_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        plan_configuration([1.0, 1.0, 1.0], [200, 200, 200], 3, 1e9, PlannerSettings(memory_gb=1e-6))


# ---------------------------------------------------------------------------------- plans.json

def _valid_plans():
    case = CASES["tiny"]
    return plan_experiment(_fingerprint(case), case["channel_names"], case["labels"])


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.pop("transpose_forward"), "'transpose_forward'"),
    (lambda p: p["configurations"]["3d_fullres"].pop("patch_size"), "'3d_fullres': missing key 'patch_size'"),
    (lambda p: p["configurations"]["2d"]["architecture"]["kwargs"].pop("strides"),
     "'architecture.kwargs.strides'"),
    (lambda p: p["configurations"]["2d"]["resampling"].pop("label_order"), "'resampling.label_order'"),
    (lambda p: p["configurations"]["3d_fullres"].update(patch_size=[25, 24, 24]), "not divisible"),
    (lambda p: p["configurations"]["3d_fullres"].update(normalization_schemes=["Fancy"]), "normalization_schemes"),
    (lambda p: p["configurations"]["3d_fullres"].update(batch_size=0), "batch_size"),
    (lambda p: p["configurations"].update(loop={"inherits_from": "loop"}), "cycle"),
    (lambda p: p["configurations"].update(orphan={"inherits_from": "3d_midres"}), "3d_midres"),
])
def test_validate_plans_names_the_problem(mutate, message):
    plans = _valid_plans()
    mutate(plans)
    with pytest.raises(PlansError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate_plans(plans)


def test_load_plans_resolves_inheritance(tmp_path):
    plans = _valid_plans()
    plans["configurations"]["3d_fullres_bs4"] = {"inherits_from": "3d_fullres", "batch_size": 4}
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(plans))
    loaded = load_plans(path)
    variant = loaded["configurations"]["3d_fullres_bs4"]
    assert variant["batch_size"] == 4 and "inherits_from" not in variant
    assert variant["patch_size"] == loaded["configurations"]["3d_fullres"]["patch_size"]
    path.write_text("{not json")
    with pytest.raises(PlansError, match="plans.json"):
        load_plans(path)
    with pytest.raises(PlansError, match="unetkit plan"):
        load_plans(tmp_path / "absent.json")


# ------------------------------------------------------------------------ plan_dataset and CLI

def test_plan_dataset_writes_and_reuses_fingerprint(raw3d, tmp_path, monkeypatch):
    work = tmp_path / "work"
    plans_path = plan_dataset(raw3d, workdir=work, num_processes=1)
    assert plans_path == work / "Synthetic3D" / "plans.json"
    fp_path = work / "Synthetic3D" / "fingerprint.json"
    assert fp_path.is_file()
    plans = load_plans(plans_path)
    assert {"2d", "3d_fullres"} <= set(plans["configurations"])
    assert plans["memory_budget_gb"] == 8.0
    assert not [p for p in (work / "Synthetic3D").iterdir() if p.name.startswith(".tmp-")]

    # Second run: fingerprint reused, a hand-added configuration kept, the budget applied.
    raw = json.loads(plans_path.read_text())
    raw["configurations"]["3d_fullres_bs3"] = {"inherits_from": "3d_fullres", "batch_size": 3}
    plans_path.write_text(json.dumps(raw))

    def boom(*args, **kwargs):
        raise AssertionError("fingerprint should have been reused")

    monkeypatch.setattr("unetkit.data.fingerprint.extract_fingerprint", boom)
    plan_dataset(raw3d, workdir=work, memory_gb=None, device="cpu")
    again = load_plans(plans_path)
    assert again["memory_budget_gb"] == DEVICE_MEMORY_GB["cpu"] and again["device_preset"] == "cpu"
    assert again["configurations"]["3d_fullres_bs3"]["batch_size"] == 3
    with pytest.raises(AssertionError, match="reused"):
        plan_dataset(raw3d, workdir=work, force=True)


def test_plan_dataset_reextracts_when_cases_changed(raw3d, tmp_path):
    work = tmp_path / "work"
    plan_dataset(raw3d, workdir=work, num_processes=1)
    for sub, name in (("imagesTr", "case_007_0000.nii.gz"), ("labelsTr", "case_007.nii.gz")):
        os.remove(raw3d / sub / name)
    plan_dataset(raw3d, workdir=work, num_processes=1)
    fp = json.loads((work / "Synthetic3D" / "fingerprint.json").read_text())
    assert fp["num_cases"] == 7


def test_plan_dataset_2d(raw2d, tmp_path):
    plans = load_plans(plan_dataset(raw2d, workdir=tmp_path / "w", num_processes=1))
    assert list(plans["configurations"]) == ["2d"]
    assert len(plans["configurations"]["2d"]["patch_size"]) == 2


def test_cli_plan(raw3d, tmp_path, capsys):
    work = tmp_path / "cli"
    assert cli_main(["plan", str(raw3d), "--workdir", str(work), "--device", "cpu", "-np", "1"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(work / "Synthetic3D" / "plans.json")
    assert "3d_fullres" in out.err
    assert json.loads((work / "Synthetic3D" / "plans.json").read_text())["memory_budget_gb"] == DEVICE_MEMORY_GB["cpu"]
    assert cli_main(["plan", str(raw3d), "--workdir", str(work), "--memory-gb", "-1"]) == 2
    assert cli_main(["plan", str(tmp_path / "nothing"), "--workdir", str(work)]) == 1


# --------------------------------------------------------------------------------- Hippocampus

@pytest.mark.reference
@pytest.mark.dataset
def test_hippocampus_plan_matches_nnunet(tmp_path):
    plans = load_plans(plan_dataset(hippocampus_raw(tmp_path), workdir=tmp_path / "work", num_processes=2))
    assert set(plans["configurations"]) == {"2d", "3d_fullres"}  # nnU-Net makes no 3d_lowres here
    full, two = plans["configurations"]["3d_fullres"], plans["configurations"]["2d"]
    # nnU-Net v2.8.1 (nnUNetv2_plan_and_preprocess -d 4, default planner, 8 GB):
    assert full["spacing"] == [1.0, 1.0, 1.0] and full["median_image_size_in_voxels"] == [36, 50, 35]
    assert full["patch_size"] == [40, 56, 40] and full["batch_size"] == 9 and full["batch_dice"] is False
    assert full["architecture"]["kwargs"]["features_per_stage"] == [32, 64, 128, 256]
    assert full["architecture"]["kwargs"]["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert two["patch_size"] == [56, 40] and two["batch_size"] == 366 and two["batch_dice"] is True
    assert two["architecture"]["kwargs"]["features_per_stage"] == [32, 64, 128, 256]
    assert full["normalization_schemes"] == ["ZScore"] and full["use_mask_for_norm"] == [False]
    assert plans["transpose_forward"] == [0, 1, 2]
