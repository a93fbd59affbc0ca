"""Image/label pairs matched by two patterns with a `{case}` placeholder: the shared listing of the formats
without a dataset.json (`nifti`, `png`, `dicom`), whose label values the config declares in `labels`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samstudy.readers.base import CaseFiles, DatasetInfo, EntryError, Reader


def pattern_cases(path: Path, pattern: str) -> Iterator[tuple[str, Path]]:
    """(case id, path) for every match of a pattern with a {case} placeholder, sorted."""
    if "{case}" not in pattern:
        raise ValueError(f"pattern {pattern!r} has no {{case}} placeholder")
    head, tail = pattern.split("{case}", 1)
    for match in sorted(path.glob(pattern.replace("{case}", "*"))):
        rel = str(match.relative_to(path))
        if rel.startswith(head) and rel.endswith(tail) and len(rel) > len(head) + len(tail):
            yield rel[len(head) : len(rel) - len(tail)], match


def declared_from_config(ds: dict[str, Any]) -> dict[str, int]:
    """Formats without a dataset.json declare their label values in the config's `labels`."""
    declared = {"background": 0}
    for name, value in (ds.get("labels") or {}).items():
        for i, v in enumerate(value if isinstance(value, list) else [value]):
            declared[name if i == 0 else f"{name}_{v}"] = int(v)
    return declared


class PatternReader(Reader):
    """Images and labels matched by `image_pattern` / `label_pattern`; an image without its label is listed
    with label None (ingest rejects it, naming the image)."""

    keys = ("path", "labels", "image_pattern", "label_pattern")
    default_patterns = ("images/{case}.nii.gz", "labels/{case}.nii.gz")
    ndim = 3

    def check(self, ds: dict[str, Any], where: str) -> None:
        """Declared labels (a built-in dataset declares its own), default patterns, then the shared rules."""
        if not ds.get("labels") and not ds.get("builtin"):
            raise EntryError(
                f"{where}: format {ds['format']} has no dataset.json; declare its label values in 'labels'"
            )
        image, label = self.default_patterns
        ds.setdefault("image_pattern", image)
        ds.setdefault("label_pattern", label)
        super().check(ds, where)

    def list_cases(self, root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        """Every image the image pattern matches, with the label file the label pattern names (if it exists)."""

        def cases() -> Iterator[CaseFiles]:
            for case_id, image in pattern_cases(root, ds["image_pattern"]):
                label = root / ds["label_pattern"].replace("{case}", case_id)
                yield CaseFiles(case_id, [str(image)], str(label) if label.exists() else None, {"ndim": self.ndim})

        return DatasetInfo(declared_from_config(ds), [ds["modality"]]), cases()
