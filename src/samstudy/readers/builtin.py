"""Built-in real datasets (`builtin: {kind: mni152}`): written by `samstudy.builtin` from images a Python
package ships, then read as the `nifti` image/label folder they are written as, with the labels the
built-in dataset declares. One subject: only `role: test_only`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samstudy.readers.base import CaseFiles, DatasetInfo, EntryError
from samstudy.readers.nifti import NiftiReader


class Mni152Reader(NiftiReader):
    """The MNI152 template and its tissue labels, as a NIfTI folder (`images/mni152.nii.gz`, `labels/...`)."""

    name = "mni152"
    keys = ("builtin", "path")
    generated = True

    def check(self, ds: dict[str, Any], where: str) -> None:
        """Written as NIfTI, one subject; then the nifti rules (its labels are declared by the dataset)."""
        if ds["format"] != "nifti":
            raise EntryError(f"{where}: builtin mni152 is written as NIfTI: use format nifti")
        if ds["role"] != "test_only":
            raise EntryError(f"{where}: builtin mni152 is one subject: it can only be role test_only")
        super().check(ds, where)

    def list_cases(self, root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        """The nifti listing, with the label values the built-in dataset declares."""
        from samstudy import builtin  # the writer (NumPy, nilearn): imported by ingest jobs only

        info, cases = super().list_cases(root, ds)
        info.declared = builtin.declared_labels(ds["builtin"])
        return info, cases

    def write(self, root: Path, ds: dict[str, Any], seed: int) -> None:
        """Write the template and its labels (the seed plays no part: same settings, same bytes)."""
        from samstudy import builtin

        builtin.write(root, ds["builtin"])
