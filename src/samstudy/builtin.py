"""Built-in real data: datasets made from medical images that a Python package ships (no download).

`mni152`: the MNI152 (ICBM 2009a) T1 template that `nilearn` ships, with tissue labels from the grey- and
white-matter probability maps shipped beside it: grey matter (1), white matter (2), CSF (3). nilearn ships
no CSF map, so CSF is the probability left over, 1 - GM - WM, inside the brain envelope (GM + WM > 0.3,
closed and hole-filled: ventricles and sulci). Each voxel takes the class with the highest probability
if that probability is at least `threshold`, else background. One subject: a `test_only` dataset for
zero-shot evaluation, written as a NIfTI image/label folder (`images/mni152.nii.gz`,
`labels/mni152.nii.gz`) and read by the ordinary `nifti` reader, so it is validated like user data.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from samstudy.io import atomic_path

MNI152_LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2, "csf": 3}
MNI152_DEFAULTS = {"kind": "mni152", "resolution_mm": 2, "z_range_mm": None, "threshold": 0.5}
MNI152_CASE = "mni152"
PATTERNS = {"image_pattern": "images/{case}.nii.gz", "label_pattern": "labels/{case}.nii.gz"}


def settings_of(spec: dict) -> dict:
    return {**MNI152_DEFAULTS, **spec}


def declared_labels(spec: dict) -> dict[str, int]:
    """The label values a built-in dataset declares (name -> value)."""
    return dict(MNI152_LABELS)


def mni152_volumes(resolution_mm: int, z_range_mm, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 float32, labels uint8, affine) on nilearn's grid at `resolution_mm`, cut to MNI z in `z_range_mm`."""
    from nilearn import datasets
    from scipy import ndimage

    with warnings.catch_warnings():  # nilearn warns about its resampling defaults; they are what we want
        warnings.simplefilter("ignore")
        t1_img = datasets.load_mni152_template(resolution=resolution_mm)
        gm = datasets.load_mni152_gm_template(resolution=resolution_mm).get_fdata()
        wm = datasets.load_mni152_wm_template(resolution=resolution_mm).get_fdata()
    t1 = t1_img.get_fdata().astype(np.float32)
    affine = t1_img.affine.copy()
    envelope = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > 0.3, iterations=2))
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * envelope
    probabilities = np.stack([gm, wm, csf])
    labels = (np.argmax(probabilities, axis=0) + 1).astype(np.uint8)
    labels[probabilities.max(axis=0) < threshold] = 0
    if z_range_mm is not None:
        # world z of each voxel plane k (the template's axes are x, y, z with a diagonal affine)
        z_mm = affine[2, 3] + affine[2, 2] * np.arange(t1.shape[2])
        keep = np.flatnonzero((z_mm >= z_range_mm[0]) & (z_mm <= z_range_mm[1]))
        if keep.size == 0:
            raise ValueError(f"mni152: z_range_mm {z_range_mm} holds no slice (z runs {z_mm[0]}..{z_mm[-1]} mm)")
        t1, labels = t1[:, :, keep], labels[:, :, keep]
        affine[:3, 3] = affine[:3, :3] @ np.array([0, 0, keep[0]]) + affine[:3, 3]
    return t1, labels, affine


def write_mni152(out_dir: str | Path, spec: dict) -> Path:
    """Write the mni152 dataset (one subject) as images/mni152.nii.gz + labels/mni152.nii.gz."""
    import nibabel

    s = settings_of(spec)
    t1, labels, affine = mni152_volumes(s["resolution_mm"], s["z_range_mm"], s["threshold"])
    out = Path(out_dir)
    for array, pattern in ((t1, "image_pattern"), (labels, "label_pattern")):
        img = nibabel.Nifti1Image(array, affine)
        img.set_qform(affine, code=4)  # MNI space
        img.set_sform(affine, code=4)
        path = out / PATTERNS[pattern].replace("{case}", MNI152_CASE)
        with atomic_path(path) as tmp:
            nibabel.save(img, str(tmp))
    return out


BUILTINS = {"mni152": write_mni152}


def write(out_dir: str | Path, spec: dict) -> Path:
    """Materialise the built-in dataset `spec["kind"]` in `out_dir`."""
    return BUILTINS[spec["kind"]](out_dir, spec)
