import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from samstudy import synthetic
from samstudy.cases import map_labels
from samstudy.ingest import CaseError, ingest_dataset
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

    ds = {"name": "d", "format": fmt, "path": str(root), "modality": "MR", "labels": {"lesion": 1}}
    ds.update(kw)
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


def _dicom_series(folder, volume, spacing=(0.8, 0.8, 2.5), skip=None, positions=None,
                  series_uid="1.2.826.0.1.3680043.2.1125.1.42"):  # fmt: skip
    """Write a volume (z, y, x) as a DICOM series the way scanners do: one file per slice with its position."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    positions = positions or [z * spacing[2] for z in range(volume.shape[0])]
    for z in range(volume.shape[0]):
        if z == skip:
            continue
        sl = sitk.GetImageFromArray(volume[z].astype(np.int16))
        sl.SetSpacing(spacing[:2])
        tags = {
            "0008|0060": "CT", "0020|000d": "1.2.3.4", "0020|000e": series_uid, "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{positions[z]}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2]),
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0052": "1.2.826.0.1.3680043.2.1125.1.43", "0010|0020": "P1", "0010|0010": "Test^Patient",
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
    from samstudy.cases import load_dataset_table, read_case

    table, info = load_dataset_table(layout, "d")
    image, label = read_case(table.iloc[0], info)
    assert np.array_equal(sitk.GetArrayFromImage(image), volume) and label.sum() == lab.sum()


# ---------------------------------------------------------------- more validation problems


def test_spacing_direction_inf_and_absurd_dimensions_are_rejected(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    _rewrite(root / "labelsTr" / "pat00_s0.nii.gz", Spacing=(2.0, 2.0, 2.0))
    _rewrite(root / "labelsTr" / "pat01_s0.nii.gz", Direction=synthetic.direction_matrix(40.0))
    _rewrite(root / "imagesTr" / "pat02_s0_0000.nii.gz", lambda a: np.where(a > 50, np.inf, a).astype(np.float32))
    wide = np.zeros((1, 2, 5000), dtype=np.int16)  # 5000 voxels along x: beyond MAX_DIM, a corrupt header
    _write(root / "imagesTr" / "pat03_s0_0000.nii.gz", wide, spacing=(1.0, 1.0, 1.0))
    _write(root / "labelsTr" / "pat03_s0.nii.gz", wide.astype(np.uint8), spacing=(1.0, 1.0, 1.0))
    layout = Layout(str(tmp_path / "results"))
    with pytest.raises(ValueError, match="no valid case"):
        ingest_dataset(ds, layout, seed=0)
    rejected = {r.case_id: r for r in _rejected_rows(ds, layout)}
    assert "label spacing" in rejected["pat00_s0"].reason and rejected["pat00_s0"].file.endswith("pat00_s0.nii.gz")
    assert "label direction" in rejected["pat01_s0"].reason
    assert "NaN/inf" in rejected["pat02_s0"].reason
    assert "absurd dimensions (5000, 2, 1)" in rejected["pat03_s0"].reason


def _rejected_rows(ds, layout):
    """Rejections of a dataset where every case is bad (ingest raises, so collect them in strict=False
    mode case by case through the validator)."""
    from samstudy.ingest import label_mapping, validate_case
    from samstudy.readers import dataset_path, list_cases, read_options

    info, found = list_cases(dataset_path(layout, ds), ds)
    names, sources = label_mapping(ds, info)
    out = []
    for files in found:
        try:
            validate_case(files, info, sources, names, read_options(ds))
        except CaseError as err:
            out.append(pd.Series({"case_id": files.case_id, "file": err.file, "reason": err.reason}))
    return out


def test_4d_where_3d_is_expected_zero_size_and_non_orthonormal_direction(tmp_path):
    root, ds = _nnunet_dataset(tmp_path)
    image = root / "imagesTr" / "pat00_s0_0000.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([arr, arr]), isVector=False), str(image))  # 4D
    import nibabel

    nibabel.save(nibabel.Nifti1Image(np.zeros((0, 4, 4), np.float32), np.eye(4)), root / "labelsTr" / "pat01_s0.nii.gz")
    layout = Layout(str(tmp_path / "results"))
    ingest_dataset(ds, layout, seed=0)
    rejected = pd.read_parquet(layout.ingest_rejected("ds")).set_index("case_id")
    assert "expected a 3D image, found 4D" in rejected.loc["pat00_s0", "reason"]
    assert "unreadable" in rejected.loc["pat01_s0", "reason"] and rejected.loc["pat01_s0", "file"].endswith(".nii.gz")
    # NIfTI readers coerce a skewed direction to an orthogonal one; MetaImage keeps it, so it is checked
    skew = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    skew.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    (tmp_path / "mha" / "images").mkdir(parents=True)
    (tmp_path / "mha" / "labels").mkdir()
    sitk.WriteImage(skew, str(tmp_path / "mha" / "images" / "skew.mha"))
    sitk.WriteImage(sitk.Cast(skew, sitk.sitkUInt8), str(tmp_path / "mha" / "labels" / "skew.mha"))
    ds = _cfg_dataset(tmp_path / "mha", "nifti", image_pattern="images/{case}.mha", label_pattern="labels/{case}.mha")
    (case,) = _rejected_rows(ds, layout)
    assert case.reason == "direction matrix is not orthonormal" and case.file.endswith("skew.mha")


def test_msd_reader_channels_3d_where_4d_expected_and_duplicate_ids(tmp_path):
    rng = np.random.default_rng(0)
    lab = np.zeros((5, 8, 9), dtype=np.uint8)
    lab[1:3, 2:5, 2:6] = 1
    four_d = rng.normal(size=(2, 5, 8, 9)).astype(np.float32)  # (channel, z, y, x)
    for name, array in (("good", four_d), ("flat", four_d[0])):
        img = sitk.GetImageFromArray(array, isVector=False)
        (tmp_path / "imagesTr").mkdir(exist_ok=True)
        sitk.WriteImage(img, str(tmp_path / "imagesTr" / f"{name}.nii.gz"))
        _write(tmp_path / "labelsTr" / f"{name}.nii.gz", lab, spacing=(1.0, 1.0, 1.0))
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [
            {"image": "./imagesTr/good.nii.gz", "label": "./labelsTr/good.nii.gz"},
            {"image": "./imagesTr/flat.nii.gz", "label": "./labelsTr/flat.nii.gz"},
            {"image": "./imagesTr/good.nii.gz", "label": "./labelsTr/good.nii.gz"},
        ],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = {"name": "brats", "format": "msd", "path": str(tmp_path), "modality": "MR", "role": "train_test"}
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert manifest["case_id"].tolist() == ["good"] and list(manifest["shape"].iloc[0]) == [9, 8, 5]
    rejected = pd.read_parquet(layout.ingest_rejected("brats"))
    assert rejected["reason"].tolist() == ["expected a 4D image, found 3D", "duplicate case id 'good'"]
    info = json.loads(Path(layout.ingest_info("brats")).read_text())
    assert info["channels"] == ["FLAIR", "T1w"] and info["labels"] == {"1": "tumour"}


def test_empty_label_is_kept_with_a_warning(tmp_path, caplog):
    root, ds = _nnunet_dataset(tmp_path)
    _rewrite(root / "labelsTr" / "pat02_s0.nii.gz", lambda a: np.zeros_like(a))
    with caplog.at_level("WARNING", logger="samstudy.ingest"):
        manifest = ingest_dataset(ds, Layout(str(tmp_path / "results")), seed=0).set_index("case_id")
    assert json.loads(manifest.loc["pat02_s0", "labels_present"]) == {}
    assert any("pat02_s0.nii.gz" in r.message and "empty ground truth" in r.message for r in caplog.records)


def test_unevenly_spaced_dicom_slices_are_rejected(tmp_path):
    volume = np.zeros((5, 6, 7), dtype=np.int16)
    _dicom_series(tmp_path / "images" / "uneven", volume, positions=[0.0, 2.5, 5.0, 9.0, 11.5])
    _write(tmp_path / "labels" / "uneven.nii.gz", np.zeros((5, 6, 7), np.uint8), spacing=(0.8, 0.8, 2.5))
    ds = _cfg_dataset(tmp_path, "dicom")
    (case,) = _rejected_rows(ds, Layout(str(tmp_path / "results")))
    assert "unevenly spaced" in case.reason and "4.0" in case.reason and case.file.endswith("uneven")


# ---------------------------------------------------------------- png: 2D image/mask folders


def _save(path, array, mode=None, palette=None, **kw):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    if palette is not None:
        im.putpalette(palette)
    im.save(path, **kw)
    return path


def _rgb_and_mask(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[8:20, 10:25] = 1
    rgb = np.clip(rng.normal(150, 10, size=(h, w, 3)) - 80 * mask[..., None], 0, 255).astype(np.uint8)
    return rgb, mask


def test_png_reader_binary_masks_with_rgb_grey_jpg_and_tiff_images(tmp_path):
    rgb, mask = _rgb_and_mask()
    grey16 = (rgb[..., 0].astype(np.uint16) * 200).astype(np.uint16)
    _save(tmp_path / "images" / "rgb.png", rgb)
    _save(tmp_path / "images" / "grey.png", rgb[..., 1])
    _save(tmp_path / "images" / "photo.jpg", rgb, quality=95)
    _save(tmp_path / "images" / "scan.tif", grey16)
    _save(tmp_path / "images" / "rgba.png", np.dstack([rgb, np.full(mask.shape, 255, np.uint8)]))
    for case in ("rgb", "grey", "photo", "scan", "rgba"):
        _save(tmp_path / "masks" / f"{case}.png", mask * 255)  # ISIC style: 0/255
    layout = Layout(str(tmp_path / "results"))
    for ending in ("png", "jpg", "tif"):
        ds = _cfg_dataset(
            tmp_path, "png", name=f"d_{ending}", labels={"lesion": 255}, spacing=[0.25, 0.5],
            image_pattern=f"images/{{case}}.{ending}",
        )  # fmt: skip
        manifest = ingest_dataset(ds, layout, seed=0)
        assert all(list(s) == [40, 30] for s in manifest["shape"])
        assert all(np.allclose(s, [0.25, 0.5]) for s in manifest["spacing"])
        assert all(json.loads(p) == {"lesion": int(mask.sum())} for p in manifest["labels_present"])
    from samstudy.cases import load_dataset_table, read_case

    table, info = load_dataset_table(layout, "d_png")
    assert info["channels"] == ["R", "G", "B"]  # a colour image is in the dataset
    cases = {row["case_id"]: read_case(row, info) for row in table.to_dict("records")}
    image, label = cases["rgb"]
    assert image.GetNumberOfComponentsPerPixel() == 3 and np.array_equal(sitk.GetArrayFromImage(image), rgb)
    assert np.allclose(image.GetSpacing(), (0.25, 0.5)) and np.array_equal(label, mask)
    assert np.array_equal(sitk.GetArrayFromImage(cases["rgba"][0]), rgb)  # alpha dropped
    assert cases["grey"][0].GetNumberOfComponentsPerPixel() == 1
    table, info = load_dataset_table(layout, "d_tif")
    image, _ = read_case(table.iloc[0], info)
    assert np.array_equal(sitk.GetArrayFromImage(image), grey16) and info["channels"] == ["MR"]  # 16-bit grey


def test_png_reader_index_palette_and_thresholded_jpeg_masks(tmp_path):
    rgb, mask = _rgb_and_mask()
    index = mask.copy()
    index[22:27, 30:36] = 2
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9)  # index 1 red, 2 green
    for case in ("index", "palette"):
        _save(tmp_path / "images" / f"{case}.png", rgb)
    _save(tmp_path / "masks" / "index.png", index)
    _save(tmp_path / "masks" / "palette.png", index, mode="P", palette=palette)
    layout = Layout(str(tmp_path / "results"))
    ds = _cfg_dataset(tmp_path, "png", name="multi", labels={"lesion": 1, "nodule": 2})
    manifest = ingest_dataset(ds, layout, seed=0)
    expected = {"lesion": int(mask.sum()), "nodule": 30}
    assert [json.loads(p) for p in manifest["labels_present"]] == [expected, expected]
    # Kvasir style: masks saved as JPEG, so their edges are not exactly 0/255 -> mask_threshold
    jpeg = tmp_path / "kvasir"
    _save(jpeg / "images" / "polyp.jpg", rgb, quality=90)
    _save(jpeg / "masks" / "polyp.jpg", np.dstack([mask * 255] * 3), quality=70)
    ds = _cfg_dataset(jpeg, "png", name="kvasir", labels={"polyp": 1}, image_pattern="images/{case}.jpg",
                      label_pattern="masks/{case}.jpg")  # fmt: skip
    (case,) = _rejected_rows(ds, layout)
    assert "colour mask" in case.reason or "mask_threshold" in case.reason
    manifest = ingest_dataset({**ds, "mask_threshold": 128}, layout, seed=0)
    assert abs(json.loads(manifest["labels_present"].iloc[0])["polyp"] - int(mask.sum())) <= 4


def test_png_reader_rejects_size_mismatch_colour_masks_truncated_and_multipage_files(tmp_path):
    from PIL import Image

    rgb, mask = _rgb_and_mask()
    for case in ("small_mask", "colour_mask", "truncated", "pages", "good"):
        _save(tmp_path / "images" / f"{case}.tif", rgb)
        _save(tmp_path / "masks" / f"{case}.png", mask)
    _save(tmp_path / "masks" / "small_mask.png", mask[:-2, :-3])
    _save(tmp_path / "masks" / "colour_mask.png", np.dstack([mask * 255, mask * 0, mask * 128]))
    data = (tmp_path / "images" / "truncated.tif").read_bytes()
    (tmp_path / "images" / "truncated.tif").write_bytes(data[: len(data) // 2])
    Image.fromarray(rgb).save(tmp_path / "images" / "pages.tif", save_all=True, append_images=[Image.fromarray(rgb)])
    ds = _cfg_dataset(tmp_path, "png", image_pattern="images/{case}.tif")
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert manifest["case_id"].tolist() == ["good"]
    rejected = pd.read_parquet(layout.ingest_rejected("d")).set_index("case_id")
    assert rejected.loc["small_mask", "reason"] == "label size (37, 28) differs from image size (40, 30)"
    assert rejected.loc["small_mask", "file"].endswith("masks/small_mask.png")
    assert "colour mask" in rejected.loc["colour_mask", "reason"]
    assert "truncated" in rejected.loc["truncated", "reason"] and rejected.loc["truncated", "file"].endswith(".tif")
    assert "2 frames/pages" in rejected.loc["pages", "reason"]


def test_nnunet_raw_2d_png_dataset(tmp_path):
    rgb, mask = _rgb_and_mask()
    for case in ("road_a", "road_b"):
        _save(tmp_path / "imagesTr" / f"{case}_0000.png", rgb)
        _save(tmp_path / "labelsTr" / f"{case}.png", mask)
    meta = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "road": 1},
            "file_ending": ".png", "numTraining": 2}  # fmt: skip
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    ds = {"name": "roads", "format": "nnunet", "path": str(tmp_path), "modality": "other", "role": "train_test"}
    manifest = ingest_dataset(ds, Layout(str(tmp_path / "results")), seed=0)
    assert manifest["case_id"].tolist() == ["road_a", "road_b"] and list(manifest["shape"].iloc[0]) == [40, 30]
    # a 2D dataset for the workflow (nnU-Net 2d only, metrics in 2D), and it may declare its pixel spacing
    from samstudy import config as samstudy_config
    from samstudy.readers import is_2d

    cfg = samstudy_config.validate({"datasets": [{**ds, "spacing": [0.5, 0.5]}]})
    assert is_2d(cfg["datasets"][0])
    manifest = ingest_dataset(cfg["datasets"][0], Layout(str(tmp_path / "results2")), seed=0)
    assert list(manifest["spacing"].iloc[0]) == [0.5, 0.5]


# ---------------------------------------------------------------- patient ids from a CSV


def test_patient_ids_from_a_csv_and_cases_it_does_not_list(tmp_path):
    for case in ("a01", "a02", "b01", "c01", "d01"):
        lab = np.zeros((4, 6, 6), dtype=np.uint8)
        lab[1:3, 2:4, 2:4] = 1
        _write(tmp_path / "images" / f"{case}.nii.gz", np.ones((4, 6, 6), np.float32))
        _write(tmp_path / "labels" / f"{case}.nii.gz", lab)
    (tmp_path / "meta.csv").write_text(
        "image,lesion_id,site\na01,L7,head\na02,L7,arm\nb01,L9,leg\nd01,L1,arm\nd01,L2,arm\n"
    )  # c01 is not listed; d01 is listed with two patients
    ds = _cfg_dataset(
        tmp_path, "nifti", patient_id={"csv": "meta.csv", "case_column": "image", "patient_column": "lesion_id"}
    )
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    patients = dict(zip(manifest["case_id"], manifest["patient_id"], strict=True))
    assert patients == {"a01": "L7", "a02": "L7", "b01": "L9"}
    rejected = pd.read_parquet(layout.ingest_rejected("d")).set_index("case_id")
    assert "'c01' is not listed in column 'image'" in rejected.loc["c01", "reason"]
    assert rejected.loc["c01", "file"] == str(tmp_path / "meta.csv")
    assert "conflicting" in rejected.loc["d01", "reason"] and "L1" in rejected.loc["d01", "reason"]
    ds["patient_id"]["patient_column"] = "patient"
    with pytest.raises(ValueError, match=r"column\(s\) \['patient'\] not found"):
        ingest_dataset(ds, layout, seed=0)


# ---------------------------------------------------------------- DICOM-SEG labels


def _dicom_seg(path, series_folder, mask):
    """Write a DICOM-SEG (highdicom) of `mask` (z, y, x), segment numbers = mask values, on a series."""
    import highdicom as hd
    import pydicom

    sources = sorted((pydicom.dcmread(f) for f in Path(series_folder).glob("*.dcm")),
                     key=lambda d: float(d.ImagePositionPatient[2]))  # fmt: skip
    tissue = hd.sr.CodedConcept("85756007", "SCT", "Tissue")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=int(v),
            segment_label=f"segment {v}",
            segmented_property_category=tissue,
            segmented_property_type=tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )  # fmt: skip
        for v in sorted(set(np.unique(mask).tolist()) - {0})
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=2,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="samstudy tests",
        manufacturer_model_name="test", software_versions="1", device_serial_number="1",
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)


def test_dicom_series_with_dicom_seg_labels(tmp_path):
    volume = (np.random.default_rng(1).normal(size=(6, 12, 14)) * 100).astype(np.int16)
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[2:4, 3:7, 4:9] = 1
    mask[3:5, 8:11, 10:13] = 2
    _dicom_series(tmp_path / "images" / "ct1", volume)
    _dicom_seg(tmp_path / "labels" / "ct1.dcm", tmp_path / "images" / "ct1", mask)
    # a SEG made on another series (other SOP instances) does not fit this case's series
    _dicom_series(tmp_path / "other", volume, series_uid="1.2.826.0.1.3680043.2.1125.1.77")
    _dicom_series(tmp_path / "images" / "ct2", volume, series_uid="1.2.826.0.1.3680043.2.1125.1.78")
    _dicom_seg(tmp_path / "labels" / "ct2.dcm", tmp_path / "other", mask)
    ds = _cfg_dataset(tmp_path, "dicom", labels={"liver": 1, "lesion": 2}, label_pattern="labels/{case}.dcm")
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert manifest["case_id"].tolist() == ["ct1"]
    assert json.loads(manifest["labels_present"].iloc[0]) == {"liver": 40, "lesion": 18}
    rejected = pd.read_parquet(layout.ingest_rejected("d")).set_index("case_id")
    assert "does not fit the image series" in rejected.loc["ct2", "reason"]
    assert rejected.loc["ct2", "file"].endswith("ct2.dcm")
    from samstudy.cases import load_dataset_table, read_case

    table, info = load_dataset_table(layout, "d")
    image, label = read_case(table.iloc[0], info)
    assert np.array_equal(label, mask) and image.GetSize() == (14, 12, 6)


# ---------------------------------------------------------------- built-in real data


def test_mni152_builtin_dataset_is_real_mri_with_three_tissues(tmp_path):
    from samstudy import config as samstudy_config
    from samstudy.config import ConfigError

    entry = {"name": "mni", "format": "nifti", "modality": "MR", "role": "test_only",
             "builtin": {"kind": "mni152", "resolution_mm": 4, "z_range_mm": [0, 20]}}  # fmt: skip
    ds = samstudy_config.validate({"datasets": [entry]})["datasets"][0]
    layout = Layout(str(tmp_path / "results"))
    manifest = ingest_dataset(ds, layout, seed=0)
    assert manifest["case_id"].tolist() == ["mni152"] and manifest["role"].iloc[0] == "test_only"
    present = json.loads(manifest["labels_present"].iloc[0])
    assert set(present) == {"grey_matter", "white_matter", "csf"}
    assert present["grey_matter"] > present["csf"] > 100
    assert np.allclose(manifest["spacing"].iloc[0], [4, 4, 4]) and manifest["shape"].iloc[0][2] == 6  # z 0..20 mm
    from samstudy.cases import load_dataset_table, read_case

    table, info = load_dataset_table(layout, "mni")
    image, label = read_case(table.iloc[0], info)
    t1 = sitk.GetArrayFromImage(image)
    assert t1[label == 2].mean() > t1[label == 1].mean() > t1[label == 3].mean()  # T1: WM > GM > CSF
    with pytest.raises(ConfigError, match="test_only"):
        samstudy_config.validate({"datasets": [{**entry, "role": "train_test"}]})


def test_2d_only_keys_are_refused_elsewhere():
    from samstudy.config import ConfigError

    with pytest.raises(ConfigError, match="2D image files only"):
        _cfg_dataset("x", "nifti", spacing=[0.5, 0.5])
    assert _cfg_dataset("x", "png")["label_pattern"] == "masks/{case}.png"
