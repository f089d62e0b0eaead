"""One image decoder for training and use: a Pillow image in any mode -> the network's 8-bit pixels.

`bofexits.data.image_folder` (training on your images) and `bofexits.deploy.predict` (classifying
files) both call `decode_pixels`, so a file gives the network the same pixels in both. It imports
only numpy and Pillow: `predict` on an export folder runs without torch.

The choices, made here once (`tests/test_pixels.py` runs every mode Pillow opens through both):

- **EXIF orientation** is applied first (photos are stored sideways with a rotate tag).
- **Alpha** (LA, PA, RGBA, a palette with a transparent entry) is composited over **black**:
  a pixel becomes ``round(colour * alpha / 255)``. The colour under a fully transparent pixel is
  undefined (editors store anything there), so dropping alpha, as Pillow's ``convert`` does,
  would feed the network that garbage; black matches the dark background of the built-in
  datasets. Premultiplied modes (La, RGBa) already hold exactly that composite.
- **Deep greys**: 16-bit samples (I;16, I;16L, I;16B, I;16N, and mode I, how Pillow opens 16-bit
  PNG and TIFF files as 32-bit integers) are scaled by 255/65535 and rounded, the same for every
  image (never stretched by one image's own range); a mode-I value outside 0..65535 is refused.
  Float pixels (mode F) are read as 0..1 and scaled by 255; values outside 0..1 or not finite are
  refused. Pillow's own ``convert("L")`` clips both at 255, which turns most images white.
- **Palettes** (P) and bilevel (1) images take their palette colours / 0 and 255.
- **CMYK, YCbCr, HSV** become RGB by Pillow's conversion (no colour profile is applied);
  **LAB** is refused: it needs a colour profile to become RGB.
- **Colour to grey** uses Pillow's ITU-R 601-2 luma (``L = 0.299 R + 0.587 G + 0.114 B``);
  grey to colour repeats the channel.
- **Size**: resized to exactly the input size with bilinear filtering (antialiased when
  shrinking), the aspect ratio not kept, so nothing is cut off. An image already at that size
  and mode is not resampled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bofexits.errors import InputError

__all__ = ["SIXTEEN_BIT", "PixelError", "decode_pixels", "to_8bit"]

#: Pillow's modes of 16-bit grey samples.
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA = frozenset({"LA", "PA", "RGBA"})
_PREMULTIPLIED = {"La": "L", "RGBa": "RGB"}
_TARGETS = ("L", "RGB")


class PixelError(InputError):
    """An image's pixels cannot be turned into the network's input (the caller names the file)."""


def to_8bit(image: Any) -> Any:
    """Any Pillow image -> an 8-bit image (mode L, RGB or another 8-bit mode Pillow converts) by
    the module's rules: deep greys scaled, alpha composited over black, premultiplied alpha dropped.

    Raises:
        PixelError: mode-I values outside 0..65535, float values outside 0..1, or LAB pixels.
    """
    from PIL import Image

    mode = image.mode
    if mode in SIXTEEN_BIT or mode == "I":
        a = np.asarray(image).astype(np.float64)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise PixelError(
                f"has 32-bit integer pixels from {a.min():.0f} to {a.max():.0f}, outside the 16-bit range "
                "0..65535 that mode I is read as; save it as an 8- or 16-bit image"
            )
        return Image.fromarray(np.rint(a * (255.0 / 65535.0)).astype(np.uint8), mode="L")
    if mode == "F":
        a = np.asarray(image).astype(np.float64)
        if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
            raise PixelError(
                "holds floating-point pixels outside 0..1 (or NaN/inf), the range float images are read as; "
                "save it as an 8- or 16-bit image"
            )
        return Image.fromarray(np.rint(a * 255.0).astype(np.uint8), mode="L")
    if mode in _PREMULTIPLIED:  # colour already multiplied by alpha: the composite over black
        bands = image.split()[: len(_PREMULTIPLIED[mode])]
        return bands[0] if len(bands) == 1 else Image.merge(_PREMULTIPLIED[mode], bands)
    if mode == "LAB":
        raise PixelError("holds LAB pixels, which need a colour profile to become RGB; save it as RGB")
    if mode in _ALPHA or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)  # (H, W, 4)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255  # round(colour * alpha / 255)
        out = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
        return out.convert("L") if mode == "LA" else out
    return image


def decode_pixels(image: Any, size: tuple[int, int], mode: str) -> np.ndarray:
    """A Pillow image -> the (H, W, C) uint8 array the network reads, by the module's rules.

    Args:
        image: any image Pillow opened (its pixels are loaded here).
        size: (height, width) of the result.
        mode: "L" (C = 1) or "RGB" (C = 3).

    Raises:
        PixelError: the image's pixels cannot be read by the rules above (the message says why;
            the caller adds the file's name).

    >>> from PIL import Image
    >>> decode_pixels(Image.new("I;16", (4, 2), 65535), (2, 4), "L")[0, 0].tolist()
    [255]
    """
    from PIL import Image, ImageOps

    if mode not in _TARGETS:
        raise PixelError(f"cannot decode to mode {mode!r}; the network reads L or RGB")
    image = to_8bit(ImageOps.exif_transpose(image))
    try:
        if image.mode != mode:
            image = image.convert(mode)
    except (ValueError, OSError) as exc:
        raise PixelError(f"cannot convert {image.mode!r} pixels to {mode!r} ({exc})") from exc
    height, width = size
    if image.size != (width, height):  # PIL sizes are (width, height)
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array
