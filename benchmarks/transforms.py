"""Cost of each family's official input transform per slice, against its image encoder.

Issue #12 replaced samstudy's torch bilinear letterbox with each family's official transform (OpenCV
INTER_AREA for LiteMedSAM, segment-anything's PIL ResizeLongestSide for SAM, scikit-image cubic for MedSAM).
This measures what that costs per slice, interleaved (every setup once per round, R rounds: median and
spread), next to the encoder forward it feeds (LiteMedSAM real weights; ViT-B randomly initialised).
One torch thread. Writes benchmarks/results/transforms.json.

    python benchmarks/transforms.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samstudy.families import FAMILIES
from samstudy.models import load_model

SIZES = {"64x64": (64, 64), "173x229": (173, 229), "512x512": (512, 512)}


def old_letterbox(slices: np.ndarray, size: int) -> torch.Tensor:
    """samstudy's transform before #12 (torch bilinear + antialias on floats, min-max, pad), for comparison."""
    x = torch.from_numpy(np.ascontiguousarray(slices)).float()[:, None]
    scale = size / max(x.shape[-2:])
    nh, nw = int(x.shape[-2] * scale + 0.5), int(x.shape[-1] * scale + 0.5)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True).repeat(1, 3, 1, 1)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    return F.pad((x - lo) / (hi - lo).clamp_min(1e-8), (0, size - nw, 0, size - nh))


def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, (1, *hw), dtype=np.uint8) for name, hw in SIZES.items()}
    lite = load_model({"type": "litemedsam"})
    vit_b = FAMILIES["sam_vit_b"].predictor(FAMILIES["sam_vit_b"].build().eval())
    setups = {}
    for name, image in images.items():
        for fam in ("litemedsam", "sam_vit_b", "medsam_vit_b"):
            setups[f"transform {fam} {name}"] = (lambda f=FAMILIES[fam], im=image: f.image_to_input(im), 5)
        setups[f"transform old-letterbox-256 {name}"] = (lambda im=image: old_letterbox(im, 256), 5)
    x256 = FAMILIES["litemedsam"].image_to_input(images["173x229"])
    x1024 = FAMILIES["sam_vit_b"].image_to_input(images["173x229"])
    with torch.inference_mode():
        setups["encoder litemedsam (TinyViT, 256)"] = (lambda: lite.predictor.encode(x256), 1)
        setups["encoder ViT-B (1024)"] = (lambda: vit_b.encode(x1024), 1)
        for fn, _ in setups.values():  # warm-up (imports, allocator)
            fn()
        samples: dict[str, list[float]] = {k: [] for k in setups}
        for _ in range(args.rounds):  # interleaved: A B C ... A B C ...
            for key, (fn, repeats) in setups.items():
                samples[key].append(timed(fn, repeats))
    result = {
        key: {"median_ms": 1000 * statistics.median(v), "min_ms": 1000 * min(v), "max_ms": 1000 * max(v)}
        for key, v in samples.items()
    }
    enc_lite = result["encoder litemedsam (TinyViT, 256)"]["median_ms"]
    enc_vit = result["encoder ViT-B (1024)"]["median_ms"]
    for key, entry in result.items():
        if key.startswith("transform"):
            encoder = enc_lite if ("litemedsam" in key or "old" in key) else enc_vit
            entry["fraction_of_encoder"] = entry["median_ms"] / encoder
    out = {"rounds": args.rounds, "torch_threads": 1, "per_slice": result}
    path = Path(__file__).parent / "results" / "transforms.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("| setup | median ms per slice [min, max] | of its encoder |\n|---|---|---|")
    for key, entry in result.items():
        frac = f"{100 * entry['fraction_of_encoder']:.2f} %" if "fraction_of_encoder" in entry else ""
        print(f"| {key} | {entry['median_ms']:.2f} [{entry['min_ms']:.2f}, {entry['max_ms']:.2f}] | {frac} |")


if __name__ == "__main__":
    main()
