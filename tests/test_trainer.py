"""Trainer: config resolution, splits, a short real run, kill-and-resume determinism, the CLI.

The runs use a tiny plan and cache written here (``make_tiny_workdir``), a 3-stage network with
4-16 features and patches of 16^3 voxels, so that an epoch takes well under a second on a CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.training.config import ConfigError, TrainingConfig, resolve_config
from unetkit.training.splits import SplitError, kfold_indices, load_or_create_splits, make_splits, select_fold

# ------------------------------------------------------------------------------ tiny work folder


def tiny_plans(name: str, ndim: int, patch: tuple[int, ...], batch: int, labels: dict, training: dict | None) -> dict:
    n = 3
    strides = [[1] * ndim] + [[2] * ndim] * (n - 1)
    cfg_name = "3d_fullres" if ndim == 3 else "2d"
    entry = {
        "data_identifier": cfg_name, "spacing": [1.0] * ndim, "median_image_size_in_voxels": [20] * ndim,
        "patch_size": list(patch), "batch_size": batch, "batch_dice": False,
        "normalization_schemes": ["ZScore"], "use_mask_for_norm": [False],
        "resampling": {"image_order": 3, "label_order": 1, "anisotropy_threshold": 3.0, "separate_axis_order": 0},
        "architecture": {"name": "plain_unet", "kwargs": {
            "n_stages": n, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3] * ndim] * n,
            "strides": strides, "n_conv_per_stage": [1] * n, "n_conv_per_stage_decoder": [1] * (n - 1)}},
    }
    if training:
        entry["training"] = training
    return {
        "format_version": 1, "dataset_name": name, "planner": "test", "num_input_channels": 1,
        "channel_names": {"0": "MRI"}, "labels": labels,
        "num_segmentation_heads": len([v for k, v in labels.items() if k != "ignore"]),
        "transpose_forward": list(range(ndim)), "transpose_backward": list(range(ndim)),
        "original_median_spacing_after_transp": [1.0] * ndim, "original_median_shape_after_transp": [20] * ndim,
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0, "median": 0, "std": 1, "min": -3, "max": 3,
                                                              "percentile_99_5": 3, "percentile_00_5": -3}},
        "configurations": {cfg_name: entry},
    }


def make_tiny_workdir(root: Path, name: str = "Tiny", ndim: int = 3, num_cases: int = 6, batch: int = 2,
                      training: dict | None = None, ignore_label: bool = False, seed: int = 0) -> Path:
    """Write WORKDIR/NAME/plans.json and a preprocessed cache of blob images; returns WORKDIR."""
    from unetkit.data.synthetic import make_case
    from unetkit.preprocessing.cache import sample_class_locations, write_case
    from unetkit.utils.atomic import atomic_write_json

    shape = (20, 22, 20) if ndim == 3 else (40, 44)
    patch = (16, 16, 16) if ndim == 3 else (32, 32)
    labels = {"background": 0, "a": 1, "b": 2}
    if ignore_label:
        labels["ignore"] = 3
    plans = tiny_plans(name, ndim, patch, batch, labels, training)
    work = root / "work"
    atomic_write_json(work / name / "plans.json", plans)
    folder = work / name / "preprocessed" / ("3d_fullres" if ndim == 3 else "2d")
    rng = np.random.default_rng(seed)
    for i in range(num_cases):
        image, seg = make_case(rng, shape, num_classes=2)
        image = (image - image.mean()) / image.std()
        if ignore_label:  # sparse annotation: every other row of axis 0 unlabelled
            seg[1::2] = 3
        locs = sample_class_locations(seg, [1, 2])
        props = {"case": f"case_{i:03d}", "configuration": "x", "shape_after_resampling": list(shape),
                 "foreground_classes": [1, 2]}
        write_case(folder, f"case_{i:03d}", image.astype(np.float32), seg[None].astype(np.int16), locs, props)
    return work


FAST = {"epochs": 2, "iterations_per_epoch": 3, "val_iterations": 2, "num_workers": 0, "device": "cpu",
        "deterministic": True}


# ------------------------------------------------------------------------------ config


def test_config_priority_defaults_plan_cli():
    entry = {"batch_size": 9, "batch_dice": True, "architecture": {"name": "plain_unet"},
             "training": {"epochs": 300, "lr": 0.005}}
    cfg = resolve_config(entry, {"epochs": 50}, "3d_fullres")
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.arch, cfg.batch_dice) == (50, 0.005, 9, "plain_unet", True)
    assert cfg.momentum == 0.99 and cfg.weight_decay == 3e-5 and cfg.grad_clip == 12.0
    assert cfg.iterations_per_epoch == 250 and cfg.val_iterations == 50
    assert TrainingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="configurations.3d_fullres.training.*unknown training setting 'epoch'"):
        resolve_config({**entry, "training": {"epoch": 3}}, None, "3d_fullres")
    with pytest.raises(ConfigError, match="command line: epochs must be at least 1"):
        resolve_config(entry, {"epochs": 0})
    with pytest.raises(ConfigError, match="lr must be float"):
        resolve_config(entry, {"lr": "fast"})


def test_poly_schedule_and_optimizer():
    from unetkit.training.trainer import make_optimizer, poly_lr

    cfg = TrainingConfig(epochs=10)
    assert poly_lr(cfg, 0) == pytest.approx(0.01)
    assert poly_lr(cfg, 5) == pytest.approx(0.01 * 0.5 ** 0.9)
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    group = opt.param_groups[0]
    assert group["momentum"] == 0.99 and group["nesterov"] and group["weight_decay"] == 3e-5


def test_label_info_plain_regions_ignore():
    from unetkit.training.trainer import TrainingError, label_info

    info = label_info({"labels": {"background": 0, "a": 1, "b": 2, "ignore": 3}})
    assert (info.num_heads, info.ignore_label, info.regions, info.names) == (3, 3, None, ("a", "b"))
    reg = label_info({"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enh": 3},
                      "regions_class_order": [1, 2, 3]})
    assert reg.regions == ((1, 2, 3), (2, 3), (3,)) and reg.num_heads == 3
    with pytest.raises(TrainingError, match="consecutive"):
        label_info({"labels": {"background": 0, "a": 2}})


def test_distributed_batch_split_matches_nnunet():
    from unetkit.training.distributed import foreground_samples_per_rank, local_oversample, split_batch
    from unetkit.training.sampling import forced_foreground

    assert split_batch(9, 2) == [5, 4]
    assert split_batch(2, 2) == [1, 1]
    for b, w in [(9, 2), (2, 2), (7, 3), (12, 4)]:
        counts = foreground_samples_per_rank(b, w, 0.33)
        assert sum(counts) == sum(forced_foreground(b, 0.33))
        for r, size in enumerate(split_batch(b, w)):
            assert sum(forced_foreground(size, local_oversample(b, w, r, 0.33))) == counts[r]
    with pytest.raises(ValueError, match="smaller than the number of processes"):
        split_batch(1, 2)


# ---------------------------------------------------------------------------------- splits
# Reference values computed once with scikit-learn 1.x:
# KFold(n_splits=5, shuffle=True, random_state=12345).split(np.arange(n)), validation indices.
SKLEARN_VAL = {
    8: [[3, 7], [0, 4], [1, 6], [5], [2]],
    13: [[0, 7, 9], [3, 6, 10], [8, 11, 12], [1, 4], [2, 5]],
}
SKLEARN_VAL_260_HEADS = [[9, 10, 16, 18, 20, 30], [1, 14, 15, 17, 19, 26], [2, 4, 8, 13, 24, 25],
                         [0, 3, 6, 12, 21, 22], [5, 7, 11, 23, 29, 31]]


@pytest.mark.parametrize("n", [8, 13])
def test_kfold_matches_sklearn(n):
    folds = kfold_indices(n)
    assert [va for _, va in folds] == SKLEARN_VAL[n]
    for tr, va in folds:
        assert sorted(tr + va) == list(range(n)) and tr == sorted(tr)


def test_kfold_260_cases_like_hippocampus():
    folds = kfold_indices(260)
    assert [va[:6] for _, va in folds] == SKLEARN_VAL_260_HEADS
    assert [len(va) for _, va in folds] == [52] * 5


def test_splits_saved_sorted_and_user_file_honoured(tmp_path):
    names = [f"case_{i:02d}" for i in range(8)][::-1]  # unsorted input
    path = tmp_path / "splits.json"
    splits = load_or_create_splits(path, names)
    assert path.is_file()
    assert splits[0]["val"] == ["case_03", "case_07"]
    assert select_fold(splits, "all", names)[0] == sorted(names)
    # A user's file is used as is.
    path.write_text('[{"train": ["case_00", "case_01"], "val": ["case_02"]}]')
    assert select_fold(load_or_create_splits(path, names), 0, names) == (["case_00", "case_01"], ["case_02"])
    with pytest.raises(SplitError, match="fold 3 does not exist"):
        select_fold(load_or_create_splits(path, names), 3, names)
    path.write_text('[{"train": ["nope"], "val": []}]')
    with pytest.raises(SplitError, match="nope"):
        load_or_create_splits(path, names)


def test_make_splits_every_case_validated_once():
    names = [f"c{i}" for i in range(23)]
    splits = make_splits(names)
    vals = [n for s in splits for n in s["val"]]
    assert sorted(vals) == sorted(names)


# ------------------------------------------------------------------------------ training runs


def _read_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / f"{name}.safetensors"))


def test_short_run_writes_everything_and_learns(tmp_path):
    from unetkit.training.checkpoint import load_checkpoint
    from unetkit.training.trainer import train

    work = make_tiny_workdir(tmp_path, num_cases=6)
    res = train(work, "Tiny", "3d_fullres", 0, {**FAST, "epochs": 3, "iterations_per_epoch": 4}, echo=False)
    out = work / "Tiny" / "models" / "3d_fullres__plain_unet" / "fold_0"
    assert res.output_dir == out
    for f in ("train.log", "progress.json", "progress.png", "training_config.json", "checkpoint_final.safetensors",
              "checkpoint_final.state.pt", "checkpoint_final.json", "checkpoint_best.json"):
        assert (out / f).is_file(), f
    assert not (out / "checkpoint_latest.json").exists()  # replaced by final at the end
    assert not list(out.glob(".tmp-*"))
    assert (work / "Tiny" / "splits.json").is_file()
    progress = json.loads((out / "progress.json").read_text())["history"]
    assert progress["epoch"] == [0, 1, 2] and len(progress["pseudo_dice"][0]) == 2
    assert progress["lr"][1] == pytest.approx(0.01 * (1 - 1 / 3) ** 0.9)
    ck = load_checkpoint(out, "checkpoint_final")
    assert ck.meta["epoch"] == 3 and ck.meta["architecture"]["name"] == "plain_unet"
    assert ck.meta["plans"]["configurations"]["3d_fullres"]["patch_size"] == [16, 16, 16]
    assert "optimizer" in ck.state and len(ck.state["optimizer"]["state"]) > 0
    assert "epoch 3/3" in (out / "train.log").read_text()
    # Without --resume an existing run is not overwritten.
    from unetkit.training.trainer import TrainingError
    with pytest.raises(TrainingError, match="--resume"):
        train(work, "Tiny", "3d_fullres", 0, FAST, echo=False)
    # --resume on a finished run with more epochs trains on.
    res2 = train(work, "Tiny", "3d_fullres", 0, {**FAST, "epochs": 4, "iterations_per_epoch": 4}, resume=True,
                 echo=False)
    assert res2.epochs_done == 4
    assert json.loads((out / "checkpoint_final.json").read_text())["epoch"] == 4


def test_2d_run_with_ignore_label_and_fold_all(tmp_path):
    from unetkit.training.trainer import train

    work = make_tiny_workdir(tmp_path, ndim=2, num_cases=4, ignore_label=True)
    res = train(work, "Tiny", "2d", "all", {**FAST, "epochs": 1}, echo=False)
    assert res.output_dir.name == "fold_all"
    assert np.all(np.isfinite([d for d in res.last_pseudo_dice]))


@pytest.mark.reference
def test_dice_rises_on_blobs(tmp_path):
    """A short run on blob images gets well above chance (a learning check, not a benchmark)."""
    from unetkit.training.trainer import train

    work = make_tiny_workdir(tmp_path, ndim=2, num_cases=8, batch=4)
    res = train(work, "Tiny", "2d", 0, {**FAST, "epochs": 3, "iterations_per_epoch": 40, "val_iterations": 4,
                                         "deterministic": False, "save_every": 100, "plot_every": 100}, echo=False)
    hist = json.loads((res.output_dir / "progress.json").read_text())["history"]
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist["mean_fg_dice"][-1] > 0.5, hist["mean_fg_dice"]


def _train_cli(work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "unetkit.cli.train_cmd", "Tiny", "-c", "3d_fullres", "-f", "0",
            "--workdir", str(work), "--device", "cpu", "--num-workers", "0", "--deterministic", "--quiet",
            "--no-validation", *extra]  # the hand-made cache has no raw geometry to predict back onto


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    """SIGKILL mid-epoch after the first checkpoint; the resumed run ends with identical weights."""
    training = {"epochs": 4, "iterations_per_epoch": 6, "val_iterations": 1}
    work_a = make_tiny_workdir(tmp_path / "a", training=training)
    work_b = make_tiny_workdir(tmp_path / "b", training=training)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count in every run: same float sums

    subprocess.run(_train_cli(work_a), check=True, env=env, timeout=600, capture_output=True)

    out_b = work_b / "Tiny" / "models" / "3d_fullres__plain_unet" / "fold_0"
    proc = subprocess.Popen(_train_cli(work_b), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out_b / "checkpoint_latest.json").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        # Wait until the second epoch is under way, then kill without warning.
        log = out_b / "train.log"
        while "epoch 1/4" not in log.read_text() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out_b / "checkpoint_final.json").exists(), "the run finished before it was killed; test is moot"
    epoch_at_kill = json.loads((out_b / "checkpoint_latest.json").read_text())["epoch"]
    assert 1 <= epoch_at_kill < 4

    resumed = subprocess.run(_train_cli(work_b, "--resume"), env=env, timeout=600, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from checkpoint_latest after epoch {epoch_at_kill}" in (out_b / "train.log").read_text()

    out_a = work_a / "Tiny" / "models" / "3d_fullres__plain_unet" / "fold_0"
    wa, wb = _read_weights(out_a, "checkpoint_final"), _read_weights(out_b, "checkpoint_final")
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].is_floating_point())
    assert worst <= 1e-6, worst
    hist_a = json.loads((out_a / "progress.json").read_text())["history"]
    hist_b = json.loads((out_b / "progress.json").read_text())["history"]
    assert hist_a["train_loss"] == pytest.approx(hist_b["train_loss"], rel=1e-6)


def test_cli_help_and_errors(tmp_path, capsys):
    from unetkit.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--iterations-per-epoch" in capsys.readouterr().out
    work = make_tiny_workdir(tmp_path, num_cases=6)
    assert main(["train", "Tiny", "-c", "3d_fullres", "-f", "7", "--workdir", str(work), "--device", "cpu"]) == 1
    assert "fold 7 does not exist" in capsys.readouterr().err
    assert main(["train", "Tiny", "-c", "nope", "-f", "0", "--workdir", str(work)]) == 1
