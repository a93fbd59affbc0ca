"""`format: synthetic`: the built-in phantoms, written by `samstudy.synthetic` from the entry's `synthetic`
settings and the study seed. `ct3d` is read as the nnU-Net raw dataset it is written as, `png2d` as the
PNG image/mask folder it is written as (spacing from its settings: PNG files carry none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samstudy.readers.base import CaseFiles, DatasetInfo, EntryError, Reader, ReadOptions, options_from
from samstudy.readers.nnunet import list_nnunet
from samstudy.readers.png import PngReader


class SyntheticReader(Reader):
    """The phantoms: generated at ingest, then read by the reader of the layout they are written in."""

    name = "synthetic"
    keys = ("synthetic",)
    generated = True

    def check(self, ds: dict[str, Any], where: str) -> None:
        """The shared rules, then the phantom's: its kind's number of shape/spacing entries, ct3d-only keys."""
        super().check(ds, where)
        phantom = ds.setdefault("synthetic", {})
        kind = phantom.setdefault("kind", "ct3d")
        ndim = 2 if kind == "png2d" else 3
        for key in ("shape", "spacing"):
            if key in phantom and len(phantom[key]) != ndim:
                raise EntryError(f"{where}: synthetic.{key} of a {kind} phantom has {ndim} entries")
        for key in ("rotation_deg", "noise_hu"):
            if key in phantom and kind != "ct3d":
                raise EntryError(f"{where}: synthetic.{key} applies to the ct3d phantom only")

    def is_2d(self, ds: dict[str, Any]) -> bool:
        """The png2d phantom is 2D."""
        return (ds.get("synthetic") or {}).get("kind") == "png2d"

    def list_cases(self, root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        """`ct3d`: an nnU-Net raw dataset; `png2d`: a folder of PNG images and masks with the phantom's labels."""
        from samstudy import synthetic  # the writer (NumPy, SimpleITK): imported by ingest jobs only

        if synthetic.kind(ds) == "png2d":
            info, cases = PngReader().list_cases(root, {**ds, "format": "png", **synthetic.PNG_PATTERNS})
            info.declared = dict(synthetic.PNG_LABELS)
            return info, cases
        return list_nnunet(root)

    def read_options(self, ds: dict[str, Any]) -> ReadOptions:
        """The png2d phantom's pixel spacing comes from its settings (its PNG files carry none)."""
        from samstudy import synthetic

        spacing = ds.get("spacing")
        if synthetic.kind(ds) == "png2d":
            spacing = synthetic.png_spacing(ds)
        return options_from(spacing, ds.get("mask_threshold"))

    def write(self, root: Path, ds: dict[str, Any], seed: int) -> None:
        """Write the phantom of the entry's settings with the study seed."""
        from samstudy import synthetic

        synthetic.write_dataset(root, seed, ds.get("synthetic"))
