"""Small synthetic datasets with real structure, for tests and the demo.

Each case is noise-corrupted background with one or two smooth blobs (ellipsoids in 3D,
ellipses in 2D) whose intensity differs from the background, so that a U-Net can learn them in
a few iterations. Sizes, spacings and intensities vary per case like in real data, so that
fingerprinting, planning and resampling see something worth deciding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetkit.data.io import Geometry, write_image, write_label
from unetkit.utils.atomic import atomic_write_json


def make_case(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int = 2,
              num_channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image (C, *shape) float32, label shape int16)`` with one blob per foreground class."""
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    label = np.zeros(shape, dtype=np.int16)
    for cls in range(1, num_classes + 1):
        centre = [rng.uniform(0.3 * s, 0.7 * s) for s in shape]
        radii = [rng.uniform(0.12 * s, 0.22 * s) for s in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
        label[inside] = cls
    image = np.empty((num_channels, *shape), dtype=np.float32)
    for c in range(num_channels):
        base = rng.normal(100.0 + 10 * c, 8.0, size=shape).astype(np.float32)
        for cls in range(1, num_classes + 1):
            base[label == cls] += 40.0 * cls * (1 + 0.3 * c)
        image[c] = base
    return image, label


def write_raw_dataset(root: str | Path, num_cases: int = 8, ndim: int = 3, num_classes: int = 2,
                      num_channels: int = 1, shape_range: tuple[int, int] = (20, 28),
                      spacing: tuple[float, ...] | None = None, seed: int = 0,
                      channel_names: dict[str, str] | None = None) -> Path:
    """Write a raw dataset in nnU-Net v2 layout (``dataset.json``, ``imagesTr``, ``labelsTr``).

    3D cases are NIfTI with the given spacing (default 1 mm isotropic, jittered per case);
    2D cases are PNG with intensities scaled to 0..255.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    ending = ".nii.gz" if ndim == 3 else ".png"
    for i in range(num_cases):
        shape = tuple(int(rng.integers(shape_range[0], shape_range[1] + 1)) for _ in range(ndim))
        image, label = make_case(rng, shape, num_classes, num_channels)
        name = f"case_{i:03d}"
        if ndim == 3:
            base = spacing or (1.0,) * ndim
            geo = Geometry(spacing=tuple(float(s) * float(rng.uniform(0.95, 1.05)) for s in base),
                           origin=(float(rng.uniform(-10, 10)), 0.0, 0.0),
                           direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        else:
            geo = Geometry(spacing=(1.0, 1.0))
            image = np.clip(image, 0, 255).astype(np.uint8)
        for c in range(num_channels):
            write_image(image[c:c + 1], root / "imagesTr" / f"{name}_{c:04d}{ending}", geo)
        write_label(label, root / "labelsTr" / f"{name}{ending}", geo)
    labels = {"background": 0, **{f"class_{k}": k for k in range(1, num_classes + 1)}}
    atomic_write_json(root / "dataset.json", {
        "name": root.name,
        "channel_names": channel_names or {str(c): ("MRI" if ndim == 3 else "grey") for c in range(num_channels)},
        "labels": labels,
        "numTraining": num_cases,
        "file_ending": ending,
    })
    return root
