"""Evaluate: one metric implementation for every method (SAM runs and nnU-Net alike).

Dice, NSD at a tolerance in mm and HD95 in mm, per label per case, in physical spacing, on the whole 3D
volume, so slices without ground truth count. Surfaces and distances are computed as MONAI 1.6's
`compute_surface_dice` / `compute_hausdorff_distance(percentile=95)` compute them, with NumPy and SciPy
only (no torch import in an evaluate job); the tests hold them bit for bit against MONAI and
cross-check them against MedPy and an independent SciPy implementation.

Rules for empty masks (per label and case):
- ground truth and prediction both empty: dice = 1, nsd = 1, hd95 = 0 (a correct "absent").
- exactly one of them empty: dice = 0, nsd = 0, hd95 = the image diagonal in mm (the worst possible
  distance), so a missed or hallucinated structure never improves an average.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from samstudy.cases import eval_cases, load_dataset_table, read_case
from samstudy.io import atomic_path, read_json, write_json, write_parquet
from samstudy.paths import Layout

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "dataset",
    "case_id",
    "label",
    "label_value",
    "run",
    "method",
    "model",
    "adaptation",
    "protocol",
    "prompted",
    "prompt_source",
    "dice",
    "nsd",
    "hd95",
    "gt_voxels",
    "pred_voxels",
]
# The Dice-vs-clicks table: the same columns plus the number of correction clicks given so far.
CLICK_COLUMNS = [*METRIC_COLUMNS[:11], "clicks", *METRIC_COLUMNS[11:]]


def binary_metrics(pred: np.ndarray, gt: np.ndarray, spacing_zyx, tolerance_mm: float) -> dict[str, float]:
    """Dice, NSD@tolerance and HD95 (mm) of two binary arrays with the given voxel spacing."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    if n_pred == 0 or n_gt == 0:
        diagonal = float(np.linalg.norm(np.array(gt.shape) * np.asarray(spacing_zyx)))
        return {"dice": 0.0, "nsd": 0.0, "hd95": diagonal}
    dice = 2.0 * float(np.logical_and(pred, gt).sum()) / (n_pred + n_gt)
    pred_to_gt, gt_to_pred = surface_distances(pred, gt, spacing_zyx)
    # NSD: the share of both surfaces within the tolerance, in float32 as MONAI returns it
    tolerance = np.float32(tolerance_mm)
    within = int((pred_to_gt <= tolerance).sum() + (gt_to_pred <= tolerance).sum())
    nsd = float(np.float32(within) / np.float32(pred_to_gt.size + gt_to_pred.size))
    # HD95: the larger of the two directed 95th percentiles
    hd95 = float(max(_percentile_95(pred_to_gt), _percentile_95(gt_to_pred)))
    return {"dice": dice, "nsd": nsd, "hd95": hd95}


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm, float32) from each surface voxel of `pred` to the nearest surface voxel of `gt`, and
    back. As MONAI: both masks cropped to their union's bounding box plus one voxel, a surface voxel is a
    mask voxel that a binary erosion (scipy's default: face neighbours, zero border) removes, nearest
    neighbours from a KD-tree (leafsize 32) over coordinates scaled by the spacing, taken in the cropped
    frame (the same floating-point values)."""
    from scipy.spatial import KDTree

    union = pred | gt
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    surfaces = []
    for mask in (pred, gt):
        cropped = np.pad(mask[tuple(box)], 1)  # the one-voxel margin, outside the image too
        surfaces.append(cropped & ~_eroded(cropped))
    scale = np.asarray(spacing, dtype=np.float64)
    coords = [np.argwhere(s).astype(np.float64) * scale for s in surfaces]
    pred_to_gt = KDTree(coords[1], leafsize=32).query(coords[0], k=1)[0].astype(np.float32)
    gt_to_pred = KDTree(coords[0], leafsize=32).query(coords[1], k=1)[0].astype(np.float32)
    return pred_to_gt, gt_to_pred


def _eroded(mask: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.binary_erosion(mask)` of a mask whose outer layer is empty: a voxel stays if it and its
    2 * ndim face neighbours are set (NumPy only: scipy.ndimage costs a job ~0.2 s to import)."""
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    kept = mask[inner].copy()
    for axis in range(mask.ndim):
        for step in (-1, 1):
            shifted = list(inner)
            shifted[axis] = slice(1 + step, mask.shape[axis] - 1 + step)
            kept &= mask[tuple(shifted)]
    out = np.zeros_like(mask)
    out[inner] = kept
    return out


def _percentile_95(distances: np.ndarray) -> np.float32:
    """The 95th percentile of float32 distances exactly as `torch.quantile(d, 0.95)` gives it on the CPU
    (what MONAI's HD95 calls): rank q * (n - 1) with q rounded to float32, then torch's lerp in float32
    with a fused multiply-add (low weights from the value below, high weights from the value above)."""
    ordered = np.sort(distances)
    rank = float(np.float32(0.95)) * (ordered.size - 1)
    below, above = ordered[int(rank)], ordered[int(np.ceil(rank))]
    weight = np.float32(rank - int(rank))
    step = np.float32(above - below)
    if weight < 0.5:
        exact = Fraction(float(below)) + Fraction(float(weight)) * Fraction(float(step))
    else:
        exact = Fraction(float(above)) - Fraction(float(step)) * Fraction(float(np.float32(1) - weight))
    return _round_to_float32(exact)


def _round_to_float32(exact: Fraction) -> np.float32:
    """The float32 nearest to an exact rational (ties to even): one rounding, as a fused multiply-add."""
    guess = np.float32(float(exact))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    errors = [abs(Fraction(float(c)) - exact) for c in candidates]
    best = min(errors)
    ties = [c for c, e in zip(candidates, errors, strict=True) if e == best]
    return min(ties, key=lambda c: int(c.view(np.uint32)) & 1)  # the even mantissa of a tie


def _same_geometry(pred: sitk.Image, ref: sitk.Image) -> str | None:
    if pred.GetSize() != ref.GetSize()[:3]:
        return f"size {pred.GetSize()} differs from the image's {ref.GetSize()[:3]}"
    for what, a, b in (("spacing", pred.GetSpacing(), ref.GetSpacing()), ("origin", pred.GetOrigin(), ref.GetOrigin())):
        if not np.allclose(a, b[:3], atol=1e-3 * max(1.0, float(np.max(np.abs(b))))):
            return f"{what} {a} differs from the image's {b[:3]}"
    ref_direction = np.asarray(ref.GetDirection()).reshape(ref.GetDimension(), -1)[:3, :3]
    pred_direction = np.asarray(pred.GetDirection()).reshape(pred.GetDimension(), -1)  # 2D images: 2x2
    if pred_direction.shape != ref_direction.shape or not np.allclose(pred_direction, ref_direction, atol=1e-4):
        return f"direction {pred.GetDirection()} differs from the image's {tuple(ref_direction.ravel())}"
    return None


def nsd_tolerances(setting: float | dict, labels: dict) -> dict[int, float]:
    """NSD tolerance in mm per label value, from `evaluate.nsd_tolerance_mm`.

    A number applies to every label. A mapping gives a tolerance per label, keyed by the study label
    name or its value (as a string or a number), with an optional `default` for the labels not named;
    a label left without a tolerance is an error. The mapping is study-wide, so a key may name a label
    of another dataset: keys naming no label of this one are only logged (a typo shows there).
    """
    if not isinstance(setting, dict):
        return {int(v): float(setting) for v in labels}
    named = {str(k): float(v) for k, v in setting.items()}
    known = {str(v) for v in labels} | {str(n) for n in labels.values()} | {"default"}
    unknown = sorted(set(named) - known)
    if unknown:
        log.warning("evaluate.nsd_tolerance_mm: %s name no label of this dataset (labels: %s)", unknown, labels)
    out = {}
    for value, name in labels.items():
        for key in (str(name), str(value), "default"):
            if key in named:
                out[int(value)] = named[key]
                break
        else:
            raise ValueError(
                f"evaluate.nsd_tolerance_mm: no tolerance for label '{name}' (value {value}); name it or give a default"
            )
    return out


def score_case(
    pred_img: sitk.Image, image: sitk.Image, gt: np.ndarray, labels: dict, tolerances: dict[int, float], path: str
) -> list[dict]:
    """Metrics rows (label, label_value, dice, nsd, hd95, gt_voxels, pred_voxels) of one prediction."""
    problem = _same_geometry(pred_img, image)
    if problem:
        raise ValueError(f"{path}: prediction geometry does not match the case: {problem}")
    pred = sitk.GetArrayFromImage(pred_img)
    spacing_zyx = tuple(reversed(image.GetSpacing()[:3]))
    rows = []
    for value, name in labels.items():
        value = int(value)
        m = binary_metrics(pred == value, gt == value, spacing_zyx, tolerances[value])
        rows.append(
            {
                "label": name,
                "label_value": value,
                **m,
                "gt_voxels": int((gt == value).sum()),
                "pred_voxels": int((pred == value).sum()),
            }
        )
    return rows


def evaluate_run(
    layout: Layout, dataset: str, run: str, run_info: dict, settings: dict, threads: int = 1
) -> pd.DataFrame:
    """Score every evaluation case of one run on one dataset; writes metrics/<run>/<dataset>.parquet.
    `threads` cases are scored at a time, in worker processes; the rows are the same in any case."""
    table, info = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    tolerances = nsd_tolerances(settings["nsd_tolerance_mm"], info["labels"])
    cases = eval_cases(layout, dataset)
    not_planned = layout.prediction_not_planned(run, dataset)
    if Path(not_planned).is_file():  # an nnU-Net configuration nnU-Net did not plan for this dataset
        log.warning("%s/%s: %s", run, dataset, read_json(not_planned)["reason"])
        cases = []
    jobs = [(rows.loc[c].to_dict(), info, tolerances, [(None, layout.prediction(run, dataset, c))]) for c in cases]
    out = []
    for case, scored in zip(cases, _score_cases(jobs, threads, f"evaluate {run}/{dataset}"), strict=True):
        for _, row in scored:
            out.append({"dataset": dataset, "case_id": case, "run": run, **run_info, **row})
    frame = pd.DataFrame(out, columns=METRIC_COLUMNS)
    write_parquet(layout.run_metrics(run, dataset), frame)
    return frame


def evaluate_clicks(
    layout: Layout, dataset: str, run: str, run_info: dict, settings: dict, threads: int = 1
) -> pd.DataFrame:
    """Score a `clicks` run's volume after every click (0 = the starting prompt) of every evaluation case,
    with the same code, spacing and rules as `evaluate_run`; writes metrics/<run>/<dataset>.clicks.parquet."""
    table, info = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    tolerances = nsd_tolerances(settings["nsd_tolerance_mm"], info["labels"])
    cases = eval_cases(layout, dataset)
    jobs = []
    for case in cases:
        record_path = layout.prompt_record(run, dataset, case)
        try:
            record = read_json(record_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{record_path}: no click record; was run {run} predicted with clicks?") from err
        paths = [(k, layout.click_prediction(run, dataset, case, k)) for k in range(record["rounds"] + 1)]
        jobs.append((rows.loc[case].to_dict(), info, tolerances, paths))
    out = []
    for case, scored in zip(cases, _score_cases(jobs, threads, f"evaluate clicks {run}/{dataset}"), strict=True):
        for clicks, row in scored:
            out.append({"dataset": dataset, "case_id": case, "run": run, **run_info, "clicks": clicks, **row})
    frame = pd.DataFrame(out, columns=CLICK_COLUMNS)
    write_parquet(layout.run_click_metrics(run, dataset), frame)
    return frame


# What starting a worker process costs (a fresh interpreter importing this module, ~0.5-1 s on 2 cores):
# cases go to workers only when scoring the rest here would take longer than that.
WORKER_START_S = 1.0


def _score_cases(jobs: list[tuple], threads: int, desc: str) -> list[list[tuple]]:
    """`_score_one` of every job, in order. The first case is scored here; the rest in up to `threads`
    worker processes when they would take longer than starting them (spawned: a fresh interpreter, not a
    fork of a parent that may hold library thread pools), else here too."""
    if not jobs:
        return []
    import scipy.spatial  # noqa: F401  (imported by the first case otherwise, and counted as its cost)

    start = time.perf_counter()
    scored = [_score_one(jobs[0])]
    per_case = time.perf_counter() - start
    rest = jobs[1:]
    workers = max(1, min(int(threads), len(rest)))
    if workers == 1 or per_case * len(rest) <= WORKER_START_S:
        return scored + [_score_one(job) for job in tqdm(rest, desc=desc, unit="case")]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread_each) as pool:
        return scored + list(tqdm(pool.map(_score_one, rest), total=len(rest), desc=desc, unit="case"))


def _one_thread_each() -> None:
    """Worker processes share the job's cores: one ITK thread each."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _score_one(job: tuple) -> list[tuple]:
    """(key, metrics row) of every prediction of one case: job = (manifest row, dataset info, tolerances,
    [(key, prediction path), ...]); the case is read once."""
    row, info, tolerances, predictions = job
    image, gt = read_case(row, info)
    return [
        (key, scored)
        for key, path in predictions
        for scored in score_case(sitk.ReadImage(path), image, gt, info["labels"], tolerances, path)
    ]


def bootstrap_ci(values: np.ndarray, seed: int, n: int = 1000, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n, values.size))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def summarize(layout: Layout, parts: list[tuple[str, str]], seed: int, click_parts: list[tuple[str, str]] = ()) -> dict:
    """Merge per-run metrics into metrics.parquet and summary.json (DVC metrics), and the `clicks` runs'
    per-click metrics into dice_vs_clicks.parquet; write the DVC plot CSVs."""
    frames = [pd.read_parquet(layout.run_metrics(run, dataset)) for run, dataset in parts]
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=METRIC_COLUMNS)
    write_parquet(layout.metrics(), metrics)
    click_frames = [pd.read_parquet(layout.run_click_metrics(run, dataset)) for run, dataset in click_parts]
    clicks = pd.concat(click_frames, ignore_index=True) if click_frames else pd.DataFrame(columns=CLICK_COLUMNS)
    write_parquet(layout.click_metrics(), clicks)
    summary: dict = {}
    for (run, dataset), group in metrics.groupby(["run", "dataset"], sort=True):
        entry = {
            "prompted": bool(group["prompted"].iloc[0]),
            "prompt_source": str(group["prompt_source"].iloc[0]),
            "n_cases": int(group["case_id"].nunique()),
        }
        for metric in ("dice", "nsd", "hd95"):
            entry[f"mean_{metric}"] = float(group[metric].mean())
        lo, hi = bootstrap_ci(group.groupby("case_id")["dice"].mean().to_numpy(), seed)
        entry["mean_dice_ci95"] = [lo, hi]
        entry["too_few_cases"] = entry["n_cases"] < MIN_CASES_FOR_INFERENCE
        entry["dice_per_label"] = {k: float(v) for k, v in group.groupby("label")["dice"].mean().items()}
        summary.setdefault(run, {})[dataset] = entry
    for (run, dataset), group in clicks.groupby(["run", "dataset"], sort=True):
        per_click = group.groupby("clicks")["dice"].mean()
        summary.setdefault(run, {}).setdefault(dataset, {})["mean_dice_after_clicks"] = {
            str(int(k)): float(v) for k, v in per_click.items()
        }
    tests = paired_tests(metrics)
    write_parquet(layout.paired_tests(), tests)
    for row in tests.to_dict("records"):
        summary[row["run"]][row["dataset"]]["vs_baseline"] = {  # JSON has no NaN: no test is null
            k: (None if isinstance(row[k], float) and not np.isfinite(row[k]) else row[k])
            for k in ("comparison", "baseline", "mean_diff", "p", "p_adj")
        }
    write_json(layout.summary(), summary)
    # DVC plot data: mean Dice per run and label (one row each), beside the metrics
    per_run = metrics.groupby(["run", "dataset", "label"], sort=True)["dice"].mean().reset_index()
    with atomic_path(layout.dice_plot()) as tmp:
        per_run.to_csv(tmp, index=False)
    with atomic_path(layout.clicks_plot()) as tmp:
        dice_vs_clicks_curve(clicks).to_csv(tmp, index=False)
    return summary


PAIRED_COLUMNS = [
    "dataset",
    "comparison",
    "run",
    "baseline",
    "n_cases",
    "mean_dice",
    "baseline_dice",
    "mean_diff",
    "p",
    "p_adj",
]
# Fewer test cases than this: no confidence interval or p-value is shown (the report says "too few cases").
MIN_CASES_FOR_INFERENCE = 5


def comparison_of(prompt_source: str) -> str:
    """`oracle` for runs whose prompts come from the ground truth, `automatic` for the others (nnU-Net,
    prompts derived from another run, prompt-free): the two are never compared with each other."""
    return "oracle" if prompt_source == "ground_truth" else "automatic"


def baseline_run(runs: list[str]) -> str | None:
    """The automatic baseline of a dataset: nnU-Net's selected model if the study has it, else its first
    (plain) nnU-Net run."""
    nnunet = sorted(r for r in runs if r.startswith("nnunet_") and not r.startswith("nnunet_prompted"))
    return "nnunet_best" if "nnunet_best" in nnunet else (nnunet[0] if nnunet else None)


def oracle_baseline_run(runs: list[str], infos: dict[str, dict]) -> str | None:
    """The oracle baseline of a dataset: nnU-Net given the same boxes (`nnunet_prompted_*`) if the study
    has it, else zero-shot SAM with the box protocol (so adaptations are tested against zero-shot)."""
    prompted = sorted(r for r in runs if r.startswith("nnunet_prompted"))
    if prompted:
        return prompted[0]
    zero_shot = sorted(r for r in runs if infos[r]["adaptation"] == "none" and infos[r]["protocol"] == "box")
    return zero_shot[0] if zero_shot else None


def paired_tests(metrics: pd.DataFrame) -> pd.DataFrame:
    """Within each comparison (automatic, oracle) of each dataset, every run against the comparison's
    baseline (`baseline_run`, `oracle_baseline_run`): two-sided Wilcoxon signed-rank test on per-case mean
    Dice (paired by case; scipy), p-values adjusted per dataset and comparison with Benjamini-Hochberg
    (scipy's false_discovery_control). Identical scores give p = 1; fewer than two shared cases give no
    test."""
    from scipy.stats import false_discovery_control, wilcoxon

    rows = []
    for dataset, group in metrics.groupby("dataset", sort=True):
        infos = {
            r: {"adaptation": g["adaptation"].iloc[0], "protocol": g["protocol"].iloc[0]}
            for r, g in group.groupby("run")
        }
        sources = group.groupby("run")["prompt_source"].first()
        per_case = group.groupby(["run", "case_id"])["dice"].mean().unstack("case_id")
        for comparison in ("automatic", "oracle"):
            runs = sorted(r for r in per_case.index if comparison_of(sources[r]) == comparison)
            if comparison == "automatic":
                base = baseline_run(runs)
            else:
                base = oracle_baseline_run(runs, infos)
            if base is None:
                continue
            for run in sorted(set(runs) - {base}):
                pair = per_case.loc[[run, base]].dropna(axis=1)
                diff = pair.loc[run] - pair.loc[base]
                if pair.shape[1] < 2:
                    p = float("nan")
                elif np.allclose(diff, 0):
                    p = 1.0
                else:
                    p = float(wilcoxon(pair.loc[run], pair.loc[base]).pvalue)
                rows.append(
                    {
                        "dataset": dataset,
                        "comparison": comparison,
                        "run": run,
                        "baseline": base,
                        "n_cases": int(pair.shape[1]),
                        "mean_dice": float(pair.loc[run].mean()),
                        "baseline_dice": float(pair.loc[base].mean()),
                        "mean_diff": float(diff.mean()),
                        "p": p,
                    }
                )
    tests = pd.DataFrame(rows, columns=PAIRED_COLUMNS[:-1])
    tests["p_adj"] = np.nan
    for _, idx in tests.groupby(["dataset", "comparison"]).groups.items():
        valid = [i for i in idx if np.isfinite(tests.at[i, "p"])]
        if valid:
            tests.loc[valid, "p_adj"] = false_discovery_control(tests.loc[valid, "p"].to_numpy(), method="bh")
    return tests[PAIRED_COLUMNS]


def dice_vs_clicks_curve(clicks: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice (over cases and labels) per run, dataset and click count; `series` = run/dataset."""
    columns = ["series", "run", "dataset", "clicks", "dice", "nsd", "hd95"]
    if clicks.empty:
        return pd.DataFrame(columns=columns)
    curve = clicks.groupby(["run", "dataset", "clicks"], sort=True)[["dice", "nsd", "hd95"]].mean().reset_index()
    curve["series"] = curve["run"] + "/" + curve["dataset"]
    return curve[columns]
