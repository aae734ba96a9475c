#!/usr/bin/env python
"""Run nnU-Net v2's residual-encoder planners on given fingerprints; print their plans as JSON.

Runs inside nnU-Net's comparison venv (benchmarks/setup_nnunet_venv.sh), never with unetkit:

    .venv-nnunet/bin/python benchmarks/nnunet_resenc_plans.py CASES.json > plans.json

CASES.json maps a case name to ``{"spacings", "shapes", "channel_names", "labels", "rel"}``
(optionally ``"gb"``, the GPU-memory target passed to every planner). For each case the script
writes a throw-away nnU-Net raw and preprocessed folder (a dataset.json whose ``dataset`` entry
lists cases without image files, and the fingerprint as ``dataset_fingerprint.json``), runs
``nnUNetPlannerResEncM``, ``nnUNetPlannerResEncL`` and ``nnUNetPlannerResEncXL`` unchanged, and
keeps the fields a plan comparison needs. Case ``"hippocampus"`` may instead carry
``"fingerprint_file"``: a dataset_fingerprint.json that nnU-Net itself extracted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings

PLANNERS = {"resenc_m": "nnUNetPlannerResEncM", "resenc_l": "nnUNetPlannerResEncL",
            "resenc_xl": "nnUNetPlannerResEncXL"}


def _write_dataset(root: str, dataset_name: str, case: dict, fingerprint: dict) -> None:
    raw = os.path.join(root, "raw", dataset_name)
    pre = os.path.join(root, "preprocessed", dataset_name)
    os.makedirs(raw)
    os.makedirs(pre)
    n = len(fingerprint["spacings"])
    listing = {f"case_{i:03d}": {"images": [f"imagesTr/case_{i:03d}_0000.nii.gz"], "label": f"labelsTr/case_{i:03d}.nii.gz"}
               for i in range(n)}
    dataset_json = {"channel_names": case["channel_names"], "labels": case["labels"], "numTraining": n,
                    "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO", "dataset": listing}
    with open(os.path.join(raw, "dataset.json"), "w") as f:
        json.dump(dataset_json, f)
    with open(os.path.join(pre, "dataset_fingerprint.json"), "w") as f:
        json.dump(fingerprint, f)


def _summary(plans: dict, planner) -> dict:
    out = {"transpose_forward": plans["transpose_forward"], "planner_class": type(planner).__name__,
           "vram_target_gb": planner.UNet_vram_target_GB, "configurations": {}}
    for name, cfg in plans["configurations"].items():
        if "inherits_from" in cfg:  # 3d_cascade_fullres: a copy of 3d_fullres, not planned by itself
            continue
        arch = cfg["architecture"]
        kw = arch["arch_kwargs"]
        out["configurations"][name] = {
            "spacing": [float(s) for s in cfg["spacing"]], "patch_size": [int(p) for p in cfg["patch_size"]],
            "batch_size": int(cfg["batch_size"]), "batch_dice": bool(cfg["batch_dice"]),
            "median_image_size_in_voxels": [int(round(float(m))) for m in cfg["median_image_size_in_voxels"]],
            "network_class_name": arch["network_class_name"], "n_stages": int(kw["n_stages"]),
            "features_per_stage": [int(f) for f in kw["features_per_stage"]],
            "kernel_sizes": [[int(k) for k in ks] for ks in kw["kernel_sizes"]],
            "strides": [[int(s) for s in st] for st in kw["strides"]],
            "n_blocks_per_stage": [int(b) for b in kw["n_blocks_per_stage"]],
            "n_conv_per_stage_decoder": [int(b) for b in kw["n_conv_per_stage_decoder"]]}
    return out


def main() -> int:
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    with tempfile.TemporaryDirectory(prefix="nnunet-resenc-") as root:
        result = _plan_all(cases, root)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


def _plan_all(cases: dict, root: str) -> dict:
    for sub in ("raw", "preprocessed", "results"):
        os.makedirs(os.path.join(root, sub))
    # nnU-Net reads its folders from the environment when first imported.
    os.environ.update(nnUNet_raw=os.path.join(root, "raw"), nnUNet_preprocessed=os.path.join(root, "preprocessed"),
                      nnUNet_results=os.path.join(root, "results"))
    from importlib.metadata import version

    from nnunetv2.experiment_planning.experiment_planners.residual_unets import (
        residual_encoder_unet_planners as rp,
    )

    result = {"nnunet_version": version("nnunetv2"), "cases": {}}
    for index, (name, case) in enumerate(sorted(cases.items())):
        dataset_id = 900 + index
        dataset_name = f"Dataset{dataset_id}_{name.replace('_', '')}"
        if "fingerprint_file" in case:
            with open(case["fingerprint_file"]) as f:
                fingerprint = json.load(f)
        else:
            fingerprint = {"spacings": case["spacings"], "shapes_after_crop": case["shapes"],
                           "median_relative_size_after_cropping": case["rel"],
                           "foreground_intensity_properties_per_channel": {}}
        _write_dataset(root, dataset_name, case, fingerprint)
        result["cases"][name] = {}
        for key, cls_name in PLANNERS.items():
            cls = getattr(rp, cls_name)
            kwargs = {"gpu_memory_target_in_gb": case["gb"]} if "gb" in case else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the "non-standard gpu_memory_target_in_gb" warning
                planner = cls(dataset_name, **kwargs)
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                plans = planner.plan_experiment()  # nnU-Net prints its progress
            result["cases"][name][key] = _summary(plans, planner)
    return result


if __name__ == "__main__":
    sys.exit(main())
