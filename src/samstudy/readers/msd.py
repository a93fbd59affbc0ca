"""`format: msd`: a Medical Segmentation Decathlon task folder (dataset.json with `modality`, `labels`
value -> name, and `training` image/label pairs). Several modalities make a 4D image (x, y, z, channel)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from samstudy.io import read_json
from samstudy.readers.base import CaseFiles, DatasetInfo, Reader


class MsdReader(Reader):
    """Decathlon datasets: the cases dataset.json's `training` list names."""

    name = "msd"
    metadata = ("dataset.json",)

    def list_cases(self, root: Path, ds: dict[str, Any]) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        """dataset.json's labels and modalities; its training cases in the order it lists them."""
        meta_path = root / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: Decathlon dataset.json not found")
        meta = read_json(meta_path)
        declared = {name: int(value) for value, name in meta["labels"].items()}
        channels = [meta["modality"][k] for k in sorted(meta.get("modality", {"0": "image"}), key=int)]

        def cases() -> Iterator[CaseFiles]:
            for entry in meta["training"]:
                image = (root / entry["image"]).resolve()
                label = (root / entry["label"]).resolve()
                case_id = image.name.split(".")[0]
                yield CaseFiles(case_id, [str(image)], str(label), {"ndim": 4 if len(channels) > 1 else 3})

        return DatasetInfo(declared, channels), cases()
