"""Prompts simulated from the ground truth, seeded, stored once per dataset and protocol, reused by all.

Coordinates are XYXY pixels of the native slice (x = column, y = row), slices as cut by preprocess; a
slice index is the position along the preprocessed slice axis. What is stored per protocol:

- `box`, `box_jitter`, `points<k>`: the prompt of every object on every slice where it is present.
- `clicks`: the *starting* prompt (a tight box or one point at the object's innermost point) of every
  object on every slice; the correction clicks depend on each method's own predictions, so inference
  produces them (samstudy.masks.next_click) and records them beside its predictions.
- `box3d`: one 3D box per object per case, `[x0, y0, s0, x1, y1, s1]` (s = slice index); inference
  predicts its middle slice and propagates slice by slice.
- `propagate`: the same 3D boxes; SAM 2 predicts the middle slice and its video memory propagates the
  mask (samstudy.protocols.propagate).

This module makes the stored prompts of every protocol; what each protocol stores and needs is in the
protocol registry (samstudy.protocols), how it runs in its module there.

An "object" is one label, one connected component of it, or its largest component (`components`:
`union` | `all` | `largest`); a prompt of a component carries its id, so `masks.prompt_target` can rebuild the
exact mask the prompt stands for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from samstudy.cases import eval_cases, load_dataset_table, select
from samstudy.io import read_json, write_json
from samstudy.masks import components, innermost_point
from samstudy.paths import Layout
from samstudy.preprocess import label_slices, load_preprocessed
from samstudy.protocols import BOX3D, DERIVED_KINDS, PROTOCOL_TABLE

POINT_PROTOCOLS = {"points1": 1, "points3": 3, "points5": 5}
# Protocols stored as one 3D box per object per case (`propagate`: SAM 2 prompts its middle slice).
BOX3D_PROTOCOLS = tuple(p.name for p in PROTOCOL_TABLE if p.stores == BOX3D)
COMPONENT_MODES = ("union", "all", "largest")


def tight_box(mask: np.ndarray) -> list[int]:
    """XYXY bounding box of a binary 2D mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def tight_box3d(mask: np.ndarray) -> list[int]:
    """[x0, y0, s0, x1, y1, s1] bounding box of a binary (slices, H, W) mask."""
    s = np.flatnonzero(mask.any(axis=(1, 2)))
    x0, y0, x1, y1 = tight_box(mask.any(axis=0))
    return [x0, y0, int(s[0]), x1, y1, int(s[-1])]


def jitter_box(box: list[int], jitter: int, shape: tuple[int, int], rng: np.random.Generator) -> list[int]:
    """Move each side outward by U(0, jitter) pixels (MedSAM style), clipped to the slice."""
    d = rng.integers(0, jitter + 1, size=4) if jitter > 0 else np.zeros(4, dtype=int)
    return grow_box(box, [int(v) for v in d], shape)


def grow_box(box: list[int], margin: int | list[int], shape: tuple[int, int]) -> list[int]:
    """Move the sides of an XYXY box outward by `margin` pixels (one value or one per side), clipped."""
    d = [margin] * 4 if isinstance(margin, int) else margin
    h, w = shape
    return [max(0, box[0] - d[0]), max(0, box[1] - d[1]), min(w - 1, box[2] + d[2]), min(h - 1, box[3] + d[3])]


def case_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator seeded by the study seed and names, independent of processing order."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return np.random.default_rng([seed, int(digest[:8], 16), int(digest[8:16], 16)])


def objects(mask: np.ndarray, mode: str) -> list[tuple[int | None, np.ndarray]]:
    """The objects one label's mask is prompted as: [(component id or None, mask)].

    `union`: the whole label (id None); `all`: every connected component (ids 1..n, scipy's raster
    order); `largest`: the component with the most voxels (the lowest id on a tie).
    """
    if mode not in COMPONENT_MODES:
        raise ValueError(f"prompts.components must be one of {COMPONENT_MODES}, got '{mode}'")
    if mode == "union":
        return [(None, mask)]
    lab, n = components(mask)
    if mode == "largest":
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        ids = [int(np.argmax(sizes)) + 1]
    else:
        ids = list(range(1, n + 1))
    return [(c, lab == c) for c in ids]


def sample_points(mask: np.ndarray, k: int, negatives: int, rng: np.random.Generator) -> tuple[list, list]:
    """k positive points (the first at the mask's innermost point, the rest uniformly inside)
    and `negatives` points outside the mask but inside its box grown by 5 pixels. XY pixel coordinates."""
    centre = innermost_point(mask)
    inside = np.argwhere(mask)
    picks = [centre] + [tuple(inside[i]) for i in rng.choice(len(inside), size=k - 1, replace=len(inside) < k - 1)]
    points, labels = [[int(c), int(r)] for r, c in picks], [1] * k
    if negatives:
        x0, y0, x1, y1 = tight_box(mask)
        ring = np.zeros_like(mask)
        ring[max(0, y0 - 5) : y1 + 6, max(0, x0 - 5) : x1 + 6] = True
        outside = np.argwhere(ring & ~mask)
        if len(outside):
            for i in rng.choice(len(outside), size=negatives, replace=len(outside) < negatives):
                points.append([int(outside[i][1]), int(outside[i][0])])
                labels.append(0)
    return points, labels


def _slice_prompt(mask: np.ndarray, protocol: str, settings: dict, rng: np.random.Generator) -> dict:
    """The stored prompt of one object on one slice."""
    if protocol in POINT_PROTOCOLS:
        points, labels = sample_points(mask, POINT_PROTOCOLS[protocol], settings.get("negative_points", 0), rng)
        return {"points": points, "point_labels": labels}
    if protocol == "clicks" and settings["clicks"]["start"] == "point":
        r, c = innermost_point(mask)
        return {"points": [[c, r]], "point_labels": [1]}
    box = tight_box(mask)
    if protocol == "box_jitter":
        box = jitter_box(box, settings["jitter_px"], mask.shape, rng)
    return {"box": box}


def _component(comp: int | None) -> dict:
    """The component key of a stored prompt: absent for a whole label (`union`)."""
    return {} if comp is None else {"component": comp}


def case_prompts(labels: np.ndarray, protocol: str, settings: dict, rng: np.random.Generator) -> list[dict]:
    """Prompts of one case: per label (or per component, `settings["components"]`), per slice where it is
    present; for `box3d` one 3D box per label (or 3D component) per case."""
    mode = settings.get("components", "union")
    values = [int(v) for v in np.unique(labels) if v != 0]
    if protocol in BOX3D_PROTOCOLS:
        out = []
        for value in values:
            for comp, mask in objects(labels == value, mode):
                out.append({"label": value, **_component(comp), "box3d": tight_box3d(mask)})
        return out
    out = []
    for s in range(labels.shape[0]):
        for value in np.unique(labels[s]):
            if value == 0:
                continue
            for comp, mask in objects(labels[s] == value, mode):
                prompt = _slice_prompt(mask, protocol, settings, rng)
                out.append({"slice": s, "label": int(value), **_component(comp), **prompt})
    return out


def make_prompts(layout: Layout, dataset: str, protocol: str, settings: dict, seed: int) -> dict:
    """Simulate and store the prompts of every case of a dataset for one protocol.

    The artifact also records the protocol's settings and the seed, so inference (clicks rounds,
    box3d margin) reads the very settings the prompts were made with.
    """
    table, _ = load_dataset_table(layout, dataset)
    cases = {}
    for case in tqdm(
        select(layout, dataset, list(table["case_id"])), desc=f"prompts {dataset}/{protocol}", unit="case"
    ):
        labels = load_preprocessed(layout, dataset, case)["labels"]
        cases[case] = case_prompts(labels, protocol, settings, case_rng(seed, dataset, case, protocol))
    result = {
        "dataset": dataset,
        "protocol": protocol,
        "kind": protocol,
        "from_ground_truth": True,
        "source": "ground_truth",
        "settings": settings,
        "seed": seed,
        "cases": cases,
    }
    write_json(layout.prompts(dataset, protocol), result)
    return result


def derived_source(spec: dict) -> str:
    """The prompt source of a derived protocol, as metrics.parquet records it: `run:<source run>`."""
    return f"run:{spec['from']}"


def derive_prompts(layout: Layout, dataset: str, protocol: str, spec: dict, settings: dict, seed: int) -> dict:
    """An automatic protocol: the prompts of every evaluation case made from another run's prediction of
    that case (e.g. boxes from nnU-Net's masks, so SAM refines nnU-Net with no ground truth at test time).

    `spec` = {"from": source run, "kind": "box" | "box3d"}: per label (or component, `components`) per
    slice where the source predicts it, or one 3D box per label, exactly as `case_prompts` makes them from
    the ground truth. A slice where the source predicts nothing gets no prompt (and is still scored).
    """
    kind = spec.get("kind", "box")
    if kind not in DERIVED_KINDS:
        raise ValueError(f"prompts.derived.{protocol}.kind must be one of {DERIVED_KINDS}, got '{kind}'")
    cases = {}
    for case in tqdm(eval_cases(layout, dataset), desc=f"prompts {dataset}/{protocol} from {spec['from']}"):
        path = layout.prediction(spec["from"], dataset, case)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: the source run {spec['from']} has no prediction of {dataset}/{case}")
        pre = load_preprocessed(layout, dataset, case)
        slices = label_slices(path, int(pre["axis"]))
        if slices.shape != pre["labels"].shape:
            raise ValueError(f"{path}: shape {slices.shape} (as slices) does not fit {dataset}/{case}'s image")
        cases[case] = case_prompts(slices.astype(np.uint8), kind, settings, case_rng(seed, dataset, case, protocol))
    result = {
        "dataset": dataset,
        "protocol": protocol,
        "kind": kind,
        "from_ground_truth": False,
        "source": derived_source(spec),
        "settings": settings,
        "seed": seed,
        "cases": cases,
    }
    write_json(layout.prompts(dataset, protocol), result)
    return result


def load_prompts(layout: Layout, dataset: str, protocol: str) -> dict:
    return read_json(layout.prompts(dataset, protocol))
