"""Read and write images and label maps, keeping their geometry.

Conventions used everywhere in unetkit:

* An image is a float or integer numpy array of shape ``(C, *spatial)``: one leading
  channel axis, then 2 or 3 spatial axes in numpy (C) order. For medical volumes read with
  SimpleITK this is ``(z, y, x)``; for 2D pictures it is ``(rows, columns)``.
* A label map has shape ``spatial`` (no channel axis) and an integer dtype.
* :class:`Geometry` holds the spacing **in the same axis order as the array** (millimetres
  for medical images, 1.0 for pictures), plus the origin and direction cosines exactly as
  ITK reports them (``x, y, z`` order), so that a written prediction lands on the input's
  physical grid.

Medical formats (NIfTI, NRRD, MHA/MHD) go through SimpleITK; pictures (PNG, JPEG, BMP, GIF,
TIFF) through Pillow and tifffile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from unetkit.data.errors import DataError
from unetkit.utils.atomic import atomic_path

MEDICAL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
PICTURE_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
SUPPORTED_ENDINGS = MEDICAL_ENDINGS + PICTURE_ENDINGS
LOSSY_ENDINGS = (".jpg", ".jpeg")


def file_ending(path: str | Path) -> str:
    """Return the known ending of ``path`` (``.nii.gz`` counts as one), lower-cased, or ''."""
    name = Path(path).name.lower()
    for ending in sorted(SUPPORTED_ENDINGS, key=len, reverse=True):
        if name.endswith(ending):
            return ending
    return ""


def strip_ending(path: str | Path) -> str:
    """File name without its known ending (``case_0000.nii.gz`` -> ``case_0000``)."""
    name = Path(path).name
    ending = file_ending(name)
    return name[: len(name) - len(ending)] if ending else Path(name).stem


@dataclass(frozen=True)
class Geometry:
    """Where an array sits in physical space.

    Attributes:
        spacing: voxel size per array axis (numpy order), in millimetres for medical images.
        origin: ITK origin (x, y, z), or ``None`` for pictures.
        direction: ITK direction cosines, row-major flattened (x, y, z), or ``None``.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing),
                "origin": None if self.origin is None else list(self.origin),
                "direction": None if self.direction is None else list(self.direction)}

    @classmethod
    def from_json(cls, obj: dict) -> "Geometry":
        return cls(spacing=tuple(float(s) for s in obj["spacing"]),
                   origin=None if obj.get("origin") is None else tuple(float(v) for v in obj["origin"]),
                   direction=None if obj.get("direction") is None else tuple(float(v) for v in obj["direction"]))

    def matches(self, other: "Geometry", rtol: float = 1e-3, atol: float = 1e-3) -> bool:
        """True when spacing, origin and direction agree within tolerance (ITK's usual slack)."""
        if len(self.spacing) != len(other.spacing):
            return False
        if not np.allclose(self.spacing, other.spacing, rtol=rtol, atol=atol):
            return False
        for a, b in ((self.origin, other.origin), (self.direction, other.direction)):
            if a is None or b is None:
                continue
            if len(a) != len(b) or not np.allclose(a, b, rtol=rtol, atol=atol):
                return False
        return True


# ----------------------------------------------------------------------------------- reading

def _nifti_truncation(path: Path) -> str | None:
    """Why a NIfTI file is shorter than its header promises, or ``None``.

    SimpleITK zero-fills the missing voxels of a truncated NIfTI file without a word, so a
    half-downloaded volume would train as if it were real. This check costs O(1): the header
    gives the expected byte count, compared with the file size (``.nii``) or with the gzip
    trailer's uncompressed size (``.nii.gz``; a truncated stream has no valid trailer).
    """
    import gzip
    import struct

    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.int64)) * \
            header.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises several types for a broken header
        return f"unreadable NIfTI header ({type(exc).__name__}: {exc})"
    if path.name.lower().endswith(".gz"):
        size = path.stat().st_size
        if size < 18:
            return "file is truncated: not a complete gzip stream"
        with open(path, "rb") as handle:
            handle.seek(-4, 2)
            isize = struct.unpack("<I", handle.read(4))[0]
        if isize != expected % 2**32:
            # A multi-member gzip could legally disagree; confirm by decompressing (rare path).
            try:
                with gzip.open(path, "rb") as handle:
                    total = 0
                    while chunk := handle.read(1 << 24):
                        total += len(chunk)
            except (EOFError, OSError):
                return "file is truncated: its compressed stream ends early"
            if total < expected:
                return f"file is truncated: it holds {total} bytes but its header promises {expected}"
        return None
    size = path.stat().st_size
    if size < expected:
        return f"file is truncated: it holds {size} bytes but its header promises {expected}"
    return None


def _read_medical(path: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    if path.name.lower().endswith((".nii", ".nii.gz")):
        reason = _nifti_truncation(path)
        if reason is not None:
            raise DataError(reason, path)

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"cannot read image ({str(exc).strip().splitlines()[-1]})", path) from exc
    array = sitk.GetArrayFromImage(img)
    ndim = img.GetDimension()
    n_comp = img.GetNumberOfComponentsPerPixel()
    if n_comp > 1:
        # Vector pixels (e.g. RGB NIfTI): SimpleITK puts components last.
        array = np.moveaxis(array, -1, 0)
    else:
        array = array[None]
    geometry = Geometry(spacing=tuple(float(s) for s in reversed(img.GetSpacing())),
                        origin=tuple(float(v) for v in img.GetOrigin()),
                        direction=tuple(float(v) for v in img.GetDirection()))
    if ndim not in (2, 3):
        raise DataError(f"expected a 2D or 3D image, found {ndim} dimensions", path)
    return array, geometry


def _read_picture(path: Path) -> tuple[np.ndarray, Geometry]:
    ending = file_ending(path)
    try:
        array = None
        if ending in (".tif", ".tiff"):
            # tifffile reads float and multi-sample TIFFs Pillow cannot; Pillow decodes LZW/JPEG
            # compression without the optional imagecodecs package. Try both.
            import tifffile

            try:
                with tifffile.TiffFile(str(path)) as tif:
                    series = tif.series[0]
                    array = series.asarray()
                    if series.axes.startswith("S") and array.ndim == 3:
                        array = np.moveaxis(array, 0, -1)  # planar (samples-first) RGB: channels last
            except Exception:
                array = None
        if array is None:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode in ("P", "PA"):
                    # Palette images (GIF masks): keep the palette's *grey level*, not the index,
                    # so that a 0/255 mask reads as 0/255 whatever its palette order.
                    im = im.convert("RGBA" if im.mode == "PA" else "RGB")
                elif im.mode in ("I;16", "I;16B", "I;16L"):
                    im = im.convert("I")
                array = np.asarray(im)
    except DataError:
        raise
    except Exception as exc:  # Pillow and tifffile raise many types for broken files
        raise DataError(f"cannot read image ({type(exc).__name__}: {exc})", path) from exc
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        if array.shape[-1] == 4:
            alpha = array[..., 3]
            if alpha.min() == alpha.max():
                array = array[..., :3]  # a constant alpha channel carries nothing
        array = np.moveaxis(array, -1, 0)
    else:
        raise DataError(f"unsupported picture layout with shape {array.shape}; expected (H, W) or (H, W, C)", path)
    array = np.ascontiguousarray(array)
    return array, Geometry(spacing=(1.0, 1.0))


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read one image file as ``(C, *spatial)`` plus its :class:`Geometry`.

    Raises:
        DataError: the file is missing, unreadable, truncated or of an unsupported type.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    ending = file_ending(path)
    if ending in MEDICAL_ENDINGS:
        return _read_medical(path)
    if ending in PICTURE_ENDINGS:
        return _read_picture(path)
    raise DataError(f"unsupported file type; supported endings are {', '.join(SUPPORTED_ENDINGS)}", path)


def read_images(paths: Sequence[str | Path], case: str | None = None) -> tuple[np.ndarray, Geometry]:
    """Read the channel files of one case and stack them to ``(C, *spatial)``.

    All channels must share spatial shape and geometry; the first file's geometry is kept.
    """
    arrays, geometry = [], None
    for path in paths:
        try:
            array, geo = read_image(path)
        except DataError as exc:
            raise DataError(exc.message, exc.path, case) from exc
        if geometry is None:
            geometry = geo
        else:
            if array.shape[1:] != arrays[0].shape[1:]:
                raise DataError(f"channel shape {array.shape[1:]} differs from the first channel's "
                                f"{arrays[0].shape[1:]} ({paths[0]})", path, case)
            if not geo.matches(geometry):
                raise DataError(f"channel geometry (spacing {geo.spacing}) differs from the first channel's "
                                f"(spacing {geometry.spacing}, {paths[0]})", path, case)
        arrays.append(array)
    if not arrays:
        raise DataError("no image files given", None, case)
    if len(arrays) == 1:
        return arrays[0], geometry
    dtype = np.result_type(*[a.dtype for a in arrays])
    return np.concatenate([a.astype(dtype, copy=False) for a in arrays], axis=0), geometry


def read_label(path: str | Path, case: str | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a label map as an integer array of shape ``spatial``.

    A picture stored as RGB whose three channels are equal (a grey mask saved in colour) is
    accepted; genuinely coloured label pictures are refused, since their colours have no
    defined class meaning.
    """
    try:
        array, geometry = read_image(path)
    except DataError as exc:
        raise DataError(exc.message, exc.path, case) from exc
    if array.shape[0] > 1:
        first = array[0]
        if all(np.array_equal(first, array[c]) for c in range(1, min(array.shape[0], 3))):
            array = array[:1]
        else:
            raise DataError(f"label map has {array.shape[0]} differing channels; a label map must be a "
                            "single-channel image of integer class values", path, case)
    label = array[0]
    if np.issubdtype(label.dtype, np.floating):
        if not np.all(np.isfinite(label)):
            raise DataError("label map contains NaN or Inf", path, case)
        rounded = np.rint(label)
        if not np.array_equal(rounded, label):
            raise DataError("label map has non-integer values; labels must be whole class numbers", path, case)
        label = rounded
    if label.size and (label.min() < -32768 or label.max() > 32767):
        raise DataError(f"label values out of range [{label.min()}, {label.max()}]", path, case)
    return label.astype(np.int16, copy=False), geometry


# ----------------------------------------------------------------------------------- writing

def _write_medical(array: np.ndarray, path: Path, geometry: Geometry, is_vector: bool) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array, isVector=is_vector)
    img.SetSpacing([float(s) for s in reversed(geometry.spacing)])
    if geometry.origin is not None and len(geometry.origin) == img.GetDimension():
        img.SetOrigin(geometry.origin)
    if geometry.direction is not None and len(geometry.direction) == img.GetDimension() ** 2:
        img.SetDirection(geometry.direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def _write_picture(array: np.ndarray, path: Path) -> None:
    ending = file_ending(path)
    with atomic_path(path) as tmp:
        if ending in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(str(tmp), array, compression="zlib")
        else:
            from PIL import Image

            if ending in LOSSY_ENDINGS:
                raise DataError("refusing to write a lossy JPEG; use PNG for labels and images", path)
            if array.dtype not in (np.uint8, np.uint16):
                if array.min() < 0 or array.max() > 65535:
                    raise DataError(f"values [{array.min()}, {array.max()}] do not fit a picture file", path)
                array = array.astype(np.uint8 if array.max() <= 255 else np.uint16)
            fmt = ending.lstrip(".").upper()
            # zlib level 1 is ~3x faster than Pillow's default 6 on photographs and ~10 % larger;
            # imports and predictions write every picture once, so speed wins.
            options = {"compress_level": 1} if fmt == "PNG" else {}
            Image.fromarray(np.ascontiguousarray(array)).save(tmp, format=fmt, **options)


def write_image(array: np.ndarray, path: str | Path, geometry: Geometry) -> None:
    """Write a ``(C, *spatial)`` image atomically.

    Medical formats take one channel per file, so ``C`` must be 1 there; pictures accept 1
    (grey) or 3/4 (RGB/RGBA) channels.
    """
    path = Path(path)
    ending = file_ending(path)
    if array.ndim < 3:
        raise ValueError(f"write_image expects (C, *spatial), got shape {array.shape}")
    if ending in MEDICAL_ENDINGS:
        if array.shape[0] != 1:
            raise ValueError(f"{path}: medical formats hold one channel per file, got {array.shape[0]}")
        _write_medical(array[0], path, geometry, is_vector=False)
    elif ending in PICTURE_ENDINGS:
        if array.ndim != 3:
            raise ValueError(f"{path}: pictures are 2D, got shape {array.shape}")
        _write_picture(array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1), path)
    else:
        raise ValueError(f"{path}: unsupported file type")


def write_label(label: np.ndarray, path: str | Path, geometry: Geometry) -> None:
    """Write a label map (shape ``spatial``) atomically, as uint8 when it fits."""
    label = np.asarray(label)
    if label.size and label.min() >= 0 and label.max() <= 255:
        label = label.astype(np.uint8)
    else:
        label = label.astype(np.int16 if file_ending(path) in MEDICAL_ENDINGS else np.uint16)
    write_image(label[None], path, geometry)
