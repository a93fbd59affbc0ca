"""Ingest benchmark: time and peak memory of ingesting N and 4N synthetic cases (streaming check).

The 3D phantom is written once (4N cases, nnU-Net raw layout; the N dataset links its first N cases),
then each ingest runs in a fresh process that reports:
- peak RSS (ru_maxrss) of the whole process, and its growth above the RSS measured after the imports,
  just before ingestion starts (the part that would grow if cases were held in memory);
- the peak of Python-traced allocations (tracemalloc, numpy included), in a separate run, since tracing
  slows the run down.
The N and 4N runs are interleaved (N, 4N, N, 4N, ...: R rounds; median and [min, max] of the time and the
peak RSS); the traced runs once each after the rounds (their peaks do not depend on the load).

    python benchmarks/ingest.py [--n 50] [--shape 128 128 32] [--rounds 3]

Target: memory_ratio_200_over_50 (peak RSS at 4N over N) <= 1.2. Writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import fmt, spread

TARGETS = {"memory_ratio_200_over_50": "<= 1.2"}


def _rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def write_phantoms(root: Path, n_cases: int, shape: list[int]) -> Path:
    """The phantom as an nnU-Net raw dataset of n_cases cases (one scan per patient)."""
    from samstudy import synthetic

    return synthetic.write_dataset(root, seed=0, settings={"n_patients": n_cases, "shape": shape})


def subset(full: Path, out: Path, n_cases: int) -> Path:
    """A dataset of the first n_cases cases of `full` (symlinks, its own dataset.json)."""
    from samstudy.io import read_json, write_json

    for folder in ("imagesTr", "labelsTr"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (full / "imagesTr").glob("*_0000.nii.gz"))[:n_cases]
    for case in cases:
        os.symlink(full / "imagesTr" / f"{case}_0000.nii.gz", out / "imagesTr" / f"{case}_0000.nii.gz")
        os.symlink(full / "labelsTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz")
    write_json(out / "dataset.json", {**read_json(full / "dataset.json"), "numTraining": len(cases)})
    return out


def worker(dataset: str, results: str, trace: bool) -> dict:
    """One ingest in this process (a child of main): time, peak RSS, RSS growth, traced peak."""
    from samstudy.ingest import ingest_dataset
    from samstudy.paths import Layout

    ds = {"name": "bench", "format": "nnunet", "path": dataset, "modality": "CT", "role": "train_test"}
    baseline = _rss_mb()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    manifest = ingest_dataset(ds, Layout(results), seed=0)
    seconds = time.perf_counter() - start
    out = {"cases": len(manifest), "seconds": seconds}
    if trace:
        out["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.update({"peak_rss_mb": peak, "baseline_rss_mb": baseline, "growth_mb": peak - baseline})
    return out


def child(dataset: Path, results: Path, trace: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(dataset), str(results)] + (["--trace"] if trace else [])
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="cases of the small run (the large one has 4n)")
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 32], help="phantom voxels (x, y, z)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (N, 4N, N, 4N, ...)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ingest.json"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, trace=args.trace)))
        return

    small, large = args.n, 4 * args.n
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        full = write_phantoms(root / f"phantom{large}", large, args.shape)
        written = time.perf_counter() - start
        datasets = {small: subset(full, root / f"phantom{small}", small), large: full}
        measured: dict[int, list[dict]] = {n: [] for n in datasets}
        for r in range(args.rounds):  # N, 4N, N, 4N, ...
            for n, path in datasets.items():
                measured[n].append(child(path, root / f"results{n}.{r}", trace=False))
                assert measured[n][-1]["cases"] == n, measured[n][-1]
        runs = {}
        for n, path in datasets.items():
            stats = {k: spread([m[k] for m in measured[n]]) for k in ("seconds", "peak_rss_mb", "growth_mb")}
            runs[n] = {"cases": n, **{k: v["median"] for k, v in stats.items()}, "spread": stats}
            runs[n]["baseline_rss_mb"] = spread([m["baseline_rss_mb"] for m in measured[n]])["median"]
            runs[n].update({k: v for k, v in child(path, root / f"traced{n}", trace=True).items() if k != "seconds"})
    case_mb = args.shape[0] * args.shape[1] * args.shape[2] * 2 / 2**20  # int16 image
    result = {
        "cases": [small, large],
        "rounds": args.rounds,
        "shape": args.shape,
        "image_mb_per_case_uncompressed": case_mb,
        "phantom_write_seconds": written,
        "runs": {str(n): r for n, r in runs.items()},
        "cases_per_s": {str(n): r["cases"] / r["seconds"] for n, r in runs.items()},
        f"memory_ratio_{large}_over_{small}": runs[large]["peak_rss_mb"] / runs[small]["peak_rss_mb"],
        f"growth_ratio_{large}_over_{small}": runs[large]["growth_mb"] / max(runs[small]["growth_mb"], 1e-9),
        f"traced_ratio_{large}_over_{small}": runs[large]["traced_peak_mb"] / runs[small]["traced_peak_mb"],
        "targets": TARGETS if small == 50 else {f"memory_ratio_{large}_over_{small}": "<= 1.2"},
        "machine": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(f"ingest of the {args.shape[0]}x{args.shape[1]}x{args.shape[2]} phantom ({case_mb:.1f} MiB per image)")
    print(f"median [min, max] of {args.rounds} interleaved rounds; traced peak: one run")
    print(
        f"{'cases':>6} {'seconds':>18} {'cases/s':>8} {'peak RSS MiB':>18} {'growth MiB':>11} {'traced peak MiB':>16}"
    )
    for n, r in runs.items():
        print(
            f"{n:>6} {fmt(r['spread']['seconds'], 1):>18} {r['cases'] / r['seconds']:>8.1f} "
            f"{fmt(r['spread']['peak_rss_mb'], 0):>18} {r['growth_mb']:>11.0f} {r['traced_peak_mb']:>16.1f}"
        )
    key = f"memory_ratio_{large}_over_{small}"
    print(f"{key}: {result[key]:.3f} (target <= 1.2)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
