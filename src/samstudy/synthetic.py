"""The built-in phantoms: deterministic, seeded, same seed -> same bytes. `synthetic.kind` chooses one:

- `ct3d` (default): a 3D CT-like phantom written as an nnU-Net v2 raw dataset. Organ-like ellipsoids
  (liver, spleen, kidney) inside a body outline, CT intensities in HU, Gaussian noise, anisotropic
  spacing and a rotated (non-identity) direction.
- `png2d`: a 2D dermoscopy-like phantom written as an image/mask folder of PNG files (ISIC/Kvasir style):
  RGB skin-like images with an irregular pigmented lesion (label 1) and a small dark spot (label 2);
  masks are grey index PNGs. Read by the `png` reader, so the default study exercises 2D data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samstudy.io import atomic_path, write_json

KINDS = ("ct3d", "png2d")

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
# Mean HU per structure: fat-like body, soft-tissue organs, enhanced kidney cortex.
HU = {"air": -1000.0, "body": -80.0, "liver": 60.0, "spleen": 45.0, "kidney": 160.0}
DEFAULTS = {
    "kind": "ct3d",
    "n_patients": 6,
    "scans_per_patient": 1,
    "shape": [64, 64, 16],
    "spacing": [1.5, 1.5, 4.0],
    "rotation_deg": 10.0,
    "noise_hu": 20.0,
}


PNG_LABELS = {"background": 0, "lesion": 1, "spot": 2}
PNG_PATTERNS = {"image_pattern": "images/{case}.png", "label_pattern": "masks/{case}.png"}
PNG_DEFAULTS = {"kind": "png2d", "n_patients": 6, "scans_per_patient": 1, "shape": [96, 80], "spacing": [0.5, 0.5]}
SKIN_RGB, LESION_RGB, SPOT_RGB = (205.0, 160.0, 140.0), (125.0, 82.0, 62.0), (60.0, 48.0, 92.0)


def kind(ds: dict) -> str:
    """The phantom kind of a `synthetic` dataset entry."""
    return (ds.get("synthetic") or {}).get("kind", "ct3d")


def settings_of(settings: dict | None) -> dict:
    """The phantom's settings with its kind's defaults filled in."""
    settings = settings or {}
    defaults = PNG_DEFAULTS if settings.get("kind") == "png2d" else DEFAULTS
    return {**defaults, **settings}


def png_spacing(ds: dict) -> list[float]:
    """Pixel spacing (x, y) in mm of a png2d phantom (PNG files carry none, so the reader is told)."""
    return [float(v) for v in settings_of(ds.get("synthetic"))["spacing"]]


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
    """Write the phantom of `settings["kind"]`: ct3d as an nnU-Net v2 raw dataset (imagesTr/_0000, labelsTr,
    dataset.json), png2d as images/<case>.png + masks/<case>.png."""
    s = settings_of(settings)
    if s["kind"] == "png2d":
        return write_png_dataset(out_dir, seed, s)
    out = Path(out_dir)
    direction = direction_matrix(s["rotation_deg"])
    written = []
    for patient in range(s["n_patients"]):
        for scan in range(s["scans_per_patient"]):
            rng = np.random.default_rng([seed, patient, scan])
            image, label = phantom(rng, s["shape"], s["noise_hu"])
            origin = tuple(float(v) for v in rng.uniform(-200, -100, size=3))
            case = f"pat{patient:02d}_s{scan}"
            written += [out / "imagesTr" / f"{case}_0000.nii.gz", out / "labelsTr" / f"{case}.nii.gz"]
            _write(image, written[-2], s["spacing"], direction, origin)
            _write(label, written[-1], s["spacing"], direction, origin)
    _remove_others(written, "*.nii.gz")
    n_cases = len(written) // 2
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


def _blob(yy: np.ndarray, xx: np.ndarray, centre, radius: float, rng: np.random.Generator, wobble: float):
    """An irregular star-shaped blob: a circle whose radius varies with angle (three random harmonics)."""
    dy, dx = yy - centre[0], xx - centre[1]
    angle = np.arctan2(dy, dx)
    r = np.full_like(angle, radius)
    for k in (2, 3, 5):
        r += radius * wobble / k * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) <= r


def phantom2d(rng: np.random.Generator, shape_xy) -> tuple[np.ndarray, np.ndarray]:
    """One 2D phantom: (RGB image uint8 (H, W, 3), labels uint8 (H, W))."""
    w, h = shape_xy
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # skin: a smooth illumination gradient plus pixel noise
    shade = 1.0 + 0.08 * np.sin(xx / w * np.pi * rng.uniform(0.5, 1.5) + rng.uniform(0, np.pi)) - 0.06 * (yy / h)
    image = np.asarray(SKIN_RGB, dtype=np.float32) * shade[..., None]
    label = np.zeros((h, w), dtype=np.uint8)
    side = min(h, w)
    lesion_centre = (h * rng.uniform(0.4, 0.6), w * rng.uniform(0.35, 0.5))
    lesion = _blob(yy, xx, lesion_centre, side * rng.uniform(0.2, 0.26), rng, 0.25)
    # the spot sits to the right of the lesion, never touching it
    spot_centre = (h * rng.uniform(0.25, 0.75), w * rng.uniform(0.8, 0.86))
    spot = _blob(yy, xx, spot_centre, side * rng.uniform(0.07, 0.09), rng, 0.1) & ~lesion
    for mask, rgb, value in ((lesion, LESION_RGB, 1), (spot, SPOT_RGB, 2)):
        image[mask] = np.asarray(rgb, dtype=np.float32) * rng.uniform(0.9, 1.1)
        label[mask] = value
    image += rng.normal(0.0, 6.0, size=image.shape).astype(np.float32)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


def write_png_dataset(out_dir: str | Path, seed: int, settings: dict | None = None) -> Path:
    """Write the png2d phantom: images/<case>.png (RGB) and masks/<case>.png (grey index: 0, 1, 2)."""
    from PIL import Image

    s = settings_of({**(settings or {}), "kind": "png2d"})
    out = Path(out_dir)
    written = []
    for patient in range(s["n_patients"]):
        for scan in range(s["scans_per_patient"]):
            rng = np.random.default_rng([seed, patient, scan, 2])
            image, label = phantom2d(rng, s["shape"])
            case = f"pat{patient:02d}_s{scan}"
            for array, pattern in ((image, "image_pattern"), (label, "label_pattern")):
                written.append(out / PNG_PATTERNS[pattern].replace("{case}", case))
                with atomic_path(written[-1]) as tmp:
                    Image.fromarray(array).save(tmp, format="PNG")
    _remove_others(written, "*.png")
    return out


def _remove_others(written: list[Path], pattern: str) -> None:
    """Remove the cases an earlier run wrote that these settings no longer generate (fewer patients):
    the folders hold exactly the phantom of the current settings, so a stale case is never ingested."""
    keep = set(written)
    for folder in {p.parent for p in written}:
        for stale in folder.glob(pattern):
            if stale not in keep:
                stale.unlink()
