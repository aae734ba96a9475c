"""Seconds per training batch for sampling + nnU-Net's augmentation set, single process.

Two settings of the training benchmark:

* 3D Hippocampus-like: patch 40 x 56 x 40, batch 7, 1 mm volumes of about 36 x 50 x 35
  (synthetic blobs, or the real cache with ``--cache3d WORKDIR/NAME/preprocessed/3d_fullres``);
* 2D: patch 512 x 512, batch 2, images of 584 x 565 (synthetic, or ``--cache2d``).

Rows: sampling (cropping the enlarged patch from memory-mapped cases, with foreground
oversampling), unetkit's augmentation (one batched resampling, linear-label and nearest-label
variants), and, when ``batchgeneratorsv2`` is importable, nnU-Net v2.8.1's training transforms
built from it with the trainer's parameters and applied per sample as nnU-Net's loader does, on
the same sampled patches. Also the same pipeline with every transform drawn (p = 1) to show the
worst case. Torch runs single-threaded (as in a data worker) unless ``--threads`` says otherwise.

Run::

    python benchmarks/augmentation_speed.py [--batches 30] [--cache3d DIR] [--cache2d DIR]
    PYTHONPATH=/path/to/batchgeneratorsv2 python benchmarks/augmentation_speed.py   # with nnU-Net rows

CPU time is shared with the network on small machines, so the load average is printed with
the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from unetkit.training.augmentation import AugmentationConfig, augment_batch, default_augmentation
from unetkit.training.dataset import CachedDataset
from unetkit.training.sampling import PatchSampler


def synthetic_cache(folder: Path, n: int, shape: tuple[int, ...], channels: int, seed: int = 0) -> Path:
    """Cases in the documented cache format: z-scored noise with two ellipsoid classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        jitter = tuple(int(s + rng.integers(-3, 4)) for s in shape)
        grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in jitter], indexing="ij")
        r = np.sqrt(sum(((g - rng.uniform(-0.2, 0.2)) / rng.uniform(0.4, 0.7)) ** 2 for g in grids))
        label = np.zeros(jitter, np.int16)
        label[r < 1.0] = 1
        label[r < 0.5] = 2
        image = rng.normal(size=(channels, *jitter)).astype(np.float32) + label
        name = f"case_{i:03d}"
        np.save(folder / f"{name}.npy", image)
        np.save(folder / f"{name}_seg.npy", label[None])
        np.savez(folder / f"{name}_locations.npz",
                 **{f"class_{k}": np.argwhere(label == k)[:10000].astype(np.int64) for k in (1, 2)})
        (folder / f"{name}.json").write_text(json.dumps({"case": name, "foreground_classes": [1, 2]}))
    return folder


def nnunet_transforms(cfg: AugmentationConfig, p_all: float | None = None):
    """nnU-Net v2.8.1's get_training_transforms (no dummy 2D, no deep supervision), from batchgeneratorsv2."""
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
    from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
    from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
    from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
    from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.random import RandomTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

    def p(value: float) -> float:
        return value if p_all is None else p_all

    return ComposeTransforms([
        SpatialTransform(cfg.patch_size, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
                         p_rotation=p(0.2), rotation=cfg.rotation, p_scaling=p(0.2), scaling=(0.7, 1.4),
                         p_synchronize_scaling_across_axes=1, bg_style_seg_sampling=False,
                         border_mode_seg="constant", padding_value_seg=-1),
        RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                        apply_probability=p(0.1)),
        RandomTransform(GaussianBlurTransform(blur_sigma=(0.5, 1.0), synchronize_channels=False,
                                              synchronize_axes=False, p_per_channel=0.5, benchmark=True),
                        apply_probability=p(0.2)),
        RandomTransform(MultiplicativeBrightnessTransform(multiplier_range=BGContrast((0.75, 1.25)),
                                                          synchronize_channels=False, p_per_channel=1),
                        apply_probability=p(0.15)),
        RandomTransform(ContrastTransform(contrast_range=BGContrast((0.75, 1.25)), preserve_range=True,
                                          synchronize_channels=False, p_per_channel=1), apply_probability=p(0.15)),
        RandomTransform(SimulateLowResolutionTransform(scale=(0.5, 1), synchronize_channels=False,
                                                       synchronize_axes=True, ignore_axes=None,
                                                       allowed_channels=None, p_per_channel=0.5),
                        apply_probability=p(0.25)),
        RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=1, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=p(0.1)),
        RandomTransform(GammaTransform(gamma=BGContrast((0.7, 1.5)), p_invert_image=0, synchronize_channels=False,
                                       p_per_channel=1, p_retain_stats=1), apply_probability=p(0.3)),
        MirrorTransform(allowed_axes=cfg.mirror_axes),
        RemoveLabelTansform(-1, 0),
    ])


def timed(fn: Callable[[int], object], batches: int, warmup: int = 2) -> tuple[float, float]:
    """(median, mean) seconds per call over ``batches`` calls after ``warmup``."""
    for i in range(warmup):
        fn(-1 - i)
    times = []
    for i in range(batches):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.mean(times))


def run_setting(label: str, folder: Path, patch: tuple[int, ...], batch_size: int, batches: int,
                device: str = "cpu") -> list[tuple]:
    cfg = default_augmentation(patch)
    ds = CachedDataset(folder)
    sampler = PatchSampler(ds, patch, batch_size, initial_patch_size=cfg.initial_patch_size)
    pool = [sampler.sample_batch(np.random.default_rng(1000 + i)) for i in range(8)]
    rows = []

    med, mean = timed(lambda i: sampler.sample_batch(np.random.default_rng(i + 10)), batches)
    rows.append((label, "sampling (crop enlarged patch, oversampling)", med, mean))

    def ours(config: AugmentationConfig) -> Callable[[int], object]:
        def run(i: int) -> None:
            augment_batch(pool[i % len(pool)], config, np.random.default_rng(i + 10), device=device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return run

    on = "" if device == "cpu" else f" on {device}"
    for name, config in ((f"unetkit augmentation{on}, linear labels (default)", cfg),
                         (f"unetkit augmentation{on}, nearest labels", replace(cfg, label_interpolation="nearest"))):
        med, mean = timed(ours(config), batches)
        rows.append((label, name, med, mean))
    every = replace(cfg, p_rotation=1.0, p_scaling=1.0, p_noise=1.0, p_blur=1.0, p_brightness=1.0,
                    p_contrast=1.0, p_low_resolution=1.0, p_gamma_inverted=1.0, p_gamma=1.0)
    med, mean = timed(ours(every), max(3, batches // 3))
    rows.append((label, f"unetkit{on}, every transform drawn (p=1)", med, mean))

    try:
        pipeline = nnunet_transforms(cfg)
        pipeline_all = nnunet_transforms(cfg, p_all=1.0)
    except ImportError:
        rows.append((label, "nnU-Net (batchgeneratorsv2 not importable)", float("nan"), float("nan")))
        return rows

    def theirs(tr) -> Callable[[int], object]:
        def run(i: int) -> None:
            np.random.seed(i + 10)
            torch.manual_seed(i + 10)
            batch = pool[i % len(pool)]
            for j in range(batch_size):  # nnU-Net's loader transforms sample by sample
                tr(image=torch.from_numpy(batch["data"][j]).float(),
                   segmentation=torch.from_numpy(batch["target"][j]).to(torch.int16))
        return run

    med, mean = timed(theirs(pipeline), batches)
    rows.append((label, "nnU-Net v2.8.1 transforms (batchgeneratorsv2)", med, mean))
    med, mean = timed(theirs(pipeline_all), max(3, batches // 3))
    rows.append((label, "nnU-Net, every transform drawn (p=1)", med, mean))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a data worker uses 1)")
    parser.add_argument("--device", default="cpu", help="where unetkit's augmentation runs (cpu, cuda)")
    parser.add_argument("--cache3d", type=Path, help="a real 3d_fullres cache folder (default: synthetic)")
    parser.add_argument("--cache2d", type=Path, help="a real 2d cache folder of 512+ pictures (default: synthetic)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="unetkit_aug_bench_") as tmp:
        folder3d = args.cache3d or synthetic_cache(Path(tmp) / "3d", 24, (36, 50, 35), 1)
        folder2d = args.cache2d or synthetic_cache(Path(tmp) / "2d", 8, (584, 565), 3)
        rows += run_setting("3D 40x56x40 b7", folder3d, (40, 56, 40), 7, args.batches, args.device)
        rows += run_setting("2D 512x512 b2", folder2d, (512, 512), 2, args.batches, args.device)
    load_after = os.getloadavg()

    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"torch {torch.__version__}, {args.threads} thread(s), cpus {os.cpu_count()}{gpu}; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    print(f"3D data: {args.cache3d or 'synthetic 36x50x35 (+-3) volumes, 1 channel'}; "
          f"2D data: {args.cache2d or 'synthetic 584x565 (+-3) images, 3 channels'}")
    width = max(len(r[1]) for r in rows)
    print(f"{'setting':<16} {'step':<{width}} {'median s/batch':>15} {'mean s/batch':>13}")
    for setting, name, med, mean in rows:
        print(f"{setting:<16} {name:<{width}} {med:>15.4f} {mean:>13.4f}")


if __name__ == "__main__":
    main()
