"""Intensity normalization per channel, by the scheme the plan chose for it.

Schemes (``plans["configurations"][CONFIG]["normalization_schemes"]``, one per channel):

``CT``
    Clip to the dataset's foreground 0.5 / 99.5 percentiles, then subtract the foreground mean
    and divide by the foreground standard deviation, all from the fingerprint
    (``plans["foreground_intensity_properties_per_channel"]``). CT values (Hounsfield units)
    are comparable across scans, so dataset-wide statistics keep that meaning.
``ZScore``
    Subtract this image's mean and divide by its standard deviation. With ``use_mask_for_norm``
    the statistics come from the nonzero mask only and everything outside it is set to 0 (for
    skull-stripped brains, where the zero frame would otherwise dominate the statistics).
``NoNorm``
    Cast to float32 only.
``RescaleTo01``
    Map this image's [min, max] to [0, 1].
``RGBTo01``
    Divide 8-bit colour values by 255.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SCHEMES = ("CT", "ZScore", "NoNorm", "RescaleTo01", "RGBTo01")
EPS = 1e-8  # floor for a standard deviation or range, so a constant image does not divide by 0


def normalize_channel(image: np.ndarray, scheme: str, use_mask: bool = False, mask: np.ndarray | None = None,
                      intensity: dict | None = None) -> np.ndarray:
    """Normalize one channel ``image (spatial)`` in place when it is float32; returns the result.

    Args:
        image: one channel, any numeric dtype (converted to float32).
        scheme: one of :data:`SCHEMES`.
        use_mask: for ``ZScore``, compute the statistics inside ``mask`` only and zero the rest.
        mask: boolean ``spatial`` mask (True = inside the body); required when ``use_mask``.
        intensity: the channel's foreground intensity properties (``mean``, ``std``,
            ``percentile_00_5``, ``percentile_99_5``); required for ``CT``.

    Raises:
        ValueError: unknown scheme, missing intensity properties, or RGB values outside 0..255.
    """
    image = image.astype(np.float32, copy=False)
    if scheme == "CT":
        if not intensity:
            raise ValueError("CT normalization needs the channel's foreground intensity properties in the plans")
        lo, hi = float(intensity["percentile_00_5"]), float(intensity["percentile_99_5"])
        np.clip(image, lo, hi, out=image)
        image -= np.float32(intensity["mean"])
        image /= np.float32(max(float(intensity["std"]), EPS))
    elif scheme == "ZScore":
        if use_mask:
            if mask is None:
                raise ValueError("ZScore with use_mask_for_norm needs the nonzero mask")
            inside = image[mask]
            if inside.size:
                mean = inside.mean(dtype=np.float64)
                std = inside.std(dtype=np.float64)
                image -= np.float32(mean)
                image /= np.float32(max(std, EPS))
            image[~mask] = 0.0
        else:
            mean = image.mean(dtype=np.float64)
            std = image.std(dtype=np.float64)
            image -= np.float32(mean)
            image /= np.float32(max(std, EPS))
    elif scheme == "NoNorm":
        pass
    elif scheme == "RescaleTo01":
        lo = float(image.min()) if image.size else 0.0
        hi = float(image.max()) if image.size else 0.0
        image -= np.float32(lo)
        image /= np.float32(max(hi - lo, EPS))
    elif scheme == "RGBTo01":
        if image.size and (image.min() < 0 or image.max() > 255):
            raise ValueError(f"RGBTo01 expects 8-bit colour values in 0..255, found [{image.min()}, {image.max()}]")
        image /= np.float32(255.0)
    else:
        raise ValueError(f"unknown normalization scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return image


def normalize(data: np.ndarray, schemes: Sequence[str], use_mask_for_norm: Sequence[bool],
              intensity_properties: dict | None, mask: np.ndarray | None) -> np.ndarray:
    """Normalize every channel of ``data (C, *spatial)``; returns a new float32 array.

    ``intensity_properties`` maps channel index as a string (``"0"``) to that channel's
    fingerprint statistics, as in plans.json.
    """
    if len(schemes) != data.shape[0]:
        raise ValueError(f"the plans give {len(schemes)} normalization scheme(s) but the image has "
                         f"{data.shape[0]} channel(s)")
    out = np.array(data, dtype=np.float32, copy=True)  # one copy; channels are normalized in place
    props = intensity_properties or {}
    for c, scheme in enumerate(schemes):
        use_mask = bool(use_mask_for_norm[c]) if c < len(use_mask_for_norm) else False
        normalize_channel(out[c], scheme, use_mask, mask, props.get(str(c)))
    return out
