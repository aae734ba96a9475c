"""`unetkit import`: pairing rules, mask conversion, skip reports, atomic output, the four shared datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset
from unetkit.data.dataset import load_dataset
from unetkit.data.demo import DEMO_ORPHAN, demo_import_options, generate_demo_source
from unetkit.data.errors import DataError
from unetkit.data.importers import import_dataset, parse_label_map, parse_labels
from unetkit.data.io import read_image, read_label


def _no_check_errors(root: Path) -> None:
    """The dataset checker (when present) must find no error in an imported dataset."""
    try:
        from unetkit.data.checks import check_dataset
    except ImportError:  # written by another module; absent in a partial checkout
        return
    errors = [str(p) for p in check_dataset(root, num_processes=1) if p.severity == "error"]
    assert not errors, errors


def _labels(root: Path) -> dict[str, np.ndarray]:
    ds = load_dataset(root)
    return {c.name: read_label(c.label)[0] for c in ds.training_cases()}


def _save(array: np.ndarray, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _blob(rng: np.random.Generator, shape=(24, 20)) -> np.ndarray:
    """A 0/255 mask with one rectangle, never empty."""
    mask = np.zeros(shape, np.uint8)
    r, c = int(rng.integers(2, 10)), int(rng.integers(2, 8))
    mask[r:r + 8, c:c + 9] = 255
    return mask


def _make_2d_source(root: Path, n: int = 5, rgb: bool = False, mask_ext: str = ".png",
                    mask_suffix: str = "_mask", seed: int = 0) -> dict[str, np.ndarray]:
    """images/caseK.png with masks/caseK_mask.EXT; returns the 0/255 masks by case name."""
    rng = np.random.default_rng(seed)
    masks = {}
    for k in range(n):
        name = f"case{k}"
        shape = (24, 20, 3) if rgb else (24, 20)
        _save(rng.integers(0, 256, size=shape, dtype=np.uint8), root / "images" / f"{name}.png")
        masks[name] = _blob(rng)
        _save(masks[name], root / "masks" / f"{name}{mask_suffix}{mask_ext}",
              **({"quality": 75} if mask_ext == ".jpg" else {}))
    return masks


# ------------------------------------------------------------------------------ synthetic sources

def test_pairs_by_stem_and_reports_every_skip(tmp_path):
    src = tmp_path / "src"
    masks = _make_2d_source(src, n=4)
    _save(_blob(np.random.default_rng(1)), src / "masks" / "lonely_mask.png")          # orphan mask
    _save(np.zeros((24, 20), np.uint8), src / "images" / "nolabel.png")                  # image without mask
    (src / "images" / "notes.txt").write_text("not an image")
    report = import_dataset(src, tmp_path / "raw", num_processes=1)

    assert report.cases == sorted(masks)
    reasons = {Path(s.file).name: s.reason for s in report.skipped}
    assert "mask without image" in reasons["lonely_mask.png"]
    assert "no mask found" in reasons["nolabel.png"]
    assert "not an image file" in reasons["notes.txt"]
    spec = json.loads((tmp_path / "raw" / "dataset.json").read_text())
    record = spec["unetkit_import"]
    assert record["rules"]["mask_sources"][0]["suffix"] == "_mask"   # detected
    assert record["mask_rule"]["threshold"] == 127.0
    assert record["counts"] == {"training": 4, "test": 0, "test_labelled": 0, "skipped": 3, "left_out_by_limit": 0}
    assert {s["file"].rsplit("/", 1)[-1] for s in record["skipped"]} == set(reasons)
    assert spec["labels"] == {"background": 0, "foreground": 1} and spec["numTraining"] == 4
    for name, label in _labels(tmp_path / "raw").items():
        np.testing.assert_array_equal(label, masks[name] > 127)
    assert any("mask without image" in line for line in report.lines())
    _no_check_errors(tmp_path / "raw")


def test_rgb_images_stay_one_three_channel_file(tmp_path):
    _make_2d_source(tmp_path / "src", n=3, rgb=True)
    import_dataset(tmp_path / "src", tmp_path / "raw", labels="background=0,thing=1", num_processes=1)
    ds = load_dataset(tmp_path / "raw")
    assert ds.channel_names == {0: "R", 1: "G", 2: "B"}
    case = ds.training_cases()[0]
    assert len(case.images) == 1 and case.images[0].name.endswith("_0000.png")
    assert read_image(case.images[0])[0].shape == (3, 24, 20)
    _no_check_errors(tmp_path / "raw")


def test_lossy_jpeg_masks_are_thresholded(tmp_path):
    masks = _make_2d_source(tmp_path / "src", n=3, mask_ext=".jpg", mask_suffix="_segmentation")
    report = import_dataset(tmp_path / "src", tmp_path / "raw", num_processes=1)
    assert len(report.cases) == 3
    assert "> 127" in report.dataset_json["unetkit_import"]["mask_rule"]["description"]
    for name, label in _labels(tmp_path / "raw").items():
        assert set(np.unique(label)) <= {0, 1}
        assert np.mean(label == (masks[name] > 127)) > 0.98  # JPEG blurs only the edges


def test_invert_threshold_and_label_map(tmp_path):
    masks = _make_2d_source(tmp_path / "src", n=2)
    import_dataset(tmp_path / "src", tmp_path / "inv", invert_mask=True, num_processes=1)
    for name, label in _labels(tmp_path / "inv").items():
        np.testing.assert_array_equal(label, masks[name] <= 127)
    import_dataset(tmp_path / "src", tmp_path / "mapped", label_map="255:2", labels="background=0,x=2",
                   num_processes=1)
    for name, label in _labels(tmp_path / "mapped").items():
        np.testing.assert_array_equal(label, np.where(masks[name] == 255, 2, 0))
    assert parse_label_map("255:1, 128:2") == ((128, 2), (255, 1))
    assert parse_labels("background=0,vessel=1") == {"background": 0, "vessel": 1}
    with pytest.raises(ValueError):
        parse_labels("vessel=1")


def test_soft_mask_without_threshold_is_skipped_with_reason(tmp_path):
    src = tmp_path / "src"
    _make_2d_source(src, n=2)
    _save(np.tile(np.arange(20, dtype=np.uint8) * 10, (24, 1)), src / "masks" / "case1_mask.png")
    report = import_dataset(src, tmp_path / "raw", num_processes=1)
    assert report.cases == ["case0"]
    (skip,) = [s for s in report.skipped if s.case == "case1"]
    assert "--threshold" in skip.reason and skip.file.endswith("case1_mask.png")
    assert not list((tmp_path / "raw" / "imagesTr").glob("case1*"))  # nothing of it left behind


def test_several_masks_per_image(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(3)
    a, b = {}, {}
    for k in range(2):
        _save(rng.integers(0, 256, (24, 20), dtype=np.uint8), src / "images" / f"c{k}.png")
        a[f"c{k}"] = np.zeros((24, 20), np.uint8)
        a[f"c{k}"][2:10, 2:10] = 255
        b[f"c{k}"] = np.zeros((24, 20), np.uint8)
        b[f"c{k}"][6:16, 6:16] = 255
        _save(a[f"c{k}"], src / "masks" / f"c{k}_liver.png")
        _save(b[f"c{k}"], src / "masks" / f"c{k}_tumour.png")
    report = import_dataset(src, tmp_path / "labels", mask_suffix=["_liver", "_tumour"], combine="labels",
                            num_processes=1)
    assert report.dataset_json["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    for name, label in _labels(tmp_path / "labels").items():
        expected = np.where(b[name] > 0, 2, np.where(a[name] > 0, 1, 0))
        np.testing.assert_array_equal(label, expected)
    import_dataset(src, tmp_path / "union", mask_suffix=["_liver", "_tumour"], num_processes=1)
    for name, label in _labels(tmp_path / "union").items():
        np.testing.assert_array_equal(label, (a[name] > 0) | (b[name] > 0))
    _no_check_errors(tmp_path / "labels")


def test_overwrite_refused_and_failure_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    _make_2d_source(src, n=3)
    dest = tmp_path / "raw"
    import_dataset(src, dest, num_processes=1)
    with pytest.raises(FileExistsError):
        import_dataset(src, dest, num_processes=1)
    import_dataset(src, dest, overwrite=True, limit=2, num_processes=1)
    assert load_dataset(dest).num_training == 2
    # Mixed grey and RGB images cannot form one dataset: the import fails and writes nothing.
    _save(np.zeros((24, 20, 3), np.uint8), src / "images" / "case1.png")
    bad = tmp_path / "bad"
    with pytest.raises(DataError, match="channel counts"):
        import_dataset(src, bad, num_processes=1)
    assert not bad.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    # Undeclared label values are refused too.
    with pytest.raises(DataError, match="not declared"):
        import_dataset(tmp_path / "src", tmp_path / "bad2", labels="background=0,x=2", label_map="255:1",
                       limit=1, num_processes=1)
    assert not (tmp_path / "bad2").exists()


def test_limit_test_images_and_process_pool(tmp_path):
    src = tmp_path / "src"
    _make_2d_source(src, n=6)
    rng = np.random.default_rng(5)
    for k in range(3):
        _save(rng.integers(0, 256, (24, 20), dtype=np.uint8), src / "test" / f"t{k}_test.png")
    report = import_dataset(src, tmp_path / "raw", test_images="test", limit=4, num_processes=2)
    assert report.cases == ["case0", "case1", "case2", "case3"]
    assert report.test_cases == ["t0", "t1", "t2"]            # common "_test" token stripped
    assert report.left_out_by_limit == 2
    assert len(load_dataset(tmp_path / "raw").test_cases()) == 3


def test_test_masks_go_to_labels_ts_by_the_training_rule(tmp_path):
    src = tmp_path / "src"
    _make_2d_source(src, n=3)
    rng = np.random.default_rng(7)
    truth = {}
    for k in range(3):
        _save(rng.integers(0, 256, (24, 20), dtype=np.uint8), src / "test" / "images" / f"t{k}_test.png")
        if k < 2:  # t2 has no mask: skipped with the reason, not imported unlabelled
            truth[f"t{k}"] = _blob(rng)
            _save(truth[f"t{k}"], src / "test" / "masks" / f"t{k}_mask.png")
    _save(_blob(rng), src / "test" / "masks" / "orphan_mask.png")
    report = import_dataset(src, tmp_path / "raw", test_images="test/images", test_masks="test/masks")
    assert report.test_cases == ["t0", "t1"]
    reasons = {Path(s.file).name: s.reason for s in report.skipped}
    assert "no mask" in reasons["t2_test.png"] and "t2_mask.*" in reasons["t2_test.png"]
    assert reasons["orphan_mask.png"] == "test mask without test image"
    for case, mask in truth.items():
        label, _ = read_label(tmp_path / "raw" / "labelsTs" / f"{case}.png")
        assert np.array_equal(label, (mask > 127).astype(label.dtype))   # the training masks' threshold
    assert sorted(p.name for p in (tmp_path / "raw" / "imagesTs").iterdir()) == ["t0_0000.png", "t1_0000.png"]
    assert report.dataset_json["unetkit_import"]["counts"]["test_labelled"] == 2
    with pytest.raises(ValueError, match="test images"):
        import_dataset(src, tmp_path / "raw2", test_masks="test/masks")


def test_demo_source_imports_with_geometry(tmp_path):
    src = generate_demo_source(tmp_path / "demo_src", seed=1, num_cases=4)
    report = import_dataset(src, tmp_path / "Demo", num_processes=1, **demo_import_options())
    assert len(report.cases) == 4
    assert [Path(s.file).name for s in report.skipped] == [f"{DEMO_ORPHAN}_mask.nii.gz"]
    ds = load_dataset(tmp_path / "Demo")
    assert ds.channel_names == {0: "MRI"} and ds.foreground_labels == [1, 2]
    case = ds.training_cases()[0]
    image, geo = read_image(case.images[0])
    source_image, source_geo = read_image(src / "images" / f"{case.name}.nii.gz")
    np.testing.assert_array_equal(image, source_image)
    assert geo == source_geo and geo.spacing == (1.5, 1.0, 1.0) and geo.origin != (0.0, 0.0, 0.0)
    label, label_geo = read_label(case.label)
    assert label_geo.matches(geo) and set(np.unique(label)) <= {0, 1, 2}
    _no_check_errors(tmp_path / "Demo")


def test_cli_prints_report(tmp_path, capsys):
    from unetkit.cli import main

    src = tmp_path / "src"
    _make_2d_source(src, n=2)
    _save(_blob(np.random.default_rng(1)), src / "masks" / "lonely_mask.png")
    assert main(["import", str(src), str(tmp_path / "raw"), "--labels", "background=0,blob=1",
                 "--num-processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 training case(s)" in out and "lonely_mask.png: mask without image" in out
    assert main(["import", str(src), str(tmp_path / "raw")]) == 1
    assert "already exists" in capsys.readouterr().err


# ------------------------------------------------------------------------------ shared datasets

@pytest.mark.dataset
def test_hippocampus(tmp_path):
    src = shared_dataset("Hippocampus")
    report = import_dataset(src, tmp_path / "Hippocampus", images="TrainingSet/images",
                            masks="TrainingSet/labels", labels="background=0,anterior=1,posterior=2",
                            channel_name="MRI", num_processes=2)
    assert len(report.cases) == 260
    skipped = {Path(s.file).name: s.reason for s in report.skipped}
    assert set(skipped) == {"hippocampus_010.nii.gz", "hippocampus_281.nii.gz", "hippocampus_118.nii.gz"}
    assert "mask without image" in skipped["hippocampus_281.nii.gz"]
    assert "no mask found" in skipped["hippocampus_118.nii.gz"]
    ds = load_dataset(tmp_path / "Hippocampus")
    assert ds.num_training == 260 and len(ds.training_cases()) == 260
    _no_check_errors(tmp_path / "Hippocampus")


@pytest.mark.dataset
def test_drive(tmp_path):
    src = shared_dataset("DRIVE")
    report = import_dataset(src, tmp_path / "DRIVE", images="training/images", masks="training/1st_manual",
                            test_images="test/images", test_masks="test/1st_manual", labels="background=0,vessel=1",
                            num_processes=2)
    assert len(report.cases) == 20 and len(report.test_cases) == 20 and not report.skipped
    assert report.cases[0] == "21" and report.test_cases[0] == "01"
    assert any("training/mask/ was not read" in n for n in report.dataset_json["unetkit_import"]["notes"])
    ds = load_dataset(tmp_path / "DRIVE")
    assert ds.channel_names == {0: "R", 1: "G", 2: "B"} and len(ds.test_cases()) == 20
    label = read_label(ds.training_cases()[0].label)[0]
    assert set(np.unique(label)) == {0, 1} and 0.05 < label.mean() < 0.2   # vessels, not the FOV
    test_label = read_label(tmp_path / "DRIVE" / "labelsTs" / "01.png")[0]  # test/1st_manual/01_manual1.gif
    assert test_label.shape == (584, 565) and 0.05 < test_label.mean() < 0.2
    _no_check_errors(tmp_path / "DRIVE")


@pytest.mark.dataset
def test_isbi2012(tmp_path):
    src = shared_dataset("ISBI2012_EM")
    report = import_dataset(src, tmp_path / "ISBI2012", images="train/image", masks="train/label",
                            test_images="test/image", invert_mask=True, labels="background=0,membrane=1",
                            num_processes=2)
    assert len(report.cases) == 30 and len(report.test_cases) == 30
    ds = load_dataset(tmp_path / "ISBI2012")
    label = read_label(ds.training_cases()[0].label)[0]
    assert 0.1 < label.mean() < 0.35      # membrane (about 22 %) is the foreground
    _no_check_errors(tmp_path / "ISBI2012")


@pytest.mark.dataset
def test_kvasir_first_pairs(tmp_path):
    src = shared_dataset("Kvasir-SEG")
    report = import_dataset(src, tmp_path / "Kvasir", labels="background=0,polyp=1", limit=15, num_processes=2)
    assert len(report.cases) == 15 and report.left_out_by_limit == 985 and not report.skipped
    assert report.dataset_json["unetkit_import"]["mask_rule"]["threshold"] == 127.0
    for label in _labels(tmp_path / "Kvasir").values():
        assert set(np.unique(label)) == {0, 1}
    _no_check_errors(tmp_path / "Kvasir")


@pytest.mark.slow
@pytest.mark.dataset
def test_kvasir_full(tmp_path):
    src = shared_dataset("Kvasir-SEG")
    report = import_dataset(src, tmp_path / "Kvasir", labels="background=0,polyp=1")
    assert len(report.cases) == 1000 and not report.skipped
    assert load_dataset(tmp_path / "Kvasir").num_training == 1000
    _no_check_errors(tmp_path / "Kvasir")


def test_sixteen_bit_grey_pictures_stay_lossless(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(7)
    image = rng.integers(0, 65535, (24, 20), dtype=np.uint16)
    (src / "images").mkdir(parents=True)
    import tifffile

    tifffile.imwrite(src / "images" / "a.tif", image)
    _save(_blob(rng), src / "masks" / "a_gt.png")
    import_dataset(src, tmp_path / "raw", num_processes=1)
    case = load_dataset(tmp_path / "raw").training_cases()[0]
    np.testing.assert_array_equal(read_image(case.images[0])[0][0], image)


def test_images_and_masks_in_one_folder(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(9)
    masks = {}
    for k in range(3):
        _save(rng.integers(0, 256, (24, 20), dtype=np.uint8), src / "all" / f"scan{k}.png")
        masks[f"scan{k}"] = _blob(rng)
        _save(masks[f"scan{k}"], src / "all" / f"scan{k}_mask.png")
    report = import_dataset(src, tmp_path / "raw", images="all", masks="all", num_processes=1)
    assert report.cases == sorted(masks) and not report.skipped
    for name, label in _labels(tmp_path / "raw").items():
        np.testing.assert_array_equal(label, masks[name] > 127)
