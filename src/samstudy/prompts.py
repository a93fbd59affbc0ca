"""Prompts simulated from the ground truth, seeded, stored once per dataset and protocol, reused by all.

Coordinates are XYXY pixels of the native slice (x = column, y = row), slices as cut by preprocess.
"""

from __future__ import annotations

import hashlib

import numpy as np
from tqdm import tqdm

from samstudy.ingest import load_dataset_table
from samstudy.io import read_json, write_json
from samstudy.paths import Layout
from samstudy.preprocess import load_preprocessed


def tight_box(mask: np.ndarray) -> list[int]:
    """XYXY bounding box of a binary 2D mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])]


def jitter_box(box: list[int], jitter: int, shape: tuple[int, int], rng: np.random.Generator) -> list[int]:
    """Move each side outward by U(0, jitter) pixels (MedSAM style), clipped to the slice."""
    d = rng.integers(0, jitter + 1, size=4) if jitter > 0 else np.zeros(4, dtype=int)
    h, w = shape
    return [
        max(0, box[0] - int(d[0])),
        max(0, box[1] - int(d[1])),
        min(w - 1, box[2] + int(d[2])),
        min(h - 1, box[3] + int(d[3])),
    ]


def case_rng(seed: int, *parts: str) -> np.random.Generator:
    """A generator seeded by the study seed and names, independent of processing order."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return np.random.default_rng([seed, int(digest[:8], 16), int(digest[8:16], 16)])


POINT_PROTOCOLS = {"points1": 1, "points3": 3, "points5": 5}


def sample_points(mask: np.ndarray, k: int, negatives: int, rng: np.random.Generator) -> tuple[list, list]:
    """k positive points (the first at the mask's innermost point, the rest uniformly inside)
    and `negatives` points outside the mask but inside its box grown by 5 pixels. XY pixel coordinates."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ties = np.argwhere(dist == dist.max())  # the innermost points; break ties by the centre of mass
    centre = tuple(ties[np.argmin(((ties - np.argwhere(mask).mean(axis=0)) ** 2).sum(axis=1))])
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


def case_prompts(labels: np.ndarray, protocol: str, settings: dict, rng: np.random.Generator) -> list[dict]:
    """Prompts of one case: one per label per slice where the label is present."""
    out = []
    for s in range(labels.shape[0]):
        for value in np.unique(labels[s]):
            if value == 0:
                continue
            mask = labels[s] == value
            prompt = {"slice": s, "label": int(value)}
            if protocol in POINT_PROTOCOLS:
                prompt["points"], prompt["point_labels"] = sample_points(
                    mask, POINT_PROTOCOLS[protocol], settings.get("negative_points", 0), rng
                )
            else:
                box = tight_box(mask)
                if protocol == "box_jitter":
                    box = jitter_box(box, settings["jitter_px"], labels.shape[1:], rng)
                prompt["box"] = box
            out.append(prompt)
    return out


def make_prompts(layout: Layout, dataset: str, protocol: str, settings: dict, seed: int) -> dict:
    """Simulate and store the prompts of every case of a dataset for one protocol."""
    table, _ = load_dataset_table(layout, dataset)
    cases = {}
    for case in tqdm(list(table["case_id"]), desc=f"prompts {dataset}/{protocol}", unit="case"):
        labels = load_preprocessed(layout, dataset, case)["labels"]
        cases[case] = case_prompts(labels, protocol, settings, case_rng(seed, dataset, case, protocol))
    result = {"dataset": dataset, "protocol": protocol, "from_ground_truth": True, "cases": cases}
    write_json(layout.prompts(dataset, protocol), result)
    return result


def load_prompts(layout: Layout, dataset: str, protocol: str) -> dict:
    return read_json(layout.prompts(dataset, protocol))
