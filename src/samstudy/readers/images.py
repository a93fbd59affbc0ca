"""Reading a case's files, whatever dataset holds them: a file is read by what it is, as nnU-Net picks its
image reader by file ending: a folder is a DICOM series, a raster file (PNG, JPG, ...) a 2D image, a `.dcm`
label a DICOM-SEG, anything else a file SimpleITK reads (NIfTI, NRRD, MHA, ...).

SimpleITK is imported inside the functions: importing the registry stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from samstudy.readers.base import CaseError, ReadOptions, is_raster
from samstudy.readers.dicom import dicom_seg_label, is_dicom_seg, read_dicom_series
from samstudy.readers.png import raster_image, raster_label

if TYPE_CHECKING:
    import SimpleITK as sitk


def read_image(path: str, spacing=None) -> sitk.Image:
    """Any image a dataset can hold: a file SimpleITK reads, a folder with one DICOM series, or a 2D raster
    file (PNG/JPG/TIFF/BMP; `spacing` (x, y) in mm, 1 by default, since these files carry none)."""
    if Path(path).is_dir():
        return read_dicom_series(path)
    if is_raster(path):
        return raster_image(path, spacing)
    import SimpleITK as sitk

    return sitk.ReadImage(path)


def load_image(path: str, what: str, spacing=None) -> sitk.Image:
    """`read_image`, with a missing or unreadable file as a CaseError naming it (`what`: image or label)."""
    if not Path(path).exists():
        raise CaseError(path, f"{what} file is missing")
    try:
        return read_image(path, spacing)
    except RuntimeError as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise CaseError(path, f"{what} file is unreadable or truncated ({msg})") from err


def read_label(path: str, image: sitk.Image, image_path: str, options: ReadOptions) -> sitk.Image:
    """A label file as an image: 2D masks (with the image's spacing), DICOM-SEG (on the series' grid),
    or any file SimpleITK reads."""
    if not Path(path).exists():
        raise CaseError(path, "label file is missing")
    if is_raster(path):
        return raster_label(path, options.mask_threshold, options.spacing)
    if is_dicom_seg(path):
        return dicom_seg_label(path, image, image_path)
    return load_image(path, "label")
