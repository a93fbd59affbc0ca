"""SAM 2 embedding benchmark: the embed stage's per-slice work (the family's official input transform, the
image encoder, the fp16 cache entry) for SAM 2.1 Hiera-T, LiteMedSAM and SAM ViT-B, and the bytes each
caches per slice.

The models are interleaved: every round embeds the same N slices with A, B, C once (R rounds; median and
[min, max] per model), so a change in this shared machine's load lands on all three. Hiera-T and ViT-B
are randomly initialised (speed and size do not depend on the weights); LiteMedSAM has its real weights.
A cache entry is written as the embed stage writes it (`embed.write_entry`) and its file size counted.

    python benchmarks/sam2_embed.py [--n 4] [--rounds 3] [--device auto] [--batch-size 0] [--sam2-size 1024]

Writes benchmarks/results/sam2_embed.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import fmt, spread

from samstudy.embed import encode, resolve_precision, write_entry
from samstudy.models import load_model, resolve_device

MODELS = ("sam2.1_hiera_t", "litemedsam", "sam_vit_b")


def phantom_slices(n: int, size: int = 256) -> np.ndarray:
    """n uint8 CT-like slices (a bright disc and a darker bar on noise), size x size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    out = (rng.random((n, size, size)) * 40).astype(np.uint8)
    for i in range(n):
        out[i][((yy - size / 2) ** 2 + (xx - size / 2.5) ** 2) < (size / 5 + i) ** 2] += 150
        out[i][size // 5 : size // 3, size // 2 : int(size * 0.8)] += 80
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4, help="slices per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = 1 on CPU, 16 on GPU")
    parser.add_argument("--sam2-size", type=int, default=1024, help="Hiera-T input size (1024 official)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sam2_embed.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    batch = args.batch_size or (16 if device.type == "cuda" else 1)
    precision = resolve_precision("auto", device)
    names = args.models.split(",")
    models = {}
    for name in names:
        entry = {"type": name, "image_size": args.sam2_size} if name.startswith("sam2") else {"type": name}
        models[name] = load_model(entry, device, random_init=name != "litemedsam")
        models[name].predictor.use_channels_last()
    slices = phantom_slices(args.n)
    for model in models.values():  # warm-up (one slice each, not timed)
        encode(model, slices[:1], 1, precision)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cache: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):  # A B C, A B C, ...
            for name, model in models.items():
                sync(device)
                start = time.perf_counter()
                emb = encode(model, slices, batch, precision)
                sync(device)
                rates[name].append(len(slices) / (time.perf_counter() - start))
                if name not in cache:
                    path = Path(tmp) / f"{name}.npz"
                    write_entry(path, "k", {}, emb, np.arange(len(slices)))
                    cache[name] = {
                        "values_per_slice": int(emb[0].size),
                        "shape_per_slice": list(emb.shape[1:]),
                        "array_bytes_per_slice": int(emb.nbytes // len(slices)),
                        "file_bytes_per_slice": Path(path).stat().st_size / len(slices),
                    }
            print(
                f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rates.items()),
                file=sys.stderr,
            )
    stats = {name: spread(v) for name, v in rates.items()}
    result = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "batch_size": batch,
        "n": args.n,
        "rounds": args.rounds,
        "sam2_image_size": args.sam2_size,
        "input_sizes": {name: m.family.input_size for name, m in models.items()},
        "slices_per_s": {name: s["median"] for name, s in stats.items()},
        "slices_per_s_spread": stats,
        "cache": cache,
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(
        f"device {result['device_name']} ({device}, {precision}, batch {batch}), {args.n} slices x {args.rounds} rounds"
    )
    print(f"{'model':<16} {'input':>5} {'slices/s median [min, max]':>28} {'s/slice':>8} {'cache MiB/slice':>16}")
    for name in names:
        mib = cache[name]["file_bytes_per_slice"] / 2**20
        size = models[name].family.input_size
        print(f"{name:<16} {size:>5} {fmt(stats[name], 3):>28} {1 / stats[name]['median']:>8.2f} {mib:>16.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
