"""The input formats: one reader per `format:` of a dataset entry, behind one registry (as nnU-Net's
`imageio/reader_writer_registry.py` keeps its readers). A reader states its config keys and rules (checked
by `config.validate`), lists a dataset's cases from its entry alone without opening an image (what the
Snakefile lists as the ingest job's inputs, so editing, adding or removing a file reruns that ingest), and
its module reads the files of its kind. `ingest` validates what the readers find and writes the manifest.

Adding a format: a `readers/<format>.py` with a `Reader` subclass, one line in `READERS` (and the
schema's `format` enum), its tests in tests/test_readers.py.

Light (standard library only, image libraries imported where pixels are read): `config` imports it, and
the Snakefile calls `dataset_files` when it builds the DAG.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samstudy.readers.base import (
    RASTER_ENDINGS,
    CaseError,
    CaseFiles,
    DatasetInfo,
    EntryError,
    Reader,
    ReadOptions,
    is_raster,
    options_from,
    patient_csv,
)
from samstudy.readers.builtin import Mni152Reader
from samstudy.readers.dicom import DicomReader
from samstudy.readers.images import load_image, read_image, read_label
from samstudy.readers.msd import MsdReader
from samstudy.readers.nifti import NiftiReader
from samstudy.readers.nnunet import NnunetReader
from samstudy.readers.png import PngReader
from samstudy.readers.synthetic import SyntheticReader

__all__ = [
    "BUILTINS",
    "RASTER_ENDINGS",
    "READERS",
    "CaseError",
    "CaseFiles",
    "DatasetInfo",
    "EntryError",
    "ReadOptions",
    "Reader",
    "check_entry",
    "check_files",
    "dataset_files",
    "dataset_path",
    "fingerprint",
    "generated",
    "is_2d",
    "is_raster",
    "list_cases",
    "options_from",
    "load_image",
    "patient_csv",
    "read_image",
    "read_label",
    "read_options",
    "reader_for",
    "write_generated",
]

# format -> its reader (the schema's `format` enum lists the same names)
READERS: dict[str, Reader] = {
    "synthetic": SyntheticReader(),
    "nnunet": NnunetReader(),
    "msd": MsdReader(),
    "nifti": NiftiReader(),
    "png": PngReader(),
    "dicom": DicomReader(),
}
# built-in real datasets (`builtin.kind`) -> their reader; they are read in the `format` they are written in
BUILTINS: dict[str, Reader] = {"mni152": Mni152Reader()}


def reader_for(ds: dict[str, Any]) -> Reader:
    """The reader of a dataset entry: its built-in dataset's, else its format's (KeyError naming both lists)."""
    if ds.get("builtin"):
        kind = ds["builtin"]["kind"]
        if kind not in BUILTINS:
            raise KeyError(f"builtin kind '{kind}' has no reader (known: {sorted(BUILTINS)})")
        return BUILTINS[kind]
    if ds["format"] not in READERS:
        raise KeyError(f"format '{ds['format']}' has no reader (known: {sorted(READERS)})")
    return READERS[ds["format"]]


def check_entry(ds: dict[str, Any]) -> None:
    """Cross-key rules of one dataset entry (what the schema cannot say), fills format defaults; raises
    EntryError. A user dataset needs a `path`; then its reader's rules; then the patient-id CSV's columns."""
    where = f"datasets.{ds['name']}"
    reader = reader_for(ds)
    if not reader.generated and not ds.get("path"):
        raise EntryError(f"{where}: format {ds['format']} needs a 'path'")
    reader.check(ds, where)
    if isinstance(ds.get("patient_id"), dict):
        ds["patient_id"].setdefault("case_column", "case_id")
        ds["patient_id"].setdefault("patient_column", "patient_id")


def generated(ds: dict[str, Any]) -> bool:
    """A built-in dataset (the phantoms, mni152): samstudy writes its files from the config, so they are
    outputs of its ingest job, not inputs, and its path need not exist yet."""
    return reader_for(ds).generated


def is_2d(ds: dict[str, Any]) -> bool:
    """Whether a dataset entry holds 2D images (png files, nnU-Net raster datasets, the png2d phantom)."""
    return reader_for(ds).is_2d(ds)


def check_files(ds: dict[str, Any]) -> None:
    """The user's data exist: a dataset `path` (and a patient-id CSV) that is not there raises EntryError.
    Built-in datasets are written at their path, so theirs need not exist yet."""
    if generated(ds):
        return
    where = f"datasets.{ds['name']}"
    path = Path(ds["path"]).expanduser()
    if not path.is_dir():
        what = "is a file, not a dataset folder" if path.exists() else "does not exist"
        raise EntryError(f"{where}.path: {path} {what}")
    csv = patient_csv(ds)
    if csv and not Path(csv).is_file():
        raise EntryError(f"{where}.patient_id.csv: {csv} does not exist")


def dataset_path(layout, ds: dict[str, Any]) -> Path:
    """Where a dataset lives; the built-in ones (phantoms, mni152) are written under results_dir/raw by default."""
    if ds.get("path"):
        return Path(ds["path"])
    return Path(layout.raw_dir(ds["name"]))


def list_cases(root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
    """What a dataset declares and its cases, one at a time, as its reader finds them under `root`."""
    return reader_for(ds).list_cases(root, ds)


def read_options(ds: dict[str, Any]) -> ReadOptions:
    """How a dataset entry's files are read (2D spacing, mask threshold)."""
    return reader_for(ds).read_options(ds)


def write_generated(ds: dict[str, Any], root: Path, seed: int) -> None:
    """Materialise a built-in dataset (phantoms, mni152) at its path; same settings, same bytes. Nothing for
    user data."""
    reader_for(ds).write(root, ds, seed)


def dataset_files(ds: dict[str, Any]) -> list[str]:
    """Every file the ingest of a user dataset reads (dataset.json, each case's images and label; every
    file of a DICOM series folder; the patient-id CSV), sorted; [] for a built-in dataset.

    A listing only (a dataset.json is parsed, no image is opened): cheap enough for the Snakefile to call
    at DAG time (measured in benchmarks/dag.py). A dataset the reader cannot list (e.g. its dataset.json is
    missing or broken) gives the files found so far; its ingest job then reports the problem by file name.
    """
    if generated(ds) or not ds.get("path"):
        return []
    root = Path(ds["path"]).expanduser()
    files: set[str] = set()
    reader = reader_for(ds)
    for name in reader.metadata:
        if (root / name).is_file():
            files.add(str(root / name))
    try:
        _, cases = reader.list_cases(root, ds)
        for case in cases:
            for path in [*case.images, case.label]:
                if path is None:
                    continue
                if os.path.isdir(path):  # a DICOM series folder: every file in it
                    files.update(str(p) for p in Path(path).rglob("*") if p.is_file())
                elif os.path.isfile(path):
                    files.add(str(path))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # ingest reports it (naming the file); the files listed so far still count
    csv = patient_csv(ds)
    if csv and os.path.isfile(csv):
        files.add(str(csv))
    return sorted(files)


def fingerprint(files: list[str]) -> str:
    """A digest of a file listing: each path with its size and modification time (ns). Any edit, addition
    or removal changes it, also a replacement that keeps an older time (`cp -p`, `rsync -t`), which
    Snakemake's own newer-than test would miss."""
    digest = hashlib.sha256()
    for path in files:
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
