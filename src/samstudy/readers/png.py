"""`format: png`: 2D image/mask files (PNG, JPG, TIFF, BMP; grey or RGB images; 0/255, index or palette
masks), matched by patterns (default `images/{case}.png`, `masks/{case}.png`), read with Pillow. The
files carry no spacing: the entry's `spacing` (x, y) in mm, 1 by default; `mask_threshold` binarises masks
saved as colour JPEG. The raster functions here also read nnU-Net's 2D datasets and the png2d phantom.

Pillow, NumPy and SimpleITK are imported inside the reading functions: the listing stays light (the
Snakefile calls it when it builds the DAG).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from samstudy.readers.base import CaseError
from samstudy.readers.patterns import PatternReader

if TYPE_CHECKING:
    import numpy as np
    import SimpleITK as sitk


class PngReader(PatternReader):
    """Pattern-matched 2D raster image/mask files."""

    name = "png"
    keys = (*PatternReader.keys, "spacing", "mask_threshold")
    default_patterns = ("images/{case}.png", "masks/{case}.png")
    ndim = 2

    def takes_raster_options(self, ds: dict[str, Any]) -> bool:
        """PNG files carry no spacing: the entry may give it, and a mask threshold."""
        return True

    def is_2d(self, ds: dict[str, Any]) -> bool:
        """Always 2D."""
        return True


def _open_raster(path: str, what: str):
    """A Pillow image, fully decoded (a truncated file fails here, not later)."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            raise CaseError(path, f"{what} file has {frames} frames/pages; expected one 2D image")
        im.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CaseError(path, f"{what} file is unreadable or truncated ({err})") from err
    return im


def raster_pixels(path: str) -> np.ndarray:
    """A 2D image's pixels: (H, W) grey or (H, W, 3) RGB. Alpha is dropped; palette, CMYK, ... become RGB;
    an RGB image whose three channels are equal is grey."""
    import numpy as np

    im = _open_raster(path, "image")
    if im.mode in ("1", "LA", "La"):
        im = im.convert("L")
    elif im.mode not in ("L", "RGB", "I", "F") and not im.mode.startswith("I;16"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.ndim == 3 and (arr == arr[..., :1]).all():
        arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def raster_mask(path: str, threshold: float | None = None) -> np.ndarray:
    """A 2D mask's label values (H, W): grey and index masks as stored, palette masks as their indices,
    RGB masks only when their channels are equal (or binarised with `threshold`, e.g. JPEG masks)."""
    import numpy as np

    im = _open_raster(path, "label")
    if im.mode in ("LA", "PA"):
        arr = np.asarray(im)[..., 0]
    elif im.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB"))
        if (rgb == rgb[..., :1]).all():
            arr = rgb[..., 0]
        elif threshold is not None:
            arr = np.asarray(im.convert("L"))
        else:
            raise CaseError(
                path,
                "colour mask (its RGB channels differ): give masks as grey, index or palette images, "
                "or set mask_threshold for binary masks saved as colour JPEG",
            )
    else:  # "1", "L", "P" (palette indices), "I;16", "I", "F"
        arr = np.asarray(im)
    if threshold is not None:
        arr = (arr >= threshold).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def raster_image(path: str, spacing=None) -> sitk.Image:
    """A 2D raster image as a SimpleITK image (vector pixels for RGB), origin 0, identity direction."""
    import SimpleITK as sitk

    arr = raster_pixels(path)
    img = sitk.GetImageFromArray(arr, isVector=arr.ndim == 3)
    img.SetSpacing([float(v) for v in (spacing or (1.0, 1.0))])
    return img


def raster_label(path: str, threshold: float | None = None, spacing=None) -> sitk.Image:
    """A 2D mask file as a SimpleITK label image with the image's spacing (origin 0, identity direction)."""
    import SimpleITK as sitk

    lab = sitk.GetImageFromArray(raster_mask(path, threshold))
    lab.SetSpacing([float(v) for v in (spacing or (1.0, 1.0))])
    return lab
