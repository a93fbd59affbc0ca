"""Training benchmark: decoder training from the embedding cache against the encoder in the loop, and the
cost of each adaptation method.

One phantom study is built once (ingest, split, preprocess, embed with the chosen model); then each
measurement runs in its own process (so its peak memory is its own, ru_maxrss; on a GPU also
torch.cuda.max_memory_allocated) and times one training epoch over the same training slices:

- decoder_cache:   the decoder method as samstudy runs it (embeddings read from the cache);
- decoder_encoder: the same decoder training, but the (frozen) image encoder recomputes every embedding
                   in every step, as a training loop without the cache would;
- lora, adapter, full: the encoder-adapting methods (they must run the encoder; shown for their cost).

The runs are interleaved: every round runs each of them once (R rounds; median and [min, max] of the
epoch times, and the speedup taken within each round), so a change in the machine's load lands on every
run, not on one.

Trainable-parameter counts per method come from the real architectures (LiteMedSAM with its packaged
weights; SAM ViT-B randomly initialised: counts do not depend on the weights).

    python benchmarks/train.py [--model litemedsam|sam_vit_b] [--cases 4] [--rounds 3] [--device auto]

Target: speedup_cache_over_encoder_in_loop >= 20. Writes benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import fmt, model_cfg, phantom_config, spread

from samstudy import adapt
from samstudy.embed import embed_dataset, resolve_precision
from samstudy.ingest import ingest_dataset
from samstudy.models import load_model, resolve_device
from samstudy.paths import Layout
from samstudy.preprocess import preprocess_dataset
from samstudy.splits import write_dataset_split
from samstudy.train import collect_samples, train_step

RUNS = ["decoder_cache", "decoder_encoder", "lora", "adapter", "full"]
METHOD_OPTIONS = {"rank": 4, "alpha": 8.0, "bottleneck": 32}
TARGETS = {"speedup_cache_over_encoder_in_loop": ">= 20"}


def make_study(root: Path, model: str, cases: int, device: str) -> Layout:
    """A phantom study, split, preprocessed and embedded (all slices of the training cases are labelled)."""
    splits = {"test_fraction": 0.0, "n_folds": 1, "val_fraction": 0.25}
    cfg = phantom_config(root, model, cases, [96, 96, 8], splits=splits, embed={"device": device})
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    ingest_dataset(ds, layout, cfg["seed"])
    write_dataset_split(layout, "bench", ds["role"], cfg["seed"], cfg["splits"])
    preprocess_dataset(layout, ds, cfg["preprocess"])
    embed_dataset(layout, "bench", "m", cfg["models"]["m"], cfg["embed"], random_init=model != "litemedsam")
    return layout


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def worker(root: str, run: str, model: str, device_name: str, batch_size: int) -> dict:
    """One epoch of one run in this process: time, peak memory, trainable parameters."""
    layout = Layout(str(Path(root, "results")), str(Path(root, "cache")))
    device = resolve_device(device_name)
    precision = resolve_precision("auto", device)
    loaded = load_model(model_cfg(model), device, random_init=model != "litemedsam")
    adaptation = "decoder" if run.startswith("decoder") else run
    params = adapt.prepare(loaded, adaptation, METHOD_OPTIONS)
    source = "embeddings" if run == "decoder_cache" else "images"
    samples = collect_samples(layout, ["bench"], "m", "train", 0, source)
    opt = torch.optim.AdamW(params, lr=1e-4)
    rng = np.random.default_rng(0)
    adapt.train_mode(loaded, adaptation)
    train_step(loaded, opt, samples[:1], 0, rng, device, precision)  # warm-up (lazy init, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    for b in range(0, len(samples), batch_size):
        train_step(loaded, opt, samples[b : b + batch_size], 5, rng, device, precision)
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "run": run,
        "epoch_s": seconds,
        "samples": len(samples),
        "slices": len({s["slice"] for s in samples}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        **adapt.count_parameters(loaded),
    }


def parameter_counts(model: str) -> dict[str, dict[str, int]]:
    """Trainable/total parameters per method for one architecture."""
    out = {}
    for adaptation in adapt.ADAPTATIONS:
        loaded = load_model(model_cfg(model), "cpu", random_init=model != "litemedsam")
        # promptfree's decoder has a mask per class: counted for the phantom's three labels
        classes = [("bench", value) for value in (1, 2, 3)] if adaptation == adapt.PROMPTFREE else None
        adapt.prepare(loaded, adaptation, METHOD_OPTIONS, classes)
        out[adaptation] = adapt.count_parameters(loaded)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="litemedsam", choices=["litemedsam", "sam_vit_b"])
    parser.add_argument("--cases", type=int, default=4, help="phantom patients (one scan each)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (every run once per round)")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    parser.add_argument("--count-models", default="litemedsam,sam_vit_b", help="architectures to count parameters of")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    parser.add_argument("--worker", nargs=2, metavar=("ROOT", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.model, args.device, args.batch_size)))
        return

    counts = {m: parameter_counts(m) for m in args.count_models.split(",") if m}  # first: fails fast
    runs = args.runs.split(",")
    per_round: dict[str, list[dict]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        make_study(Path(tmp), args.model, args.cases, args.device)
        print(f"study built and embedded in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for r in range(args.rounds):  # every run once per round
            for run in runs:
                cmd = [sys.executable, __file__, "--model", args.model, "--device", args.device]
                cmd += ["--batch-size", str(args.batch_size), "--worker", tmp, run]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                per_round[run].append(json.loads(out.strip().splitlines()[-1]))
                print(f"round {r + 1}: {run}: {per_round[run][-1]['epoch_s']:.2f} s/epoch", file=sys.stderr)
    results = {}
    for run, measured in per_round.items():
        epoch = spread([m["epoch_s"] for m in measured])
        results[run] = {
            **measured[0],
            "epoch_s": epoch["median"],
            "epoch_s_spread": epoch,
            "peak_rss_mb": spread([m["peak_rss_mb"] for m in measured])["median"],
        }

    speedup = speedup_spread = None
    if "decoder_cache" in results and "decoder_encoder" in results:  # within each round
        pairs = zip(per_round["decoder_encoder"], per_round["decoder_cache"], strict=True)
        speedup_spread = spread([enc["epoch_s"] / cache["epoch_s"] for enc, cache in pairs])
        speedup = speedup_spread["median"]

    device = resolve_device(args.device)
    print(f"\nTraining benchmark: {args.model}, {device}, batch {args.batch_size}")
    print(f"median [min, max] of {args.rounds} interleaved rounds")
    print(
        f"{'run':<16}{'slices':>7}{'samples':>8}{'s/epoch':>24}{'peak RSS MB':>12}{'peak GPU MB':>12}{'trainable':>12}"
    )
    for run, r in results.items():
        gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        print(
            f"{run:<16}{r['slices']:>7}{r['samples']:>8}{fmt(r['epoch_s_spread']):>24}{r['peak_rss_mb']:>12.0f}"
            f"{gpu:>12}{r['trainable']:>12,}"
        )
    if speedup is not None:
        target = TARGETS["speedup_cache_over_encoder_in_loop"]
        print(f"\nspeedup cache over encoder in the loop: {fmt(speedup_spread, 1)}x (target {target})")
    print("\ntrainable parameters per method")
    for m, per in counts.items():
        print(f"  {m}: " + ", ".join(f"{a} {c['trainable']:,} of {c['total']:,}" for a, c in per.items()))

    report = {
        "benchmark": "train",
        "model": args.model,
        "device": str(device),
        "host": {"machine": platform.machine(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "batch_size": args.batch_size,
        "runs": results,
        "rounds": args.rounds,
        "speedup_cache_over_encoder_in_loop": speedup,
        "speedup_spread": speedup_spread,
        "trainable_params": {a: counts.get(args.model, {}).get(a, {}).get("trainable") for a in adapt.ADAPTATIONS},
        "parameters_by_model": counts,
        "targets": TARGETS,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
