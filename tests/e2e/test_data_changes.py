"""Changed data rerun what they touch, a killed study recovers by itself, results are byte-reproducible and
relocatable: a small study on user datasets (nnU-Net raw folders under data/, as a user keeps them with DVC)
run twice through Snakemake for real — once uninterrupted through `dvc repro`, once killed with SIGKILL
during embedding and during training and resumed the way `./run.sh study` does (about 6-8 min on 2 cores)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from samstudy import synthetic
from tests.e2e.test_default_study import _dvc, _git, job_counts, snakemake

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
USER = {"n_patients": 3, "scans_per_patient": 1, "shape": [40, 40, 8]}
EXTRA = {"kind": "png2d", "n_patients": 2, "shape": [64, 56]}


def _config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["datasets"] = [
        # user data, kept in data/ (relative paths: the study folder can move)
        {"name": "user", "format": "nnunet", "path": "data/user", "modality": "CT", "patient_id": r"^(pat\d+)"},
        # 2D images and masks as PNG files (a dermoscopy-like folder)
        {
            "name": "extra",
            "format": "png",
            "path": "data/extra",
            "modality": "other",
            "role": "test_only",
            "labels": {"lesion": 1, "spot": 2},
        },
        # a built-in one: written under results/raw (the relocation check needs a file inside results)
        {
            "name": "skin",
            "format": "synthetic",
            "modality": "other",
            "synthetic": {"kind": "png2d", "n_patients": 3, "shape": [64, 56]},
        },
    ]
    cfg["nnunet"]["enabled"] = False
    cfg["prompts"]["derived"] = {}
    cfg["train"].update(epochs=3, patience=10)
    return cfg


def _workdir(root: Path) -> Path:
    root.mkdir()
    for name in ("Snakefile", "workflow", "config", "envs", "dvc.yaml", ".gitignore", "data"):
        src = REPO / name
        (shutil.copytree(src, root / name) if src.is_dir() else shutil.copy(src, root / name))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    os.symlink("workflow/profiles", root / "profiles")
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(_config()))
    synthetic.write_dataset(root / "data" / "user", 3, USER)
    synthetic.write_dataset(root / "data" / "extra", 5, EXTRA)
    return root


def _start(work: Path, log: Path) -> subprocess.Popen:
    """What `./run.sh study` does: samstudy.lock (unlock after a killed run), then Snakemake; in its own
    process group, so a SIGKILL to the group is a node failure (Snakemake and its jobs die at once)."""
    script = f"{sys.executable} -m samstudy.lock && exec {sys.executable} -m snakemake --cores 2"
    return subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=ENV,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait(condition, proc: subprocess.Popen, what: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the study ended before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _outputs(results: Path) -> dict[str, bytes]:
    """Predictions, checkpoints and metrics: what a rerun must reproduce byte for byte."""
    files = [*results.glob("predictions/**/*.nii.gz"), *results.glob("models/*/checkpoint.pt")]
    files += [results / "metrics.parquet", results / "summary.json"]
    return {str(f.relative_to(results)): f.read_bytes() for f in sorted(files)}


def _embed_log(work: Path, dataset: str) -> tuple[int, int]:
    """(cases, cache hits) of the last embed job of a dataset."""
    text = (work / "results" / "logs" / "embed" / f"litemedsam.{dataset}.log").read_text()
    cases, hits = re.findall(r": (\d+) cases, (\d+) cache hits", text)[-1]
    return int(cases), int(hits)


def _entries(cache: Path) -> int:
    """Complete embedding cache entries (a temporary file being written starts with a dot)."""
    return sum(not p.name.startswith(".") for p in cache.rglob("*.npz")) if cache.is_dir() else 0


def _unindexed(cache: Path, indexes: list[Path]) -> set[str]:
    """Keys of complete cache entries no written embedding index refers to (an embed job in progress)."""
    done = set()
    for index in indexes:
        try:
            done |= {entry["key"] for entry in json.loads(index.read_text())["cases"].values()}
        except (FileNotFoundError, ValueError):
            continue
    names = {p.stem for p in cache.rglob("*.npz") if not p.name.startswith(".")} if cache.is_dir() else set()
    return names - done


def _without_timings(report: Path) -> str:
    """The report without its compute-cost table (run times measured by Snakemake: they differ per run)."""
    text = report.read_text()
    start, end = text.index("<h2>Compute cost"), text.index("<h2>Artifacts")
    return text[:start] + text[end:]


def _edit_png(path: Path, edit) -> None:
    """Rewrite a PNG file with `edit(array)` applied (same mode)."""
    from PIL import Image

    with Image.open(path) as im:
        mode, arr = im.mode, np.array(im)
    edit(arr)
    Image.fromarray(arr, mode=mode).save(path, format="PNG")


def _relabel(arr: np.ndarray) -> None:
    """A corrected annotation: the top half of the lesion relabelled as the spot."""
    rows = np.flatnonzero((arr == 1).any(axis=1))
    top = arr[rows[: len(rows) // 2]]
    top[top == 1] = 2
    arr[rows[: len(rows) // 2]] = top


def _brighten(arr: np.ndarray) -> None:
    """A re-exported image: one patch brighter."""
    arr[10:20, 10:20] = np.clip(arr[10:20, 10:20].astype(int) + 40, 0, 255)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The study run once through DVC (git + dvc repo, data/ a dependency of the stage)."""
    work = _workdir(tmp_path_factory.mktemp("data_changes") / "uninterrupted")
    _git(work, "init", "-q")
    _dvc(work, "init", "-q")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "study")
    _dvc(work, "repro")
    assert "up to date" in _dvc(work, "status")
    return work


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """The same study in another folder, killed (SIGKILL to the whole process tree) during embedding, then
    during training, each time restarted the way `./run.sh study` does, without any manual step."""
    work = _workdir(tmp_path_factory.mktemp("data_changes") / "interrupted")
    results, cache = work / "results", work / ".cache" / "samstudy"
    indexes = [results / "embeddings" / "litemedsam" / f"{d}.json" for d in ("user", "extra", "skin")]

    proc = _start(work, work / "run1.log")
    locks = work / ".snakemake" / "locks"
    _wait(lambda: locks.is_dir() and any(locks.iterdir()), proc, "Snakemake's lock")
    # a second run on the same folder is refused while this one is active
    second = subprocess.run(
        [sys.executable, "-m", "samstudy.lock"], cwd=work, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 75 and "another run is active" in second.stderr
    # kill once an embed job has written cache entries but not yet its index
    _wait(lambda: _unindexed(cache, indexes), proc, "cache entries of an embed job in progress")
    _kill(proc)
    partial = _unindexed(cache, indexes)
    assert partial, "the kill came after embedding"
    assert any(locks.iterdir())  # the killed run's lock is left behind

    proc = _start(work, work / "run2.log")
    train_log = results / "logs" / "train" / "decoder.log"
    _wait((results / "models" / "decoder" / "last.pt").exists, proc, "a trained epoch")
    _kill(proc)
    assert not (results / "models" / "decoder" / "checkpoint.pt").exists(), "the kill came after training"
    assert "unlocking" in (work / "run2.log").read_text()

    proc = _start(work, work / "run3.log")
    assert proc.wait(timeout=1500) == 0, (work / "run3.log").read_text()[-4000:]
    assert "resuming decoder from epoch" in train_log.read_text()
    # nothing computed before the first kill was lost: the entries the killed embed job had written were
    # reused (cache hits) by the job that finished it
    for index in indexes:
        keys = {entry["key"] for entry in json.loads(index.read_text())["cases"].values()}
        if keys & partial:
            cases, hits = _embed_log(work, index.stem)
            assert hits >= len(keys & partial), (index.stem, cases, hits)
    assert _entries(cache) == 3 + 2 + 3  # one entry per case, none twice
    return work


def test_a_killed_study_resumes_by_itself_to_the_bytes_of_an_uninterrupted_one(uninterrupted, interrupted):
    reference, resumed = _outputs(uninterrupted / "results"), _outputs(interrupted / "results")
    assert any(k.startswith("predictions/decoder.box/user/") for k in reference)
    assert "models/decoder/checkpoint.pt" in reference
    assert reference.keys() == resumed.keys()
    differ = [k for k in reference if reference[k] != resumed[k]]
    assert not differ, differ


def test_a_moved_results_folder_still_evaluates_and_reports(interrupted):
    work = interrupted
    before = pd.read_parquet(work / "results" / "metrics.parquet")
    report = _without_timings(work / "results" / "report" / "index.html")
    (work / "results").rename(work / "moved")
    try:
        assert job_counts(snakemake(work, "-n", "--config", "results_dir=moved")) == {}
        snakemake(work, "--config", "results_dir=moved", "--forcerun", "evaluate")
        after = pd.read_parquet(work / "moved" / "metrics.parquet")
        pd.testing.assert_frame_equal(before, after)
        # rewritten from the moved folder: the same bytes (no timestamp, no absolute path of results in it)
        # but for the table of measured job run times (the evaluate jobs ran again) and the config's
        # results_dir in the provenance
        moved = work / "moved" / "report" / "index.html"
        assert moved.stat().st_mtime > time.time() - 600
        assert _without_timings(moved).replace("&quot;moved&quot;", "&quot;results&quot;") == report
        manifest = pd.read_parquet(work / "moved" / "manifest.parquet").set_index("dataset")
        assert manifest.loc["skin", "label"].iloc[0].startswith("raw/skin/")  # inside results: relative
        assert Path(manifest.loc["user", "label"].iloc[0]).is_absolute()  # user data: absolute
    finally:
        (work / "moved").rename(work / "results")


def test_a_corrected_label_reruns_its_dataset_only_and_reembeds_nothing(uninterrupted):
    work = uninterrupted
    before = pd.read_parquet(work / "results" / "metrics.parquet")
    _edit_png(work / "data" / "extra" / "masks" / "pat01_s0.png", _relabel)
    assert "modified:" in _dvc(work, "status") and "data" in _dvc(work, "status")  # DVC sees the data
    dry = snakemake(work, "-n")
    assert job_counts(dry) == {
        "ingest": 1,
        "manifest": 1,
        "split": 1,
        "splits": 1,
        "preprocess": 1,
        "embed": 1,
        "prompts": 1,
        "infer": 2,
        "evaluate": 2,
        "summarize": 1,
        "report": 1,
        "all": 1,
    }
    assert "dataset=extra" in dry and "dataset=user" not in dry and "dataset=skin" not in dry
    assert "rule train" not in dry
    _dvc(work, "repro")
    assert _embed_log(work, "extra") == (2, 2)  # a label changes no image: every embedding from the cache
    after = pd.read_parquet(work / "results" / "metrics.parquet")
    key = ["run", "dataset", "case_id", "label"]
    old, new = before.set_index(key).sort_index(), after.set_index(key).sort_index()
    others = ["user", "skin"]
    pd.testing.assert_frame_equal(
        old[old.index.get_level_values("dataset").isin(others)], new[new.index.get_level_values("dataset").isin(others)]
    )
    edited = new.xs(("extra", "pat01_s0"), level=("dataset", "case_id"))["dice"]
    assert not np.allclose(edited.values, old.xs(("extra", "pat01_s0"), level=("dataset", "case_id"))["dice"].values)


def test_a_changed_image_reembeds_that_case_only(uninterrupted):
    work = uninterrupted
    _edit_png(work / "data" / "extra" / "images" / "pat00_s0.png", _brighten)
    counts = job_counts(snakemake(work, "-n"))
    assert counts["ingest"] == 1 and counts["embed"] == 1 and "train" not in counts
    snakemake(work)
    assert _embed_log(work, "extra") == (2, 1)
    info = json.loads((work / "results" / "embeddings" / "litemedsam" / "extra.json").read_text())
    assert sorted(info["cases"]) == ["pat00_s0", "pat01_s0"]
