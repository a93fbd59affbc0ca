"""The default study, end to end, through snakemake for real (about 6-8 minutes on 2 cores)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, timeout: int = 1500) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    if "Nothing to be done" in dry_run_output:
        return {}
    table = dry_run_output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("study")
    for name in ("Snakefile", "workflow", "config", "envs"):
        src = REPO / name
        (shutil.copytree(src, work / name) if src.is_dir() else shutil.copy(src, work / name))
    os.symlink("workflow/profiles", work / "profiles")
    snakemake(work)
    return work


def test_all_methods_scored_with_predictions_in_the_input_geometry(finished_study):
    results = finished_study / "results"
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert {"zeroshot.box", "decoder.box", "nnunet_2d"} <= set(metrics["run"])
    for column in ("dataset", "case_id", "label", "method", "model", "adaptation", "protocol", "dice", "nsd",
                   "hd95", "prompted"):  # fmt: skip
        assert column in metrics
    assert metrics["dice"].between(0, 1).all()
    assert metrics.loc[metrics["run"] == "zeroshot.box", "dice"].mean() > 0.5  # real weights do segment
    assert not metrics.loc[metrics["run"] == "nnunet_2d", "prompted"].any()
    manifest = pd.read_parquet(results / "manifest.parquet").set_index("case_id")
    for run in ("zeroshot.box", "decoder.box", "nnunet_2d"):
        files = sorted((results / "predictions" / run / "phantom").glob("*.nii.gz"))
        assert files, run
        for f in files:
            pred = sitk.ReadImage(str(f))
            image = sitk.ReadImage(manifest.loc[f.name[: -len(".nii.gz")], "images"][0])
            assert pred.GetSize() == image.GetSize()
            assert np.allclose(pred.GetSpacing(), image.GetSpacing())
            assert np.allclose(pred.GetOrigin(), image.GetOrigin())
            assert np.allclose(pred.GetDirection(), image.GetDirection())
    assert (results / "report" / "index.html").read_text().count("decoder.box") >= 1
    assert (results / "summary.json").is_file() and (results / "splits.json").is_file()


def test_rerun_has_nothing_to_do(finished_study):
    assert job_counts(snakemake(finished_study, "-n")) == {}


def test_changing_the_learning_rate_reruns_training_and_what_follows_only(finished_study):
    config_path = finished_study / "config" / "config.yaml"
    original = config_path.read_text()
    cfg = yaml.safe_load(original)
    cfg["train"]["lr"] = cfg["train"]["lr"] * 2
    config_path.write_text(yaml.safe_dump(cfg))
    try:
        counts = job_counts(snakemake(finished_study, "-n"))
    finally:
        config_path.write_text(original)
    assert counts == {"train": 1, "infer": 1, "evaluate": 1, "summarize": 1, "report": 1, "all": 1}
