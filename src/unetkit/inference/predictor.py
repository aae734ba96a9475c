"""Predict new images with trained models: load folds, check inputs, run, write.

:class:`Predictor` holds one or more trained configurations (each with one or more folds) on a
device. Per case it

1. reads the channel files (:func:`unetkit.data.io.read_images`),
2. preprocesses them exactly as the training cache was made (:func:`unetkit.preprocessing.preprocess_case`:
   crop, transpose, normalize, resample to the configuration's spacing),
3. predicts logits by Gaussian-weighted sliding windows with test-time mirroring
   (:func:`unetkit.inference.sliding_window.sliding_window_logits`), for every fold,
4. turns logits into probabilities (softmax; sigmoid for region models) and averages the folds,
5. maps the probabilities back to the input's grid (:func:`unetkit.preprocessing.restore_to_original`:
   resampling, transposition and cropping undone) and averages the configurations,
6. takes the label map and writes it in the input's format and geometry
   (:mod:`unetkit.inference.export`), optionally with the probabilities.

Inputs are checked against the models before any prediction starts (channel count and
dimensionality from the file headers), so a wrong folder fails in a second, naming the file.
Reading and preprocessing the next case and writing the previous one run in background threads
while the network works on the current one.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from unetkit.data.errors import DataError
from unetkit.data.io import MEDICAL_ENDINGS, PICTURE_ENDINGS, SUPPORTED_ENDINGS, Geometry, file_ending
from unetkit.data.signature import files_signature
from unetkit.inference import provenance
from unetkit.inference.export import LabelLayout, output_ending_for, prediction_paths, probabilities_to_labels, \
    write_prediction
from unetkit.inference.sliding_window import DEFAULT_STEP_SIZE, sliding_window_logits

CHECKPOINT_CHOICES = ("final", "best", "latest")
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
#: Files that may sit beside the images in an input folder without being an error.
IGNORED_ENDINGS = (".json", ".txt", ".md", ".csv", ".npz", ".pdf", ".log")


class ModelInputError(DataError):
    """An input does not fit the model (channels, dimensionality, file type), or a model folder is unusable."""


# ----------------------------------------------------------------------------- loading models

def _fold_dirs(model_dir: Path, folds: Sequence[int | str] | None) -> list[Path]:
    """The fold folders to use under a configuration folder (or the folder itself when it is a fold)."""
    if not model_dir.is_dir():
        raise ModelInputError("model folder not found", model_dir)
    if any(model_dir.glob("checkpoint_*.json")):
        if folds:
            name = model_dir.name
            if not any(name == f"fold_{f}" for f in folds):
                raise ModelInputError(f"this is a single fold folder ({name}); it cannot provide folds "
                                      f"{', '.join(str(f) for f in folds)}", model_dir)
        return [model_dir]
    present = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.startswith("fold_")),
                     key=lambda p: (not p.name[5:].isdigit(), int(p.name[5:]) if p.name[5:].isdigit() else 0, p.name))
    if not present:
        raise ModelInputError("no fold_* folders and no checkpoint here; expected a trained configuration folder "
                              "WORKDIR/NAME/models/CONFIG__ARCH/ or one of its fold_F folders", model_dir)
    if not folds:
        return present
    chosen = []
    for f in folds:
        path = model_dir / f"fold_{f}"
        if not path.is_dir():
            raise ModelInputError(f"fold {f} not found; available: {', '.join(p.name[5:] for p in present)}", model_dir)
        chosen.append(path)
    return chosen


def _checkpoint_name(fold_dir: Path, which: str) -> str:
    if which not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_CHOICES}, got {which!r}")
    candidates = [f"checkpoint_{which}"]
    if which == "latest":
        candidates.append("checkpoint_final")  # a finished run removes checkpoint_latest
    for name in candidates:
        if (fold_dir / f"{name}.json").is_file():
            return name
    found = sorted(p.name[: -len(".json")] for p in fold_dir.glob("checkpoint_*.json"))
    hint = "training has not finished; use --checkpoint latest or best" if which == "final" else ""
    raise ModelInputError(f"no checkpoint_{which} here (found: {', '.join(found) or 'none'}){'; ' + hint if hint else ''}",
                          fold_dir)


def _mirror_axes(meta: dict, entry: dict, spatial_dims: int) -> tuple[int, ...]:
    """Axes the trainer mirrored (checkpoint's training config, then the plan entry), else all."""
    for source in (meta.get("training_config") or {}, entry, entry.get("augmentation") or {}):
        axes = source.get("mirror_axes") if isinstance(source, dict) else None
        if axes is not None:
            return tuple(int(a) for a in axes if 0 <= int(a) < spatial_dims)
    return tuple(range(spatial_dims))


@dataclass
class ConfigurationModel:
    """One trained configuration: its plan, its label layout and the networks of its folds."""

    model_dir: Path
    configuration: str
    plans: dict
    entry: dict
    patch_size: tuple[int, ...]
    in_channels: int
    layout: LabelLayout
    mirror_axes: tuple[int, ...]
    networks: list[torch.nn.Module]
    fold_dirs: list[Path]
    checkpoint_names: list[str]

    @property
    def previous_stage(self) -> str | None:
        """The configuration whose prediction this cascade stage takes as extra input (else None)."""
        return self.entry.get("previous_stage")

    @property
    def network_dims(self) -> int:
        return len(self.patch_size)

    @property
    def data_dims(self) -> int:
        """Spatial axes of the images this configuration predicts (3 for ``2d`` on volumes)."""
        forward = self.plans.get("transpose_forward")
        return len(forward) if forward else self.network_dims

    def describe(self) -> str:
        folds = ", ".join(p.name for p in self.fold_dirs)
        return f"{self.model_dir} ({self.configuration}, {folds}, {self.checkpoint_names[0]})"


def load_configuration(model_dir: str | Path, folds: Sequence[int | str] | None = None, checkpoint: str = "final",
                       device: torch.device | str = "cpu", verify: bool = True) -> ConfigurationModel:
    """Load every requested fold of a trained configuration folder (or a single fold folder).

    The networks are built from the checkpoint's architecture (without deep supervision), get
    the safetensors weights, and are put in eval mode on ``device``. All folds must agree on the
    configuration, patch, channels and outputs.
    """
    from unetkit.models import create_model
    from unetkit.training.checkpoint import CheckpointError, load_checkpoint

    model_dir = Path(model_dir)
    dirs = _fold_dirs(model_dir, folds)
    networks, names, reference = [], [], None
    for fold_dir in dirs:
        name = _checkpoint_name(fold_dir, checkpoint)
        try:
            ckpt = load_checkpoint(fold_dir, name, verify=verify, with_state=False)
        except CheckpointError as exc:
            raise ModelInputError(str(exc), fold_dir) from exc
        meta = ckpt.meta
        arch = meta.get("architecture") or {}
        try:
            key = (meta["configuration"], tuple(meta["patch_size"]), int(arch["in_channels"]), int(arch["num_classes"]),
                   int(arch["spatial_dims"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelInputError(f"{name}.json lacks {exc} (configuration, patch_size, architecture); "
                                  "not a unetkit training checkpoint", fold_dir) from exc
        if reference is None:
            reference = (key, meta)
        elif key != reference[0]:
            raise ModelInputError(f"fold disagrees with {dirs[0].name}: (configuration, patch, channels, outputs, "
                                  f"dims) {key} vs {reference[0]}", fold_dir)
        network = create_model(arch["name"], int(arch["spatial_dims"]), int(arch["in_channels"]),
                               int(arch["num_classes"]), deep_supervision=False, **(arch.get("kwargs") or {}))
        try:
            network.load_state_dict(ckpt.weights, strict=True)
        except RuntimeError as exc:
            raise ModelInputError(f"weights in {name}.safetensors do not fit architecture {arch['name']!r}: "
                                  f"{str(exc).splitlines()[0]}", fold_dir) from exc
        networks.append(network.to(device).eval())
        names.append(name)
    assert reference is not None
    (configuration, patch, in_channels, num_classes, dims), meta = reference
    plans = meta.get("plans") or {}
    entry = (plans.get("configurations") or {}).get(configuration)
    if entry is None:
        raise ModelInputError(f"checkpoint holds no plan entry for configuration {configuration!r}", dirs[0])
    from unetkit.training.cascade import extra_channels

    # in_channels counts the image channels a user gives; a cascade stage's network also takes the
    # previous stage's one-hot channels (added by the Predictor from ``previous_stage_dir``).
    return ConfigurationModel(model_dir=model_dir, configuration=configuration, plans=plans, entry=entry,
                              patch_size=tuple(int(p) for p in patch),
                              in_channels=in_channels - extra_channels(plans, entry),
                              layout=LabelLayout.from_meta(meta, num_classes),
                              mirror_axes=_mirror_axes(meta, entry, dims), networks=networks, fold_dirs=dirs,
                              checkpoint_names=names)


# ----------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class InputCase:
    """One case to predict: its name and its channel files in channel order."""

    name: str
    files: tuple[Path, ...]

    @property
    def ending(self) -> str:
        return file_ending(self.files[0])


def _group_files(files: Sequence[Path]) -> list[InputCase]:
    """Group files into cases: ``CASE_XXXX.ext`` by CASE (channels sorted), any other name alone."""
    grouped: dict[str, dict[int, Path]] = {}
    order: list[str] = []
    for f in files:
        ending = file_ending(f)
        if not ending:
            raise ModelInputError(f"unknown file type; supported endings are {', '.join(SUPPORTED_ENDINGS)}", f)
        stem = f.name[: len(f.name) - len(ending)]
        m = CHANNEL_SUFFIX.match(stem)
        case, channel = (m.group("case"), int(m.group("channel"))) if m else (stem, 0)
        channels = grouped.setdefault(case, {})
        if case not in order:
            order.append(case)
        if channel in channels:
            raise ModelInputError(f"two files for channel {channel} of case {case!r} ({channels[channel].name} and "
                                  f"{f.name})", f.parent)
        channels[channel] = f
    cases = []
    for case in order:
        channels = grouped[case]
        indices = sorted(channels)
        if indices != list(range(len(indices))):
            raise ModelInputError(f"channel files {[f'{i:04d}' for i in indices]} of case {case!r} are not "
                                  f"numbered 0000, 0001, ... without gaps", channels[indices[0]].parent)
        cases.append(InputCase(case, tuple(channels[i] for i in indices)))
    return cases


def collect_inputs(inputs: str | Path | Sequence[str | Path]) -> list[InputCase]:
    """Cases from a folder (imagesTs layout), single image files, or ``.txt`` lists of paths.

    Files named ``CASE_0000.ext``, ``CASE_0001.ext``, ... form one case ``CASE`` with channels in
    that order; any other image file is a case of its own, named after the file.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for f in sorted(path.iterdir()):
                if f.name.startswith(".") or not f.is_file():
                    continue
                if file_ending(f):
                    found.append(f)
                elif not f.name.lower().endswith(IGNORED_ENDINGS):
                    raise ModelInputError(f"unknown file type in the input folder; supported endings are "
                                          f"{', '.join(SUPPORTED_ENDINGS)} (move other files elsewhere)", f)
            if not found:
                raise ModelInputError(f"no image files in the input folder (endings {', '.join(SUPPORTED_ENDINGS)})", path)
            files += found
        elif path.is_file() and path.suffix.lower() == ".txt":
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    entry = Path(line) if Path(line).is_absolute() else path.parent / line
                    if not entry.is_file():
                        raise ModelInputError(f"listed file {line!r} not found", path)
                    files.append(entry)
        elif path.is_file():
            files.append(path)
        else:
            raise ModelInputError("input not found", path)
    cases = _group_files(files)
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelInputError(f"case names occur twice: {', '.join(duplicates)}")
    return cases


def probe_file(path: Path) -> tuple[int, int, tuple[int, ...] | None]:
    """``(channels, spatial dims, alternative channel count or None)`` from the header only.

    A picture with 4 samples may lose a constant alpha channel when read, so 3 is accepted as
    the alternative count there.
    """
    ending = file_ending(path)
    if not path.is_file():
        raise ModelInputError("file not found", path)
    try:
        if ending in MEDICAL_ENDINGS:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return reader.GetNumberOfComponents(), reader.GetDimension(), None
        if ending in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                shape = tuple(tif.series[0].shape)
            if len(shape) == 2:
                return 1, 2, None
            if len(shape) == 3 and shape[-1] in (1, 2, 3, 4):
                return shape[-1], 2, (3,) if shape[-1] == 4 else None
            return 1, len(shape), None  # a stack: reported as a dimension mismatch
        if ending in PICTURE_ENDINGS:
            from PIL import Image

            with Image.open(path) as im:
                mode = im.mode
            bands = {"1": 1, "L": 1, "P": 3, "I": 1, "F": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "LA": 2, "PA": 4,
                     "RGB": 3, "YCbCr": 3, "RGBA": 4, "CMYK": 4}.get(mode, 3)
            return bands, 2, (3,) if bands == 4 else None
    except ModelInputError:
        raise
    except Exception as exc:  # the readers raise many types for broken files
        raise ModelInputError(f"cannot read the image header ({type(exc).__name__}: {exc})", path) from exc
    raise ModelInputError(f"unknown file type; supported endings are {', '.join(SUPPORTED_ENDINGS)}", path)


def _model_expectation(model: ConfigurationModel) -> str:
    kind = "2D pictures" if model.data_dims == 2 else "3D volumes"
    return f"the model ({model.describe()}) expects {kind} with {model.in_channels} channel(s)"


def check_inputs(cases: Sequence[InputCase], model: ConfigurationModel) -> None:
    """Raise :class:`ModelInputError` for the first case whose files do not fit ``model``.

    Checks the channel count (summed over the case's files) and the number of spatial axes
    from the file headers; nothing is decoded.
    """
    for case in cases:
        total, alternatives = 0, [0]
        for f in case.files:
            channels, dims, alt = probe_file(f)
            if dims != model.data_dims:
                raise ModelInputError(f"file is {dims}D but {_model_expectation(model)}", f, case.name)
            total += channels
            alternatives = [a + c for a in alternatives for c in {channels, *(alt or ())}]
        if model.in_channels not in alternatives:
            listing = ", ".join(p.name for p in case.files)
            raise ModelInputError(f"case has {total} channel(s) in {len(case.files)} file(s) ({listing}) but "
                                  f"{_model_expectation(model)}; name channel files CASE_0000, CASE_0001, ...",
                                  case.files[0], case.name)


# ----------------------------------------------------------------------------- predictor

def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None: CUDA when available, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelInputError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    return device


@dataclass
class PredictionSummary:
    """What :meth:`Predictor.predict_files` did."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)     # outputs made from other inputs or by another model: redone
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    case_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Prepared:
    case: InputCase
    geometry: Geometry
    per_model: list[tuple[np.ndarray, dict]]
    error: str | None = None


class Predictor:
    """Trained configurations on a device, ready to predict arrays or files.

    Several configurations form an ensemble: their probabilities are averaged on the input's
    grid. Within a configuration, the folds' probabilities are averaged on its own grid.
    """

    def __init__(self, models: Sequence[ConfigurationModel], device: torch.device | str = "cpu", *,
                 step_size: float = DEFAULT_STEP_SIZE, mirror: bool = True, tile_batch: int | None = None,
                 use_gaussian: bool = True, amp: bool | None = None, compile: bool = False,
                 channels_last: bool | None = None, progress: bool = True,
                 postprocessing: dict | None = None, previous_stage_dir: str | Path | None = None) -> None:
        if not models:
            raise ValueError("a Predictor needs at least one trained configuration")
        self.models = list(models)
        self.device = torch.device(device)
        first = self.models[0]
        for other in self.models[1:]:
            if (other.in_channels, other.data_dims) != (first.in_channels, first.data_dims):
                raise ModelInputError(f"configurations cannot be ensembled: {other.describe()} takes "
                                      f"{other.in_channels} channel(s) of {other.data_dims}D data, {first.describe()} "
                                      f"{first.in_channels} of {first.data_dims}D")
            if (other.layout.num_outputs, other.layout.regions) != (first.layout.num_outputs, first.layout.regions):
                raise ModelInputError(f"configurations cannot be ensembled: {other.describe()} predicts other classes "
                                      f"than {first.describe()}")
        self.layout = first.layout
        self.step_size = float(step_size)
        self.mirror = bool(mirror)
        self.tile_batch = int(tile_batch) if tile_batch else None
        self.use_gaussian = use_gaussian
        self.amp = (self.device.type == "cuda") if amp is None else bool(amp)
        self.progress = progress
        # Connected-component steps decided by `unetkit select` (postprocessing.json), applied to
        # every label map written; None = none.
        self.postprocessing = postprocessing
        # Cascade stages: the previous stage's label maps (CASE.ext on the input's grid), read per case.
        self.previous_stage_dir = None if previous_stage_dir is None else Path(previous_stage_dir)
        # channels_last(_3d) measured no faster on an H100 (fp16) for nnU-Net's Hippocampus, DRIVE and
        # ISBI networks (2D up to 1.4x slower), nor on the CPU: off unless asked for.
        self.channels_last = False if channels_last is None else bool(channels_last)
        self._runners: list[list[Any]] = []
        for model in self.models:
            runners = []
            for net in model.networks:
                net.to(self.device)
                fmt = self._memory_format(model)
                if fmt is not None:
                    net.to(memory_format=fmt)
                runners.append(torch.compile(net, dynamic=False) if compile else net)
            self._runners.append(runners)

    # -- construction

    @classmethod
    def from_model_dir(cls, model_dirs: str | Path | Sequence[str | Path], folds: Sequence[int | str] | None = None,
                       checkpoint: str = "final", device: str | torch.device | None = "auto", **options: Any
                       ) -> "Predictor":
        """Load one configuration folder (or fold folder), or several for a configuration ensemble.

        ``options`` are the keyword arguments of :class:`Predictor` (``step_size``, ``mirror``,
        ``tile_batch``, ``use_gaussian``, ``amp``, ``compile``, ``channels_last``, ``progress``,
        ``postprocessing``). Without ``postprocessing`` in ``options``, the postprocessing.json
        that ``unetkit select`` saved for these models is used when there is one (see
        :func:`find_postprocessing`); pass ``postprocessing=None`` to switch it off.
        """
        dev = resolve_device(device)
        dirs = [model_dirs] if isinstance(model_dirs, (str, Path)) else list(model_dirs)
        models = [load_configuration(d, folds, checkpoint, dev) for d in dirs]
        if "postprocessing" not in options:
            options["postprocessing"] = find_postprocessing([m.model_dir for m in models])
        return cls(models, dev, **options)

    def signature(self) -> str:
        """Signature of the weight files and every setting that changes an output (provenance)."""
        from unetkit.training.checkpoint import checkpoint_files

        weights = [checkpoint_files(d, n)[0] for m in self.models for d, n in zip(m.fold_dirs, m.checkpoint_names)]
        return provenance.model_signature(weights, [self.mirror, self.step_size, self.use_gaussian,
                                                    self.postprocessing])

    # -- properties

    @property
    def in_channels(self) -> int:
        return self.models[0].in_channels

    @property
    def data_dims(self) -> int:
        return self.models[0].data_dims

    def tile_batch_for(self, model: ConfigurationModel) -> int:
        """Network inputs per forward call: the user's ``tile_batch``, else 2 on the CPU (larger
        batches measured no faster per tile there) and, on CUDA, as many patches as make about
        2^21 voxels (8 for Hippocampus-sized patches, 1 for 128^3), at most 8."""
        if self.tile_batch:
            return self.tile_batch
        if self.device.type != "cuda":
            return 2
        return max(1, min(8, 2 ** 21 // int(np.prod(model.patch_size))))

    def _memory_format(self, model: ConfigurationModel) -> torch.memory_format | None:
        if not self.channels_last:
            return None
        return torch.channels_last_3d if model.network_dims == 3 else torch.channels_last

    # -- core

    def check_array(self, image: np.ndarray, geometry: Geometry | None) -> Geometry:
        """Validate an in-memory image against the models; returns the geometry to use."""
        image = np.asarray(image)
        if image.ndim != self.data_dims + 1:
            raise ModelInputError(f"image has shape {image.shape}; the model expects (C, *spatial) with "
                                  f"{self.data_dims} spatial axes")
        if image.shape[0] != self.in_channels:
            raise ModelInputError(f"image has {image.shape[0]} channel(s) (shape {image.shape}); the model "
                                  f"expects {self.in_channels}")
        if geometry is None:
            geometry = Geometry(spacing=(1.0,) * self.data_dims)
        if len(geometry.spacing) != self.data_dims:
            raise ModelInputError(f"geometry has {len(geometry.spacing)} spacing values for {self.data_dims} axes")
        return geometry

    def _preprocess(self, image: np.ndarray, geometry: Geometry, case: str | None,
                    previous: np.ndarray | None = None) -> list[tuple[np.ndarray, dict]]:
        """Each model's input on its cache grid; a cascade stage's gets ``previous`` (the previous
        stage's label map on the image's grid), preprocessed as a label map, as one-hot channels."""
        from unetkit.preprocessing import preprocess_case
        from unetkit.training.cascade import stage_labels, with_previous_stage

        prepared = []
        for m in self.models:
            if m.previous_stage is None:
                prepared.append(preprocess_case(image, geometry, m.plans, m.configuration, case=case)[::2])
                continue
            if previous is None:
                raise ModelInputError(f"{m.describe()} is a cascade stage: it needs the {m.previous_stage} "
                                      f"prediction of case {case!r} (predict with `unetkit predict -m` on it, "
                                      "which runs both stages)")
            data, seg, props = preprocess_case(image, geometry, m.plans, m.configuration, previous, case=case)
            prepared.append((with_previous_stage(data, seg, stage_labels(m.plans)), props))
        return prepared

    def _autocast(self):
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def probabilities_on_cache_grid(self, index: int, data: np.ndarray) -> torch.Tensor:
        """Fold-averaged probabilities of configuration ``index`` for one preprocessed case
        ``(C, *spatial)`` (on the device, float32)."""
        model = self.models[index]
        # A copy: cached cases are read-only memory maps, which torch must not wrap.
        x = torch.from_numpy(np.array(data, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory()
        mirror = model.mirror_axes if self.mirror else ()
        total = None
        with torch.inference_mode(), self._autocast():
            for runner in self._runners[index]:
                logits = sliding_window_logits(runner, x, model.patch_size, model.layout.num_outputs,
                                               step_size=self.step_size, mirror_axes=mirror,
                                               tile_batch=self.tile_batch_for(model), use_gaussian=self.use_gaussian,
                                               device=self.device, memory_format=self._memory_format(model))
                probs = torch.sigmoid(logits) if model.layout.uses_regions else torch.softmax(logits, dim=0)
                total = probs if total is None else total.add_(probs)
            assert total is not None
            if len(self._runners[index]) > 1:
                total /= len(self._runners[index])
        return total

    def _predict_prepared(self, per_model: list[tuple[np.ndarray, dict]]) -> np.ndarray:
        from unetkit.preprocessing import restore_to_original

        total = None
        for i, (data, props) in enumerate(per_model):
            model = self.models[i]
            probs = self.probabilities_on_cache_grid(i, data).cpu().numpy()
            restored = restore_to_original(probs, props, model.plans, model.configuration)
            total = restored if total is None else total + restored
        assert total is not None
        if len(per_model) > 1:
            total /= len(per_model)
        return total

    def predict_array(self, image: np.ndarray, geometry: Geometry | None = None, case: str | None = None,
                      previous: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predict one image ``(C, *spatial)`` held in memory.

        Args:
            image: channels first, spatial axes in numpy order (as :func:`unetkit.data.io.read_images`
                returns them).
            geometry: spacing (mm, numpy axis order) and orientation; default spacing 1.
            previous: for a cascade stage, the previous stage's label map on the image's grid.

        Returns:
            ``(labels spatial, probabilities (K, *spatial) float32)`` on the image's grid.
        """
        geometry = self.check_array(image, geometry)
        probs = self._predict_prepared(self._preprocess(np.asarray(image), geometry, case, previous))
        return self.labels_from(probs), probs

    def labels_from(self, probabilities: np.ndarray) -> np.ndarray:
        """The label map of probabilities on the input grid, postprocessed when the models have it."""
        labels = probabilities_to_labels(probabilities, self.layout)
        if self.postprocessing is not None:
            from unetkit.evaluation.postprocessing import apply_postprocessing

            labels = apply_postprocessing(labels, self.postprocessing)
        return labels

    # -- files

    def _prepare(self, case: InputCase) -> _Prepared:
        from unetkit.data.io import read_images

        try:
            image, geometry = read_images(case.files, case.name)
            if image.shape[0] != self.in_channels:
                raise ModelInputError(f"case has {image.shape[0]} channel(s) after reading; the model expects "
                                      f"{self.in_channels}", case.files[0], case.name)
            return _Prepared(case, geometry, self._preprocess(image, geometry, case.name, self._previous(case)))
        except DataError as exc:
            return _Prepared(case, Geometry((1.0,)), [], str(exc))
        except (ValueError, KeyError, MemoryError, OSError) as exc:
            return _Prepared(case, Geometry((1.0,)), [], f"case {case.name!r} ({case.files[0]}): "
                                                         f"{type(exc).__name__}: {exc}")

    def _previous(self, case: InputCase) -> np.ndarray | None:
        """The previous stage's label map of ``case`` from ``previous_stage_dir`` (None: no cascade stage)."""
        from unetkit.data.io import read_label

        if self.previous_stage_dir is None or all(m.previous_stage is None for m in self.models):
            return None
        path = self.previous_stage_dir / f"{case.name}{case.ending}"
        if not path.is_file():
            raise ModelInputError("the previous stage's prediction of this case is missing", path, case.name)
        label, _ = read_label(path, case.name)
        return label

    def predict_files(self, inputs: str | Path | Sequence[str | Path] | Sequence[InputCase], output_dir: str | Path,
                      *, save_probabilities: bool = False, skip_existing: bool = False,
                      output_ending: str | None = None, record: bool = True) -> PredictionSummary:
        """Predict every case of ``inputs`` into ``output_dir`` (``CASE.ext``, optional ``CASE.npz/.json``).

        Args:
            inputs: a folder, files, ``.txt`` lists (see :func:`collect_inputs`) or ready cases.
            save_probabilities: also write the probabilities (float16 ``.npz``) and a JSON.
            skip_existing: leave cases whose outputs already exist alone (``--continue``), as long
                as they were made by this model from the same input files (see
                :mod:`unetkit.inference.provenance`); others are predicted again.
            output_ending: write labels with this ending instead of the input's format.
            record: write the provenance record that ``skip_existing`` needs (off for a folder
                that is never continued, such as a benchmark run's, which is predicted anew).

        Raises:
            ModelInputError: an input does not fit the model (before any case is predicted).
            DataError: some cases failed; every other case was written (the message lists them).
        """
        start = time.perf_counter()
        if not isinstance(inputs, (str, Path)) and inputs and all(isinstance(c, InputCase) for c in inputs):
            cases = list(inputs)  # type: ignore[arg-type]
        else:
            cases = collect_inputs(inputs)  # type: ignore[arg-type]
        for model in self.models:
            check_inputs(cases, model)
        output_dir = Path(output_dir)
        summary = PredictionSummary()
        model = self.signature()
        recorded = provenance.read_record(output_dir, model)
        inputs = {case.name: files_signature(case.files) for case in cases}
        todo: list[tuple[InputCase, Path]] = []
        for case in cases:
            label_path, npz_path, _ = prediction_paths(output_dir, case.name, output_ending_for(case.files[0],
                                                                                                 output_ending))
            if skip_existing and label_path.is_file() and (not save_probabilities or npz_path.is_file()):
                if recorded.get(case.name) == inputs[case.name]:
                    summary.skipped.append(case.name)
                    continue
                summary.stale.append(case.name)
            todo.append((case, label_path))
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            if todo:
                self._run_cases(todo, save_probabilities, summary)
        finally:
            kept = {name: inputs[name] for name in [*summary.skipped, *summary.case_seconds]}
            if record:
                provenance.write_record(output_dir, model,
                                        {**{k: v for k, v in recorded.items() if k not in inputs}, **kept})
        summary.seconds = time.perf_counter() - start
        if summary.failed:
            listing = "\n  ".join(summary.failed[:20])
            more = f"\n  ... and {len(summary.failed) - 20} more" if len(summary.failed) > 20 else ""
            raise DataError(f"{len(summary.failed)} case(s) failed (the others were written):\n  {listing}{more}",
                            output_dir)
        return summary

    def _run_cases(self, todo: list[tuple[InputCase, Path]], save_probabilities: bool,
                   summary: PredictionSummary) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        show = self.progress and sys.stderr.isatty()
        bar = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.fields[case]}"), disable=not show, transient=False)
        extra_base = {"models": [m.describe() for m in self.models], "mirror": self.mirror,
                      "step_size": self.step_size,
                      "postprocessing": None if self.postprocessing is None else self.postprocessing.get("steps")}
        with ThreadPoolExecutor(1, thread_name_prefix="unetkit-read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="unetkit-write") as writer, bar:
            job = bar.add_task("cases", total=len(todo), case="")
            pending_write: Future | None = None
            next_prep: Future = reader.submit(self._prepare, todo[0][0])
            for i, (case, label_path) in enumerate(todo):
                prepared = next_prep.result()
                if i + 1 < len(todo):
                    next_prep = reader.submit(self._prepare, todo[i + 1][0])
                bar.update(job, case=case.name)
                t0 = time.perf_counter()
                if prepared.error is not None:
                    summary.failed.append(prepared.error)
                    bar.advance(job)
                    continue
                try:
                    probs = self._predict_prepared(prepared.per_model)
                except (RuntimeError, ValueError) as exc:
                    summary.failed.append(f"case {case.name!r}: prediction failed: {type(exc).__name__}: {exc}")
                    bar.advance(job)
                    continue
                labels = self.labels_from(probs)
                if pending_write is not None:
                    self._collect_write(pending_write, summary)
                extra = {"case": case.name, "inputs": [str(f) for f in case.files], **extra_base}
                pending_write = writer.submit(write_prediction, labels, label_path, prepared.geometry,
                                              probs if save_probabilities else None, self.layout, extra)
                summary.case_seconds[case.name] = time.perf_counter() - t0
                bar.advance(job)
            if pending_write is not None:
                self._collect_write(pending_write, summary)

    @staticmethod
    def _collect_write(future: Future, summary: PredictionSummary) -> None:
        try:
            summary.written += future.result()
        except (DataError, OSError, ValueError) as exc:
            summary.failed.append(f"writing failed: {exc}")


def find_postprocessing(model_dirs: Sequence[str | Path]) -> dict | None:
    """The postprocessing.json ``unetkit select`` decided for these trained configurations, or None.

    One configuration ``WORK/models/CONFIG__ARCH`` (or one of its fold folders): its own
    ``postprocessing.json``. Several (an ensemble): ``WORK/ensembles/A+B/postprocessing.json``
    (either order of the members).
    """
    from unetkit.evaluation.postprocessing import POSTPROCESSING_FILE, load_postprocessing

    dirs = [Path(d) for d in model_dirs]
    dirs = [d.parent if d.name.startswith("fold_") else d for d in dirs]
    if len(dirs) == 1:
        candidates = [dirs[0] / POSTPROCESSING_FILE]
    else:
        ensembles = dirs[0].parent.parent / "ensembles"
        names = [d.name for d in dirs]
        candidates = [ensembles / "+".join(names) / POSTPROCESSING_FILE,
                      ensembles / "+".join(reversed(names)) / POSTPROCESSING_FILE]
    for path in candidates:
        if path.is_file():
            try:
                return load_postprocessing(path)
            except ValueError as exc:
                raise ModelInputError(str(exc)) from exc  # the message names the file
    return None


def predict_files(model_dirs: str | Path | Sequence[str | Path], inputs: str | Path | Sequence[str | Path],
                  output_dir: str | Path, *, folds: Sequence[int | str] | None = None, checkpoint: str = "final",
                  device: str | torch.device | None = "auto", save_probabilities: bool = False,
                  skip_existing: bool = False, output_ending: str | None = None, **options: Any) -> PredictionSummary:
    """One-call prediction: load the models, check and predict ``inputs`` into ``output_dir``.

    Inputs are collected (unknown file types refused) before the models load, and checked
    against the models before any case is read in full, so a wrong input fails at once. A
    cascade stage's previous stage predicts the inputs first (:mod:`unetkit.inference.cascade`).
    """
    from unetkit.inference.cascade import run_previous_stages

    cases = collect_inputs(inputs)
    predictor = Predictor.from_model_dir(model_dirs, folds, checkpoint, device, **options)
    # A cascade stage: its previous stage predicts every case first (into OUTPUT/previous_stage_*).
    run_previous_stages(predictor, cases, output_dir, checkpoint=checkpoint, skip_existing=skip_existing,
                        log=lambda message: None, **{k: v for k, v in options.items() if k != "postprocessing"})
    return predictor.predict_files(cases, output_dir, save_probabilities=save_probabilities,
                                   skip_existing=skip_existing, output_ending=output_ending)


__all__ = ["find_postprocessing", "Predictor", "ConfigurationModel", "InputCase", "ModelInputError", "PredictionSummary", "load_configuration",
           "collect_inputs", "check_inputs", "probe_file", "resolve_device", "predict_files", "CHECKPOINT_CHOICES"]
