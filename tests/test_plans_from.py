"""``unetkit plan TARGET --plans-from SOURCE``: the source's network, patch and batch; the target's own
spacing and normalization. The reference for "the target's own" is the target planned without it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from unetkit.data.synthetic import write_raw_dataset
from unetkit.planning import load_plans, plan_dataset
from unetkit.planning.plans import PlansError


@pytest.fixture
def two_datasets(tmp_path):
    source = write_raw_dataset(tmp_path / "Big", num_cases=4, ndim=3, shape_range=(40, 48), seed=1)
    target = write_raw_dataset(tmp_path / "Small", num_cases=4, ndim=3, shape_range=(20, 28), seed=2,
                               spacing=(1.5, 1.5, 1.5), channel_names={"0": "CT"})
    return source, target


def test_plans_from_keeps_source_network_and_target_spacing_normalization(two_datasets, tmp_path):
    source_raw, target_raw = two_datasets
    source = load_plans(plan_dataset(source_raw, workdir=tmp_path / "w_src", num_processes=1))
    own = load_plans(plan_dataset(target_raw, workdir=tmp_path / "w_own", num_processes=1))
    moved = load_plans(plan_dataset(target_raw, workdir=tmp_path / "w_moved", num_processes=1,
                                    plans_from=tmp_path / "w_src" / "Big"))
    cfg = "3d_fullres"
    src, mine, new = (p["configurations"][cfg] for p in (source, own, moved))
    assert src["patch_size"] != mine["patch_size"]  # the datasets plan differently on their own
    for key in ("architecture", "patch_size", "batch_size"):
        assert new[key] == src[key], key
    for key in ("spacing", "normalization_schemes", "use_mask_for_norm", "data_identifier"):
        assert new[key] == mine[key], key
    assert moved["foreground_intensity_properties_per_channel"] == own["foreground_intensity_properties_per_channel"]
    assert new["normalization_schemes"] == ["CT"] and src["normalization_schemes"] == ["ZScore"]
    assert moved["plans_from"]["path"] == str((tmp_path / "w_src" / "Big" / "plans.json").resolve())
    assert cfg in moved["plans_from"]["configurations"]


def test_plans_from_missing_source_is_refused_before_any_work(two_datasets, tmp_path):
    _, target_raw = two_datasets
    with pytest.raises(PlansError, match="--plans-from: no plans.json at"):
        plan_dataset(target_raw, workdir=tmp_path / "w", plans_from=tmp_path / "nowhere")
    assert not (tmp_path / "w" / "Small" / "fingerprint.json").exists()
    proc = subprocess.run([sys.executable, "-c", "import sys; from unetkit.cli import main; sys.exit(main())", "plan", str(target_raw), "--workdir",
                           str(tmp_path / "w"), "--plans-from", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "--plans-from: no plans.json at" in proc.stderr


def test_pretrained_weights_fit_after_plans_from(tmp_path):
    """Weights trained on a source fit the target's own plan only in part, and entirely after --plans-from."""
    from unetkit.preprocessing.preprocess import preprocess_dataset
    from unetkit.training.trainer import train

    source_raw = write_raw_dataset(tmp_path / "Src2D", num_cases=4, ndim=2, num_classes=1, shape_range=(90, 100))
    target_raw = write_raw_dataset(tmp_path / "Tgt2D", num_cases=5, ndim=2, num_classes=1, shape_range=(40, 48),
                                   seed=3)
    fast = {"epochs": 1, "iterations_per_epoch": 1, "val_iterations": 1, "num_workers": 0, "device": "cpu",
            "batch_size": 2}
    plan_dataset(source_raw, workdir=tmp_path / "w", num_processes=1, device="cpu", memory_gb=None)
    preprocess_dataset(source_raw, workdir=tmp_path / "w", configurations=["2d"], num_processes=1, progress=False)
    source = train(tmp_path / "w", source_raw, "2d", "all", fast, echo=False).output_dir
    for work, plans_from in ((tmp_path / "own", None), (tmp_path / "moved", tmp_path / "w" / "Src2D")):
        plan_dataset(target_raw, workdir=work, num_processes=1, device="cpu", memory_gb=None, plans_from=plans_from)
        preprocess_dataset(target_raw, workdir=work, configurations=["2d"], num_processes=1, progress=False)
    own = train(tmp_path / "own", target_raw, "2d", 0, {**fast, "pretrained": str(source)}, echo=False)
    record = json.loads((own.output_dir / "training_config.json").read_text())["pretrained"]
    assert record["skipped"]  # the target's own (smaller) network: its deeper stages do not fit
    res = train(tmp_path / "moved", target_raw, "2d", 0, {**fast, "pretrained": str(source)}, echo=False)
    record = json.loads((res.output_dir / "training_config.json").read_text())["pretrained"]
    assert record["loaded"] and not record["skipped"] and not record["adapted"]
