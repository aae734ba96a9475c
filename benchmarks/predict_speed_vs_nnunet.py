#!/usr/bin/env python
"""Prediction speed: unetkit against nnU-Net v2 with the same network weights, and against the floor.

For each dataset (Hippocampus 3d_fullres; DRIVE 565x584 RGB and ISBI 2012 512x512 grey, both 2d)
the script, in one run on this machine,

1. writes one nnU-Net v2 raw dataset both tools read (Hippocampus: links; DRIVE/ISBI: PNG
   copies, labels mapped to 0/1) and a folder of test inputs (``CASE_0000.ext``);
2. plans with nnU-Net (``nnUNetv2_plan_and_preprocess --no_pp``) and with ``unetkit plan``, and
   puts nnU-Net's patch and network into unetkit's plan, so both run the same architecture;
3. builds that network once in unetkit (seeded initialisation; training does not change the
   speed), saves it as a unetkit checkpoint and, with renamed keys, as nnU-Net's
   ``checkpoint_final.pth`` in a trained-model folder; nnU-Net's network is checked to give the
   same outputs as unetkit's on a random patch before anything is timed;
4. predicts the inputs with ``nnUNetv2_predict_from_modelfolder`` and ``unetkit predict`` (CPU,
   step 0.5, mirroring on, fold 0), each twice: once from scratch and once again with
   ``--continue`` (every case skipped), so that the start-up (imports, model loading) is
   measured and taken out: seconds per case = (full run - start-up run) / cases;
5. measures the floor: the network's bare forward pass (batch 1, eval, inference mode; median of
   ``--floor-repeats``, the mean of a measurement before and one after the runs) times the
   number of tiles and mirror passes each case needs, averaged over the cases;
6. compares the two tools' label maps voxel by voxel (same weights: they should agree) and
   prints one table with seconds per case, the ratios to the floor and to nnU-Net, the load
   average and the commands.

Usage::

    python benchmarks/predict_speed_vs_nnunet.py [--datasets hippocampus drive isbi] [--cases 10]
        [--plan-cases 40] [--nnunet-venv .venv-nnunet] [--skip-nnunet] [--json out.json] [--keep]

Goals (issue): unetkit within 1.1x of the floor, nnU-Net measured at about 1.3x on Hippocampus;
at least 2x faster than nnU-Net on the large 2D pictures. This is a benchmark, not a test: run it
on a quiet machine; the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed_vs_nnunet import nnunet_arch_into_unetkit  # noqa: E402  (same plan transfer)
from plan_preprocess_vs_nnunet import run, unetkit_cli  # noqa: E402

TRAINER_FOLDER = "nnUNetTrainer__nnUNetPlans__{config}"

DATASETS = {
    # key: (nnU-Net id, folder name, configuration, ending)
    "hippocampus": (905, "Hippocampus", "3d_fullres", ".nii.gz"),
    "drive": (906, "DRIVE", "2d", ".png"),
    "isbi": (907, "ISBI", "2d", ".png"),
}

# Runs in nnU-Net's venv: its own network from its plans, unetkit's weights under nnU-Net's key
# names, an output check against unetkit's, then a trained-model folder nnU-Net can predict with.
NNUNET_MODEL_FOLDER = r'''
import json, re, shutil, sys
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

plans_file, dataset_json, config, weights_file, check_file, out_dir = sys.argv[1:7]
plans = json.load(open(plans_file))
ds = json.load(open(dataset_json))
arch = plans["configurations"][config]["architecture"]
n_in = len(ds["channel_names"])
n_out = len(ds["labels"])
net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                             n_in, n_out, allow_init=True, deep_supervision=False)
ours = torch.load(weights_file, weights_only=True)
# nnU-Net key -> unetkit key (the nnU-Net plain U-Net; decoder.encoder.* and *.all_modules.* are aliases)
rules = [(r"^encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.", r"encoder.\1.\2."),
         (r"^decoder\.stages\.(\d+)\.convs\.(\d+)\.", r"decoder.stages.\1.\2."),
         (r"^decoder\.transpconvs\.", "decoder.upsample."), (r"^decoder\.seg_layers\.", "decoder.heads.")]
state = {}
for key in net.state_dict():
    if ".all_modules." in key or key.startswith("decoder.encoder."):
        continue
    mapped = key
    for a, b in rules:
        if re.match(a, key):
            mapped = re.sub(a, b, key)
            break
    if mapped not in ours:
        sys.exit(f"no unetkit weight for nnU-Net key {key} (looked for {mapped})")
    state[key] = ours[mapped]
missing, unexpected = net.load_state_dict(state, strict=False)
missing = [k for k in missing if ".all_modules." not in k and not k.startswith("decoder.encoder.")]
if missing or unexpected:
    sys.exit(f"weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
check = torch.load(check_file, weights_only=True)
with torch.inference_mode():
    diff = (net.eval()(check["input"]) - check["output"]).abs().max().item()
mirror = tuple(range(len(plans["configurations"][config]["patch_size"])))
torch.save({"network_weights": net.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
            "logging": {}, "_best_ema": None, "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": config, "fold": 0, "dataset_json": ds,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": mirror},
           f"{out_dir}/fold_0/checkpoint_final.pth")
shutil.copy(plans_file, f"{out_dir}/plans.json")
shutil.copy(dataset_json, f"{out_dir}/dataset.json")
print(json.dumps({"max_abs_output_difference": diff}))
'''


# ----------------------------------------------------------------------------- raw datasets

def _dataset_json(ds: Path, name: str, channels: dict, labels: dict, n: int, ending: str) -> None:
    (ds / "dataset.json").write_text(json.dumps({"name": name, "channel_names": channels, "labels": labels,
                                                 "numTraining": n, "file_ending": ending}, indent=2))


def build_hippocampus(raw_root: Path, inputs: Path, plan_cases: int | None, cases: int) -> Path:
    src = SHARED / "Hippocampus" / "TrainingSet"
    ending = ".nii.gz"
    stems = sorted({p.name[: -len(ending)] for p in (src / "images").glob(f"*{ending}")}
                   & {p.name[: -len(ending)] for p in (src / "labels").glob(f"*{ending}")})
    ds = raw_root / "Dataset905_Hippocampus"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for stem in stems[:plan_cases] if plan_cases else stems:
        os.symlink((src / "images" / f"{stem}{ending}").resolve(), ds / "imagesTr" / f"{stem}_0000{ending}")
        os.symlink((src / "labels" / f"{stem}{ending}").resolve(), ds / "labelsTr" / f"{stem}{ending}")
    _dataset_json(ds, "Hippocampus", {"0": "MRI"}, {"background": 0, "Anterior": 1, "Posterior": 2},
                  len(list((ds / "labelsTr").iterdir())), ending)
    inputs.mkdir(parents=True)
    for stem in stems[-cases:]:  # the last cases: not among the planning cases of a smoke run
        os.symlink((src / "images" / f"{stem}{ending}").resolve(), inputs / f"{stem}_0000{ending}")
    return ds


def _picture_dataset(ds: Path, train: list[tuple[Path, Path]], test: list[Path], inputs: Path, name: str,
                     channels: dict, cases: int) -> Path:
    import numpy as np

    from unetkit.data.io import Geometry, read_image, read_label, write_image, write_label

    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    for i, (image_path, label_path) in enumerate(train):
        image, _ = read_image(image_path)
        label, _ = read_label(label_path)
        write_image(image, ds / "imagesTr" / f"{name.lower()}_{i:03d}_0000.png", Geometry((1.0, 1.0)))
        write_label((label > 0).astype(np.uint8), ds / "labelsTr" / f"{name.lower()}_{i:03d}.png", Geometry((1.0, 1.0)))
    _dataset_json(ds, name, channels, {"background": 0, "foreground": 1}, len(train), ".png")
    inputs.mkdir(parents=True)
    for i, path in enumerate(test[:cases]):
        image, _ = read_image(path)
        write_image(image, inputs / f"{name.lower()}_test_{i:03d}_0000.png", Geometry((1.0, 1.0)))
    return ds


def build_drive(raw_root: Path, inputs: Path, plan_cases: int | None, cases: int) -> Path:
    src = SHARED / "DRIVE"
    images = sorted((src / "training" / "images").glob("*.tif"))[:plan_cases]
    train = [(p, src / "training" / "1st_manual" / f"{p.name.split('_')[0]}_manual1.gif") for p in images]
    test = sorted((src / "test" / "images").glob("*.tif"))
    return _picture_dataset(raw_root / "Dataset906_DRIVE", train, test, inputs, "DRIVE",
                            {"0": "R", "1": "G", "2": "B"}, cases)


def build_isbi(raw_root: Path, inputs: Path, plan_cases: int | None, cases: int) -> Path:
    src = SHARED / "ISBI2012_EM"
    key = lambda p: int(p.stem) if p.stem.isdigit() else 0  # noqa: E731
    images = sorted((src / "train" / "image").glob("*.png"), key=key)[:plan_cases]
    train = [(p, src / "train" / "label" / p.name) for p in images]
    test = sorted((src / "test" / "image").glob("*.png"), key=key)
    return _picture_dataset(raw_root / "Dataset907_ISBI", train, test, inputs, "ISBI", {"0": "EM"}, cases)


BUILDERS = {"hippocampus": build_hippocampus, "drive": build_drive, "isbi": build_isbi}


# ----------------------------------------------------------------------------- models

def write_unetkit_model(work: Path, name: str, config: str, seed: int, check_file: Path, weights_file: Path) -> Path:
    """A unetkit fold folder with a seeded network of the plan's architecture; also the weights and
    a reference input/output for nnU-Net's copy. Returns the configuration folder."""
    import torch

    from unetkit.models import create_model
    from unetkit.planning.plans import load_plans
    from unetkit.training.checkpoint import save_checkpoint
    from unetkit.training.trainer import label_info

    plans = load_plans(work / name / "plans.json")
    entry = plans["configurations"][config]
    labels = label_info(plans)
    arch = entry["architecture"]
    dims, channels = len(entry["patch_size"]), int(plans["num_input_channels"])
    torch.manual_seed(seed)
    net = create_model(arch["name"], dims, channels, labels.num_heads, deep_supervision=True, **arch["kwargs"])
    keep = {k: v for k, v in plans.items() if k != "configurations"}
    keep["configurations"] = {config: entry}
    meta = {"epoch": 0, "configuration": config, "fold": 0, "plans": keep, "training_config": {"arch": arch["name"]},
            "architecture": {"name": arch["name"], "kwargs": arch["kwargs"], "spatial_dims": dims,
                             "in_channels": channels, "num_classes": labels.num_heads, "deep_supervision": True},
            "labels": {"labels": plans["labels"], "ignore_label": labels.ignore_label, "regions": None,
                       "regions_class_order": None, "names": list(labels.names)},
            "patch_size": entry["patch_size"], "note": "seeded initialisation for benchmarks/predict_speed_vs_nnunet.py"}
    model_dir = work / name / "models" / f"{config}__{arch['name']}"
    save_checkpoint(model_dir / "fold_0", "checkpoint_final", net, meta=meta)
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, weights_file)
    net.eval()
    x = torch.randn(1, channels, *entry["patch_size"], generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        y = net(x)
    torch.save({"input": x, "output": (y[0] if isinstance(y, (list, tuple)) else y).clone()}, check_file)
    return model_dir


def forward_floor(model_dir: Path, repeats: int, folds: tuple = (0,)) -> tuple[float, tuple[int, ...]]:
    """Median seconds of the bare network forward (batch 1, eval, inference mode); the patch."""
    import torch

    from unetkit.inference.predictor import load_configuration

    model = load_configuration(model_dir, list(folds[:1]), "final", "cpu")
    net = model.networks[0]
    x = torch.randn(1, model.in_channels, *model.patch_size)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 2):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[2:]), model.patch_size


def passes_per_case(model_dir: Path, inputs: Path, folds: tuple = (0,)) -> list[int]:
    """Tiles x mirror passes each input case needs on the configuration's grid."""
    from unetkit.data.io import read_images
    from unetkit.inference.predictor import collect_inputs, load_configuration
    from unetkit.inference.sliding_window import count_forward_passes
    from unetkit.preprocessing import preprocess_case

    model = load_configuration(model_dir, list(folds[:1]), "final", "cpu")
    out = []
    for case in collect_inputs(inputs):
        image, geometry = read_images(case.files, case.name)
        data, _, _ = preprocess_case(image, geometry, model.plans, model.configuration)
        tiles, mirrors = count_forward_passes(data.shape[1:], model.patch_size, 0.5, model.mirror_axes)
        out.append(tiles * mirrors)
    return out


def agreement(a_dir: Path, b_dir: Path, ending: str) -> float:
    """Share of voxels where the two tools' label maps agree (over all cases both wrote)."""
    import numpy as np

    from unetkit.data.io import read_label

    same = total = 0
    for a in sorted(a_dir.glob(f"*{ending}")):
        b = b_dir / a.name
        if not b.is_file():
            continue
        la, lb = read_label(a)[0], read_label(b)[0]
        if la.shape != lb.shape:
            return float("nan")
        same += int(np.count_nonzero(la == lb))
        total += la.size
    return same / total if total else float("nan")


# ----------------------------------------------------------------------------- one dataset

def bench_dataset(key: str, args, tmp: Path, nn_python: Path | None, threads: int, commands: list[str]) -> dict:
    ident, name, config, ending = DATASETS[key]
    raw_root, inputs = tmp / "raw", tmp / "inputs" / name
    raw = BUILDERS[key](raw_root, inputs, args.plan_cases, args.cases)
    dataset_folder = raw.name
    nn_env = {**os.environ, "nnUNet_raw": str(raw_root), "nnUNet_preprocessed": str(tmp / "nn_pre"),
              "nnUNet_results": str(tmp / "nn_results"), "nnUNet_compile": "false"}
    uk_work = tmp / "uk"
    result: dict = {"dataset": name, "configuration": config, "cases": len(list(inputs.iterdir()))}

    # plans: nnU-Net's network and patch for both
    args_plan = ["plan", str(raw), "--workdir", str(uk_work), "--num-processes", "2", "--quiet"]
    commands.append(shlex.join(["unetkit", *args_plan]))
    run(unetkit_cli(*args_plan))
    plans_path = uk_work / dataset_folder / "plans.json"
    plans = json.loads(plans_path.read_text())
    if nn_python is not None:
        cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(ident), "-c", config,
               "--no_pp", "-npfp", "2"]
        commands.append(shlex.join(cmd))
        run(cmd, nn_env, tmp / f"nnunet_plan_{key}.log")
        nn_plans_file = tmp / "nn_pre" / dataset_folder / "nnUNetPlans.json"
        shared = nnunet_arch_into_unetkit(json.loads(nn_plans_file.read_text())["configurations"][config])
        plans["configurations"][config].update(shared)
        plans_path.write_text(json.dumps(plans, indent=2))
    entry = plans["configurations"][config]
    result["patch_size"] = entry["patch_size"]
    result["features"] = entry["architecture"]["kwargs"]["features_per_stage"]

    # the same weights in both tools
    weights_file, check_file = tmp / f"{key}_weights.pt", tmp / f"{key}_check.pt"
    model_dir = write_unetkit_model(uk_work, dataset_folder, config, args.seed, check_file, weights_file)
    nn_model = tmp / "nn_results" / dataset_folder / TRAINER_FOLDER.format(config=config)
    if nn_python is not None:
        (nn_model / "fold_0").mkdir(parents=True)
        proc = subprocess.run([str(nn_python), "-c", NNUNET_MODEL_FOLDER, str(nn_plans_file), str(raw / "dataset.json"),
                               config, str(weights_file), str(check_file), str(nn_model)],
                              capture_output=True, text=True, env=nn_env)
        if proc.returncode != 0:
            raise SystemExit(f"error: building nnU-Net's model folder failed:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}")
        result["nnunet_weights_max_abs_difference"] = json.loads(proc.stdout.strip().splitlines()[-1])[
            "max_abs_output_difference"]

    # the floor, measured before and after the runs (a shared machine's load drifts)
    forward_before, _ = forward_floor(model_dir, args.floor_repeats)

    # timings: full run, then a run that skips every case (start-up only)
    out_uk = tmp / "pred_uk" / name
    uk_args = ["predict", "-i", str(inputs), "-o", str(out_uk), "-m", str(model_dir), "-f", "0", "--device", "cpu",
               "--threads", str(threads), "--quiet"]
    commands.append(shlex.join(["unetkit", *uk_args]))
    full = run(unetkit_cli(*uk_args))
    startup = run(unetkit_cli(*uk_args, "--continue"))
    result["unetkit"] = {"wall": full, "startup": startup, "per_case": (full - startup) / result["cases"]}
    if nn_python is not None:
        out_nn = tmp / "pred_nn" / name
        nn_cmd = [str(args.nnunet_venv / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(inputs), "-o",
                  str(out_nn), "-m", str(nn_model), "-f", "0", "-device", "cpu", "--disable_progress_bar",
                  "-npp", str(args.nnunet_processes), "-nps", str(args.nnunet_processes)]
        commands.append(shlex.join(nn_cmd))
        full = run(nn_cmd, nn_env, tmp / f"nnunet_predict_{key}.log")
        startup = run(nn_cmd + ["--continue_prediction"], nn_env)
        result["nnunet"] = {"wall": full, "startup": startup, "per_case": (full - startup) / result["cases"]}
        result["label_agreement"] = agreement(out_uk, out_nn, ending)

    forward_after, _ = forward_floor(model_dir, args.floor_repeats)
    forward = (forward_before + forward_after) / 2
    passes = passes_per_case(model_dir, inputs)
    result["forward_seconds"] = forward
    result["forward_seconds_before_after"] = [forward_before, forward_after]
    result["passes_per_case"] = statistics.mean(passes)
    result["floor_per_case"] = forward * statistics.mean(passes)
    return result


# ----------------------------------------------------------------------------- synthetic (any device)

# nnU-Net v2.8.1's default plans for these datasets (patch, features per stage, strides), image size.
SYNTHETIC = {
    "hippocampus": {"patch": [40, 56, 40], "features": [32, 64, 128, 256], "strides": [[1] * 3] + [[2] * 3] * 3,
                    "image": [36, 50, 35], "channels": 1},
    "drive": {"patch": [640, 640], "features": [32, 64, 128, 256, 512, 512, 512, 512], "strides": [[1, 1]] + [[2, 2]] * 7,
              "image": [584, 565], "channels": 3},
    "isbi": {"patch": [512, 512], "features": [32, 64, 128, 256, 512, 512, 512, 512], "strides": [[1, 1]] + [[2, 2]] * 7,
             "image": [512, 512], "channels": 1},
}


def synthetic_model_dir(root: Path, key: str, seed: int = 0) -> Path:
    """A unetkit fold folder with a seeded network of nnU-Net's plan for ``key`` (no data needed)."""
    import torch

    from unetkit.models import create_model
    from unetkit.training.checkpoint import save_checkpoint

    spec = SYNTHETIC[key]
    dims, n = len(spec["patch"]), len(spec["features"])
    config = "3d_fullres" if dims == 3 else "2d"
    kwargs = {"n_stages": n, "features_per_stage": spec["features"], "kernel_sizes": [[3] * dims] * n,
              "strides": spec["strides"], "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1)}
    labels = {"background": 0, "a": 1, "b": 2} if key == "hippocampus" else {"background": 0, "a": 1}
    c = spec["channels"]
    entry = {"data_identifier": config, "spacing": [1.0] * dims, "patch_size": spec["patch"], "batch_size": 2,
             "batch_dice": False, "normalization_schemes": ["ZScore"] * c, "use_mask_for_norm": [False] * c,
             "resampling": {"image_order": 3, "label_order": 1, "anisotropy_threshold": 3.0, "separate_axis_order": 0},
             "architecture": {"name": "plain_unet", "kwargs": kwargs}}
    plans = {"num_input_channels": c, "labels": labels, "transpose_forward": list(range(dims)),
             "transpose_backward": list(range(dims)), "foreground_intensity_properties_per_channel": {},
             "configurations": {config: entry}}
    torch.manual_seed(seed)
    net = create_model("plain_unet", dims, c, len(labels), deep_supervision=True, **kwargs)
    meta = {"epoch": 0, "configuration": config, "fold": 0, "plans": plans, "training_config": {},
            "architecture": {"name": "plain_unet", "kwargs": kwargs, "spatial_dims": dims, "in_channels": c,
                             "num_classes": len(labels), "deep_supervision": True},
            "labels": {"labels": labels, "regions": None, "regions_class_order": None}, "patch_size": spec["patch"]}
    model_dir = root / key / f"{config}__plain_unet"
    save_checkpoint(model_dir / "fold_0", "checkpoint_final", net, meta=meta)
    return model_dir


def synthetic_run(args) -> int:
    """unetkit's ``predict_array`` against the floor on random images of each dataset's size, on
    ``--device`` (CUDA or CPU), for several tile batches and memory formats, timed interleaved."""
    import numpy as np
    import torch

    from unetkit.data.io import Geometry
    from unetkit.inference import Predictor
    from unetkit.inference.sliding_window import count_forward_passes

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tmp = Path(tempfile.mkdtemp(prefix="unetkit-predict-synth-"))
    rows = []
    try:
        for key in args.datasets:
            spec = SYNTHETIC[key]
            model_dir = synthetic_model_dir(tmp, key, args.seed)
            image = np.random.default_rng(0).normal(100, 20, size=(spec["channels"], *spec["image"])).astype(np.float32)
            geometry = Geometry(spacing=(1.0,) * len(spec["image"]))
            for tile_batch in args.tile_batches:
                for channels_last in ((False, True) if device.type == "cuda" else (False,)):
                    p = Predictor.from_model_dir(model_dir, device=device, progress=False, tile_batch=tile_batch,
                                                 channels_last=channels_last)
                    model = p.models[0]
                    net = model.networks[0]
                    fmt = p._memory_format(model)
                    x = torch.randn(1, spec["channels"], *spec["patch"], device=device)
                    if fmt is not None:
                        x = x.contiguous(memory_format=fmt)
                    tiles, mirrors = count_forward_passes(spec["image"], spec["patch"], 0.5, model.mirror_axes)
                    ratios, totals, floors = [], [], []
                    for rep in range(args.floor_repeats + 1):
                        with torch.inference_mode(), p._autocast():
                            sync()
                            t0 = time.perf_counter()
                            for _ in range(tiles * mirrors):
                                net(x)
                            sync()
                            floor = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        p.predict_array(image, geometry)
                        total = time.perf_counter() - t0
                        if rep:  # the first round warms up (cuDNN autotuning, allocator)
                            ratios.append(total / floor)
                            totals.append(total)
                            floors.append(floor)
                    rows.append({"dataset": key, "device": str(device), "tile_batch": p.tile_batch_for(model),
                                 "channels_last": channels_last, "passes": tiles * mirrors,
                                 "floor": statistics.median(floors), "predict": statistics.median(totals),
                                 "ratio": statistics.median(ratios)})
                    r = rows[-1]
                    print(f"{key:12s} {r['device']:6s} tile_batch {r['tile_batch']:2d} channels_last {channels_last!s:5s} "
                          f"passes {r['passes']:3d}  floor {r['floor']:.4f} s  predict_array {r['predict']:.4f} s  "
                          f"ratio {r['ratio']:.2f}x", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average {tuple(round(v, 2) for v in os.getloadavg())}; torch {torch.__version__}; "
          f"{torch.cuda.get_device_name(0) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def report(results: list[dict], meta: dict) -> None:
    print()
    print(f"Prediction on the CPU, {meta['threads']} torch threads, step 0.5, mirroring on, 1 fold, same weights; "
          f"seconds per case exclude start-up (a --continue run that skips every case)")
    head = (f"{'dataset':12s}{'config':>11s}{'cases':>6s}{'passes':>8s}{'floor s':>9s}{'unetkit s':>11s}"
            f"{'/floor':>8s}{'nnU-Net s':>11s}{'/floor':>8s}{'nnU/uk':>8s}{'agree':>8s}")
    print(head)
    for r in results:
        uk = r["unetkit"]["per_case"]
        nn = r.get("nnunet", {}).get("per_case")
        floor = r["floor_per_case"]
        nn_cols = (f"{nn:11.3f}{nn / floor:7.2f}x{nn / uk:7.2f}x" if nn is not None else f"{'-':>11s}{'-':>8s}{'-':>8s}")
        agree = r.get("label_agreement")
        print(f"{r['dataset']:12s}{r['configuration']:>11s}{r['cases']:6d}{r['passes_per_case']:8.1f}{floor:9.3f}"
              f"{uk:11.3f}{uk / floor:7.2f}x{nn_cols}{'' if agree is None else f'{100 * agree:7.2f}%'}")
    for r in results:
        extra = f", nnU-Net start-up {r['nnunet']['startup']:.1f} s" if "nnunet" in r else ""
        check = (f", nnU-Net copy of the weights: max output difference {r['nnunet_weights_max_abs_difference']:.2e}"
                 if "nnunet_weights_max_abs_difference" in r else "")
        print(f"  {r['dataset']}: patch {r['patch_size']}, features {r['features']}, forward {r['forward_seconds']:.3f} s "
              f"(before {r['forward_seconds_before_after'][0]:.3f}, after {r['forward_seconds_before_after'][1]:.3f}) "
              f"x {r['passes_per_case']:.1f} passes; unetkit start-up {r['unetkit']['startup']:.1f} s{extra}{check}")
    print("goals: unetkit <= 1.1x floor; nnU-Net/unetkit >= 2x on DRIVE and ISBI")
    print(f"load average before {tuple(round(x, 2) for x in meta['load_before'])}, "
          f"after {tuple(round(x, 2) for x in meta['load_after'])}")
    print(f"command: {meta['command']}")
    print("commands run:")
    for c in meta["commands"]:
        print(f"  {c}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["hippocampus", "drive", "isbi"])
    parser.add_argument("--cases", type=int, default=20, help="test cases predicted per dataset")
    parser.add_argument("--plan-cases", type=int, default=None, help="training cases used for planning (default all)")
    parser.add_argument("--nnunet-venv", type=Path, default=REPO / ".venv-nnunet")
    parser.add_argument("--nnunet-processes", type=int, default=2, help="nnU-Net's -npp and -nps")
    parser.add_argument("--skip-nnunet", action="store_true", help="only unetkit and the floor (unetkit's own plan)")
    parser.add_argument("--floor-repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--synthetic", action="store_true",
                        help="no data, no nnU-Net: unetkit's predict_array vs the floor on random images of each "
                             "dataset's size (nnU-Net's plans) on --device, for each --tile-batches value")
    parser.add_argument("--device", default="cpu", help="--synthetic only: cpu or cuda")
    parser.add_argument("--tile-batches", type=int, nargs="+", default=[0], help="--synthetic only (0: the default)")
    args = parser.parse_args(argv)
    if args.synthetic:
        return synthetic_run(args)

    import torch

    threads = os.cpu_count() or 1   # nnU-Net's CPU prediction uses every core; unetkit gets the same
    torch.set_num_threads(threads)
    nn_python = None
    if not args.skip_nnunet:
        nn_python = args.nnunet_venv / "bin" / "python"
        if not nn_python.is_file():
            raise SystemExit(f"error: no nnU-Net venv at {args.nnunet_venv}; run benchmarks/setup_nnunet_venv.sh")
    tmp = Path(tempfile.mkdtemp(prefix="unetkit-predict-bench-"))
    commands: list[str] = []
    meta = {"load_before": os.getloadavg(), "threads": threads,
            "command": shlex.join(["python", "benchmarks/predict_speed_vs_nnunet.py", *(argv or sys.argv[1:])])}
    results = []
    try:
        for key in args.datasets:
            results.append(bench_dataset(key, args, tmp, nn_python, threads, commands))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    meta["load_after"] = os.getloadavg()
    meta["commands"] = commands
    report(results, meta)
    if args.json:
        args.json.write_text(json.dumps({"results": results, **meta}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
