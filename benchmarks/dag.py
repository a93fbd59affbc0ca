"""DAG benchmark: how long Snakemake takes to decide what to do on a study of many cases.

Builds a study of N tiny synthetic cases (default 1000), runs the CPU-cheap part of the workflow to
completion (ingest, manifest, splits, preprocess, prompts, nnU-Net export), then times
  - noop_dry_run_s: `snakemake -n` for those finished targets (nothing to do), and
  - dag_build_s:    `snakemake -n` for the whole study (DAG of every job still to run).
Jobs are per dataset (cases are looped inside a job, with per-case caching), so the DAG does not grow
with the case count; the benchmark shows what that costs and buys. Target: both <= 10 s.

    python benchmarks/dag.py [--cases 1000]

Writes benchmarks/results/dag.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHEAP_TARGETS = [
    "results/manifest.parquet",
    "results/splits.json",
    "results/prompts/many/box.json",
    "results/nnunet/stamps/many.exported.json",
]


def snakemake(work: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=work, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return seconds, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/dag.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("Snakefile", "workflow", "config", "envs"):
            src = REPO / name
            (shutil.copytree(src, work / name) if src.is_dir() else shutil.copy(src, work / name))
        os.symlink("workflow/profiles", work / "profiles")
        study = {
            "datasets": [
                {
                    "name": "many",
                    "format": "synthetic",
                    "modality": "CT",
                    "synthetic": {"n_patients": args.cases, "shape": [16, 16, 8], "noise_hu": 5.0},
                }
            ],
        }
        (work / "config" / "config.yaml").write_text(
            yaml.safe_dump({**yaml.safe_load((REPO / "config/config.yaml").read_text()), **study})
        )
        build_s, _ = snakemake(work, *CHEAP_TARGETS)
        noop_s, noop_out = snakemake(work, "-n", *CHEAP_TARGETS)
        assert "Nothing to be done" in noop_out, noop_out[-2000:]
        dag_s, dag_out = snakemake(work, "-n")
        jobs = int(re.search(r"^total\s+(\d+)$", dag_out, re.M).group(1))
    result = {
        "cases": args.cases,
        "noop_dry_run_s": noop_s,
        "dag_build_s": dag_s,
        "jobs_in_full_dag": jobs,
        "cheap_part_run_s": build_s,
        "target_s": 10.0,
    }
    print(f"{'measure':<34}{'value':>10}")
    for key in ("cases", "cheap_part_run_s", "noop_dry_run_s", "dag_build_s", "jobs_in_full_dag"):
        print(f"{key:<34}{result[key]:>10.2f}" if isinstance(result[key], float) else f"{key:<34}{result[key]:>10}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
