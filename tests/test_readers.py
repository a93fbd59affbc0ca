"""The readers (samstudy.readers): one per format behind a registry that matches the schema, light enough for
the Snakefile to list files at DAG time, each format's rules, files read by what they are, and a new format
as one Reader subclass plus its registry line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samstudy import config as samstudy_config
from samstudy import readers
from samstudy.readers import BUILTINS, READERS, CaseError, CaseFiles, DatasetInfo, EntryError, Reader, ReadOptions


def _dataset_schema() -> dict:
    return samstudy_config.schema()["properties"]["datasets"]["items"]


def test_the_registry_holds_the_schemas_formats_and_the_keys_each_reader_reads():
    schema = _dataset_schema()
    assert sorted(READERS) == sorted(schema["properties"]["format"]["enum"])
    assert sorted(BUILTINS) == sorted(schema["properties"]["builtin"]["properties"]["kind"]["enum"])
    for name, reader in {**READERS, **BUILTINS}.items():
        assert reader.name == name
        missing = [k for k in reader.keys if k not in schema["properties"]]
        assert not missing, f"reader {name} reads keys the schema lacks: {missing}"


def test_an_entry_gets_its_builtin_reader_else_its_formats():
    assert readers.reader_for({"format": "nifti", "builtin": {"kind": "mni152"}}) is BUILTINS["mni152"]
    assert readers.reader_for({"format": "nifti"}) is READERS["nifti"]
    with pytest.raises(KeyError, match="format 'tiff3d' has no reader .*'dicom'"):
        readers.reader_for({"format": "tiff3d"})


def test_listing_and_checking_entries_import_no_image_library(tmp_path):
    """config and the registry are imported by the Snakefile, which lists every dataset's files at DAG time:
    neither NumPy, SimpleITK, Pillow nor pandas may load for that."""
    root = tmp_path / "raw"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in ("a", "b"):
        (root / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(b"")
        (root / "labelsTr" / f"{case}.nii.gz").write_bytes(b"")
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    entry = {"name": "d", "format": "nnunet", "path": str(root), "modality": "CT", "role": "train_test"}
    probe = (
        "import json, sys\n"
        "from samstudy import config, readers\n"
        f"ds = {entry!r}\n"
        "config._check_dataset_entry(ds)\n"
        "config.check_paths({'datasets': [ds]})\n"
        "files = readers.dataset_files(ds)\n"
        "print(json.dumps([len(files), readers.is_2d(ds), sorted(m for m in ('numpy', 'SimpleITK', 'PIL', "
        "'pandas', 'torch') if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [5, False, []]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": "nifti", "path": "x"}, "datasets.d: format nifti has no dataset.json; declare its label values"),
        ({"format": "msd"}, "datasets.d: format msd needs a 'path'"),
        ({"format": "nifti", "path": "x", "labels": {"a": 1}, "spacing": [1, 1]}, "'spacing' applies to 2D image"),
        ({"format": "synthetic", "synthetic": {"kind": "png2d", "shape": [8, 8, 8]}}, "a png2d phantom has 2 entries"),
        ({"format": "synthetic", "synthetic": {"kind": "png2d", "noise_hu": 3}}, "applies to the ct3d phantom only"),
        ({"format": "png", "builtin": {"kind": "mni152"}}, "builtin mni152 is written as NIfTI: use format nifti"),
        ({"format": "nifti", "builtin": {"kind": "mni152"}, "role": "train_test"}, "can only be role test_only"),
    ],
)
def test_each_readers_rules_refuse_an_entry_with_the_configs_message(entry, message):
    ds = {"name": "d", "modality": "CT", "role": "test_only", **entry}
    with pytest.raises(EntryError, match=message):
        readers.check_entry(dict(ds))
    with pytest.raises(samstudy_config.ConfigError, match=message):
        samstudy_config.validate({"datasets": [ds]})


def test_each_reader_fills_its_defaults_and_says_whether_its_images_are_2d(tmp_path):
    def checked(**entry) -> dict:
        ds = {"name": "d", "modality": "CT", "role": "train_test", **entry}
        readers.check_entry(ds)
        return ds

    png = checked(format="png", path="x", labels={"lesion": 1}, patient_id={"csv": "ids.csv"})
    assert (png["image_pattern"], png["label_pattern"]) == ("images/{case}.png", "masks/{case}.png")
    assert png["patient_id"] == {"csv": "ids.csv", "case_column": "case_id", "patient_column": "patient_id"}
    assert readers.patient_csv(png) == str(Path("x") / "ids.csv")
    dicom = checked(format="dicom", path="x", labels={"lesion": 1})
    assert (dicom["image_pattern"], dicom["label_pattern"]) == ("images/{case}", "labels/{case}.nii.gz")
    phantom = checked(format="synthetic")
    assert phantom["synthetic"] == {"kind": "ct3d"} and readers.generated(phantom)
    assert [readers.is_2d(ds) for ds in (png, dicom, phantom)] == [True, False, False]
    assert readers.is_2d(checked(format="synthetic", synthetic={"kind": "png2d"}))
    mni = checked(format="nifti", role="test_only", builtin={"kind": "mni152"})
    assert mni["image_pattern"] == "images/{case}.nii.gz" and readers.generated(mni) and not readers.is_2d(mni)
    # an nnU-Net dataset of PNG files is 2D and may say its spacing
    (tmp_path / "dataset.json").write_text(json.dumps({"file_ending": ".png", "labels": {"background": 0}}))
    raster = checked(format="nnunet", path=str(tmp_path), spacing=[0.5, 0.5])
    assert readers.is_2d(raster) and readers.read_options(raster) == ReadOptions((0.5, 0.5), None)
    # the png2d phantom's spacing comes from its settings
    png2d = checked(format="synthetic", synthetic={"kind": "png2d", "spacing": [0.25, 0.5]})
    assert readers.read_options(png2d) == ReadOptions((0.25, 0.5), None)


def test_files_are_read_by_what_they_are(tmp_path):
    from PIL import Image

    rgb = np.zeros((6, 5, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "im.png")
    mask = np.zeros((6, 5), np.uint8)
    mask[2:4, 1:3] = 1
    Image.fromarray(mask).save(tmp_path / "mask.png")
    image = readers.read_image(str(tmp_path / "im.png"), (0.5, 0.25))
    assert image.GetDimension() == 2 and image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetSpacing() == (0.5, 0.25)
    label = readers.read_label(str(tmp_path / "mask.png"), image, str(tmp_path / "im.png"), ReadOptions((0.5, 0.25)))
    assert label.GetSpacing() == (0.5, 0.25) and sitk.GetArrayFromImage(label).sum() == 4
    volume = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    sitk.WriteImage(volume, str(tmp_path / "v.nii.gz"))
    assert readers.read_image(str(tmp_path / "v.nii.gz")).GetSize() == (5, 4, 3)
    with pytest.raises(CaseError, match="label file is missing"):
        readers.read_label(str(tmp_path / "none.nii.gz"), volume, str(tmp_path / "v.nii.gz"), ReadOptions())
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    with pytest.raises(CaseError, match="image file is unreadable or truncated"):
        readers.load_image(str(tmp_path / "broken.nii.gz"), "image")


class _ListReader(Reader):
    """A format invented for the test: a cases.txt lists the case ids; images/<id>.nii.gz, labels/<id>.nii.gz."""

    name = "listed"
    keys = ("path", "labels")
    metadata = ("cases.txt",)

    def list_cases(self, root: Path, ds: dict) -> tuple[DatasetInfo, Iterator[CaseFiles]]:
        ids = (root / "cases.txt").read_text().split()
        found = (
            CaseFiles(c, [str(root / "images" / f"{c}.nii.gz")], str(root / "labels" / f"{c}.nii.gz")) for c in ids
        )
        return DatasetInfo({"background": 0, "lesion": 1}, ["MR"]), found


def test_a_new_format_is_one_reader_and_its_registry_line(tmp_path, monkeypatch):
    """Listing, the ingest job's inputs and ingest itself take a new format from its registry line."""
    from samstudy.ingest import ingest_dataset
    from samstudy.paths import Layout

    monkeypatch.setitem(READERS, "listed", _ListReader())
    for case in ("c1", "c2"):
        image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
        label = sitk.GetImageFromArray((np.arange(60).reshape(3, 4, 5) > 40).astype(np.uint8))
        for folder, img in (("images", image), ("labels", label)):
            (tmp_path / folder).mkdir(exist_ok=True)
            sitk.WriteImage(img, str(tmp_path / folder / f"{case}.nii.gz"))
    (tmp_path / "cases.txt").write_text("c2\nc1\n")
    ds = {"name": "new", "format": "listed", "path": str(tmp_path), "modality": "MR", "role": "train_test"}
    readers.check_entry(ds)
    files = readers.dataset_files(ds)
    assert [Path(f).relative_to(tmp_path).as_posix() for f in files] == [
        "cases.txt",
        "images/c1.nii.gz",
        "images/c2.nii.gz",
        "labels/c1.nii.gz",
        "labels/c2.nii.gz",
    ]
    manifest = ingest_dataset(ds, Layout(str(tmp_path / "results")), seed=0)
    assert manifest["case_id"].tolist() == ["c2", "c1"] and manifest["labels_present"].iloc[0] == '{"lesion": 19}'
