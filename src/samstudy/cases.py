"""The cases of a study: the manifest's schema, loading a dataset's manifest rows and reading a case's
image and study labels, and which cases a job works on (the evaluation cases, a shard's cases).

`ingest` writes the manifest; every later stage reads it through this module. Torch-free, and SimpleITK is
imported only where pixels or headers are read, so the light CPU jobs (split, shard, gather) stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from samstudy.io import read_json
from samstudy.paths import Layout
from samstudy.readers import is_raster, options_from, read_image, read_label
from samstudy.splits import cases_in, load_split

if TYPE_CHECKING:
    import SimpleITK as sitk

# One row per accepted case (per-dataset tables ingest/<dataset>.parquet, merged into manifest.parquet).
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
# One row per rejected case: the file at fault and why (rejected.parquet).
REJECTED_COLUMNS = ["dataset", "case_id", "file", "reason"]


class ShardError(RuntimeError):
    """A shard's files disagree with each other or with the dataset (stale or mixed results)."""


# ---------------------------------------------------------------- loading


def stored_table(layout: Layout, dataset: str, columns: list[str] | None = None) -> pd.DataFrame:
    """A dataset's manifest rows as ingest stored them (paths inside results_dir relative to it, so a moved
    results folder keeps its fingerprints); `columns` reads only those."""
    return pd.read_parquet(layout.ingest_table(dataset), columns=columns)


def case_order(layout: Layout, dataset: str) -> list[str]:
    """A dataset's case ids in manifest order: the order every whole-dataset output lists its cases in."""
    return list(stored_table(layout, dataset, columns=["case_id"])["case_id"])


def load_manifest(layout: Layout) -> pd.DataFrame:
    """The study's merged manifest (manifest.parquet: every dataset's accepted cases, as stored)."""
    return pd.read_parquet(layout.manifest())


def load_dataset_table(layout: Layout, dataset: str) -> tuple[pd.DataFrame, dict]:
    """A dataset's manifest rows (image and label paths absolute: those stored relative to results_dir are
    resolved against it) and its info (labels, modality, ...)."""
    info = read_json(layout.ingest_info(dataset))
    info["labels"] = {int(k): v for k, v in info["labels"].items()}
    info["label_sources"] = {int(k): v for k, v in info["label_sources"].items()}
    info["path"] = layout.resolve(info["path"])
    table = stored_table(layout, dataset)
    table["images"] = [[layout.resolve(f) for f in files] for files in table["images"]]
    table["label"] = [layout.resolve(f) for f in table["label"]]
    return table, info


# ---------------------------------------------------------------- reading a case


def map_labels(array: np.ndarray, sources: dict[int, list[int]]) -> np.ndarray:
    """Source label array -> study label array (values not chosen become background)."""
    lut = np.zeros(int(array.max(initial=0)) + 1, dtype=np.uint8)
    for study_value, values in sources.items():
        for v in values:
            if v < lut.size:
                lut[v] = study_value
    return lut[array]


def read_case(row, info: dict) -> tuple[sitk.Image, np.ndarray]:
    """A manifest row's image (SimpleITK; the first channel of a 4D file; 2D images keep their RGB
    pixels) and its study label array ((z, y, x), or (y, x) for a 2D case)."""
    import SimpleITK as sitk

    read = info.get("read") or {}  # how the reader read the dataset's files (ingest stores it)
    options = options_from(read.get("spacing"), read.get("mask_threshold"))
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
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(reference))
        reader.ReadImageInformation()
        size, spacing, origin = reader.GetSize(), reader.GetSpacing(), reader.GetOrigin()
        direction, dim = reader.GetDirection(), reader.GetDimension()
    keep = min(dim, 3)
    direction = tuple(np.asarray(direction).reshape(dim, dim)[:keep, :keep].ravel().tolist())
    return tuple(size[:keep]), tuple(spacing[:keep]), tuple(origin[:keep]), direction


# ---------------------------------------------------------------- which cases a job works on


def held_out_cases(layout: Layout, dataset: str) -> list[str]:
    """The test part of the dataset's split, every shard's (`eval_cases` is a sharded job's part of it)."""
    return cases_in(load_split(layout, dataset), "test")


def select(layout: Layout, dataset: str, cases: list[str]) -> list[str]:
    """The cases of `cases` this layout's job handles: all of them unsharded; in a sharded job those of its
    shard, checked against the shard file the checkpoint wrote (a job never works from a stale list)."""
    chosen = layout.select(cases)
    if layout.shard is None:
        return chosen
    path = layout.shard_cases(dataset)
    listed = [c["case_id"] for c in read_json(path)["cases"]]
    expected = [c for c in listed if c in set(cases)]
    if sorted(expected) != sorted(chosen):
        raise ShardError(
            f"{path}: lists {len(expected)} of these cases, the dataset has {len(chosen)} in shard "
            f"{layout.shard}: the shard file is stale; rerun the workflow"
        )
    return chosen


def eval_cases(layout: Layout, dataset: str) -> list[str]:
    """The cases every method is scored on: the test part of the dataset's split (in a sharded job's
    layout, those of its shard)."""
    return select(layout, dataset, held_out_cases(layout, dataset))
