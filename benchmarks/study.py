"""Default-study wall time: `snakemake --cores 2` from nothing, for two commits of this repository.

Each run is a fresh `git clone` of this repository checked out at the commit, run with this environment
(`PATH` = this Python's bin, `PYTHONPATH` = the clone's `src`, so the clone's own code runs); the setups
are interleaved (A B A B ..., `--rounds`), so a change of the machine's load lands on both. Per run: wall
seconds, jobs, and the summed wall seconds of each rule's jobs, parsed from Snakemake's log (job start
and "Finished jobid" times, 1 s resolution). Run it on a quiet machine: every run is the whole study.

    python benchmarks/study.py --baseline 09b2a9d --candidate HEAD [--rounds 2] [--cores 2] [--keep DIR]

Writes benchmarks/results/study.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from common import fmt, spread

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]")
JOB = re.compile(r"(?:local)?(?:rule|checkpoint) (\w+):")


def rule_seconds(log: str) -> tuple[dict[str, float], int]:
    """(summed wall seconds per rule, jobs) from a Snakemake log: a job runs from the time stamp before its
    `rule X:` block to the one before its `Finished jobid` line."""
    now, rule, start, rules, seconds = None, None, {}, {}, defaultdict(float)
    for line in log.splitlines():
        if m := STAMP.match(line):
            now = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := JOB.match(line):
            rule = m.group(1)
        elif (m := re.match(r"\s+jobid: (\d+)", line)) and rule:
            start[m.group(1)], rules[m.group(1)], rule = now, rule, None
        elif (m := re.match(r"Finished jobid: (\d+)", line)) and m.group(1) in start:
            seconds[rules[m.group(1)]] += (now - start[m.group(1)]).total_seconds()
    return dict(seconds), len(rules)


def run_once(commit: str, cores: int, scratch: Path) -> dict:
    work = scratch / commit
    subprocess.run(["rm", "-rf", str(work)], check=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=work, check=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(work / "src"),
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(cores)], cwd=work, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{commit}: the study failed\n{(proc.stdout + proc.stderr)[-4000:]}")
    seconds, jobs = rule_seconds(proc.stdout + proc.stderr)
    return {"wall_s": wall, "jobs": jobs, "rule_s": seconds, "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="commit A")
    parser.add_argument("--candidate", default="HEAD", help="commit B")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "study.json"))
    parser.add_argument(
        "--keep", metavar="DIR", help="run in DIR/<commit> and keep the last round's clones (e.g. for identical.py)"
    )
    a = parser.parse_args()
    resolve = lambda ref: subprocess.run(  # noqa: E731
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    setups = {"baseline": resolve(a.baseline), "candidate": resolve(a.candidate)}
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    with tempfile.TemporaryDirectory(prefix="study-bench-") as temporary:
        scratch = a.keep or temporary
        for r in range(a.rounds):
            for name, commit in setups.items():
                runs[name].append(run_once(commit, a.cores, Path(scratch)))
                print(f"round {r + 1}: {name} {commit} {runs[name][-1]['wall_s']:.0f} s", file=sys.stderr)
    result = {"benchmark": "study", "cores": a.cores, "rounds": a.rounds, "setups": setups}
    for name, found in runs.items():
        rules = sorted({k for run in found for k in run["rule_s"]})
        result[name] = {
            "wall_s": spread([run["wall_s"] for run in found]),
            "jobs": found[0]["jobs"],
            "job_s_by_rule": {k: spread([run["rule_s"].get(k, 0.0) for run in found])["median"] for k in rules},
            "job_s_total": spread([sum(run["rule_s"].values()) for run in found])["median"],
            "load_after": [run["load"] for run in found],
        }
    result["candidate_over_baseline"] = result["candidate"]["wall_s"]["median"] / result["baseline"]["wall_s"]["median"]
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'setup':<11}{'commit':<9}{'jobs':>5}  {'wall s: median [min, max]':<28}{'summed job s':>13}")
    for name, commit in setups.items():
        s = result[name]
        print(f"{name:<11}{commit:<9}{s['jobs']:>5}  {fmt(s['wall_s'], 0):<28}{s['job_s_total']:>13.0f}")
    print(f"candidate / baseline: {result['candidate_over_baseline']:.2f}")


if __name__ == "__main__":
    main()
