"""Self-configuration: from a dataset fingerprint to plans.json.

Implements the rules of nnU-Net v2's default experiment planner (``ExperimentPlanner``,
v2.8.1), re-derived and written for unetkit; ``docs/planning.md`` explains each rule, the
CPU budget, and where unetkit deliberately differs.

Overview, for a 3D dataset:

1. Target spacing = per-axis median spacing; if one axis is > 3x coarser than the others and
   also has > 3x fewer voxels, its target is the 10th percentile of its spacings instead
   (not finer than the other axes).
2. Transpose so that the coarsest axis comes first (``transpose_forward``).
3. For each configuration (``3d_fullres``, ``2d``, possibly ``3d_lowres``): start from a patch
   with the aspect ratio of the spacing (256^3 voxels in 3D, 2048^2 in 2D), clipped to the
   median image shape; derive the topology (:mod:`unetkit.planning.topology`); while the
   feature-map count (:mod:`unetkit.planning.memory`) for batch 2 exceeds the budget, shrink
   the axis that is largest relative to the median shape; spend leftover budget on batch size;
   cap the batch so that one batch covers at most 5% of the dataset's voxels; batch >= 2.
4. ``3d_lowres`` exists when the full-resolution patch covers < 25% of the median image:
   the spacing grows by 3% steps until the patch covers 25%; it is dropped again when the
   low-resolution image is less than 2x smaller than the full-resolution one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unetkit.planning import memory
from unetkit.planning.topology import MIN_FEATURE_MAP_EDGE, features_per_stage, pool_and_conv_props

PLANS_FORMAT_VERSION = 1
ANISOTROPY_THRESHOLD = 3.0
BASE_FEATURES = 32
MAX_FEATURES_3D = 320
MAX_FEATURES_2D = 512
CONVS_PER_STAGE = 2
MIN_BATCH_SIZE = 2
MAX_DATASET_COVERED = 0.05
LOWRES_CREATION_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
LOWRES_MIN_SIZE_RATIO = 2.0
ARCHITECTURE_NAME = "plain_unet"

#: Budget presets (GB in nnU-Net's GPU-memory units). ``gpu`` is nnU-Net's 8 GB reference.
#: ``cpu`` is sized so that one training iteration of a typical plan takes seconds on a
#: 2-core CPU; see docs/planning.md for the measurements behind it.
DEVICE_MEMORY_GB = {"gpu": 8.0, "cpu": 0.5}

#: dataset.json channel name (case-insensitive) -> normalization scheme; others -> ZScore.
NORMALIZATION_BY_CHANNEL_NAME = {
    "ct": "CT",
    "nonorm": "NoNorm",
    "zscore": "ZScore",
    "rescale_to_0_1": "RescaleTo01",
    "rgb_to_0_1": "RGBTo01",
}
#: Schemes that leave voxels outside the nonzero mask at 0 when normalizing inside the mask.
MASKABLE_SCHEMES = ("ZScore",)
USE_MASK_RELATIVE_SIZE = 0.75

RESAMPLING = {"image_order": 3, "label_order": 1, "anisotropy_threshold": ANISOTROPY_THRESHOLD,
              "separate_axis_order": 0}


@dataclass(frozen=True)
class PlannerSettings:
    """Knobs of the planner; the defaults are nnU-Net's.

    Attributes:
        memory_gb: budget in nnU-Net's GPU-memory units (the reference U-Net fits 8 GB).
        min_batch_size: smallest batch the planner will choose.
        max_dataset_covered: largest share of the dataset's voxels one batch may cover.
        min_feature_map_edge: smallest bottleneck edge (voxels).
    """

    memory_gb: float = 8.0
    min_batch_size: int = MIN_BATCH_SIZE
    max_dataset_covered: float = MAX_DATASET_COVERED
    min_feature_map_edge: int = MIN_FEATURE_MAP_EDGE


# ------------------------------------------------------------------------------ spacing rules

def fullres_target_spacing(spacings: np.ndarray, shapes: np.ndarray,
                           anisotropy_threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Target spacing (mm, original axis order): per-axis median, with the anisotropy rule.

    When the coarsest axis is more than ``anisotropy_threshold`` times coarser than every other
    axis *and* its median voxel count is more than that many times smaller, its target becomes
    the 10th percentile of its spacings (finer, to keep more slices), but never finer than the
    coarsest other axis (then it is that axis' spacing + 1e-5).
    """
    target = np.percentile(spacings, 50, axis=0)
    if spacings.shape[1] < 2:
        return target
    median_shape = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    other_spacing = max(target[i] for i in others)
    other_size = min(median_shape[i] for i in others)
    aniso_spacing = target[worst] > anisotropy_threshold * other_spacing
    aniso_voxels = median_shape[worst] * anisotropy_threshold < other_size
    if aniso_spacing and aniso_voxels:
        value = float(np.percentile(spacings[:, worst], 10))
        if value < other_spacing:
            value = max(other_spacing, value) + 1e-5
        target[worst] = value
    return target


def transpose_for(target_spacing: Sequence[float]) -> tuple[list[int], list[int]]:
    """``(transpose_forward, transpose_backward)``: the coarsest axis first (3D only)."""
    n = len(target_spacing)
    if n != 3:
        return list(range(n)), list(range(n))
    worst = int(np.argmax(target_spacing))
    forward = [worst] + [i for i in range(n) if i != worst]
    backward = [forward.index(i) for i in range(n)]
    return forward, backward


def resampled_shape(shape: Sequence[float], spacing: Sequence[float], new_spacing: Sequence[float]) -> np.ndarray:
    """Shape (voxels) after resampling from ``spacing`` to ``new_spacing``, rounded."""
    return np.array([int(round(s * a / b)) for s, a, b in zip(shape, spacing, new_spacing)])


def normalization_for(channel_names: dict, median_relative_size_after_cropping: float
                      ) -> tuple[list[str], list[bool]]:
    """Per channel: normalization scheme by channel name, and whether to use the nonzero mask.

    The mask is used (ZScore only) when cropping to the nonzero region removed more than a
    quarter of the median image: the zero frame is then background, not signal.
    """
    names = [channel_names[k] for k in sorted(channel_names, key=lambda k: int(k))]
    schemes = [NORMALIZATION_BY_CHANNEL_NAME.get(str(n).casefold(), "ZScore") for n in names]
    use_mask = median_relative_size_after_cropping < USE_MASK_RELATIVE_SIZE
    return schemes, [bool(use_mask and s in MASKABLE_SCHEMES) for s in schemes]


# ------------------------------------------------------------------------- one configuration

def _architecture(topology, max_features: int) -> dict:
    n = topology.n_stages
    return {"name": ARCHITECTURE_NAME,
            "kwargs": {"n_stages": n,
                       "features_per_stage": list(features_per_stage(n, max_features, BASE_FEATURES)),
                       "kernel_sizes": [list(k) for k in topology.kernel_sizes],
                       "strides": [list(s) for s in topology.strides],
                       "n_conv_per_stage": [CONVS_PER_STAGE] * n,
                       "n_conv_per_stage_decoder": [CONVS_PER_STAGE] * (n - 1)}}


def _estimate(patch, topology, max_features: int, num_classes: int) -> int:
    n = topology.n_stages
    return memory.feature_map_elements(patch, features_per_stage(n, max_features, BASE_FEATURES),
                                       topology.strides, [CONVS_PER_STAGE] * n, [CONVS_PER_STAGE] * (n - 1),
                                       num_classes)


def plan_configuration(spacing: Sequence[float], median_shape: Sequence[float], num_classes: int,
                       approx_dataset_voxels: float, settings: PlannerSettings = PlannerSettings()) -> dict:
    """Patch size, batch size and network for one configuration (2 or 3 spatial axes).

    Args:
        spacing: target spacing (mm), transposed axis order.
        median_shape: median image shape after resampling (voxels), same order; may be fractional.
        num_classes: output channels counted in the memory estimate (labels in dataset.json).
        approx_dataset_voxels: voxels in the whole resampled dataset (median shape x cases),
            for the 5% coverage cap.
        settings: budget and limits.

    Returns:
        A partial configuration: ``patch_size``, ``batch_size``, ``architecture``,
        ``estimated_feature_map_elements`` and ``spacing``.
    """
    ndim = len(spacing)
    if ndim not in (2, 3):
        raise ValueError(f"spacing must have 2 or 3 entries, got {list(spacing)}")
    if any(s <= 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {list(spacing)}")
    spacing = np.asarray(spacing, dtype=np.float64)
    median_shape = np.asarray(median_shape, dtype=np.float64)[:ndim]
    max_features = MAX_FEATURES_3D if ndim == 3 else MAX_FEATURES_2D
    edge = settings.min_feature_map_edge

    inverse = 1.0 / spacing
    volume = 256.0 ** 3 if ndim == 3 else 2048.0 ** 2
    initial = [round(v) for v in inverse * (volume / np.prod(inverse)) ** (1.0 / ndim)]
    initial = [min(a, b) for a, b in zip(initial, median_shape)]

    topo = pool_and_conv_props(spacing, initial, edge)
    patch = list(topo.patch_size)
    estimate = _estimate(patch, topo, max_features, num_classes)
    reference = memory.reference_elements(ndim, settings.memory_gb)
    ref_batch = memory.reference_batch(ndim)

    # Shrink until a batch of 2 fits. The axis largest relative to the median shape goes first
    # (the last one among equals); it is reduced by the divisor it would have once reduced, so
    # that no valid size is skipped.
    while estimate / ref_batch * 2 > reference:
        ratios = [p / m for p, m in zip(patch, median_shape)]
        axis = max(i for i, r in enumerate(ratios) if r == max(ratios))
        trial = list(patch)
        trial[axis] -= topo.divisor[axis]
        step = pool_and_conv_props(spacing, trial, edge).divisor[axis]
        patch[axis] -= step
        # A patch too small to downsample even once (while the images are larger) is no U-Net.
        if patch[axis] < min(2 * edge, int(np.ceil(median_shape[axis]))):
            raise ValueError(f"memory budget of {settings.memory_gb} GB is too small: the patch would shrink "
                             f"below {2 * edge} voxels on axis {axis} (spacing {spacing.tolist()}, median shape "
                             f"{median_shape.tolist()}); raise --memory-gb")
        topo = pool_and_conv_props(spacing, patch, edge)
        patch = list(topo.patch_size)
        estimate = _estimate(patch, topo, max_features, num_classes)

    batch = round(reference / estimate * ref_batch)
    coverage_cap = round(approx_dataset_voxels * settings.max_dataset_covered / np.prod(patch, dtype=np.float64))
    batch = max(min(batch, coverage_cap), settings.min_batch_size)
    return {"spacing": [float(s) for s in spacing], "patch_size": [int(p) for p in patch],
            "batch_size": int(batch), "architecture": _architecture(topo, max_features),
            "estimated_feature_map_elements": int(estimate)}


# --------------------------------------------------------------------------- whole experiment

def plan_experiment(fingerprint: dict, channel_names: dict, labels: dict, num_segmentation_heads: int | None = None,
                    settings: PlannerSettings = PlannerSettings(), num_training: int | None = None) -> dict:
    """Compute the full plans dictionary (docs/architecture.md) from a fingerprint.

    Args:
        fingerprint: as written by :func:`unetkit.data.fingerprint.extract_fingerprint`.
        channel_names: dataset.json ``channel_names`` (``{"0": "MRI"}``).
        labels: dataset.json ``labels`` (``{"background": 0, ...}``).
        num_segmentation_heads: network outputs (default: number of labels).
        settings: budget and limits.
        num_training: cases used for the dataset size in the 5% cap (default: the fingerprint's
            case count; nnU-Net uses dataset.json's ``numTraining``, normally the same).
    """
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    if spacings.ndim != 2 or spacings.shape != shapes.shape:
        raise ValueError("fingerprint 'spacings' and 'shapes_after_crop' must be equal-length lists of equal-length "
                         f"lists, got shapes {spacings.shape} and {shapes.shape}")
    ndim = spacings.shape[1]
    n_cases = int(num_training if num_training is not None else len(spacings))
    num_classes = len(labels)

    if ndim == 3:
        target = fullres_target_spacing(spacings, shapes)
    else:
        target = np.percentile(spacings, 50, axis=0)
    forward, backward = transpose_for(target)
    target_t = target[forward]
    new_shapes = np.array([resampled_shape(sh, sp, target) for sp, sh in zip(spacings, shapes)])
    median_t = np.median(new_shapes, axis=0)[forward]
    dataset_voxels = float(np.prod(median_t, dtype=np.float64) * n_cases)

    schemes, use_mask = normalization_for(channel_names, float(fingerprint["median_relative_size_after_cropping"]))

    def finish(partial: dict, identifier: str, median_shape, batch_dice: bool) -> dict:
        return {"data_identifier": identifier,
                "spacing": partial["spacing"],
                "median_image_size_in_voxels": [int(round(float(m))) for m in median_shape],
                "patch_size": partial["patch_size"],
                "batch_size": partial["batch_size"],
                "batch_dice": batch_dice,
                "normalization_schemes": list(schemes),
                "use_mask_for_norm": list(use_mask),
                "resampling": dict(RESAMPLING),
                "architecture": partial["architecture"],
                "estimated_feature_map_elements": partial["estimated_feature_map_elements"]}

    configurations: dict[str, dict] = {}
    if ndim == 3 and median_t[0] != 1:
        full = plan_configuration(target_t, median_t, num_classes, dataset_voxels, settings)
        low = None
        low_spacing = target_t.copy()
        median_voxels = float(np.prod(median_t, dtype=np.float64))
        patch_voxels = float(np.prod(full["patch_size"], dtype=np.float64))
        while patch_voxels / median_voxels < LOWRES_CREATION_THRESHOLD:
            coarsest = low_spacing.max()
            lagging = coarsest / low_spacing > 2
            if lagging.any():
                low_spacing[lagging] *= LOWRES_SPACING_STEP
            else:
                low_spacing *= LOWRES_SPACING_STEP
            low_median = target_t / low_spacing * median_t
            median_voxels = float(np.prod(low_median, dtype=np.float64))
            low = plan_configuration(low_spacing, [round(float(v)) for v in low_median], num_classes,
                                     median_voxels * n_cases, settings)
            low["_median"] = low_median
            patch_voxels = float(np.prod(low["patch_size"], dtype=np.float64))
        if low is not None and np.prod(median_t, dtype=np.float64) / median_voxels < LOWRES_MIN_SIZE_RATIO:
            low = None  # not worth a second network
        if low is not None:
            configurations["3d_lowres"] = finish(low, "3d_lowres", low["_median"], batch_dice=False)
        configurations["3d_fullres"] = finish(full, "3d_fullres", median_t, batch_dice=low is not None)

    two_d = plan_configuration(target_t[-2:], median_t[-2:], num_classes, dataset_voxels, settings)
    configurations["2d"] = finish(two_d, "2d", median_t[-2:], batch_dice=True)
    # Order: 2d, 3d_fullres, 3d_lowres (as a reader looks for them).
    ordered = {k: configurations[k] for k in ("2d", "3d_fullres", "3d_lowres") if k in configurations}

    median_spacing = np.median(spacings, axis=0)[forward]
    median_shape = np.median(shapes, axis=0)[forward]
    return {
        "format_version": PLANS_FORMAT_VERSION,
        "dataset_name": fingerprint.get("dataset_name"),
        "planner": "unetkit",
        "memory_budget_gb": float(settings.memory_gb),
        "num_input_channels": len(channel_names),
        "channel_names": {str(k): v for k, v in channel_names.items()},
        "labels": labels,
        "num_segmentation_heads": int(num_segmentation_heads if num_segmentation_heads is not None
                                      else len(labels)),
        "transpose_forward": [int(i) for i in forward],
        "transpose_backward": [int(i) for i in backward],
        "original_median_spacing_after_transp": [float(s) for s in median_spacing],
        "original_median_shape_after_transp": [int(round(float(s))) for s in median_shape],
        "foreground_intensity_properties_per_channel": copy.deepcopy(
            fingerprint["foreground_intensity_properties_per_channel"]),
        "configurations": ordered,
    }
