"""Byte-identical results at two commits: the default study and every `config/examples/*.yaml`, file by file.

Each study runs in its own fresh `git clone` of this repository at the commit, with this environment
(`PATH` = this Python's bin, `PYTHONPATH` = the clone's `src`, as `benchmarks/study.py` does), with
`snakemake --cores N`. The default study runs as a user runs it; each example runs over it made small by
`SMALL` (or `SMALL_BY_STUDY`), written into the clone as `identical_small.yaml` (the same text at both
commits): the phantom alone, smaller, 1 training epoch, nnU-Net 2 x 5 iterations. Then every result file
that a user sees is compared by sha256 (relative paths: the clones live in different folders):

    predictions/**.nii.gz, metrics.parquet (and each run's), summary.json, dice_vs_clicks.parquet,
    checkpoints (**.pt, **.pth), manifest.parquet, splits, prompts, embedding index files and cache entries

A checkpoint whose bytes differ is loaded with torch and compared tensor by tensor, ignoring only the time
stamps nnU-Net writes into its training log (`VOLATILE`). Every other file under results/ and the cache
(except logs/ and benchmarks/: times) is compared too and listed, but does not fail the check.
A study named in `--expect-differ` (e.g. `sam2`: the refactor seeds random-init weights differently) is
reported apart: a difference there is expected in a file whose path names the study (its runs, models and
embedding index), in a cache entry no other model's index names, and in a study-wide table whose rows or
keys of the other runs are identical; everything else (e.g. LiteMedSAM's predictions there) stays strict.

    # the baseline now, kept (a failed study is resumed once; --resume keeps studies finished in DIR)
    python benchmarks/identical.py --baseline 1771157 --only-baseline --keep /tmp/ident/base
    # later: the candidate against the kept baseline
    python benchmarks/identical.py --reuse-baseline /tmp/ident/base --candidate HEAD --expect-differ sam2
    #   (optional: --keep-candidate /tmp/ident/cand, --studies default,sam2)
    # both in one go; or a self-check of the comparison on the kept baseline
    python benchmarks/identical.py --baseline 1771157 --candidate HEAD --keep /tmp/ident/base
    python benchmarks/identical.py --reuse-baseline /tmp/ident/base --reuse-candidate /tmp/ident/base

Prints a table per study (files compared, identical, differing, by category; the names of differing files)
and writes benchmarks/results/identical.json (`--out`); exits 1 when a strict file differs or a study
failed. A candidate run in a temporary folder is kept when it differs (its path is printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The small study every example runs over (lists replace, mappings merge over config/config.yaml and the
# example): the phantom alone, 4 patients x 1 scan of 8 slices (1 test, 1 validation, 2 training cases),
# decoder/adaptations 1 epoch of batches of 2 (LoRA/adapter/full fine-tuning backpropagate through the
# encoder: batches of 8 side by side were killed for memory on the shared 2-core machine), nnU-Net 2 epochs
# x 5 iterations.
SMALL_TEMPLATE = """\
# benchmarks/identical.py: run an example small (the same file at both commits)
datasets:
  - name: phantom
    format: synthetic
    modality: CT
    role: train_test
    patient_id: "^(pat\\\\d+)"
    synthetic:
      n_patients: {n_patients}
      scans_per_patient: 1
      shape: [64, 64, 8]
      spacing: [1.5, 1.5, 4.0]
      rotation_deg: 10.0
      noise_hu: 20.0
train:
  epochs: 1
  batch_size: 2
nnunet:
  quick: {{epochs: 2, iterations_per_epoch: 5, val_iterations_per_epoch: 2}}
"""
SMALL = SMALL_TEMPLATE.format(n_patients=4)
# adaptations.yaml: LoRA, adapters and full fine-tuning run the encoder forward and backward (~13 s per
# training sample on a busy core, 20 samples from 2 training cases): 3 patients, one of them to train on.
SMALL_BY_STUDY = {"adaptations": SMALL_TEMPLATE.format(n_patients=3)}
SMALL_NAME = "identical_small.yaml"
DEFAULT = "default"
RESULTS, CACHE = "results", ".cache"
# Files that hold times, not results: Snakemake's logs and benchmarks, its timestamp markers, nnU-Net's
# training log (named by its start time) and progress plot (epoch durations).
SKIPPED = re.compile(r"^results/(logs|benchmarks)/|/\.snakemake|/training_log_[\d_]+\.txt$|/progress\.png$")
# nnU-Net's checkpoint carries its training log with wall-clock stamps of every epoch.
VOLATILE = {"epoch_start_timestamps", "epoch_end_timestamps"}
# In an --expect-differ study: adjusted p-values of the other runs move with the expected runs' p-values.
ADJUSTED = {"p_adj"}
STRICT = (
    "predictions",
    "metrics",
    "summary",
    "dice_vs_clicks",
    "checkpoints",
    "manifest",
    "splits",
    "prompts",
    "embedding_index",
    "embedding_cache",
)


def category(rel: str) -> str | None:
    """What a file (path relative to the clone) is: one of STRICT, "other" (compared, listed, not failing)
    or None (not compared). A shard's copy (results/shards/<shard>/...) is what the gathered file is."""
    if SKIPPED.search(rel):
        return None
    if rel.startswith(CACHE + "/"):
        return "embedding_cache" if "/embeddings/" in rel and rel.endswith(".npz") else "other"
    r = re.sub(r"^shards/[^/]+/", "", rel.removeprefix(RESULTS + "/"))
    if r.endswith((".pt", ".pth")):
        return "checkpoints"
    if r.startswith("prompts/") or (r.startswith("predictions/") and "/prompts/" in r):
        return "prompts"
    if r.startswith("predictions/") and r.endswith(".nii.gz"):
        return "predictions"
    if r == "metrics.parquet" or (r.startswith("metrics/") and r.endswith(".parquet")):
        return "metrics"
    if r in ("summary.json", "dice_vs_clicks.parquet", "manifest.parquet"):
        return r.split(".")[0]
    if r == "splits.json" or r.startswith("splits/"):
        return "splits"
    if r.startswith("embeddings/") and r.endswith(".json"):
        return "embedding_index"
    return "other"


def tree(root: Path) -> dict[str, str]:
    """{path relative to the clone: category} of every compared file (or link) under results/ and .cache/."""
    found = {}
    for top in (RESULTS, CACHE):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() or path.is_symlink():
                rel = path.relative_to(root).as_posix()
                if (cat := category(rel)) is not None:
                    found[rel] = cat
    return found


def digest(root: Path, rel: str, normalise: bool) -> str:
    """sha256 of a file's bytes; a link by its target. `normalise`: the clone's absolute path replaced by
    <clone>, object addresses (" at 0x...") and nnU-Net's training log name (its start time) first (nnU-Net's
    stamps and plans hold absolute paths, its debug.json object reprs; the strict files hold neither)."""
    path = root / rel
    if path.is_symlink():
        return "link:" + os.readlink(path).replace(str(root.resolve()), "<clone>").replace(str(root), "<clone>")
    data = path.read_bytes()
    if normalise:
        for prefix in {str(root.resolve()), str(root)}:
            data = data.replace(prefix.encode(), b"<clone>")
        data = re.sub(rb" at 0x[0-9a-f]+", b" at 0x?", data)
        data = re.sub(rb"training_log_[\d_]+\.txt", b"training_log_?.txt", data)
    return hashlib.sha256(data).hexdigest()


def same_object(a, b, ignored: frozenset = frozenset(VOLATILE), key: str = "") -> bool:
    """Deep equality of two loaded objects (checkpoints, JSON): tensors and arrays bit for bit (dtype, shape,
    bytes), NaN equal to NaN, values under the `ignored` keys not compared."""
    import numpy as np
    import torch

    if key in ignored:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        bits = lambda t: t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(bits(a), bits(b))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same_object(a[k], b[k], ignored, str(k)) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_object(x, y, ignored) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN
    return type(a) is type(b) and a == b


def same_checkpoint(a: Path, b: Path) -> bool:
    """The same checkpoint but for VOLATILE time stamps."""
    import torch

    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    return same_object(load(a), load(b))


def same_outside(a: Path, b: Path, pattern: re.Pattern) -> bool:
    """Is a study-wide table the same for everything `pattern` does not name? Parquet with a `run` column:
    the other runs' rows (values, order); JSON: every key not matching. Adjusted p-values are left out."""
    import pandas as pd

    if a.suffix == ".json":
        drop = lambda d: (  # noqa: E731
            {k: drop(v) for k, v in d.items() if not pattern.search(str(k)) and k not in ADJUSTED}
            if isinstance(d, dict)
            else [drop(v) for v in d]
            if isinstance(d, list)
            else d
        )
        return same_object(drop(json.loads(a.read_text())), drop(json.loads(b.read_text())), frozenset())
    if a.suffix != ".parquet":
        return False
    ta, tb = pd.read_parquet(a), pd.read_parquet(b)
    if "run" not in ta.columns or list(ta.columns) != list(tb.columns):
        return False
    keep = lambda t: (  # noqa: E731
        t[~t["run"].astype(str).str.contains(pattern)]
        .drop(columns=[c for c in ADJUSTED if c in t])
        .reset_index(drop=True)
    )
    return keep(ta).equals(keep(tb))


def counts() -> dict:
    return {"compared": 0, "identical": 0, "differing": [], "only_baseline": [], "only_candidate": []}


def compare(base: Path, cand: Path, expected: re.Pattern | None) -> dict:
    """Compare the kept trees of one study (baseline `base`, candidate `cand`). `expected`: the pattern of an
    expected difference (--expect-differ), else None."""
    ta, tb = tree(base), tree(cand)
    out = counts() | {"expected_differing": [], "checkpoints_same_but_timestamps": [], "by_category": {}}
    out["other"] = counts()

    # Cache entries are named by a key, not by their model: those that an index file of another model
    # names stay strict.
    strict_keys = set()
    for root, files in ((base, ta), (cand, tb)):
        for rel, cat in files.items():
            if expected is not None and cat == "embedding_index" and not expected.search(rel):
                strict_keys |= set(re.findall(r"[0-9a-f]{64}", (root / rel).read_text()))

    def excused(rel: str, cat: str) -> bool:
        """A difference the expected pattern explains: a file whose path names it, a cache entry no other
        model's index names, or a study-wide table identical outside the expected runs."""
        if expected is None:
            return False
        if expected.search(rel):
            return True
        if cat == "embedding_cache":
            return Path(rel).name.removesuffix(".npz") not in strict_keys
        return (base / rel).exists() and (cand / rel).exists() and same_outside(base / rel, cand / rel, expected)

    for rel in sorted(set(ta) | set(tb)):
        cat = ta.get(rel) or tb[rel]
        strict = cat in STRICT
        bucket = out if strict else out["other"]
        by = out["by_category"].setdefault(cat, {"compared": 0, "identical": 0, "differing": 0})
        by["compared"] += 1
        if rel not in tb or rel not in ta:
            by["differing"] += 1
            side = "only_baseline" if rel not in tb else "only_candidate"
            (out["expected_differing"] if strict and excused(rel, cat) else bucket[side]).append(rel)
            continue
        bucket["compared"] += 1
        same = digest(base, rel, not strict) == digest(cand, rel, not strict)
        if not same and cat == "checkpoints" and same_checkpoint(base / rel, cand / rel):
            same = True
            out["checkpoints_same_but_timestamps"].append(rel)
        if same:
            bucket["identical"] += 1
            by["identical"] += 1
            continue
        by["differing"] += 1
        (out["expected_differing"] if strict and excused(rel, cat) else bucket["differing"]).append(rel)
    out["ok"] = not (out["differing"] or out["only_baseline"] or out["only_candidate"])
    return out


def resolve(ref: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def examples_at(commit: str) -> list[str]:
    """The example studies (file stems of config/examples/*.yaml) at a commit."""
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{commit}:config/examples"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml"))


def override_of(study: str) -> str | None:
    """The small override a study runs with (None: the default study, as a user runs it)."""
    return None if study == DEFAULT else SMALL_BY_STUDY.get(study, SMALL)


def fingerprint(study: str) -> str | None:
    text = override_of(study)
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def snakemake(cmd: list[str], work: Path, env: dict, log: Path) -> tuple[int, float, tuple[int, int]]:
    """Run one Snakemake command; (return code, wall seconds, (jobs done, jobs)) from its log."""
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    done = re.findall(r"(\d+) of (\d+) steps \(\d+%\) done", log.read_text(errors="replace"))
    return rc, wall, (int(done[-1][0]), int(done[-1][1])) if done else (0, 0)


def run_study(commit: str, study: str, root: Path, cores: int) -> dict:
    """Clone the commit into root/<study>, run the study there (log: root/<study>.log); wall seconds, jobs,
    return code. A failed study is resumed once in its clone with one core: on this shared machine a job
    can be killed for memory by a neighbour's load; finished outputs are kept (they are deterministic)."""
    work = root / study
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=work, check=True)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(work / "src"),
    }
    # The clone's own code must run, not this checkout's (samstudy is installed editable from it).
    where = subprocess.run(
        [sys.executable, "-c", "import samstudy; print(samstudy.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not where.startswith(str(work / "src")):
        raise SystemExit(f"{study}: samstudy imported from {where!r}, not from the clone {work}")
    extra = []
    if (override := override_of(study)) is not None:
        (work / SMALL_NAME).write_text(override)
        # --configfile takes several files: targets (none here) would have to come before it.
        extra = ["--configfile", f"config/examples/{study}.yaml", SMALL_NAME]
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra]
    rc, wall, (done, jobs) = snakemake(cmd, work, env, root / f"{study}.log")
    record = {"wall_s": round(wall, 1), "jobs": jobs, "jobs_done": done, "rc": rc, "command": " ".join(cmd[1:])}
    if rc:
        retry = [sys.executable, "-m", "snakemake", "--cores", "1", *extra]
        rc, again, (done, _) = snakemake(retry, work, env, root / f"{study}.retry.log")
        record |= {"rc": rc, "first_rc": record["rc"], "retry_wall_s": round(again, 1), "retry_jobs": done}
    record |= {"override_sha256": fingerprint(study), "load_after": os.getloadavg()}
    return record


def run_side(commit: str, studies: list[str], root: Path, cores: int, label: str, resume: bool) -> dict:
    """Run every study of one commit under root; root/run.json records what ran (written after each study,
    keeping the other studies it recorded at this commit). `resume`: keep a study run.json has as finished
    at this commit with the same override instead of running it again."""
    root.mkdir(parents=True, exist_ok=True)
    old = json.loads((root / "run.json").read_text()) if (root / "run.json").exists() else {}
    record = {"commit": commit, "cores": cores, "studies": old["studies"] if old.get("commit") == commit else {}}
    for study in studies:
        kept = record["studies"].get(study)
        if resume and kept and kept["rc"] == 0 and kept.get("override_sha256") == fingerprint(study):
            print(f"{label} {commit}: {study} kept from {root}", file=sys.stderr, flush=True)
            continue
        print(f"{label} {commit}: {study} ...", file=sys.stderr, flush=True)
        record["studies"][study] = s = run_study(commit, study, root, cores) | {"override": override_of(study)}
        print(f"  {s['wall_s']:.0f} s, {s['jobs_done']}/{s['jobs']} jobs, rc {s['rc']}", file=sys.stderr, flush=True)
        (root / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def reuse(root: Path, studies: list[str] | None) -> dict:
    """A kept run (root/run.json), checked: every study asked for is there, run with today's override."""
    record = json.loads((root / "run.json").read_text())
    for study in studies or list(record["studies"]):
        if study not in record["studies"]:
            raise SystemExit(f"{root}: no kept run of {study}")
        if record["studies"][study].get("override_sha256") != fingerprint(study):
            raise SystemExit(f"{root}: {study} was run with another small override; rerun it (--resume)")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="commit A (run in fresh clones)")
    parser.add_argument("--candidate", default="HEAD", help="commit B (run in fresh clones)")
    parser.add_argument("--reuse-baseline", metavar="DIR", help="a kept baseline (--keep) instead of running A")
    parser.add_argument("--reuse-candidate", metavar="DIR", help="a kept candidate instead of running B")
    parser.add_argument("--keep", metavar="DIR", help="run the baseline here and keep it (else a temporary folder)")
    parser.add_argument("--keep-candidate", metavar="DIR", help="run the candidate here and keep it")
    parser.add_argument("--only-baseline", action="store_true", help="run the baseline, compare nothing")
    parser.add_argument(
        "--resume", action="store_true", help="in --keep/--keep-candidate DIR, keep the studies finished there"
    )
    parser.add_argument("--studies", help="comma-separated subset (default: default + every example)")
    parser.add_argument(
        "--expect-differ",
        action="append",
        default=[],
        metavar="STUDY[=REGEX]",
        help="a study whose files matching REGEX (default: STUDY, e.g. sam2: its runs, models, embeddings) may "
        "differ; study-wide tables must match outside them; repeatable",
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "identical.json"))
    a = parser.parse_args()
    if not (a.baseline or a.reuse_baseline):
        parser.error("--baseline or --reuse-baseline is needed")
    scratch = Path(tempfile.mkdtemp(prefix="identical-"))
    keep_scratch = False
    try:
        if a.reuse_baseline:
            base_root = Path(a.reuse_baseline)
            base = reuse(base_root, a.studies.split(",") if a.studies else None)
        else:
            commit = resolve(a.baseline)
            studies = a.studies.split(",") if a.studies else [DEFAULT, *examples_at(commit)]
            base_root = Path(a.keep) if a.keep else scratch / "baseline"
            base = run_side(commit, studies, base_root, a.cores, "baseline", a.resume)
        studies = a.studies.split(",") if a.studies else list(base["studies"])
        if a.only_baseline:
            print_runs({"baseline": base}, studies)
            return
        if a.reuse_candidate:
            cand_root = Path(a.reuse_candidate)
            cand = reuse(cand_root, studies)
        else:
            cand_root = Path(a.keep_candidate) if a.keep_candidate else scratch / "candidate"
            cand = run_side(resolve(a.candidate), studies, cand_root, a.cores, "candidate", a.resume)
            keep_scratch = not a.keep_candidate  # until it is known to be identical
        # --expect-differ STUDY[=REGEX]: the files whose path matches REGEX (default: the study's name)
        expect = dict(e.split("=", 1) if "=" in e else (e, re.escape(e)) for e in a.expect_differ)
        result = {"benchmark": "identical", "cores": a.cores, "expect_differ": expect}
        result["overrides"] = {study: override_of(study) for study in studies}
        result["baseline"] = {"dir": str(base_root), **{k: base[k] for k in ("commit", "studies")}}
        result["candidate"] = {"dir": str(cand_root), **{k: cand[k] for k in ("commit", "studies")}}
        result["studies"] = {}
        # Examples the candidate adds have no baseline to be compared with: listed, not run.
        result["not_in_baseline"] = sorted(set(examples_at(cand["commit"])) - set(base["studies"]))
        for study in studies:
            failed = [s for s in (base, cand) if s["studies"][study]["rc"]]
            expected = re.compile(expect[study]) if study in expect else None
            found = compare(base_root / study, cand_root / study, expected)
            found["expected"] = f"expected (--expect-differ {study}: random-init seeding)" if expected else None
            found["ok"] = found["ok"] and not failed
            found["run_failed"] = [s["commit"] for s in failed]
            result["studies"][study] = found
        result["identical"] = all(s["ok"] for s in result["studies"].values())
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
        print_runs({"baseline": base, "candidate": cand}, studies)
        print_table(result)
        if keep_scratch and not result["identical"]:
            print(f"the candidate's studies are kept in {cand_root}")
        else:
            keep_scratch = False
        sys.exit(0 if result["identical"] else 1)
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def print_runs(sides: dict[str, dict], studies: list[str]) -> None:
    print(f"{'setup':<11}{'commit':<9}{'study':<18}{'wall s':>8}{'jobs':>6}{'rc':>4}")
    for name, side in sides.items():
        for study in studies:
            s = side["studies"][study]
            print(f"{name:<11}{side['commit']:<9}{study:<18}{s['wall_s']:>8.0f}{s['jobs']:>6}{s['rc']:>4}")


def print_table(result: dict) -> None:
    print(f"\n{result['baseline']['commit']} vs {result['candidate']['commit']}: strict files (sha256)")
    print(f"{'study':<18}{'compared':>9}{'identical':>10}{'differ':>7}{'only A':>7}{'only B':>7}{'expected':>9}  other")
    for study, s in result["studies"].items():
        o = s["other"]
        n_other = len(o["differing"]) + len(o["only_baseline"]) + len(o["only_candidate"])
        other = f"{o['identical']}/{o['compared']} same, {n_other} differ"
        print(
            f"{study:<18}{s['compared']:>9}{s['identical']:>10}{len(s['differing']):>7}{len(s['only_baseline']):>7}"
            f"{len(s['only_candidate']):>7}{len(s['expected_differing']):>9}  {other}"
        )
    for study, s in result["studies"].items():
        cats = sorted(s["by_category"].items(), key=lambda kv: (kv[0] == "other", kv[0]))
        print(f"  {study}: " + ", ".join(f"{c} {n['identical']}/{n['compared']}" for c, n in cats))
        for key in ("differing", "only_baseline", "only_candidate"):
            for rel in s[key]:
                print(f"  {study}: {key}: {rel}")
        if s["expected_differing"]:
            print(f"  {study}: {len(s['expected_differing'])} differing files {s['expected']}")
        if s["run_failed"]:
            print(f"  {study}: the study failed at {s['run_failed']}")
        o = s["other"]
        for key in ("differing", "only_baseline", "only_candidate"):
            if o[key]:
                shown = ", ".join(o[key][:6]) + (f", ... ({len(o[key])})" if len(o[key]) > 6 else "")
                print(f"  {study}: other {key} (not failing): {shown}")
    if result["not_in_baseline"]:
        print(f"  examples not in the baseline (not compared): {', '.join(result['not_in_baseline'])}")
    print("\nidentical" if result["identical"] else "\nDIFFERENT")


if __name__ == "__main__":
    main()
