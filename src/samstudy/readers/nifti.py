"""`format: nifti`: one image file per case (NIfTI, NRRD, MHA: any file SimpleITK reads) and its label file,
matched by patterns (default `images/{case}.nii.gz`, `labels/{case}.nii.gz`)."""

from __future__ import annotations

from samstudy.readers.patterns import PatternReader


class NiftiReader(PatternReader):
    """Pattern-matched 3D image/label files, read with SimpleITK."""

    name = "nifti"
    default_patterns = ("images/{case}.nii.gz", "labels/{case}.nii.gz")
