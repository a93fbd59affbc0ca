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
