"""Ingest: read a dataset with the reader of its format, validate every case, write the manifest rows.

A bad case is reported (file + reason) in the rejected table and left out; the other cases go on.
Cases are read one at a time, so memory does not grow with the dataset.

The formats (`nnunet`, `msd`, `nifti`, `dicom`, `png`, `synthetic`, built-in `mni152`) and how their files
are listed and read live in `samstudy.readers`; the manifest's schema and loading in `samstudy.cases`.
This module checks what the readers find (geometry, dimensions, NaN, label values, patient ids) and
writes the dataset's manifest rows, rejections and info. 2D cases stay 2D all the way: their manifest
shape and spacing have two entries.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from samstudy.cases import MANIFEST_COLUMNS, REJECTED_COLUMNS, map_labels
from samstudy.io import write_json, write_parquet
from samstudy.paths import Layout
from samstudy.readers import (
    CaseError,
    CaseFiles,
    DatasetInfo,
    ReadOptions,
    dataset_path,
    is_raster,
    list_cases,
    load_image,
    patient_csv,
    read_label,
    read_options,
    write_generated,
)

log = logging.getLogger(__name__)

GEOMETRY_TOLERANCE = 1e-3  # relative tolerance on spacing/origin/direction between image and label
MAX_DIM = 4096  # voxels per axis; beyond is treated as a corrupt header
MAX_VOXELS = 2_000_000_000


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
    images = [load_image(p, "image", options.spacing) for p in files.images]
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
        csv = patient_csv(ds)
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


def ingest_dataset(ds: dict, layout: Layout, seed: int, strict: bool = False) -> pd.DataFrame:
    """Read, validate and record one dataset; writes the dataset's manifest rows, rejections and info."""
    name = ds["name"]
    root = dataset_path(layout, ds).resolve()
    write_generated(ds, root, seed)
    info, found = list_cases(root, ds)
    names, sources = label_mapping(ds, info)
    options = read_options(ds)
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
