"""Shards (execution.shards): which case goes where, the sharded stages against the unsharded ones, the
gathers, and the workflow's jobs per shard."""

from __future__ import annotations

import filecmp
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from samstudy import shards
from samstudy.cases import select
from samstudy.paths import Layout, parse_shard, shard_names, shard_of
from tests.conftest import dry_run_jobs


def test_a_cases_shard_depends_on_its_id_alone_and_shards_are_balanced():
    cases = [f"case{i:04d}" for i in range(2000)]
    before = {c: shard_of(c, 8) for c in cases}
    more = cases + [f"new{i}" for i in range(50)]
    assert all(shard_of(c, 8) == before[c] for c in more if c in before)  # adding cases moves none
    sizes = Counter(before.values())
    assert set(sizes) == set(range(8)) and min(sizes.values()) > 0.8 * 2000 / 8
    assert shard_names(3) == ["0of3", "1of3", "2of3"]
    assert parse_shard("2of3") == (2, 3)
    for bad in ("3of3", "x", "1of", "-1of2"):
        with pytest.raises(ValueError, match="expected <index>of<count>"):
            parse_shard(bad)


def test_a_shards_layout_puts_per_case_artifacts_under_shards_and_nothing_else():
    whole = Layout("res", "cache")
    part = whole.for_shard("1of3")
    assert part.prediction("r.box", "ds", "c1") == "res/shards/1of3/predictions/r.box/ds/c1.nii.gz"
    assert part.run_metrics("r.box", "ds") == "res/shards/1of3/metrics/r.box/ds.parquet"
    assert part.embed_index("m", "ds") == "res/shards/1of3/embeddings/m/ds.json"
    assert part.prompts("ds", "box") == "res/shards/1of3/prompts/ds/box.json"
    assert part.shard_cases("ds") == "res/shards/1of3/cases/ds.json"
    # what every shard reads stays the whole study's
    for name in ("ingest_table", "preprocessed_dir", "dataset_splits"):
        assert getattr(part, name)("ds") == getattr(whole, name)("ds")
    assert part.checkpoint("m") == whole.checkpoint("m")
    assert whole.prediction("r", "ds", "c") == "res/predictions/r/ds/c.nii.gz"
    with pytest.raises(ValueError):
        whole.shard_cases("ds")


def _run_stages(layout: Layout, cfg: dict, dataset: str) -> None:
    from samstudy.embed import embed_dataset
    from samstudy.evaluate import evaluate_clicks, evaluate_run
    from samstudy.infer import infer_dataset
    from samstudy.prompts import make_prompts

    model_cfg = {"type": "litemedsam", "checkpoint": None}
    method = {"model": "litemedsam", "adaptation": "none"}
    embed_dataset(layout, dataset, "litemedsam", model_cfg, {**cfg["embed"], "device": "cpu"})
    for protocol in ("box", "clicks"):
        keys = ["components"] + (["clicks"] if protocol == "clicks" else ["jitter_px"])
        make_prompts(layout, dataset, protocol, {k: cfg["prompts"][k] for k in keys}, cfg["seed"])
        infer_dataset(layout, dataset, "zeroshot", method, model_cfg, protocol, "cpu")
        info = {"method": "zeroshot", "protocol": protocol, "prompted": True}
        evaluate_run(layout, dataset, f"zeroshot.{protocol}", info, cfg["evaluate"])
    evaluate_clicks(layout, dataset, "zeroshot.clicks", info, cfg["evaluate"])


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_three_shards_and_their_gathers_give_the_unsharded_bytes_and_metrics(study, tiny_model, tmp_path):
    """Every sharded stage (embed, prompts, infer with box and clicks, evaluate, evaluate_clicks) run per
    shard, then gathered: the same prediction files (bytes), click records, embedding index, prompts and
    metrics as one unsharded pass."""
    cfg, layout = study
    cfg["prompts"]["clicks"] = {**cfg["prompts"]["clicks"], "rounds": 2}
    _run_stages(layout, cfg, "phantom")
    whole = tmp_path / "whole"
    shutil.copytree(layout.results_dir, whole)

    written = shards.write_shard_cases(layout, "phantom", 3)
    listed = [json.loads(Path(f).read_text())["cases"] for f in written]
    assert sorted(c["case_id"] for part in listed for c in part) == sorted(
        pd.read_parquet(layout.ingest_table("phantom"))["case_id"]
    )
    assert sum(1 for part in listed if part) >= 2  # the 8 cases really are spread
    for name in shard_names(3):
        _run_stages(layout.for_shard(name), cfg, "phantom")
    shards.gather_embed(layout, "litemedsam", "phantom", 3)
    for run in ("zeroshot.box", "zeroshot.clicks"):
        shards.gather_run(layout, run, "phantom", 3)
    shards.gather_clicks(layout, "zeroshot.clicks", "phantom", 3)
    for protocol in ("box", "clicks"):
        shards.gather_prompts(layout, protocol, "phantom", 3)

    results = Path(layout.results_dir)
    for run in ("zeroshot.box", "zeroshot.clicks"):
        got, want = _files(results / "predictions" / run / "phantom"), _files(whole / "predictions" / run / "phantom")
        assert sorted(got) == sorted(want) and len(want) > 2
        assert all(filecmp.cmp(got[f], want[f], shallow=False) for f in want), run
        got_m, want_m = (
            pd.read_parquet(layout.run_metrics(run, "phantom")),
            pd.read_parquet(whole / "metrics" / run / "phantom.parquet"),
        )
        pd.testing.assert_frame_equal(got_m, want_m)
    pd.testing.assert_frame_equal(
        pd.read_parquet(layout.run_click_metrics("zeroshot.clicks", "phantom")),
        pd.read_parquet(whole / "metrics/zeroshot.clicks/phantom.clicks.parquet"),
    )
    index = Path(layout.embed_index("litemedsam", "phantom")).read_bytes()
    assert index == (whole / "embeddings/litemedsam/phantom.json").read_bytes()
    for protocol in ("box", "clicks"):
        prompts = Path(layout.prompts("phantom", protocol)).read_bytes()
        assert prompts == (whole / "prompts" / "phantom" / f"{protocol}.json").read_bytes()


def test_a_stale_shard_file_or_diverging_shards_are_errors(study, tmp_path):
    cfg, layout = study
    written = shards.write_shard_cases(layout, "phantom", 2)
    part = layout.for_shard("0of2")
    cases = list(pd.read_parquet(layout.ingest_table("phantom"))["case_id"])
    assert select(part, "phantom", cases) == [c for c in cases if shard_of(c, 2) == 0]
    doc = json.loads(Path(written[0]).read_text())
    doc["cases"] = doc["cases"][1:]  # a case the shard file does not list
    Path(written[0]).write_text(json.dumps(doc))
    with pytest.raises(shards.ShardError, match="stale"):
        select(part, "phantom", cases)

    # two shards that wrote different run records cannot be gathered into one folder
    for k, name in enumerate(shard_names(2)):
        folder = Path(layout.for_shard(name).prediction_dir("r", "phantom"))
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"threshold": k}))
    with pytest.raises(shards.ShardError, match="different versions"):
        shards.gather_run(layout, "r", "phantom", 2)


def test_a_new_ct_window_changes_the_slices_view_not_the_rows_view(study):
    """What a shard's jobs see of a new CT window: the SAM stages' file changes (their slices did), the file
    nnU-Net prediction and evaluation take (raw data only) keeps its bytes, so Snakemake's checksum
    comparison after the checkpoint does not rerun them."""
    from samstudy.preprocess import preprocess_dataset

    cfg, layout = study
    ds = cfg["datasets"][0]

    def views() -> tuple[list[bytes], list[bytes]]:
        shards.write_shard_cases(layout, "phantom", 2)
        parts = [layout.for_shard(name) for name in shard_names(2)]
        slices = [Path(p.shard_cases("phantom")).read_bytes() for p in parts]
        return slices, [Path(p.shard_cases("phantom", "rows")).read_bytes() for p in parts]

    slices, rows = views()
    preprocess_dataset(layout, ds, {**cfg["preprocess"], "ct_window": {"level": 50, "width": 350}})
    new_slices, new_rows = views()
    assert new_rows == rows
    assert all(a != b for a, b in zip(new_slices, slices, strict=True))


def _per_dataset(jobs, rule, key):
    counts = Counter()
    for name, body in jobs:
        if name == rule:
            wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", body.split("wildcards:")[1].splitlines()[0]))
            counts[tuple(wildcards[k] for k in key)] += 1
    return counts


def test_a_dry_run_with_four_shards_shows_four_embed_and_infer_jobs_per_dataset(tmp_path):
    extra = tmp_path / "shards.yaml"
    extra.write_text("execution: {shards: 4}\n")
    jobs = dry_run_jobs(tmp_path, "--configfile", str(extra))
    embed = _per_dataset(jobs, "embed", ("model", "dataset"))
    infer = _per_dataset(jobs, "infer", ("method", "protocol", "dataset"))
    evaluate = _per_dataset(jobs, "evaluate", ("run", "dataset"))
    assert set(d for _, d in embed) == {"phantom", "skin2d", "mni152"}
    assert set(embed.values()) == {4} and set(infer.values()) == {4} and set(evaluate.values()) == {4}
    assert len(infer) >= 6  # zero-shot and decoder, box and auto_box, over the datasets
    assert ("nnunet_2d", "phantom") in evaluate  # nnU-Net's predictions are sharded and scored too
    gathers = Counter(name for name, _ in jobs if name.startswith("gather") or name == "shard")
    assert gathers["shard"] == 3 and gathers["gather_run"] == len(evaluate)
