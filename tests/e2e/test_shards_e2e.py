"""Shards in a real Snakemake run: adding a case to a dataset reruns only its own shard's per-case jobs (and
the gathers), not the other shards'."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from samstudy import synthetic
from samstudy.paths import shard_of
from tests.conftest import run_snakemake, workflow_copy

pytestmark = pytest.mark.slow
SHARDS = 3
PNG = {"kind": "png2d", "shape": [48, 40]}
PER_SHARD = ("prompts", "embed", "infer", "evaluate")


def _workdir(root: Path) -> Path:
    workflow_copy(root, ("Snakefile", "workflow", "envs"))
    cfg = {
        "datasets": [
            {
                "name": "skin",
                "format": "png",
                "path": "data/skin",
                "modality": "other",
                "role": "test_only",
                "labels": {"lesion": 1, "spot": 2},
            }
        ],
        "models": {"litemedsam": {"type": "litemedsam"}},
        "prompts": {"protocols": ["box"]},
        "methods": {"zeroshot": {"model": "litemedsam", "adaptation": "none"}},
        "nnunet": {"enabled": False},
        "execution": {"shards": SHARDS},
    }
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _run(work: Path) -> list[tuple[str, str]]:
    """(rule, shard or '') of every job a `snakemake --cores 2` ran."""
    out = run_snakemake(work)
    jobs = []
    for rule, body in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):\n((?:    .*\n)+)", out, re.M):
        shard = re.search(r"shard=(\d+of\d+)", body)
        jobs.append((rule, shard.group(1) if shard else ""))
    return jobs


def test_adding_a_case_reruns_only_its_shard(tmp_path):
    work = _workdir(tmp_path / "study")
    synthetic.write_dataset(work / "data" / "skin", 3, {**PNG, "n_patients": 6})
    first = _run(work)
    for rule in PER_SHARD:
        assert sorted(s for r, s in first if r == rule) == [f"{k}of{SHARDS}" for k in range(SHARDS)], rule
    before = pd.read_parquet(work / "results" / "metrics.parquet")

    # one more patient: the writer rewrites the first six with the same pixels and adds pat06_s0
    synthetic.write_dataset(work / "data" / "skin", 3, {**PNG, "n_patients": 7})
    new_shard = f"{shard_of('pat06_s0', SHARDS)}of{SHARDS}"
    second = _run(work)
    counts = Counter(r for r, _ in second)
    for rule in ("ingest", "preprocess", "shard", "gather_run", "summarize", "report"):
        assert counts[rule] == 1, (rule, second)
    for rule in PER_SHARD:  # the new case's shard only
        assert [s for r, s in second if r == rule] == [new_shard], (rule, second)

    assert _run(work) == []  # and then nothing is out of date

    after = pd.read_parquet(work / "results" / "metrics.parquet")
    assert set(after["case_id"]) == set(before["case_id"]) | {"pat06_s0"}
    old = after[after["case_id"] != "pat06_s0"].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before.reset_index(drop=True))  # the other cases' numbers are untouched
