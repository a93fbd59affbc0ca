import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from samstudy import synthetic
from samstudy.ingest import CaseError, ingest_dataset, map_labels
from samstudy.paths import Layout

SETTINGS = {"n_patients": 4, "scans_per_patient": 1, "shape": [24, 24, 8]}


def _nnunet_dataset(tmp_path):
    root = synthetic.write_dataset(tmp_path / "raw", seed=1, settings=SETTINGS)
    ds = {"name": "ds", "format": "nnunet", "path": str(root), "modality": "CT", "role": "train_test"}
    return root, ds


def _rewrite(path, array_fn=None, **geometry):
    img = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(array_fn(sitk.GetArrayFromImage(img)) if array_fn else sitk.GetArrayFromImage(img))
    new.CopyInformation(img) if array_fn is None or new.GetSize() == img.GetSize() else None
    for key, value in geometry.items():
        getattr(new, f"Set{key}")(value)
    sitk.WriteImage(new, str(path))


def test_valid_dataset_gives_manifest(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert len(manifest) == 4
    table = pd.read_parquet(layout.ingest_table("ds"))
    assert list(table["case_id"]) == ["pat00_s0", "pat01_s0", "pat02_s0", "pat03_s0"]
    assert table["content_hash"].str.len().eq(64).all()
    assert list(table["shape"].iloc[0]) == [24, 24, 8]
    assert pd.read_parquet(layout.ingest_rejected("ds")).empty


def test_bad_cases_are_rejected_with_file_and_reason_and_the_rest_goes_on(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    # pat00: label size mismatch; pat01: NaN in the image; pat02: undeclared label value 9; pat03 fine
    _rewrite(root / "labelsTr" / "pat00_s0.nii.gz", lambda a: a[:, :, :-2])
    _rewrite(root / "imagesTr" / "pat01_s0_0000.nii.gz", lambda a: np.where(a > 50, np.nan, a).astype(np.float32))
    _rewrite(root / "labelsTr" / "pat02_s0.nii.gz", lambda a: np.where(a == 3, 9, a).astype(np.uint8))
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert list(manifest["case_id"]) == ["pat03_s0"]
    rejected = pd.read_parquet(layout.ingest_rejected("ds")).set_index("case_id")
    assert "size" in rejected.loc["pat00_s0", "reason"] and rejected.loc["pat00_s0", "file"].endswith("pat00_s0.nii.gz")
    assert "NaN" in rejected.loc["pat01_s0", "reason"] and "pat01_s0_0000" in rejected.loc["pat01_s0", "file"]
    assert "[9]" in rejected.loc["pat02_s0", "reason"] and "not declared" in rejected.loc["pat02_s0", "reason"]


def test_geometry_mismatch_missing_and_truncated_files(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    _rewrite(root / "labelsTr" / "pat00_s0.nii.gz", Origin=(0.0, 0.0, 50.0))
    (root / "labelsTr" / "pat01_s0.nii.gz").unlink()
    data = (root / "imagesTr" / "pat02_s0_0000.nii.gz").read_bytes()
    (root / "imagesTr" / "pat02_s0_0000.nii.gz").write_bytes(data[: len(data) // 3])
    layout = Layout(str(tmp_path / "results"))
    ingest_dataset(ds, layout, seed=0)
    rejected = pd.read_parquet(layout.ingest_rejected("ds")).set_index("case_id")
    assert "origin" in rejected.loc["pat00_s0", "reason"]
    assert "missing" in rejected.loc["pat01_s0", "reason"]
    assert "unreadable" in rejected.loc["pat02_s0", "reason"]


def test_strict_mode_makes_a_rejection_fatal(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    (root / "labelsTr" / "pat01_s0.nii.gz").unlink()
    with pytest.raises(CaseError, match="pat01_s0.nii.gz"):
        ingest_dataset(ds, Layout(str(tmp_path / "results")), seed=0, strict=True)


def test_label_mapping_merges_and_chooses(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    ds["labels"] = {"abdomen_organs": [1, 2]}
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert set(json.loads(manifest["labels_present"].iloc[0])) == {"abdomen_organs"}
    assert map_labels(np.array([0, 1, 2, 3]), {1: [1, 2]}).tolist() == [0, 1, 1, 0]
    ds["labels"] = {"x": 7}
    with pytest.raises(ValueError, match="not declared"):
        ingest_dataset(ds, layout, seed=0)


def _write(path, array, spacing=(1.0, 1.0, 2.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return img


def _cfg_dataset(root, fmt, **kw):
    from samstudy import config as samstudy_config

    ds = {"name": "d", "format": fmt, "path": str(root), "modality": "MR", "labels": {"lesion": 1}, **kw}
    return samstudy_config.validate({"datasets": [ds]})["datasets"][0]


def test_nifti_folder_reader_with_patterns(tmp_path):
    rng = np.random.default_rng(0)
    for case in ("a01", "b02"):
        lab = np.zeros((6, 10, 12), dtype=np.uint8)
        lab[2:4, 3:6, 4:8] = 1
        _write(tmp_path / "img" / f"{case}_t1.nii.gz", rng.normal(size=(6, 10, 12)).astype(np.float32))
        _write(tmp_path / "seg" / f"{case}_mask.nii.gz", lab)
    _write(tmp_path / "img" / "c03_t1.nii.gz", rng.normal(size=(6, 10, 12)).astype(np.float32))  # no label
    ds = _cfg_dataset(tmp_path, "nifti", image_pattern="img/{case}_t1.nii.gz", label_pattern="seg/{case}_mask.nii.gz")
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert list(manifest["case_id"]) == ["a01", "b02"]
    assert json.loads(manifest["labels_present"].iloc[0]) == {"lesion": 24}
    rejected = pd.read_parquet(layout.ingest_rejected("d"))
    assert rejected["case_id"].tolist() == ["c03"] and "no label" in rejected["reason"].iloc[0]


def test_formats_without_dataset_json_need_declared_labels():
    from samstudy import config as samstudy_config
    from samstudy.config import ConfigError

    with pytest.raises(ConfigError, match="declare its label values"):
        samstudy_config.validate({"datasets": [{"name": "d", "format": "nifti", "path": "x", "modality": "CT"}]})


def _dicom_series(folder, volume, spacing=(0.8, 0.8, 2.5), skip=None):
    """Write a volume (z, y, x) as a DICOM series the way scanners do: one file per slice with its position."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    for z in range(volume.shape[0]):
        if z == skip:
            continue
        sl = sitk.GetImageFromArray(volume[z].astype(np.int16))
        sl.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "CT", "0020|000d": "1.2.3.4", "0020|000e": series_uid, "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{z * spacing[2]}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series_uid}.{z + 1}",
        }  # fmt: skip
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_reader_and_missing_slice(tmp_path):
    volume = (np.random.default_rng(1).normal(size=(8, 12, 14)) * 100).astype(np.int16)
    lab = np.zeros((8, 12, 14), dtype=np.uint8)
    lab[3:5, 4:8, 4:9] = 1
    for case, skip in (("good", None), ("gappy", 4)):
        _dicom_series(tmp_path / "images" / case, volume, skip=skip)
        _write(tmp_path / "labels" / f"{case}.nii.gz", lab if skip is None else lab[:7], spacing=(0.8, 0.8, 2.5))
    ds = _cfg_dataset(tmp_path, "dicom")
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert manifest["case_id"].tolist() == ["good"]
    assert list(manifest["shape"].iloc[0]) == [14, 12, 8]
    assert np.allclose(manifest["spacing"].iloc[0], [0.8, 0.8, 2.5])
    rejected = pd.read_parquet(layout.ingest_rejected("d")).set_index("case_id")
    assert "missing or unevenly spaced" in rejected.loc["gappy", "reason"]
    from samstudy.ingest import load_dataset_table, read_case

    table, info = load_dataset_table(layout, "d")
    image, label = read_case(table.iloc[0], info)
    assert np.array_equal(sitk.GetArrayFromImage(image), volume) and label.sum() == lab.sum()
