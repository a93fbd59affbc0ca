"""nnU-Net v2 through nnunetv2 itself, quick schedule: folds, nnU-Net's own model choice, resume, geometry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samstudy import nnunet
from samstudy.ingest import ingest_dataset, load_dataset_table
from samstudy.io import read_json
from samstudy.paths import Layout, nnunet_run_name
from samstudy.splits import load_split, write_dataset_split
from tests.conftest import study_config

QUICK = {
    "schedule": "quick",
    "quick": {"epochs": 2, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1, "max_features": 16},
    "device": "cpu",
    "select_best": True,
}
DATASET_ID = 601


@pytest.fixture
def two_fold_study(tmp_path):
    """A tiny phantom split into 2 folds + test, exported to nnU-Net and planned (2d and 3d_fullres)."""
    cfg = study_config(tmp_path, splits={"test_fraction": 0.25, "n_folds": 2})
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    ingest_dataset(ds, layout, cfg["seed"])
    write_dataset_split(layout, "phantom", ds["role"], cfg["seed"], cfg["splits"])
    nnunet.export(layout, "phantom", DATASET_ID)
    nnunet.plan(layout, "phantom", DATASET_ID, ["2d", "3d_fullres"], "quick")
    return cfg, layout


@pytest.mark.slow
def test_two_configurations_two_folds_selection_and_ensemble_prediction(two_fold_study):
    cfg, layout = two_fold_study
    folds = [0, 1]
    split = load_split(layout, "phantom")
    for configuration in ("2d", "3d_fullres"):
        for fold in folds:
            stamp = nnunet.train(layout, "phantom", DATASET_ID, configuration, fold, QUICK, cfg["seed"])
            assert stamp["planned"] and not stamp["converged"] and 0 <= stamp["validation_dice"] <= 1
            validation = Path(stamp["model_folder"], f"fold_{fold}", "validation")
            # nnU-Net's cross-validation of this fold is the study's val part of this fold, with probabilities
            assert sorted(p.name[:-7] for p in validation.glob("*.nii.gz")) == sorted(split["folds"][fold]["val"])
            assert sorted(validation.glob("*.npz"))
    not_planned = nnunet.train(layout, "phantom", DATASET_ID, "3d_lowres", 0, QUICK, cfg["seed"])
    assert not_planned["planned"] is False  # tiny images: nnU-Net plans no low-resolution stage
    assert nnunet.predict(layout, "phantom", DATASET_ID, "3d_lowres", [0], QUICK) == []
    from samstudy.evaluate import evaluate_run

    frame = evaluate_run(layout, "phantom", "nnunet_3d_lowres", {}, {"nsd_tolerance_mm": 2.0})
    assert frame.empty  # scored as nothing, with the reason logged, instead of failing the study

    written = nnunet.predict(layout, "phantom", DATASET_ID, "3d_fullres", folds, QUICK)
    assert sorted(Path(p).name[:-7] for p in written) == sorted(split["test"])

    best = nnunet.select_best(layout, "phantom", DATASET_ID, ["2d", "3d_fullres"], folds)
    assert set(best["candidates"]) >= {"nnUNetTrainer__nnUNetPlans__2d", "nnUNetTrainer__nnUNetPlans__3d_fullres"}
    assert any(k.startswith("ensemble___") for k in best["candidates"])  # ensembles of two were compared
    assert best["cv_dice"] == pytest.approx(max(best["candidates"].values()))
    assert read_json(layout.nnunet_best_done("phantom"))["selected"] == best["selected"]

    written = nnunet.predict_best(layout, "phantom", DATASET_ID, folds, QUICK)
    table, _ = load_dataset_table(layout, "phantom")
    images = table.set_index("case_id")["images"]
    assert sorted(Path(p).name[:-7] for p in written) == sorted(split["test"])
    for path in written:
        assert Path(path).parent == Path(layout.prediction_dir(nnunet_run_name("best"), "phantom"))
        pred = sitk.ReadImage(path)
        image = sitk.ReadImage(images[Path(path).name[:-7]][0])
        assert pred.GetSize() == image.GetSize()
        assert np.allclose(pred.GetSpacing(), image.GetSpacing())
        assert np.allclose(pred.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_a_killed_training_resumes_from_the_latest_checkpoint(two_fold_study, monkeypatch, caplog):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    cfg, layout = two_fold_study
    settings = {**QUICK, "select_best": False}
    original = nnUNetTrainer.on_epoch_end

    def killed_after_first_epoch(self):
        original(self)  # the epoch's checkpoint_latest.pth is written here
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(nnUNetTrainer, "on_epoch_end", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        nnunet.train(layout, "phantom", DATASET_ID, "2d", 0, settings, cfg["seed"])
    monkeypatch.setattr(nnUNetTrainer, "on_epoch_end", original)
    assert not Path(layout.nnunet_train_done("phantom", "2d", 0)).exists()
    with caplog.at_level(logging.INFO):
        stamp = nnunet.train(layout, "phantom", DATASET_ID, "2d", 0, settings, cfg["seed"])
    assert "resuming from" in caplog.text and "checkpoint_latest.pth" in caplog.text
    assert Path(stamp["checkpoint"]).is_file()
    # across nnU-Net's log files (one per trainer, named by the second it started): epoch 0 ran once, before
    # the kill, and epoch 1 once, after the resume
    logs = "".join(p.read_text() for p in Path(stamp["model_folder"], "fold_0").glob("training_log_*.txt"))
    assert logs.count("Epoch 0 ") == 1 and logs.count("Epoch 1 ") == 1
    # a rerun with other settings starts afresh instead of reusing this model
    with caplog.at_level(logging.INFO):
        nnunet.train(layout, "phantom", DATASET_ID, "2d", 0, {**settings, "quick": {**QUICK["quick"], "epochs": 1}}, 1)
    assert "starting afresh" in caplog.text


def test_folds_and_selection_in_the_workflow(tmp_path):
    """folds: all + select_best: one training job per configuration and fold, one selection, the run
    nnunet_best predicted and scored; the cascade is refused without its first stage."""
    import yaml

    from samstudy.config import ConfigError
    from tests.conftest import dry_run_jobs

    extra = tmp_path / "nnunet.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "splits": {"n_folds": 2},
                "nnunet": {"configurations": ["2d", "3d_fullres"], "folds": "all", "select_best": True},
            }
        )
    )
    jobs = dry_run_jobs(tmp_path, "--configfile", str(extra))
    trained = sorted(
        (b.split("configuration=")[1].split(",")[0], b.split("fold=")[1].split()[0].strip(","))
        for r, b in jobs
        if r == "nnunet_train" and "dataset=phantom" in b
    )
    assert trained == [("2d", "0"), ("2d", "1"), ("3d_fullres", "0"), ("3d_fullres", "1")]
    assert [r for r, b in jobs if r == "nnunet_select" and "dataset=phantom" in b] == ["nnunet_select"]
    assert any(r == "nnunet_predict_best" and "dataset=phantom" in b for r, b in jobs)
    assert any(r == "evaluate" and "run=nnunet_best" in b and "dataset=phantom" in b for r, b in jobs)
    with pytest.raises(ConfigError, match="needs 3d_lowres"):
        study_config(tmp_path, nnunet={"configurations": ["3d_cascade_fullres"]})
    with pytest.raises(ConfigError, match="fold"):
        study_config(tmp_path, nnunet={"folds": [3]})
