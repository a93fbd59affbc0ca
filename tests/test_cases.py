"""The cases (samstudy.cases): the manifest's schema and loading, reading a case, which cases a job works
on, and that it stands below every stage (it imports none)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from samstudy import cases
from samstudy.paths import Layout, shard_of
from tests.conftest import study_config
from tests.test_imports import PACKAGE_ROOT, import_graph, reachable


@pytest.fixture
def ingested(tmp_path):
    """(config, layout) of the tiny phantom study, ingested and split (not preprocessed)."""
    from samstudy.ingest import ingest_dataset, merge_manifests
    from samstudy.splits import write_dataset_split

    cfg = study_config(tmp_path)
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    ingest_dataset(ds, layout, cfg["seed"])
    merge_manifests(layout, ["phantom"])
    write_dataset_split(layout, "phantom", ds["role"], cfg["seed"], cfg["splits"])
    return cfg, layout


def test_the_manifest_is_stored_in_its_schema_and_loaded_with_absolute_paths(ingested):
    cfg, layout = ingested
    stored = cases.stored_table(layout, "phantom")
    assert list(stored.columns) == cases.MANIFEST_COLUMNS
    assert list(pd.read_parquet(layout.rejected()).columns) == cases.REJECTED_COLUMNS
    assert stored["label"].iloc[0].startswith("raw/phantom/")  # inside results_dir: stored relative to it
    table, info = cases.load_dataset_table(layout, "phantom")
    assert table["label"].iloc[0] == str(Path(layout.results_dir) / stored["label"].iloc[0])
    assert info["labels"] == {1: "liver", 2: "spleen", 3: "kidney"} and info["label_sources"][1] == [1]
    assert cases.case_order(layout, "phantom") == list(stored["case_id"]) == sorted(stored["case_id"])
    assert cases.load_manifest(layout).equals(stored)


def test_a_case_is_read_with_its_study_labels_and_geometry(ingested):
    cfg, layout = ingested
    table, info = cases.load_dataset_table(layout, "phantom")
    row = table.iloc[0]
    image, labels = cases.read_case(row, info)
    assert image.GetSize() == (40, 36, 8) and labels.shape == (8, 36, 40)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and labels.dtype == np.uint8
    from_row = cases.reference_geometry(row)
    from_file = cases.reference_geometry(row["images"][0])
    assert from_row[0] == from_file[0] == (40, 36, 8)
    assert np.allclose(from_row[1], from_file[1]) and np.allclose(from_row[3], from_file[3])


def test_labels_map_to_study_values_and_unchosen_ones_to_background():
    source = np.array([[0, 1, 2], [3, 4, 7]])
    assert cases.map_labels(source, {1: [1, 3], 2: [4], 3: [9]}).tolist() == [[0, 1, 0], [1, 2, 0]]


def test_a_job_works_on_the_test_cases_of_its_shard(ingested):
    from samstudy.shards import write_shard_cases
    from samstudy.splits import cases_in, load_split

    cfg, layout = ingested
    test = cases_in(load_split(layout, "phantom"), "test")
    assert cases.held_out_cases(layout, "phantom") == test and cases.eval_cases(layout, "phantom") == test
    assert test and set(test) < set(cases.case_order(layout, "phantom"))
    # the shard checkpoint hashes the preprocessed slices: stand-ins are enough here
    for case in cases.case_order(layout, "phantom"):
        Path(layout.preprocessed_case("phantom", case)).parent.mkdir(parents=True, exist_ok=True)
        Path(layout.preprocessed_case("phantom", case)).write_bytes(case.encode())
    written = write_shard_cases(layout, "phantom", 2)
    parts = [cases.eval_cases(layout.for_shard(name), "phantom") for name in ("0of2", "1of2")]
    assert sorted(parts[0] + parts[1]) == sorted(test)
    assert all(shard_of(c, 2) == k for k, part in enumerate(parts) for c in part)
    k = 0 if parts[0] else 1  # a shard with test cases, its file made stale
    doc = json.loads(Path(written[k]).read_text())
    Path(written[k]).write_text(json.dumps({**doc, "cases": []}))
    with pytest.raises(cases.ShardError, match="stale"):
        cases.eval_cases(layout.for_shard(f"{k}of2"), "phantom")


def test_cases_stands_below_every_stage():
    """cases imports the readers, the split files and the bottom layer: never a stage or a model."""
    below = reachable(import_graph(PACKAGE_ROOT, "samstudy"), "samstudy.cases")
    allowed = ("samstudy.splits", "samstudy.readers", "samstudy.synthetic", "samstudy.builtin")
    allowed += ("samstudy.paths", "samstudy.io", "samstudy.config")
    assert sorted(m for m in below if not any(m == a or m.startswith(f"{a}.") for a in allowed)) == []
