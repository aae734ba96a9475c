"""Readers and writers keep geometry and values; broken files give errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from unetkit.data.errors import DataError
from unetkit.data.io import Geometry, file_ending, read_image, read_images, read_label, strip_ending, write_image, \
    write_label

OBLIQUE = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # a 90-degree in-plane rotation


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_medical_round_trip_keeps_geometry(tmp_path, ending):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 7, 9, 11)).astype(np.float32)
    geo = Geometry(spacing=(2.5, 0.7, 0.8), origin=(-12.0, 3.5, 40.0), direction=OBLIQUE)
    path = tmp_path / f"img{ending}"
    write_image(image, path, geo)
    back, geo_back = read_image(path)
    np.testing.assert_array_equal(back, image)
    assert geo_back.matches(geo, rtol=1e-6, atol=1e-6)
    # Independent reference: SimpleITK reports spacing in (x, y, z), ours is numpy order (z, y, x).
    ref = sitk.ReadImage(str(path))
    assert ref.GetSpacing() == pytest.approx((0.8, 0.7, 2.5))
    assert ref.GetOrigin() == pytest.approx((-12.0, 3.5, 40.0))
    assert ref.GetSize() == (11, 9, 7)


def test_nifti_affine_matches_nibabel(tmp_path):
    """Our NIfTI geometry agrees with nibabel's affine (an independent reader)."""
    import nibabel as nib

    geo = Geometry(spacing=(3.0, 1.5, 0.5), origin=(10.0, -20.0, 5.0), direction=OBLIQUE)
    path = tmp_path / "a.nii.gz"
    write_image(np.zeros((1, 4, 5, 6), np.float32), path, geo)
    affine = nib.load(str(path)).affine
    # nibabel is RAS, ITK is LPS: x and y flip sign.
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    direction = np.array(OBLIQUE).reshape(3, 3)
    expected = lps_to_ras @ direction @ np.diag([0.5, 1.5, 3.0])
    np.testing.assert_allclose(affine[:3, :3], expected, atol=1e-5)
    np.testing.assert_allclose(affine[:3, 3], lps_to_ras @ np.array([10.0, -20.0, 5.0]), atol=1e-5)


@pytest.mark.parametrize("ending", [".png", ".bmp", ".tif", ".gif"])
def test_picture_round_trip(tmp_path, ending):
    label = np.zeros((13, 17), np.uint8)
    label[3:8, 4:11] = 2
    path = tmp_path / f"lab{ending}"
    write_label(label, path, Geometry(spacing=(1.0, 1.0)))
    back, geo = read_label(path)
    np.testing.assert_array_equal(back, label)
    assert back.dtype == np.int16 and geo.spacing == (1.0, 1.0)


def test_rgb_picture_is_three_channels(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, size=(3, 10, 12), dtype=np.uint8)
    write_image(rgb, tmp_path / "rgb.png", Geometry(spacing=(1.0, 1.0)))
    back, _ = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(back, rgb)


def test_multichannel_case_stacks_and_checks_shape(tmp_path):
    geo = Geometry(spacing=(1.0, 1.0, 1.0))
    write_image(np.ones((1, 4, 4, 4), np.float32), tmp_path / "a_0000.nii.gz", geo)
    write_image(np.zeros((1, 4, 4, 4), np.uint8), tmp_path / "a_0001.nii.gz", geo)
    write_image(np.zeros((1, 4, 4, 5), np.uint8), tmp_path / "a_0002.nii.gz", geo)
    stacked, _ = read_images([tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"], case="a")
    assert stacked.shape == (2, 4, 4, 4) and stacked.dtype == np.float32
    with pytest.raises(DataError) as info:
        read_images([tmp_path / "a_0000.nii.gz", tmp_path / "a_0002.nii.gz"], case="a")
    assert "a_0002.nii.gz" in str(info.value) and "'a'" in str(info.value)


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    write_image(np.ones((1, 8, 8, 8), np.float32), path, Geometry(spacing=(1.0, 1.0, 1.0)))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError) as info:
        read_image(path)
    assert "broken.nii.gz" in str(info.value)
    png = tmp_path / "broken.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match="broken.png"):
        read_image(png)


def test_coloured_label_is_refused(tmp_path):
    rgb = np.zeros((3, 5, 5), np.uint8)
    rgb[0, 1, 1] = 255
    write_image(rgb, tmp_path / "lab.png", Geometry(spacing=(1.0, 1.0)))
    with pytest.raises(DataError, match="lab.png"):
        read_label(tmp_path / "lab.png", case="c")


def test_no_temporary_file_left_when_a_write_fails(tmp_path):
    with pytest.raises(DataError):
        write_image(np.zeros((1, 4, 4), np.uint8), tmp_path / "x.jpg", Geometry(spacing=(1.0, 1.0)))
    assert list(tmp_path.iterdir()) == []


def test_endings():
    assert file_ending("a/b/Case_0000.nii.gz") == ".nii.gz"
    assert file_ending("x.PNG") == ".png"
    assert strip_ending("case_0001.nii.gz") == "case_0001"
    assert file_ending("notes.txt") == ""


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_half_truncated_nifti_is_refused(tmp_path, ending):
    """SimpleITK alone would zero-fill the missing half and read it as a valid volume."""
    path = tmp_path / f"half{ending}"
    data = np.random.default_rng(0).normal(size=(1, 20, 20, 20)).astype(np.float32)
    write_image(data, path, Geometry(spacing=(1.0, 1.0, 1.0)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated") as info:
        read_image(path)
    assert f"half{ending}" in str(info.value)
