"""Evaluate: one metric implementation for every method (SAM runs and nnU-Net alike).

Dice, NSD at a tolerance in mm and HD95 in mm, per label per case, in physical spacing, on the whole 3D
volume, so slices without ground truth count. Distances come from MONAI (maintained; cross-checked in
the tests against MedPy and an independent SciPy implementation).

Rules for empty masks (per label and case):
- ground truth and prediction both empty: dice = 1, nsd = 1, hd95 = 0 (a correct "absent").
- exactly one of them empty: dice = 0, nsd = 0, hd95 = the image diagonal in mm (the worst possible
  distance), so a missed or hallucinated structure never improves an average.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm import tqdm

from samstudy.ingest import load_dataset_table, read_case
from samstudy.io import atomic_path, read_json, write_json, write_parquet
from samstudy.paths import Layout
from samstudy.splits import eval_cases

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
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    pred, gt = pred.astype(bool), gt.astype(bool)
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    if n_pred == 0 or n_gt == 0:
        diagonal = float(np.linalg.norm(np.array(gt.shape) * np.asarray(spacing_zyx)))
        return {"dice": 0.0, "nsd": 0.0, "hd95": diagonal}
    dice = 2.0 * float(np.logical_and(pred, gt).sum()) / (n_pred + n_gt)
    p = torch.from_numpy(pred)[None, None].float()
    g = torch.from_numpy(gt)[None, None].float()
    spacing = [float(s) for s in spacing_zyx]
    nsd = float(compute_surface_dice(p, g, [tolerance_mm], include_background=True, spacing=spacing)[0, 0])
    hd95 = float(compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)[0, 0])
    return {"dice": dice, "nsd": nsd, "hd95": hd95}


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


def evaluate_run(layout: Layout, dataset: str, run: str, run_info: dict, settings: dict) -> pd.DataFrame:
    """Score every evaluation case of one run on one dataset; writes metrics/<run>/<dataset>.parquet."""
    table, info = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    tolerances = nsd_tolerances(settings["nsd_tolerance_mm"], info["labels"])
    out = []
    cases = eval_cases(layout, dataset)
    not_planned = layout.prediction_not_planned(run, dataset)
    if Path(not_planned).is_file():  # an nnU-Net configuration nnU-Net did not plan for this dataset
        log.warning("%s/%s: %s", run, dataset, read_json(not_planned)["reason"])
        cases = []
    for case in tqdm(cases, desc=f"evaluate {run}/{dataset}", unit="case"):
        image, gt = read_case(rows.loc[case].to_dict(), info)
        path = layout.prediction(run, dataset, case)
        for row in score_case(sitk.ReadImage(path), image, gt, info["labels"], tolerances, path):
            out.append({"dataset": dataset, "case_id": case, "run": run, **run_info, **row})
    frame = pd.DataFrame(out, columns=METRIC_COLUMNS)
    write_parquet(layout.run_metrics(run, dataset), frame)
    return frame


def evaluate_clicks(layout: Layout, dataset: str, run: str, run_info: dict, settings: dict) -> pd.DataFrame:
    """Score a `clicks` run's volume after every click (0 = the starting prompt) of every evaluation case,
    with the same code, spacing and rules as `evaluate_run`; writes metrics/<run>/<dataset>.clicks.parquet."""
    table, info = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    tolerances = nsd_tolerances(settings["nsd_tolerance_mm"], info["labels"])
    out = []
    for case in tqdm(eval_cases(layout, dataset), desc=f"evaluate clicks {run}/{dataset}", unit="case"):
        image, gt = read_case(rows.loc[case].to_dict(), info)
        record_path = layout.prompt_record(run, dataset, case)
        try:
            record = read_json(record_path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{record_path}: no click record; was run {run} predicted with clicks?") from err
        for clicks in range(record["rounds"] + 1):
            path = layout.click_prediction(run, dataset, case, clicks)
            for row in score_case(sitk.ReadImage(path), image, gt, info["labels"], tolerances, path):
                out.append({"dataset": dataset, "case_id": case, "run": run, **run_info, "clicks": clicks, **row})
    frame = pd.DataFrame(out, columns=CLICK_COLUMNS)
    write_parquet(layout.run_click_metrics(run, dataset), frame)
    return frame


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
