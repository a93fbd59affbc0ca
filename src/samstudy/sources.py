"""Which files a dataset is made of, found from its config entry alone: one reader per `format` lists the
cases (image and label paths) from dataset.json files, folder listings and patterns, without opening an
image. Ingest validates what the readers find; the Snakefile lists the same files as the ingest job's
inputs, so editing, adding or removing a file of a dataset reruns its ingest (and what depends on it).

This module stays light (no image libraries): the Snakefile imports it to build the DAG.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from samstudy import config as samstudy_config
from samstudy.io import read_json


def is_raster(path: str | Path) -> bool:
    """A 2D raster file (PNG, JPG, TIFF, BMP): read with Pillow, spacing from the config."""
    return str(path).lower().endswith(samstudy_config.RASTER_ENDINGS)


@dataclass
class CaseFiles:
    """One case as found on disk, before validation."""

    case_id: str
    images: list[str]
    label: str | None
    extra: dict = field(default_factory=dict)


@dataclass
class DatasetInfo:
    """What a reader learns about a dataset: declared source labels (name -> value), channels."""

    declared: dict[str, int]
    channels: list[str]
    file_ending: str = ".nii.gz"


# ---------------------------------------------------------------- readers (one per `format`)


def _read_nnunet(path: Path) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: nnU-Net raw dataset.json not found")
    meta = read_json(meta_path)
    ending = meta.get("file_ending", ".nii.gz")
    channels = [meta["channel_names"][k] for k in sorted(meta.get("channel_names", {"0": "image"}), key=int)]
    declared = {k: int(v) for k, v in meta["labels"].items() if not isinstance(v, list)}

    def cases() -> Iterator[CaseFiles]:
        suffix = f"_0000{ending}"
        for first in sorted((path / "imagesTr").glob(f"*{suffix}")):
            case_id = first.name[: -len(suffix)]
            label = str(path / "labelsTr" / f"{case_id}{ending}")
            if is_raster(ending):  # nnU-Net's natural 2D images: all channels (e.g. R, G, B) in one file
                yield CaseFiles(case_id, [str(first)], label, {"ndim": 2})
                continue
            images = [str(path / "imagesTr" / f"{case_id}_{c:04d}{ending}") for c in range(len(channels))]
            yield CaseFiles(case_id, images, label)

    return DatasetInfo(declared, channels, ending), cases()


def _read_msd(path: Path) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: Decathlon dataset.json not found")
    meta = read_json(meta_path)
    declared = {name: int(value) for value, name in meta["labels"].items()}
    channels = [meta["modality"][k] for k in sorted(meta.get("modality", {"0": "image"}), key=int)]

    def cases() -> Iterator[CaseFiles]:
        for entry in meta["training"]:
            image = (path / entry["image"]).resolve()
            label = (path / entry["label"]).resolve()
            case_id = image.name.split(".")[0]
            yield CaseFiles(case_id, [str(image)], str(label), {"ndim": 4 if len(channels) > 1 else 3})

    return DatasetInfo(declared, channels), cases()


def _pattern_cases(path: Path, pattern: str) -> Iterator[tuple[str, Path]]:
    """(case id, path) for every match of a pattern with a {case} placeholder, sorted."""
    if "{case}" not in pattern:
        raise ValueError(f"pattern {pattern!r} has no {{case}} placeholder")
    head, tail = pattern.split("{case}", 1)
    for match in sorted(path.glob(pattern.replace("{case}", "*"))):
        rel = str(match.relative_to(path))
        if rel.startswith(head) and rel.endswith(tail) and len(rel) > len(head) + len(tail):
            yield rel[len(head) : len(rel) - len(tail)], match


def _declared_from_config(ds: dict) -> dict[str, int]:
    """Formats without a dataset.json declare their label values in the config's `labels`."""
    declared = {"background": 0}
    for name, value in (ds.get("labels") or {}).items():
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            declared[name if i == 0 else f"{name}_{v}"] = int(v)
    return declared


def _read_pairs(path: Path, ds: dict) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
    """`nifti`, `png` (files) and `dicom` (one series folder per case): images and labels matched by patterns."""
    ndim = 2 if ds["format"] == "png" else 3

    def cases() -> Iterator[CaseFiles]:
        for case_id, image in _pattern_cases(path, ds["image_pattern"]):
            label = path / ds["label_pattern"].replace("{case}", case_id)
            yield CaseFiles(case_id, [str(image)], str(label) if label.exists() else None, {"ndim": ndim})

    return DatasetInfo(_declared_from_config(ds), [ds["modality"]]), cases()


def _read_synthetic(path: Path, ds: dict) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
    """The phantoms: `ct3d` is an nnU-Net raw dataset, `png2d` a folder of PNG images and masks."""
    from samstudy import synthetic

    if synthetic.kind(ds) == "png2d":
        info, cases = _read_pairs(path, {**ds, "format": "png", **synthetic.PNG_PATTERNS})
        info.declared = dict(synthetic.PNG_LABELS)
        return info, cases
    return _read_nnunet(path)


READERS = {
    "nnunet": lambda path, ds: _read_nnunet(path),
    "msd": lambda path, ds: _read_msd(path),
    "synthetic": _read_synthetic,
    "nifti": _read_pairs,
    "dicom": _read_pairs,
    "png": _read_pairs,
}


def dataset_path(layout, ds: dict) -> Path:
    """Where a dataset lives; the built-in ones (phantoms, mni152) are written under results_dir/raw by default."""
    if ds.get("path"):
        return Path(ds["path"])
    return Path(layout.raw_dir(ds["name"]))


def dataset_files(ds: dict) -> list[str]:
    """Every file the ingest of a user dataset reads (dataset.json, each case's images and label; every
    file of a DICOM series folder; the patient-id CSV), sorted; [] for a built-in dataset.

    A listing only (a dataset.json is parsed, no image is opened): cheap enough for the Snakefile to call
    at DAG time (measured in benchmarks/dag.py). A dataset the reader cannot list (e.g. its dataset.json is
    missing or broken) gives the files found so far; its ingest job then reports the problem by file name.
    """
    if samstudy_config.generated(ds) or not ds.get("path"):
        return []
    root = Path(ds["path"]).expanduser()
    files: set[str] = set()
    meta = root / "dataset.json"
    if ds["format"] in ("nnunet", "msd") and meta.is_file():
        files.add(str(meta))
    try:
        _, cases = READERS[ds["format"]](root, ds)
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
    csv = samstudy_config.patient_csv(ds)
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
