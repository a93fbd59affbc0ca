"""The CVPR 2025 interactive 3D protocol's rules, as the challenge's evaluation code applies them: the box
of a class, the next correction click of a class, the DSC/NSD AUC and the challenge's NSD (numpy/scipy only).

Official code (JunMa11/CVPR-MedSegFMCompetition at commit 748e862, cited below as ``EVAL`` =
``CVPR25_iter_eval.py``, ``BOXES`` = ``get_boxes.py``, ``SD`` = ``SurfaceDice.py``, with line numbers):

- Box (BOXES L44-L90, applied per class to the labels relabelled 1..N, L110-L118): ``z_min``/``z_max`` the
  first/last slice holding the class (inclusive), ``z_mid = unique(z)[len // 2]`` (the middle *occupied*
  slice), the 2D box of the class on ``z_mid`` (inclusive min/max, x = last axis), each side widened by
  ``int(randint(0, 6) * dim / 256)`` and clipped to the image. The official script draws that jitter from
  NumPy's global generator (``np.random.seed(2025)``, L4) inside a 16-process pool (L132-L134), so its own
  boxes cannot be reproduced; here the jitter (``jitter="cvpr25"``) is drawn from
  ``np.random.default_rng([seed, case key, label])`` (`jitter_rng`): seeded per case and class.
- Click (EVAL L377-L424 with ``compute_edt`` L178-L244 and ``sample_coord`` L164-L175): see `next_click`.
- AUC (EVAL L530-L531): `auc_cvpr25`. DSC and NSD (EVAL L140-L158, L495-L501; SD): `case_scores_cvpr25`.
  SD is DeepMind's surface-distance code; its PyPI release (``surface-distance`` 0.1) gives the same surface
  dice but calls ``np.Inf`` (gone in NumPy 2) on an empty mask, so it is not a dependency: the tests hold
  this code to a transcription of SD itself.

Everything is in array order: a volume is (z, y, x) and a click is the voxel index (z, y, x) as
``np.argwhere`` gives it (the script's docstring says "[x, y, z]"; its code stores ``argwhere`` rows, L172).
tests/official_cvpr25.py is a literal transcription of the official functions; tests/test_interactive.py
holds this module to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# EVAL L208: a padded error component larger than this is 2x block-max downsampled before its EDT
LARGE_ROI_VOXELS = 60_000_000
JITTER_SEED = 2025  # BOXES L4 seeds the global generator with 2025; ours is the base of every case's seed
JITTERS = ("none", "cvpr25")
N_CLICKS = 5  # EVAL L321
NSD_TOLERANCE_MM = 2.0  # EVAL L149
NSD_MIN_DSC = 0.2  # EVAL L497: a case whose mean DSC is not above this gets NSD 0
BUDGET_S_PER_CLASS = 90  # EVAL L344, L526 (only a warning in the script)


# ----------------------------------------------------------------------------------------------------
# Boxes (BOXES)
# ----------------------------------------------------------------------------------------------------


def jitter_rng(case_id: str, label: int, seed: int = JITTER_SEED) -> np.random.Generator:
    """The generator of one case's and class's box jitter: ``default_rng([seed, key, label])`` where key is
    the first 8 bytes of SHA-256(case_id) as a big-endian integer (stable across processes and runs)."""
    key = int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "big")
    return np.random.default_rng([int(seed), key, int(label)])


def box_of(mask: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, int] | None:
    """The challenge's box of one class (BOXES ``mask3D_to_bbox`` L66-L90 + ``mask2D_to_bbox`` L44-L63): the
    dict the challenge stores (keys ``z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min, z_mid_x_max,
    z_mid_y_max``, all inclusive voxel indices); None for an empty class.

    `rng` None: no jitter (the tight box). Otherwise one draw ``rng.integers(0, 6)`` per class (BOXES L51
    draws ``np.random.randint(0, 6, 1)[0]``) widens x by ``int(shift * W / 256)`` and y by
    ``int(shift * H / 256)`` on each side (L52-L54), clipped to the image (L56-L59).
    """
    z, _, _ = np.nonzero(mask)  # BOXES L68
    if z.size == 0:
        return None
    occupied = np.unique(z)  # BOXES L69-L72
    z_mid = int(occupied[len(occupied) // 2])
    y, x = np.nonzero(mask[z_mid])  # BOXES L46
    x_min, x_max, y_min, y_max = int(x.min()), int(x.max()), int(y.min()), int(y.max())  # BOXES L47-L48
    h, w = mask.shape[1:]  # BOXES L50, L52
    if rng is not None:
        shift = int(rng.integers(0, 6))  # BOXES L51
        shift_x, shift_y = int(shift * w / 256), int(shift * h / 256)  # BOXES L53-L54
        x_min, x_max = max(0, x_min - shift_x), min(w - 1, x_max + shift_x)  # BOXES L56-L57
        y_min, y_max = max(0, y_min - shift_y), min(h - 1, y_max + shift_y)  # BOXES L58-L59
    return {
        "z_min": int(z.min()),
        "z_max": int(z.max()),
        "z_mid": z_mid,
        "z_mid_x_min": x_min,
        "z_mid_y_min": y_min,
        "z_mid_x_max": x_max,
        "z_mid_y_max": y_max,
    }


def case_boxes(
    labels: np.ndarray, case_id: str, jitter: str = "cvpr25", seed: int = JITTER_SEED, classes=None
) -> dict[int, dict[str, int] | None]:
    """Every class's box in one label volume (z, y, x): label value -> `box_of` (None where the class is
    absent). `classes` defaults to the label values present (BOXES L110-L112 relabels them 1..N in sorted
    order and makes one box each, L115-L118: the same boxes, keyed here by the original value).
    `jitter`: "none" or "cvpr25" (seeded by `jitter_rng(case_id, label, seed)`)."""
    if jitter not in JITTERS:
        raise ValueError(f"box jitter must be one of {JITTERS}, got '{jitter}'")
    if classes is None:
        classes = [int(v) for v in np.unique(labels) if v != 0]
    return {
        int(c): box_of(labels == c, jitter_rng(case_id, int(c), seed) if jitter == "cvpr25" else None) for c in classes
    }


# ----------------------------------------------------------------------------------------------------
# Clicks (EVAL L164-L244, L377-L424)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Click:
    """One correction click: the voxel (array order z, y, x) and whether it is a foreground click."""

    z: int
    y: int
    x: int
    fg: bool

    @property
    def voxel(self) -> tuple[int, int, int]:
        """The voxel index (z, y, x)."""
        return (self.z, self.y, self.x)


def largest_error_component(error: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary error volume (EVAL L387-L399: ``cc3d`` with
    connectivity 26, ``argmax`` of the component sizes, so a tie goes to the lowest label). scipy's
    ``ndimage.label`` with a full 3x3x3 structure numbers components as cc3d does, by their first voxel in
    C order (tests/test_interactive.py checks the two labellings are equal), so the tie rule is the same."""
    from scipy import ndimage

    components, _ = ndimage.label(error, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel())  # EVAL L390
    sizes[0] = 0  # EVAL L393
    return components == np.argmax(sizes)  # EVAL L396-L399


def _block_max(volume: np.ndarray) -> np.ndarray:
    """``skimage.measure.block_reduce(volume, (2, 2, 2), np.max)`` (EVAL L209-L211): each axis padded at its
    end with zeros to an even length, then the maximum of every 2x2x2 block."""
    padded = np.pad(volume, [(0, s % 2) for s in volume.shape])
    d, h, w = (s // 2 for s in padded.shape)
    return padded.reshape(d, 2, h, 2, w, 2).max(axis=(1, 3, 5))


def component_distance(component: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The challenge's distance map of one error component (EVAL ``compute_edt`` L178-L244 followed by
    ``edt *= largest_component``, L402), on the component's bounding box: (distances in that box, its
    lowest corner). The component alone is put in its bounding box padded by 25% per axis (at least one
    voxel, L187), so the image edge counts as boundary; a padded box of more than `LARGE_ROI_VOXELS` voxels
    is 2x block-max downsampled and the distances repeated back (L208-L225). scipy's Euclidean distance
    transform in voxel units, the script's CPU path (L221-L222; on a GPU it calls cuCIM's, L215-L220)."""
    from scipy import ndimage

    coords = np.argwhere(component)  # EVAL L180-L182
    lo = coords.min(axis=0)
    hi = coords.max(axis=0) + 1
    crop_shape = hi - lo  # EVAL L184
    padding = np.maximum((crop_shape * 0.25).astype(int), 1)  # EVAL L187
    inner = tuple(slice(int(p), int(p + c)) for p, c in zip(padding, crop_shape, strict=True))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    center_crop = np.zeros(crop_shape + 2 * padding, dtype=np.uint8)  # EVAL L191-L194
    center_crop[inner] = component[box]  # EVAL L197-L205
    large_roi = center_crop.size > LARGE_ROI_VOXELS  # EVAL L208
    if large_roi:
        center_crop = _block_max(center_crop)  # EVAL L211
    edt = ndimage.distance_transform_edt(center_crop)  # EVAL L222
    if large_roi:
        edt = edt.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)  # EVAL L224-L225
    return edt[inner] * component[box], (int(lo[0]), int(lo[1]), int(lo[2]))  # EVAL L228-L232, L402


def sample_max(weights: np.ndarray) -> tuple[int, ...]:
    """The voxel of maximum weight, ties broken as EVAL ``sample_coord`` (L164-L175) does: a generator seeded
    with 42 on every call, one uniform ``choice`` over the ``argwhere`` rows (C order) of the maximum.
    A fresh ``np.random.RandomState(42)`` draws what ``np.random.seed(42)`` + ``np.random.choice`` draw,
    without touching NumPy's global generator (the script reseeds it)."""
    ties = np.argwhere(weights == weights.max())  # EVAL L168-L169
    return tuple(int(v) for v in ties[np.random.RandomState(42).choice(len(ties))])  # EVAL L166, L172


def next_click(prediction: np.ndarray, ground_truth: np.ndarray, label: int) -> Click | None:
    """The challenge's next correction click of one class, from label volumes (z, y, x) (EVAL L381-L424):
    error = (prediction == label) XOR (ground truth == label); its largest 26-connected component; the
    voxel of that component farthest from its boundary (`component_distance`; where all distances are 0,
    any voxel of the component, L403-L406), ties broken by `sample_max`; a foreground click where the
    ground truth is the class, else a background click (L410-L417). None when the class is perfect (L423-L424).
    """
    error = (prediction == label) != (ground_truth == label)  # EVAL L381-L385
    if not error.any():  # EVAL L386
        return None
    component = largest_error_component(error)
    distance, lo = component_distance(component)
    if np.sum(distance) == 0:  # EVAL L403-L406 (a distance of 0 everywhere: any voxel of the component)
        box = tuple(slice(a, a + s) for a, s in zip(lo, distance.shape, strict=True))
        distance = component[box]
    local = sample_max(distance)
    z, y, x = (int(a + b) for a, b in zip(lo, local, strict=True))
    return Click(z, y, x, fg=bool(ground_truth[z, y, x] == label))  # EVAL L410-L417


def next_clicks(prediction: np.ndarray, ground_truth: np.ndarray, classes) -> dict[int, Click | None]:
    """`next_click` for every class (the challenge clicks every class of the case at every click step, L377)."""
    return {int(c): next_click(prediction, ground_truth, int(c)) for c in classes}


def challenge_clicks(history: dict[int, list[Click | None]]) -> tuple[list[dict], list[list]]:
    """The ``clicks`` and ``clicks_order`` the challenge hands a model (EVAL L348-L349, L412-L417, L424), from
    each class's clicks so far (label value -> one `Click` or None per click step, classes in label order):
    per class ``{"fg": [[z, y, x], ...], "bg": [...]}`` and the step-by-step list of "fg" / "bg" / None."""
    clicks, order = [], []
    for label in sorted(history):
        made: dict[str, list[list[int]]] = {"fg": [], "bg": []}
        kinds: list[str | None] = []
        for click in history[label]:
            if click is not None:
                made["fg" if click.fg else "bg"].append(list(click.voxel))
            kinds.append(None if click is None else ("fg" if click.fg else "bg"))
        clicks.append(made)
        order.append(kinds)
    return clicks, order


# ----------------------------------------------------------------------------------------------------
# Scores (EVAL L140-L158, L495-L501, L530-L531; SD)
# ----------------------------------------------------------------------------------------------------


def auc_cvpr25(values, n_clicks: int = N_CLICKS) -> float:
    """The challenge's AUC of a DSC or NSD series (box step first, then the click steps), EVAL L530-L531:
    ``cumulative_trapezoid(values[-n_clicks:], arange(n_clicks))[-1]``: the trapezoid area under the last
    `n_clicks` values (the click steps) at x = 0 .. n_clicks - 1, so between 0 and n_clicks - 1."""
    from scipy import integrate

    return float(integrate.cumulative_trapezoid(np.array(values[-n_clicks:]), np.arange(n_clicks))[-1])


def dice_cvpr25(gt: np.ndarray, pred: np.ndarray) -> float:
    """SD ``compute_dice_coefficient`` (L481-L498): 2|A & B| / (|A| + |B|); NaN when both are empty."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    volume_sum = gt.sum() + pred.sum()
    if volume_sum == 0:
        return float("nan")
    return float(2 * (gt & pred).sum() / volume_sum)


@lru_cache(maxsize=32)
def _surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """The area (mm^2) of the surface elements of each of the 256 2x2x2 neighbour codes (SD L315-L327)."""
    areas = np.zeros([256])
    for code, normals in enumerate(_NEIGHBOUR_CODE_TO_NORMALS):
        total = 0
        for normal in normals:
            n = np.zeros([3])
            n[0] = normal[0] * spacing[1] * spacing[2]
            n[1] = normal[1] * spacing[0] * spacing[2]
            n[2] = normal[2] * spacing[0] * spacing[1]
            total += np.linalg.norm(n)
        areas[code] = total
    areas.flags.writeable = False
    return areas


def surface_distances_cvpr25(gt: np.ndarray, pred: np.ndarray, spacing) -> dict[str, np.ndarray]:
    """SD ``compute_surface_distances`` (L280-L427; DeepMind's surface-distance, which the challenge copies):
    the surfels of both masks from their 2x2x2 neighbour codes, each surfel's area and distance (mm) to the
    other mask's surfels, sorted by (distance, area). `spacing` in the arrays' axis order."""
    from scipy import ndimage

    spacing = tuple(float(s) for s in spacing)
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = gt | pred
    if not union.any():  # SD L338-L342
        names = ("distances_gt_to_pred", "distances_pred_to_gt", "surfel_areas_gt", "surfel_areas_pred")
        return {name: np.array([]) for name in names}
    box = []
    for axis in range(3):  # SD L331-L357: the union's bounding box
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])  # SD L380-L383
    areas = _surfel_areas(spacing)
    codes, borders = [], []
    for mask in (gt, pred):
        crop = np.zeros([s.stop - s.start + 1 for s in box], np.uint8)  # SD L366-L375: one zero voxel after
        crop[:-1, :-1, :-1] = mask[tuple(box)]
        code = ndimage.correlate(crop, kernel, mode="constant", cval=0)  # SD L384-L385
        codes.append(code)
        borders.append((code != 0) & (code != 255))  # SD L388-L389
    distmaps = [  # SD L392-L400
        ndimage.distance_transform_edt(~b, sampling=spacing) if b.any() else np.inf * np.ones(b.shape) for b in borders
    ]
    out = {}
    for name, own, other in (("gt", 0, 1), ("pred", 1, 0)):
        distances = distmaps[other][borders[own]]  # SD L407-L408
        surfel_areas = areas[codes[own]][borders[own]]  # SD L403-L404, L409-L410
        order = np.lexsort((surfel_areas, distances))  # SD L413-L421: sorted(zip(distance, area))
        target = "pred" if name == "gt" else "gt"
        out[f"distances_{name}_to_{target}"] = distances[order]
        out[f"surfel_areas_{name}"] = surfel_areas[order]
    return out


def surface_dice_cvpr25(gt: np.ndarray, pred: np.ndarray, spacing, tolerance_mm: float = NSD_TOLERANCE_MM) -> float:
    """SD ``compute_surface_dice_at_tolerance`` (L469-L478) of `surface_distances_cvpr25`: the share of both
    surfaces' area within `tolerance_mm` of the other (0 when the prediction is empty; NaN when both are)."""
    d = surface_distances_cvpr25(gt, pred, spacing)
    overlap_gt = np.sum(d["surfel_areas_gt"][d["distances_gt_to_pred"] <= tolerance_mm])
    overlap_pred = np.sum(d["surfel_areas_pred"][d["distances_pred_to_gt"] <= tolerance_mm])
    total = np.sum(d["surfel_areas_gt"]) + np.sum(d["surfel_areas_pred"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return float((overlap_gt + overlap_pred) / total)


@dataclass(frozen=True)
class CaseScores:
    """One case's challenge scores at one step: per class and the case means the leaderboard uses."""

    dice: dict[int, float]  # per class (the classes of the ground truth)
    nsd_cvpr25: dict[int, float]  # per class; every class 0 when the case's mean DSC <= NSD_MIN_DSC
    mean_dice: float  # EVAL ``compute_multi_class_dsc``
    mean_nsd_cvpr25: float  # EVAL L497-L501: ``compute_multi_class_nsd`` or 0.0


def case_scores_cvpr25(
    ground_truth: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float = NSD_TOLERANCE_MM
) -> CaseScores:
    """The challenge's DSC and NSD of one prediction (label volumes, `spacing` in their axis order), EVAL
    L140-L158 and L495-L501: over the classes present in the ground truth, DSC per class and its mean; NSD
    at `tolerance_mm` (2 mm) per class and its mean, computed only when the mean DSC is above 0.2 and 0
    otherwise (then every class's `nsd_cvpr25` is 0, so their mean is still the case's figure)."""
    classes = [int(c) for c in np.unique(ground_truth) if c != 0]  # EVAL L142, L151: sorted, skip 0
    dice = {c: dice_cvpr25(ground_truth == c, prediction == c) for c in classes}
    mean_dice = float(np.mean([dice[c] for c in classes]))
    if mean_dice > NSD_MIN_DSC:  # EVAL L497
        nsd = {c: surface_dice_cvpr25(ground_truth == c, prediction == c, spacing, tolerance_mm) for c in classes}
        mean_nsd = float(np.mean([nsd[c] for c in classes]))
    else:
        nsd, mean_nsd = dict.fromkeys(classes, 0.0), 0.0  # EVAL L501
    return CaseScores(dice, nsd, mean_dice, mean_nsd)


def nsd_cvpr25(
    ground_truth: np.ndarray, prediction: np.ndarray, spacing, tolerance_mm: float = NSD_TOLERANCE_MM
) -> dict[int, float]:
    """The challenge's NSD per class of one prediction: `case_scores_cvpr25(...).nsd_cvpr25` (DeepMind's
    surface dice at 2 mm; every class 0 when the case's mean DSC <= 0.2)."""
    return case_scores_cvpr25(ground_truth, prediction, spacing, tolerance_mm).nsd_cvpr25


# SD L21-L277 (``neighbour_code_to_normals``, from the Medical Segmentation Decathlon's notebook / DeepMind's
# surface-distance, Apache-2.0): for each 2x2x2 neighbour code, the normals of its surfels, whose length is
# the surfel's area. Stored in eighths ("a,b,c" = (a/8, b/8, c/8); ";" between normals, "|" between codes);
# every entry of the official table is a multiple of 1/8, so the floats are the same.
_NORMALS_IN_EIGHTHS = (
    "0,0,0|1,1,1|-1,-1,1|-2,-2,0;2,2,0|1,-1,1|-2,0,-2;2,0,2|1,-1,1;-1,-1,1|4,0,0;2,2,2;1,1,1|-1,1,1|"
    "1,1,1;-1,1,1|-2,0,2;-2,0,2|4,0,0;-2,-2,2;-1,-1,1|2,-2,0;2,-2,0|4,0,0;2,-2,2;-1,1,-1|-4,0,0;-2,2,2;-1,1,1|"
    "4,0,0;4,0,0|1,-1,-1|0,-2,-2;0,2,2|-1,-1,1;1,-1,-1|0,-4,0;2,2,2;1,1,1|1,-1,1;1,-1,-1|"
    "0,0,-4;2,2,2;-1,-1,-1|-1,-1,1;1,-1,1;1,-1,-1|-1,-1,-1;-2,-2,-2;2,2,2;1,1,1|-1,1,1;1,-1,-1|"
    "0,-2,-2;0,2,2;-1,1,1|-2,0,2;-2,0,2;1,-1,-1|1,1,1;3,3,3;0,-2,2;-2,0,2|1,-1,-1;2,-2,0;2,-2,0|"
    "3,3,3;0,2,-2;-1,-1,-1;-2,2,0|-4,0,0;-1,-1,-1;-2,-2,-2;1,1,1|-4,0,0;-1,-1,-1;-2,-2,-2|1,-1,1|1,1,1;1,-1,1|"
    "0,-2,2;0,2,-2|0,-4,0;1,1,-1;2,2,-2|1,-1,1;1,-1,1|1,-1,1;-2,0,-2;2,0,2|0,-2,2;0,2,-2;1,-1,1|"
    "-3,-3,3;0,2,2;1,1,-1;-2,0,-2|-1,1,1;1,-1,1|1,1,1;1,-1,1;-1,1,1|0,0,4;-2,-2,2;-1,-1,1|"
    "2,2,-2;2,2,-2;1,1,-1;-1,-1,1|1,-1,1;2,-2,0;2,-2,0|4,0,0;2,-2,2;-1,1,-1;1,-1,1|"
    "0,2,-2;3,-3,-3;-1,1,1;2,2,0|-4,0,0;-2,-2,2;-1,-1,1|2,-2,0;-2,2,0|0,4,0;-2,2,2;1,-1,-1|"
    "0,4,0;1,-1,1;-2,2,-2|0,4,0;0,-4,0|2,-2,0;-2,2,0;1,-1,1|-3,-3,-3;-2,0,2;-1,-1,-1;-2,2,0|"
    "1,1,1;0,-4,0;-2,-2,-2;-1,-1,-1|0,-4,0;-2,-2,-2;-1,-1,-1|-1,1,1;2,-2,0;-2,2,0|"
    "0,4,0;2,2,-2;-1,-1,1;-1,-1,1|-3,3,-3;-2,-2,0;-1,1,-1;-2,0,2|0,4,0;2,2,-2;-1,-1,1|"
    "2,-2,0;-2,2,0;2,-2,0;2,-2,0|-2,-2,0;-2,-2,0;-1,-1,1|1,1,1;-2,-2,0;-2,-2,0|-2,-2,0;-2,-2,0|-1,-1,1|"
    "1,1,1;-1,-1,1|-1,-1,1;-1,-1,1|-1,-1,1;-2,-2,0;2,2,0|0,-2,2;0,-2,2|0,0,4;2,-2,2;1,-1,1|"
    "0,-2,2;0,-2,2;-1,-1,1|3,-3,3;0,-2,-2;-1,1,-1;2,2,0|-1,-1,1;-1,1,1|1,1,1;-1,-1,1;-1,1,1|"
    "-1,-1,1;-2,0,2;-2,0,2|4,0,0;-2,-2,2;-1,-1,1;-1,-1,1|0,4,0;-2,2,-2;1,-1,1|-2,2,-2;-2,2,-2;-1,1,-1;-1,1,-1|"
    "-2,0,-2;3,-3,-3;0,2,-2;-1,1,1|4,0,0;-2,2,-2;1,-1,1|-2,0,2;2,0,-2|0,0,4;-2,2,2;-1,1,1|"
    "-1,-1,1;-2,0,2;2,0,-2|-2,0,-2;-3,3,3;-2,-2,0;-1,1,1|0,0,-4;2,2,-2;-1,-1,1|0,0,4;0,0,4|"
    "1,1,1;1,1,1;2,2,2;0,0,4|1,1,1;2,2,2;0,0,4|-2,0,2;2,0,-2;-1,1,1|0,0,4;2,-2,2;1,-1,1;1,-1,1|"
    "-2,0,2;-2,0,2;-2,0,2;2,0,-2|1,-1,1;2,0,2;2,0,2|2,0,2;-3,-3,3;-2,2,0;-1,-1,1|0,0,4;2,-2,2;1,-1,1|"
    "1,1,1;2,0,2;2,0,2|2,0,2;2,0,2|-1,-1,1;1,-1,1|1,1,1;-1,-1,1;1,-1,1|-1,-1,1;0,-2,2;0,2,-2|"
    "0,-4,0;1,1,-1;2,2,-2;-1,-1,1|0,-2,2;0,-2,2;1,-1,1|0,0,4;2,-2,2;1,-1,1;1,-1,1|0,-2,2;0,-2,2;0,-2,2;0,2,-2|"
    "0,2,2;0,2,2;1,-1,-1|-1,1,1;1,-1,1;-1,-1,1|-1,1,1;1,-1,1;-1,-1,1;1,1,1|0,0,4;-2,-2,2;-1,-1,1;-1,-1,1|"
    "1,1,1;1,-1,1;1,-1,-1|0,4,0;-2,2,-2;1,-1,1;1,-1,1|1,1,1;-1,-1,1;1,-1,-1|0,-2,-2;0,2,2;1,1,1|1,1,1;1,-1,-1|"
    "4,0,0;2,-2,-2;1,-1,-1|-2,2,2;-1,1,1;-2,2,2;1,-1,-1|3,-3,3;0,2,2;-1,1,-1;-2,0,2|0,-4,0;-2,2,2;-1,1,1|"
    "-3,-3,3;2,-2,0;0,2,2;-1,-1,1|-1,1,1;-2,2,2;0,0,4|1,1,1;0,2,2;0,2,2|0,2,2;0,2,2|4,0,0;2,2,2;1,1,1;1,1,1|"
    "1,-1,1;-1,-1,1;1,1,1|-2,0,-2;2,0,2;1,1,1|1,1,1;1,-1,1|-2,-2,0;2,2,0;1,1,1|1,1,1;-1,-1,1|1,1,1;1,1,1|"
    "1,1,1|1,1,1|1,1,1;1,1,1|1,1,1;-1,-1,1|-2,-2,0;2,2,0;1,1,1|1,1,1;1,-1,1|-2,0,-2;2,0,2;1,1,1|"
    "1,-1,1;-1,-1,1;1,1,1|4,0,0;2,2,2;1,1,1;1,1,1|0,2,2;0,2,2|1,1,1;0,2,2;0,2,2|-1,1,1;-2,2,2;0,0,4|"
    "-3,-3,3;2,-2,0;0,2,2;-1,-1,1|0,-4,0;-2,2,2;-1,1,1|3,-3,3;0,2,2;-1,1,-1;-2,0,2|"
    "-2,2,2;-1,1,1;-2,2,2;1,-1,-1|4,0,0;2,-2,-2;1,-1,-1|1,1,1;1,-1,-1|0,-2,-2;0,2,2;1,1,1|"
    "1,1,1;-1,-1,1;1,-1,-1|0,4,0;-2,2,-2;1,-1,1;1,-1,1|1,1,1;1,-1,1;1,-1,-1|0,0,4;-2,-2,2;-1,-1,1;-1,-1,1|"
    "-1,1,1;1,-1,1;-1,-1,1;1,1,1|-1,1,1;1,-1,1;-1,-1,1|0,2,2;0,2,2;1,-1,-1|0,-2,-2;0,2,2;0,2,2;0,2,2|"
    "0,0,4;2,-2,2;1,-1,1;1,-1,1|0,-2,2;0,-2,2;1,-1,1|0,-4,0;1,1,-1;2,2,-2;-1,-1,1|-1,-1,1;0,-2,2;0,2,-2|"
    "1,1,1;-1,-1,1;1,-1,1|-1,-1,1;1,-1,1|2,0,2;2,0,2|1,1,1;2,0,2;2,0,2|0,0,4;2,-2,2;1,-1,1|"
    "2,0,2;-3,-3,3;-2,2,0;-1,-1,1|1,-1,1;2,0,2;2,0,2|-2,0,-2;2,0,2;2,0,2;2,0,2|0,0,4;2,-2,2;1,-1,1;1,-1,1|"
    "-2,0,2;2,0,-2;-1,1,1|1,1,1;2,2,2;0,0,4|1,1,1;1,1,1;2,2,2;0,0,4|0,0,4;0,0,4|0,0,-4;2,2,-2;-1,-1,1|"
    "-2,0,-2;-3,3,3;-2,-2,0;-1,1,1|-1,-1,1;-2,0,2;2,0,-2|0,0,4;-2,2,2;-1,1,1|-2,0,2;2,0,-2|"
    "4,0,0;-2,2,-2;1,-1,1|-2,0,-2;3,-3,-3;0,2,-2;-1,1,1|-2,2,-2;-2,2,-2;-1,1,-1;-1,1,-1|0,4,0;-2,2,-2;1,-1,1|"
    "4,0,0;-2,-2,2;-1,-1,1;-1,-1,1|-1,-1,1;-2,0,2;-2,0,2|1,1,1;-1,-1,1;-1,1,1|-1,-1,1;-1,1,1|"
    "3,-3,3;0,-2,-2;-1,1,-1;2,2,0|0,-2,2;0,-2,2;-1,-1,1|0,0,4;2,-2,2;1,-1,1|0,-2,2;0,-2,2|"
    "-1,-1,1;-2,-2,0;2,2,0|-1,-1,1;-1,-1,1|1,1,1;-1,-1,1|-1,-1,1|-2,-2,0;-2,-2,0|1,1,1;-2,-2,0;-2,-2,0|"
    "-2,-2,0;-2,-2,0;-1,-1,1|-2,-2,0;-2,-2,0;-2,-2,0;2,2,0|0,4,0;2,2,-2;-1,-1,1|"
    "-3,3,-3;-2,-2,0;-1,1,-1;-2,0,2|0,4,0;2,2,-2;-1,-1,1;-1,-1,1|-1,1,1;2,-2,0;-2,2,0|"
    "0,-4,0;-2,-2,-2;-1,-1,-1|1,1,1;0,-4,0;-2,-2,-2;-1,-1,-1|-3,-3,-3;-2,0,2;-1,-1,-1;-2,2,0|"
    "2,-2,0;-2,2,0;1,-1,1|0,4,0;0,-4,0|0,4,0;1,-1,1;-2,2,-2|0,4,0;-2,2,2;1,-1,-1|2,-2,0;-2,2,0|"
    "-4,0,0;-2,-2,2;-1,-1,1|0,2,-2;3,-3,-3;-1,1,1;2,2,0|4,0,0;2,-2,2;-1,1,-1;1,-1,1|1,-1,1;2,-2,0;2,-2,0|"
    "2,2,-2;2,2,-2;1,1,-1;-1,-1,1|0,0,4;-2,-2,2;-1,-1,1|1,1,1;1,-1,1;-1,1,1|-1,1,1;1,-1,1|"
    "-3,-3,3;0,2,2;1,1,-1;-2,0,-2|0,-2,2;0,2,-2;1,-1,1|1,-1,1;-2,0,-2;2,0,2|1,-1,1;1,-1,1|"
    "0,-4,0;1,1,-1;2,2,-2|0,-2,2;0,2,-2|1,1,1;1,-1,1|1,-1,1|-4,0,0;-1,-1,-1;-2,-2,-2|"
    "-4,0,0;-1,-1,-1;-2,-2,-2;1,1,1|3,3,3;0,2,-2;-1,-1,-1;-2,2,0|1,-1,-1;2,-2,0;2,-2,0|"
    "1,1,1;3,3,3;0,-2,2;-2,0,2|-2,0,2;-2,0,2;1,-1,-1|0,-2,-2;0,2,2;-1,1,1|-1,1,1;1,-1,-1|"
    "-1,-1,-1;-2,-2,-2;2,2,2;1,1,1|-1,-1,1;1,-1,1;1,-1,-1|0,0,-4;2,2,2;-1,-1,-1|1,-1,1;1,-1,-1|"
    "0,-4,0;2,2,2;1,1,1|-1,-1,1;1,-1,-1|0,-2,-2;0,2,2|1,-1,-1|4,0,0;4,0,0|-4,0,0;-2,2,2;-1,1,1|"
    "4,0,0;2,-2,2;-1,1,-1|2,-2,0;2,-2,0|4,0,0;-2,-2,2;-1,-1,1|-2,0,2;-2,0,2|1,1,1;-1,1,1|-1,1,1|"
    "4,0,0;2,2,2;1,1,1|1,-1,1;-1,-1,1|-2,0,-2;2,0,2|1,-1,1|-2,-2,0;2,2,0|-1,-1,1|1,1,1|0,0,0"
)
_NEIGHBOUR_CODE_TO_NORMALS: tuple[tuple[tuple[float, float, float], ...], ...] = tuple(
    tuple(tuple(int(v) / 8 for v in normal.split(",")) for normal in code.split(";"))
    for code in "".join(_NORMALS_IN_EIGHTHS).split("|")
)
