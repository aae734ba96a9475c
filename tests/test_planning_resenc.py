"""``unetkit plan --planner resenc_m|resenc_l|resenc_xl`` against nnU-Net v2.8.1's nnUNetPlannerResEncM/L/XL.

The expected plans (tests/fixtures/resenc_plans/nnunet_v2.8.1_resenc_plans.json) were made by running
nnU-Net's own planner classes, unchanged, on the default planner's parity fingerprints and on nnU-Net's
fingerprint of Hippocampus (tests/resenc_reference.py says how; the fixture's README has the command).
The feature-map counts are checked against dynamic-network-architectures' ResidualEncoderUNet, whose
``compute_conv_feature_map_size`` printed the numbers below.
"""

from __future__ import annotations

import json

import pytest

from unetkit.cli import main as cli_main
from unetkit.planning import PlannerSettings, load_plans, plan_dataset, plan_experiment, validate_plans
from unetkit.planning.memory import residual_encoder_feature_map_elements
from unetkit.planning.planner import PLANNER_NAMES, network_rules

from references import require_nnunet_python
from resenc_reference import REFERENCE_PLANS, case_fingerprint, reference_cases, run_nnunet_resenc

RESENC = ("resenc_m", "resenc_l", "resenc_xl")
REFERENCE = json.loads(REFERENCE_PLANS.read_text())
CASES = reference_cases()


def _plan(case: dict, planner: str) -> dict:
    rules = network_rules(planner)
    settings = PlannerSettings(memory_gb=case.get("gb", rules.default_memory_gb), network=rules)
    return plan_experiment(case_fingerprint(case), case["channel_names"], case["labels"], settings=settings)


def _comparable(plans: dict) -> dict:
    """The fields the nnU-Net worker keeps, from a unetkit plan."""
    out = {"transpose_forward": plans["transpose_forward"], "configurations": {}}
    for name, cfg in plans["configurations"].items():
        if "inherits_from" in cfg:
            continue  # 3d_cascade_fullres points at 3d_fullres; the fixture keeps planned entries only
        kw = cfg["architecture"]["kwargs"]
        out["configurations"][name] = {
            "patch_size": cfg["patch_size"], "batch_size": cfg["batch_size"], "batch_dice": cfg["batch_dice"],
            "median_image_size_in_voxels": cfg["median_image_size_in_voxels"], "n_stages": kw["n_stages"],
            "features_per_stage": kw["features_per_stage"], "kernel_sizes": kw["kernel_sizes"],
            "strides": kw["strides"], "n_blocks_per_stage": kw["n_blocks_per_stage"],
            "n_conv_per_stage_decoder": kw["n_conv_per_stage_decoder"], "spacing": cfg["spacing"]}
    return out


def _assert_same(got: dict, expected: dict) -> None:
    assert got["transpose_forward"] == expected["transpose_forward"]
    assert set(got["configurations"]) == set(expected["configurations"])
    for name, exp in expected["configurations"].items():
        mine = got["configurations"][name]
        for key in ("patch_size", "batch_size", "batch_dice", "median_image_size_in_voxels", "n_stages",
                    "features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage", "n_conv_per_stage_decoder"):
            assert mine[key] == exp[key], (name, key)
        assert mine["spacing"] == pytest.approx(exp["spacing"], abs=1e-5), name


def test_fixture_covers_every_case_and_planner():
    assert REFERENCE["nnunet_version"] == "2.8.1"
    assert set(REFERENCE["cases"]) == set(CASES)
    for case in REFERENCE["cases"].values():
        assert set(case) == set(RESENC)
        for planner, plan in case.items():
            assert plan["planner_class"] == network_rules(planner).nnunet_planner
            for cfg in plan["configurations"].values():
                assert cfg["network_class_name"].endswith("ResidualEncoderUNet")


@pytest.mark.parametrize("planner", RESENC)
@pytest.mark.parametrize("name", sorted(CASES))
def test_resenc_plan_matches_nnunet(name, planner):
    case = CASES[name]
    plans = _plan(case, planner)
    _assert_same(_comparable(plans), REFERENCE["cases"][name][planner])
    assert plans["planner_preset"] == planner
    expected_gb = case.get("gb", REFERENCE["cases"][name][planner]["vram_target_gb"])
    assert plans["memory_budget_gb"] == expected_gb
    resolved = validate_plans(plans)
    for cfg in resolved["configurations"].values():
        assert cfg["architecture"]["name"] == f"resenc_unet_{planner.split('_')[1]}"


def test_planner_targets_are_nnunets():
    # nnU-Net Revisited: M targets 8 GB, L 24 GB, XL 40 GB (the classes' default gpu_memory_target_in_gb).
    assert [network_rules(p).default_memory_gb for p in RESENC] == [8.0, 24.0, 40.0]
    assert [REFERENCE["cases"]["tiny"][p]["vram_target_gb"] for p in RESENC] == [8, 24, 40]
    assert PLANNER_NAMES == ("default", *RESENC)
    with pytest.raises(ValueError, match="resenc_l"):
        network_rules("resenc_s")


@pytest.mark.parametrize("patch, strides, features, expected", [
    # ResidualEncoderUNet(..., n_blocks_per_stage=(1, 3, 4, 6, 6, 6)[:n], n_conv_per_stage_decoder=1,
    # num_classes=3).compute_conv_feature_map_size(patch), dynamic-network-architectures in .venv-nnunet.
    ((128, 128, 128), [(1, 1, 1)] + [(2, 2, 2)] * 5, (32, 64, 128, 256, 320, 320), 557_420_544),
    ((16, 224, 256), [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)],
     (32, 64, 128, 256, 320, 320), 341_039_104),
    ((512, 512), [(1, 1)] + [(2, 2)] * 6, (32, 64, 128, 256, 512, 512, 512), 129_531_904),
    ((20, 24, 24), [(1, 1, 1), (2, 2, 2), (2, 2, 2)], (32, 64, 128), 2_914_560),
])
def test_residual_encoder_feature_map_count_matches_dynamic_network_architectures(patch, strides, features, expected):
    n = len(features)
    assert residual_encoder_feature_map_elements(patch, features, strides, (1, 3, 4, 6, 6, 6, 6)[:n], [1] * (n - 1),
                                                 3) == expected


def test_default_planner_is_unchanged_by_the_rules():
    # The default planner still plans the plain U-Net with two convolutions per stage.
    case = CASES["tiny"]
    plans = plan_experiment(case_fingerprint(case), case["channel_names"], case["labels"])
    assert plans["planner_preset"] == "default"
    kw = plans["configurations"]["3d_fullres"]["architecture"]
    assert kw["name"] == "plain_unet" and kw["kwargs"]["n_conv_per_stage"] == [2] * kw["kwargs"]["n_stages"]


@pytest.mark.reference
@pytest.mark.slow
def test_resenc_reference_fixture_is_what_nnunet_computes_now():
    """Regenerates one case with nnU-Net's planners (about 15 s) and compares with the fixture."""
    python = require_nnunet_python()
    live = run_nnunet_resenc({"tiny": CASES["tiny"]}, python)
    assert live["cases"]["tiny"] == REFERENCE["cases"]["tiny"]


# --------------------------------------------------------------------------- plan_dataset, CLI, train


def test_cli_plan_with_resenc_planner(raw3d, tmp_path, capsys):
    work = tmp_path / "w"
    assert cli_main(["plan", str(raw3d), "--workdir", str(work), "--planner", "resenc_l", "-np", "1"]) == 0
    assert "resenc_unet_l" in capsys.readouterr().err
    plans = load_plans(work / "Synthetic3D" / "plans.json")
    assert plans["memory_budget_gb"] == 24.0 and plans["planner_preset"] == "resenc_l"
    for cfg in plans["configurations"].values():
        assert cfg["architecture"]["name"] == "resenc_unet_l"
        assert cfg["architecture"]["kwargs"]["n_blocks_per_stage"][:3] == [1, 3, 4][:cfg["architecture"]["kwargs"]
                                                                                   ["n_stages"]]
    # --device cpu and --memory-gb replace the planner's 24 GB target.
    assert cli_main(["plan", str(raw3d), "--workdir", str(work), "--planner", "resenc_l", "--device", "cpu"]) == 0
    assert load_plans(work / "Synthetic3D" / "plans.json")["memory_budget_gb"] == 0.5
    assert cli_main(["plan", str(raw3d), "--workdir", str(work), "--planner", "resenc_xl", "--memory-gb", "2"]) == 0
    plans = load_plans(work / "Synthetic3D" / "plans.json")
    assert plans["memory_budget_gb"] == 2.0 and plans["planner_preset"] == "resenc_xl"
    with pytest.raises(SystemExit):
        cli_main(["plan", str(raw3d), "--workdir", str(work), "--planner", "resenc_s"])


@pytest.mark.reference
@pytest.mark.dataset
@pytest.mark.parametrize("planner", RESENC)
def test_hippocampus_resenc_plan_matches_nnunet(planner, tmp_path):
    """unetkit's own fingerprint of Hippocampus, planned by ResEnc, against nnU-Net's end to end."""
    from test_fingerprint import hippocampus_raw

    plans = load_plans(plan_dataset(hippocampus_raw(tmp_path), workdir=tmp_path / "work", num_processes=2,
                                    planner=planner))
    _assert_same(_comparable(plans), REFERENCE["cases"]["hippocampus"][planner])


def test_train_builds_the_resenc_model_of_the_plan(raw3d, tmp_path):
    work = tmp_path / "w"
    assert cli_main(["plan", str(raw3d), "--workdir", str(work), "--planner", "resenc_m", "--device", "cpu",
                     "-np", "1", "-q"]) == 0
    plan_kwargs = load_plans(work / "Synthetic3D" / "plans.json")["configurations"]["3d_fullres"]["architecture"]
    assert cli_main(["preprocess", str(raw3d), "--workdir", str(work), "-c", "3d_fullres", "-np", "1", "--no-progress"]) == 0
    assert cli_main(["train", str(raw3d), "-c", "3d_fullres", "-f", "0", "--workdir", str(work), "--epochs", "1",
                     "--iterations-per-epoch", "1", "--val-iterations", "1", "--num-workers", "0",
                     "--no-validation", "--device", "cpu", "--quiet"]) == 0
    final = work / "Synthetic3D" / "models" / "3d_fullres__resenc_unet_m" / "fold_0" / "checkpoint_final.json"
    arch = json.loads(final.read_text())["architecture"]
    assert arch["name"] == "resenc_unet_m"
    assert arch["kwargs"]["n_blocks_per_stage"] == plan_kwargs["kwargs"]["n_blocks_per_stage"]


@pytest.mark.parametrize("name", ["isotropic_brain", "thick_slices", "pictures_as_nnunet_sees_them"])
def test_planner_estimate_equals_the_built_models_count(name):
    # The planner counts arithmetically; the model zoo counts on the built network (meta device).
    from unetkit.models import conv_feature_map_size

    case = CASES[name]
    for cfg in _plan(case, "resenc_l")["configurations"].values():
        built = conv_feature_map_size(cfg["architecture"], cfg["patch_size"], num_classes=len(case["labels"]),
                                      deep_supervision=False)
        assert cfg["estimated_feature_map_elements"] == built
