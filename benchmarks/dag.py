"""DAG benchmark: how long Snakemake takes to decide what to do on a study of many cases.

Builds a study of N tiny synthetic cases (default 1000), runs the CPU-cheap part of the workflow to
completion (ingest, manifest, splits, preprocess, prompts, nnU-Net export), then times
  - noop_dry_run_s: `snakemake -n` for those finished targets (nothing to do), and
  - dag_build_s:    `snakemake -n` for the whole study (DAG of every job still to run).
Unsharded, jobs are per dataset (cases are looped inside a job, with per-case caching), so the DAG does
not grow with the case count. Then the same with `execution.shards` (default 10,000 cases in 64 shards):
the cheap part includes the `shard` checkpoint and the 64 prompts jobs, and the full DAG has a job per
shard of every per-case stage; `sharded` also records the dry run's peak memory. Target: <= 10 s.

    python benchmarks/dag.py [--cases 1000] [--sharded-cases 10000 --shards 64]

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


def cheap_targets(shards: int) -> list[str]:
    """The CPU-cheap part of the study: ingest, manifest, splits, preprocess, shards, prompts, nnU-Net export."""
    from samstudy.paths import Layout, shard_names

    layout = Layout("results")
    return [
        "results/manifest.parquet",
        "results/splits.json",
        *[layout.for_shard(name).prompts("many", "box") for name in shard_names(shards)],
        "results/nnunet/stamps/many.exported.json",
    ]


def snakemake(work: Path, *args: str) -> tuple[float, str, float]:
    """Seconds, output and peak RSS (MiB) of one snakemake run (os.wait4: this child's own peak)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=work, env=env, stdout=log, stderr=log
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read()
    if proc.returncode != 0:
        raise RuntimeError(out[-6000:])
    return seconds, out, usage.ru_maxrss / 1024


def measure(cases: int, shards: int) -> dict:
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
                    "synthetic": {"n_patients": cases, "shape": [16, 16, 8], "noise_hu": 5.0},
                }
            ],
            "execution": {"shards": shards},
        }
        (work / "config" / "config.yaml").write_text(
            yaml.safe_dump({**yaml.safe_load((REPO / "config/config.yaml").read_text()), **study})
        )
        targets = cheap_targets(shards)
        build_s, _, _ = snakemake(work, *targets)
        noop_s, noop_out, noop_rss = snakemake(work, "-n", *targets)
        assert "Nothing to be done" in noop_out, noop_out[-2000:]
        dag_s, dag_out, dag_rss = snakemake(work, "-n")
        jobs = int(re.search(r"^total\s+(\d+)$", dag_out, re.M).group(1))
    return {
        "cases": cases,
        "shards": shards,
        "noop_dry_run_s": noop_s,
        "dag_build_s": dag_s,
        "jobs": jobs,
        "peak_rss_mb": max(noop_rss, dag_rss),
        "cheap_part_run_s": build_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--sharded-cases", type=int, default=10000)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/dag.json"))
    args = parser.parse_args()
    plain = measure(args.cases, 1)
    sharded = measure(args.sharded_cases, args.shards)
    result = {
        "cases": plain["cases"],
        "noop_dry_run_s": plain["noop_dry_run_s"],
        "dag_build_s": plain["dag_build_s"],
        "jobs_in_full_dag": plain["jobs"],
        "cheap_part_run_s": plain["cheap_part_run_s"],
        "sharded": sharded,
        "target_s": 10.0,
    }
    print(f"{'measure':<20}{'unsharded':>12}{'sharded':>12}")
    for key in ("cases", "shards", "cheap_part_run_s", "noop_dry_run_s", "dag_build_s", "jobs", "peak_rss_mb"):
        cells = [plain[key], sharded[key]]
        print(f"{key:<20}" + "".join(f"{v:>12.2f}" if isinstance(v, float) else f"{v:>12}" for v in cells))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
