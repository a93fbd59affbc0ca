"""`format: nnunet`: an nnU-Net v2 raw dataset (dataset.json, imagesTr/<case>_<channel>.<ending>,
labelsTr/<case>.<ending>). A raster `file_ending` (.png, .jpg, ...) makes it a 2D dataset, all channels of
a case (e.g. R, G, B) in one file, as nnU-Net's natural 2D images are."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samstudy.io import read_json
from samstudy.readers.base import RASTER_ENDINGS, CaseFiles, DatasetInfo, Reader, is_raster


def nnunet_raster(ds: dict[str, Any]) -> bool:
    """An nnU-Net raw dataset of 2D image files (its dataset.json's file_ending is .png, .jpg, ...)."""
    if ds["format"] != "nnunet" or not ds.get("path"):
        return False
    meta = Path(ds["path"]).expanduser() / "dataset.json"
    try:
        return str(json.loads(meta.read_text()).get("file_ending", "")).lower() in RASTER_ENDINGS
    except (OSError, ValueError):
        return False  # ingest reports a missing or unreadable dataset.json, naming the file


def list_nnunet(path: Path) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
    """The cases of an nnU-Net raw dataset folder, in imagesTr's name order (also the ct3d phantom's)."""
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


class NnunetReader(Reader):
    """nnU-Net v2 raw datasets: labels and channels from dataset.json."""

    name = "nnunet"
    keys = ("path", "spacing", "mask_threshold")
    metadata = ("dataset.json",)

    def takes_raster_options(self, ds: dict[str, Any]) -> bool:
        """2D raster files carry no spacing: a raster dataset may give it, and a mask threshold."""
        return nnunet_raster(ds)

    def is_2d(self, ds: dict[str, Any]) -> bool:
        """A raster file_ending makes a 2D dataset."""
        return nnunet_raster(ds)

    def list_cases(self, root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        """dataset.json's labels and channels; the cases of imagesTr."""
        return list_nnunet(root)
