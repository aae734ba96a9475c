"""Export a trained configuration as ONNX networks plus the JSON that the whole pipeline needs.

``unetkit export MODEL_DIR --onnx OUT_DIR`` writes into OUT_DIR (atomically, as one folder):

* ``fold_F.onnx`` per fold: the network without deep supervision, input ``image``
  ``(batch, C, *patch)`` float32, output ``logits`` ``(batch, K, *patch)``; the batch axis is dynamic.
* ``unetkit_onnx.json`` (:data:`PIPELINE_FILE`): everything prediction needs besides the networks,
  read by :mod:`unetkit.deploy.onnx_predict` (which needs no torch).

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: the dynamo
exporter needs onnxscript, which unetkit does not depend on. This module imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from unetkit.data.errors import DataError
from unetkit.utils.atomic import atomic_directory, atomic_write_json
from unetkit.utils.hashing import file_sha256

#: ONNX operator set of the exported networks (onnxruntime >= 1.17 runs it).
ONNX_OPSET = 17
PIPELINE_FILE = "unetkit_onnx.json"
PIPELINE_FORMAT = "unetkit-onnx-pipeline"
PIPELINE_VERSION = 1


class OnnxExportError(DataError):
    """A model cannot be exported to ONNX (the message names the model and the operation)."""


def _export_network(network, in_channels: int, patch: Sequence[int], path: Path, arch_name: str) -> None:
    """Trace ``network`` with one zero patch and write it to ``path`` with a dynamic batch axis."""
    import torch

    example = torch.zeros((1, in_channels, *patch), dtype=torch.float32)
    try:
        with torch.no_grad():
            torch.onnx.export(network, (example,), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
    except Exception as exc:  # the exporter raises many types (SymbolicValueError, RuntimeError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxExportError(f"architecture {arch_name!r} cannot be exported to ONNX (opset {ONNX_OPSET}): "
                              f"{type(exc).__name__}: {first}") from exc


def pipeline_description(model, postprocessing: dict | None, onnx_files: dict[str, str]) -> dict:
    """The JSON of an ONNX export: a :class:`~unetkit.inference.predictor.ConfigurationModel`'s
    whole prediction pipeline. ``plans`` is what preprocessing reads; the named fields beside it
    are the same values, spelled out for readers and for other runtimes."""
    from unetkit import __version__
    from unetkit.inference.tiling import DEFAULT_SIGMA_SCALE, DEFAULT_STEP_SIZE

    plans, entry = model.plans, model.entry
    return {
        "format": PIPELINE_FORMAT, "format_version": PIPELINE_VERSION, "unetkit_version": __version__,
        "opset": ONNX_OPSET, "dataset": plans.get("dataset_name"), "model": model.model_dir.name,
        "configuration": model.configuration, "checkpoint": model.checkpoint_names[0],
        "networks": onnx_files,
        "input": {"channels": model.in_channels, "data_dims": model.data_dims, "network_dims": model.network_dims},
        "normalization": {"schemes": entry.get("normalization_schemes"),
                          "use_mask_for_norm": entry.get("use_mask_for_norm"),
                          "intensity_properties": plans.get("foreground_intensity_properties_per_channel")},
        "target_spacing": entry.get("spacing"),
        "transpose_forward": plans.get("transpose_forward"), "transpose_backward": plans.get("transpose_backward"),
        "resampling": entry.get("resampling"),
        "patch_size": list(model.patch_size), "tile_step_size": DEFAULT_STEP_SIZE,
        "gaussian_sigma_scale": DEFAULT_SIGMA_SCALE, "mirror_axes": list(model.mirror_axes),
        "labels": model.layout.to_json(), "postprocessing": postprocessing,
        "plans": plans,
    }


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "final",
                folds: Sequence[str] | None = None, overwrite: bool = False) -> dict:
    """Write ``fold_F.onnx`` per fold and :data:`PIPELINE_FILE` into ``out_dir``; returns the JSON.

    The checkpoints' weights are verified against their hashes first. Nothing is left under
    ``out_dir`` when any fold fails to export.
    """
    from unetkit.inference.predictor import find_postprocessing, load_configuration

    model = load_configuration(model_dir, folds, checkpoint, "cpu", verify=True)
    arch = _architecture_name(model)
    postprocessing = find_postprocessing([model.model_dir])
    files: dict[str, str] = {}
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for fold_dir, network in zip(model.fold_dirs, model.networks):
            name = f"{fold_dir.name}.onnx"
            try:
                _export_network(network, model.in_channels, model.patch_size, tmp / name, arch)
            except OnnxExportError as exc:
                raise OnnxExportError(f"{exc} (model {model.describe()})") from exc.__cause__
            files[name] = file_sha256(tmp / name)
        description = pipeline_description(model, postprocessing, files)
        atomic_write_json(tmp / PIPELINE_FILE, description)
    return description


def _architecture_name(model) -> str:
    from unetkit.training.checkpoint import load_checkpoint

    meta = load_checkpoint(model.fold_dirs[0], model.checkpoint_names[0], verify=False, with_state=False).meta
    return str((meta.get("architecture") or {}).get("name", "?"))


__all__ = ["ONNX_OPSET", "PIPELINE_FILE", "OnnxExportError", "export_onnx", "pipeline_description"]
