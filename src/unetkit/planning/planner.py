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
   low-resolution image is less than 2x smaller than the full-resolution one. With it come
   ``3d_lowres.next_stage`` and the ``3d_cascade_fullres`` entry (inherits 3d_fullres, previous
   stage 3d_lowres), exactly as nnU-Net writes them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unetkit.planning import memory
from unetkit.planning.topology import (
    MIN_FEATURE_MAP_EDGE,
    features_per_stage,
    pool_and_conv_props,
)

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
class NetworkRules:
    """Which network a planner sizes and the constants it sizes it with.

    The defaults are nnU-Net's default planner (plain U-Net, two convolutions per stage);
    :func:`network_rules` gives the residual-encoder presets of nnU-Net Revisited, whose
    constants live in the ``resenc_unet_*`` models' metadata (``model_info(name).extra``).

    Attributes:
        planner: the ``--planner`` name (``default``, ``resenc_m``, ``resenc_l``, ``resenc_xl``).
        architecture: model registry name written into the plans (what ``train`` builds).
        residual_encoder: count feature maps as a residual-encoder U-Net (stem + blocks).
        reference_elements_3d / reference_elements_2d: feature-map elements that fit
            ``reference_gb`` with the reference batch (3D: 2, 2D: 12).
        default_memory_gb: the budget when neither ``--memory-gb`` nor ``--device`` is given.
        encoder_depth: convolutions (plain) or residual blocks (ResEnc) per encoder stage; stages
            beyond the list repeat its last entry.
        fit_batch_size: the batch a patch must fit before shrinking stops (``None``: the
            reference batch, as nnU-Net's ResEnc planners do).
    """

    planner: str = "default"
    nnunet_planner: str = "ExperimentPlanner"
    architecture: str = ARCHITECTURE_NAME
    residual_encoder: bool = False
    reference_elements_3d: float = memory.REFERENCE_ELEMENTS_3D
    reference_elements_2d: float = memory.REFERENCE_ELEMENTS_2D
    reference_gb: float = memory.REFERENCE_GB
    default_memory_gb: float = 8.0
    reference_batch_3d: int = memory.REFERENCE_BATCH_3D
    reference_batch_2d: int = memory.REFERENCE_BATCH_2D
    max_features_3d: int = MAX_FEATURES_3D
    max_features_2d: int = MAX_FEATURES_2D
    base_features: int = BASE_FEATURES
    encoder_depth: tuple[int, ...] = (CONVS_PER_STAGE,)
    conv_per_stage_decoder: int = CONVS_PER_STAGE
    max_dataset_covered: float = MAX_DATASET_COVERED
    fit_batch_size: int | None = MIN_BATCH_SIZE

    def reference_elements(self, ndim: int, memory_gb: float) -> float:
        """The element budget for ``memory_gb`` (linear in the budget)."""
        ref = self.reference_elements_3d if ndim == 3 else self.reference_elements_2d
        return ref * float(memory_gb) / self.reference_gb

    def reference_batch(self, ndim: int) -> int:
        return self.reference_batch_3d if ndim == 3 else self.reference_batch_2d

    def max_features(self, ndim: int) -> int:
        return self.max_features_3d if ndim == 3 else self.max_features_2d

    def depth(self, n_stages: int) -> list[int]:
        """Encoder depth per stage for ``n_stages`` stages."""
        return [int(self.encoder_depth[min(i, len(self.encoder_depth) - 1)]) for i in range(n_stages)]


DEFAULT_RULES = NetworkRules()
#: ``--planner`` name -> the model whose metadata holds nnU-Net's ResEnc planner constants.
RESENC_PLANNER_MODELS = {"resenc_m": "resenc_unet_m", "resenc_l": "resenc_unet_l", "resenc_xl": "resenc_unet_xl"}
PLANNER_NAMES = ("default", *RESENC_PLANNER_MODELS)


def network_rules(planner: str = "default") -> NetworkRules:
    """The :class:`NetworkRules` of a ``--planner`` name (see :data:`PLANNER_NAMES`)."""
    if planner == "default":
        return DEFAULT_RULES
    if planner not in RESENC_PLANNER_MODELS:
        raise ValueError(f"unknown planner {planner!r}; choose one of {', '.join(PLANNER_NAMES)}")
    # Imported here: unetkit.models imports torch, needed only when a ResEnc planner is asked for.
    from unetkit.models import model_info

    model = RESENC_PLANNER_MODELS[planner]
    extra = model_info(model).extra
    return NetworkRules(
        planner=planner, nnunet_planner=str(extra["planner"]), architecture=model, residual_encoder=True,
        reference_elements_3d=float(extra["vram_reference_3d"]), reference_elements_2d=float(extra["vram_reference_2d"]),
        reference_gb=float(extra["vram_reference_gb"]), default_memory_gb=float(extra["vram_target_gb"]),
        reference_batch_3d=int(extra["reference_batch_size_3d"]), reference_batch_2d=int(extra["reference_batch_size_2d"]),
        max_features_3d=int(extra["max_features_3d"]), max_features_2d=int(extra["max_features_2d"]),
        base_features=int(extra["base_features"]), encoder_depth=tuple(int(b) for b in extra["n_blocks_per_stage"]),
        conv_per_stage_decoder=int(extra["n_conv_per_stage_decoder"]),
        max_dataset_covered=float(extra["max_dataset_covered"]), fit_batch_size=None)


@dataclass(frozen=True)
class PlannerSettings:
    """Knobs of the planner; the defaults are nnU-Net's default planner.

    Attributes:
        memory_gb: budget in nnU-Net's GPU-memory units (the reference U-Net fits 8 GB).
        min_batch_size: smallest batch the planner will choose.
        max_dataset_covered: largest share of the dataset's voxels one batch may cover
            (``None``: the network rules' value, 5% by default, 100% for the ResEnc presets).
        min_feature_map_edge: smallest bottleneck edge (voxels).
        network: which network is planned and with which constants.
    """

    memory_gb: float = 8.0
    min_batch_size: int = MIN_BATCH_SIZE
    max_dataset_covered: float | None = None
    min_feature_map_edge: int = MIN_FEATURE_MAP_EDGE
    network: NetworkRules = DEFAULT_RULES


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

def _architecture(topology, rules: NetworkRules, ndim: int) -> dict:
    n = topology.n_stages
    kwargs = {"n_stages": n,
              "features_per_stage": list(features_per_stage(n, rules.max_features(ndim), rules.base_features)),
              "kernel_sizes": [list(k) for k in topology.kernel_sizes],
              "strides": [list(s) for s in topology.strides]}
    depth_key = "n_blocks_per_stage" if rules.residual_encoder else "n_conv_per_stage"
    kwargs[depth_key] = rules.depth(n)
    kwargs["n_conv_per_stage_decoder"] = [rules.conv_per_stage_decoder] * (n - 1)
    return {"name": rules.architecture, "kwargs": kwargs}


def _estimate(patch, topology, rules: NetworkRules, num_classes: int) -> int:
    n = topology.n_stages
    features = features_per_stage(n, rules.max_features(len(patch)), rules.base_features)
    count = memory.residual_encoder_feature_map_elements if rules.residual_encoder else memory.feature_map_elements
    return count(patch, features, topology.strides, rules.depth(n), [rules.conv_per_stage_decoder] * (n - 1),
                 num_classes)


def _initial_patch(spacing: np.ndarray, median_shape: np.ndarray) -> list[float]:
    """A patch with the spacing's aspect ratio and 256^3 (3D) / 2048^2 (2D) voxels, clipped to the median."""
    ndim = len(spacing)
    inverse = 1.0 / spacing
    volume = 256.0 ** 3 if ndim == 3 else 2048.0 ** 2
    initial = [round(v) for v in inverse * (volume / np.prod(inverse)) ** (1.0 / ndim)]
    return [min(a, b) for a, b in zip(initial, median_shape)]


def _shrink_to_budget(spacing: np.ndarray, median_shape: np.ndarray, num_classes: int,
                      settings: PlannerSettings) -> tuple[list[int], object, int]:
    """Patch, topology and estimate of the largest patch whose fit batch stays within the budget."""
    rules, edge, ndim = settings.network, settings.min_feature_map_edge, len(spacing)
    topo = pool_and_conv_props(spacing, _initial_patch(spacing, median_shape), edge)
    patch = list(topo.patch_size)
    estimate = _estimate(patch, topo, rules, num_classes)
    reference = rules.reference_elements(ndim, settings.memory_gb)
    ref_batch = rules.reference_batch(ndim)
    fit_batch = rules.fit_batch_size or ref_batch
    # Shrink until a batch of fit_batch fits. The axis largest relative to the median shape goes
    # first (the last one among equals); it is reduced by the divisor it would have once reduced,
    # so that no valid size is skipped.
    while estimate / ref_batch * fit_batch > reference:
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
        estimate = _estimate(patch, topo, rules, num_classes)
    return patch, topo, estimate


def plan_configuration(spacing: Sequence[float], median_shape: Sequence[float], num_classes: int,
                       approx_dataset_voxels: float, settings: PlannerSettings = PlannerSettings()) -> dict:
    """Patch size, batch size and network for one configuration (2 or 3 spatial axes).

    Args:
        spacing: target spacing (mm), transposed axis order.
        median_shape: median image shape after resampling (voxels), same order; may be fractional.
        num_classes: output channels counted in the memory estimate (labels in dataset.json).
        approx_dataset_voxels: voxels in the whole resampled dataset (median shape x cases),
            for the coverage cap (5% of the dataset for the default planner).
        settings: budget, limits and the network rules.

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
    rules = settings.network
    patch, topo, estimate = _shrink_to_budget(spacing, median_shape, num_classes, settings)

    reference = rules.reference_elements(ndim, settings.memory_gb)
    batch = round(reference / estimate * rules.reference_batch(ndim))
    covered = rules.max_dataset_covered if settings.max_dataset_covered is None else settings.max_dataset_covered
    coverage_cap = round(approx_dataset_voxels * covered / np.prod(patch, dtype=np.float64))
    batch = max(min(batch, coverage_cap), settings.min_batch_size)
    return {"spacing": [float(s) for s in spacing], "patch_size": [int(p) for p in patch],
            "batch_size": int(batch), "architecture": _architecture(topo, rules, ndim),
            "estimated_feature_map_elements": int(estimate)}


# --------------------------------------------------------------------------- whole experiment

def _resampled_geometry(spacings: np.ndarray, shapes: np.ndarray) -> tuple[np.ndarray, list[int], list[int], np.ndarray]:
    """Target spacing (original order), transpose, and the median resampled shape (transposed)."""
    target = fullres_target_spacing(spacings, shapes) if spacings.shape[1] == 3 else np.percentile(spacings, 50, axis=0)
    forward, backward = transpose_for(target)
    new_shapes = np.array([resampled_shape(sh, sp, target) for sp, sh in zip(spacings, shapes)])
    return target, forward, backward, np.median(new_shapes, axis=0)[forward]


def _plan_lowres(full: dict, target_t: np.ndarray, median_t: np.ndarray, num_classes: int, n_cases: int,
                 settings: PlannerSettings) -> dict | None:
    """The 3d_lowres configuration (with its median shape under ``_median``), or None.

    While the full-resolution patch covers < 25% of the median image, the spacing grows by 3%
    (the axes more than 2x finer than the coarsest first); dropped again when the low-resolution
    image is less than 2x smaller than the full-resolution one.
    """
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
        return None  # not worth a second network
    return low


def _configuration_entry(partial: dict, identifier: str, median_shape, batch_dice: bool, schemes: list[str],
                         use_mask: list[bool]) -> dict:
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


def _plan_configurations(target_t: np.ndarray, median_t: np.ndarray, num_classes: int, n_cases: int,
                         settings: PlannerSettings, schemes: list[str], use_mask: list[bool]) -> dict[str, dict]:
    """``2d``, ``3d_fullres`` and (when worth it) ``3d_lowres`` with ``3d_cascade_fullres``, in that order."""
    configurations: dict[str, dict] = {}
    dataset_voxels = float(np.prod(median_t, dtype=np.float64) * n_cases)
    two_d = plan_configuration(target_t[-2:], median_t[-2:], num_classes, dataset_voxels, settings)
    configurations["2d"] = _configuration_entry(two_d, "2d", median_t[-2:], True, schemes, use_mask)
    if len(target_t) == 3 and median_t[0] != 1:
        full = plan_configuration(target_t, median_t, num_classes, dataset_voxels, settings)
        low = _plan_lowres(full, target_t, median_t, num_classes, n_cases, settings)
        configurations["3d_fullres"] = _configuration_entry(full, "3d_fullres", median_t, low is not None, schemes,
                                                            use_mask)
        if low is not None:
            configurations["3d_lowres"] = _configuration_entry(low, "3d_lowres", low["_median"], False, schemes,
                                                               use_mask)
            configurations["3d_lowres"]["next_stage"] = "3d_cascade_fullres"
            # nnU-Net v2.8.1's cascade entry: the full-resolution plan plus the previous stage's
            # one-hot prediction as extra input channels (unetkit.training.cascade).
            configurations["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    return configurations


def plan_experiment(fingerprint: dict, channel_names: dict, labels: dict, num_segmentation_heads: int | None = None,
                    settings: PlannerSettings = PlannerSettings(), num_training: int | None = None) -> dict:
    """Compute the full plans dictionary (docs/architecture.md) from a fingerprint.

    Args:
        fingerprint: as written by :func:`unetkit.data.fingerprint.extract_fingerprint`.
        channel_names: dataset.json ``channel_names`` (``{"0": "MRI"}``).
        labels: dataset.json ``labels`` (``{"background": 0, ...}``).
        num_segmentation_heads: network outputs (default: number of labels).
        settings: budget, limits and network rules (``settings.network``: default or a ResEnc preset).
        num_training: cases used for the dataset size in the coverage cap (default: the
            fingerprint's case count; nnU-Net uses dataset.json's ``numTraining``, normally the same).
    """
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    if spacings.ndim != 2 or spacings.shape != shapes.shape:
        raise ValueError("fingerprint 'spacings' and 'shapes_after_crop' must be equal-length lists of equal-length "
                         f"lists, got shapes {spacings.shape} and {shapes.shape}")
    n_cases = int(num_training if num_training is not None else len(spacings))
    target, forward, backward, median_t = _resampled_geometry(spacings, shapes)
    schemes, use_mask = normalization_for(channel_names, float(fingerprint["median_relative_size_after_cropping"]))
    configurations = _plan_configurations(target[forward], median_t, len(labels), n_cases, settings, schemes,
                                          use_mask)

    median_spacing = np.median(spacings, axis=0)[forward]
    median_shape = np.median(shapes, axis=0)[forward]
    return {
        "format_version": PLANS_FORMAT_VERSION,
        "dataset_name": fingerprint.get("dataset_name"),
        "planner": "unetkit",
        "planner_preset": settings.network.planner,
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
        "configurations": configurations,
    }
