"""Model packages: export, install and predict round trip; refusal of archives that are not packages.

The hostile archives are built here with :mod:`zipfile`, each differing from a valid package in
one way; a valid one built the same way installs (so each refusal is due to its one change).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from unetkit.cli import main
from unetkit.data.io import read_label
from unetkit.inference.package import (
    MANIFEST,
    PackageError,
    install_package,
    verify_package,
)

torch.set_num_threads(1)

MODEL = "3d_fullres__plain_unet"


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)})


def _valid_files() -> dict[str, bytes]:
    prefix = f"models/{MODEL}/fold_0"
    return {"plans.json": b'{"dataset_name": "Tiny"}', "fingerprint.json": b"{}",
            "dataset.json": b'{"labels": {"background": 0, "a": 1}}',
            f"{prefix}/checkpoint_final.safetensors": _safetensors_bytes(),
            f"{prefix}/checkpoint_final.json": b'{"format_version": 1}'}


def _manifest_for(files: dict[str, bytes]) -> dict:
    return {"format": "unetkit-model-package", "format_version": 1, "unetkit_version": "test", "dataset": "Tiny",
            "model": MODEL, "checkpoint": "checkpoint_final", "folds": ["0"],
            "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                      for name, data in files.items()}}


def _write_zip(path: Path, members: dict[str, bytes], modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (modes or {}).get(name, stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
    return path


def _package(path: Path, files: dict[str, bytes], manifest: dict | None = None,
             modes: dict[str, int] | None = None) -> Path:
    manifest = _manifest_for(files) if manifest is None else manifest
    return _write_zip(path, {MANIFEST: json.dumps(manifest).encode(), **files}, modes)


def test_a_valid_handmade_package_installs_byte_for_byte(tmp_path) -> None:
    files = _valid_files()
    installed = install_package(_package(tmp_path / "ok.zip", files), tmp_path / "work")
    assert installed.work_root == tmp_path / "work" / "Tiny"
    for name, data in files.items():
        assert (installed.work_root / name).read_bytes() == data
    # Installing the same package again reuses the folder; a different one is refused.
    assert install_package(tmp_path / "ok.zip", tmp_path / "work").work_root == installed.work_root
    other = dict(files, **{"plans.json": b'{"dataset_name": "Other"}'})
    with pytest.raises(PackageError, match="already exists"):
        install_package(_package(tmp_path / "other.zip", other), tmp_path / "work")


def _hostile(kind: str, tmp_path: Path) -> Path:
    """A package differing from a valid one in one way (``kind``)."""
    files = _valid_files()
    weights = f"models/{MODEL}/fold_0/checkpoint_final.safetensors"
    path = tmp_path / f"{kind}.zip"
    if kind == "manifest_not_json":
        return _write_zip(path, {MANIFEST: b"{not json", **files})
    if kind == "no_manifest":
        return _write_zip(path, files)
    if kind == "manifest_wrong_format":
        return _package(path, files, dict(_manifest_for(files), format="something-else"))
    if kind == "hash_mismatch":
        manifest = _manifest_for(files)
        files[weights] = files[weights][:-4] + b"\0\0\0\0"  # same size, other content
        return _package(path, files, manifest)
    if kind == "unlisted_member":
        manifest = _manifest_for(files)
        return _package(path, dict(files, **{"dataset.json.bak": b"{}"}), manifest)
    if kind in ("escape_dotdot", "escape_absolute", "escape_backslash"):
        name = {"escape_dotdot": "models/../../evil.json", "escape_absolute": "/tmp/evil.json",
                "escape_backslash": "..\\evil.json"}[kind]
        return _package(path, dict(files, **{name: b"{}"}))
    if kind == "pickle_member":
        return _package(path, dict(files, **{f"models/{MODEL}/fold_0/checkpoint_final.pth": pickle.dumps({"a": 1})}))
    if kind == "pickle_as_safetensors":
        buffer = io.BytesIO()
        torch.save({"weight": torch.zeros(2)}, buffer)  # a zip of pickles, under the weights' name
        return _package(path, dict(files, **{weights: buffer.getvalue()}))
    if kind == "raw_pickle_as_safetensors":
        return _package(path, dict(files, **{weights: pickle.dumps({"weight": [0.0, 1.0]})}))
    if kind == "symlink":
        target = b"/etc/passwd"
        name = f"models/{MODEL}/postprocessing.json"
        return _package(path, dict(files, **{name: target}), modes={name: stat.S_IFLNK | 0o777})
    if kind == "missing_member":
        manifest = _manifest_for(files)
        del files["fingerprint.json"]
        return _package(path, files, manifest)
    if kind == "outside_layout":
        return _package(path, dict(files, **{"run_me.sh": b"#!/bin/sh\n"}))
    if kind == "unsafe_dataset_name":
        return _package(path, files, dict(_manifest_for(files), dataset="../elsewhere"))
    if kind == "size_mismatch":
        manifest = _manifest_for(files)
        manifest["files"]["plans.json"]["size"] += 1
        return _package(path, files, manifest)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, message", [
    ("manifest_not_json", "not valid JSON"),
    ("no_manifest", "no unetkit_package.json"),
    ("manifest_wrong_format", "does not describe"),
    ("hash_mismatch", "does not match its SHA-256"),
    ("unlisted_member", "unlisted members"),
    ("escape_dotdot", "escape the install folder"),
    ("escape_absolute", "escape the install folder"),
    ("escape_backslash", "escape the install folder"),
    ("pickle_member", "pickle"),
    ("pickle_as_safetensors", "pickle"),
    ("raw_pickle_as_safetensors", "pickle"),
    ("symlink", "symbolic link"),
    ("missing_member", "missing members \\['fingerprint.json'\\]"),
    ("outside_layout", "not a file a model package holds"),
    ("unsafe_dataset_name", "dataset '../elsewhere'"),
    ("size_mismatch", "the manifest lists"),
])
def test_hostile_archives_are_refused_before_anything_is_written(kind, message, tmp_path) -> None:
    package = _hostile(kind, tmp_path)
    work = tmp_path / "work"
    with pytest.raises(PackageError, match=message) as error:
        install_package(package, work)
    assert package.name in str(error.value)  # the message names the archive
    assert not work.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [package.name]  # nothing beside it either
    # The command says so in one line and a failing exit status.
    assert main(["install", str(package), "--workdir", str(work)]) == 1
    assert not work.exists()


def test_not_a_zip_is_refused(tmp_path) -> None:
    fake = tmp_path / "model.zip"
    fake.write_bytes(b"this is not an archive")
    with pytest.raises(PackageError, match="not a zip archive"):
        verify_package(fake)


# ----------------------------------------------------------------------------- round trip

def test_export_install_predict_gives_the_label_maps_of_the_original_model(trained_model, tmp_path) -> None:
    raw, model_dir = trained_model
    package = tmp_path / "shared" / "model.zip"
    assert main(["export", str(model_dir), str(package)]) == 0

    # The archive: the manifest's hashes are those of the original files, no training state.
    with zipfile.ZipFile(package) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        names = set(archive.namelist())
    assert not any(n.endswith(".pt") for n in names)
    weights = model_dir / "fold_0" / "checkpoint_final.safetensors"
    member = f"models/{model_dir.name}/fold_0/checkpoint_final.safetensors"
    assert manifest["files"][member]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert manifest["files"]["dataset.json"]["sha256"] == hashlib.sha256(
        (raw / "dataset.json").read_bytes()).hexdigest()

    clean = tmp_path / "clean_work"
    assert main(["install", str(package), "--workdir", str(clean)]) == 0
    installed_model = clean / raw.name / "models" / model_dir.name
    assert (installed_model / "fold_0" / "checkpoint_final.safetensors").read_bytes() == weights.read_bytes()

    images = raw / "imagesTr"
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))[:2]
    inputs = [str(images / f"{c}_0000.nii.gz") for c in cases]
    outputs = {}
    for label, model in (("original", model_dir), ("installed", installed_model), ("package", package)):
        outputs[label] = tmp_path / f"pred_{label}"
        assert main(["predict", "-i", *inputs, "-o", str(outputs[label]), "-m", str(model), "--device", "cpu",
                     "--no-mirror", "--quiet"]) == 0
    for case in cases:
        reference, _ = read_label(outputs["original"] / f"{case}.nii.gz")
        for label in ("installed", "package"):
            labels, _ = read_label(outputs[label] / f"{case}.nii.gz")
            assert np.array_equal(labels, reference), (label, case)
    # predict -m package.zip left nothing behind beside the package.
    assert sorted(p.name for p in package.parent.iterdir()) == ["model.zip"]


def test_a_best_checkpoint_package_predicts_with_best_by_default(trained_model, tmp_path) -> None:
    raw, model_dir = trained_model
    package = tmp_path / "best.zip"
    assert main(["export", str(model_dir), str(package), "--checkpoint", "best", "-f", "0"]) == 0
    with zipfile.ZipFile(package) as archive:
        manifest = json.loads(archive.read(MANIFEST))
    assert manifest["checkpoint"] == "checkpoint_best" and manifest["folds"] == ["0"]
    assert all("checkpoint_final" not in name for name in manifest["files"])
    image = str(min((raw / "imagesTr").glob("*_0000.nii.gz")))
    case = Path(image).name[: -len("_0000.nii.gz")]
    common = ["-i", image, "--device", "cpu", "--no-mirror", "--quiet"]
    assert main(["predict", *common, "-o", str(tmp_path / "a"), "-m", str(model_dir), "--checkpoint", "best"]) == 0
    assert main(["predict", *common, "-o", str(tmp_path / "b"), "-m", str(package)]) == 0
    a, _ = read_label(tmp_path / "a" / f"{case}.nii.gz")
    b, _ = read_label(tmp_path / "b" / f"{case}.nii.gz")
    assert np.array_equal(a, b)
    # A package holds only what it was asked for: asking it for the final checkpoint names the miss.
    assert main(["predict", *common, "-o", str(tmp_path / "c"), "-m", str(package), "--checkpoint", "final"]) == 1


def test_export_refuses_a_folder_that_is_not_a_trained_configuration(tmp_path) -> None:
    from unetkit.inference.package import export_package

    with pytest.raises(PackageError, match="trained configuration folder"):
        export_package(tmp_path, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_predict_names_a_missing_package(tmp_path, capsys) -> None:
    image = tmp_path / "case_0000.nii.gz"
    assert main(["predict", "-i", str(image), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "gone.zip")]) == 1
    assert "gone.zip: no such package file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
