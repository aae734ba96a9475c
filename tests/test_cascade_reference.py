"""The cascade's plans entries and its 3d_lowres cache against nnU-Net v2.8.1 on the same raw data.

nnU-Net v2.8.1 (the comparison venv of benchmarks/setup_nnunet_venv.sh) extracts the fingerprint,
plans with the same GPU memory target and preprocesses 3d_lowres of the dataset that
tests/test_cascade.py trains on; unetkit does the same. Compared: the 3d_cascade_fullres entry
and 3d_lowres.next_stage verbatim, the planned numbers of 3d_fullres and 3d_lowres (which the
cascade inherits and uses), and each case's preprocessed 3d_lowres image and label map.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from references import require_nnunet_python
from test_cascade import CASCADE_MEMORY_GB, cascade_raw

_NNUNET_SCRIPT = """
import json, os, shutil, sys
import numpy as np
root, raw = sys.argv[1], sys.argv[2]
for k in ('raw', 'preprocessed', 'results'):
    os.environ['nnUNet_' + k] = os.path.join(root, k)
    os.makedirs(os.environ['nnUNet_' + k], exist_ok=True)
shutil.copytree(raw, os.path.join(root, 'raw', 'Dataset991_Cascade'))
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
extract_fingerprints([991], num_processes=1, verbose=False, show_progress_bar=False)
plan_experiments([991], gpu_memory_target_in_gb=float(sys.argv[3]))
preprocess([991], configurations=('3d_lowres',), num_processes=(1,), show_progress_bar=False)
pre = os.path.join(root, 'preprocessed', 'Dataset991_Cascade')
shutil.copy(os.path.join(pre, 'nnUNetPlans.json'), os.path.join(root, 'nnunet_plans.json'))
folder = os.path.join(pre, 'nnUNetPlans_3d_lowres')
ds = infer_dataset_class(folder)(folder)
os.makedirs(os.path.join(root, 'arrays'))
for k in ds.identifiers:
    data, seg, _, _ = ds.load_case(k)
    np.save(os.path.join(root, 'arrays', k + '.npy'), np.asarray(data[:]))
    np.save(os.path.join(root, 'arrays', k + '_seg.npy'), np.asarray(seg[:]))
"""

PLANNED_KEYS = ("spacing", "patch_size", "batch_size", "batch_dice", "median_image_size_in_voxels")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(unetkit plans as written, unetkit work folder, nnU-Net plans, nnU-Net arrays folder)."""
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.utils.atomic import read_json

    nnunet_python = require_nnunet_python()
    tmp = tmp_path_factory.mktemp("cascade_ref")
    raw = cascade_raw(tmp / "CascadeRaw")
    work = tmp / "work"
    plans_path = plan_dataset(raw, work, memory_gb=CASCADE_MEMORY_GB, num_processes=1)
    preprocess_dataset(raw, work, configurations=["3d_lowres"], num_processes=1, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "1"}
    done = subprocess.run([str(nnunet_python), "-c", _NNUNET_SCRIPT, str(tmp / "nnunet"), str(raw),
                           str(CASCADE_MEMORY_GB)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"nnU-Net v2.8.1 failed:\n{done.stderr[-3000:]}"
    theirs = json.loads((tmp / "nnunet" / "nnunet_plans.json").read_text())
    return read_json(plans_path), work / "CascadeRaw", theirs, tmp / "nnunet" / "arrays"


@pytest.mark.reference
def test_cascade_plans_entries_match_nnunet(both):
    ours, _, theirs, _ = both
    mine, nn = ours["configurations"], theirs["configurations"]
    assert set(mine) == set(nn) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
    assert mine["3d_cascade_fullres"] == nn["3d_cascade_fullres"] == {"inherits_from": "3d_fullres",
                                                                      "previous_stage": "3d_lowres"}
    assert mine["3d_lowres"]["next_stage"] == nn["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    for config in ("3d_fullres", "3d_lowres"):
        for key in PLANNED_KEYS:
            if key == "spacing":
                assert mine[config][key] == pytest.approx(nn[config][key], rel=1e-6), (config, key)
            elif key == "median_image_size_in_voxels":  # nnU-Net keeps the median's .5, unetkit rounds
                assert mine[config][key] == pytest.approx(nn[config][key], abs=0.5), (config, key)
            else:
                assert mine[config][key] == nn[config][key], (config, key)
        arch, their_arch = mine[config]["architecture"]["kwargs"], nn[config]["architecture"]["arch_kwargs"]
        for key in ("n_stages", "features_per_stage", "kernel_sizes", "strides"):
            assert arch[key] == their_arch[key], (config, key)


@pytest.mark.reference
def test_cascade_lowres_cache_matches_nnunet(both):
    _, work, _, arrays = both
    cases = sorted(p.name[:-4] for p in arrays.glob("*.npy") if not p.name.endswith("_seg.npy"))
    assert len(cases) == 6
    for case in cases:
        folder = work / "preprocessed" / "3d_lowres"
        data, seg = np.load(folder / f"{case}.npy"), np.load(folder / f"{case}_seg.npy")
        their_data, their_seg = np.load(arrays / f"{case}.npy"), np.load(arrays / f"{case}_seg.npy")
        assert data.shape == their_data.shape, case
        np.testing.assert_allclose(data, their_data, atol=1e-4, err_msg=case)
        np.testing.assert_array_equal(seg, their_seg, err_msg=case)


_NEXT_STAGE_SCRIPT = """
import sys, numpy as np, torch
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
folder = sys.argv[1]
for i, (spacing, shape) in enumerate(eval(sys.argv[2])):
    logits = np.load(f'{folder}/logits_{i}.npy')
    # nnU-Net's resample_and_save: resampling_fn_probabilities (order 1, order_z 0) on the logits,
    # the stage's spacing as current and target spacing, then softmax + argmax.
    out = resample_data_or_seg_to_shape(logits, shape, spacing, spacing, False, 1, 0, None)
    np.save(f'{folder}/nn_{i}.npy', np.argmax(out, 0).astype(np.int16))
"""


@pytest.mark.reference
def test_next_stage_prediction_matches_nnunets_resample_and_save(tmp_path):
    """The label map a 3d_lowres fold writes for the cascade (predicted_next_stage) equals
    nnU-Net's, isotropic and anisotropic (separate coarse axis) spacing."""
    from scipy.ndimage import gaussian_filter

    from unetkit.training.cascade import write_next_stage

    nnunet_python = require_nnunet_python()
    rng = np.random.default_rng(0)
    specs = [([1.4, 1.35, 1.35], [30, 37, 41]), ([4.0, 1.2, 1.2], [25, 40, 33])]
    logits = []
    for i, _ in enumerate(specs):
        x = np.stack([gaussian_filter(rng.normal(size=(12, 18, 16)), 2) * 8 for _ in range(3)]).astype(np.float32)
        np.save(tmp_path / f"logits_{i}.npy", x)
        logits.append(x)
    done = subprocess.run([str(nnunet_python), "-c", _NEXT_STAGE_SCRIPT, str(tmp_path), repr(specs)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for i, (spacing, shape) in enumerate(specs):
        e = np.exp(logits[i] - logits[i].max(0))
        entry = {"spacing": spacing, "resampling": {"separate_axis_order": 0, "anisotropy_threshold": 3.0}}
        path = write_next_stage(e / e.sum(0), shape, tmp_path / "ours", f"case{i}", entry,
                                lambda p: np.argmax(p, 0))
        ours = np.load(path)
        assert ours.shape == (1, *shape) and ours.dtype == np.int16
        np.testing.assert_array_equal(ours[0], np.load(tmp_path / f"nn_{i}.npy"), err_msg=str(spacing))
