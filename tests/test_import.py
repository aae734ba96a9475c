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
    # nolabel.png was left out without --allow-skips: the dataset is partial and the checker says so
    # (before issue 13 this import exited 0 and the checker found nothing).
    assert report.exit_status == 3
    from unetkit.data.checks import check_dataset
    assert [p.kind for p in check_dataset(tmp_path / "raw", num_processes=1) if p.severity == "error"] == [
        "partial-import"]


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
    # Mixed grey and colour images cannot form one dataset: the import fails and writes nothing.
    # (A colour picture: an all-zero RGB one has R = G = B and is imported as grey, issue 13.)
    _save(np.random.default_rng(2).integers(0, 256, (24, 20, 3), dtype=np.uint8), src / "images" / "case1.png")
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
                            channel_name="MRI", num_processes=2, allow_skips=True)  # image 118 has no label
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


# ------------------------------------------------------------------------------ public layouts (issue 13)

def _lesion(shape=(30, 28), top=4, left=5, h=10, w=9) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top:top + h, left:left + w] = 255
    return mask


def _grey_rgb(rng: np.random.Generator, shape=(30, 28)) -> np.ndarray:
    """An ultrasound picture stored as RGB: the same grey values in R, G and B."""
    grey = rng.integers(0, 256, shape, dtype=np.uint8)
    return np.stack([grey] * 3, axis=-1)


def _make_busi(root: Path, seed: int = 0) -> tuple[dict, dict, dict]:
    """BUSI's layout: CLASS/images/NAME.png, CLASS/mask/NAME_mask.png, and for a few images
    NAME_mask_1.png / NAME_mask_2.png (more lesions). Returns (grey picture, expected union label,
    number of masks) by source name."""
    rng = np.random.default_rng(seed)
    grey, union, counts = {}, {}, {}
    extras = {"benign (2)": 1, "malignant (1)": 2}    # how many numbered extra masks these images have
    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for k in range(1, n + 1):
            name = f"{cls} ({k})"
            picture = _grey_rgb(rng)
            _save(picture, root / cls / "images" / f"{name}.png")
            masks = [_lesion(top=int(rng.integers(0, 15)), left=int(rng.integers(0, 15))) if cls != "normal"
                     else np.zeros((30, 28), np.uint8)]
            masks += [_lesion(top=20, left=2 + 8 * j, h=6, w=5) for j in range(extras.get(name, 0))]
            for j, mask in enumerate(masks):
                suffix = "_mask" if j == 0 else f"_mask_{j}"
                _save(np.stack([mask] * 3, axis=-1), root / cls / "mask" / f"{name}{suffix}.png")
            grey[name], counts[name] = picture[..., 0], len(masks)
            union[name] = np.any([m > 127 for m in masks], axis=0).astype(np.uint8)
    return grey, union, counts


def test_busi_layout_classes_numbered_masks_and_grey_rgb(tmp_path, capsys):
    from unetkit.cli import main

    grey, union, counts = _make_busi(tmp_path / "BUSI")
    dest = tmp_path / "BUSI_raw"
    status = main(["import", str(tmp_path / "BUSI"), str(dest), "--images", "*/images", "--masks", "*/mask",
                   "--labels", "background=0,lesion=1", "--num-processes", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.splitlines()[0] == "7 images found, 7 imported, 0 skipped"
    assert "masks per image: 1 (5 images), 2 (1 image), 3 (1 image)" in out
    spec = json.loads((dest / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "grey"}          # R = G = B everywhere: one channel
    record = spec["unetkit_import"]
    assert record["rules"]["groups"] == ["benign", "malignant", "normal"]
    labels = _labels(dest)
    ds = load_dataset(dest)
    assert len(labels) == 7
    for source_name, expected in union.items():
        case = source_name.replace(" ", "_").replace("(", "_").replace(")", "_")   # "benign (1)" -> "benign__1_"
        np.testing.assert_array_equal(labels[case], expected)   # every mask of the image, joined
        assert record["cases"][case]["group"] == source_name.split(" ")[0]
        assert len(record["cases"][case]["masks"]) == counts[source_name]
        image = read_image(next(c for c in ds.training_cases() if c.name == case).images[0])[0]
        np.testing.assert_array_equal(image, grey[source_name][None])
    _no_check_errors(dest)
    # --color keep keeps the three channels; the default (no patterns) finds CLASS/images too.
    report = import_dataset(tmp_path / "BUSI", tmp_path / "kept", color="keep", num_processes=1)
    assert report.dataset_json["channel_names"] == {"0": "R", "1": "G", "2": "B"} and not report.partial
    assert len(report.cases) == 7


def test_numbered_extra_masks_by_default_glob_and_labels(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(4)
    a, b, c = _lesion(top=2, left=2), _lesion(top=16, left=3, h=5, w=5), _lesion(top=18, left=18, h=6, w=6)
    for k in range(3):
        _save(rng.integers(0, 256, (30, 28), dtype=np.uint8), src / "images" / f"img{k}.png")
        _save(a, src / "masks" / f"img{k}_mask.png")
    _save(b, src / "masks" / "img1_mask_1.png")
    _save(c, src / "masks" / "img1_mask_2.png")
    # Before: the extras were skipped ("does not match any mask rule") and img1 kept only its first lesion.
    report = import_dataset(src, tmp_path / "union", num_processes=1)
    assert not report.skipped and report.exit_status == 0
    np.testing.assert_array_equal(_labels(tmp_path / "union")["img1"], ((a > 0) | (b > 0) | (c > 0)).astype(np.uint8))
    np.testing.assert_array_equal(_labels(tmp_path / "union")["img0"], (a > 0).astype(np.uint8))
    assert "masks per image: 1 (2 images), 3 (1 image)" in report.lines()
    # --combine labels: the k-th mask of an image (base first, then _1, _2) is label k.
    report = import_dataset(src, tmp_path / "labels", combine="labels", num_processes=1)
    assert report.dataset_json["labels"] == {"background": 0, "mask_1": 1, "mask_2": 2, "mask_3": 3}
    expected = np.where(c > 0, 3, np.where(b > 0, 2, np.where(a > 0, 1, 0)))
    np.testing.assert_array_equal(_labels(tmp_path / "labels")["img1"], expected)
    # A glob finds the same masks.
    report = import_dataset(src, tmp_path / "glob", mask_glob="{name}_mask*.png", num_processes=1)
    assert report.cases == ["img0", "img1", "img2"] and not report.skipped
    assert report.dataset_json["unetkit_import"]["cases"]["img1"]["masks"] == [
        "masks/img1_mask.png", "masks/img1_mask_1.png", "masks/img1_mask_2.png"]


def _anti_aliased(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0/255 mask whose edge pixels (foreground next to background) get intermediate values."""
    from scipy import ndimage

    fg = mask > 0
    edge = fg & ~ndimage.binary_erosion(fg)
    out = mask.copy()
    out[edge] = rng.integers(20, 240, int(edge.sum()))
    return out


def test_cvc_layout_anti_aliased_tiff_masks(tmp_path, capsys):
    """CVC-ClinicDB: Original/N.tif (RGB) and 'Ground Truth'/N.tif, 0/255 masks of which some carry
    a few intermediate values on their edges. All are binary masks: threshold them all."""
    import tifffile
    from unetkit.cli import main

    src, rng, truth = tmp_path / "CVC-ClinicDB", np.random.default_rng(6), {}
    (src / "Original").mkdir(parents=True)
    (src / "Ground Truth").mkdir(parents=True)
    for k in range(1, 7):
        # planar RGB (samples first): tifffile's layout, not Pillow's
        tifffile.imwrite(src / "Original" / f"{k}.tif", rng.integers(0, 256, (3, 30, 28), dtype=np.uint8),
                         photometric="rgb", planarconfig="separate")
        mask = _lesion(top=int(rng.integers(2, 14)), left=int(rng.integers(2, 14)))
        stored = _anti_aliased(mask, rng) if k % 2 else mask
        tifffile.imwrite(src / "Ground Truth" / f"{k}.tif", stored)
        truth[str(k)] = (stored > 127).astype(np.uint8)
    status = main(["import", str(src), str(tmp_path / "CVC_raw"), "--images", "Original", "--masks", "Ground Truth",
                   "--num-processes", "1"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.splitlines()[0] == "6 images found, 6 imported, 0 skipped; 3 mask(s) with anti-aliased edges thresholded"
    assert "3 mask(s) had intermediate values on their edges" in out
    for name, label in _labels(tmp_path / "CVC_raw").items():
        np.testing.assert_array_equal(label, truth[name])
    spec = json.loads((tmp_path / "CVC_raw" / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert spec["unetkit_import"]["mask_rule"]["masks_anti_aliased"] == 3


def test_multi_class_masks_keep_refusing(tmp_path):
    """A 0/85/170/255 mask (classes as grey levels) is not anti-aliasing: its middle values fill regions."""
    src = tmp_path / "src"
    rng = np.random.default_rng(8)
    for k in range(3):
        _save(rng.integers(0, 256, (30, 28), dtype=np.uint8), src / "images" / f"c{k}.png")
        _save(_lesion(), src / "masks" / f"c{k}.png")
    classes = np.zeros((30, 28), np.uint8)
    classes[2:12, 2:12], classes[14:24, 2:12], classes[2:12, 14:24] = 85, 170, 255
    _save(classes, src / "masks" / "c1.png")
    report = import_dataset(src, tmp_path / "raw", num_processes=1)
    assert report.cases == ["c0", "c2"] and report.exit_status == 3
    (skip,) = report.data_skips
    assert skip.kind == "mask values" and "neither binary (0/255) nor small class numbers" in skip.reason
    assert report.summary() == "3 images found, 2 imported, 1 skipped: 1 mask values"


def test_decide_mask_rule_and_classify_by_hand():
    from unetkit.data.importing.masks import classify_mask, decide_mask_rule

    mask = np.zeros((12, 12), np.uint8)
    mask[3:9, 3:9] = 255
    mask[3, 3:9] = 128                      # on the edge: next to 0 (row 2) and to 255 (row 4)
    assert classify_mask(mask, Path("m.png"))[0] == "anti_aliased"
    blob = np.zeros((20, 20), np.uint8)
    blob[2:6, 2:6] = 255
    blob[10:18, 10:18] = 128                # a region of its own, far from any 255 pixel
    assert classify_mask(blob, Path("m.png"))[0] == "unusable"
    assert classify_mask(np.array([[0, 1], [2, 0]], np.uint8), Path("m.png"))[0] == "labels"
    assert decide_mask_rule(["binary", "anti_aliased", "lossy", "labels01"]).accept_anti_aliased
    refused = decide_mask_rule(["labels", "anti_aliased"])
    assert not refused.accept_anti_aliased and refused.anti_aliased == 1


def test_anti_aliased_masks_refused_beside_multi_class_masks(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(9)
    for k in range(3):
        _save(rng.integers(0, 256, (30, 28), dtype=np.uint8), src / "images" / f"c{k}.png")
    three = np.zeros((30, 28), np.uint8)
    three[2:10, 2:10], three[12:20, 12:20] = 1, 2
    _save(three, src / "masks" / "c0_mask.png")
    _save(three, src / "masks" / "c1_mask.png")
    _save(_anti_aliased(_lesion(), rng), src / "masks" / "c2_mask.png")
    report = import_dataset(src, tmp_path / "raw", num_processes=1)
    assert report.cases == ["c0", "c1"]
    (skip,) = report.data_skips
    assert skip.case == "c2" and "the dataset's other masks are multi-class" in skip.reason
    assert not list((tmp_path / "raw").rglob("c2*"))


def test_ubench_per_label_mask_subfolders(tmp_path):
    """U-Bench: images/NAME.png with masks/0/NAME.png, masks/1/NAME.png (one 0/255 mask per class)."""
    src, rng, expected = tmp_path / "ubench", np.random.default_rng(10), {}
    for k in range(3):
        _save(rng.integers(0, 256, (30, 28), dtype=np.uint8), src / "images" / f"s{k}.png")
        first, second = _lesion(top=2, left=2 + k), _lesion(top=8, left=10, h=12, w=12)
        _save(first, src / "masks" / "0" / f"s{k}.png")
        _save(second, src / "masks" / "1" / f"s{k}.png")
        expected[f"s{k}"] = np.where(second > 0, 2, np.where(first > 0, 1, 0))
    report = import_dataset(src, tmp_path / "raw", num_processes=1)
    assert report.dataset_json["labels"] == {"background": 0, "class_0": 1, "class_1": 2}
    assert not report.skipped and report.exit_status == 0
    for name, label in _labels(tmp_path / "raw").items():
        np.testing.assert_array_equal(label, expected[name])


def test_annotation_files_beside_images_are_listed_not_fatal(tmp_path, capsys):
    from unetkit.cli import main

    src = tmp_path / "src"
    _make_2d_source(src, n=3)
    (src / "images" / "case0.xml").write_text("<annotation/>")
    (src / "images" / "boxes.csv").write_text("name,x,y\n")
    assert main(["import", str(src), str(tmp_path / "raw"), "--num-processes", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "3 images found, 3 imported, 0 skipped; listed, not data: 2 not an image"
    assert "case0.xml: not an image file (in the images folder) (listed only)" in out


def test_skips_fail_the_import_unless_accepted_and_run_refuses(tmp_path, capsys):
    from unetkit.cli import main
    from unetkit.data.checks import check_dataset

    src = tmp_path / "src"
    _make_2d_source(src, n=4)
    (src / "masks" / "case2_mask.png").unlink()                                # image without its mask
    _save(_blob(np.random.default_rng(1)), src / "masks" / "lonely_mask.png")  # orphan: listed only
    raw = tmp_path / "raw"
    assert main(["import", str(src), str(raw), "--num-processes", "1"]) == 3
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == ("4 images found, 3 imported, 1 skipped: 1 no mask; "
                                            "listed, not data: 1 orphan mask")
    assert "--allow-skips" in captured.err
    # The partial dataset is written for inspection, but nothing downstream continues on it.
    assert main(["run", str(raw), "--workdir", str(tmp_path / "work"), "--epochs", "1"]) == 2
    assert "skipped 1 file(s)" in capsys.readouterr().err and not (tmp_path / "work").exists()
    assert any(p.kind == "partial-import" for p in check_dataset(raw, num_processes=1))
    # Accepted skips, or skips the user asked for (--limit), exit 0.
    assert main(["import", str(src), str(raw), "--overwrite", "--allow-skips", "--num-processes", "1"]) == 0
    assert not any(p.kind == "partial-import" for p in check_dataset(raw, num_processes=1))
    (src / "images" / "case2.png").unlink()
    assert main(["import", str(src), str(raw), "--overwrite", "--limit", "2", "--num-processes", "1"]) == 0
    assert "3 images found, 2 imported, 0 skipped; 1 left out by --limit" in capsys.readouterr().out


def test_grey_rgb_beside_colour_pictures_stays_rgb(tmp_path):
    src = tmp_path / "src"
    _make_2d_source(src, n=3, rgb=True)
    grey = _grey_rgb(np.random.default_rng(3), (24, 20))
    _save(grey, src / "images" / "case1.png")
    report = import_dataset(src, tmp_path / "raw", num_processes=1)
    assert report.dataset_json["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    case = next(c for c in load_dataset(tmp_path / "raw").training_cases() if c.name == "case1")
    np.testing.assert_array_equal(read_image(case.images[0])[0], np.moveaxis(grey, -1, 0))


def test_import_refuses_nested_source_and_destination(tmp_path):
    ds = tmp_path / "DS"
    _make_2d_source(ds / "original", n=2)
    (ds / "old_output.txt").write_text("an earlier import")
    before = sorted(p.relative_to(ds) for p in ds.rglob("*"))
    with pytest.raises(DataError, match="inside the destination"):
        import_dataset(ds / "original", ds, overwrite=True, num_processes=1)   # would delete its own source
    with pytest.raises(DataError, match="inside the source"):
        import_dataset(ds / "original", ds / "original" / "raw", num_processes=1)
    link = tmp_path / "link_to_ds"
    link.symlink_to(ds, target_is_directory=True)
    with pytest.raises(DataError, match="inside the destination"):
        import_dataset(ds / "original", link, overwrite=True, num_processes=1)
    assert sorted(p.relative_to(ds) for p in ds.rglob("*")) == before             # nothing written or removed


def test_several_suffixes_in_one_folder_are_not_each_others_extras(tmp_path):
    """`--mask-suffix _mask --mask-suffix _mask_1`: img_mask_1 is the second source's mask only."""
    src = tmp_path / "src"
    rng = np.random.default_rng(12)
    a, b = _lesion(top=2, left=2), _lesion(top=16, left=12, h=8, w=8)
    for k in range(2):
        _save(rng.integers(0, 256, (30, 28), dtype=np.uint8), src / "images" / f"img{k}.png")
        _save(a, src / "masks" / f"img{k}_mask.png")
        _save(b, src / "masks" / f"img{k}_mask_1.png")
    report = import_dataset(src, tmp_path / "raw", mask_suffix=["_mask", "_mask_1"], combine="labels",
                            num_processes=1)
    assert report.dataset_json["unetkit_import"]["cases"]["img0"]["masks"] == ["masks/img0_mask.png",
                                                                              "masks/img0_mask_1.png"]
    assert "masks per image: 2 (2 images)" in report.lines()
    np.testing.assert_array_equal(_labels(tmp_path / "raw")["img1"], np.where(b > 0, 2, np.where(a > 0, 1, 0)))


def test_same_name_in_two_class_folders_gets_the_class_prefix(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(13)
    for cls in ("a", "b"):
        for name in ("1", f"only_{cls}"):
            _save(rng.integers(0, 256, (30, 28), dtype=np.uint8), src / cls / "images" / f"{name}.png")
            _save(_lesion(), src / cls / "masks" / f"{name}.png")
    report = import_dataset(src, tmp_path / "raw", num_processes=1)   # */images and */masks found by themselves
    assert report.cases == ["a_1", "b_1", "only_a", "only_b"]
    assert {n: c["group"] for n, c in report.dataset_json["unetkit_import"]["cases"].items()} == {
        "a_1": "a", "b_1": "b", "only_a": "a", "only_b": "b"}
