"""Raw-data inputs benchmark: what listing every file of a user dataset at DAG time costs.

The Snakefile lists each user dataset's files (`samstudy.readers.dataset_files`) as inputs of its ingest
job, with a size+mtime fingerprint in the job's params (issue #14). This measures, for an nnU-Net raw
dataset of `--files` files (default 10,000: 5,000 cases of image + label; empty files, since only the
listing is timed):
  - listing_s:      dataset_files + fingerprint in Python;
  - dry_run_s:      `snakemake -n` of a study with that dataset (the DAG of every job, nothing run yet),
  - dry_run_small_s the same study with a 10-file dataset;
the two dry runs interleaved (small, large, small, large, ...; --rounds, default 3), so a load change on
this shared machine lands on both. `dry_run_overhead_s` = median(large) - median(small).

    python benchmarks/raw_inputs.py [--files 10000] [--rounds 3]

Writes benchmarks/results/raw_inputs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, spread  # noqa: E402

from samstudy import config as samstudy_config  # noqa: E402
from samstudy.readers import dataset_files, fingerprint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _dataset(root: Path, cases: int) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}
    meta["numTraining"] = cases
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(cases):
        (root / "imagesTr" / f"case{i:05d}_0000.nii.gz").touch()
        (root / "labelsTr" / f"case{i:05d}.nii.gz").touch()
    return root


def _workdir(root: Path, data: Path) -> Path:
    root.mkdir()
    for name in ("Snakefile", "workflow", "config", "envs"):
        src = REPO / name
        (shutil.copytree(src, root / name) if src.is_dir() else shutil.copy(src, root / name))
    os.symlink("workflow/profiles", root / "profiles")
    study = {
        "datasets": [{"name": "user", "format": "nnunet", "path": str(data), "modality": "CT"}],
        "nnunet": {"enabled": False},
        "prompts": {"derived": {}},
    }
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root


def _dry_run(work: Path) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", "study.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/raw_inputs.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        large = _dataset(tmp / "large", args.files // 2)
        small = _dataset(tmp / "small", 5)
        entry = samstudy_config.validate(
            {"datasets": [{"name": "user", "format": "nnunet", "path": str(large), "modality": "CT"}]}
        )["datasets"][0]
        listing = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            files = dataset_files(entry)
            fingerprint(files)
            listing.append(time.perf_counter() - start)
        assert len(files) == args.files + 1  # + dataset.json
        work = {"small": _workdir(tmp / "w_small", small), "large": _workdir(tmp / "w_large", large)}
        times: dict[str, list[float]] = {"small": [], "large": []}
        for _ in range(args.rounds):
            for name in ("small", "large"):  # interleaved
                times[name].append(_dry_run(work[name]))
    result = {
        "files": args.files + 1,
        "listing_s": spread(listing),
        "dry_run_s": spread(times["large"]),
        "dry_run_small_s": spread(times["small"]),
        "dry_run_overhead_s": spread(times["large"])["median"] - spread(times["small"])["median"],
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"| files | listing + fingerprint s | dry run s ({args.files + 1} files) | dry run s (11 files) |")
    print("|---|---|---|---|")
    print(f"| {args.files + 1} | {fmt(result['listing_s'], 3)} | {fmt(result['dry_run_s'])} | "
          f"{fmt(result['dry_run_small_s'])} |")  # fmt: skip
    print(f"overhead of the listing in a dry run: {result['dry_run_overhead_s']:.2f} s -> {args.out}")


if __name__ == "__main__":
    main()
