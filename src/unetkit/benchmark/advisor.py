"""Which benchmarked model to use on a new dataset: nearest benchmarked datasets, their scores, costs.

``unetkit advise DATASET --results RESULTS`` reads a benchmark results folder (format:
docs/benchmark_results.md) and a new raw dataset, and ranks the benchmarked models that fit the
user's cost limits. No training and no language model: the new dataset is described by a few
numbers from its fingerprint, compared with each benchmarked dataset by a fixed, documented
distance, and each model is scored by how well it did on the datasets that look most alike.

Steps (rules and weights in docs/advise.md):

1. :func:`describe_raw_dataset`: dims, channels and modality family, median shape and voxel
   count, median spacing and anisotropy, foreground fraction, number of classes and cases. From
   ``WORKDIR/NAME/fingerprint.json`` when ``unetkit plan`` already wrote it, else measured on at
   most ``max_cases`` evenly spaced training cases (nothing is written).
2. :func:`dataset_distance`: a weighted sum of mismatches (dimensionality, modality, channels,
   log size, log anisotropy, logit foreground fraction, classes, log cases);
   :func:`similarity_weights` turns distances into weights ``exp(-d / T)`` that sum to 1.
3. :func:`advise`: per model, the similarity-weighted mean of its per-dataset mean metric over
   the datasets where it has results (the *score*), the share of the similarity weight those
   datasets carry (the *coverage*), its costs as measured on the most similar dataset where it
   ran, the evidence on the nearest datasets (mean with bootstrap interval,
   :func:`unetkit.benchmark.stats.summarize`), and flags for failed runs. Models over a cost
   limit or without support for the dataset's dimensionality are excluded, with the reason.
4. :func:`format_advice`: the ranked table with one "why" line per model.

Nothing here imports torch except the model registry, which is asked for each model's
supported dimensions (and only when a model name is known to it).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from unetkit.data.errors import DataError

# ----------------------------------------------------------------------------------------------
# The distance between two datasets. Terms are in "decades" (|log10 ratio|) where a quantity
# spans orders of magnitude, so that 10x more voxels weighs the same at any size.
# ----------------------------------------------------------------------------------------------

#: A 2D and a 3D dataset are never neighbours in practice: the weight exp(-4/0.5) ~ 3e-4 only
#: matters when no benchmarked dataset has the new dataset's dimensionality.
W_DIMS = 4.0
#: Disjoint modality families (CT vs MR, RGB vs grey); partial overlap scales with 1 - Jaccard.
#: Worth three decades of size: an EM stack of another size says more about EM than an RGB
#: endoscopy set of the same size does.
W_MODALITY = 1.5
#: A different number of input channels (on top of the modality term).
W_CHANNELS = 0.25
#: Per decade of median voxel count (after cropping).
W_SIZE = 0.5
#: Per decade of anisotropy (largest / smallest median spacing).
W_ANISOTROPY = 0.25
#: Per decade of foreground odds, fg / (1 - fg): rare foreground is a different problem.
W_FOREGROUND = 0.5
#: Per foreground class of difference, capped at CLASSES_CAP classes.
W_CLASSES = 0.1
CLASSES_CAP = 5
#: Per decade of training cases.
W_CASES = 0.1
#: Temperature of the similarity kernel exp(-d / T): a distance of T costs a factor e.
TEMPERATURE = 0.5
#: Models whose results cover less of the similarity weight than this are ranked after the
#: others (their score rests on datasets unlike the new one).
MIN_COVERAGE = 0.5
#: A failed run is flagged, and a dataset shown as evidence, when it carries at least this
#: similarity weight (the nearest dataset always is).
FLAG_WEIGHT = 0.05
EVIDENCE_WEIGHT = 0.01
#: Metrics a model can be scored by (per-case columns of table.csv; higher is better).
SCORE_METRICS = ("dice", "iou", "nsd", "precision", "recall")
COST_COLUMNS = ("params_m", "gflops", "latency_ms")
LIMIT_FLAGS = {"params_m": "--max-params", "gflops": "--max-gflops", "latency_ms": "--max-latency-ms"}
COST_UNITS = {"params_m": "M params", "gflops": " GFLOPs", "latency_ms": " ms"}
#: Default number of training cases measured when no fingerprint.json exists.
DEFAULT_MAX_CASES = 100

# Channel name tokens -> modality family. Names are free text in dataset.json ("T2", "MRI",
# "fundus", "R"), so they are lower-cased, split on non-alphanumerics and looked up token by
# token. An unknown name stays "unknown" and counts as a half mismatch against anything.
_MODALITY_TOKENS: dict[str, tuple[str, ...]] = {
    "CT": ("ct", "cect", "ncct", "cta", "cbct", "hu", "tomography"),
    "MR": ("mr", "mri", "t1", "t2", "t1w", "t2w", "t1c", "t1ce", "t1gd", "flair", "adc", "dwi", "pd",
           "dce", "mra", "swi", "bold", "cine", "lge", "magnetic", "t2star", "nonnorm_mr"),
    "PET": ("pet", "suv"),
    "US": ("us", "ultrasound", "echo", "echocardiography", "sonography"),
    "XR": ("xray", "xr", "cxr", "radiograph", "radiography", "mammography", "dxa"),
    "RGB": ("r", "g", "b", "rgb", "red", "green", "blue", "colour", "color", "fundus", "retina",
            "endoscopy", "colonoscopy", "dermoscopy", "photo", "photograph", "histology", "histopathology",
            "he", "wsi", "natural"),
    "grey": ("grey", "gray", "greyscale", "grayscale", "em", "microscopy", "electron", "fluorescence",
             "brightfield", "phase", "mono"),
}
_TOKEN_TO_FAMILY = {token: family for family, tokens in _MODALITY_TOKENS.items() for token in tokens}


def modality_family(channel_name: str) -> str:
    """The modality family of one dataset.json channel name (``"T2" -> "MR"``, ``"G" -> "RGB"``).

    Families: CT, MR, PET, US, XR, RGB (colour pictures: fundus, endoscopy, dermoscopy...),
    grey (single-channel pictures: EM, microscopy) and ``unknown`` (e.g. the importer's default
    ``image`` for volumes).
    """
    text = str(channel_name).strip().lower()
    if text in _TOKEN_TO_FAMILY:
        return _TOKEN_TO_FAMILY[text]
    for token in re.split(r"[^a-z0-9]+", text.replace("x-ray", "xray")):
        if token in _TOKEN_TO_FAMILY:
            return _TOKEN_TO_FAMILY[token]
    return "unknown"


# ----------------------------------------------------------------------------------------------
# Dataset features
# ----------------------------------------------------------------------------------------------

@dataclass
class DatasetFeatures:
    """What the advisor compares between datasets.

    Attributes:
        name: dataset name.
        dims: 2 (pictures, slices) or 3 (volumes).
        num_channels: input channels.
        modalities: sorted modality families of the channels (see :func:`modality_family`).
        channel_names: the channel names as given.
        median_shape: per-axis median spatial shape after cropping to the nonzero region, voxels.
        median_spacing: per-axis median spacing, millimetres (1.0 for pictures).
        foreground_fraction: share of all voxels labelled foreground (sum over classes).
        num_classes: foreground classes.
        num_cases: labelled training cases.
    """

    name: str
    dims: int
    num_channels: int
    modalities: tuple[str, ...]
    channel_names: tuple[str, ...]
    median_shape: tuple[float, ...]
    median_spacing: tuple[float, ...]
    foreground_fraction: float
    num_classes: int
    num_cases: int

    @property
    def voxels(self) -> float:
        """Median voxel count, the product of the median shape."""
        return float(np.prod(self.median_shape, dtype=np.float64))

    @property
    def anisotropy(self) -> float:
        """Largest over smallest median spacing (1.0 when isotropic or unknown)."""
        spacing = [s for s in self.median_spacing if s and s > 0]
        return max(spacing) / min(spacing) if spacing else 1.0

    def describe(self) -> str:
        """One line: ``2D grey, 30 cases, median 512x512, foreground 21.9%, 1 class``."""
        shape = "x".join(f"{s:g}" for s in self.median_shape)
        text = (f"{self.dims}D {'+'.join(self.modalities)}, {self.num_cases} cases, median {shape}, "
                f"foreground {100 * self.foreground_fraction:.1f}%, {self.num_classes} "
                f"class{'es' if self.num_classes != 1 else ''}")
        if self.dims == 3:
            text += f", anisotropy {self.anisotropy:.1f}"
        return text

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(modalities=list(self.modalities), channel_names=list(self.channel_names),
                   median_shape=list(self.median_shape), median_spacing=list(self.median_spacing),
                   voxels=self.voxels, anisotropy=self.anisotropy)
        return out


def _families(channel_names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({modality_family(n) for n in channel_names}))


def _num_foreground_classes(labels: Mapping[str, Any]) -> int:
    # Background (0) and nnU-Net's "ignore" label are not classes to segment.
    return sum(1 for name, value in labels.items() if value != 0 and str(name).lower() != "ignore")


def features_from_fingerprint(fingerprint: Mapping[str, Any], name: str, channel_names: Sequence[str],
                              num_classes: int, num_cases: int | None = None) -> DatasetFeatures:
    """Features from a fingerprint dictionary (docs/architecture.md) and dataset.json facts.

    ``num_cases`` overrides the fingerprint's count (a sampled fingerprint measured fewer cases
    than the dataset has).
    """
    spacings = np.asarray(fingerprint["spacings"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop"], dtype=np.float64)
    fractions = fingerprint.get("class_voxel_fraction") or {}
    return DatasetFeatures(
        name=name, dims=int(spacings.shape[1]), num_channels=int(fingerprint["num_channels"]),
        modalities=_families(channel_names), channel_names=tuple(channel_names),
        median_shape=tuple(float(v) for v in np.median(shapes, axis=0)),
        median_spacing=tuple(float(v) for v in np.median(spacings, axis=0)),
        foreground_fraction=float(sum(float(v) for v in fractions.values())),
        num_classes=int(num_classes), num_cases=int(num_cases if num_cases is not None else fingerprint["num_cases"]))


def _sample_evenly(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread evenly over ``items`` (all of them when count <= 0 or >= len)."""
    if count <= 0 or count >= len(items):
        return list(items)
    return [items[int(i)] for i in np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))]


def describe_raw_dataset(root: str | Path, workdir: str | Path | None = None, max_cases: int = DEFAULT_MAX_CASES,
                         num_processes: int | None = None) -> tuple[DatasetFeatures, str]:
    """Features of a raw dataset (nnU-Net v2 layout) and where they came from.

    Reuses ``WORKDIR/NAME/fingerprint.json`` when it exists (``unetkit plan`` wrote it), else
    measures at most ``max_cases`` evenly spaced training cases (0 = all) with the fingerprint
    extractor; nothing is written, since a sampled fingerprint must not be mistaken for the
    planner's.

    Returns:
        ``(features, source)``, source being the fingerprint path or a sentence on what was measured.

    Raises:
        DataError: dataset.json missing or malformed, no labelled cases, unreadable files.
    """
    from unetkit.data.dataset import load_dataset
    from unetkit.data.fingerprint import analyze_cases, load_fingerprint, summarize
    from unetkit.utils.paths import WorkPaths

    dataset = load_dataset(root)
    channel_names = [dataset.channel_names[k] for k in sorted(dataset.channel_names)]
    num_classes = len(dataset.foreground_labels)
    existing = WorkPaths.for_dataset(root, workdir).fingerprint
    if existing.is_file():
        fingerprint = load_fingerprint(existing)
        return features_from_fingerprint(fingerprint, dataset.name, channel_names, num_classes), str(existing)

    cases = dataset.training_cases()
    unlabelled = [c.name for c in cases if c.label is None]
    if not cases or unlabelled:
        raise DataError("no labelled training cases to describe" if not cases else
                        f"{len(unlabelled)} training case(s) have no label in labelsTr, e.g. {unlabelled[0]!r}",
                        dataset.root / ("imagesTr" if not cases else "labelsTr"))
    chosen = _sample_evenly(cases, max_cases)
    # Intensities are not used here: a small per-case sample keeps memory low.
    samples = 1000
    if num_processes is None:
        # Starting a process pool costs about a second; a few dozen cases read faster in-process.
        num_processes = 1 if len(chosen) <= 32 else None
    results = analyze_cases(chosen, samples, dataset.label_values, num_processes)
    dims = {len(r.spacing) for r in results}
    if len(dims) > 1:
        raise DataError(f"cases mix 2D and 3D images (spatial dimensions {sorted(dims)})", dataset.root)
    fingerprint = summarize(dataset, results, samples)
    source = (f"measured {len(chosen)} of {len(cases)} training cases (no {existing}; "
              f"`unetkit plan` writes it)" if len(chosen) < len(cases)
              else f"measured all {len(cases)} training cases (no {existing})")
    return features_from_fingerprint(fingerprint, dataset.name, channel_names, num_classes, len(cases)), source


# ----------------------------------------------------------------------------------------------
# The benchmark results folder
# ----------------------------------------------------------------------------------------------

@dataclass
class BenchmarkResults:
    """The parts of a results folder the advisor reads (docs/benchmark_results.md)."""

    root: Path
    datasets: dict[str, DatasetFeatures]
    table: list[dict[str, Any]]
    runs: list[dict[str, str]] | None      # None when runs.csv is absent
    metadata: dict[str, Any] | None        # None when metadata.json is absent
    notes: list[str]


def _read_json_file(path: Path) -> Any:
    from unetkit.utils.atomic import read_json

    try:
        return read_json(path)
    except ValueError as exc:
        raise DataError(str(exc), path) from exc


def _benchmarked_features(name: str, entry: Mapping[str, Any], path: Path) -> DatasetFeatures:
    """Features of one datasets.json entry, completed from its fingerprint.json when a key is missing."""
    if not isinstance(entry, Mapping):
        raise DataError(f"entry {name!r} must be an object, found {type(entry).__name__}", path)
    fingerprint: Mapping[str, Any] | None = None

    def from_fingerprint(key: str) -> Mapping[str, Any]:
        nonlocal fingerprint
        if fingerprint is None:
            fp_path = entry.get("fingerprint")
            if not fp_path or not Path(fp_path).is_file():
                raise DataError(f"dataset {name!r} lacks {key!r} and has no readable 'fingerprint' "
                                f"to derive it from (fingerprint: {fp_path!r})", path)
            fingerprint = _read_json_file(Path(fp_path))
        return fingerprint

    modality = entry.get("modality")
    if not isinstance(modality, Mapping) or not modality:
        raise DataError(f"dataset {name!r}: 'modality' must be a non-empty object like {{\"0\": \"CT\"}}, "
                        f"found {modality!r}", path)
    channel_names = [str(modality[k]) for k in sorted(modality, key=lambda k: int(k) if str(k).isdigit() else 0)]
    shape = entry.get("median_shape")
    if not shape:
        shape = np.median(np.asarray(from_fingerprint("median_shape")["shapes_after_crop"], float), axis=0).tolist()
    dims = entry.get("dims") or len(shape)
    spacing = entry.get("median_spacing")
    if not spacing:
        try:
            spacing = np.median(np.asarray(from_fingerprint("median_spacing")["spacings"], float), axis=0).tolist()
        except DataError:
            spacing = [1.0] * len(shape)  # anisotropy unknown: counted as isotropic
    foreground = entry.get("foreground_fraction")
    if foreground is None:
        foreground = sum(float(v) for v in (from_fingerprint("foreground_fraction").get("class_voxel_fraction")
                                            or {}).values())
    labels = entry.get("labels")
    num_classes = _num_foreground_classes(labels) if isinstance(labels, Mapping) and labels else 1
    num_cases = entry.get("num_cases")
    if num_cases is None:
        try:
            num_cases = from_fingerprint("num_cases")["num_cases"]
        except DataError:
            num_cases = 0
    try:
        return DatasetFeatures(name=name, dims=int(dims), num_channels=len(channel_names),
                               modalities=_families(channel_names), channel_names=tuple(channel_names),
                               median_shape=tuple(float(s) for s in shape),
                               median_spacing=tuple(float(s) for s in spacing),
                               foreground_fraction=float(foreground), num_classes=int(num_classes),
                               num_cases=int(num_cases))
    except (TypeError, ValueError) as exc:
        raise DataError(f"dataset {name!r}: a value has the wrong type ({exc})", path) from None


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"header lacks column(s) {missing}; found {reader.fieldnames}", path)
        return [dict(row) for row in reader]


def load_results(results: str | Path) -> BenchmarkResults:
    """Read datasets.json and table.csv (required), runs.csv and metadata.json (optional).

    Raises:
        DataError: the folder or a required file is missing or malformed (naming the file).
    """
    from unetkit.benchmark.stats import load_table

    root = Path(results)
    if not root.is_dir():
        raise DataError("benchmark results folder not found (give the folder `unetkit bench --output` wrote)", root)
    notes: list[str] = []
    datasets_path = root / "datasets.json"
    if not datasets_path.is_file():
        raise DataError("datasets.json not found: this is not a finished benchmark results folder "
                        "(docs/benchmark_results.md)", datasets_path)
    raw = _read_json_file(datasets_path)
    if not isinstance(raw, Mapping) or not raw:
        raise DataError("must be a non-empty object {DATASET: {...}}", datasets_path)
    datasets = {str(name): _benchmarked_features(str(name), entry, datasets_path) for name, entry in raw.items()}

    table_path = root / "table.csv"
    if not table_path.is_file():
        raise DataError("table.csv not found: the benchmark has no per-case results yet "
                        "(docs/benchmark_results.md)", table_path)
    try:
        table = load_table(table_path)
    except (ValueError, KeyError) as exc:
        raise DataError(str(exc), table_path) from None
    unknown = sorted({row["dataset"] for row in table} - set(datasets))
    if unknown:
        notes.append(f"table.csv has results on dataset(s) {unknown} that datasets.json does not describe; "
                     "they are left out")
        table = [row for row in table if row["dataset"] in datasets]

    runs: list[dict[str, str]] | None = None
    runs_path = root / "runs.csv"
    if runs_path.is_file():
        runs = _read_csv(runs_path, ("model", "dataset", "status"))
    else:
        notes.append(f"{runs_path} not found: failed runs cannot be flagged")
    metadata = None
    metadata_path = root / "metadata.json"
    if metadata_path.is_file():
        metadata = _read_json_file(metadata_path)
    else:
        notes.append(f"{metadata_path} not found: the machine the costs were measured on is unknown")
    return BenchmarkResults(root=root, datasets=datasets, table=table, runs=runs, metadata=metadata, notes=notes)


def machine_description(metadata: Mapping[str, Any] | None) -> str:
    """``"cuda: NVIDIA H100"`` or ``"cpu: Intel Xeon (16 cores)"`` from metadata.json."""
    if not metadata:
        return "unknown machine (no metadata.json)"
    device = metadata.get("device") or ("cuda" if metadata.get("gpu") else "cpu")
    if device != "cpu" and metadata.get("gpu"):
        return f"{device}: {metadata['gpu']}"
    cores = f" ({metadata['cores']} cores)" if metadata.get("cores") else ""
    return f"{device}: {metadata.get('cpu') or 'unknown CPU'}{cores}"


# ----------------------------------------------------------------------------------------------
# Distance and similarity
# ----------------------------------------------------------------------------------------------

def _decades(a: float, b: float) -> float:
    """|log10(a / b)|, with both clamped to at least 1e-12 (0 voxels or cases is a data error anyway)."""
    return abs(math.log10(max(a, 1e-12) / max(b, 1e-12)))


def _logit10(p: float) -> float:
    p = min(max(float(p), 1e-4), 1.0 - 1e-4)  # 0 or 1 would be infinitely far from everything
    return math.log10(p / (1.0 - p))


def modality_mismatch(a: Sequence[str], b: Sequence[str]) -> float:
    """0 for the same modality families, 1 for disjoint ones, 1 - Jaccard between; 0.5 if either is unknown."""
    known_a = set(a) - {"unknown"}
    known_b = set(b) - {"unknown"}
    if not known_a or not known_b:
        return 0.5
    return 1.0 - len(known_a & known_b) / len(known_a | known_b)


def dataset_distance(new: DatasetFeatures, other: DatasetFeatures) -> tuple[float, dict[str, float]]:
    """Weighted mismatch between two datasets: ``(total, {term: weighted value})``.

    Terms (weights are this module's ``W_*`` constants; see docs/advise.md): dims differ,
    modality families (1 - Jaccard), channel count differs, decades of median voxel count,
    decades of anisotropy, decades of foreground odds, foreground classes (capped), decades
    of training cases.
    """
    terms = {
        "dims": W_DIMS * float(new.dims != other.dims),
        "modality": W_MODALITY * modality_mismatch(new.modalities, other.modalities),
        "channels": W_CHANNELS * float(new.num_channels != other.num_channels),
        "size": W_SIZE * _decades(new.voxels, other.voxels),
        "anisotropy": W_ANISOTROPY * _decades(new.anisotropy, other.anisotropy),
        "foreground": W_FOREGROUND * abs(_logit10(new.foreground_fraction) - _logit10(other.foreground_fraction)),
        "classes": W_CLASSES * min(abs(new.num_classes - other.num_classes), CLASSES_CAP),
        "cases": W_CASES * _decades(max(new.num_cases, 1), max(other.num_cases, 1)),
    }
    return float(sum(terms.values())), terms


def similarity_weights(distances: Mapping[str, float], temperature: float = TEMPERATURE) -> dict[str, float]:
    """``exp(-d / T)`` normalized to sum to 1, nearest first.

    Shifted by the smallest distance before exponentiating, so that even when every dataset is
    far (another dimensionality) the weights are well defined and the nearest still leads.
    """
    if not distances:
        return {}
    nearest = min(distances.values())
    raw = {name: math.exp(-(d - nearest) / temperature) for name, d in distances.items()}
    total = sum(raw.values())
    return dict(sorted(((name, w / total) for name, w in raw.items()), key=lambda item: -item[1]))


# ----------------------------------------------------------------------------------------------
# Scoring the models
# ----------------------------------------------------------------------------------------------

def _finite(value: Any) -> float:
    """A float from a CSV cell; NaN for empty or malformed cells."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _per_model_dataset(table: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple[str, str], dict[str, float]]:
    """{(model, dataset): {"mean": mean metric over finite cases, "n": cases, cost columns: median}}."""
    grouped: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in table:
        entry = grouped.setdefault((row["model"], row["dataset"]), {c: [] for c in (metric, *COST_COLUMNS)})
        for column in entry:
            entry[column].append(_finite(row.get(column)))
    out = {}
    for key, columns in grouped.items():
        values = np.asarray(columns[metric], dtype=float)
        values = values[np.isfinite(values)]
        summary = {"mean": float(values.mean()) if values.size else math.nan, "n": int(values.size)}
        for column in COST_COLUMNS:
            costs = np.asarray(columns[column], dtype=float)
            costs = costs[np.isfinite(costs)]
            summary[column] = float(np.median(costs)) if costs.size else math.nan
        out[key] = summary
    return out


def _run_costs(runs: Sequence[Mapping[str, str]] | None) -> dict[tuple[str, str], dict[str, float]]:
    """Costs of finished in-domain runs from runs.csv, a fallback when table.csv lacks them."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for row in runs or ():
        if row.get("status") != "done" or row.get("kind", "in_domain") != "in_domain":
            continue
        entry = out.setdefault((row["model"], row["dataset"]), {})
        for column in COST_COLUMNS:
            value = _finite(row.get(column))
            if math.isfinite(value) and column not in entry:
                entry[column] = value
    return out


def _failures(runs: Sequence[Mapping[str, str]] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """{(model, dataset): {"failed": k, "runs": n, "error": first error}} for in-domain runs with failures."""
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for row in runs or ():
        if row.get("kind", "in_domain") != "in_domain":
            continue
        entry = counts.setdefault((row["model"], row["dataset"]), {"failed": 0, "runs": 0, "error": ""})
        entry["runs"] += 1
        if row.get("status") == "failed":
            entry["failed"] += 1
            entry["error"] = entry["error"] or (row.get("error") or "").strip()
    return {key: entry for key, entry in counts.items() if entry["failed"]}


def _default_model_dims(name: str) -> tuple[int, ...] | None:
    """Spatial dims a registered model supports, or None for a name this unetkit does not know."""
    from unetkit.models import UnknownModelError, model_info

    try:
        return tuple(model_info(name).spatial_dims)
    except (UnknownModelError, KeyError):
        return None


def _dims_reasons(supported: tuple[int, ...] | None, benchmarked_dims: set[int], dims: int) -> list[str]:
    """Why a model cannot serve ``dims``-D data (empty list when it can).

    ``supported`` comes from the registry; None (a name this unetkit does not know) falls back to
    the dims of the datasets the model was benchmarked on: it evidently runs on those.
    """
    if supported is None:
        if dims in benchmarked_dims:
            return []
        shown = "/".join(f"{d}D" for d in sorted(benchmarked_dims)) or "no"
        return [f"not in this unetkit's registry and benchmarked only on {shown} data; the dataset is {dims}D"]
    if dims not in supported:
        return [f"{'/'.join(f'{d}D' for d in supported)}-only model; the dataset is {dims}D"]
    return []


def _costs_on_nearest(model: str, ran: Sequence[str], per_pair: Mapping[tuple[str, str], Mapping[str, float]],
                      run_costs: Mapping[tuple[str, str], Mapping[str, float]]) -> tuple[dict[str, float], str | None]:
    """Costs measured on the most similar dataset where the model ran (``ran`` is nearest first).

    That dataset's plan (patch, network size) is the best guess of the new dataset's. Columns
    missing from table.csv are taken from runs.csv. Returns ``(costs, dataset)``; all NaN and
    None when nothing was measured.
    """
    for dataset in ran:
        measured = {c: per_pair[(model, dataset)][c] for c in COST_COLUMNS}
        for column in COST_COLUMNS:
            if not math.isfinite(measured[column]):
                measured[column] = run_costs.get((model, dataset), {}).get(column, math.nan)
        if any(math.isfinite(v) for v in measured.values()):
            return measured, dataset
    return {c: math.nan for c in COST_COLUMNS}, None


def _json_number(value: Any) -> Any:
    """NaN/inf -> None so that the report is valid JSON; other values unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _json_number(obj)


def advise(new: DatasetFeatures, results: BenchmarkResults, *, max_params: float | None = None,
           max_gflops: float | None = None, max_latency_ms: float | None = None, metric: str = "dice",
           top: int | None = 10, evidence_datasets: int = 3, n_resamples: int = 10000,
           model_dims: Callable[[str], tuple[int, ...] | None] = _default_model_dims) -> dict[str, Any]:
    """Rank the benchmarked models for a new dataset under cost limits.

    Args:
        new: the new dataset's features (:func:`describe_raw_dataset`).
        results: the benchmark (:func:`load_results`).
        max_params: limit on parameters, millions.
        max_gflops: limit on forward GFLOPs of one patch.
        max_latency_ms: limit on the median forward latency of one patch, milliseconds, as
            measured on the benchmark machine (metadata.json).
        metric: per-case column of table.csv to score by (higher is better).
        top: keep the first ``top`` ranked models (None or 0: all).
        evidence_datasets: how many nearest datasets to show as evidence per model.
        n_resamples: bootstrap resamples of the evidence intervals.
        model_dims: ``name -> supported spatial dims`` (None: unknown to the registry; then the
            dims of the datasets the model was benchmarked on are used).

    Returns:
        A JSON-ready dict: ``dataset`` (features), ``neighbours`` (distance terms and weights,
        nearest first), ``ranking`` (rank, model, score, coverage, costs, evidence, flags, why),
        ``excluded`` (model and reasons), ``constraints``, ``machine``, ``notes``, ``message``.
    """
    from unetkit.benchmark.stats import summarize

    if metric not in SCORE_METRICS:
        raise ValueError(f"metric must be one of {SCORE_METRICS} (higher is better), got {metric!r}")
    if results.table and metric not in results.table[0]:
        raise DataError(f"has no column {metric!r}; columns: {sorted(results.table[0])}", results.root / "table.csv")
    notes = list(results.notes)

    distances: dict[str, tuple[float, dict[str, float]]] = {
        name: dataset_distance(new, features) for name, features in results.datasets.items()}
    weights = similarity_weights({name: d for name, (d, _) in distances.items()})
    order = list(weights)  # nearest first
    if all(results.datasets[name].dims != new.dims for name in order):
        notes.append(f"no benchmarked dataset is {new.dims}D: the evidence comes from datasets of another "
                     "dimensionality and is weak")
    neighbours = [{"dataset": name, "distance": distances[name][0], "weight": weights[name],
                   "terms": distances[name][1], "features": results.datasets[name].as_dict()} for name in order]

    per_pair = _per_model_dataset(results.table, metric)
    run_costs = _run_costs(results.runs)
    failures = _failures(results.runs)
    models = sorted({model for model, _ in per_pair} | {model for model, _ in failures}
                    | {row["model"] for row in results.runs or () if row.get("kind", "in_domain") == "in_domain"})
    # Per dataset, each model's place among the models with results there (1 = best).
    places: dict[tuple[str, str], tuple[int, int]] = {}
    for dataset in order:
        scored = sorted(((v["mean"], m) for (m, d), v in per_pair.items() if d == dataset and math.isfinite(v["mean"])),
                        reverse=True)
        for place, (_, model) in enumerate(scored, start=1):
            places[(model, dataset)] = (place, len(scored))

    limits = {"params_m": max_params, "gflops": max_gflops, "latency_ms": max_latency_ms}
    candidates, excluded = [], []
    for model in models:
        ran = [d for d in order if (model, d) in per_pair and math.isfinite(per_pair[(model, d)]["mean"])]
        reasons = _dims_reasons(model_dims(model), {results.datasets[d].dims for d in ran}, new.dims)
        if not ran:
            failed = [d for d in order if (model, d) in failures]
            reasons.append("no results in table.csv" + (f" (failed on {', '.join(failed)})" if failed else ""))
            excluded.append({"model": model, "reasons": reasons})
            continue
        costs, cost_dataset = _costs_on_nearest(model, ran, per_pair, run_costs)
        for column, limit in limits.items():
            if limit is None:
                continue
            value = costs[column]
            if not math.isfinite(value):
                reasons.append(f"{column} not measured, cannot check {LIMIT_FLAGS[column]} {limit:g}")
            elif value > limit:
                reasons.append(f"{_num(value)}{COST_UNITS[column]} > {LIMIT_FLAGS[column]} {limit:g}")
        if reasons:
            excluded.append({"model": model, "reasons": reasons, **{c: costs[c] for c in COST_COLUMNS}})
            continue
        total = sum(weights[d] for d in ran)
        score = sum(weights[d] * per_pair[(model, d)]["mean"] for d in ran) / total
        flags = []
        for dataset in order:
            failure = failures.get((model, dataset))
            if failure and (weights[dataset] >= FLAG_WEIGHT or dataset == order[0]):
                flags.append(f"{failure['failed']} of {failure['runs']} run(s) failed on {dataset} "
                             f"(weight {weights[dataset]:.2f}): {failure['error'] or 'see runs.csv'}")
        if cost_dataset is not None and results.datasets[cost_dataset].dims != new.dims:
            flags.append(f"costs measured on {cost_dataset} ({results.datasets[cost_dataset].dims}D), "
                         f"not on {new.dims}D data")
        if total < MIN_COVERAGE:
            flags.append(f"little evidence: results only on datasets carrying {100 * total:.0f}% of the "
                         "similarity weight")
        candidates.append({"model": model, "score": score, "coverage": total, **costs,
                           "cost_dataset": cost_dataset, "datasets_with_results": ran, "flags": flags})

    # Well-covered models first, then by score; the name breaks ties so the order is reproducible.
    candidates.sort(key=lambda c: (c["coverage"] < MIN_COVERAGE, -c["score"], c["model"]))
    num_fitting = len(candidates)
    if top:
        candidates = candidates[:top]

    nearest = [d for i, d in enumerate(order[:max(1, evidence_datasets)]) if i == 0 or weights[d] >= EVIDENCE_WEIGHT]
    shown = {c["model"] for c in candidates}
    rows = [row for row in results.table if row["dataset"] in nearest and row["model"] in shown]
    intervals = {(s["model"], s["dataset"]): s for s in summarize(rows, metric, n_resamples=n_resamples)} if rows else {}
    for rank, candidate in enumerate(candidates, start=1):
        model = candidate["model"]
        evidence = []
        for dataset in nearest:
            item: dict[str, Any] = {"dataset": dataset, "weight": weights[dataset]}
            summary = intervals.get((model, dataset))
            if summary is not None and summary["n"] > 0:
                place = places.get((model, dataset))
                item.update(status="done", mean=summary["mean"], ci_low=summary["ci_low"], ci_high=summary["ci_high"],
                            n=summary["n"], place=place[0] if place else None, of=place[1] if place else None)
            elif (model, dataset) in failures:
                item.update(status="failed", error=failures[(model, dataset)]["error"])
            else:
                item.update(status="not run")
            evidence.append(item)
        candidate["rank"] = rank
        candidate["evidence"] = evidence
        candidate["why"] = _why(candidate, metric)

    message = _message(new, candidates, excluded, num_fitting, limits)
    report = {
        "dataset": new.as_dict(), "results": str(results.root), "metric": metric,
        "machine": machine_description(results.metadata),
        "constraints": {"max_params_m": max_params, "max_gflops": max_gflops, "max_latency_ms": max_latency_ms,
                        "dims": new.dims},
        "neighbours": neighbours, "num_fitting": num_fitting,
        "ranking": [{k: c[k] for k in ("rank", "model", "score", "coverage", "params_m", "gflops", "latency_ms",
                                        "cost_dataset", "datasets_with_results", "evidence", "flags", "why")}
                    for c in candidates],
        "excluded": excluded, "notes": notes, "message": message,
    }
    return _clean(report)


def _num(value: float) -> str:
    """Three significant digits without exponent notation (1500, not 1.5e+03)."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _why(candidate: Mapping[str, Any], metric: str) -> str:
    parts = []
    for item in candidate["evidence"]:
        if item["status"] == "done":
            interval = (f" [{item['ci_low']:.3f}, {item['ci_high']:.3f}]"
                        if math.isfinite(item["ci_low"]) and math.isfinite(item["ci_high"]) else "")
            place = f", rank {item['place']} of {item['of']} there" if item.get("place") else ""
            parts.append(f"{item['dataset']} (w {item['weight']:.2f}): {metric} {item['mean']:.3f}{interval} "
                         f"n={item['n']}{place}")
        elif item["status"] == "failed":
            parts.append(f"{item['dataset']} (w {item['weight']:.2f}): FAILED")
    costs = []
    if math.isfinite(candidate["params_m"]):
        costs.append(f"{_num(candidate['params_m'])}M params")
    if math.isfinite(candidate["gflops"]):
        costs.append(f"{_num(candidate['gflops'])} GFLOPs")
    if math.isfinite(candidate["latency_ms"]):
        costs.append(f"{_num(candidate['latency_ms'])} ms")
    text = "; ".join(parts) if parts else "no results on the nearest datasets"
    if costs:
        text += f"; {', '.join(costs)} on {candidate['cost_dataset']}'s patch"
    return text


def _message(new: DatasetFeatures, ranked: Sequence[Mapping[str, Any]], excluded: Sequence[Mapping[str, Any]],
             num_fitting: int, limits: Mapping[str, float | None]) -> str:
    """A sentence on the outcome; when nothing fits, which constraint excluded which models."""
    flag_names, units = LIMIT_FLAGS, COST_UNITS
    if ranked:
        return f"{num_fitting} model(s) fit; {len(excluded)} excluded"
    if not excluded:
        return "no models: the results folder has no in-domain results"
    lines = ["no benchmarked model fits:"]
    by_reason: dict[str, list[str]] = {}
    for item in excluded:
        for reason in item["reasons"]:
            if "-only model" in reason or "registry" in reason:
                key = f"not for {new.dims}D data"
            elif reason.startswith("no results"):
                key = "no results"
            else:
                key = next((flag for flag in flag_names.values() if flag in reason), "other")
            by_reason.setdefault(key, []).append(item["model"])
    for key, names in by_reason.items():
        lines.append(f"  {key}: excluded {len(names)} ({', '.join(names)})")
    # The loosest single limit that would admit something, when one limit alone is in the way.
    for column, limit in limits.items():
        if limit is None:
            continue
        values = [item[column] for item in excluded
                  if column in item and item[column] is not None and math.isfinite(item[column])
                  and all(flag_names[column] in r for r in item["reasons"])]
        if values:
            lines.append(f"  {flag_names[column]} {_num(min(values))} would admit the smallest "
                         f"({_num(min(values))}{units[column]})")
    return "\n".join(lines)


def format_advice(report: Mapping[str, Any], neighbours_shown: int = 5) -> str:
    """The report as readable text: dataset, nearest datasets, ranked table with "why" lines, exclusions."""

    def number(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    ds = report["dataset"]
    features = DatasetFeatures(**{k: ds[k] for k in DatasetFeatures.__dataclass_fields__})
    lines = [f"dataset {ds['name']}: {features.describe()}", "",
             f"nearest benchmarked datasets ({report['results']}):"]
    lines.append(f"  {'dataset':<20} {'weight':>6} {'distance':>8}  main differences")
    for item in report["neighbours"][:neighbours_shown]:
        terms = sorted(((v, k) for k, v in item["terms"].items() if v >= 0.05), reverse=True)[:3]
        diff = ", ".join(f"{k} {v:.2f}" for v, k in terms) or "none"
        lines.append(f"  {item['dataset']:<20} {item['weight']:>6.2f} {item['distance']:>8.2f}  {diff}")
    hidden = len(report["neighbours"]) - neighbours_shown
    if hidden > 0:
        lines.append(f"  ... {hidden} more")
    lines.append("")
    limits = [f"{flag} {report['constraints'][key]:g}" for key, flag in
              (("max_params_m", "--max-params"), ("max_gflops", "--max-gflops"), ("max_latency_ms", "--max-latency-ms"))
              if report["constraints"][key] is not None]
    lines.append(f"models for {ds['dims']}D data{' within ' + ', '.join(limits) if limits else ''}, "
                 f"score = similarity-weighted mean {report['metric']}; costs measured on {report['machine']}:")
    if report["ranking"]:
        lines.append(f"  {'rank':>4}  {'model':<20} {'score':>6} {'cover':>5} {'params M':>9} {'GFLOPs':>8} "
                     f"{'latency ms':>10}")
        for item in report["ranking"]:
            lines.append(f"  {item['rank']:>4}  {item['model']:<20} {number(item['score'], '.3f'):>6} "
                         f"{number(100 * item['coverage'], '.0f') + '%':>5} {number(item['params_m'], '.2f'):>9} "
                         f"{number(item['gflops'], '.1f'):>8} {number(item['latency_ms'], '.1f'):>10}")
            lines.append(f"        why: {item['why']}")
            for flag in item["flags"]:
                lines.append(f"        ! {flag}")
        if report["num_fitting"] > len(report["ranking"]):
            lines.append(f"  ... {report['num_fitting'] - len(report['ranking'])} more fit (--top 0 shows all)")
    lines.append("")
    lines.append(report["message"])
    if report["excluded"] and report["ranking"]:
        lines.append("excluded:")
        for item in report["excluded"]:
            lines.append(f"  {item['model']}: {'; '.join(item['reasons'])}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
