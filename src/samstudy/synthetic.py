"""The built-in dataset: a deterministic, seeded 3D CT-like phantom written as an nnU-Net v2 raw dataset.

Organ-like ellipsoids (liver, spleen, kidney) inside a body outline, CT intensities in HU, Gaussian
noise, anisotropic spacing and a rotated (non-identity) direction. Same seed, same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samstudy.io import atomic_path, write_json

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
# Mean HU per structure: fat-like body, soft-tissue organs, enhanced kidney cortex.
HU = {"air": -1000.0, "body": -80.0, "liver": 60.0, "spleen": 45.0, "kidney": 160.0}
DEFAULTS = {
    "n_patients": 6,
    "scans_per_patient": 1,
    "shape": [64, 64, 16],
    "spacing": [1.5, 1.5, 4.0],
    "rotation_deg": 10.0,
    "noise_hu": 20.0,
}


def _ellipsoid(grid: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    z, y, x = grid
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (x - centre[2]) / radii[2]
    ) ** 2 <= 1.0


def phantom(rng: np.random.Generator, shape_xyz, noise_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """One phantom volume: (image HU int16, labels uint8), both as arrays in (z, y, x) order."""
    nx, ny, nz = shape_xyz
    grid = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    image = np.full((nz, ny, nx), HU["air"], dtype=np.float32)
    label = np.zeros((nz, ny, nx), dtype=np.uint8)
    body = _ellipsoid(grid, (0, 0, 0), (5.0, 0.75 + rng.uniform(-0.05, 0.05), 0.92))
    image[body] = HU["body"]
    jitter = lambda scale: rng.uniform(-scale, scale)  # noqa: E731
    organs = [
        ("liver", (jitter(0.1), -0.1 + jitter(0.08), -0.38 + jitter(0.06)), (0.6, 0.38, 0.34)),
        ("spleen", (jitter(0.1), -0.05 + jitter(0.08), 0.52 + jitter(0.05)), (0.45, 0.22, 0.16)),
        ("kidney", (0.1 + jitter(0.1), 0.4 + jitter(0.05), 0.12 + jitter(0.06)), (0.4, 0.16, 0.13)),
    ]
    for name, centre, radii in organs:
        radii = tuple(r * (1 + rng.uniform(-0.12, 0.12)) for r in radii)
        mask = _ellipsoid(grid, centre, radii) & body
        image[mask] = HU[name]
        label[mask] = LABELS[name]
    image += rng.normal(0.0, noise_hu, size=image.shape).astype(np.float32)
    return np.clip(image, -1024, 3071).astype(np.int16), label


def direction_matrix(rotation_deg: float) -> tuple[float, ...]:
    """Row-major 3x3 rotation about z (orthonormal, non-identity for a non-zero angle)."""
    a = math.radians(rotation_deg)
    return (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)


def _write(array: np.ndarray, path: Path, spacing, direction, origin) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection(direction)
    img.SetOrigin(origin)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def write_dataset(out_dir: str | Path, seed: int, settings: dict | None = None) -> Path:
    """Write the phantom as an nnU-Net v2 raw dataset (imagesTr/_0000, labelsTr, dataset.json)."""
    s = {**DEFAULTS, **(settings or {})}
    out = Path(out_dir)
    direction = direction_matrix(s["rotation_deg"])
    n_cases = 0
    for patient in range(s["n_patients"]):
        for scan in range(s["scans_per_patient"]):
            rng = np.random.default_rng([seed, patient, scan])
            image, label = phantom(rng, s["shape"], s["noise_hu"])
            origin = tuple(float(v) for v in rng.uniform(-200, -100, size=3))
            case = f"pat{patient:02d}_s{scan}"
            _write(image, out / "imagesTr" / f"{case}_0000.nii.gz", s["spacing"], direction, origin)
            _write(label, out / "labelsTr" / f"{case}.nii.gz", s["spacing"], direction, origin)
            n_cases += 1
    write_json(
        out / "dataset.json",
        {
            "name": "samstudy synthetic phantom",
            "channel_names": {"0": "CT"},
            "labels": LABELS,
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
            "samstudy_seed": seed,
        },
    )
    return out
