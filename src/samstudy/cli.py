"""samstudy command line: one verb per stage; every Snakemake rule calls exactly one.

Each verb takes the results/cache folders, the wildcard values of its job, and `--params`: the JSON slice
of the config the stage depends on (the same slice the rule declares as `params:` for rerun detection).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from samstudy.paths import Layout, parse_shard


def _shard_name(text: str) -> str:
    parse_shard(text)  # a clear error for a malformed name
    return text


def _params(text: str) -> dict:
    return json.loads(text) if text else {}


def _ingest(a, p, layout):
    from samstudy.ingest import ingest_dataset

    ingest_dataset(p["dataset"], layout, p["seed"], strict=p.get("strict", False))


def _manifest(a, p, layout):
    from samstudy.ingest import merge_manifests

    merge_manifests(layout, p["datasets"])


def _split(a, p, layout):
    from samstudy.splits import write_dataset_split

    write_dataset_split(layout, a.dataset, p["role"], p["seed"], p["splits"])


def _merge_splits(a, p, layout):
    from samstudy.splits import merge_splits

    merge_splits(layout, p["datasets"])


def _preprocess(a, p, layout):
    from samstudy.preprocess import preprocess_dataset

    preprocess_dataset(layout, p["dataset"], p["preprocess"])


def _embed(a, p, layout):
    from samstudy.embed import embed_dataset

    embed_dataset(layout, a.dataset, a.model, p["model"], p["embed"])


def _embed_adapted(a, p, layout):
    from samstudy.embed import embed_adapted

    embed_adapted(layout, a.dataset, a.method, p["method"], p["model"], p["embed"])


def _prompts(a, p, layout):
    from samstudy.prompts import derive_prompts, make_prompts

    if p.get("derived"):  # an automatic protocol: prompts from another run's predictions
        derive_prompts(layout, a.dataset, a.protocol, p["derived"], p["prompts"], p["seed"])
    else:
        make_prompts(layout, a.dataset, a.protocol, p["prompts"], p["seed"])


def _train(a, p, layout):
    from samstudy.train import train_method

    train_method(layout, a.method, p["method"], p["model"], p["datasets"], p["train"], p["seed"])


def _infer(a, p, layout):
    from samstudy.infer import infer_dataset

    overlap = p.get("infer", {}).get("overlap", "official")
    infer_dataset(layout, a.dataset, a.method, p["method"], p["model"], a.protocol, p.get("device", "auto"), overlap)


def _nnunet(a, p, layout):
    from samstudy import nnunet

    step = a.step
    prompted = bool(p.get("prompted"))  # the prompted variant (label boxes as extra channels)
    if step == "export":
        extra = {"jitter_px": p["jitter_px"], "seed": p["seed"]} if prompted else {}
        nnunet.export(layout, a.dataset, p["dataset_id"], prompted, **extra)
    elif step == "plan":
        nnunet.plan(layout, a.dataset, p["dataset_id"], p["configurations"], p["schedule"], prompted)
    elif step == "train":
        fold = int(a.fold)
        nnunet.train(layout, a.dataset, p["dataset_id"], a.configuration, fold, p["nnunet"], p["seed"], prompted)
    elif step == "predict":
        nnunet.predict(layout, a.dataset, p["dataset_id"], a.configuration, p["folds"], p["nnunet"], prompted)
    elif step == "select":
        nnunet.select_best(layout, a.dataset, p["dataset_id"], p["configurations"], p["folds"])
    elif step == "predict_best":
        nnunet.predict_best(layout, a.dataset, p["dataset_id"], p["folds"], p["nnunet"])


def _evaluate(a, p, layout):
    from samstudy.evaluate import evaluate_run

    evaluate_run(layout, a.dataset, a.run, p["run_info"], p["evaluate"], a.threads or 1)


def _evaluate_clicks(a, p, layout):
    from samstudy.evaluate import evaluate_clicks

    evaluate_clicks(layout, a.dataset, a.run, p["run_info"], p["evaluate"], a.threads or 1)


def _shard(a, p, layout):
    from samstudy.shards import write_shard_cases

    write_shard_cases(layout, a.dataset, p["shards"])


def _gather(a, p, layout):
    from samstudy import shards

    gather = {
        "embed": shards.gather_embed,
        "prompts": shards.gather_prompts,
        "run": shards.gather_run,
        "clicks": shards.gather_clicks,
    }[a.what]
    gather(layout, a.name, a.dataset, p["shards"])


def _summarize(a, p, layout):
    from samstudy.evaluate import summarize

    summarize(layout, [tuple(x) for x in p["parts"]], p["seed"], [tuple(x) for x in p.get("click_parts", [])])


def _report(a, p, layout):
    from samstudy.report import write_report

    print(write_report(layout, p["config"], p.get("nnunet_stamps", [])))


VERBS = {
    "ingest": (_ingest, "read, validate and record one dataset (writes the synthetic phantom first)", []),
    "manifest": (_manifest, "merge the datasets' tables into manifest.parquet / rejected.parquet", []),
    "split": (_split, "patient-level split of one dataset (+ nnU-Net splits_final.json)", ["dataset"]),
    "splits": (_merge_splits, "collect the datasets' splits into splits.json", []),
    "preprocess": (_preprocess, "intensity handling and 2D slices of one dataset", []),
    "shard": (_shard, "split one dataset's cases into shards (one file per shard, with fingerprints)", ["dataset"]),
    "embed": (_embed, "image-encoder embeddings of one dataset into the cache", ["dataset", "model", "threads"]),
    "embed_adapted": (
        _embed_adapted,
        "embeddings of one dataset's test cases under a method's adapted encoder (lora, adapter, full)",
        ["dataset", "method", "threads"],
    ),
    "prompts": (
        _prompts,
        "simulate and store the prompts of one dataset and protocol (from the ground truth, or derived from a run)",
        ["dataset", "protocol"],
    ),
    "train": (_train, "train one adaptation method", ["method", "threads"]),
    "infer": (
        _infer,
        "predict one dataset with one method and protocol",
        ["dataset", "method", "protocol", "threads"],
    ),
    "nnunet": (
        _nnunet,
        "nnU-Net v2 baseline: export | plan | train | predict | select | predict_best"
        " (params prompted: true = prompted nnU-Net, the label boxes as extra channels)",
        ["step", "dataset", "configuration", "fold", "threads"],
    ),
    "evaluate": (_evaluate, "score one run on one dataset", ["dataset", "run", "threads"]),
    "evaluate_clicks": (
        _evaluate_clicks,
        "score a clicks run after every click (Dice vs clicks)",
        ["dataset", "run", "threads"],
    ),
    "gather": (
        _gather,
        "merge one dataset's shards: embed (embedding index), prompts, run (predictions + metrics), clicks",
        ["what", "dataset", "name"],
    ),
    "summarize": (_summarize, "merge metrics into metrics.parquet and summary.json", []),
    "report": (_report, "write report/index.html", []),
}


# Verbs whose jobs run on a CPU and never need torch (nor MONAI): they import neither, so a job pays
# about half a second of imports, not several (tests/test_imports.py, benchmarks/jobs.py). Of `nnunet`,
# only the export step (plan, train and predict run nnU-Net, which is built on torch).
TORCH_FREE_VERBS = (
    "ingest",
    "manifest",
    "split",
    "splits",
    "preprocess",
    "shard",
    "prompts",
    "evaluate",
    "evaluate_clicks",
    "gather",
    "summarize",
    "report",
    "nnunet export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="samstudy", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="the study's results_dir")
    parser.add_argument("--cache", default=".cache/samstudy", help="the embedding cache_dir")
    parser.add_argument(
        "--shard",
        type=_shard_name,
        default=None,
        help="<index>of<count>: a sharded job, which handles only its shard's cases (results/shards/<shard>/)",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (_, help_text, args) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.add_argument("--params", default="{}", help="JSON slice of the config this stage depends on")
        for arg in args:
            if arg == "step":
                p.add_argument("step", choices=["export", "plan", "train", "predict", "select", "predict_best"])
            elif arg == "what":
                p.add_argument("what", choices=["embed", "prompts", "run", "clicks"])
            elif arg == "threads":  # the job's cores (Snakemake's {threads}): not a param, no rerun
                p.add_argument(
                    "--threads",
                    type=int,
                    default=None,
                    help="the job's cores: torch's threads (evaluate: cases scored at a time, in processes)",
                )
            else:
                p.add_argument(f"--{arg}", required=arg not in ("configuration", "fold"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    func = VERBS[args.verb][0]
    if getattr(args, "threads", None) and args.verb not in ("evaluate", "evaluate_clicks"):
        # torch (imported by the verb, after this) uses the job's cores and no more: two jobs on two cores
        # with two threads each run several times slower than with one each
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SAMSTUDY_THREADS"):
            os.environ[var] = str(args.threads)
    func(args, _params(args.params), Layout(args.results, args.cache, args.shard))
    return 0


if __name__ == "__main__":
    sys.exit(main())
