"""Ingest: read a dataset in the format it comes in, validate every case, write the manifest rows.

A bad case is reported (file + reason) in the rejected table and left out; the other cases go on.
Cases are read one at a time, so memory does not grow with the dataset.

Formats: `nnunet`, `msd`, `nifti` (pattern-matched pairs), `dicom` (series folders; labels as NIfTI/NRRD
or DICOM-SEG, read with highdicom), `png` (2D image/mask files: PNG, JPG, TIFF, BMP; grey or RGB images;
0/255, index or palette masks, read with Pillow), `synthetic` (the built-in phantoms). 2D cases stay 2D
all the way: their manifest shape and spacing have two entries.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from samstudy import config as samstudy_config
from samstudy import synthetic
from samstudy.io import read_json, write_json, write_parquet
from samstudy.paths import Layout
from samstudy.sources import READERS, CaseFiles, DatasetInfo, dataset_path, is_raster  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "dataset",
    "case_id",
    "patient_id",
    "modality",
    "role",
    "images",
    "label",
    "shape",
    "spacing",
    "origin",
    "direction",
    "labels_present",
    "content_hash",
]
REJECTED_COLUMNS = ["dataset", "case_id", "file", "reason"]

GEOMETRY_TOLERANCE = 1e-3  # relative tolerance on spacing/origin/direction between image and label
MAX_DIM = 4096  # voxels per axis; beyond is treated as a corrupt header
MAX_VOXELS = 2_000_000_000


class CaseError(ValueError):
    """A problem with one case; the message names the file and what is wrong."""

    def __init__(self, file: str | Path, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = str(file)
        self.reason = reason


# ---------------------------------------------------------------- labels


def label_mapping(ds: dict, info: DatasetInfo) -> tuple[dict[int, str], dict[int, list[int]]]:
    """Study labels (consecutive values 1..n) -> names, and -> the source values they take.

    From the config's `labels` (rename, merge, choose) when given, else every declared foreground label.
    """
    wanted = ds.get("labels")
    if not wanted:
        fg = sorted((v, k) for k, v in info.declared.items() if v != 0)
        wanted = {name: value for value, name in fg}
    names, sources = {}, {}
    for i, (name, value) in enumerate(wanted.items(), start=1):
        values = [int(v) for v in (value if isinstance(value, list) else [value])]
        undeclared = [v for v in values if v not in info.declared.values()]
        if undeclared:
            raise ValueError(
                f"dataset {ds['name']}: labels.{name} uses values {undeclared} not declared by the dataset"
            )
        names[i], sources[i] = name, values
    return names, sources


def map_labels(array: np.ndarray, sources: dict[int, list[int]]) -> np.ndarray:
    """Source label array -> study label array (values not chosen become background)."""
    lut = np.zeros(int(array.max(initial=0)) + 1, dtype=np.uint8)
    for study_value, values in sources.items():
        for v in values:
            if v < lut.size:
                lut[v] = study_value
    return lut[array]


# ---------------------------------------------------------------- validation


def _hash_and_check(path: str, what: str) -> str:
    """SHA-256 of a file; for gzip files also check the stream is complete.

    ITK's NIfTI reader silently zero-fills a truncated .nii.gz, so truncation is caught here.
    """
    if Path(path).is_dir():  # a DICOM series: the hashes of its files, in name order
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        return _combine([_hash_and_check(str(f), what) for f in files])
    if not Path(path).is_file():
        raise CaseError(path, f"{what} file is missing")
    digest = hashlib.sha256()
    unzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if path.endswith(".gz") else None
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            if unzip is not None and not unzip.eof:
                try:
                    unzip.decompress(block, 0)
                    while unzip.unconsumed_tail:
                        unzip.decompress(unzip.unconsumed_tail, 1 << 24)
                except zlib.error as err:
                    raise CaseError(path, f"{what} file is corrupt ({err})") from err
    if unzip is not None and not unzip.eof:
        raise CaseError(path, f"{what} file is unreadable or truncated (gzip stream ends early)")
    return digest.hexdigest()


def _dicom_positions(files: list[str]) -> np.ndarray:
    """Each file's ImagePositionPatient (0020|0032) projected on the slice normal."""
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
    arr = raster_pixels(path)
    img = sitk.GetImageFromArray(arr, isVector=arr.ndim == 3)
    img.SetSpacing([float(v) for v in (spacing or (1.0, 1.0))])
    return img


def read_image(path: str, spacing=None) -> sitk.Image:
    """Any image a dataset can hold: a file SimpleITK reads, a folder with one DICOM series, or a 2D raster
    file (PNG/JPG/TIFF/BMP; `spacing` (x, y) in mm, 1 by default, since these files carry none)."""
    if Path(path).is_dir():
        return read_dicom_series(path)
    if is_raster(path):
        return raster_image(path, spacing)
    return sitk.ReadImage(path)


def _read_image(path: str, what: str, spacing=None) -> sitk.Image:
    if not Path(path).exists():
        raise CaseError(path, f"{what} file is missing")
    try:
        return read_image(path, spacing)
    except RuntimeError as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise CaseError(path, f"{what} file is unreadable or truncated ({msg})") from err


def is_dicom_seg(path: str | Path) -> bool:
    """A DICOM-SEG label file (a single .dcm file beside a DICOM series)."""
    return str(path).lower().endswith(".dcm") and Path(path).is_file()


def read_dicom_seg(path: str, series_folder: str) -> np.ndarray:
    """A DICOM-SEG's segments as a label array (z, y, x) on the grid of the series it segments.

    Read with highdicom: frames are matched to the series' slices by their SOP Instance UIDs (so the
    label has the image's geometry by construction); the value of a voxel is its segment number.
    """
    import highdicom as hd

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


@dataclass(frozen=True)
class ReadOptions:
    """How a dataset's files are read: 2D spacing and mask binarisation (png)."""

    spacing: tuple[float, ...] | None = None
    mask_threshold: float | None = None

    @classmethod
    def of(cls, ds: dict) -> ReadOptions:
        spacing = ds.get("spacing")
        if ds["format"] == "synthetic" and synthetic.kind(ds) == "png2d":
            spacing = synthetic.png_spacing(ds)
        return cls(tuple(float(v) for v in spacing) if spacing else None, ds.get("mask_threshold"))


def read_label(path: str, image: sitk.Image, image_path: str, options: ReadOptions) -> sitk.Image:
    """A label file as an image: 2D masks (with the image's spacing), DICOM-SEG (on the series' grid),
    or any file SimpleITK reads."""
    if not Path(path).exists():
        raise CaseError(path, "label file is missing")
    if is_raster(path):
        lab = sitk.GetImageFromArray(raster_mask(path, options.mask_threshold))
        lab.SetSpacing([float(v) for v in (options.spacing or (1.0, 1.0))])
        return lab
    if is_dicom_seg(path):
        arr = read_dicom_seg(path, image_path)
        if arr.shape != sitk.GetArrayViewFromImage(image).shape[: arr.ndim]:
            raise CaseError(path, f"DICOM-SEG grid {arr.shape[::-1]} differs from the image's {image.GetSize()}")
        lab = sitk.GetImageFromArray(arr.astype(np.uint16 if arr.max(initial=0) > 255 else np.uint8))
        lab.CopyInformation(image)
        return lab
    return _read_image(path, "label")


def _check_dims(img: sitk.Image, path: str, ndim: int) -> None:
    if img.GetDimension() != ndim:
        raise CaseError(path, f"expected a {ndim}D image, found {img.GetDimension()}D")
    size = img.GetSize()
    if min(size) < 1 or max(size) > MAX_DIM or int(np.prod(size)) > MAX_VOXELS:
        raise CaseError(path, f"absurd dimensions {size}")
    d = np.array(img.GetDirection()).reshape(ndim, ndim)
    if not np.allclose(d @ d.T, np.eye(ndim), atol=1e-4):
        raise CaseError(path, "direction matrix is not orthonormal")


def _check_finite(path: str, img: sitk.Image) -> None:
    """NaN/inf voxels. ITK's NIfTI reader silently turns NaN into 0, so float NIfTI files are checked
    on their raw data with nibabel as well."""
    arr = sitk.GetArrayViewFromImage(img)
    bad = int((~np.isfinite(arr)).sum()) if np.issubdtype(arr.dtype, np.floating) else 0
    if not bad and np.issubdtype(arr.dtype, np.floating) and str(path).endswith((".nii", ".nii.gz")):
        import nibabel

        raw = np.asarray(nibabel.load(path).dataobj)
        bad = int((~np.isfinite(raw)).sum())
    if bad:
        raise CaseError(path, f"image has {bad} NaN/inf voxels")


def _check_same_geometry(img: sitk.Image, lab: sitk.Image, label_path: str) -> None:
    if img.GetSize() != lab.GetSize():
        raise CaseError(label_path, f"label size {lab.GetSize()} differs from image size {img.GetSize()}")
    for what, a, b in (
        ("spacing", img.GetSpacing(), lab.GetSpacing()),
        ("origin", img.GetOrigin(), lab.GetOrigin()),
        ("direction", img.GetDirection(), lab.GetDirection()),
    ):
        scale = max(1.0, float(np.max(np.abs(a))))
        if not np.allclose(a, b, atol=GEOMETRY_TOLERANCE * scale):
            raise CaseError(
                label_path,
                f"label {what} {_rounded(b)} differs from image {what} {_rounded(a)}",
            )


def _rounded(values) -> tuple[float, ...]:
    return tuple(round(float(x), 4) for x in values)


def validate_case(
    files: CaseFiles,
    info: DatasetInfo,
    sources: dict[int, list[int]],
    names: dict[int, str],
    options: ReadOptions | None = None,
) -> dict:
    """Check one case; return its manifest fields or raise CaseError naming the file and problem."""
    options = options or ReadOptions()
    if files.label is None:
        raise CaseError(files.images[0], "no label file for this image")
    content = [_hash_and_check(p, "image") for p in files.images] + [_hash_and_check(files.label, "label")]
    images = [_read_image(p, "image", options.spacing) for p in files.images]
    expected_dim = files.extra.get("ndim", 3)  # 2: png; 4: MSD multi-modal (x, y, z, channel)
    ref = images[0]
    _check_dims(ref, files.images[0], expected_dim)
    if expected_dim == 4:  # validate geometry on channel 0
        ref = ref[:, :, :, 0]
    for path, img in zip(files.images[1:], images[1:], strict=True):
        _check_dims(img, path, ref.GetDimension())
        _check_same_geometry(ref, img, path)
    lab = read_label(files.label, ref, files.images[0], options)
    _check_dims(lab, files.label, ref.GetDimension())
    _check_same_geometry(ref, lab, files.label)
    for path, img in zip(files.images, images, strict=True):
        _check_finite(path, img)
    lab_arr = sitk.GetArrayFromImage(lab)
    if np.issubdtype(lab_arr.dtype, np.floating):
        if not np.isfinite(lab_arr).all() or not np.equal(np.mod(lab_arr, 1), 0).all():
            raise CaseError(files.label, "label has non-integer values")
        lab_arr = lab_arr.astype(np.int64)
    values = set(np.unique(lab_arr).tolist())
    undeclared = sorted(values - set(info.declared.values()))
    if undeclared:
        shown = undeclared if len(undeclared) <= 10 else [*undeclared[:10], "..."]
        hint = " (a binary JPEG mask? set mask_threshold)" if is_raster(files.label) and len(undeclared) > 2 else ""
        raise CaseError(
            files.label,
            f"label values {shown} are not declared (declared: {sorted(info.declared.values())}){hint}",
        )
    study = map_labels(lab_arr.astype(np.int64), sources)
    counts = np.bincount(study.ravel(), minlength=len(names) + 1)
    present = {names[v]: int(counts[v]) for v in names if counts[v] > 0}
    if not present:
        log.warning("%s: no study label present (empty ground truth); case kept", files.label)
    return {
        "case_id": files.case_id,
        "images": list(files.images),
        "label": files.label,
        "shape": list(ref.GetSize()),
        "spacing": list(ref.GetSpacing()),
        "origin": list(ref.GetOrigin()),
        "direction": list(ref.GetDirection()),
        "labels_present": present,
        "content_hash": _combine(content),
        "_colour": images[0].GetNumberOfComponentsPerPixel() == 3,
    }


def _combine(hashes: list[str]) -> str:
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


# ---------------------------------------------------------------- patient ids


def patient_of(case_id: str, pattern: str | None) -> str:
    """Patient id from a case id: the regex's first group (or whole match); the case id by default."""
    if not pattern:
        return case_id
    m = re.search(pattern, case_id)
    if not m:
        raise CaseError(case_id, f"patient_id pattern {pattern!r} does not match the case id")
    return m.group(1) if m.groups() else m.group(0)


class PatientIds:
    """case id -> patient id, from the config's `patient_id`: a regex on the case id, or a CSV's columns.

    With a CSV, a case it does not list (or lists with an empty or two different patient ids) is
    rejected: splitting it without knowing its patient could leak a patient across train and test.
    """

    def __init__(self, ds: dict):
        spec = ds.get("patient_id")
        self.pattern = spec if isinstance(spec, str) else None
        csv = samstudy_config.patient_csv(ds)
        self.csv = None if csv is None else Path(csv).resolve()
        self.table: dict[str, set[str]] = {}
        if self.csv is None:
            return
        if not self.csv.is_file():
            raise FileNotFoundError(f"dataset {ds['name']}: patient_id CSV {self.csv} not found")
        frame = pd.read_csv(self.csv, dtype=str, keep_default_na=False)
        case_col, patient_col = spec.get("case_column", "case_id"), spec.get("patient_column", "patient_id")
        missing = [c for c in (case_col, patient_col) if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.csv}: column(s) {missing} not found (columns: {list(frame.columns)})")
        self.case_col = case_col
        for case, patient in zip(frame[case_col].str.strip(), frame[patient_col].str.strip(), strict=True):
            self.table.setdefault(case, set()).add(patient)

    def __call__(self, case_id: str) -> str:
        if self.csv is None:
            return patient_of(case_id, self.pattern)
        patients = self.table.get(case_id)
        if patients is None:
            raise CaseError(self.csv, f"case '{case_id}' is not listed in column '{self.case_col}'")
        if len(patients) > 1 or "" in patients:
            raise CaseError(self.csv, f"case '{case_id}' has an empty or conflicting patient id {sorted(patients)}")
        return next(iter(patients))


# ---------------------------------------------------------------- the stage


def write_builtin(ds: dict, root: Path, seed: int) -> None:
    """Materialise a built-in dataset (phantoms, mni152) at its path; same settings, same bytes."""
    if ds["format"] == "synthetic":
        synthetic.write_dataset(root, seed, ds.get("synthetic"))
    elif ds.get("builtin"):
        from samstudy import builtin

        builtin.write(root, ds["builtin"])


def ingest_dataset(ds: dict, layout: Layout, seed: int, strict: bool = False) -> pd.DataFrame:
    """Read, validate and record one dataset; writes the dataset's manifest rows, rejections and info."""
    name = ds["name"]
    root = dataset_path(layout, ds).resolve()
    write_builtin(ds, root, seed)
    if ds["format"] not in READERS:
        raise NotImplementedError(f"dataset {name}: format '{ds['format']}' is not supported yet")
    info, found = READERS[ds["format"]](root, ds)
    if ds.get("builtin"):
        from samstudy import builtin

        info.declared = builtin.declared_labels(ds["builtin"])
    names, sources = label_mapping(ds, info)
    options = ReadOptions.of(ds)
    patient_ids = PatientIds(ds)
    rows, rejected, seen, colour = [], [], set(), False
    # `found` is a generator: one case's files are found, read and validated at a time.
    for files in tqdm(found, desc=f"ingest {name}", unit="case"):
        try:
            if files.case_id in seen:
                raise CaseError(files.images[0], f"duplicate case id '{files.case_id}'")
            seen.add(files.case_id)
            row = validate_case(files, info, sources, names, options)
            row["patient_id"] = patient_ids(files.case_id)
        except CaseError as err:
            log.error("rejected %s/%s: %s", name, files.case_id, err)
            if strict:
                raise
            where = layout.stored(err.file) if Path(err.file).is_absolute() else err.file  # a file, or a case id
            rejected.append({"dataset": name, "case_id": files.case_id, "file": where, "reason": err.reason})
            continue
        colour |= row.pop("_colour")
        # files inside results_dir (the built-in datasets) relative to it: a moved results folder still works
        row["images"] = [layout.stored(f) for f in row["images"]]
        row["label"] = layout.stored(row["label"])
        rows.append({"dataset": name, "modality": ds["modality"], "role": ds["role"], **row})
    if not rows:
        raise ValueError(f"dataset {name}: no valid case found under {root}")
    manifest = pd.DataFrame(rows)[MANIFEST_COLUMNS]
    manifest["labels_present"] = manifest["labels_present"].map(_json)
    write_parquet(layout.ingest_table(name), manifest)
    write_parquet(layout.ingest_rejected(name), pd.DataFrame(rejected, columns=REJECTED_COLUMNS))
    write_json(
        layout.ingest_info(name),
        {
            "dataset": name,
            "format": ds["format"],
            "path": layout.stored(root),
            "modality": ds["modality"],
            "role": ds["role"],
            "labels": names,
            "label_sources": sources,
            # 2D colour datasets: R, G, B (a grey image among them is replicated where channels must agree)
            "channels": ["R", "G", "B"] if colour else info.channels,
            "read": {"spacing": options.spacing, "mask_threshold": options.mask_threshold},
        },
    )
    log.info("dataset %s: %d accepted, %d rejected", name, len(rows), len(rejected))
    return manifest


def _json(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


def merge_manifests(layout: Layout, datasets: list[str]) -> pd.DataFrame:
    """Concatenate the per-dataset tables into manifest.parquet and rejected.parquet."""
    manifest = pd.concat([pd.read_parquet(layout.ingest_table(d)) for d in datasets], ignore_index=True)
    rejected = pd.concat([pd.read_parquet(layout.ingest_rejected(d)) for d in datasets], ignore_index=True)
    write_parquet(layout.manifest(), manifest)
    write_parquet(layout.rejected(), rejected)
    return manifest


def load_dataset_table(layout: Layout, dataset: str) -> tuple[pd.DataFrame, dict]:
    """A dataset's manifest rows (image and label paths absolute: those stored relative to results_dir are
    resolved against it) and its info (labels, modality, ...)."""
    info = read_json(layout.ingest_info(dataset))
    info["labels"] = {int(k): v for k, v in info["labels"].items()}
    info["label_sources"] = {int(k): v for k, v in info["label_sources"].items()}
    info["path"] = layout.resolve(info["path"])
    table = pd.read_parquet(layout.ingest_table(dataset))
    table["images"] = [[layout.resolve(f) for f in files] for files in table["images"]]
    table["label"] = [layout.resolve(f) for f in table["label"]]
    return table, info


def _options(info: dict) -> ReadOptions:
    read = info.get("read") or {}
    spacing = read.get("spacing")
    return ReadOptions(tuple(spacing) if spacing else None, read.get("mask_threshold"))


def read_case(row, info: dict) -> tuple[sitk.Image, np.ndarray]:
    """A manifest row's image (SimpleITK; the first channel of a 4D file; 2D images keep their RGB
    pixels) and its study label array ((z, y, x), or (y, x) for a 2D case)."""
    options = _options(info)
    image = read_image(row["images"][0], options.spacing)
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    label = read_label(row["label"], image, row["images"][0], options)
    return image, map_labels(sitk.GetArrayFromImage(label).astype(np.int64), info["label_sources"])


def reference_geometry(reference) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(size, spacing, origin, direction) of a case's image, from its manifest row (a mapping with
    `shape`, `spacing`, `origin`, `direction`: exact, and right for 2D files whose spacing comes from the
    config) or from an image path (header only; a DICOM series folder is read whole; 4D -> its 3D part)."""
    if not isinstance(reference, str | Path):
        return (
            tuple(int(v) for v in reference["shape"]),
            tuple(float(v) for v in reference["spacing"]),
            tuple(float(v) for v in reference["origin"]),
            tuple(float(v) for v in reference["direction"]),
        )
    if Path(reference).is_dir() or is_raster(reference):
        img = read_image(str(reference))
        size, spacing, origin, direction, dim = (
            img.GetSize(),
            img.GetSpacing(),
            img.GetOrigin(),
            img.GetDirection(),
            img.GetDimension(),
        )
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(reference))
        reader.ReadImageInformation()
        size, spacing, origin = reader.GetSize(), reader.GetSpacing(), reader.GetOrigin()
        direction, dim = reader.GetDirection(), reader.GetDimension()
    keep = min(dim, 3)
    direction = tuple(np.asarray(direction).reshape(dim, dim)[:keep, :keep].ravel().tolist())
    return tuple(size[:keep]), tuple(spacing[:keep]), tuple(origin[:keep]), direction
