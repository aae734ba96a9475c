"""Component-by-component comparison of unetkit's training recipe with nnU-Net v2.8.1's (issue 14).

Runs both implementations in one process on the same inputs and prints a table
``component | unetkit | nnU-Net | statistic / p | verdict``:

* **loss**: Dice + CE with deep supervision (per-sample and batch Dice, ignore label) on identical
  logits and targets, nnU-Net's ``DeepSupervisionWrapper(DC_and_CE_loss)`` against
  ``unetkit.training.loss.build_loss``; values and gradients; deep-supervision weights and target
  downsampling (``DownsampleSegForDSTransform`` against ``downsample_target``);
* **network and optimiser**: He initialisation (weight std against He's formula, a two-sample KS
  test of the standardised weights), instance-norm eps/affine, parameters with weight decay,
  momentum/Nesterov, the poly learning rate of the first, second and last epoch, and three
  optimisation steps of both trainers from the same weights on the same nnU-Net batches (loss,
  gradient clipping, SGD; the largest parameter difference afterwards);
* **sampling** (no augmentation): both samplers on the same arrays (nnU-Net's preprocessed
  cases, written into a unetkit cache): share of samples with foreground per batch position,
  which class the forced samples are centred on, padding; the larger initial patch;
* **augmentation**: a few hundred batches from ``nnUNetTrainer.get_dataloaders`` and from
  unetkit's sampler + ``augment_batch`` on the same cases, each transform's application rate
  (Fisher's exact test), rotation angle and scale (KS test), per-sample intensity mean/std/
  percentiles and foreground fractions (KS test; for the label fractions also unetkit against
  itself with other random numbers, to show how often that statistic alone gives a small p, and
  a per-case paired test free of the case mix), share of samples with foreground (Fisher); and
  rotation + scaling of the same input with the same matrix by both implementations;
* **validation pseudo-Dice**: ``nnUNetTrainer.validation_step`` + ``on_validation_epoch_end``
  against ``online_tp_fp_fn`` + ``dice_from_counts`` + ``TrainingHistory`` on the same logits.

A two-sample test "passes" at p >= 0.01 (several dozen tests are run, so a few p-values around
0.01-0.05 are expected by chance alone); exact comparisons pass below 1e-5 relative difference.

Needs nnU-Net's comparison venv (``bash benchmarks/setup_nnunet_venv.sh VENV``) and runs inside it,
with unetkit on the path::

    PYTHONPATH=src VENV/bin/python benchmarks/recipe_vs_nnunet.py --workdir /tmp/recipe_vs_nnunet

It builds the Hippocampus training set (the benchmarks' fixed split, 208 cases) as an nnU-Net raw
dataset of links under ``--workdir``, runs ``nnUNetv2_plan_and_preprocess`` there once (~30 s),
and writes ``recipe_vs_nnunet.json`` and ``recipe_vs_nnunet.md`` (the table) beside it. About
3 minutes on 2 CPU cores with the default 300 batches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATASET_ID = 908
DATASET = f"Dataset{DATASET_ID}_Hippocampus"
CONFIG = "3d_fullres"
BATCH = 2   # the batch size
P_PASS = 0.01
REL_PASS = 1e-5

ROWS: list[dict] = []


def row(component: str, unetkit, nnunet, stat: str, ok: bool | None, note: str = "") -> None:
    verdict = "same" if ok else ("DIFFERENT" if ok is not None else "info")
    ROWS.append({"component": component, "unetkit": unetkit, "nnunet": nnunet, "statistic": stat,
                 "verdict": verdict, "note": note})
    print(f"  {component}: unetkit {unetkit} | nnU-Net {nnunet} | {stat} | {verdict}", flush=True)


def fmt(x, digits: int = 4) -> str:
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v, digits) for v in x) + "]"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


# ----------------------------------------------------------------------------- setup

def prepare(workdir: Path) -> None:
    """Raw dataset (links) and nnU-Net's plan + preprocessing, once."""
    raw = workdir / "raw" / DATASET
    if not (raw / "dataset.json").is_file():
        sys.path.insert(0, str(HERE))
        from accuracy_vs_nnunet import build_hippocampus

        build_hippocampus(raw, workdir / "test", None)
    plans = workdir / "nnpre" / DATASET / "nnUNetPlans.json"
    if not (workdir / "nnpre" / DATASET / "nnUNetPlans_3d_fullres").is_dir() or not plans.is_file():
        exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
        cmd = [str(exe), "-d", str(DATASET_ID), "-c", CONFIG, "-np", "1", "-npfp", "1"]
        print("running", shlex.join(cmd), flush=True)
        with open(workdir / "nnunet_plan_and_preprocess.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=os.environ)


def make_trainer(workdir: Path):
    """nnU-Net's own trainer on fold 0 with batch 2, initialised on the CPU."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    base = workdir / "nnpre" / DATASET
    plans = json.loads((base / "nnUNetPlans.json").read_text())
    plans["configurations"][CONFIG]["batch_size"] = BATCH
    plans["continue_training"] = False  # what nnUNetv2_train passes for a fresh run
    dataset_json = json.loads((base / "dataset.json").read_text())
    trainer = nnUNetTrainer(plans, CONFIG, 0, dataset_json, device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def unetkit_entry(trainer) -> dict:
    """nnU-Net's plan for this configuration as unetkit's configuration entry keys."""
    sys.path.insert(0, str(HERE))
    from train_speed_vs_nnunet import nnunet_arch_into_unetkit

    cfg = dict(trainer.plans_manager.plans["configurations"][CONFIG])
    return nnunet_arch_into_unetkit(cfg)


def write_unetkit_cache(trainer, folder: Path) -> list[str]:
    """nnU-Net's preprocessed training cases of fold 0 as a unetkit cache (same arrays, same class locations)."""
    dataset_tr, _ = trainer.get_tr_and_val_datasets()
    names = sorted(dataset_tr.identifiers)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (folder / f"{name}.json").is_file():
            continue
        data, seg, _, props = dataset_tr.load_case(name)
        np.save(folder / f"{name}.npy", np.ascontiguousarray(np.asarray(data), dtype=np.float32))
        # nnU-Net marks background outside the image's non-zero region -1 (624 voxels in these 208
        # cases); unetkit's preprocessing writes 0 there, and its training data has no negative labels
        seg = np.where(np.asarray(seg) < 0, 0, np.asarray(seg))
        np.save(folder / f"{name}_seg.npy", np.ascontiguousarray(seg, dtype=np.int16))
        locs = {f"class_{int(k)}": np.asarray(v, dtype=np.int64)[:, 1:]
                for k, v in props["class_locations"].items() if not isinstance(k, tuple)}
        np.savez(folder / f"{name}_locations.npz", **locs)
        (folder / f"{name}.json").write_text(json.dumps({"source": "nnU-Net preprocessed"}))
    return names


# ----------------------------------------------------------------------------- loss

def _logits_and_target(seed: int, classes: int = 3, ignore: int | None = None):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    shapes = [(40, 56, 40), (20, 28, 20), (10, 14, 10)]
    logits = [torch.randn(BATCH, classes, *s, generator=g) * 2 for s in shapes]
    # blobby labels: smoothed noise thresholded, so classes form regions as in real targets
    noise = F.avg_pool3d(torch.randn(BATCH, 1, *shapes[0], generator=g), 7, 1, 3)
    target = torch.zeros(BATCH, 1, *shapes[0], dtype=torch.int16)
    target[noise > 0.05] = 1
    target[noise > 0.15] = 2
    if ignore is not None:
        target[:, :, :5] = ignore
    return logits, target


def compare_loss() -> None:
    import torch
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from unetkit.training.loss import LossSpec, build_loss, deep_supervision_weights, downsample_target

    scales = [[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]  # Hippocampus 3d_fullres (strides 1,2,2,2)
    nn_w = np.array([1 / 2 ** i for i in range(3)])
    nn_w[-1] = 0
    nn_w = nn_w / nn_w.sum()
    uk_w = deep_supervision_weights(3)
    row("deep-supervision weights", fmt(uk_w), fmt(list(nn_w)), f"max |diff| {np.abs(nn_w - uk_w).max():.1e}",
        bool(np.allclose(nn_w, uk_w, rtol=0, atol=1e-12)))

    _, target = _logits_and_target(0)
    nn_targets = DownsampleSegForDSTransform(scales)(segmentation=target[0])["segmentation"]
    uk_targets = downsample_target(target[:1], [(40, 56, 40), (20, 28, 20), (10, 14, 10)])
    same = all(torch.equal(a, b[0]) for a, b in zip(nn_targets, uk_targets))
    row("deep-supervision targets (nearest-exact)", "3 maps", "3 maps", "voxel-identical" if same else "differ", same)

    for batch_dice, ignore in ((False, None), (True, None), (False, 3)):
        classes = 3
        logits, target = _logits_and_target(1 + batch_dice + (ignore or 0), classes, ignore)
        nn_loss = DeepSupervisionWrapper(DC_and_CE_loss(
            {"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1, weight_dice=1,
            ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss), nn_w)
        uk_loss = build_loss(LossSpec(batch_dice=batch_dice, ignore_label=ignore))
        a = [x.clone().requires_grad_(True) for x in logits]
        b = [x.clone().requires_grad_(True) for x in logits]
        ln = nn_loss(a, [t.long() for t in downsample_target(target, [x.shape[2:] for x in logits])])
        lu = uk_loss(b, target)
        ln.backward()
        lu.backward()
        rel = abs(ln.item() - lu.item()) / abs(ln.item())
        # the zero-weighted coarsest output gets no gradient in either implementation
        as_tensor = lambda g, like: torch.zeros_like(like) if g is None else g
        grad = max((as_tensor(x.grad, x) - as_tensor(y.grad, y)).abs().max().item() for x, y in zip(a, b))
        gscale = max(as_tensor(x.grad, x).abs().max().item() for x in a)
        name = ("batch Dice" if batch_dice else "per-sample Dice") + (f", ignore label {ignore}" if ignore else "")
        row(f"loss Dice+CE, deep supervision, {name}", f"{lu.item():.6f}", f"{ln.item():.6f}",
            f"rel. diff {rel:.1e}; grad max |diff| {grad:.1e} (of {gscale:.1e})",
            rel < REL_PASS and grad < 1e-5 * gscale)


# ----------------------------------------------------------------------------- network, optimiser

def convert_state_dict(sd: dict) -> dict:
    """dynamic-network-architectures' PlainConvUNet keys to unetkit's plain_unet keys."""
    rules = [(r"^encoder\.stages\.(\d+)\.0\.convs\.(\d+)\.", r"encoder.\1.\2."),
             (r"^decoder\.stages\.(\d+)\.convs\.(\d+)\.", r"decoder.stages.\1.\2."),
             (r"^decoder\.transpconvs\.", "decoder.upsample."), (r"^decoder\.seg_layers\.", "decoder.heads.")]
    out = {}
    for k, v in sd.items():
        if ".all_modules." in k or k.startswith("decoder.encoder."):
            continue
        for a, b in rules:
            if re.match(a, k):
                k = re.sub(a, b, k)
                break
        out[k] = v
    return out


def build_unetkit_network(entry: dict):
    from unetkit.training.trainer import build_network

    return build_network({"name": "plain_unet", "spatial_dims": 3, "in_channels": 1, "num_classes": 3,
                          "deep_supervision": True, "kwargs": entry["architecture"]["kwargs"]})


def compare_init(trainer, entry: dict) -> None:
    import torch
    from scipy import stats

    from unetkit.models.blocks import InstanceNorm

    def he_ratio(model) -> tuple[list[float], np.ndarray]:
        ratios, pooled = [], []
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
                w = m.weight.detach()
                fan_in = w.shape[1] * int(np.prod(w.shape[2:]))
                he = math.sqrt(2 / (1 + 0.01 ** 2) / fan_in)
                ratios.append(w.std().item() / he)
                pooled.append((w.flatten() / he)[:4000].numpy())
                if m.bias is not None and m.bias.abs().max().item() != 0:
                    ratios.append(float("nan"))
        return ratios, np.concatenate(pooled)

    torch.manual_seed(0)
    uk = build_unetkit_network(entry)
    r_uk, p_uk = he_ratio(uk)
    r_nn, p_nn = he_ratio(trainer.network)
    ks = stats.ks_2samp(p_uk, p_nn)
    row("init: conv weight std / He std (a=1e-2), range over layers",
        f"{min(r_uk):.3f}-{max(r_uk):.3f}", f"{min(r_nn):.3f}-{max(r_nn):.3f}",
        f"KS standardised weights D={ks.statistic:.3f} p={ks.pvalue:.2f}; biases 0 in both",
        ks.pvalue >= P_PASS and not any(math.isnan(r) for r in r_uk + r_nn))
    uk_norms = {(m.eps, True) for m in uk.modules() if isinstance(m, InstanceNorm)}
    nn_norms = {(m.eps, m.affine) for m in trainer.network.modules() if isinstance(m, torch.nn.InstanceNorm3d)}
    row("instance norm (eps, affine)", sorted(uk_norms), sorted(nn_norms), "", uk_norms == nn_norms)
    nn_slopes = {m.negative_slope for m in trainer.network.modules() if isinstance(m, torch.nn.LeakyReLU)}
    uk_slopes = {m.negative_slope for m in uk.modules() if isinstance(m, torch.nn.LeakyReLU)}
    row("leaky ReLU slope", sorted(uk_slopes), sorted(nn_slopes), "", uk_slopes == nn_slopes)
    uk.load_state_dict(convert_state_dict(trainer.network.state_dict()), strict=True)
    x = torch.randn(BATCH, 1, 40, 56, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(uk.eval()(x), trainer.network.eval()(x)))
    row("network forward, same weights (3 outputs)", "", "", f"max |diff| {diff:.1e}", diff < 1e-4)


def compare_optimizer(trainer, entry: dict) -> None:
    import torch

    from unetkit.training.config import TrainingConfig
    from unetkit.training.trainer import make_optimizer, poly_lr

    cfg = TrainingConfig(epochs=50, batch_size=BATCH, arch="plain_unet", batch_dice=False)
    uk = build_unetkit_network(entry)
    opt = make_optimizer(uk, cfg)

    def describe(o, model) -> dict:
        decayed = sum(p.numel() for g in o.param_groups if g["weight_decay"] > 0 for p in g["params"])
        g = o.param_groups[0]
        return {"wd": g["weight_decay"], "momentum": g["momentum"], "nesterov": g["nesterov"],
                "decayed share": round(decayed / sum(p.numel() for p in model.parameters()), 6)}

    a, b = describe(opt, uk), describe(trainer.optimizer, trainer.network)
    row("SGD (weight decay, momentum, nesterov, share of parameters decayed incl. norm/bias)", a, b, "", a == b)
    import inspect

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    clips = set(re.findall(r"clip_grad_norm_\(self\.network\.parameters\(\), ([0-9.]+)\)",
                           inspect.getsource(nnUNetTrainer.train_step)))
    row("gradient clipping (max L2 norm of all gradients)", cfg.grad_clip, sorted(float(c) for c in clips),
        "nnU-Net's value read from its train_step source", {float(c) for c in clips} == {cfg.grad_clip})
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    sched = PolyLRScheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2), 1e-2, 50)
    nn_lrs, uk_lrs = [], []
    for epoch in (0, 1, 49):
        sched.step(epoch)  # nnUNetTrainer.on_train_epoch_start: lr_scheduler.step(current_epoch)
        nn_lrs.append(sched.get_last_lr()[0])
        uk_lrs.append(poly_lr(cfg, epoch))
    row("poly lr at epochs 0, 1, 49 of 50", fmt(uk_lrs), fmt(nn_lrs), "", np.allclose(uk_lrs, nn_lrs, rtol=1e-12))


def compare_steps(trainer, entry: dict, steps: int = 3) -> None:
    """Both trainers' optimisation steps from the same weights on the same nnU-Net batches."""
    import torch

    from unetkit.training.config import TrainingConfig
    from unetkit.training.loss import LossSpec, build_loss
    from unetkit.training.trainer import make_optimizer, poly_lr, set_lr, train_step

    cfg = TrainingConfig(epochs=50, batch_size=BATCH, arch="plain_unet", batch_dice=False, channels_last=False)
    uk = build_unetkit_network(entry)
    uk.load_state_dict(convert_state_dict(trainer.network.state_dict()), strict=True)
    opt = make_optimizer(uk, cfg)
    set_lr(opt, poly_lr(cfg, 0))
    trainer.num_epochs = 50
    trainer.lr_scheduler.max_steps = 50
    trainer.lr_scheduler.step(0)
    loss_fn = build_loss(LossSpec(batch_dice=False))
    dl, _ = trainer.get_dataloaders()
    np.random.seed(0)
    torch.manual_seed(0)
    losses_nn, losses_uk = [], []
    norms: list[float] = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(*a, **k):  # both trainers call torch.nn.utils.clip_grad_norm_; it returns the norm before clipping
        total = clip(*a, **k)
        norms.append(float(total))
        return total

    uk.train()
    trainer.network.train()
    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        for _ in range(steps):
            batch = next(dl)
            out = trainer.train_step({"data": batch["data"].clone(), "target": [t.clone() for t in batch["target"]]})
            losses_nn.append(float(out["loss"]))
            uk_batch = {"data": batch["data"].clone(), "target": batch["target"][0].clone()}
            losses_uk.append(float(train_step(uk, uk_batch, loss_fn, opt, None, cfg, torch.device("cpu"))))
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    sd_nn = convert_state_dict(trainer.network.state_dict())
    sd_uk = uk.state_dict()
    diff = max((sd_nn[k] - sd_uk[k]).abs().max().item() for k in sd_uk)
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses_uk, losses_nn))
    row(f"{steps} training steps from the same weights on the same batches (loss per step)", fmt(losses_uk, 6),
        fmt(losses_nn, 6), f"loss rel. diff {rel:.1e}; parameters max |diff| {diff:.1e}; "
        f"gradient norms before clipping (nnU-Net, unetkit alternating) {fmt(norms, 3)}", rel < 1e-4 and diff < 1e-4)


# ----------------------------------------------------------------------------- sampling

def sample_stats(data, seg, labels=(1, 2)) -> dict:
    """Per-sample numbers of a batch ``data (B,1,*)``, ``seg (B,1,*)`` (torch or numpy)."""
    data = np.asarray(data, dtype=np.float32)
    seg = np.asarray(seg)
    out = []
    for j in range(data.shape[0]):
        d = data[j, 0].ravel()
        s = seg[j, 0].ravel()
        p1, p50, p99 = np.percentile(d, [1, 50, 99])
        centre = seg[j, 0][tuple(n // 2 for n in seg.shape[2:])]
        row_ = {"pos": j, "mean": float(d.mean()), "std": float(d.std()), "p1": float(p1), "p50": float(p50),
                "p99": float(p99), "fg": float((s > 0).mean()), "has_fg": bool((s > 0).any()),
                "zero": float((d == 0).mean()), "centre": int(centre)}
        for k in labels:
            row_[f"class{k}"] = float((s == k).mean())
        nonzero = data[j, 0] != 0
        for axis in range(nonzero.ndim):  # where the case starts inside the box (padding before it)
            other = tuple(a for a in range(nonzero.ndim) if a != axis)
            row_[f"offset{axis}"] = int(np.argmax(nonzero.any(axis=other)))
        out.append(row_)
    return out


def _ks(name: str, a: list[float], b: list[float], digits: int = 3) -> None:
    from scipy import stats

    t = stats.ks_2samp(a, b)
    row(name, f"median {np.median(a):.{digits}g}", f"median {np.median(b):.{digits}g}",
        f"KS D={t.statistic:.3f} p={t.pvalue:.2g}", bool(t.pvalue >= P_PASS))


def _share(name: str, a: list[bool], b: list[bool]) -> None:
    from scipy import stats

    ka, kb = int(np.sum(a)), int(np.sum(b))
    if (ka in (0, len(a))) and (kb in (0, len(b))) and ka / len(a) == kb / len(b):
        p = 1.0
    else:
        p = stats.fisher_exact([[ka, len(a) - ka], [kb, len(b) - kb]]).pvalue
    row(name, f"{ka / len(a):.3f} ({ka}/{len(a)})", f"{kb / len(b):.3f} ({kb}/{len(b)})",
        f"Fisher p={p:.2g}", bool(p >= P_PASS))


def compare_sampling(trainer, cache: Path, names: list[str], batches: int, seed: int) -> None:
    import torch
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    from unetkit.training.augmentation import default_augmentation
    from unetkit.training.dataset import CachedDataset
    from unetkit.training.sampling import PatchSampler

    _, _, initial, _ = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    initial = tuple(int(i) for i in initial)
    patch = tuple(trainer.configuration_manager.patch_size)
    uk_initial = default_augmentation(patch).initial_patch_size
    row("initial (sampling) patch size", uk_initial, tuple(int(i) for i in initial), "",
        tuple(uk_initial) == tuple(int(i) for i in initial))
    dataset_tr, _ = trainer.get_tr_and_val_datasets()
    dl = nnUNetDataLoader(dataset_tr, BATCH, initial, patch, trainer.label_manager,
                          oversample_foreground_percent=trainer.oversample_foreground_percent, transforms=None)
    sampler = PatchSampler(CachedDataset(cache, names), patch, BATCH, 0.33, initial_patch_size=initial)
    np.random.seed(1 + seed)
    torch.manual_seed(1 + seed)
    nn_rows, uk_rows = [], []
    for i in range(batches):
        b = dl.generate_train_batch()
        seg = b["target"].numpy().copy()
        seg[seg < 0] = 0
        nn_rows += sample_stats(b["data"], seg)
        u = sampler.sample_batch(np.random.default_rng([7, seed, i]))
        uk_rows += sample_stats(u["data"], u["target"])
    for pos in range(BATCH):
        a = [r for r in uk_rows if r["pos"] == pos]
        c = [r for r in nn_rows if r["pos"] == pos]
        kind = "forced foreground" if pos >= round(BATCH * (1 - 0.33)) else "random"
        _share(f"sampling, position {pos} ({kind}): share with foreground", [r["has_fg"] for r in a],
               [r["has_fg"] for r in c])
        if kind == "forced foreground":
            _share(f"sampling, position {pos}: centre voxel is class 2 (posterior), of fg-centred",
                   [r["centre"] == 2 for r in a if r["centre"] > 0], [r["centre"] == 2 for r in c if r["centre"] > 0])
            _share(f"sampling, position {pos}: centre voxel is foreground",
                   [r["centre"] > 0 for r in a], [r["centre"] > 0 for r in c])
        _ks(f"sampling, position {pos}: foreground fraction of the initial patch", [r["fg"] for r in a],
            [r["fg"] for r in c])
        _ks(f"sampling, position {pos}: padded (exactly 0) fraction", [r["zero"] for r in a], [r["zero"] for r in c])
        for axis in range(3):
            _ks(f"sampling, position {pos}: padding before the case along axis {axis} (voxels)",
                [r[f"offset{axis}"] for r in a], [r[f"offset{axis}"] for r in c])


# ----------------------------------------------------------------------------- augmentation

class _Counter:
    """Wraps an nnU-Net transform and counts how often it runs."""

    def __init__(self, inner, counts: dict, name: str):
        self.inner, self.counts, self.name = inner, counts, name

    def __call__(self, **data):
        self.counts[self.name] = self.counts.get(self.name, 0) + 1
        return self.inner(**data)


def _rotation_angle(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))


NN_NAMES = {"GaussianNoiseTransform": "noise", "GaussianBlurTransform": "blur",
            "MultiplicativeBrightnessTransform": "brightness", "ContrastTransform": "contrast",
            "SimulateLowResolutionTransform": "low resolution"}


def instrument_nnunet(transforms, counts: dict, spatial: list, mirrors: list) -> None:
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.random import RandomTransform

    for t in transforms.transforms:
        if isinstance(t, RandomTransform):
            name = NN_NAMES.get(type(t.transform).__name__)
            if name is None:  # GammaTransform, inverted or not
                name = "gamma inverted" if t.transform.p_invert_image > 0 else "gamma"
            t.transform = _Counter(t.transform, counts, name)
        elif isinstance(t, SpatialTransform):
            original = t.get_parameters

            def get_parameters(_orig=original, **data):
                params = _orig(**data)
                spatial.append(params["affine"])
                return params

            t.get_parameters = get_parameters
        elif isinstance(t, MirrorTransform):
            original_mirror = t.get_parameters

            def get_mirror_parameters(_orig=original_mirror, **data):
                params = _orig(**data)
                mirrors.append(tuple(int(a) for a in params["axes"]))
                return params

            t.get_parameters = get_mirror_parameters


def _observed_flips(inputs, outputs, cfg) -> list:
    """Mirror axes of the samples that were only cropped (not resampled): the flip of the centre
    crop that equals the output; resampled samples are skipped."""
    import itertools

    import torch

    import unetkit.training.augmentation as aug

    crop = (slice(None),) + aug._crop_slices(cfg.initial_patch_size, cfg.patch_size)
    combos = [c for n in range(4) for c in itertools.combinations(range(3), n)]
    found = []
    for i in range(inputs.shape[0]):
        d = inputs[i][crop]
        for axes in combos:
            if torch.equal(torch.flip(d, [a + 1 for a in axes]) if axes else d, outputs[i]):
                found.append(axes)
                break
    return found


def instrument_unetkit(counts: dict, spatial: list, mirrors: list):
    """Patch unetkit's augmentation module to record transform use; returns an undo function."""
    import unetkit.training.augmentation as aug

    saved = {n: getattr(aug, n) for n in ("_pick", "_noise", "_blur", "_brightness", "_contrast",
                                           "_low_resolution", "_gamma", "_rotation_matrix", "_resample",
                                           "_spatial")}
    current = {"name": None}

    def pick(rng, n, p):
        sel = saved["_pick"](rng, n, p)
        counts[current["name"]] = counts.get(current["name"], 0) + len(sel)
        return sel

    def named(fn, name):
        def wrapper(*a, **k):
            current["name"] = name
            return fn(*a, **k)
        return wrapper

    def gamma(data, p, invert, cfg, rng):
        current["name"] = "gamma inverted" if invert else "gamma"
        return saved["_gamma"](data, p, invert, cfg, rng)

    rotations: list = []
    calls: list = []  # (sample indices, affines) of each resampling call

    def rotation_matrix(angles, dim):
        m = saved["_rotation_matrix"](angles, dim)
        rotations.append(m)
        return m

    def resample(data, seg, idx, affines, *rest):
        spatial.extend(affines)
        calls.append((list(idx), list(affines)))
        return saved["_resample"](data, seg, idx, affines, *rest)

    def spatial_(data, seg, cfg, rng):
        out_data, out_seg = saved["_spatial"](data, seg, cfg, rng)
        mirrors.extend(_observed_flips(data, out_data, cfg))
        return out_data, out_seg

    aug._pick = pick
    aug._spatial = spatial_
    aug._noise = named(saved["_noise"], "noise")
    aug._blur = named(saved["_blur"], "blur")
    aug._brightness = named(saved["_brightness"], "brightness")
    aug._contrast = named(saved["_contrast"], "contrast")
    aug._low_resolution = named(saved["_low_resolution"], "low resolution")
    aug._gamma = gamma
    aug._rotation_matrix = rotation_matrix
    aug._resample = resample

    def undo():
        for n, f in saved.items():
            setattr(aug, n, f)

    return undo, rotations, calls


def _spatial_params(affines: list, with_flips: bool) -> tuple[list[float], list[float]]:
    """Rotation angles (degrees) and scales of the samples that were resampled."""
    angles, scales = [], []
    for a in affines:
        if a is None:
            continue
        a = np.asarray(a, dtype=np.float64)
        s = abs(np.linalg.det(a)) ** (1 / 3)
        r = a / s
        if with_flips:  # unetkit folds mirroring into the matrix: undo the column sign flips
            r = r * np.sign(np.diag(np.linalg.qr(r)[1]))[None, :]
            if np.linalg.det(r) < 0:
                r[:, 0] *= -1
        scales.append(s)
        angles.append(_rotation_angle(r))
    return angles, scales


def _scale_checks(uk_kept: list, nn_kept: list) -> None:
    """Scale factors against U(0.7, 1.4), and the foreground a scaled sample keeps, by scale.

    A sample scaled by s shows about 1/s^3 of its case's foreground, so the output's foreground
    fraction follows the scale factors drawn; comparing ``kept * s^3`` within scale bins separates
    the resampling from the luck of the draw.
    """
    from scipy import stats

    uk = np.array([k for k in uk_kept if abs(k[0] - 1) > 1e-9])
    nn = np.array([k for k in nn_kept if abs(k[0] - 1) > 1e-9])
    p_uk = stats.kstest(uk[:, 0], stats.uniform(0.7, 0.7).cdf).pvalue
    p_nn = stats.kstest(nn[:, 0], stats.uniform(0.7, 0.7).cdf).pvalue
    row("scale factors against U(0.7, 1.4) (one-sample KS)", f"mean {uk[:, 0].mean():.3f}, p={p_uk:.2g}",
        f"mean {nn[:, 0].mean():.3f}, p={p_nn:.2g}", "expected mean 1.05", bool(min(p_uk, p_nn) >= P_PASS))
    for lo, hi in ((0.7, 0.9), (0.9, 1.1), (1.1, 1.41)):
        a = [k * s ** 3 for s, k in uk if lo <= s < hi]
        b = [k * s ** 3 for s, k in nn if lo <= s < hi]
        _ks(f"scaled samples, s in [{lo}, {min(hi, 1.4)}]: foreground kept x s^3", a, b)


def _draw_nnunet(trainer, batches: int, seed: int, fg_total: dict) -> dict:
    """``batches`` batches of ``nnUNetTrainer.get_dataloaders``, instrumented."""
    import torch

    dl, _ = trainer.get_dataloaders()
    got: dict = {"counts": {}, "spatial": [], "mirrors": [], "rows": [], "kept": []}
    instrument_nnunet(dl.data_loader.transforms, got["counts"], got["spatial"], got["mirrors"])
    np.random.seed(2 + seed)
    torch.manual_seed(2 + seed)
    for _ in range(batches):
        start = len(got["spatial"])
        b = next(dl)
        target = b["target"][0]
        rows = sample_stats(b["data"], target)
        for r, affine, key in zip(rows, got["spatial"][start:], b["keys"]):
            r["resampled"], r["key"] = affine is not None, key
        got["rows"] += rows
        for j, (key, affine) in enumerate(zip(b["keys"], got["spatial"][start:])):
            if affine is not None:
                got["kept"].append((abs(np.linalg.det(affine)) ** (1 / 3),
                                    float((target[j] > 0).sum()) / fg_total[key]))
    return got


def _draw_unetkit(cache: Path, names: list[str], patch: tuple, batches: int, seed: int, fg_total: dict) -> dict:
    """``batches`` batches of unetkit's sampler + ``augment_batch`` on the same arrays, instrumented."""
    from unetkit.training.augmentation import augment_batch, default_augmentation
    from unetkit.training.dataset import CachedDataset
    from unetkit.training.sampling import PatchSampler

    cfg = default_augmentation(patch)
    sampler = PatchSampler(CachedDataset(cache, names), patch, BATCH, 0.33, initial_patch_size=cfg.initial_patch_size)
    got: dict = {"counts": {}, "spatial": [], "mirrors": [], "rows": [], "kept": []}
    undo, got["rotations"], calls = instrument_unetkit(got["counts"], got["spatial"], got["mirrors"])
    try:
        for i in range(batches):
            raw = sampler.sample_batch(np.random.default_rng([11, seed, i, 0]))
            start = len(calls)
            out = augment_batch(raw, cfg, np.random.default_rng([11, seed, i, 1]))
            rows = sample_stats(out["data"], out["target"])
            resampled = {j for idx, _ in calls[start:] for j in idx}
            for j, r in enumerate(rows):
                r["resampled"], r["key"] = j in resampled, raw["keys"][j]
            got["rows"] += rows
            for idx, affines in calls[start:]:
                for j, affine in zip(idx, affines):
                    got["kept"].append((abs(np.linalg.det(affine)) ** (1 / 3),
                                        float((out["target"][j] > 0).sum()) / fg_total[raw["keys"][j]]))
    finally:
        undo()
    return got


def _label_fractions(uk: dict, nn: dict, uk_again: dict, fg_total: dict, patch: tuple) -> None:
    """Label fractions of the samples that were only cropped (rotated/scaled ones follow the scale
    factors drawn, compared by scale above), three ways: KS between the pipelines; KS of unetkit
    against itself with other random numbers (how often this statistic alone gives a small p: the
    values cluster on the ~170 cases drawn a few times each); and per case, the share of the case's
    foreground inside the patch, paired over the cases both drew (free of the case mix)."""
    from scipy import stats

    plain = lambda g: [r for r in g["rows"] if not r["resampled"]]
    for key, label in (("fg", "foreground fraction"), ("class1", "class 1 (anterior) fraction"),
                       ("class2", "class 2 (posterior) fraction")):
        _ks(f"augmented output, samples not rotated or scaled: {label}", [r[key] for r in plain(uk)],
            [r[key] for r in plain(nn)])
        t = stats.ks_2samp([r[key] for r in plain(uk)], [r[key] for r in plain(uk_again)])
        row(f"  calibration: the same {label}, unetkit against unetkit with other random numbers", "", "",
            f"KS D={t.statistic:.3f} p={t.pvalue:.2g}", None)
    voxels = int(np.prod(patch))

    def per_case(g: dict) -> dict:
        out: dict = {}
        for r in plain(g):
            out.setdefault(r["key"], []).append(r["fg"] * voxels / fg_total[r["key"]])
        return out

    a, b = per_case(uk), per_case(nn)
    common = sorted(set(a) & set(b))
    ma, mb = [float(np.mean(a[k])) for k in common], [float(np.mean(b[k])) for k in common]
    t = stats.ttest_rel(ma, mb)
    row(f"samples not rotated or scaled: share of the case's foreground in the patch, mean over {len(common)} cases",
        f"{np.mean(ma):.4f}", f"{np.mean(mb):.4f}", f"paired t p={t.pvalue:.2g}", bool(t.pvalue >= P_PASS))


def _applied(name: str, k_uk: int, k_nn: int, n: int) -> None:
    _share(f"augmentation applied: {name}", [True] * k_uk + [False] * (n - k_uk), [True] * k_nn + [False] * (n - k_nn))


def compare_augmentation(trainer, cache: Path, names: list[str], batches: int, seed: int) -> None:
    patch = tuple(int(p) for p in trainer.configuration_manager.patch_size)
    fg_total = {n: int((np.load(cache / f"{n}_seg.npy") > 0).sum()) for n in names}
    t0 = time.perf_counter()
    nn = _draw_nnunet(trainer, batches, seed, fg_total)
    t1 = time.perf_counter()
    uk = _draw_unetkit(cache, names, patch, batches, seed, fg_total)
    print(f"  ({batches} batches each: unetkit {time.perf_counter() - t1:.0f} s, nnU-Net {t1 - t0:.0f} s)", flush=True)
    n = batches * BATCH
    nn_angles, nn_scales = _spatial_params(nn["spatial"], with_flips=False)
    _, uk_scales = _spatial_params(uk["spatial"], with_flips=True)
    scaled = lambda scales: [s for s in scales if abs(s - 1) > 1e-9]
    rot_nn = [a for a in nn_angles if a > 1e-6]
    _applied("rotation (p 0.2)", len(uk["rotations"]), len(rot_nn), n)
    _applied("scaling (p 0.2)", len(scaled(uk_scales)), len(scaled(nn_scales)), n)
    for name in ("noise", "blur", "brightness", "contrast", "low resolution", "gamma inverted", "gamma"):
        _applied(name, uk["counts"].get(name, 0), nn["counts"].get(name, 0), n)
    for axis in range(3):
        _share(f"augmentation applied: mirror axis {axis} (p 0.5; unetkit: of the {len(uk['mirrors'])} samples not "
               "resampled)", [axis in m for m in uk["mirrors"]], [axis in m for m in nn["mirrors"]])
    _ks("rotation angle (degrees) of rotated samples", [_rotation_angle(m) for m in uk["rotations"]], rot_nn)
    _ks("scale factor of scaled samples", scaled(uk_scales), scaled(nn_scales))
    _scale_checks(uk["kept"], nn["kept"])
    for key, label in (("mean", "intensity mean"), ("std", "intensity std"), ("p1", "intensity 1st percentile"),
                       ("p50", "intensity median"), ("p99", "intensity 99th percentile")):
        _ks(f"augmented output: {label}", [r[key] for r in uk["rows"]], [r[key] for r in nn["rows"]])
    _label_fractions(uk, nn, _draw_unetkit(cache, names, patch, batches, seed + 1000, fg_total), fg_total, patch)
    for pos in range(BATCH):
        _share(f"augmented output: position {pos} has foreground",
               [r["has_fg"] for r in uk["rows"] if r["pos"] == pos], [r["has_fg"] for r in nn["rows"] if r["pos"] == pos])
    _share("augmented output: has class 2 (posterior)", [r["class2"] > 0 for r in uk["rows"]],
           [r["class2"] > 0 for r in nn["rows"]])


def compare_spatial_paired(trainer, samples: int, seed: int) -> None:
    """Both implementations' rotation + scaling on the same input patch with the same matrix.

    With the trainer's sampling patch (73, 80, 64) unetkit resamples about the centre of its plain
    crop, nnU-Net about the centre of the input: half a voxel apart along axis 0 (73 - 40 odd). A
    (72, 80, 64) input removes that shift, leaving only the label interpolation and rounding.
    """
    import torch
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    import unetkit.training.augmentation as aug

    rot, _, initial, _ = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    patch = tuple(int(p) for p in trainer.configuration_manager.patch_size)
    dataset_tr, _ = trainer.get_tr_and_val_datasets()
    initial = tuple(int(i) for i in initial)
    for initial_size, scaling in ((initial, (0.7, 1.4)), ((72, 80, 64), (0.7, 1.4)), (initial, (0.7, 0.9))):
        dl = nnUNetDataLoader(dataset_tr, 1, initial_size, patch, trainer.label_manager,
                              oversample_foreground_percent=0.5, probabilistic_oversampling=True, transforms=None)
        st = SpatialTransform(patch, 0, False, p_elastic_deform=0, p_rotation=1, rotation=rot, p_scaling=1,
                              scaling=scaling, p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                              border_mode_seg="constant", padding_value_seg=-1)
        cfg = aug.default_augmentation(patch, initial_patch_size=initial_size)
        np.random.seed(5 + seed)
        torch.manual_seed(5 + seed)
        agree, img_diff, vol = [], [], np.zeros((2, 2))
        for _ in range(samples):
            b = dl.generate_train_batch()
            data, seg = b["data"][0], b["target"][0]
            params = st.get_parameters(image=data, segmentation=seg)
            out = st.apply({"image": data.clone(), "segmentation": seg.clone()}, **params)
            nn_img, nn_seg = out["image"], out["segmentation"].clamp_min(0)  # RemoveLabelTansform(-1, 0)
            uk_img = torch.empty((1, 1, *patch))
            uk_seg = torch.empty((1, 1, *patch), dtype=torch.int16)
            aug._resample(data[None].float(), seg.clamp_min(0)[None], [0], [params["affine"]], cfg, uk_img, uk_seg)
            agree.append(float((uk_seg[0] == nn_seg).float().mean()))
            img_diff.append(float((uk_img[0] - nn_img).abs().mean() / nn_img.std()))
            for k in (1, 2):
                vol[0, k - 1] += float((uk_seg == k).sum())
                vol[1, k - 1] += float((nn_seg == k).sum())
        ratio = vol[0] / vol[1]
        label = f"rotation+scaling ({scaling[0]}-{scaling[1]}), same input and matrix, sampling patch {initial_size}"
        row(label, f"label volumes / nnU-Net's: class 1 {ratio[0]:.4f}, class 2 {ratio[1]:.4f}", "",
            f"voxels with equal labels {np.mean(agree):.4f} (min {np.min(agree):.4f}); "
            f"image mean |diff| / std {np.mean(img_diff):.2e}", None)


# ----------------------------------------------------------------------------- pseudo-Dice

class _Fixed:
    """A stand-in network returning given outputs (for both trainers' validation steps)."""

    def __init__(self, outputs):
        self.outputs = outputs

    def __call__(self, x):
        return self.outputs

    def eval(self):
        return self


def _validation_logits(epoch: int, it: int):
    """Deep-supervision logits and targets whose predictions improve with ``epoch``."""
    import torch

    logits, target = _logits_and_target(100 + 10 * epoch + it)
    onehot = torch.nn.functional.one_hot(target[:, 0].long(), 3).permute(0, 4, 1, 2, 3)
    logits[0] = logits[0] + 3 * onehot * (epoch + 1) / 3
    return logits, target


def compare_pseudo_dice(trainer) -> None:
    import torch

    from unetkit.training.config import TrainingConfig
    from unetkit.training.loss import LossSpec, build_loss, dice_from_counts, downsample_target
    from unetkit.training.progress import TrainingHistory
    from unetkit.training.trainer import validation_step

    cfg = TrainingConfig(channels_last=False)
    spec = LossSpec()
    history = TrainingHistory(0.9)
    uk_dice, nn_dice, uk_ema, nn_ema = [], [], [], []
    network = trainer.network
    try:
        for epoch in range(3):
            outs, counts = [], None
            for it in range(2):
                logits, target = _validation_logits(epoch, it)
                trainer.network = _Fixed(logits)
                nn_targets = [t.long() for t in downsample_target(target, [x.shape[2:] for x in logits])]
                outs.append(trainer.validation_step({"data": torch.zeros(1), "target": nn_targets}))
                _, c = validation_step(_Fixed(logits), {"data": torch.zeros(BATCH, 1, 4, 4, 4), "target": target},
                                       build_loss(spec), spec, cfg, torch.device("cpu"))
                counts = c if counts is None else counts + c
            trainer.current_epoch = epoch
            trainer.on_validation_epoch_end(outs)
            d = dice_from_counts(counts.numpy())
            uk_dice.append(d)
            uk_ema.append(history.add(epoch, 0.0, 0.0, d, 0.01, 1.0, 0.0))
            nn_dice.append([float(v) for v in trainer.logger.get_value("dice_per_class_or_region", step=-1)])
            nn_ema.append(float(trainer.logger.get_value("ema_fg_dice", step=-1)))
    finally:
        trainer.network = network
    rel = float(np.max(np.abs(np.subtract(uk_dice, nn_dice)) / np.abs(nn_dice)))
    rel_ema = float(np.max(np.abs(np.subtract(uk_ema, nn_ema)) / np.abs(nn_ema)))
    row("validation pseudo-Dice per class, 3 epochs x 2 batches", fmt(uk_dice), fmt(nn_dice),
        f"max rel. diff {rel:.1e}", rel < REL_PASS)
    row("EMA pseudo-Dice (best-checkpoint criterion)", fmt(uk_ema), fmt(nn_ema), f"max rel. diff {rel_ema:.1e}",
        rel_ema < REL_PASS)


# ----------------------------------------------------------------------------- main

def write_table(path: Path, command: str) -> None:
    lines = [f"Made by `{command}`", "",
             "| component | unetkit | nnU-Net | statistic | verdict |", "|---|---|---|---|---|"]
    cell = lambda v: str(v).replace("|", "\\|")  # a literal | would end the cell
    for r in ROWS:
        lines.append(f"| {cell(r['component'])} | {cell(r['unetkit'])} | {cell(r['nnunet'])} | "
                     f"{cell(r['statistic'])} | {r['verdict']} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recipe_vs_nnunet"),
                        help="scratch folder (raw links, nnU-Net preprocessing, the cache, the results)")
    parser.add_argument("--batches", type=int, default=300, help="batches drawn per pipeline (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="varies the random draws of sampling and augmentation")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these parts: loss network steps sampling augmentation paired pseudo_dice "
                             "(augmentation includes paired)")
    args = parser.parse_args(argv)
    command = "PYTHONPATH=src " + shlex.join([sys.executable, "benchmarks/recipe_vs_nnunet.py", *sys.argv[1:]])
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(nnUNet_raw=str(workdir / "raw"), nnUNet_preprocessed=str(workdir / "nnpre"),
                      nnUNet_results=str(workdir / "nnres"))
    try:
        import nnunetv2  # noqa: F401
    except ImportError:
        raise SystemExit("error: run this with the python of nnU-Net's comparison venv "
                         "(bash benchmarks/setup_nnunet_venv.sh VENV; PYTHONPATH=src VENV/bin/python ...)")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    prepare(workdir)
    torch.manual_seed(0)  # nnU-Net's network initialisation in make_trainer
    os.environ["nnUNet_n_proc_DA"] = "0"  # batches in this process (the planner above needs it unset)
    trainer = make_trainer(workdir)
    entry = unetkit_entry(trainer)
    parts = set(args.only or ["loss", "network", "steps", "sampling", "augmentation", "pseudo_dice"])
    cache = workdir / "unetkit_cache_from_nnunet"
    names = write_unetkit_cache(trainer, cache) if parts & {"sampling", "augmentation"} else []
    if "paired" in parts:
        compare_spatial_paired(trainer, 50, args.seed)
    t0 = time.perf_counter()
    if "loss" in parts:
        print("loss", flush=True)
        compare_loss()
    if "network" in parts:
        print("network and optimiser", flush=True)
        compare_init(trainer, entry)
        compare_optimizer(trainer, entry)
    if "pseudo_dice" in parts:
        print("validation pseudo-Dice", flush=True)
        compare_pseudo_dice(trainer)
    if "sampling" in parts:
        print("sampling", flush=True)
        compare_sampling(trainer, cache, names, args.batches, args.seed)
    if "augmentation" in parts:
        print("augmentation", flush=True)
        compare_augmentation(trainer, cache, names, args.batches, args.seed)
        compare_spatial_paired(trainer, 50, args.seed)
    if "steps" in parts:
        print("training steps", flush=True)
        compare_steps(trainer, entry)
    (workdir / "recipe_vs_nnunet.json").write_text(json.dumps({"command": command, "rows": ROWS,
                                                                "seconds": time.perf_counter() - t0}, indent=2,
                                                               default=str))
    write_table(workdir / "recipe_vs_nnunet.md", command)
    print(f"\nMade by: {command}\n")
    print((workdir / "recipe_vs_nnunet.md").read_text())
    different = [r for r in ROWS if r["verdict"] == "DIFFERENT"]
    print(f"{len(ROWS)} comparisons, {len(different)} different", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
