"""The same workflow submitted to a real single-node Slurm (started by tests/e2e/slurm.sh) gives the
same outputs as a local run: ingest, preprocess, embed, prompts, one inference and its evaluation. The
cluster run cuts the dataset into 2 shards (two embed and two infer Slurm jobs); the local one does not."""

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

from tests.conftest import REPO, workflow_copy

pytestmark = pytest.mark.slow
TARGET = "results/metrics/zeroshot.box/phantom.parquet"

SMALL_STUDY = {
    "datasets": [
        {
            "name": "phantom",
            "format": "synthetic",
            "modality": "CT",
            "patient_id": r"^(pat\d+)",
            "synthetic": {"n_patients": 4, "scans_per_patient": 1, "shape": [48, 48, 8]},
        }
    ],
    "methods": {"zeroshot": {"model": "litemedsam", "adaptation": "none"}},
    "nnunet": {"enabled": False},
}


@pytest.fixture(scope="module")
def slurm():
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("starting a local Slurm needs root and apt-get (CI has both)")
    subprocess.run(["bash", str(REPO / "tests/e2e/slurm.sh"), "start"], check=True, timeout=600)
    yield
    subprocess.run(["bash", str(REPO / "tests/e2e/slurm.sh"), "stop"], check=False, timeout=60)


def _workdir(root: Path, shards: int = 1) -> Path:
    workflow_copy(root)
    (root / "study.yaml").write_text(yaml.safe_dump({**SMALL_STUDY, "execution": {"shards": shards}}))
    return root


def _run(work: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        "timeout",
        "-s",
        "INT",
        "900",
        sys.executable,
        "-m",
        "snakemake",
        TARGET,  # first: --configfile and the resource options take lists
        "--configfile",
        "study.yaml",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1000)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def test_slurm_run_submits_every_job_and_matches_a_local_run(slurm, tmp_path):
    local = _workdir(tmp_path / "local")
    _run(local, "--cores", "2")
    cluster = _workdir(tmp_path / "cluster", shards=2)
    # The test node has 2 CPUs: the profile's GPU rules ask for more CPUs per GPU, so they are lowered here.
    out = _run(
        cluster,
        "--profile",
        "workflow/profiles/slurm",
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "3",
        "--default-resources",
        "mem_mb=2000",
        "runtime=30",
        "cpus_per_task=1",
        "gpu=0",
        "--set-resources",
        "embed:cpus_per_gpu=1",
        "infer:cpus_per_gpu=1",
        "--set-threads",
        "embed=1",
        "infer=1",
    )
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    ran = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", out)
    assert len(submitted) >= 7 and len(submitted) == len([r for r in ran if r != "all"]), out[-3000:]
    # one Slurm job per shard of the GPU stages (each asks for its own GPU)
    assert ran.count("embed") == 2 and ran.count("infer") == 2, ran
    local_metrics = pd.read_parquet(local / TARGET).sort_values(["case_id", "label"]).reset_index(drop=True)
    cluster_metrics = pd.read_parquet(cluster / TARGET).sort_values(["case_id", "label"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(local_metrics, cluster_metrics)
    for f in sorted((local / "results/predictions/zeroshot.box/phantom").glob("*.nii.gz")):
        other = cluster / "results/predictions/zeroshot.box/phantom" / f.name
        assert np.array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(str(f))), sitk.GetArrayFromImage(sitk.ReadImage(str(other)))
        )
