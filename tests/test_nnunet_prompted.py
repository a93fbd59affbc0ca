"""Prompted nnU-Net: each label's box as extra input channels (the oracle counterpart of box-prompted SAM),
exported, planned, trained and predicted by nnunetv2 itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samstudy import nnunet
from samstudy.io import read_json, write_json
from samstudy.paths import Layout, nnunet_prompted_run_name
from samstudy.preprocess import load_preprocessed, to_slices
from samstudy.prompts import make_prompts, tight_box
from samstudy.splits import load_split

DATASET_ID = 877
LABELS = [1, 2, 3]  # the phantom's liver, spleen, kidney
QUICK = {
    "schedule": "quick",
    "quick": {"epochs": 2, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "max_features": 16},
    "device": "cpu",
    "select_best": False,
}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    import torch

    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _array(path) -> tuple[np.ndarray, sitk.Image]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing())
    assert np.allclose(a.GetOrigin(), b.GetOrigin())
    assert np.allclose(a.GetDirection(), b.GetDirection())


def _channel_slices(files: list[str], layout: Layout, case: str) -> list[np.ndarray]:
    """A case's prompt channels (one per label) as (slices, H, W) along the study's slice axis, after
    checking that each is a 0/1 image in channel 0's geometry."""
    axis = int(load_preprocessed(layout, "phantom", case)["axis"])
    _, image = _array(files[0])
    out = []
    for path in files[1:]:
        array, channel = _array(path)
        _same_geometry(channel, image)
        assert set(np.unique(array)) <= {0, 1}
        out.append(to_slices(array, axis))
    return out


def test_training_cases_get_their_jittered_ground_truth_boxes(study):
    cfg, layout = study
    jitter = 3
    stamp = nnunet.export(layout, "phantom", DATASET_ID, prompted=True, jitter_px=jitter, seed=cfg["seed"])
    raw = Path(stamp["raw"])
    assert raw.name == f"Dataset{DATASET_ID}_phantom_prompted"
    assert stamp["prompt_labels"] == LABELS and stamp["prompt_channels"] == {"1": 1, "2": 2, "3": 3}
    meta = read_json(raw / "dataset.json")
    assert meta["channel_names"] == {"0": "CT", "1": "noNorm", "2": "noNorm", "3": "noNorm"}
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import NoNormalization
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    assert get_normalization_scheme(nnunet.PROMPT_CHANNEL) is NoNormalization  # the 0/1 masks go in as they are
    # same cases and folds as the plain export
    assert read_json(raw / "splits_final.json") == load_split(layout, "phantom")["folds"]
    moved = 0
    for case in stamp["train"]:
        files = [str(raw / "imagesTr" / f"{case}_{c:04d}.nii.gz") for c in range(4)]
        channels = _channel_slices(files, layout, case)
        label_array, label_image = _array(raw / "labelsTr" / f"{case}.nii.gz")
        _same_geometry(label_image, sitk.ReadImage(files[0]))
        labels = to_slices(label_array, int(load_preprocessed(layout, "phantom", case)["axis"]))
        for value, channel in zip(LABELS, channels, strict=True):
            for s in range(labels.shape[0]):
                mask = labels[s] == value
                if not mask.any():
                    assert not channel[s].any()  # no label on this slice: no box
                    continue
                # 1 exactly on one box that holds the tight box, each side moved outward by 0..jitter px
                x0, y0, x1, y1 = tight_box(channel[s].astype(bool))
                assert channel[s][y0 : y1 + 1, x0 : x1 + 1].all() and channel[s].sum() == (y1 - y0 + 1) * (x1 - x0 + 1)
                t = tight_box(mask)
                moves = [t[0] - x0, t[1] - y0, x1 - t[2], y1 - t[3]]
                assert all(0 <= m <= jitter for m in moves)
                moved += any(moves)
    assert moved > 0  # the boxes are jittered
    # test cases: image channels only at export (their boxes come from the stored prompts at prediction)
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in stamp["test"])
    # seeded: the same export gives the same channels; without jitter the boxes are tight
    case = stamp["train"][0]
    before = _array(raw / "imagesTr" / f"{case}_0001.nii.gz")[0]
    nnunet.export(layout, "phantom", DATASET_ID, prompted=True, jitter_px=jitter, seed=cfg["seed"])
    assert np.array_equal(_array(raw / "imagesTr" / f"{case}_0001.nii.gz")[0], before)
    nnunet.export(layout, "phantom", DATASET_ID, prompted=True, jitter_px=0, seed=cfg["seed"])
    files = [str(raw / "imagesTr" / f"{case}_{c:04d}.nii.gz") for c in range(4)]
    labels = load_preprocessed(layout, "phantom", case)["labels"]
    for value, channel in zip(LABELS, _channel_slices(files, layout, case), strict=True):
        for s in np.flatnonzero((labels == value).any(axis=(1, 2))):
            assert tight_box(channel[s].astype(bool)) == tight_box(labels[s] == value)


def test_test_cases_get_the_stored_box_prompts(study, tmp_path):
    cfg, layout = study
    prompts = make_prompts(layout, "phantom", "box", {"components": "union"}, cfg["seed"])
    stamp = nnunet.export(layout, "phantom", DATASET_ID, prompted=True, jitter_px=5, seed=cfg["seed"])
    inputs = nnunet.write_test_prompt_channels(layout, "phantom", tmp_path / "ts")
    assert [Path(files[0]).name for files in inputs] == [f"{c}_0000.nii.gz" for c in stamp["test"]]
    for case, files in zip(stamp["test"], inputs, strict=True):
        assert [Path(f).name for f in files] == [f"{case}_{c:04d}.nii.gz" for c in range(4)]
        expected = np.zeros((len(LABELS), *load_preprocessed(layout, "phantom", case)["labels"].shape), np.uint8)
        for p in prompts["cases"][case]:
            x0, y0, x1, y1 = p["box"]
            expected[LABELS.index(p["label"]), p["slice"], y0 : y1 + 1, x0 : x1 + 1] = 1
        assert expected.any()
        assert np.array_equal(np.stack(_channel_slices(files, layout, case)), expected)
    # change one stored box: that test case's channel follows
    case = stamp["test"][0]
    edited = read_json(layout.prompts("phantom", "box"))
    prompt = edited["cases"][case][0]
    prompt["box"] = [2, 3, 5, 4]
    write_json(layout.prompts("phantom", "box"), edited)
    files = nnunet.write_test_prompt_channels(layout, "phantom", tmp_path / "ts2")[0]
    channel = _channel_slices(files, layout, case)[LABELS.index(prompt["label"])][prompt["slice"]]
    assert np.flatnonzero(channel.any(axis=0)).tolist() == [2, 3, 4, 5]
    assert np.flatnonzero(channel.any(axis=1)).tolist() == [3, 4]


def test_prompted_nnunet_trains_and_predicts_with_the_box_channels(study, monkeypatch):
    """A tiny real nnunetv2 run: nnU-Net plans 4 input channels (CT + 3 unnormalised boxes), trains, and
    its predictor reads the test cases' box channels (emptying them changes the prediction)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    cfg, layout = study
    make_prompts(layout, "phantom", "box", {"components": "union"}, cfg["seed"])
    stamp = nnunet.export(layout, "phantom", DATASET_ID, prompted=True, jitter_px=5, seed=cfg["seed"])
    nnunet.plan(layout, "phantom", DATASET_ID, ["2d"], "quick", prompted=True)
    assert Path(layout.nnunet_plan_done("phantom", prompted=True)).is_file()
    pre, plans = nnunet._planned(layout, "phantom", DATASET_ID, prompted=True)
    assert pre.name == f"Dataset{DATASET_ID}_phantom_prompted"
    assert plans["configurations"]["2d"]["normalization_schemes"] == ["CTNormalization"] + ["NoNormalization"] * 3
    assert len(plans["foreground_intensity_properties_per_channel"]) == 4

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # in-process augmentation (nnU-Net's planner needs >= 1)
    trained = nnunet.train(layout, "phantom", DATASET_ID, "2d", 0, QUICK, cfg["seed"], prompted=True)
    assert trained["planned"] and Path(trained["checkpoint"]).is_file()
    assert Path(layout.nnunet_train_done("phantom", "2d", 0, prompted=True)).is_file()
    assert not Path(layout.nnunet_train_done("phantom", "2d", 0)).exists()  # the plain model is another one

    seen = []  # what the predictor's network gets: channels and how much box there is
    original = nnUNetPredictor.predict_sliding_window_return_logits

    def spy(self, data):
        seen.append((int(data.shape[0]), float(data[1:].sum())))
        return original(self, data)

    monkeypatch.setattr(nnUNetPredictor, "predict_sliding_window_return_logits", spy)
    run = nnunet_prompted_run_name("2d")
    assert run == "nnunet_prompted_2d"
    written = nnunet.predict(layout, "phantom", DATASET_ID, "2d", [0], QUICK, prompted=True)
    assert sorted(Path(p).name for p in written) == sorted(f"{c}.nii.gz" for c in stamp["test"])
    assert all(Path(p).parent == Path(layout.prediction_dir(run, "phantom")) for p in written)
    assert seen and all(n == 4 and boxes > 0 for n, boxes in seen)
    with_boxes = {p: sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in written}
    for p, pred in with_boxes.items():
        image = sitk.ReadImage(str(Path(stamp["raw"], "imagesTs", f"{Path(p).name[:-7]}_0000.nii.gz")))
        _same_geometry(sitk.ReadImage(p), image)
        assert set(np.unique(pred)) <= {0, 1, 2, 3}

    # the same model with the test cases' boxes emptied: the network sees no box and predicts otherwise
    edited = read_json(layout.prompts("phantom", "box"))
    edited["cases"] = {case: [] for case in edited["cases"]}
    write_json(layout.prompts("phantom", "box"), edited)
    seen.clear()
    nnunet.predict(layout, "phantom", DATASET_ID, "2d", [0], QUICK, prompted=True)
    assert seen and all(n == 4 and boxes == 0 for n, boxes in seen)
    assert any(not np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(p)), pred) for p, pred in with_boxes.items())
