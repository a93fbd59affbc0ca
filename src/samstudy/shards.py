"""Shards: a dataset's cases split into `execution.shards` groups, one job per group for every per-case
stage (embed, embed_adapted, prompts, infer, nnU-Net predict, evaluate, evaluate_clicks), and the cheap
gather jobs that merge what the next stage reads.

A case's shard is a hash of its id (`paths.shard_of`), so adding a case moves no other. The `shard`
checkpoint writes, per shard, the list of its cases with a fingerprint of each (its preprocessed slices
and its manifest row). The sharded jobs take that file as their input instead of the whole dataset's
files: after a data change, Snakemake re-evaluates the DAG once the checkpoint has run and reruns only
the shards whose file changed (same bytes: same checksum, no rerun). Results do not depend on the shard
count: every sharded stage computes each case exactly as an unsharded job would (per-case seeds), and the
gathers put the cases back in the whole dataset's order.

Torch-free (the checkpoint and the gathers are small CPU jobs).
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from samstudy.cases import ShardError, case_order, eval_cases, held_out_cases, stored_table
from samstudy.io import read_json, sha256_file, sha256_json, write_json, write_parquet
from samstudy.paths import Layout, shard_names, shard_of

log = logging.getLogger(__name__)


def write_shard_cases(layout: Layout, dataset: str, count: int) -> list[str]:
    """Write the `count` shard files of one dataset: each shard's cases (in manifest order) with the
    SHA-256 of their preprocessed slices and of their manifest row (which holds the raw files' content
    hash), and whether they are test cases (and the SHA-256 of the dataset's info: its labels); and the
    same without the slices' hashes (the "rows" view, for the stages that read the raw data)."""
    table = stored_table(layout, dataset)  # stored paths: a moved folder keeps its shards
    test = set(held_out_cases(layout, dataset))
    groups: list[list[dict]] = [[] for _ in range(count)]
    for row in table.to_dict("records"):
        case = row["case_id"]
        groups[shard_of(case, count)].append(
            {
                "case_id": case,
                "test": case in test,
                "preprocessed_sha256": sha256_file(layout.preprocessed_case(dataset, case)),
                "row_sha256": sha256_json(row),
            }
        )
    info = sha256_file(layout.ingest_info(dataset))  # label names and values: every case's scoring
    written = []
    for name, cases in zip(shard_names(count), groups, strict=True):
        shard = layout.for_shard(name)
        path = shard.shard_cases(dataset)
        write_json(path, {"dataset": dataset, "shard": name, "info_sha256": info, "cases": cases})
        rows = [{k: v for k, v in c.items() if k != "preprocessed_sha256"} for c in cases]
        write_json(
            shard.shard_cases(dataset, "rows"), {"dataset": dataset, "shard": name, "info_sha256": info, "cases": rows}
        )
        written.append(path)
    log.info("%s: %d cases in %d shards (%s)", dataset, len(table), count, [len(g) for g in groups])
    return written


def _shard_layouts(layout: Layout, count: int) -> list[Layout]:
    return [layout.for_shard(name) for name in shard_names(count)]


def gather_embed(layout: Layout, model: str, dataset: str, count: int) -> dict:
    """One dataset's embedding index from its shards' (the cases in manifest order): what `train` reads."""
    order = case_order(layout, dataset)
    parts = [read_json(s.embed_index(model, dataset)) for s in _shard_layouts(layout, count)]
    weights = {p["model_sha256"] for p in parts}
    if len(weights) != 1:
        raise ShardError(f"{dataset}: the shards of {model}'s embeddings come from different weights {weights}")
    cases = {case: entry for p in parts for case, entry in p["cases"].items()}
    merged = {
        "dataset": dataset,
        "model": model,
        "model_sha256": weights.pop(),
        "cases": {case: cases[case] for case in order if case in cases},
    }
    write_json(layout.embed_index(model, dataset), merged)
    return merged


def gather_prompts(layout: Layout, protocol: str, dataset: str, count: int) -> dict:
    """One dataset's prompts of one protocol from its shards', in the order an unsharded job writes them
    (the manifest's for prompts from the ground truth, the test cases' for prompts derived from a run)."""
    parts = [read_json(s.prompts(dataset, protocol)) for s in _shard_layouts(layout, count)]
    common = [{k: v for k, v in p.items() if k != "cases"} for p in parts]
    if any(c != common[0] for c in common):
        raise ShardError(f"{dataset}/{protocol}: the shards' prompts were made with different settings")
    if common[0].get("from_ground_truth", True):
        order = case_order(layout, dataset)
    else:
        order = eval_cases(layout, dataset)
    cases = {case: prompts for p in parts for case, prompts in p["cases"].items()}
    merged = {**common[0], "cases": {case: cases[case] for case in order if case in cases}}
    write_json(layout.prompts(dataset, protocol), merged)
    return merged


def _link_tree(src: Path, dst: Path) -> int:
    """Hard-link (copy across file systems) every file of src into dst; a file two shards both wrote (the
    run record) must be the same in both."""
    n = 0
    # not Snakemake's .snakemake_timestamp of a directory output: linked, touching the gathered folder's
    # would touch the shard's too, and make its metrics look older than its predictions
    for path in sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")):
        target = dst / path.relative_to(src)
        if target.exists():
            if not filecmp.cmp(path, target, shallow=False):
                raise ShardError(f"{target}: the shards wrote different versions of this file ({path})")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        n += 1
    return n


def _merge_metrics(frames: list[pd.DataFrame], order: list[str], columns: list[str]) -> pd.DataFrame:
    """The shards' metric rows in the whole dataset's case order (each case's rows in their own order),
    built as the unsharded evaluate builds its frame."""
    position = {case: i for i, case in enumerate(order)}
    records = [r for frame in frames for r in frame.to_dict("records")]
    records = [records[i] for i in np.argsort([position[r["case_id"]] for r in records], kind="stable")]
    return pd.DataFrame(records, columns=columns)


def gather_run(layout: Layout, run: str, dataset: str, count: int) -> pd.DataFrame:
    """One run on one dataset from its shards: the predictions folder (hard links) and the metrics."""
    from samstudy.evaluate import METRIC_COLUMNS  # here: evaluate imports SimpleITK, the other gathers need not

    shards = _shard_layouts(layout, count)
    out = Path(layout.prediction_dir(run, dataset))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.", dir=out.parent))  # complete, then renamed into place
    try:
        files = sum(_link_tree(Path(s.prediction_dir(run, dataset)), tmp) for s in shards)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    frame = _merge_metrics(
        [pd.read_parquet(s.run_metrics(run, dataset)) for s in shards], eval_cases(layout, dataset), METRIC_COLUMNS
    )
    write_parquet(layout.run_metrics(run, dataset), frame)
    log.info("gather %s/%s: %d shards, %d files, %d metric rows", run, dataset, count, files, len(frame))
    return frame


def gather_clicks(layout: Layout, run: str, dataset: str, count: int) -> pd.DataFrame:
    """A clicks run's per-click metrics from its shards."""
    from samstudy.evaluate import CLICK_COLUMNS

    frame = _merge_metrics(
        [pd.read_parquet(s.run_click_metrics(run, dataset)) for s in _shard_layouts(layout, count)],
        eval_cases(layout, dataset),
        CLICK_COLUMNS,
    )
    write_parquet(layout.run_click_metrics(run, dataset), frame)
    return frame
