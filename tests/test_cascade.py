"""3d_lowres -> 3d_cascade_fullres end to end on a generated dataset whose plan has 3d_lowres.

Six 48-64 voxel volumes planned with a 0.05 GB budget: the full-resolution patch then covers
less than a quarter of the median image, so unetkit (like nnU-Net v2.8.1, see
tests/test_cascade_reference.py) plans 3d_lowres and 3d_cascade_fullres.
"""

from __future__ import annotations

from pathlib import Path

from unetkit.data.synthetic import write_raw_dataset

#: GPU memory target (GB) small enough for a 3d_lowres plan on CASCADE_SHAPES volumes.
CASCADE_MEMORY_GB = 0.05
CASCADE_SHAPES = (48, 64)


def cascade_raw(root: Path) -> Path:
    """The raw dataset (6 NIfTI cases, 1 channel, 2 foreground classes)."""
    return write_raw_dataset(root, num_cases=6, ndim=3, shape_range=CASCADE_SHAPES, seed=3)
