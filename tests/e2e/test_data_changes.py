"""Changed data rerun what they touch, a killed study recovers by itself, results are byte-reproducible and
relocatable: one small study on user datasets (nnU-Net raw folders under data/, as a user keeps them with
DVC) run through Snakemake for real in a git + DVC repository, killed with SIGKILL during embedding and
during training, resumed the way `./run.sh study` does, and recorded by `dvc repro`. The uninterrupted
reference is one more Snakemake run in the same folder that recomputes what the kills interrupted (the
killed embed job's cache entries, the training) and everything after it; the moved results folder and the
data edits then use the same study (about 5 min on 2 cores)."""

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
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import yaml

from samstudy import synthetic
from tests.conftest import REPO, WORKFLOW_FILES, workflow_copy
from tests.e2e.test_default_study import _dvc, _git, job_counts, snakemake

DATASETS = ("user", "extra", "skin")
pytestmark = pytest.mark.slow
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
USER = {"n_patients": 3, "scans_per_patient": 1, "shape": [40, 40, 4]}
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
    # one method, the one that trains (the kill during training); nnU-Net and its derived prompts off (no
    # test here is about them); only the slices prompts need embedded (2 of a user case's 4); two epochs (the
    # kill during training comes after the first)
    cfg["methods"] = {"decoder": cfg["methods"]["decoder"]}
    cfg["nnunet"]["enabled"] = False
    cfg["prompts"]["derived"] = {}
    cfg["embed"]["slices"] = "needed"
    cfg["train"].update(epochs=2, patience=10)
    return cfg


def _workdir(root: Path) -> Path:
    workflow_copy(root, (*WORKFLOW_FILES, "dvc.yaml", ".gitignore", "data"))
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
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
    """Predictions, checkpoints, training curves and metrics: what a rerun must reproduce byte for byte (the
    curves hold the loss and validation Dice of every epoch, those trained after a resume included, also
    where an earlier epoch's state is the checkpoint)."""
    files = [*results.glob("predictions/**/*.nii.gz"), *results.glob("models/*/checkpoint.pt")]
    files += results.glob("models/*/curves.csv")
    files += [results / "metrics.parquet", results / "summary.json"]
    return {str(f.relative_to(results)): f.read_bytes() for f in sorted(files)}


def _embed_log(work: Path, dataset: str) -> tuple[int, int]:
    """(cases, cache hits) of the last embed job(s) of a dataset, summed over its shards."""
    cases = hits = 0
    for log in (work / "results" / "logs" / "embed").glob(f"litemedsam.{dataset}.*of*.log"):
        found = re.findall(r": (\d+) cases, (\d+) cache hits", log.read_text())[-1]
        cases, hits = cases + int(found[0]), hits + int(found[1])
    return cases, hits


def _entries(cache: Path) -> int:
    """Complete embedding cache entries (a temporary file being written starts with a dot)."""
    return sum(not p.name.startswith(".") for p in cache.rglob("*.npz")) if cache.is_dir() else 0


def _unindexed(cache: Path, results: Path) -> set[str]:
    """Keys of complete cache entries no written embedding index (a shard's or the gathered one) refers to:
    an embed job in progress."""
    done = set()
    indexes = [*results.glob("embeddings/litemedsam/*.json"), *results.glob("shards/*/embeddings/litemedsam/*.json")]
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


class Study(NamedTuple):
    work: Path
    partial: set[str]  # keys of the cache entries the embed job killed in progress had written


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """The study in a git + DVC repository (data/ a dependency of the stage), killed (SIGKILL to the whole
    process tree) during embedding, then during training, each time restarted the way `./run.sh study` does,
    without any manual step; then `dvc repro` records it."""
    work = _workdir(tmp_path_factory.mktemp("data_changes") / "study")
    _git(work, "init", "-q")
    _dvc(work, "init", "-q")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "study")
    results, cache = work / "results", work / ".cache" / "samstudy"

    proc = _start(work, work / "run1.log")
    locks = work / ".snakemake" / "locks"
    _wait(lambda: locks.is_dir() and any(locks.iterdir()), proc, "Snakemake's lock")
    # a second run on the same folder is refused while this one is active
    second = subprocess.run(
        [sys.executable, "-m", "samstudy.lock"], cwd=work, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 75 and "another run is active" in second.stderr
    # kill once an embed job has written cache entries but not yet its index
    _wait(lambda: _unindexed(cache, results), proc, "cache entries of an embed job in progress")
    _kill(proc)
    partial = _unindexed(cache, results)
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
    for dataset in _datasets_of(results, partial):
        keys = _index_keys(results, dataset)
        cases, hits = _embed_log(work, dataset)
        assert hits >= len(set(keys.values()) & partial), (dataset, cases, hits)
    assert _entries(cache) == 3 + 2 + 3  # one entry per case, none twice

    # DVC drives the same workflow: its stage's Snakemake finds the study done, DVC records the outputs
    _dvc(work, "repro")
    assert "up to date" in _dvc(work, "status")
    return Study(work, partial)


def _index_keys(results: Path, dataset: str) -> dict[str, str]:
    """case -> cache key in a dataset's (gathered) embedding index."""
    index = json.loads((results / "embeddings" / "litemedsam" / f"{dataset}.json").read_text())
    return {case: entry["key"] for case, entry in index["cases"].items()}


def _datasets_of(results: Path, keys: set[str]) -> list[str]:
    """The datasets whose embedding index refers to any of these cache keys."""
    return [d for d in DATASETS if set(_index_keys(results, d).values()) & keys]


def test_a_killed_study_resumes_by_itself_to_the_bytes_of_an_uninterrupted_one(study):
    """The reference, computed in the same folder by one more Snakemake run that is not interrupted: the
    cache entries the killed embed job had written deleted and embedded again, the training from scratch
    (no last.pt left), and every job after them (inference, evaluation, summary, report). What ran before
    the kills (ingest, preprocessing, splits, prompts) is shared, and checked through the predictions."""
    work, results, cache = study.work, study.work / "results", study.work / ".cache" / "samstudy"
    resumed = _outputs(results)
    assert any(k.startswith("predictions/decoder.box/user/") for k in resumed)
    assert "models/decoder/checkpoint.pt" in resumed and "models/decoder/curves.csv" in resumed
    killed = {p.stem: p for p in cache.rglob("*.npz") if p.stem in study.partial}
    assert killed.keys() == study.partial
    written = {}
    for key, path in killed.items():
        with np.load(path) as z:
            written[key] = {name: z[name] for name in z.files}
        path.unlink()
    datasets = _datasets_of(results, study.partial)
    shard_indexes = [
        str(p.relative_to(work)) for d in datasets for p in results.glob(f"shards/*/embeddings/litemedsam/{d}.json")
    ]
    assert shard_indexes
    snakemake(work, "--forcerun", "train", *shard_indexes)
    for dataset in datasets:  # the deleted entries were computed again, the others read from the cache
        keys = set(_index_keys(results, dataset).values())
        assert _embed_log(work, dataset) == (len(keys), len(keys - study.partial))
    assert "resuming" not in (results / "logs" / "train" / "decoder.log").read_text()  # trained from scratch
    reference = _outputs(results)
    assert reference.keys() == resumed.keys()
    differ = [k for k in reference if reference[k] != resumed[k]]
    assert not differ, differ
    # the entries the killed job wrote (and the resumed run reused) hold what an uninterrupted job computes
    for key, arrays in written.items():
        with np.load(killed[key]) as z:
            assert set(z.files) == set(arrays), key
            assert all(np.array_equal(z[name], arrays[name]) for name in z.files), key


def test_a_moved_results_folder_still_evaluates_and_reports(study):
    work = study.work
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


def test_edited_data_rerun_their_dataset_only_and_reembed_changed_images_only(study):
    """In the user's data/, one case's label corrected and another case's image re-exported (dataset extra,
    test_only): DVC sees the change and reruns the stage; Snakemake reruns that dataset's jobs only and no
    training; the relabelled case keeps its cached embedding, the changed image is embedded again."""
    work = study.work
    results, cache = work / "results", work / ".cache" / "samstudy"
    before = pd.read_parquet(results / "metrics.parquet")
    keys = _index_keys(results, "extra")
    entries = _entries(cache)
    _edit_png(work / "data" / "extra" / "masks" / "pat01_s0.png", _relabel)
    _edit_png(work / "data" / "extra" / "images" / "pat00_s0.png", _brighten)
    status = _dvc(work, "status")
    assert "modified:" in status and "data" in status  # DVC sees the data
    dry = snakemake(work, "-n")
    assert job_counts(dry) == {
        "ingest": 1,
        "manifest": 1,
        "split": 1,
        "splits": 1,
        "preprocess": 1,
        "shard": 1,
        "embed": 1,
        "gather_embed": 1,
        "prompts": 1,
        "gather_prompts": 1,
        "infer": 1,
        "evaluate": 1,
        "gather_run": 1,
        "summarize": 1,
        "report": 1,
        "all": 1,
    }
    assert "dataset=extra" in dry and "dataset=user" not in dry and "dataset=skin" not in dry
    assert "rule train" not in dry
    _dvc(work, "repro")
    assert _embed_log(work, "extra") == (2, 1)  # one case embedded again, the other from the cache
    after = _index_keys(results, "extra")
    assert sorted(after) == ["pat00_s0", "pat01_s0"]
    assert after["pat01_s0"] == keys["pat01_s0"]  # a label changes no image: the same embedding, from the cache
    assert after["pat00_s0"] != keys["pat00_s0"]  # a changed image: embedded again
    assert _entries(cache) == entries + 1
    metrics = pd.read_parquet(results / "metrics.parquet")
    key = ["run", "dataset", "case_id", "label"]
    old, new = before.set_index(key).sort_index(), metrics.set_index(key).sort_index()
    others = ["user", "skin"]
    pd.testing.assert_frame_equal(
        old[old.index.get_level_values("dataset").isin(others)], new[new.index.get_level_values("dataset").isin(others)]
    )
    edited = new.xs(("extra", "pat01_s0"), level=("dataset", "case_id"))["dice"]
    assert not np.allclose(edited.values, old.xs(("extra", "pat01_s0"), level=("dataset", "case_id"))["dice"].values)
