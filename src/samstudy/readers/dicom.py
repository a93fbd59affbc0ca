"""`format: dicom`: one DICOM series folder per case (`images/{case}`), labels as NIfTI/NRRD files or
DICOM-SEG (`.dcm`, read with highdicom onto the series' grid), matched by patterns. A case folder holds one
series with evenly spaced slices; anything else is rejected, naming the folder.

SimpleITK, NumPy and highdicom are imported inside the reading functions: the listing stays light (the
Snakefile calls it when it builds the DAG).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from samstudy.readers.base import CaseError
from samstudy.readers.patterns import PatternReader

if TYPE_CHECKING:
    import numpy as np
    import SimpleITK as sitk


class DicomReader(PatternReader):
    """Pattern-matched DICOM series folders and their label files."""

    name = "dicom"
    default_patterns = ("images/{case}", "labels/{case}.nii.gz")


def _dicom_positions(files: list[str]) -> np.ndarray:
    """Each file's ImagePositionPatient (0020|0032) projected on the slice normal."""
    import numpy as np
    import SimpleITK as sitk

    positions, normal = [], None
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(f)
        reader.ReadImageInformation()
        if normal is None:
            orient = [float(x) for x in reader.GetMetaData("0020|0037").split("\\")]
            normal = np.cross(orient[:3], orient[3:])
        positions.append(float(np.dot([float(x) for x in reader.GetMetaData("0020|0032").split("\\")], normal)))
    return np.sort(np.asarray(positions))


def read_dicom_series(folder: str) -> sitk.Image:
    """Read the one DICOM series in a folder; missing or unevenly spaced slices are an error."""
    import numpy as np
    import SimpleITK as sitk

    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not series:
        raise CaseError(folder, "no DICOM series found in this folder")
    if len(series) > 1:
        raise CaseError(folder, f"{len(series)} DICOM series in one case folder; expected one")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series[0])
    if len(files) >= 3:
        steps = np.diff(_dicom_positions(list(files)))
        if np.any(steps <= 1e-6) or np.ptp(steps) > 0.01 * np.median(steps):
            raise CaseError(
                folder,
                f"DICOM slices are missing or unevenly spaced (steps {np.round(np.unique(steps), 3).tolist()} mm)",
            )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def is_dicom_seg(path: str | Path) -> bool:
    """A DICOM-SEG label file (a single .dcm file beside a DICOM series)."""
    return str(path).lower().endswith(".dcm") and Path(path).is_file()


def read_dicom_seg(path: str, series_folder: str) -> np.ndarray:
    """A DICOM-SEG's segments as a label array (z, y, x) on the grid of the series it segments.

    Read with highdicom: frames are matched to the series' slices by their SOP Instance UIDs (so the
    label has the image's geometry by construction); the value of a voxel is its segment number.
    """
    import highdicom as hd
    import numpy as np
    import SimpleITK as sitk

    try:
        seg = hd.seg.segread(path)
    except Exception as err:  # pydicom/highdicom raise many types for a bad file
        raise CaseError(path, f"label file is not a readable DICOM-SEG ({type(err).__name__}: {err})") from err
    if not Path(series_folder).is_dir():
        raise CaseError(path, "a DICOM-SEG label needs its image as a DICOM series folder")
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(series_folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(series_folder, series[0]) if series else ()
    uids = []
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(f)
        reader.ReadImageInformation()
        uids.append(reader.GetMetaData("0008|0018").strip())
    referenced = {sop for _, _, sop in seg.get_source_image_uids()}
    foreign = referenced - set(uids)
    if not uids or foreign:
        raise CaseError(
            path,
            f"DICOM-SEG does not fit the image series {series_folder}: "
            f"{len(foreign)} of the {len(referenced)} instances it segments are not in that series",
        )
    try:
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids,
            combine_segments=True,
            relabel=False,
            assert_missing_frames_are_empty=True,
        )
    except Exception as err:
        raise CaseError(path, f"DICOM-SEG does not fit the image series {series_folder} ({err})") from err
    return np.asarray(arr)


def dicom_seg_label(path: str, image: sitk.Image, series_folder: str) -> sitk.Image:
    """A DICOM-SEG as a label image with the geometry of the series image it segments."""
    import numpy as np
    import SimpleITK as sitk

    arr = read_dicom_seg(path, series_folder)
    if arr.shape != sitk.GetArrayViewFromImage(image).shape[: arr.ndim]:
        raise CaseError(path, f"DICOM-SEG grid {arr.shape[::-1]} differs from the image's {image.GetSize()}")
    lab = sitk.GetImageFromArray(arr.astype(np.uint16 if arr.max(initial=0) > 255 else np.uint8))
    lab.CopyInformation(image)
    return lab
