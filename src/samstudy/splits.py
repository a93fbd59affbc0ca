"""Patient-level, seeded splits: a held-out test set plus k folds (or one train/val split).

Each dataset is split with its own seed (study seed + dataset name), so adding a dataset never reshuffles
another. The same split is written in nnU-Net's splits_final.json form, so every method sees the same cases.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from samstudy.io import read_json, write_json
from samstudy.paths import Layout


class SplitError(ValueError):
    """A split is inconsistent (a patient in two parts, a test_only dataset in training, ...)."""


def _dataset_seed(seed: int, dataset: str) -> list[int]:
    return [seed, int(hashlib.sha256(dataset.encode()).hexdigest()[:8], 16)]


def make_split(cases: pd.DataFrame, dataset: str, role: str, seed: int, settings: dict) -> dict:
    """Split one dataset's cases by patient. Returns {"test": [...], "folds": [{"train", "val"}, ...]}."""
    patients = sorted(cases["patient_id"].unique())
    by_patient = {p: sorted(cases.loc[cases["patient_id"] == p, "case_id"]) for p in patients}
    if role == "test_only":
        split = {"test": sorted(cases["case_id"]), "folds": []}
    else:
        rng = np.random.default_rng(_dataset_seed(seed, dataset))
        order = [patients[i] for i in rng.permutation(len(patients))]
        n_test = math.ceil(settings["test_fraction"] * len(order)) if settings["test_fraction"] > 0 else 0
        test, rest = order[:n_test], order[n_test:]
        k = settings["n_folds"]
        if k == 1:
            # nearest patient count (half rounds up, not to even), at least one, and one patient left to train on
            n_val = min(max(1, int(settings["val_fraction"] * len(rest) + 0.5)), len(rest) - 1)
            groups = [rest[:n_val]]
        else:
            groups = [rest[i::k] for i in range(k)]
        if len(rest) < 2 or any(not g for g in groups):
            raise SplitError(f"dataset {dataset}: {len(patients)} patients are too few for this split {settings}")
        folds = []
        for val in groups:
            train = [p for p in rest if p not in val]
            folds.append({"train": _cases(train, by_patient), "val": _cases(val, by_patient)})
        split = {"test": _cases(test, by_patient), "folds": folds}
    split.update(
        {"dataset": dataset, "role": role, "seed": seed, "patients": {c: p for p, cs in by_patient.items() for c in cs}}
    )
    check_split(split)
    return split


def _cases(patients: list[str], by_patient: dict[str, list[str]]) -> list[str]:
    return sorted(c for p in patients for c in by_patient[p])


def check_split(split: dict) -> None:
    """Raise SplitError if a patient is in two parts of any fold or a test_only dataset is trained on."""
    patient = split["patients"]
    test = {patient[c] for c in split["test"]}
    if split["role"] == "test_only" and split["folds"]:
        raise SplitError(f"dataset {split['dataset']} is test_only but has training folds")
    for i, fold in enumerate(split["folds"]):
        train, val = {patient[c] for c in fold["train"]}, {patient[c] for c in fold["val"]}
        for a, b, what in ((train, val, "train and val"), (train, test, "train and test"), (val, test, "val and test")):
            if a & b:
                raise SplitError(f"dataset {split['dataset']} fold {i}: patients {sorted(a & b)} are in both {what}")


def write_dataset_split(layout: Layout, dataset: str, role: str, seed: int, settings: dict) -> dict:
    """Write the dataset's split (splits/<dataset>.json and its nnU-Net splits_final.json)."""
    cases = pd.read_parquet(layout.ingest_table(dataset))
    split = make_split(cases, dataset, role, seed, settings)
    write_json(layout.dataset_splits(dataset), split)
    write_json(layout.nnunet_splits(dataset), split["folds"])
    return split


def merge_splits(layout: Layout, datasets: list[str]) -> dict:
    """Collect every dataset's split into splits.json, re-checking each."""
    merged = {}
    for d in datasets:
        split = read_json(layout.dataset_splits(d))
        check_split(split)
        merged[d] = split
    write_json(layout.splits(), merged)
    return merged


def load_split(layout: Layout, dataset: str) -> dict:
    """A dataset's split (splits/<dataset>.json), re-checked."""
    split = read_json(layout.dataset_splits(dataset))
    check_split(split)
    return split


def cases_in(split: dict, part: str, fold: int = 0) -> list[str]:
    """Case ids of 'train', 'val' or 'test' (fold applies to train/val)."""
    if part == "test":
        return list(split["test"])
    if not split["folds"]:
        return []
    return list(split["folds"][fold][part])
