"""Shared fixtures: a tiny study on disk, a tiny randomly initialised SAM (real modules) for speed."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samstudy import config as samstudy_config
from samstudy.paths import Layout
from samstudy.study import check_runs

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true", help="skip the slow end-to-end tests (CI runs them)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--fast"):
        skip = pytest.mark.skip(reason="--fast given: slow end-to-end test skipped")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


TINY_PHANTOM = {"n_patients": 4, "scans_per_patient": 2, "shape": [40, 36, 8], "spacing": [1.2, 1.5, 3.0]}


def study_config(tmp_path, **overrides) -> dict:
    """A validated config for a tiny phantom study under tmp_path."""
    raw = {
        "results_dir": str(tmp_path / "results"),
        "cache_dir": str(tmp_path / "cache"),
        "seed": 7,
        "datasets": [
            {
                "name": "phantom",
                "format": "synthetic",
                "modality": "CT",
                "patient_id": r"^(pat\d+)",
                "synthetic": copy.deepcopy(TINY_PHANTOM),
            }
        ],
        "splits": {"test_fraction": 0.25, "val_fraction": 0.34},
    }
    raw.update(overrides)
    # what the study runs (model families, derived prompts' sources) is the study table's check (the
    # Snakefile runs it before any job)
    return check_runs(samstudy_config.validate(raw))


@pytest.fixture
def study(tmp_path):
    """(config, layout) of a tiny phantom study that has been ingested, split and preprocessed."""
    from samstudy.ingest import ingest_dataset
    from samstudy.preprocess import preprocess_dataset
    from samstudy.splits import write_dataset_split

    cfg = study_config(tmp_path)
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    ingest_dataset(ds, layout, cfg["seed"])
    write_dataset_split(layout, "phantom", ds["role"], cfg["seed"], cfg["splits"])
    preprocess_dataset(layout, ds, cfg["preprocess"])
    return cfg, layout


def tiny_sam(seed: int = 0):
    """A randomly initialised SAM built from the official modules, small enough for unit tests.

    Same interfaces and shapes as LiteMedSAM (256 input, 256x64x64 embeddings), ~100x cheaper.
    """
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=256, patch_size=4, embed_dim=32, depth=1, num_heads=1, out_chans=256, window_size=8
    )
    prompt = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=512, num_heads=8),
        transformer_dim=256,
    )
    return Sam(encoder, prompt, decoder, [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]).eval()


@pytest.fixture
def tiny_model(monkeypatch):
    """Patch load_model everywhere so stages use a tiny SAM; its hash depends on the seed in the cfg."""
    from samstudy import adapt
    from samstudy.families import family_of
    from samstudy.models import LoadedModel

    def fake_load(model_cfg, device="cpu", random_init=False):
        seed = int(model_cfg.get("tiny_seed", 0))
        return LoadedModel("litemedsam", tiny_sam(seed).to(device), family_of("litemedsam"), None, f"tiny-{seed}")

    monkeypatch.setattr(adapt, "load_model", fake_load)  # every stage loads through adapt.load_method_model
    return fake_load


def dry_run_jobs(tmp_path, *args: str) -> list[tuple[str, str]]:
    """(rule, job description) of every job a `snakemake -n` of the real workflow would run."""
    import re
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "snakemake", "-n", *args]
    cmd += ["--config", f"results_dir={tmp_path}/r", f"cache_dir={tmp_path}/c"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=True).stdout
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:    .*\n)+)", out, re.M)]


WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs")


def workflow_copy(root: Path, names: tuple[str, ...] = WORKFLOW_FILES) -> Path:
    """A study folder with a copy of the workflow (`names` from the repository) and the `profiles` link
    (Snakemake looks for profiles/default beside a top-level Snakefile)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = REPO / name
        (shutil.copytree(src, root / name) if src.is_dir() else shutil.copy(src, root / name))
    os.symlink("workflow/profiles", root / "profiles")
    return root


def run_snakemake(workdir: Path, *args: str, timeout: int = 900) -> str:
    """`snakemake --cores 2 ARGS` in workdir with this Python's environment; its output (it must succeed)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out
