import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samstudy import synthetic
from samstudy.io import sha256_file


def test_phantom_is_deterministic_and_has_the_promised_properties(tmp_path):
    settings = {"n_patients": 2, "scans_per_patient": 1, "shape": [32, 30, 8], "spacing": [1.2, 1.5, 3.0]}
    a = synthetic.write_dataset(tmp_path / "a", seed=3, settings=settings)
    b = synthetic.write_dataset(tmp_path / "b", seed=3, settings=settings)
    c = synthetic.write_dataset(tmp_path / "c", seed=4, settings=settings)
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert len(files) == 4
    assert all(sha256_file(a / f) == sha256_file(b / f) for f in files)
    assert any(sha256_file(a / f) != sha256_file(c / f) for f in files)
    img = sitk.ReadImage(str(a / "imagesTr" / "pat00_s0_0000.nii.gz"))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "labelsTr" / "pat00_s0.nii.gz")))
    assert img.GetSize() == (32, 30, 8)
    assert np.allclose(img.GetSpacing(), (1.2, 1.5, 3.0))
    assert not np.allclose(img.GetDirection(), np.eye(3).ravel())
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    arr = sitk.GetArrayFromImage(img)
    assert arr.min() < -900 and 0 < np.median(arr[lab == 1]) < 120  # air and a soft-tissue liver in HU


def test_png2d_phantom_is_deterministic_rgb_and_labelled(tmp_path):
    from PIL import Image

    settings = {"kind": "png2d", "n_patients": 2, "scans_per_patient": 2, "shape": [50, 40]}
    a = synthetic.write_dataset(tmp_path / "a", seed=3, settings=settings)
    b = synthetic.write_dataset(tmp_path / "b", seed=3, settings=settings)
    c = synthetic.write_dataset(tmp_path / "c", seed=4, settings=settings)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 8
    assert all(sha256_file(a / f) == sha256_file(b / f) for f in files)
    assert any(sha256_file(a / f) != sha256_file(c / f) for f in files)
    image = Image.open(a / "images" / "pat00_s1.png")
    mask = np.asarray(Image.open(a / "masks" / "pat00_s1.png"))
    assert image.mode == "RGB" and image.size == (50, 40) and mask.shape == (40, 50)
    assert set(np.unique(mask)) == {0, 1, 2}
    rgb = np.asarray(image).astype(float)
    # the lesion is darker and browner than the skin around it
    assert rgb[mask == 1].mean() < rgb[mask == 0].mean() - 40


def test_png2d_phantom_flows_through_the_whole_study_in_2d(tmp_path, tiny_model):
    """2D cases: one slice, RGB kept for the encoder, predictions as 2D NIfTI in the image's 2D geometry,
    metrics in 2D with the configured pixel spacing, nnU-Net export as 2D NIfTI channels."""
    from samstudy import config as samstudy_config
    from samstudy import nnunet
    from samstudy.embed import embed_dataset
    from samstudy.evaluate import evaluate_run
    from samstudy.infer import infer_dataset
    from samstudy.ingest import ingest_dataset
    from samstudy.io import read_json
    from samstudy.paths import Layout
    from samstudy.preprocess import load_preprocessed, preprocess_dataset
    from samstudy.prompts import make_prompts
    from samstudy.splits import write_dataset_split

    cfg = samstudy_config.validate(
        {
            "results_dir": str(tmp_path / "results"),
            "cache_dir": str(tmp_path / "cache"),
            "datasets": [
                {
                    "name": "skin",
                    "format": "synthetic",
                    "modality": "other",
                    "patient_id": r"^(pat\d+)",
                    "synthetic": {"kind": "png2d", "n_patients": 4, "scans_per_patient": 1, "spacing": [0.5, 0.25]},
                }
            ],
            "splits": {"test_fraction": 0.25, "val_fraction": 0.34},
        }
    )
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    manifest = ingest_dataset(ds, layout, cfg["seed"])
    assert [len(s) for s in manifest["shape"]] == [2] * 4 and np.allclose(manifest["spacing"].iloc[0], [0.5, 0.25])
    write_dataset_split(layout, "skin", ds["role"], cfg["seed"], cfg["splits"])
    preprocess_dataset(layout, ds, cfg["preprocess"])
    pre = load_preprocessed(layout, "skin", "pat00_s0")
    assert pre["slices"].shape == (1, 80, 96, 3) and pre["labels"].shape == (1, 80, 96)  # colour kept
    model_cfg = {"type": "litemedsam"}
    embed_dataset(layout, "skin", "litemedsam", model_cfg, cfg["embed"])
    make_prompts(layout, "skin", "box", cfg["prompts"], cfg["seed"])
    method = {"model": "litemedsam", "adaptation": "none"}
    (written,) = infer_dataset(layout, "skin", "zeroshot", method, model_cfg, "box")
    pred = sitk.ReadImage(written)
    assert pred.GetDimension() == 2 and pred.GetSize() == (96, 80)
    assert np.allclose(pred.GetSpacing(), (0.5, 0.25))
    run_info = {"method": "zeroshot", "model": "litemedsam", "adaptation": "none", "protocol": "box", "prompted": True}
    metrics = evaluate_run(layout, "skin", "zeroshot.box", run_info, cfg["evaluate"])
    assert set(metrics["label"]) == {"lesion", "spot"} and metrics["dice"].between(0, 1).all()
    present = json.loads(manifest.set_index("case_id").loc[metrics["case_id"].iloc[0], "labels_present"])
    assert metrics.set_index("label").loc["lesion", "gt_voxels"] == present["lesion"]  # pixels, not a slab
    # an empty prediction's HD95 is the image diagonal in mm: 2D, with the pixel spacing
    empty = metrics[metrics["pred_voxels"] == 0]
    assert empty.empty or np.allclose(empty["hd95"], np.hypot(80 * 0.25, 96 * 0.5))
    stamp = nnunet.export(layout, "skin", 501)
    raw = stamp["raw"]
    channels = sorted(p.name for p in Path(raw).glob("imagesTr/pat0*"))
    first = sitk.ReadImage(f"{raw}/labelsTr/{stamp['train'][0]}.nii.gz")
    assert first.GetDimension() == 2 and np.allclose(first.GetSpacing(), (0.5, 0.25))
    assert len(channels) == 3 * len(stamp["train"])  # R, G, B as three 2D NIfTI files per case
    assert list(read_json(f"{raw}/dataset.json")["channel_names"].values()) == ["R", "G", "B"]


def test_phantom_settings_must_fit_their_kind():
    from samstudy import config as samstudy_config
    from samstudy.config import ConfigError

    def entry(**synthetic_settings):
        return {"datasets": [{"name": "p", "format": "synthetic", "modality": "CT", "synthetic": synthetic_settings}]}

    assert samstudy_config.validate(entry())["datasets"][0]["synthetic"]["kind"] == "ct3d"
    with pytest.raises(ConfigError, match="2 entries"):
        samstudy_config.validate(entry(kind="png2d", shape=[64, 64, 8]))
    with pytest.raises(ConfigError, match="ct3d phantom only"):
        samstudy_config.validate(entry(kind="png2d", noise_hu=5))
    with pytest.raises(ConfigError, match="3 entries"):
        samstudy_config.validate(entry(spacing=[1.0, 1.0]))
