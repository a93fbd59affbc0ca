"""Objects in label masks: connected components, a mask's innermost point, the object a stored prompt
stands for and the next correction click on a prediction of it.

What samstudy.prompts makes prompts with and the `clicks` protocol (samstudy.protocols.clicks) corrects
with: a module of its own so that the protocol does not import samstudy.prompts, which imports the
protocol registry (that would close a loop through the registry's lazy import of the protocol).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity (8 in 2D, 26 in 3D): diagonal neighbours touch."""
    return ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))


def prompt_target(labels: np.ndarray, prompt: dict) -> np.ndarray:
    """The ground-truth mask a stored prompt stands for (its label, or the component it names).

    `labels` is the slice (H, W) for per-slice prompts or the label volume (slices, H, W) for `box3d`.
    """
    mask = labels == prompt["label"]
    if prompt.get("component") is None:
        return mask
    lab, _ = components(mask)
    return lab == prompt["component"]


def innermost_point(mask: np.ndarray) -> tuple[int, int]:
    """(row, col) of the mask's innermost pixel: largest distance to the background or the image edge,
    ties broken by the nearest to the centre of mass (so a rectangle gives its centre)."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ties = np.argwhere(dist == dist.max())
    r, c = ties[np.argmin(((ties - np.argwhere(mask).mean(axis=0)) ** 2).sum(axis=1))]
    return int(r), int(c)


def next_click(pred: np.ndarray, target: np.ndarray) -> dict | None:
    """The next correction click (SAM-Med2D / micro-sam style) for a 2D prediction of one object.

    The error regions are the missed area (target & ~pred) and the false area (pred & ~target), split
    into connected components; the click goes to the innermost point of the largest one (by pixel
    count; on a tie the missed area wins), positive in a missed area and negative in a false one.
    Returns {"xy": [x, y], "label": 1|0, "region_px": n} or None when the prediction is already exact.
    """
    best: tuple[int, int, np.ndarray] | None = None  # (size, point label, region)
    for point_label, error in ((1, target & ~pred), (0, pred & ~target)):
        lab, n = components(error)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
        c = int(np.argmax(sizes)) + 1
        if best is None or sizes[c - 1] > best[0]:
            best = (int(sizes[c - 1]), point_label, lab == c)
    if best is None:
        return None
    r, c = innermost_point(best[2])
    return {"xy": [c, r], "label": best[1], "region_px": best[0]}
