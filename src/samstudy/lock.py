"""Crash recovery for `./run.sh study`: a run that was killed (kill -9, an out-of-memory kill, a lost node)
leaves Snakemake's lock in `.snakemake/locks`, and the next run would stop with a LockException until the
user runs `snakemake --unlock`. Before each run, `python -m samstudy.lock [snakemake args]`:

- refuses (exit status 75) while another run is active on this directory: a Snakemake process, or a
  samstudy job a killed Snakemake left running (its outputs are still being written), listed with PIDs;
- otherwise removes a stale lock with `snakemake --unlock` (same arguments: same workflow and config).

Snakemake then reruns the jobs the killed run left incomplete (`rerun-incomplete` in the profiles); every
output is written atomically, so nothing half-written is taken for a result, and what finished (cache
entries, trained epochs in `last.pt`) is reused. Processes are found with psutil on this machine only: on a
cluster, jobs of a killed run may still be queued or running (`squeue`); cancel them first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

BUSY = 75  # EX_TEMPFAIL: try again later


def _runs(cmdline: list[str], program: str) -> bool:
    """`program ...`, `python .../program ...` or `python -m program ...`."""
    if program in (os.path.basename(a) for a in cmdline[:4]):
        return True
    return any(cmdline[i] == "-m" and cmdline[i + 1] == program for i in range(len(cmdline) - 1))


def _is_study_process(cmdline: list[str]) -> bool:
    """Snakemake itself, or a samstudy job (`samstudy --results ... <verb>`)."""
    return _runs(cmdline, "snakemake") or (_runs(cmdline, "samstudy") and "--results" in cmdline)


def active_runs(workdir: str | Path) -> list[tuple[int, str]]:
    """(pid, command line) of the study processes working in `workdir`, other than this one and its parents."""
    workdir = os.path.realpath(workdir)
    own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid in own or not proc.info["cmdline"] or not _is_study_process(proc.info["cmdline"]):
                continue
            if os.path.realpath(proc.cwd()) == workdir:
                found.append((proc.pid, " ".join(proc.info["cmdline"])))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(found)


def locked(workdir: str | Path) -> bool:
    """Whether Snakemake's lock files are present in `workdir`."""
    locks = Path(workdir, ".snakemake", "locks")
    return locks.is_dir() and any(locks.iterdir())


def recover(workdir: str | Path, snakemake_args: list[str]) -> int:
    """0 when a run may start (a stale lock removed), BUSY while another run is active here."""
    others = active_runs(workdir)
    if others:
        shown = "\n".join(f"  pid {pid}: {cmd[:160]}" for pid, cmd in others)
        print(
            f"samstudy: another run is active in {os.path.realpath(workdir)}; not starting a second one on the "
            f"same files. Wait for it to end, or stop it (kill the PIDs below), then rerun:\n{shown}",
            file=sys.stderr,
        )
        return BUSY
    if locked(workdir):
        print(
            "samstudy: a previous run in this directory was interrupted (its lock is left and no run is "
            "active): unlocking; the jobs it left incomplete are rerun, finished ones are kept.",
            file=sys.stderr,
        )
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--unlock", *snakemake_args],
            cwd=workdir,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return 0


if __name__ == "__main__":
    sys.exit(recover(os.getcwd(), sys.argv[1:]))
