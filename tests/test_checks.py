"""`unetkit check`: every kind of broken input is reported, naming the file and the case.

Each test corrupts one of the synthetic fixtures the way real data goes wrong and asserts the
problem's kind, its case, and that its path (or message) names the offending file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset
from unetkit.cli import main
from unetkit.data.checks import Problem, check_dataset, check_dataset_report
from unetkit.data.io import Geometry, read_image, write_image, write_label
from unetkit.data.synthetic import write_raw_dataset


# ----------------------------------------------------------------------------- helpers

def _check(root: Path) -> list[Problem]:
    # In-process reads keep each test fast; the pool has its own test below.
    return check_dataset(root, num_processes=1)


def _only(problems: list[Problem], kind: str) -> list[Problem]:
    found = [p for p in problems if p.kind == kind]
    assert found, f"no {kind!r} problem among: " + "\n".join(map(str, problems))
    return found


def _assert_names(problems: list[Problem], kind: str, filename: str, case: str | None,
                  severity: str = "error") -> Problem:
    """The problem of ``kind`` for ``filename`` exists, has the case, and its text names the file."""
    for p in _only(problems, kind):
        if filename in (p.path or "") or filename in p.message:
            assert p.severity == severity, str(p)
            assert p.case == case, str(p)
            text = str(p)
            assert filename in text and f"[{kind}]" in text
            if case is not None:
                assert repr(case) in text
            return p
    raise AssertionError(f"no {kind!r} problem names {filename}: " + "\n".join(map(str, problems)))


def _spec(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _write_spec(root: Path, spec: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(spec))


def _errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def _rewrite_label(root: Path, case: str, change) -> Path:
    path = root / "labelsTr" / f"{case}.nii.gz"
    array, geo = read_image(path)
    write_image(change(array), path, geo)
    return path


# ----------------------------------------------------------------------------- clean data

def test_clean_3d_and_2d_datasets_have_no_problems(raw3d, raw2d):
    assert _check(raw3d) == []
    assert _check(raw2d) == []


def test_rgb_picture_in_one_file_counts_as_three_channels(tmp_path):
    root = write_raw_dataset(tmp_path / "RGB", num_cases=4, ndim=2, num_classes=1, num_channels=1,
                             shape_range=(40, 48))
    for f in (root / "imagesTr").iterdir():
        grey, geo = read_image(f)
        rgb = np.concatenate([grey, grey // 2, 255 - grey], axis=0).astype(np.uint8)
        write_image(rgb, f, geo)
    spec = _spec(root)
    spec["channel_names"] = {"0": "R", "1": "G", "2": "B"}
    _write_spec(root, spec)
    assert _errors(_check(root)) == []


def test_problem_str_names_severity_kind_case_and_path():
    p = Problem("error", "orphan-label", "/d/labelsTr/x.nii.gz", "x", "label has no image")
    assert str(p) == "error [orphan-label] case 'x': /d/labelsTr/x.nii.gz: label has no image"


# ----------------------------------------------------------------------------- dataset.json

def test_malformed_dataset_json_is_the_single_problem(raw3d):
    (raw3d / "dataset.json").write_text('{"channel_names": {"0": "CT"}, "labels": ')
    (raw3d / "labelsTr" / "case_000.nii.gz").unlink()  # would be reported if checking went on
    problems = _check(raw3d)
    assert len(problems) == 1
    assert problems[0].kind == "dataset-json" and problems[0].severity == "error"
    assert "dataset.json" in str(problems[0]) and "not valid JSON" in problems[0].message


def test_missing_required_key_names_the_key(raw3d):
    spec = _spec(raw3d)
    del spec["file_ending"]
    _write_spec(raw3d, spec)
    [problem] = _check(raw3d)
    assert problem.kind == "dataset-json" and "file_ending" in problem.message
    assert problem.path.endswith("dataset.json")


def test_path_escaping_the_dataset_folder(raw3d, tmp_path):
    outside = tmp_path / "elsewhere.nii.gz"
    outside.write_bytes((raw3d / "imagesTr" / "case_001_0000.nii.gz").read_bytes())
    spec = _spec(raw3d)
    spec["dataset"] = {
        "case_000": {"images": ["imagesTr/case_000_0000.nii.gz"], "label": "labelsTr/case_000.nii.gz"},
        "case_001": {"images": ["../elsewhere.nii.gz"], "label": "labelsTr/case_001.nii.gz"},
    }
    spec["numTraining"] = 2
    _write_spec(raw3d, spec)
    problems = _check(raw3d)
    p = _assert_names(problems, "path-escape", "../elsewhere.nii.gz", "case_001")
    assert p.path.endswith("dataset.json")
    assert [q.kind for q in _errors(problems)] == ["path-escape", "num-training"]  # case_000 still checked


def test_non_consecutive_declared_labels(raw3d):
    spec = _spec(raw3d)
    spec["labels"] = {"background": 0, "class_1": 1, "class_2": 3}
    _write_spec(raw3d, spec)
    problems = _check(raw3d)
    p = _assert_names(problems, "non-consecutive-labels", "dataset.json", None)
    assert "[2]" in p.message  # the gap is named


def test_ignore_label_may_leave_a_gap(raw3d):
    spec = _spec(raw3d)
    spec["labels"] = {"background": 0, "class_1": 1, "class_2": 2, "ignore": 5}
    _write_spec(raw3d, spec)
    assert _errors(_check(raw3d)) == []


def test_num_training_disagrees_with_labelled_cases(raw3d):
    spec = _spec(raw3d)
    spec["numTraining"] = 10
    _write_spec(raw3d, spec)
    p = _assert_names(_check(raw3d), "num-training", "dataset.json", None)
    assert "10" in p.message and "8" in p.message


# ----------------------------------------------------------------------------- layout

def test_missing_labels_folder(raw3d):
    for f in (raw3d / "labelsTr").iterdir():
        f.unlink()
    (raw3d / "labelsTr").rmdir()
    _assert_names(_check(raw3d), "missing-folder", "labelsTr", None)


def test_misnamed_image_without_channel_suffix(raw3d):
    bad = raw3d / "imagesTr" / "case_003.nii.gz"
    (raw3d / "imagesTr" / "case_003_0000.nii.gz").rename(bad)
    problems = _check(raw3d)
    _assert_names(problems, "misnamed-image", "case_003.nii.gz", "case_003")
    _assert_names(problems, "orphan-label", "labelsTr/case_003.nii.gz", "case_003")


def test_file_with_another_ending(raw3d):
    src = raw3d / "imagesTr" / "case_002_0000.nii.gz"
    array, geo = read_image(src)
    src.unlink()
    write_image(array, raw3d / "imagesTr" / "case_002_0000.nrrd", geo)
    problems = _check(raw3d)
    _assert_names(problems, "wrong-ending", "case_002_0000.nrrd", "case_002")


def test_orphan_label(raw3d):
    (raw3d / "imagesTr" / "case_005_0000.nii.gz").unlink()
    _assert_names(_check(raw3d), "orphan-label", "case_005.nii.gz", "case_005")


def test_image_without_label(raw3d):
    (raw3d / "labelsTr" / "case_006.nii.gz").unlink()
    problems = _check(raw3d)
    _assert_names(problems, "missing-label", "case_006.nii.gz", "case_006")
    _only(problems, "num-training")


def test_missing_channel_file(raw3d):
    spec = _spec(raw3d)
    spec["channel_names"] = {"0": "T1", "1": "T2"}
    _write_spec(raw3d, spec)
    for f in sorted((raw3d / "imagesTr").iterdir())[1:]:
        f.with_name(f.name.replace("_0000", "_0001")).write_bytes(f.read_bytes())
    problems = _check(raw3d)
    _assert_names(problems, "missing-channel", "case_000_0001.nii.gz", "case_000")
    assert {p.case for p in _errors(problems)} == {"case_000"}


def test_channel_gap_reports_missing_and_unexpected(raw3d):
    spec = _spec(raw3d)
    spec["channel_names"] = {"0": "T1", "1": "T2"}
    _write_spec(raw3d, spec)
    for f in sorted((raw3d / "imagesTr").iterdir()):
        f.with_name(f.name.replace("_0000", "_0001")).write_bytes(f.read_bytes())
    first = raw3d / "imagesTr" / "case_004_0001.nii.gz"
    first.rename(first.with_name("case_004_0002.nii.gz"))
    problems = _check(raw3d)
    _assert_names(problems, "missing-channel", "case_004_0001.nii.gz", "case_004")
    _assert_names(problems, "unexpected-channel", "case_004_0002.nii.gz", "case_004")


def test_rgb_file_when_one_channel_is_declared(raw2d):
    f = raw2d / "imagesTr" / "case_001_0000.png"
    grey, geo = read_image(f)
    write_image(np.concatenate([grey, grey, 255 - grey]).astype(np.uint8), f, geo)
    p = _assert_names(_check(raw2d), "wrong-channel-count", "case_001_0000.png", "case_001")
    assert "3 channels" in p.message


def test_grey_case_among_rgb_cases(raw2d):
    spec = _spec(raw2d)
    spec["channel_names"] = {"0": "R", "1": "G", "2": "B"}
    _write_spec(raw2d, spec)
    for f in sorted((raw2d / "imagesTr").iterdir())[1:]:
        grey, geo = read_image(f)
        write_image(np.concatenate([grey, grey // 2, 255 - grey]).astype(np.uint8), f, geo)
    problems = _check(raw2d)
    _assert_names(problems, "missing-channel", "case_000_0000.png", "case_000")
    assert {p.case for p in _errors(problems)} == {"case_000"}


# ----------------------------------------------------------------------------- file contents

def test_truncated_nifti_is_caught(raw3d):
    f = raw3d / "imagesTr" / "case_002_0000.nii.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])  # SimpleITK would silently zero-fill this
    p = _assert_names(_check(raw3d), "truncated", "case_002_0000.nii.gz", "case_002")
    assert "truncated" in p.message


def test_unreadable_file(raw2d):
    f = raw2d / "labelsTr" / "case_004.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _assert_names(_check(raw2d), "unreadable", "case_004.png", "case_004")


def test_image_and_label_of_different_shape(raw3d):
    _rewrite_label(raw3d, "case_001", lambda a: a[:, :-2])
    p = _assert_names(_check(raw3d), "shape-mismatch", "case_001.nii.gz", "case_001")
    assert "case_001_0000.nii.gz" in p.message


def test_image_and_label_of_different_geometry(raw3d):
    path = raw3d / "labelsTr" / "case_007.nii.gz"
    array, geo = read_image(path)
    write_label(array[0], path, Geometry(geo.spacing, (geo.origin[0] + 5.0, *geo.origin[1:]), geo.direction))
    p = _assert_names(_check(raw3d), "geometry-mismatch", "case_007.nii.gz", "case_007")
    assert "origin" in p.message


def test_label_value_not_declared(raw3d):
    def add_three(a):
        a = a.copy()
        a[0, 0, 0, 0] = 3
        return a
    _rewrite_label(raw3d, "case_002", add_three)
    p = _assert_names(_check(raw3d), "undeclared-label", "case_002.nii.gz", "case_002")
    assert "[3]" in p.message


def test_mask_saved_as_0_255_gets_a_hint(raw2d):
    f = raw2d / "labelsTr" / "case_003.png"
    label, geo = read_image(f)
    write_image((label * 255).astype(np.uint8), f, geo)
    p = _assert_names(_check(raw2d), "undeclared-label", "case_003.png", "case_003")
    assert "255" in p.message and "0/255" in p.message


def test_non_integer_label_values(raw3d):
    _rewrite_label(raw3d, "case_000", lambda a: a.astype(np.float32) * 0.5)
    _assert_names(_check(raw3d), "non-integer-label", "case_000.nii.gz", "case_000")


def test_nan_in_image(raw3d):
    f = raw3d / "imagesTr" / "case_003_0000.nii.gz"
    array, geo = read_image(f)
    array[0, 1, 2, 3] = np.nan
    array[0, 2, 2, 3] = np.inf
    write_image(array, f, geo)
    p = _assert_names(_check(raw3d), "nan-inf", "case_003_0000.nii.gz", "case_003")
    assert "1 NaN and 1 Inf" in p.message


def test_all_zero_image(raw3d):
    f = raw3d / "imagesTr" / "case_004_0000.nii.gz"
    array, geo = read_image(f)
    write_image(np.zeros_like(array), f, geo)
    p = _assert_names(_check(raw3d), "empty-image", "case_004_0000.nii.gz", "case_004")
    assert "all zero" in p.message


def test_coloured_label_picture(raw2d):
    f = raw2d / "labelsTr" / "case_002.png"
    label, geo = read_image(f)
    write_image(np.concatenate([label, label * 0, label]).astype(np.uint8), f, geo)
    _assert_names(_check(raw2d), "label-channels", "case_002.png", "case_002")


def test_2d_case_among_3d_cases(raw3d):
    for folder, name in (("imagesTr", "case_005_0000.nii.gz"), ("labelsTr", "case_005.nii.gz")):
        f = raw3d / folder / name
        array, geo = read_image(f)
        write_image(array[:, 0], f, Geometry(geo.spacing[1:], geo.origin[:2], (1.0, 0.0, 0.0, 1.0)))
    p = _assert_names(_check(raw3d), "inconsistent-dimensionality", "case_005_0000.nii.gz", "case_005")
    assert "2D" in p.message and "3D" in p.message


# ----------------------------------------------------------------------------- warnings only

def test_lossy_jpeg_labels_warn(tmp_path):
    root = write_raw_dataset(tmp_path / "Jpeg", num_cases=4, ndim=2, num_classes=1, shape_range=(40, 48))
    for folder in ("imagesTr", "labelsTr"):
        for f in sorted((root / folder).iterdir()):
            with Image.open(f) as im:
                im.save(f.with_suffix(".jpg"), quality=100)
            f.unlink()
    spec = _spec(root)
    spec["file_ending"] = ".jpg"
    _write_spec(root, spec)
    _assert_names(_check(root), "lossy-label", "case_000.jpg", "case_000", severity="warning")


def test_all_background_label_warns(raw3d):
    _rewrite_label(raw3d, "case_006", np.zeros_like)
    problems = _check(raw3d)
    _assert_names(problems, "empty-label", "case_006.nii.gz", "case_006", severity="warning")
    assert _errors(problems) == []


def test_spacing_outlier_warns(raw3d):
    for folder, name in (("imagesTr", "case_002_0000.nii.gz"), ("labelsTr", "case_002.nii.gz")):
        f = raw3d / folder / name
        array, geo = read_image(f)
        write_image(array, f, Geometry((6.0 * geo.spacing[0], *geo.spacing[1:]), geo.origin, geo.direction))
    problems = _check(raw3d)
    _assert_names(problems, "spacing-outlier", "case_002_0000.nii.gz", "case_002", severity="warning")
    _assert_names(problems, "anisotropic-spacing", "case_002_0000.nii.gz", "case_002", severity="warning")
    assert _errors(problems) == []


def test_outlier_shape_warns(raw3d):
    geo = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    rng = np.random.default_rng(1)
    big = rng.normal(100, 10, size=(1, 94, 128, 128)).astype(np.float32)
    label = np.zeros(big.shape[1:], np.uint8)
    label[40:50, 60:70, 60:70] = 1
    write_image(big, raw3d / "imagesTr" / "case_001_0000.nii.gz", geo)
    write_label(label, raw3d / "labelsTr" / "case_001.nii.gz", geo)
    problems = _check(raw3d)
    p = _assert_names(problems, "outlier-shape", "case_001_0000.nii.gz", "case_001", severity="warning")
    assert "larger" in p.message
    assert _errors(problems) == []


# ----------------------------------------------------------------------------- all at once, pool, CLI

def _three_problems(root: Path) -> None:
    (root / "imagesTr" / "case_005_0000.nii.gz").unlink()                 # orphan label
    f = root / "imagesTr" / "case_004_0000.nii.gz"                        # all-zero image
    array, geo = read_image(f)
    write_image(np.zeros_like(array), f, geo)
    spec = _spec(root)                                                    # undeclared label 2
    spec["labels"] = {"background": 0, "class_1": 1}
    spec["numTraining"] = 7
    _write_spec(root, spec)


def test_every_problem_is_reported_at_once(raw3d):
    _three_problems(raw3d)
    problems = _check(raw3d)
    kinds = {p.kind for p in _errors(problems)}
    assert kinds == {"orphan-label", "empty-image", "undeclared-label"}
    assert len(_only(problems, "undeclared-label")) == 7  # every remaining case, not just the first


def test_process_pool_gives_the_same_report(raw3d):
    _three_problems(raw3d)
    assert check_dataset(raw3d, num_processes=2) == _check(raw3d)


def test_cli_exit_codes_and_json(raw3d, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["check", str(raw3d), "--num-processes", "1"]) == 0
    assert "0 errors, 0 warnings in 8 cases" in capsys.readouterr().out
    _three_problems(raw3d)
    assert main(["check", str(raw3d), "--num-processes", "1", "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "9 errors, 0 warnings in 7 cases" in printed
    assert "error [orphan-label] case 'case_005':" in printed and "undeclared-label (7)" in printed
    report = json.loads(out.read_text())
    assert report["num_errors"] == 9 and report["num_cases"] == 7
    assert {p["kind"] for p in report["problems"]} == {"orphan-label", "empty-image", "undeclared-label"}
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_cli_reports_malformed_dataset_json_with_exit_1(raw2d, capsys):
    (raw2d / "dataset.json").write_text("[1, 2")
    assert main(["check", str(raw2d)]) == 1
    assert "dataset.json" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real data

def _link_hippocampus(tmp_path: Path) -> Path:
    src = shared_dataset("Hippocampus") / "TrainingSet"
    root = tmp_path / "Hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    images = {p.name for p in (src / "images").iterdir()}
    labels = {p.name for p in (src / "labels").iterdir()}
    paired = sorted(images & labels)
    for name in paired:
        case = name[: -len(".nii.gz")]
        os.symlink(src / "images" / name, root / "imagesTr" / f"{case}_0000.nii.gz")
        os.symlink(src / "labels" / name, root / "labelsTr" / name)
    _write_spec(root, {"channel_names": {"0": "MRI"},
                       "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
                       "numTraining": len(paired), "file_ending": ".nii.gz"})
    return root


def test_hippocampus_is_clean_and_fast(tmp_path):
    root = _link_hippocampus(tmp_path)
    report = check_dataset_report(root, num_processes=2)
    assert report.num_cases == 260
    assert report.errors == [], "\n".join(map(str, report.errors))


def test_hippocampus_outlier_label_is_reported(tmp_path):
    root = _link_hippocampus(tmp_path)
    src = shared_dataset("Hippocampus") / "TrainingSet"
    os.symlink(src / "labels" / "hippocampus_281.nii.gz", root / "labelsTr" / "hippocampus_281.nii.gz")
    problems = check_dataset(root, num_processes=2)
    _assert_names(problems, "orphan-label", "hippocampus_281.nii.gz", "hippocampus_281")


def test_drive_rgb_pictures_are_clean(tmp_path):
    src = shared_dataset("DRIVE") / "training"
    root = tmp_path / "DRIVE"
    for tif in sorted((src / "images").iterdir())[:4]:
        number = tif.name.split("_")[0]
        image, geo = read_image(tif)
        write_image(image, root / "imagesTr" / f"drive_{number}_0000.png", geo)
        mask, mask_geo = read_image(src / "1st_manual" / f"{number}_manual1.gif")
        write_label((mask[0] > 127).astype(np.uint8), root / "labelsTr" / f"drive_{number}.png", mask_geo)
    _write_spec(root, {"channel_names": {"0": "R", "1": "G", "2": "B"},
                       "labels": {"background": 0, "vessel": 1}, "numTraining": 4, "file_ending": ".png"})
    assert check_dataset(root, num_processes=1) == []


def test_broken_link_is_reported(raw3d, tmp_path):
    os.symlink(tmp_path / "gone.nii.gz", raw3d / "imagesTr" / "case_009_0000.nii.gz")
    _assert_names(_check(raw3d), "unreadable", "case_009_0000.nii.gz", None)


def test_test_images_are_checked_without_needing_labels(raw3d):
    (raw3d / "imagesTs").mkdir()
    src = raw3d / "imagesTr" / "case_000_0000.nii.gz"
    array, geo = read_image(src)
    write_image(array, raw3d / "imagesTs" / "test_000_0000.nii.gz", geo)
    write_image(np.zeros_like(array), raw3d / "imagesTs" / "test_001_0000.nii.gz", geo)
    (raw3d / "imagesTs" / "test_002.nii.gz").write_bytes(src.read_bytes())
    problems = _check(raw3d)
    _assert_names(problems, "empty-image", "test_001_0000.nii.gz", "test_001")
    _assert_names(problems, "misnamed-image", "test_002.nii.gz", "test_002")
    assert {p.case for p in problems} == {"test_001", "test_002"}
