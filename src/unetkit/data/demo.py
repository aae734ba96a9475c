"""A small, deliberately messy 3D source folder for `unetkit demo` and the importer's tests.

The layout is what people really hand over, not nnU-Net's: ``images/NAME.nii.gz`` beside
``masks/NAME_mask.nii.gz``, anisotropic voxels (1 x 1 x 1.5 mm) with a non-zero origin, and one
orphan mask without an image, so that the import has to strip a suffix, keep geometry and report
a skip. Cases come from :func:`unetkit.data.synthetic.make_case` (two foreground blobs that a
U-Net learns in a few iterations), about 32 voxels per side.

Convert it with ``import_dataset(source, dest, **demo_import_options())``; the same call on the
command line is :data:`DEMO_IMPORT_COMMAND`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unetkit.data.io import Geometry, write_image, write_label
from unetkit.data.synthetic import make_case

#: Spacing in ITK order (x, y, z), millimetres.
DEMO_SPACING_XYZ = (1.0, 1.0, 1.5)
#: Label names written to dataset.json by the demo import.
DEMO_LABELS = {"background": 0, "class_1": 1, "class_2": 2}
#: Name of the mask without an image (the import reports it as skipped).
DEMO_ORPHAN = "subject_orphan"
#: The command-line form of :func:`demo_import_options` (SOURCE and DEST filled in by the caller).
DEMO_IMPORT_COMMAND = ("unetkit import SOURCE DEST --images images --masks masks --mask-suffix _mask "
                       "--labels background=0,class_1=1,class_2=2 --channel-name MRI "
                       "--test-images test/images --test-masks test/masks")


def demo_import_options() -> dict:
    """Keyword arguments for :func:`unetkit.data.importers.import_dataset` that convert the demo source."""
    return {"images": "images", "masks": "masks", "mask_suffix": "_mask",
            "labels": dict(DEMO_LABELS), "channel_name": "MRI",
            "test_images": "test/images", "test_masks": "test/masks"}


def generate_demo_source(folder: str | Path, seed: int = 0, num_cases: int = 20, num_test_cases: int = 6) -> Path:
    """Write the demo source (``images/``, ``masks/``, one orphan mask, ``test/images`` and
    ``test/masks``) into ``folder``; return it.

    Args:
        folder: where to write; created if missing. Existing demo files are overwritten.
        seed: random seed; the same seed gives the same voxels.
        num_cases: number of image/mask pairs (the orphan mask comes on top).
        num_test_cases: held-out pairs for prediction and evaluation (``test_NNN``).

    Each case is float32 intensities of shape about 32^3 voxels (numpy order z, y, x) with labels
    0, 1, 2 (z has 1.5 mm voxels, so the volume is anisotropic as MR often is); image and mask share spacing 1 x 1 x 1.5 mm (x, y, z) and a per-case origin.
    """
    if num_cases < 1:
        raise ValueError(f"num_cases must be at least 1, found {num_cases}")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    spacing_zyx = tuple(reversed(DEMO_SPACING_XYZ))
    direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    names = [f"subject_{i:03d}" for i in range(1, num_cases + 1)] + [DEMO_ORPHAN]
    names += [f"test_{i:03d}" for i in range(1, num_test_cases + 1)]
    for i, name in enumerate(names):
        shape = tuple(int(rng.integers(30, 35)) for _ in range(3))
        image, label = make_case(rng, shape, num_classes=2, num_channels=1)
        origin = (float(rng.uniform(-120.0, -80.0)), float(rng.uniform(-60.0, -40.0)), float(rng.uniform(20.0, 40.0)))
        geometry = Geometry(spacing=spacing_zyx, origin=origin, direction=direction)
        sub = folder / "test" if name.startswith("test_") else folder
        if name != DEMO_ORPHAN:
            write_image(image, sub / "images" / f"{name}.nii.gz", geometry)
        write_label(label, sub / "masks" / f"{name}_mask.nii.gz", geometry)
    return folder
