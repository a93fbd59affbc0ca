"""Preprocess: modality-aware intensities, 2D slices along a chosen axis, and the model-frame transforms.

Stage output, one .npz per case: uint8 slices at native resolution -- (n, H, W), or (n, H, W, 3) for an
RGB 2D image, which keeps its colour for the encoder --, the study label slices (n, H, W) (use their shape
for the slice geometry) and the axis they were cut along. A 2D case is one slice (n = 1, axis 0). Nothing
is resampled here, so putting a prediction back is a transpose plus the original geometry: exact. The
model-frame transform (resize the longest side, normalise, pad bottom/right) and its inverse live here too,
so embed, infer and train share them.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from tqdm import tqdm

from samstudy.ingest import load_dataset_table, read_case
from samstudy.io import atomic_path
from samstudy.models import InputSpec
from samstudy.paths import Layout

AXIS_ROW = {"sagittal": 0, "coronal": 1, "axial": 2}  # which physical axis (x, y, z) the slices are normal to


def slice_axis(direction: tuple[float, ...], name: str) -> int:
    """The numpy-array axis (z, y, x order) whose image axis is closest to the physical axis `name`."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)  # column j: physical direction of image axis j
    itk_axis = int(np.argmax(np.abs(d[AXIS_ROW[name], :])))
    return 2 - itk_axis


def window_ct(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """CT windowing to uint8."""
    lo, hi = level - width / 2.0, level + width / 2.0
    return np.round((np.clip(image, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)


def clip_percentiles(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """MR/other: clip to foreground percentiles (MedSAM recipe), scale to uint8."""
    fg = image[image > image.min()]
    if fg.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = np.percentile(fg, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return np.round((np.clip(image, lo, hi) - lo) / (hi - lo) * 255.0).astype(np.uint8)


def intensity(image: np.ndarray, modality: str, window: dict, percentiles: list[float]) -> np.ndarray:
    if modality == "CT":
        return window_ct(image, window["level"], window["width"])
    return clip_percentiles(image, *percentiles)


def to_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(volume, axis, 0))


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
    }


def image_2d(array: np.ndarray, modality: str, window: dict, percentiles: list[float]) -> np.ndarray:
    """A 2D image (H, W) or (H, W, 3) -> uint8. 8-bit images (photographs, PNG/JPG exports) are display-
    ready and kept as they are, colour included; others (16-bit, float) get the modality's rule."""
    if array.dtype == np.uint8:
        return array
    return intensity(array.astype(np.float32), modality, window, percentiles)


def preprocess_case(row, info: dict, params: dict) -> dict[str, np.ndarray]:
    """One case's arrays: slices (uint8), labels (uint8 (n, H, W)) and the slice axis."""
    image, label = read_case(row, info)
    if image.GetDimension() == 2:  # a 2D image is one slice
        slices = image_2d(sitk.GetArrayFromImage(image), row["modality"], params["window"], params["mr_percentiles"])
        return {"slices": slices[None], "labels": label.astype(np.uint8)[None], "axis": np.int64(0)}
    axis = slice_axis(image.GetDirection(), params["slice_axis"])
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    slices = to_slices(intensity(array, row["modality"], params["window"], params["mr_percentiles"]), axis)
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


# ---------------------------------------------------------------- model frame


def resized_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """Shape after resizing the longest side to `size` (segment_anything's ResizeLongestSide rule)."""
    scale = size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_model_input(slices: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """uint8 (n, H, W) grey or (n, H, W, 3) RGB -> float (n, 3, S, S): resize longest side, normalise, pad
    bottom/right with 0. Grey slices are repeated over the three channels (after resizing: cheaper)."""
    x = torch.from_numpy(np.ascontiguousarray(slices)).float()
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
    nh, nw = resized_shape(x.shape[-2], x.shape[-1], spec.size)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if spec.pixel_mean == (0.0, 0.0, 0.0):
        # MedSAM / LiteMedSAM: per-image min-max to [0, 1]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    else:
        mean = torch.tensor(spec.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(spec.pixel_std).view(1, 3, 1, 1)
        x = (x - mean) / std
    return F.pad(x, (0, spec.size - nw, 0, spec.size - nh))


def box_to_model(boxes: np.ndarray, hw: tuple[int, int], spec: InputSpec) -> np.ndarray:
    """XYXY boxes in native slice pixels -> the model input frame."""
    nh, nw = resized_shape(hw[0], hw[1], spec.size)
    return np.asarray(boxes, dtype=np.float32) * np.array(
        [nw / hw[1], nh / hw[0], nw / hw[1], nh / hw[0]], dtype=np.float32
    )


def mask_to_model(mask: np.ndarray, out_size: int, spec: InputSpec) -> np.ndarray:
    """Binary mask (H, W) -> the decoder's low-res frame (out_size square): resize, pad, rescale."""
    nh, nw = resized_shape(mask.shape[0], mask.shape[1], spec.size)
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = F.interpolate(m, size=(nh, nw), mode="nearest")
    m = F.pad(m, (0, spec.size - nw, 0, spec.size - nh))
    if out_size != spec.size:
        m = F.interpolate(m, size=(out_size, out_size), mode="nearest")
    return m[0, 0].numpy()


def logits_to_native(low_res: torch.Tensor, hw: tuple[int, int], spec: InputSpec) -> torch.Tensor:
    """Decoder logits (N, 1, L, L) -> (N, H, W) logits in the native slice: upsample, crop pad, resize."""
    x = low_res
    if x.shape[-1] != spec.size:
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False)
    nh, nw = resized_shape(hw[0], hw[1], spec.size)
    x = x[..., :nh, :nw]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)[:, 0]
