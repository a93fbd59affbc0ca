"""Per-job fixed cost: what every `samstudy <verb>` job pays before and after its work.

Snakemake runs each job as a fresh `samstudy <verb>` process; on a cluster each one is a Slurm job too. A
tiny study (a 4-patient CT phantom of 32x32x8 voxels, one evaluation case) is built once; then, in every
round, each CPU verb is run

- as a job: the `samstudy` command in a fresh process, timed from outside (job_s);
- warm: `samstudy.cli.main` with the same arguments in a long-lived process that has run it before, so
  its imports are done (work_s: the work alone);
- under `python -X importtime` (imports_s: the sum of its top-level imports; torch_loaded).

overhead_s = job_s - work_s, paired within a round. `python -c pass` and `python -c "import torch"` are
timed in every round as well. Everything is interleaved (each measurement once per round, R rounds):
median and [min, max] over the rounds. With --baseline-src DIR (the `src` folder of another checkout, e.g.
`git archive <commit> src | tar -x -C DIR`) the other code is measured in the same rounds, one after the
other, for a before/after comparison.

    python benchmarks/jobs.py [--rounds 5] [--baseline-src DIR]

Target: max_cpu_job_overhead_s <= 2 s (2 cores). Writes benchmarks/results/jobs.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fmt, phantom_config, spread

from samstudy.cli import TORCH_FREE_VERBS
from samstudy.config import as_param
from samstudy.io import write_json
from samstudy.paths import Layout

TARGET_S = 2.0
SAMSTUDY = str(Path(sys.executable).parent / "samstudy")
# A long-lived process running CLI calls sent as JSON lines; answers with each call's seconds.
WORKER = """
import contextlib, json, sys, time
from samstudy.cli import main
answer = sys.stdout
for line in sys.stdin:
    argv = json.loads(line)
    with contextlib.redirect_stdout(sys.stderr):
        start = time.perf_counter()
        main(argv)
        seconds = time.perf_counter() - start
    print(json.dumps(seconds), file=answer, flush=True)
"""


def build_study(root: Path) -> dict[str, list[str]]:
    """A tiny study on disk with every input the CPU verbs read; returns each job's CLI arguments (after
    `samstudy`), with the params the workflow would give it."""
    from samstudy.cases import eval_cases, load_dataset_table
    from samstudy.cli import main
    from samstudy.infer import write_prediction
    from samstudy.preprocess import load_preprocessed

    splits = {"test_fraction": 0.25, "val_fraction": 0.34}
    cfg = phantom_config(root, "litemedsam", 4, [32, 32, 8], splits=splits)
    cfg["prompts"]["derived"] = {"auto_box": {"from": "gt", "kind": "box"}}
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds, seed = cfg["datasets"][0], cfg["seed"]
    base = ["--results", layout.results_dir, "--cache", layout.cache_dir]
    settings = {"components": cfg["prompts"]["components"]}
    info = {"model": "none", "adaptation": "none", "prompted": False, "prompt_source": "none"}
    gt_info = {**info, "method": "gt", "protocol": "none"}
    clicks_info = {**info, "method": "gt", "protocol": "clicks"}
    data = ["--dataset", "bench"]
    jobs = {
        "ingest": ["ingest", "--params", as_param({"dataset": ds, "seed": seed})],
        "manifest": ["manifest", "--params", as_param({"datasets": ["bench"]})],
        "split": ["split", *data, "--params", as_param({"role": ds["role"], "seed": seed, "splits": cfg["splits"]})],
        "splits": ["splits", "--params", as_param({"datasets": ["bench"]})],
        "preprocess": ["preprocess", "--params", as_param({"dataset": ds, "preprocess": cfg["preprocess"]})],
        "prompts": ["prompts", *data, "--protocol", "box", "--params", as_param({"prompts": settings, "seed": seed})],
        "shard": ["shard", *data, "--params", as_param({"shards": 2})],
        "gather": ["gather", "prompts", *data, "--name", "box", "--params", as_param({"shards": 2})],
        "prompts_derived": [
            "prompts",
            *data,
            "--protocol",
            "auto_box",
            "--params",
            as_param({"derived": cfg["prompts"]["derived"]["auto_box"], "prompts": settings, "seed": seed}),
        ],
        "evaluate": [
            "evaluate",
            *data,
            "--run",
            "gt",
            "--params",
            as_param({"run_info": gt_info, "evaluate": cfg["evaluate"]}),
        ],
        "evaluate_clicks": [
            "evaluate_clicks",
            *data,
            "--run",
            "gt.clicks",
            "--params",
            as_param({"run_info": clicks_info, "evaluate": cfg["evaluate"]}),
        ],
        "summarize": [
            "summarize",
            "--params",
            as_param(
                {
                    "parts": [["gt", "bench"], ["gt.clicks", "bench"]],
                    "click_parts": [["gt.clicks", "bench"]],
                    "seed": seed,
                }
            ),
        ],
        "report": ["report", "--params", as_param({"config": cfg, "nnunet_stamps": []})],
        "nnunet_export": ["nnunet", "export", *data, "--params", as_param({"dataset_id": 990})],
    }
    jobs = {name: base + argv for name, argv in jobs.items()}
    with contextlib.redirect_stdout(sys.stderr):
        for name in ("ingest", "manifest", "split", "splits", "preprocess", "prompts", "shard"):
            main(jobs[name])
        for shard in ("0of2", "1of2"):  # the shards' prompts the gather merges
            main(base + ["--shard", shard] + jobs["prompts"][len(base) :])
        # the predictions the later verbs score: the ground truth put back through the inverse mapping, as
        # a plain run ("gt") and as a clicks run with one click ("gt.clicks")
        rows = load_dataset_table(layout, "bench")[0].set_index("case_id")
        for case in eval_cases(layout, "bench"):
            pre = load_preprocessed(layout, "bench", case)
            ref = rows.loc[case, "images"][0]
            for run in ("gt", "gt.clicks"):
                write_prediction(layout.prediction(run, "bench", case), pre["labels"], int(pre["axis"]), ref)
            for clicks in (0, 1):
                path = layout.click_prediction("gt.clicks", "bench", case, clicks)
                write_prediction(path, pre["labels"], int(pre["axis"]), ref)
            write_json(layout.prompt_record("gt.clicks", "bench", case), {"rounds": 1, "objects": []})
        clicks_metrics = [a if a != "gt" else "gt.clicks" for a in jobs["evaluate"]]
        clicks_metrics[-1] = as_param({"run_info": clicks_info, "evaluate": cfg["evaluate"]})
        main(clicks_metrics)  # the clicks run's own metrics (summarize reads them): not measured
        for name in (
            "prompts_derived",
            "evaluate",
            "evaluate_clicks",
            "summarize",
            "report",
            "nnunet_export",
            "gather",
        ):
            main(jobs[name])
    return jobs


class Setup:
    """One version of the code: its environment, and a warm worker process running it."""

    def __init__(self, name: str, src: str | None, jobs: dict[str, list[str]]):
        self.name = name
        self.env = dict(os.environ)
        if src:
            self.env["PYTHONPATH"] = src + os.pathsep + self.env.get("PYTHONPATH", "")
        self.worker = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        for argv in jobs.values():  # warm-up: every verb's imports and first-call caches
            self.warm(argv)

    def job(self, argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run(
            [SAMSTUDY, *argv], env=self.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return time.perf_counter() - start

    def warm(self, argv: list[str]) -> float:
        self.worker.stdin.write(json.dumps(argv) + "\n")
        self.worker.stdin.flush()
        line = self.worker.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the warm worker died on {argv}")
        return json.loads(line)

    def imports(self, argv: list[str]) -> tuple[float, bool]:
        """Seconds of top-level imports of one job (python -X importtime) and whether it loaded torch."""
        cmd = [sys.executable, "-X", "importtime", SAMSTUDY, *argv]
        err = subprocess.run(cmd, env=self.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).stderr
        lines = re.findall(r"^import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$", err.decode(), re.M)
        total_us = sum(int(cum) for cum, indent, _ in lines if not indent)
        return total_us / 1e6, any(name == "torch" for _, _, name in lines)

    def close(self) -> None:
        self.worker.stdin.close()
        self.worker.wait(timeout=60)


def python_run(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def measure(setups: list[Setup], jobs: dict[str, list[str]], rounds: int) -> dict:
    raw: dict = {s.name: {v: {"job": [], "work": [], "imports": [], "torch": []} for v in jobs} for s in setups}
    base = {"python_pass": [], "import_torch": []}
    for r in range(rounds):
        base["python_pass"].append(python_run("pass"))
        base["import_torch"].append(python_run("import torch"))
        for verb, argv in jobs.items():
            for s in setups:  # A B A B ...: every setup's measurement of a verb back to back
                raw[s.name][verb]["job"].append(s.job(argv))
                raw[s.name][verb]["work"].append(s.warm(argv))
            for s in setups:
                seconds, torch_loaded = s.imports(argv)
                raw[s.name][verb]["imports"].append(seconds)
                raw[s.name][verb]["torch"].append(torch_loaded)
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    pass_median = spread(base["python_pass"])["median"]
    out = {"python_pass_s": spread(base["python_pass"]), "import_torch_s": spread(base["import_torch"])}
    for s in setups:
        verbs = {}
        for verb, m in raw[s.name].items():
            overhead = [j - w for j, w in zip(m["job"], m["work"], strict=True)]
            verbs[verb] = {
                "job_s": spread(m["job"]),
                "work_s": spread(m["work"]),
                "overhead_s": spread(overhead),
                "imports_s": spread(m["imports"]),
                "torch_loaded": any(m["torch"]),
                "overhead_over_python_pass": spread(overhead)["median"] / pass_median,
            }
        worst = max(verbs, key=lambda v: verbs[v]["overhead_s"]["median"])
        out[s.name] = {
            "verbs": verbs,
            "max_cpu_job_overhead_s": verbs[worst]["overhead_s"]["median"],
            "max_verb": worst,
            "cpu_jobs_loading_torch": sorted(v for v in verbs if verbs[v]["torch_loaded"]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-src", help="the src folder of other code, measured in the same rounds")
    parser.add_argument("--baseline-name", default="baseline", help="what the baseline is (e.g. a commit)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "jobs.json"))
    args = parser.parse_args()
    if shutil.which(SAMSTUDY) is None:
        sys.exit(f"{SAMSTUDY}: the samstudy command is not installed beside this Python")
    with tempfile.TemporaryDirectory() as tmp:
        jobs = build_study(Path(tmp))
        covered = {" ".join(argv[4:6]) if argv[4] == "nnunet" else argv[4] for argv in jobs.values()}
        assert set(TORCH_FREE_VERBS) <= covered, f"not measured: {set(TORCH_FREE_VERBS) - covered}"
        setups = [Setup("current", None, jobs)]
        if args.baseline_src:
            setups.append(Setup(args.baseline_name, str(Path(args.baseline_src).resolve()), jobs))
        try:
            result = measure(setups, jobs, args.rounds)
        finally:
            for s in setups:
                s.close()
    current = result["current"]
    report = {
        "benchmark": "jobs",
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "rounds": args.rounds,
        "max_cpu_job_overhead_s": current["max_cpu_job_overhead_s"],
        "max_verb": current["max_verb"],
        "cpu_jobs_loading_torch": current["cpu_jobs_loading_torch"],
        "python_pass_s": result["python_pass_s"],
        "import_torch_s": result["import_torch_s"],
        "ratio_max_overhead_over_python_pass": current["max_cpu_job_overhead_s"] / result["python_pass_s"]["median"],
        "verbs": current["verbs"],
        "target": {"max_cpu_job_overhead_s": f"<= {TARGET_S}"},
    }
    if args.baseline_src:
        before = result[args.baseline_name]
        report["baseline"] = {
            "name": args.baseline_name,
            "max_cpu_job_overhead_s": before["max_cpu_job_overhead_s"],
            "max_verb": before["max_verb"],
            "cpu_jobs_loading_torch": before["cpu_jobs_loading_torch"],
            "verbs": before["verbs"],
        }
    print_table(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


def print_table(report: dict) -> None:
    base = report.get("baseline")
    print(f"\nPer-job cost, median [min, max] of {report['rounds']} interleaved rounds, seconds")
    head = f"{'verb':<16}{'job':>20}{'work':>20}{'overhead':>20}{'imports':>20}  torch"
    print(head + (f"{'overhead ' + base['name']:>28}{'imports ' + base['name']:>24}" if base else ""))
    for verb, v in report["verbs"].items():
        line = f"{verb:<16}{fmt(v['job_s']):>20}{fmt(v['work_s']):>20}{fmt(v['overhead_s']):>20}"
        line += f"{fmt(v['imports_s']):>20}  {'yes' if v['torch_loaded'] else 'no':>5}"
        if base:
            b = base["verbs"][verb]
            line += f"{fmt(b['overhead_s']):>28}{fmt(b['imports_s']):>24}"
        print(line)
    torch_s = fmt(report["import_torch_s"])
    print(f"python -c pass: {fmt(report['python_pass_s'], 3)} s; python -c 'import torch': {torch_s} s")
    ratio = report["ratio_max_overhead_over_python_pass"]
    print(
        f"max CPU job overhead: {report['max_cpu_job_overhead_s']:.2f} s ({report['max_verb']}; "
        f"{ratio:.0f}x python -c pass), target {report['target']['max_cpu_job_overhead_s']}"
    )
    if base:
        print(f"{base['name']}: max {base['max_cpu_job_overhead_s']:.2f} s ({base['max_verb']})")


if __name__ == "__main__":
    main()
