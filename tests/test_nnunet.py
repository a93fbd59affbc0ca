"""nnU-Net v2 through nnunetv2 itself, quick schedule: folds, nnU-Net's own model choice, resume, geometry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samstudy import nnunet
from samstudy.cases import load_dataset_table
from samstudy.ingest import ingest_dataset
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
            assert stamp["planned"] and 0 <= stamp["validation_dice"] <= 1
            # judged from nnU-Net's logged curve: 2 epochs are too few to call converged
            assert not stamp["converged"] and stamp["convergence"]["epochs"] == 2
            assert stamp["ema_fg_dice_last"] == stamp["convergence"]["ema_last"]
            assert stamp["torch_threads"] >= 1  # the threads that trained it (the weights depend on them)
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


def _ema(dice):
    """nnU-Net's logger: ema_0 = dice_0, ema_t = 0.9 ema_{t-1} + 0.1 dice_t."""
    out = [dice[0]]
    for d in dice[1:]:
        out.append(0.9 * out[-1] + 0.1 * d)
    return out


def test_convergence_from_the_ema_curve_rising():
    # pseudo-Dice still climbing (a saturating curve caught early): not converged, with the curve's numbers
    dice = [0.9 * (1 - np.exp(-t / 8)) for t in range(15)]
    result = nnunet.curve_convergence(_ema(dice))
    ema = _ema(dice)
    assert not result["converged"]
    assert result["ema_last"] == pytest.approx(ema[-1]) and result["ema_before"] == pytest.approx(ema[-6])
    assert result["rise"] == pytest.approx(ema[-1] - ema[-6]) and result["rise"] > result["tolerance"]
    assert result["window_epochs"] == 5 and result["epochs"] == 15
    assert result["evidence"].startswith(f"EMA pseudo-Dice still rising: {ema[-6]:.2f} -> {ema[-1]:.2f}")


def test_convergence_from_the_ema_curve_flat_and_falling():
    # the same curve long after its plateau: converged; a curve that falls at the end is not "rising"
    dice = [0.9 * (1 - np.exp(-t / 8)) for t in range(100)]
    assert nnunet.curve_convergence(_ema(dice))["converged"]
    assert nnunet.curve_convergence(_ema([0.8] * 20 + [0.7] * 10))["converged"]
    # a curve stuck at 0 is flat too: converged (to a poor model; the Dice says so)
    assert nnunet.curve_convergence(_ema([0.0] * 10))["converged"]


def test_convergence_from_the_ema_curve_noisy_flat():
    # a flat pseudo-Dice with per-epoch noise as nnU-Net's few validation batches give (sd 0.03): judged at
    # every epoch after the EMA's warm-up, it is called rising in well under 1% of cases, at the end never
    calls = []
    for seed in range(20):
        dice = np.clip(0.85 + np.random.default_rng(seed).normal(0, 0.03, 60), 0, 1)
        ema = _ema(list(dice))
        calls += [nnunet.curve_convergence(ema[:n])["converged"] for n in range(20, 61)]
        assert nnunet.curve_convergence(ema)["converged"], seed
    assert np.mean(calls) > 0.99
    # while a noisy curve that still climbs 0.01 per epoch is caught, at every epoch after the EMA's warm-up
    for seed in range(20):
        dice = np.clip(np.linspace(0.4, 0.8, 40) + np.random.default_rng(seed).normal(0, 0.03, 40), 0, 1)
        ema = _ema(list(dice))
        assert not any(nnunet.curve_convergence(ema[:n])["converged"] for n in range(15, 41)), seed


def test_convergence_needs_a_curve():
    for ema in ([], [0.5], [0.1, 0.2, 0.3, 0.4, 0.5]):
        result = nnunet.curve_convergence(ema)
        assert not result["converged"] and result["rise"] is None and "too short" in result["evidence"]
    assert nnunet.curve_convergence([0.5] * 6)["converged"]
