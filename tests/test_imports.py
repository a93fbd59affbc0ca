"""CPU jobs do not import torch (nor MONAI): each `samstudy <verb>` job pays its imports once per job, and
torch alone costs seconds (benchmarks/jobs.py measures it)."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys

import pytest

from samstudy.cli import TORCH_FREE_VERBS, VERBS
from tests.conftest import study_config

HEAVY = ("torch", "monai")


def _heavy_after(code: str, *args: str) -> list[str]:
    """The heavy modules loaded at the end of `code` run in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint('HEAVY=' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1].removeprefix("HEAVY="))


def _modules_of(verb: str) -> list[str]:
    """The samstudy modules a verb's handler imports (read from its source, so a new import is covered)."""
    tree = ast.parse(inspect.getsource(VERBS[verb][0]))
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("samstudy"):
            modules += [f"samstudy.{a.name}" for a in node.names] if node.module == "samstudy" else [node.module]
    return modules


def test_the_import_probe_sees_torch():
    assert _heavy_after("import samstudy.models") == ["torch"]  # the model registry needs torch
    assert _heavy_after("import samstudy.cli") == []


@pytest.mark.parametrize("verb", [v.split()[0] for v in TORCH_FREE_VERBS])
def test_cpu_verbs_import_neither_torch_nor_monai(verb):
    modules = _modules_of(verb)
    assert modules, f"{verb}: its handler imports no samstudy module"
    code = "import samstudy.cli\n" + "\n".join(f"import {m}" for m in modules)
    assert _heavy_after(code) == [], f"{verb} imports {modules}"


def test_cpu_jobs_run_without_torch(tmp_path):
    """The verbs run for real on a tiny study (each in a fresh interpreter, as Snakemake runs them) and
    end without torch or MONAI loaded: lazy imports inside the functions they call count too."""
    from samstudy.config import as_param
    from samstudy.io import read_json
    from samstudy.paths import Layout

    cfg = study_config(tmp_path)
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    base = ["--results", layout.results_dir, "--cache", layout.cache_dir]
    run_cli = "from samstudy.cli import main\nmain(sys.argv[1:])"

    def job(verb: str, params: dict, *args: str) -> None:
        assert _heavy_after(run_cli, *base, *verb.split(), *args, "--params", as_param(params)) == [], verb

    job("ingest", {"dataset": ds, "seed": cfg["seed"]})
    job("manifest", {"datasets": ["phantom"]})
    job("split", {"role": ds["role"], "seed": cfg["seed"], "splits": cfg["splits"]}, "--dataset", "phantom")
    job("splits", {"datasets": ["phantom"]})
    job("preprocess", {"dataset": ds, "preprocess": cfg["preprocess"]})
    settings = {"components": cfg["prompts"]["components"]}
    job("prompts", {"prompts": settings, "seed": cfg["seed"]}, "--dataset", "phantom", "--protocol", "box")
    _ground_truth_as_run(layout, "gt")
    derived = {"derived": {"from": "gt", "kind": "box"}, "prompts": settings, "seed": cfg["seed"]}
    job("prompts", derived, "--dataset", "phantom", "--protocol", "auto_box")
    info = {"method": "gt", "model": "none", "adaptation": "none", "protocol": "none", "prompted": False}
    info["prompt_source"] = "none"
    job("evaluate", {"run_info": info, "evaluate": cfg["evaluate"]}, "--dataset", "phantom", "--run", "gt")
    job(
        "evaluate",
        {"run_info": info, "evaluate": cfg["evaluate"]},
        "--dataset",
        "phantom",
        "--run",
        "gt",
        "--threads",
        "2",
    )
    job("summarize", {"parts": [["gt", "phantom"]], "seed": cfg["seed"]})
    job("shard", {"shards": 2}, "--dataset", "phantom")
    for shard in ("0of2", "1of2"):
        job(
            f"--shard {shard} prompts",
            {"prompts": settings, "seed": cfg["seed"]},
            "--dataset",
            "phantom",
            "--protocol",
            "box",
        )
    job("gather prompts", {"shards": 2}, "--dataset", "phantom", "--name", "box")
    job("nnunet export", {"dataset_id": 901}, "--dataset", "phantom")
    import pandas as pd

    metrics = pd.read_parquet(layout.run_metrics("gt", "phantom"))
    assert len(metrics) > 0 and (metrics["dice"] == 1.0).all()  # the jobs did their work
    assert read_json(layout.prompts("phantom", "auto_box"))["source"]


def _ground_truth_as_run(layout, run: str) -> None:
    """A "prediction" of every evaluation case: its ground truth put back through the inverse mapping."""
    from samstudy.infer import write_prediction
    from samstudy.ingest import load_dataset_table
    from samstudy.preprocess import load_preprocessed
    from samstudy.splits import eval_cases

    rows = load_dataset_table(layout, "phantom")[0].set_index("case_id")
    for case in eval_cases(layout, "phantom"):
        pre = load_preprocessed(layout, "phantom", case)
        write_prediction(
            layout.prediction(run, "phantom", case), pre["labels"], int(pre["axis"]), rows.loc[case, "images"][0]
        )
