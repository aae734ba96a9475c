"""Predict with an ONNX export (``unetkit export MODEL_DIR --onnx OUT_DIR``) without PyTorch.

Needs numpy, scipy, onnxruntime and the image readers only; importing this module does not
import torch (tests/test_onnx_deploy.py checks it). Per case, the same steps as the PyTorch
:class:`~unetkit.inference.predictor.Predictor`, through the same numpy/scipy code:

1. read the channel files (:func:`unetkit.data.io.read_images`),
2. preprocess (:func:`unetkit.preprocessing.preprocess_case`: crop to nonzero, transpose,
   normalize, resample to the target spacing) with the plans stored in the export's JSON,
3. Gaussian-weighted sliding windows with test-time mirroring (window layout and weights from
   :mod:`unetkit.inference.tiling`, shared with the PyTorch path), each fold's ONNX network in
   onnxruntime; softmax (sigmoid for region models), folds averaged,
4. back to the input's grid (:func:`unetkit.preprocessing.restore_to_original`),
5. label map, postprocessing (:func:`unetkit.evaluation.postprocessing.apply_postprocessing`),
   written in the input's format and geometry.

Example::

    from unetkit.deploy.onnx_predict import OnnxPredictor
    predictor = OnnxPredictor("hippocampus_onnx")
    predictor.predict_files({"case_001": ["imagesTs/case_001_0000.nii.gz"]}, "pred")
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.data.io import Geometry, read_images
from unetkit.evaluation.postprocessing import apply_postprocessing
from unetkit.inference.export import LabelLayout, output_ending_for, probabilities_to_labels, write_prediction
from unetkit.inference.tiling import gaussian_weights, mirror_combinations, tile_grid
from unetkit.preprocessing import preprocess_case, restore_to_original
from unetkit.utils.hashing import file_sha256

PIPELINE_FILE = "unetkit_onnx.json"  # the same name as unetkit.deploy.onnx_export.PIPELINE_FILE (torch-free here)
PIPELINE_FORMAT = "unetkit-onnx-pipeline"


class OnnxModelError(DataError):
    """An ONNX export folder is missing, incomplete or altered."""


def read_pipeline(folder: str | Path) -> dict:
    """The export's JSON, with every listed ONNX file present and matching its SHA-256."""
    folder = Path(folder)
    path = folder / PIPELINE_FILE
    if not path.is_file():
        raise OnnxModelError(f"no {PIPELINE_FILE} here; expected a folder written by `unetkit export MODEL_DIR "
                             f"--onnx OUT_DIR`", folder)
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OnnxModelError(f"unreadable JSON ({exc})", path) from exc
    if description.get("format") != PIPELINE_FORMAT or not description.get("networks"):
        raise OnnxModelError(f"not a unetkit ONNX pipeline description (format {description.get('format')!r})", path)
    for name, digest in description["networks"].items():
        network = folder / name
        if not network.is_file():
            raise OnnxModelError("ONNX network listed in the JSON is missing", network)
        if file_sha256(network) != digest:
            raise OnnxModelError("ONNX network does not match its SHA-256 in the JSON (altered or corrupt)", network)
    return description


def _pad_to_patch(image: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the trailing axes symmetrically with zeros up to the patch (as the PyTorch path does)."""
    k = len(patch)
    shape = image.shape[image.ndim - k:]
    if all(s >= p for s, p in zip(shape, patch)):
        return image, tuple(slice(None) for _ in range(image.ndim))
    pads = [(0, 0)] * (image.ndim - k)
    keep = [slice(None)] * (image.ndim - k)
    for s, p in zip(shape, patch):
        total = max(0, int(p) - int(s))
        pads.append((total // 2, total - total // 2))
        keep.append(slice(total // 2, total // 2 + int(s)))
    return np.pad(image, pads, mode="constant", constant_values=0.0), tuple(keep)


def sliding_window_logits(run, image: np.ndarray, patch_size: Sequence[int], num_outputs: int, *,
                          step_size: float, mirror_axes: Sequence[int], sigma_scale: float,
                          use_gaussian: bool = True, tiles_per_call: int = 4) -> np.ndarray:
    """Gaussian-weighted sliding-window logits ``(K, *spatial)`` of ``image (C, *spatial)``.

    ``run`` maps a float32 batch ``(B, C, *patch)`` to logits ``(B, K, *patch)``. Extra leading
    spatial axes (a 2D network on a volume) are iterated. The numpy twin of
    :func:`unetkit.inference.sliding_window.sliding_window_logits`.
    """
    patch = tuple(int(p) for p in patch_size)
    k = len(patch)
    image, keep = _pad_to_patch(np.asarray(image, dtype=np.float32), patch)
    spatial = image.shape[1:]
    lead_shape, window_shape = spatial[: len(spatial) - k], spatial[len(spatial) - k:]
    starts = tile_grid(window_shape, patch, step_size)
    combos = mirror_combinations(mirror_axes)
    weight = gaussian_weights(patch, sigma_scale) if use_gaussian else np.ones(patch, dtype=np.float32)
    logits = np.zeros((num_outputs, *spatial), dtype=np.float32)
    weight_sum = np.zeros(window_shape, dtype=np.float32)
    for start in starts:
        weight_sum[tuple(slice(s, s + p) for s, p in zip(start, patch))] += weight
    windows = list(itertools.product(itertools.product(*[range(n) for n in lead_shape]), starts))
    for i in range(0, len(windows), tiles_per_call):
        index = [(slice(None), *lead, *(slice(s, s + p) for s, p in zip(start, patch)))
                 for lead, start in windows[i:i + tiles_per_call]]
        batch = np.stack([image[ix] for ix in index])
        n = batch.shape[0]
        inputs = np.concatenate([np.flip(batch, [a + 2 for a in axes]) if axes else batch for axes in combos])
        outputs = run(np.ascontiguousarray(inputs))
        out = sum(np.flip(outputs[j * n:(j + 1) * n], [a + 2 for a in axes]) if axes else outputs[j * n:(j + 1) * n]
                  for j, axes in enumerate(combos))
        out = out * np.float32(1.0 / len(combos)) * weight
        for j, ix in enumerate(index):
            logits[ix] += out[j]
    logits /= weight_sum
    return logits[keep]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


class OnnxPredictor:
    """An ONNX export folder in onnxruntime, ready to predict arrays or files."""

    def __init__(self, folder: str | Path, *, mirror: bool = True, step_size: float | None = None,
                 use_gaussian: bool = True, postprocessing: bool = True, tiles_per_call: int = 4,
                 providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.description = read_pipeline(self.folder)
        d = self.description
        self.plans, self.configuration = d["plans"], d["configuration"]
        self.patch_size = tuple(int(p) for p in d["patch_size"])
        self.in_channels = int(d["input"]["channels"])
        labels = d["labels"]
        self.layout = LabelLayout(num_outputs=int(labels["num_outputs"]), names=tuple(labels.get("names") or ()),
                                  regions=None if labels.get("regions") is None else
                                  tuple(tuple(int(v) for v in r) for r in labels["regions"]),
                                  regions_class_order=None if labels.get("regions_class_order") is None else
                                  tuple(int(v) for v in labels["regions_class_order"]),
                                  labels=dict(labels.get("labels") or {}))
        self.mirror_axes = tuple(d["mirror_axes"]) if mirror else ()
        self.step_size = float(d["tile_step_size"] if step_size is None else step_size)
        self.use_gaussian = use_gaussian
        self.postprocessing = d.get("postprocessing") if postprocessing else None
        self.tiles_per_call = int(tiles_per_call)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.sessions = [ort.InferenceSession(str(self.folder / name), options,
                                              providers=list(providers or ["CPUExecutionProvider"]))
                         for name in d["networks"]]

    def _probabilities_on_cache_grid(self, data: np.ndarray) -> np.ndarray:
        total = None
        for session in self.sessions:
            def run(batch: np.ndarray, session=session) -> np.ndarray:
                return session.run(None, {"image": batch})[0]

            logits = sliding_window_logits(run, data, self.patch_size, self.layout.num_outputs,
                                           step_size=self.step_size, mirror_axes=self.mirror_axes,
                                           sigma_scale=float(self.description["gaussian_sigma_scale"]),
                                           use_gaussian=self.use_gaussian, tiles_per_call=self.tiles_per_call)
            probs = 1.0 / (1.0 + np.exp(-logits)) if self.layout.uses_regions else _softmax(logits)
            total = probs if total is None else total + probs
        assert total is not None
        return (total / len(self.sessions)).astype(np.float32)

    def predict_array(self, image: np.ndarray, geometry: Geometry, case: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, probabilities (K, *spatial))`` of one image ``(C, *spatial)`` on its own grid."""
        image = np.asarray(image)
        if image.ndim != int(self.description["input"]["data_dims"]) + 1 or image.shape[0] != self.in_channels:
            raise OnnxModelError(f"image of shape {image.shape} does not fit the model: expected "
                                 f"{self.in_channels} channel(s) and {self.description['input']['data_dims']} "
                                 f"spatial axes", None, case)
        data, _, properties = preprocess_case(image, geometry, self.plans, self.configuration, case=case)
        probs = self._probabilities_on_cache_grid(data)
        probs = restore_to_original(probs, properties, self.plans, self.configuration)
        labels = probabilities_to_labels(probs, self.layout)
        if self.postprocessing is not None:
            labels = apply_postprocessing(labels, self.postprocessing)
        return labels, probs

    def predict_files(self, cases: Mapping[str, Sequence[str | Path]], output_dir: str | Path, *,
                      output_ending: str | None = None) -> dict[str, float]:
        """Predict each case (name -> its channel files in order) into ``output_dir/CASE.ext``;
        returns the seconds per case (reading and writing included)."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        seconds: dict[str, float] = {}
        for case, files in cases.items():
            start = time.perf_counter()
            image, geometry = read_images([Path(f) for f in files], case)
            labels, _ = self.predict_array(image, geometry, case)
            write_prediction(labels, output_dir / f"{case}{output_ending_for(files[0], output_ending)}", geometry)
            seconds[case] = time.perf_counter() - start
        return seconds


__all__ = ["OnnxPredictor", "OnnxModelError", "read_pipeline", "sliding_window_logits", "PIPELINE_FILE"]
