import pandas as pd
import pytest

from samstudy.splits import SplitError, check_split, make_split
from tests.conftest import dry_run_jobs

SETTINGS = {"test_fraction": 0.25, "n_folds": 1, "val_fraction": 0.25}


def _cases(n_patients, scans=2):
    rows = [{"case_id": f"p{p:02d}_s{s}", "patient_id": f"p{p:02d}"} for p in range(n_patients) for s in range(scans)]
    return pd.DataFrame(rows)


def _patients(split, cases):
    return {split["patients"][c] for c in cases}


def test_patient_level_and_complete():
    cases = _cases(10)
    split = make_split(cases, "a", "train_test", 1, SETTINGS)
    fold = split["folds"][0]
    assert sorted(split["test"] + fold["train"] + fold["val"]) == sorted(cases["case_id"])
    assert not _patients(split, split["test"]) & _patients(split, fold["train"])
    assert not _patients(split, fold["val"]) & _patients(split, fold["train"])
    assert len(split["test"]) == 6  # ceil(0.25 * 10) = 3 patients, 2 scans each


def _n_val_patients(n_patients, val_fraction):
    settings = {"test_fraction": 0.0, "n_folds": 1, "val_fraction": val_fraction}
    split = make_split(_cases(n_patients, scans=1), "a", "train_test", 1, settings)
    fold = split["folds"][0]
    assert fold["train"] and sorted(fold["train"] + fold["val"]) == sorted(_cases(n_patients, scans=1)["case_id"])
    return len(fold["val"])


def test_validation_part_is_the_nearest_patient_count():
    assert _n_val_patients(3, 0.34) == 1  # 1.02 patients: 1 (rounding up gave 2 of 3 and trained on one)
    assert _n_val_patients(3, 0.5) == 2  # 1.5: half rounds up
    assert _n_val_patients(5, 0.5) == 3  # 2.5: up, not to the even 2 (Python's round)
    assert _n_val_patients(10, 0.26) == 3  # 2.6
    assert _n_val_patients(3, 0.1) == 1  # 0.3: at least one patient
    assert _n_val_patients(3, 0.9) == 2  # 2.7: one patient is always left to train on
    # the default study's phantom: 4 patients, 1 test, 3 left: 2 train and 1 validate
    fold = make_split(_cases(4), "phantom", "train_test", 42, {**SETTINGS, "val_fraction": 0.34})["folds"][0]
    assert len({c[:5] for c in fold["train"]}) == 2 and len({c[:5] for c in fold["val"]}) == 1


def test_deterministic_and_seed_dependent():
    cases = _cases(12)
    assert make_split(cases, "a", "train_test", 1, SETTINGS) == make_split(cases, "a", "train_test", 1, SETTINGS)
    assert (
        make_split(cases, "a", "train_test", 1, SETTINGS)["test"]
        != make_split(cases, "a", "train_test", 2, SETTINGS)["test"]
    )


def test_a_dataset_split_does_not_depend_on_other_datasets():
    # each dataset is seeded by (seed, its name): splitting another one first changes nothing
    a1 = make_split(_cases(8), "a", "train_test", 5, SETTINGS)
    make_split(_cases(20), "b", "train_test", 5, SETTINGS)
    assert make_split(_cases(8), "a", "train_test", 5, SETTINGS) == a1


def test_k_folds_partition_the_non_test_patients():
    split = make_split(_cases(11, scans=1), "a", "train_test", 3, {**SETTINGS, "n_folds": 4})
    vals = [c for f in split["folds"] for c in f["val"]]
    assert len(vals) == len(set(vals)) == 11 - len(split["test"])


def test_test_only_is_never_trained_and_leaks_are_caught():
    split = make_split(_cases(3), "t", "test_only", 1, SETTINGS)
    assert split["folds"] == [] and len(split["test"]) == 6
    bad = make_split(_cases(8), "a", "train_test", 1, SETTINGS)
    bad["folds"][0]["train"].append(bad["test"][0])
    with pytest.raises(SplitError, match="both train and test"):
        check_split(bad)


def test_test_only_datasets_get_no_training_and_no_nnunet_in_the_workflow(tmp_path):
    """The default study's mni152 (test_only) is predicted and scored, but never trained on: no nnU-Net job
    and no training input for it (a dry run of the real workflow)."""
    jobs = dry_run_jobs(tmp_path)
    assert any(rule == "infer" and "dataset=mni152" in body for rule, body in jobs)
    assert any(rule == "evaluate" and "dataset=mni152" in body for rule, body in jobs)
    nnunet = [body for rule, body in jobs if rule.startswith("nnunet")]
    assert nnunet and not any("mni152" in body for body in nnunet)
    train = [body for rule, body in jobs if rule == "train"]
    assert train and not any("mni152" in body for body in train)
