"""Preprocess: modality-aware intensities (MedSAM's recipe by default) and 2D slices along a chosen axis.

Stage output, one .npz per case: uint8 slices at native resolution -- (n, H, W), or (n, H, W, 3) for an
RGB 2D image, which keeps its colour for the encoder --, the study label slices (n, H, W) (use their shape
for the slice geometry) and the axis they were cut along. A 2D case is one slice (n = 1, axis 0). Nothing
is resampled here, so putting a prediction back is a transpose plus the original geometry: exact. The
model-frame transforms (resize, normalise, pad) are each model family's own: samstudy.families.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from samstudy.cases import load_dataset_table, read_case
from samstudy.io import atomic_path
from samstudy.paths import Layout

AXIS_ROW = {"sagittal": 0, "coronal": 1, "axial": 2}  # which physical axis (x, y, z) the slices are normal to


def slice_axis(direction: tuple[float, ...], name: str) -> int:
    """The numpy-array axis (z, y, x order) whose image axis is closest to the physical axis `name`."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)  # column j: physical direction of image axis j
    itk_axis = int(np.argmax(np.abs(d[AXIS_ROW[name], :])))
    return 2 - itk_axis


def window_ct(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """CT as MedSAM prepares it (bowang-lab/MedSAM `pre_CT_MR.py`, "nii preprocess start", CT branch):
    clip to the window, min-max of the *clipped volume* to 0..255, truncating uint8 cast."""
    lo, hi = level - width / 2.0, level + width / 2.0
    clipped = np.clip(np.asarray(image, dtype=np.float64), lo, hi)
    return _minmax_uint8(clipped)


def clip_percentiles(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """MR and other 3D modalities as MedSAM prepares them (`pre_CT_MR.py`, else branch): percentiles of
    the voxels > 0, clip, min-max of the clipped volume to 0..255, voxels that were 0 stay 0, truncating
    uint8 cast."""
    image = np.asarray(image, dtype=np.float64)
    positive = image[image > 0]
    if positive.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = np.percentile(positive, low), np.percentile(positive, high)
    scaled = _minmax_float(np.clip(image, lo, hi))
    scaled[image == 0] = 0
    return np.uint8(scaled)


def _minmax_float(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    if span == 0:  # a constant volume (the official code would divide by zero)
        return np.zeros(x.shape, dtype=np.float64)
    return (x - x.min()) / span * 255.0


def _minmax_uint8(x: np.ndarray) -> np.ndarray:
    return np.uint8(_minmax_float(x))


def window_ct_fixed(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """`preprocess.intensity: fixed`: the window itself maps to 0..255 (rounded), whatever the volume's
    range, so a grey level means the same HU in every volume."""
    lo, hi = level - width / 2.0, level + width / 2.0
    return np.round((np.clip(image, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)


def clip_percentiles_fixed(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """`preprocess.intensity: fixed`: percentiles of the voxels above the minimum, the percentile range
    maps to 0..255 (rounded)."""
    fg = image[image > image.min()]
    if fg.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = np.percentile(fg, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return np.round((np.clip(image, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)


INTENSITY_RULES = {"medsam": (window_ct, clip_percentiles), "fixed": (window_ct_fixed, clip_percentiles_fixed)}


def intensity(
    image: np.ndarray, modality: str, window: dict, percentiles: list[float], rule: str = "medsam"
) -> np.ndarray:
    """A volume (or 16-bit/float 2D image) to uint8: CT windowing or percentile clipping, by `rule`."""
    ct, other = INTENSITY_RULES[rule]
    if modality == "CT":
        return ct(image, window["level"], window["width"])
    return other(image, *percentiles)


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(volume, axis, 0))


def label_slices(path: str, axis: int) -> np.ndarray:
    """A label image on disk (a prediction, 2D or 3D) cut into slices as `preprocess_case` cuts its case."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return array[None] if array.ndim == 2 else to_slices(array, axis)


def from_slices(slices: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of to_slices."""
    return np.ascontiguousarray(np.moveaxis(slices, 0, axis))


def preprocess_params(ds: dict, settings: dict) -> dict:
    """The preprocessing parameters one dataset uses (window from the dataset entry wins). `settings` may
    lack what the dataset's modality does not use (the workflow passes only what it uses)."""
    return {
        "slice_axis": settings["slice_axis"],
        "window": ds.get("window") or settings.get("ct_window"),
        "mr_percentiles": settings.get("mr_percentiles"),
        "intensity": settings.get("intensity", "medsam"),
    }


def image_2d(
    array: np.ndarray, modality: str, window: dict, percentiles: list[float], rule: str = "medsam"
) -> np.ndarray:
    """A 2D image (H, W) or (H, W, 3) -> uint8. 8-bit images (photographs, PNG/JPG exports) are display-
    ready and kept as they are, colour included. Others: `medsam` as MedSAM's `pre_grey_rgb.py` prepares 2D
    images (a maximum above 255: whole-image min-max to 0..255, truncating cast; else kept, cast to uint8;
    negative values, which its cast would wrap, are min-maxed too); `fixed`: the modality's rule."""
    if array.dtype == np.uint8:
        return array
    if rule == "fixed":
        return intensity(array.astype(np.float32), modality, window, percentiles, rule)
    values = np.asarray(array, dtype=np.float64)
    if values.max() > 255.0 or values.min() < 0.0:
        return _minmax_uint8(values)
    return values.astype(np.uint8)


def preprocess_case(row, info: dict, params: dict) -> dict[str, np.ndarray]:
    """One case's arrays: slices (uint8), labels (uint8 (n, H, W)) and the slice axis."""
    image, label = read_case(row, info)
    if image.GetDimension() == 2:  # a 2D image is one slice
        slices = image_2d(
            sitk.GetArrayFromImage(image),
            row["modality"],
            params["window"],
            params["mr_percentiles"],
            params["intensity"],
        )
        return {"slices": slices[None], "labels": label.astype(np.uint8)[None], "axis": np.int64(0)}
    axis = slice_axis(image.GetDirection(), params["slice_axis"])
    array = sitk.GetArrayFromImage(image)
    volume = intensity(array, row["modality"], params["window"], params["mr_percentiles"], params["intensity"])
    slices = to_slices(volume, axis)
    return {"slices": slices, "labels": to_slices(label.astype(np.uint8), axis), "axis": np.int64(axis)}


def preprocess_dataset(layout: Layout, ds: dict, settings: dict) -> None:
    """Write one .npz of uint8 slices + label slices per case of a dataset."""
    table, info = load_dataset_table(layout, ds["name"])
    params = preprocess_params(ds, settings)
    for row in tqdm(table.to_dict("records"), desc=f"preprocess {ds['name']}", unit="case"):
        arrays = preprocess_case(row, info, params)
        with atomic_path(layout.preprocessed_case(ds["name"], row["case_id"])) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)


def load_preprocessed(layout: Layout, dataset: str, case: str) -> dict[str, np.ndarray]:
    with np.load(layout.preprocessed_case(dataset, case)) as z:
        return {k: z[k] for k in z.files}
