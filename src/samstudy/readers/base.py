"""What every reader shares: the case files a listing finds, what it learns of a dataset, the options its
pixels are read with, the errors it raises, and the `Reader` interface one input format implements.

Light on purpose (standard library only): the Snakefile lists the raw files of every dataset when it
builds the DAG, through `samstudy.config` and the registry, so no image library is imported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# 2D raster files: read with Pillow, spacing from the config (they carry none).
RASTER_ENDINGS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_raster(path: str | Path) -> bool:
    """A 2D raster file (PNG, JPG, TIFF, BMP): read with Pillow, spacing from the config."""
    return str(path).lower().endswith(RASTER_ENDINGS)


class EntryError(ValueError):
    """A dataset entry breaks its format's rules; `config` raises it again as a ConfigError, same message."""


class CaseError(ValueError):
    """A problem with one case; the message names the file and what is wrong."""

    def __init__(self, file: str | Path, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = str(file)
        self.reason = reason


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


@dataclass(frozen=True)
class ReadOptions:
    """How a dataset's files are read: 2D spacing and mask binarisation (png)."""

    spacing: tuple[float, ...] | None = None
    mask_threshold: float | None = None


def patient_csv(ds: dict[str, Any]) -> str | None:
    """The patient-id CSV of a dataset entry (a relative path is under the dataset's `path`), or None."""
    spec = ds.get("patient_id")
    if not isinstance(spec, dict):
        return None
    path = Path(spec["csv"])
    return str(path if path.is_absolute() or not ds.get("path") else Path(ds["path"]) / path)


class Reader:
    """One input format (`format:` of a dataset entry): its config keys and rules, how it lists a dataset's
    cases, and how its files are read. Subclasses override what their format does differently."""

    name = ""
    # Keys of a dataset entry this format reads, besides the common ones (name, format, modality, role,
    # patient_id, ...): what config/README.md documents for it; tests/test_readers.py checks the schema has them.
    keys: tuple[str, ...] = ("path",)
    # Files of the dataset folder the listing itself parses (dataset.json): inputs of the ingest job too.
    metadata: tuple[str, ...] = ()
    # A built-in dataset: samstudy writes its files from the config (`write`), so its path need not exist.
    generated = False

    def check(self, ds: dict[str, Any], where: str) -> None:
        """Cross-key rules of an entry of this format (what the schema cannot say); fills format defaults.
        Raises EntryError. The rule every format shares: 2D read options only where files are 2D rasters."""
        for key in ("spacing", "mask_threshold"):
            if key in ds and not self.takes_raster_options(ds):
                raise EntryError(
                    f"{where}: '{key}' applies to 2D image files only (format png, or nnunet with a raster "
                    "file_ending); other formats carry their geometry"
                )

    def takes_raster_options(self, ds: dict[str, Any]) -> bool:
        """Whether the entry may set `spacing` and `mask_threshold` (its files are 2D rasters)."""
        return False

    def is_2d(self, ds: dict[str, Any]) -> bool:
        """Whether the entry holds 2D images (its manifest shape and spacing have two entries)."""
        return False

    def list_cases(self, root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        """What the dataset declares, and its cases one at a time (a generator: nothing is opened)."""
        raise NotImplementedError(f"reader {self.name}: list_cases")

    def read_options(self, ds: dict[str, Any]) -> ReadOptions:
        """How the entry's files are read: the config's `spacing` and `mask_threshold` (2D files)."""
        return options_from(ds.get("spacing"), ds.get("mask_threshold"))

    def write(self, root: Path, ds: dict[str, Any], seed: int) -> None:
        """Materialise a generated dataset at `root` (same settings, same bytes); nothing for user data."""


def options_from(spacing, mask_threshold) -> ReadOptions:
    """ReadOptions from a spacing (any sequence, or None) and a mask threshold."""
    return ReadOptions(tuple(float(v) for v in spacing) if spacing else None, mask_threshold)
