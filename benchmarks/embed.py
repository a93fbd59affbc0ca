"""Embedding benchmark: the embed stage against the bare encoder and a naive SamPredictor loop.

(a) bare: the image encoder's forward on ready tensors (inference_mode, same batch size/precision);
(b) stage: samstudy's embed stage end to end (read, transform, encode, write the cache), fresh cache;
(c) naive: SamPredictor.set_image per slice, then np.save of the embedding.
Peak memory of the stage at N and 4N slices is measured in separate processes (ru_maxrss).

    python benchmarks/embed.py [--model litemedsam|sam_vit_b] [--n 8] [--device auto]

Targets: b/a >= 0.9, b/c >= 1.0, memory(4N)/memory(N) <= 1.2. Writes benchmarks/results/embed.json.
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
from common import phantom_config

from samstudy.embed import embed_dataset, encode, resolve_precision
from samstudy.ingest import ingest_dataset
from samstudy.models import load_model, resolve_device
from samstudy.paths import Layout
from samstudy.preprocess import load_preprocessed, preprocess_dataset

SLICES_PER_CASE = 8
TARGETS = {"ratio_stage_over_bare": ">= 0.9", "ratio_stage_over_naive": ">= 1.0", "memory_ratio_4n_over_n": "<= 1.2"}


def make_study(root: Path, n_slices: int, model: str, device: str, batch_size: int) -> tuple[dict, Layout]:
    """A phantom study of n_slices slices (all embedded), preprocessed, with a fresh cache."""
    cases = max(2, n_slices // SLICES_PER_CASE)
    embed = {"slices": "all", "batch_size": batch_size, "device": device}
    cfg = phantom_config(root, model, cases, [128, 128, SLICES_PER_CASE], embed=embed)
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ingest_dataset(cfg["datasets"][0], layout, cfg["seed"])
    preprocess_dataset(layout, cfg["datasets"][0], cfg["preprocess"])
    return cfg, layout


def all_slices(layout: Layout, n: int) -> np.ndarray:
    import pandas as pd

    cases = pd.read_parquet(layout.ingest_table("bench"))["case_id"]
    return np.concatenate([load_preprocessed(layout, "bench", c)["slices"] for c in cases])[:n]


def stage_run(n: int, model: str, device: str, batch_size: int) -> dict:
    """Run the embed stage on n slices in this process; report time and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg, layout = make_study(Path(tmp), n, model, device, batch_size)
        n_real = sum(len(load_preprocessed(layout, "bench", c)["slices"]) for c in _cases(layout))
        loaded = load_model(cfg["models"]["m"], resolve_device(device), random_init=model != "litemedsam")
        sync(device)
        start = time.perf_counter()  # the one-off model load is excluded, as in (a) and (c)
        embed_dataset(layout, "bench", "m", cfg["models"]["m"], cfg["embed"], model=loaded)
        sync(device)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return {"slices": n_real, "seconds": seconds, "peak_rss_mb": peak_mb, "peak_gpu_mb": peak_gpu}


def _cases(layout: Layout) -> list[str]:
    import pandas as pd

    return list(pd.read_parquet(layout.ingest_table("bench"))["case_id"])


def sync(device: str) -> None:
    if resolve_device(device).type == "cuda":
        torch.cuda.synchronize()


def bare_and_naive(n: int, model_type: str, device: str, batch_size: int) -> dict:
    from segment_anything import SamPredictor

    with tempfile.TemporaryDirectory() as tmp:
        cfg, layout = make_study(Path(tmp), n, model_type, device, batch_size)
        slices = all_slices(layout, n)
        dev = resolve_device(device)
        model = load_model(cfg["models"]["m"], dev, random_init=model_type != "litemedsam")
        model.sam.image_encoder.to(memory_format=torch.channels_last)
        precision = resolve_precision(cfg["embed"]["precision"], dev)
        encode(model, slices[:1], 1, precision)  # warm-up
        # (a) bare: ready tensors, only the forward is timed

        ready = [
            model.family.image_to_input(slices[i : i + batch_size])
            .to(dev)
            .contiguous(memory_format=torch.channels_last)
            for i in range(0, len(slices), batch_size)
        ]
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        sync(device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            for x in ready:
                model.sam.image_encoder(x)
        sync(device)
        bare = time.perf_counter() - start
        # (c) naive: SamPredictor.set_image per slice and one .npy per slice
        predictor = SamPredictor(model.sam)
        out = Path(tmp) / "naive"
        out.mkdir()
        sync(device)
        start = time.perf_counter()
        for i, s in enumerate(slices):
            predictor.set_image(np.repeat(s[:, :, None], 3, axis=2))
            np.save(out / f"{i}.npy", predictor.get_image_embedding().cpu().numpy())
        sync(device)
        naive = time.perf_counter() - start
    return {"slices": len(slices), "bare_seconds": bare, "naive_seconds": naive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="litemedsam", choices=["litemedsam", "sam_vit_b"])
    parser.add_argument("--n", type=int, default=16, help="slices (a multiple of 8, at least 16)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = 1 on CPU, 16 on GPU")
    parser.add_argument("--out", default="benchmarks/results/embed.json")
    parser.add_argument("--stage-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    dev = resolve_device(args.device)
    batch = args.batch_size or (16 if dev.type == "cuda" else 1)
    if args.stage_only:  # child process: one stage run, JSON on stdout
        print(json.dumps(stage_run(args.n, args.model, args.device, batch)))
        return

    def child(n: int) -> dict:
        cmd = [
            sys.executable,
            __file__,
            "--stage-only",
            "--model",
            args.model,
            "--n",
            str(n),
            "--device",
            args.device,
            "--batch-size",
            str(batch),
        ]
        return json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )

    ab = bare_and_naive(args.n, args.model, args.device, batch)
    s1, s4 = child(args.n), child(4 * args.n)
    rate = {
        "bare": ab["slices"] / ab["bare_seconds"],
        "stage": s1["slices"] / s1["seconds"],
        "stage_4n": s4["slices"] / s4["seconds"],
        "naive": ab["slices"] / ab["naive_seconds"],
    }
    result = {
        "model": args.model,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(0)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "batch_size": batch,
        "n": args.n,
        "slices_per_s": rate,
        "ratio_stage_over_bare": rate["stage"] / rate["bare"],
        "ratio_stage_over_naive": rate["stage"] / rate["naive"],
        "peak_rss_mb": {"n": s1["peak_rss_mb"], "4n": s4["peak_rss_mb"]},
        "peak_gpu_mb": {"n": s1["peak_gpu_mb"], "4n": s4["peak_gpu_mb"]},
        "memory_ratio_4n_over_n": s4["peak_rss_mb"] / s1["peak_rss_mb"],
        "targets": {
            "ratio_stage_over_bare": ">= 0.9",
            "ratio_stage_over_naive": ">= 1.0",
            "memory_ratio_4n_over_n": "<= 1.2",
        },
        "torch": torch.__version__,
    }
    print(f"{'measure':<28}{'value':>12}")
    for name, value in rate.items():
        print(f"{'slices/s ' + name:<28}{value:>12.3f}")
    for key in ("ratio_stage_over_bare", "ratio_stage_over_naive", "memory_ratio_4n_over_n"):
        print(f"{key:<28}{result[key]:>12.3f}   target {result['targets'][key]}")
    print(f"{'peak RSS MB (N, 4N)':<28}{s1['peak_rss_mb']:>12.0f}{s4['peak_rss_mb']:>10.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
