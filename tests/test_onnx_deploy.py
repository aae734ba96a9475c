"""ONNX export of the whole pipeline and the torch-free predictor.

The reference is the PyTorch :class:`~unetkit.inference.predictor.Predictor` on the same trained
model (its own tests check it against nnU-Net and scipy); onnxruntime executes the exported graph
independently of torch, so agreement means the export and the numpy pipeline reproduce it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from references import require_module
import torch

# The dev extra installs both, so CI runs these tests; elsewhere they skip without them.
require_module("onnxruntime", "pip install -e '.[onnx]'")
require_module("onnx", "pip install -e '.[onnx]'")

from unetkit.cli import main  # noqa: E402
from unetkit.data.io import read_label  # noqa: E402

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def _agreement(dir_a: Path, dir_b: Path, cases: list[str], ending: str) -> float:
    same = total = 0
    for case in cases:
        a, _ = read_label(dir_a / f"{case}{ending}")
        b, _ = read_label(dir_b / f"{case}{ending}")
        assert a.shape == b.shape, case
        same += int(np.count_nonzero(a == b))
        total += a.size
    return same / total


def _max_probability_difference(model_dir: Path, onnx_dir: Path, image_file: Path) -> float:
    """Largest difference between the two engines' probabilities on the input grid for one case."""
    from unetkit.data.io import read_images
    from unetkit.deploy.onnx_predict import OnnxPredictor
    from unetkit.inference.predictor import Predictor

    image, geometry = read_images([image_file])
    _, reference = Predictor.from_model_dir(model_dir, device="cpu", progress=False).predict_array(image, geometry)
    _, probabilities = OnnxPredictor(onnx_dir, threads=1).predict_array(image, geometry)
    return float(np.abs(reference - probabilities).max())


def _predict_both(model_dir: Path, inputs: list[str], tmp_path: Path, extra: list[str]) -> dict[str, float]:
    """Export to ONNX and predict ``inputs`` with both engines; seconds per case of each."""
    onnx_dir = tmp_path / "onnx"
    assert main(["export", str(model_dir), "--onnx", str(onnx_dir)]) == 0
    timing = {}
    for engine in ("torch", "onnx"):
        start = time.perf_counter()
        assert main(["predict", "-i", *inputs, "-o", str(tmp_path / f"pred_{engine}"), "-m",
                     str(onnx_dir if engine == "onnx" else model_dir), "--engine", engine, "--device", "cpu",
                     "--threads", "1", "--quiet", *extra]) == 0
        timing[engine] = (time.perf_counter() - start) / len(inputs)
    return timing


def test_onnx_export_writes_networks_and_the_pipeline_json(trained_model, tmp_path) -> None:
    import onnx

    raw, model_dir = trained_model
    out = tmp_path / "onnx"
    assert main(["export", str(model_dir), "--onnx", str(out)]) == 0
    description = json.loads((out / "unetkit_onnx.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["fold_0.onnx", "unetkit_onnx.json"]
    plans = json.loads((model_dir.parent.parent / "plans.json").read_text())
    entry = plans["configurations"]["3d_fullres"]
    assert description["target_spacing"] == entry["spacing"]
    assert description["patch_size"] == entry["patch_size"]
    assert description["normalization"]["schemes"] == entry["normalization_schemes"]
    assert description["transpose_forward"] == plans["transpose_forward"]
    assert description["tile_step_size"] == 0.5 and description["gaussian_sigma_scale"] == 0.125
    graph = onnx.load(str(out / "fold_0.onnx")).graph
    batch_axis = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param == "batch"  # dynamic, not a fixed 1
    # A second export to the same folder is refused without --overwrite.
    assert main(["export", str(model_dir), "--onnx", str(out)]) == 2

    # The predictor refuses a network that is not the one the JSON lists.
    from unetkit.deploy.onnx_predict import OnnxModelError, OnnxPredictor

    network = out / "fold_0.onnx"
    network.write_bytes(network.read_bytes() + b"\0")
    with pytest.raises(OnnxModelError, match="fold_0.onnx.*SHA-256"):
        OnnxPredictor(out)


def test_cli_refuses_what_the_onnx_engine_cannot_do(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path)]) == 2
    assert "PACKAGE.zip or --onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "x.zip", "--onnx", str(tmp_path / "o")]) == 2
    assert main(["predict", "-i", str(tmp_path), "-o", str(tmp_path / "p"), "-m", str(tmp_path), "--engine", "onnx",
                 "--continue", "--save-probabilities"]) == 2
    assert "does not support --save-probabilities, --continue" in capsys.readouterr().err
    from unetkit.deploy.onnx_predict import OnnxModelError, OnnxPredictor

    with pytest.raises(OnnxModelError, match="unetkit_onnx.json"):
        OnnxPredictor(tmp_path)


def test_onnx_engine_agrees_with_pytorch(trained_model, tmp_path) -> None:
    raw, model_dir = trained_model
    images = raw / "imagesTr"
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))[:3]
    timing = _predict_both(model_dir, [str(images / f"{c}_0000.nii.gz") for c in cases], tmp_path, [])
    agreement = _agreement(tmp_path / "pred_torch", tmp_path / "pred_onnx", cases, ".nii.gz")
    foreground = np.mean([np.mean(read_label(tmp_path / "pred_torch" / f"{c}.nii.gz")[0] > 0) for c in cases])
    difference = _max_probability_difference(model_dir, tmp_path / "onnx", images / f"{cases[0]}_0000.nii.gz")
    print(f"\nsynthetic 3D, {len(cases)} cases: agreement {agreement:.6%} (foreground {foreground:.2%} of voxels), "
          f"largest probability difference {difference:.2e}; seconds per case torch {timing['torch']:.2f}, "
          f"onnxruntime {timing['onnx']:.2f}")
    assert agreement >= 0.9999
    assert difference < 1e-3  # float32 sums in another order; a wrong step would differ by far more


def test_the_onnx_predictor_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import unetkit.deploy.onnx_predict\n"
            "assert sys.modules['torch'] is None\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unexportable_operation_is_named(trained_model, tmp_path, monkeypatch) -> None:
    """A network with an operation the ONNX exporter has no symbolic for fails naming it and the model."""
    from unetkit.deploy import onnx_export

    class Unexportable(torch.nn.Module):
        def forward(self, x):  # torch.linalg.svd has no ONNX symbolic in the TorchScript exporter
            return torch.linalg.svd(x[:, 0, 0, :2, :2], full_matrices=False)[1].sum() + x

    original = onnx_export._export_network
    monkeypatch.setattr(onnx_export, "_export_network",
                        lambda net, c, patch, path, arch: original(Unexportable(), c, patch, path, arch))
    raw, model_dir = trained_model
    with pytest.raises(onnx_export.OnnxExportError, match="cannot be exported.*svd") as info:
        onnx_export.export_onnx(model_dir, tmp_path / "onnx")
    assert str(model_dir) in str(info.value)
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow
@pytest.mark.dataset
def test_onnx_engine_agrees_on_real_hippocampus_cases(tmp_path) -> None:
    """20 real Hippocampus cases, 3d_fullres trained for 60 iterations, both engines on 4 cases (slow: ~4 min)."""
    from conftest import shared_dataset
    from unetkit.data.importers import import_dataset
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import train

    raw = tmp_path / "Hippocampus"
    import_dataset(shared_dataset("Hippocampus"), raw, images="TrainingSet/images", masks="TrainingSet/labels",
                   labels="background=0,anterior=1,posterior=2", channel_name="MRI", num_processes=1,
                   allow_skips=True, limit=20)
    work = tmp_path / "work"
    plan_dataset(raw, work, num_processes=1)
    preprocess_dataset(raw, work, configurations=["3d_fullres"], num_processes=1, progress=False)
    result = train(work, raw, "3d_fullres", 0, {"epochs": 3, "iterations_per_epoch": 20, "val_iterations": 1,
                                                "num_workers": 0, "device": "cpu", "seed": 0}, echo=False)
    images = raw / "imagesTr"
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))[:4]
    timing = _predict_both(result.output_dir.parent, [str(images / f"{c}_0000.nii.gz") for c in cases],
                           tmp_path, [])
    agreement = _agreement(tmp_path / "pred_torch", tmp_path / "pred_onnx", cases, ".nii.gz")
    foreground = np.mean([np.mean(read_label(tmp_path / "pred_torch" / f"{c}.nii.gz")[0] > 0) for c in cases])
    difference = _max_probability_difference(result.output_dir.parent, tmp_path / "onnx",
                                             images / f"{cases[0]}_0000.nii.gz")
    print(f"\nHippocampus, {len(cases)} cases: agreement {agreement:.6%} (foreground {foreground:.2%} of voxels), "
          f"largest probability difference {difference:.2e}; seconds per case torch {timing['torch']:.2f}, "
          f"onnxruntime {timing['onnx']:.2f}")
    assert agreement >= 0.9999
    assert difference < 1e-3


def test_onnx_engine_agrees_on_a_2d_picture_model(raw2d, tmp_path) -> None:
    """PNG pictures and a 2D network: the other reader/writer and network dimensionality."""
    from unetkit.planning import plan_dataset
    from unetkit.preprocessing import preprocess_dataset
    from unetkit.training.trainer import train

    work = tmp_path / "work"
    plan_dataset(raw2d, work, num_processes=1)
    preprocess_dataset(raw2d, work, configurations=["2d"], num_processes=1, progress=False)
    result = train(work, raw2d, "2d", 0, {"epochs": 1, "iterations_per_epoch": 3, "val_iterations": 1,
                                          "num_workers": 0, "device": "cpu", "batch_size": 2}, echo=False)
    images = raw2d / "imagesTr"
    cases = sorted(p.name[: -len("_0000.png")] for p in images.glob("*_0000.png"))[:3]
    _predict_both(result.output_dir.parent, [str(images / f"{c}_0000.png") for c in cases], tmp_path, [])
    assert _agreement(tmp_path / "pred_torch", tmp_path / "pred_onnx", cases, ".png") >= 0.9999
    difference = _max_probability_difference(result.output_dir.parent, tmp_path / "onnx",
                                             images / f"{cases[0]}_0000.png")
    assert difference < 1e-3
