"""Embedding benchmark: the embed stage against the bare encoder and a naive SamPredictor loop.

(a) bare: the image encoder's forward on ready tensors (inference_mode, same batch size/precision);
(b) stage: samstudy's embed stage end to end (read, transform, encode, write the cache), fresh cache;
(c) naive: SamPredictor.set_image per slice, then np.save of the embedding.
The three are interleaved: every round runs a, b, c once (R rounds, median and [min, max] per setup; the
ratios are also taken within each round), so a change in the machine's load lands on all three. The
stage runs in its own process (its peak memory, ru_maxrss); at 4N slices once more after the rounds
(memory does not depend on the load).

    python benchmarks/embed.py [--model litemedsam|sam_vit_b] [--n 16] [--rounds 3] [--device auto]

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
from common import fmt, phantom_config, spread

from samstudy.embed import embed_dataset, encode, resolve_precision
from samstudy.ingest import ingest_dataset
from samstudy.models import load_model, resolve_device
from samstudy.paths import Layout
from samstudy.preprocess import load_preprocessed, preprocess_dataset

SLICES_PER_CASE = 8
SETUPS = ("bare", "stage", "naive")
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


class Reference:
    """(a) and (c) on one study's first n slices, with the model loaded once (its load is not timed)."""

    def __init__(self, root: Path, n: int, model_type: str, device: str, batch_size: int):
        from segment_anything import SamPredictor

        cfg, layout = make_study(root, n, model_type, device, batch_size)
        self.slices = all_slices(layout, n)
        self.device, self.device_name, self.batch_size = resolve_device(device), device, batch_size
        self.model = load_model(cfg["models"]["m"], self.device, random_init=model_type != "litemedsam")
        self.model.predictor.use_channels_last()
        self.precision = resolve_precision(cfg["embed"]["precision"], self.device)
        encode(self.model, self.slices[:1], 1, self.precision)  # warm-up
        self.ready = [
            self.model.family.image_to_input(self.slices[i : i + batch_size])
            .to(self.device)
            .contiguous(memory_format=torch.channels_last)
            for i in range(0, len(self.slices), batch_size)
        ]
        self.predictor = SamPredictor(self.model.sam)
        self.out = root / "naive"
        self.out.mkdir()

    def bare(self) -> float:
        """(a): ready tensors, only the forward is timed."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        sync(self.device_name)
        start = time.perf_counter()
        predictor = self.model.predictor
        with torch.inference_mode(), autocast:
            for x in self.ready:
                predictor.encode(x)
        sync(self.device_name)
        return time.perf_counter() - start

    def naive(self) -> float:
        """(c): SamPredictor.set_image per slice and one .npy per slice."""
        sync(self.device_name)
        start = time.perf_counter()
        for i, s in enumerate(self.slices):
            self.predictor.set_image(np.repeat(s[:, :, None], 3, axis=2))
            np.save(self.out / f"{i}.npy", self.predictor.get_image_embedding().cpu().numpy())
        sync(self.device_name)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="litemedsam", choices=["litemedsam", "sam_vit_b"])
    parser.add_argument("--n", type=int, default=16, help="slices (a multiple of 8, at least 16)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = 1 on CPU, 16 on GPU")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (a b c, a b c, ...)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "embed.json"))
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

    rounds: dict[str, list] = {"bare": [], "stage": [], "naive": [], "stage_runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        ref = Reference(Path(tmp), args.n, args.model, args.device, batch)
        n_slices = len(ref.slices)
        for r in range(args.rounds):  # a b c, a b c, ...
            rounds["bare"].append(n_slices / ref.bare())
            run = child(args.n)
            rounds["stage_runs"].append(run)
            rounds["stage"].append(run["slices"] / run["seconds"])
            rounds["naive"].append(n_slices / ref.naive())
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {rounds[k][-1]:.3f}" for k in SETUPS),
                file=sys.stderr,
            )
    s4 = child(4 * args.n)
    rate = {k: spread(rounds[k]) for k in SETUPS}
    within = {  # the ratios within each round: a load change between rounds cancels out
        "ratio_stage_over_bare": spread([b / a for a, b in zip(rounds["bare"], rounds["stage"], strict=True)]),
        "ratio_stage_over_naive": spread([b / c for b, c in zip(rounds["stage"], rounds["naive"], strict=True)]),
    }
    peak_n = spread([run["peak_rss_mb"] for run in rounds["stage_runs"]])["median"]
    result = {
        "model": args.model,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(0)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "batch_size": batch,
        "n": args.n,
        "rounds": args.rounds,
        "slices_per_s": {k: rate[k]["median"] for k in SETUPS} | {"stage_4n": s4["slices"] / s4["seconds"]},
        "slices_per_s_spread": rate,
        "ratio_stage_over_bare": within["ratio_stage_over_bare"]["median"],
        "ratio_stage_over_naive": within["ratio_stage_over_naive"]["median"],
        "ratio_spread": within,
        "peak_rss_mb": {"n": peak_n, "4n": s4["peak_rss_mb"]},
        "peak_gpu_mb": {"n": rounds["stage_runs"][-1]["peak_gpu_mb"], "4n": s4["peak_gpu_mb"]},
        "memory_ratio_4n_over_n": s4["peak_rss_mb"] / peak_n,
        "targets": TARGETS,
        "torch": torch.__version__,
    }
    print(f"\n{'measure (median [min, max] of ' + str(args.rounds) + ' rounds)':<44}{'value':>24}")
    for name in SETUPS:
        print(f"{'slices/s ' + name:<44}{fmt(rate[name], 3):>24}")
    print(f"{'slices/s stage at 4N (once)':<44}{result['slices_per_s']['stage_4n']:>24.3f}")
    for key, stat in within.items():
        print(f"{key + ' (within rounds)':<44}{fmt(stat, 3):>24}   target {TARGETS[key]}")
    key = "memory_ratio_4n_over_n"
    print(f"{key:<44}{result[key]:>24.3f}   target {TARGETS[key]}")
    print(f"{'peak RSS MB (N, 4N)':<44}{peak_n:>14.0f}{s4['peak_rss_mb']:>10.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
