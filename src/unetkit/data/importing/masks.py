"""Mask files to integer labels, and the mask rule of a dataset as a whole.

Each mask is first *classified* by its values (:func:`classify_mask`):

- ``binary``: only 0 and the top value of its type (255, or 65535 for 16-bit);
- ``anti_aliased``: 0 and the top value, plus intermediate values that all lie on the edge between
  them (within :data:`EDGE_WIDTH` pixels of both a 0 and a top pixel): a binary mask drawn with
  anti-aliasing, as several colonoscopy sets ship them;
- ``lossy``: a JPEG mask (any values: compression blurs the edges);
- ``labels``: small class numbers (0..127 in a picture, any integers in a volume);
- ``unusable``: anything else (soft masks, real multi-class masks stored as 0/85/170/255 ...).

Binary, lossy and anti-aliased masks are thresholded (label 1 where value > 127, or half the
16-bit range); labels are kept. Whether anti-aliased masks are read as binary is decided for the
dataset as a whole (:func:`decide_mask_rule`): only when every other mask is binary too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from unetkit.data.errors import DataError
from unetkit.data.io import LOSSY_ENDINGS, PICTURE_ENDINGS, Geometry, file_ending, read_image

#: How far (pixels, in every direction) an intermediate value may lie from both 0 and the top
#: value for the mask to count as anti-aliased rather than multi-valued.
EDGE_WIDTH = 2
BINARY_KINDS = ("binary", "lossy", "anti_aliased", "labels01")


class MaskValueError(DataError):
    """A mask's values cannot be read as labels under the dataset's rule."""


@dataclass(frozen=True)
class MaskRule:
    """How a mask file's values become label values (picklable: sent to worker processes)."""

    threshold: float | None = None  # explicit threshold (foreground is value > threshold)
    invert: bool = False            # foreground is value <= threshold instead
    label_map: tuple[tuple[int, int], ...] | None = None  # explicit value -> label mapping
    accept_anti_aliased: bool = True  # threshold masks classified anti_aliased

    @property
    def explicit(self) -> bool:
        return self.threshold is not None or self.invert or self.label_map is not None


def parse_labels(text: str | dict | None) -> dict[str, int] | None:
    """Parse ``background=0,vessel=1`` into ``{"background": 0, "vessel": 1}`` (dicts pass through)."""
    if text is None or isinstance(text, dict):
        return None if text is None else {str(k): int(v) for k, v in text.items()}
    labels: dict[str, int] = {}
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"labels: expected NAME=VALUE pairs like background=0,vessel=1, found {item!r}")
        labels[name.strip()] = int(value)
    if 0 not in labels.values():
        raise ValueError(f"labels: background must be declared as 0, found {labels}")
    return labels


def parse_label_map(text: str | dict | Sequence | None) -> tuple[tuple[int, int], ...] | None:
    """Parse ``255:1,128:2`` (mask value -> label value) into sorted pairs."""
    if text is None:
        return None
    if isinstance(text, dict):
        items = [(int(k), int(v)) for k, v in text.items()]
    elif isinstance(text, str):
        items = []
        for item in (i.strip() for i in text.split(",")):
            src, sep, dst = item.partition(":")
            if not item:
                continue
            try:
                if not sep:
                    raise ValueError
                items.append((int(src), int(dst)))
            except ValueError:
                raise ValueError(f"label map: expected VALUE:LABEL pairs like 255:1, found {item!r}") from None
    else:
        items = [(int(a), int(b)) for a, b in text]
    return tuple(sorted(items))


def mask_to_grey(array: np.ndarray, lossy: bool, path: Path) -> tuple[np.ndarray, str | None]:
    """Reduce a ``(C, *spatial)`` mask to one channel; refuse genuinely coloured masks."""
    if array.shape[0] == 1:
        return array[0], None
    colour = array[: min(3, array.shape[0])]
    if all(np.array_equal(colour[0], colour[c]) for c in range(1, colour.shape[0])):
        return colour[0], "grey mask stored as RGB: first channel used"
    spread = colour.max(axis=0).astype(np.int64) - colour.min(axis=0).astype(np.int64)
    if lossy and float(np.mean(spread > 48)) < 0.01:
        # JPEG's chroma artefacts make the channels of a grey mask differ slightly.
        return np.rint(colour.astype(np.float32).mean(axis=0)).astype(array.dtype), \
            "lossy RGB mask: channel mean used"
    raise MaskValueError(f"mask is a coloured picture ({array.shape[0]} differing channels); colours have no class "
                         "meaning here: store the mask as a grey or palette-free integer image", path)


def default_threshold(mask: np.ndarray) -> float:
    if mask.dtype == np.uint16:
        return 32767.0
    if np.issubdtype(mask.dtype, np.floating) and mask.size and float(mask.max()) <= 1.0:
        return 0.5
    return 127.0


def _only_on_edges(mask: np.ndarray, top: int) -> bool:
    """True when every value other than 0 and ``top`` lies near both a 0 and a ``top`` pixel."""
    between = (mask != 0) & (mask != top)
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    near_top = ndimage.binary_dilation(mask == top, structure, iterations=EDGE_WIDTH)
    near_zero = ndimage.binary_dilation(mask == 0, structure, iterations=EDGE_WIDTH)
    return bool(np.all(near_top[between] & near_zero[between]))


def classify_mask(mask: np.ndarray, path: Path) -> tuple[str, np.ndarray]:
    """The kind of a grey mask (see the module doc) and its distinct values."""
    values = np.unique(mask)
    if file_ending(path) in LOSSY_ENDINGS:
        return "lossy", values
    integer = np.issubdtype(mask.dtype, np.integer) or (
        bool(np.all(np.isfinite(mask))) and np.array_equal(np.rint(mask), mask))
    top = np.iinfo(mask.dtype).max if np.issubdtype(mask.dtype, np.integer) else None
    if top in (255, 65535) and set(values.tolist()) <= {0, top}:
        return "binary", values
    limit = 127 if file_ending(path) in PICTURE_ENDINGS else 32767
    if integer and values.size and values.min() >= 0 and values.max() <= limit:
        return ("labels01" if set(values.tolist()) <= {0, 1} else "labels"), values
    if top in (255, 65535) and {0, top} <= set(values.tolist()) and _only_on_edges(mask, top):
        return "anti_aliased", values
    return "unusable", values


def _unusable_message(values: np.ndarray, mask: np.ndarray, extra: str = "") -> str:
    if not np.issubdtype(mask.dtype, np.integer) and not (
            np.all(np.isfinite(mask)) and np.array_equal(np.rint(mask), mask)):
        return "mask has non-integer values; pass a threshold to binarise it" + extra
    return (f"mask has {len(values)} distinct values in [{values.min()}, {values.max()}], neither "
            "binary (0/255) nor small class numbers; pass --threshold T to binarise it or "
            "--label-map VALUE:LABEL to map its values" + extra)


def _apply_label_map(mask: np.ndarray, mapping: dict[int, int], lossy: bool, path: Path, case: str) -> np.ndarray:
    unknown = [v.item() for v in np.unique(mask) if v.item() not in mapping and v.item() != 0]
    if unknown:
        raise MaskValueError(f"mask values {unknown[:10]} are not in the label map {mapping}"
                             + ("; lossy JPEG masks need --threshold, not a value map" if lossy else ""), path, case)
    out = np.zeros(mask.shape, dtype=np.int16)
    for src, dst in mapping.items():
        out[mask == src] = dst
    return out


def convert_mask(path: Path, rule: MaskRule, case: str) -> tuple[np.ndarray, Geometry, dict]:
    """Read one mask and turn it into integer labels; the dict says what applied (kind, threshold, note)."""
    array, geometry = read_image(path)
    lossy = file_ending(path) in LOSSY_ENDINGS
    mask, note = mask_to_grey(array, lossy, path)
    info: dict = {"note": note}
    if rule.label_map is not None:
        info["kind"] = "mapped"
        return _apply_label_map(mask, dict(rule.label_map), lossy, path, case), geometry, info
    kind, values = classify_mask(mask, path)
    info.update(kind=kind, distinct=int(values.size))
    thresholded = kind in ("binary", "lossy") or (kind == "anti_aliased" and rule.accept_anti_aliased)
    if rule.threshold is not None or thresholded or rule.invert:
        if rule.invert and not (rule.threshold is not None or thresholded):
            raise MaskValueError(f"inverting needs a binary mask, found {len(values)} values "
                                 f"{values[:8].tolist()}; pass a threshold", path, case)
        t = float(rule.threshold) if rule.threshold is not None else default_threshold(mask)
        info.update(threshold=t, applied="threshold")
        return (mask <= t if rule.invert else mask > t).astype(np.int16), geometry, info
    if kind in ("labels", "labels01"):
        info["applied"] = "kept"
        return mask.astype(np.int16), geometry, info
    extra = ("; its intermediate values lie on the edges, but the dataset's other masks are multi-class, so they "
             "are not read as anti-aliasing" if kind == "anti_aliased" else "")
    raise MaskValueError(_unusable_message(values, mask, extra), path, case)


@dataclass(frozen=True)
class MaskDecision:
    """The dataset-wide answer to: are anti-aliased masks binary masks with soft edges?"""

    accept_anti_aliased: bool
    anti_aliased: int   # masks classified anti-aliased
    reason: str


def decide_mask_rule(kinds: Sequence[str]) -> MaskDecision:
    """Decide from the kinds of every mask of the dataset (one entry per mask file).

    Anti-aliased masks are thresholded like the binary ones when the dataset is essentially
    binary: every mask is binary (0/255), 0/1, lossy JPEG or anti-aliased. A dataset that also
    holds multi-class masks keeps refusing them: there, a value between 0 and 255 may be a class.
    """
    n_soft = sum(1 for k in kinds if k == "anti_aliased")
    multi = sum(1 for k in kinds if k not in BINARY_KINDS and k != "unusable")
    if not n_soft:
        return MaskDecision(False, 0, "no anti-aliased masks")
    if multi:
        return MaskDecision(False, n_soft, f"{multi} mask(s) hold class numbers: the dataset is not binary")
    return MaskDecision(True, n_soft, "every mask is binary apart from values on its edges")
