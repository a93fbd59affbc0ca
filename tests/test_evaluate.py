import numpy as np
import pytest
from medpy.metric import binary as medpy
from scipy import ndimage

from samstudy.evaluate import binary_metrics, bootstrap_ci


def _cube(shape, start, size):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(s, s + size) for s in start)] = True
    return m


def test_offset_cubes_hand_computed():
    gt = _cube((20, 20, 20), (5, 5, 5), 6)
    pred = _cube((20, 20, 20), (5, 5, 7), 6)  # shifted 2 voxels along x
    m = binary_metrics(pred, gt, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert m["dice"] == pytest.approx(2 * 6 * 6 * 4 / (2 * 216))
    assert m["hd95"] == pytest.approx(2.0)
    # with 2 mm spacing along x the same shift is 4 mm
    m2 = binary_metrics(pred, gt, (1.0, 1.0, 2.0), tolerance_mm=1.0)
    assert m2["hd95"] == pytest.approx(4.0)
    assert m2["dice"] == pytest.approx(m["dice"])
    assert 0 < m2["nsd"] < m["nsd"] < 1


def test_empty_rules():
    empty = np.zeros((4, 5, 6), dtype=bool)
    some = _cube((4, 5, 6), (1, 1, 1), 2)
    assert binary_metrics(empty, empty, (1, 1, 1), 1.0) == {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
    miss = binary_metrics(empty, some, (2.0, 1.0, 1.0), 1.0)
    extra = binary_metrics(some, empty, (2.0, 1.0, 1.0), 1.0)
    diagonal = float(np.sqrt(8**2 + 5**2 + 6**2))
    assert miss == extra == {"dice": 0.0, "nsd": 0.0, "hd95": pytest.approx(diagonal)}


def _surface(mask):
    return mask & ~ndimage.binary_erosion(mask)


def _reference_distances(pred, gt, spacing):
    """An independent implementation: Euclidean distance transforms of the surfaces (SciPy)."""
    sp, sg = _surface(pred), _surface(gt)
    to_gt = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
    return to_gt, to_pred


@pytest.mark.parametrize("seed", range(4))
def test_cross_check_against_medpy_and_scipy_on_random_anisotropic_masks(seed):
    rng = np.random.default_rng(seed)
    spacing = tuple(rng.uniform(0.5, 3.0, size=3))
    base = ndimage.gaussian_filter(rng.normal(size=(24, 28, 20)), 2.5)
    gt = base > 0.05
    pred = ndimage.binary_dilation(gt, iterations=1) ^ (rng.random(gt.shape) < 0.02)
    tol = 1.5
    m = binary_metrics(pred, gt, spacing, tol)
    assert m["dice"] == pytest.approx(medpy.dc(pred, gt), abs=1e-9)
    to_gt, to_pred = _reference_distances(pred, gt, spacing)
    # HD95: the larger of the two directed 95th percentiles (MONAI's definition)
    ref_hd95 = max(np.percentile(to_gt, 95), np.percentile(to_pred, 95))
    assert m["hd95"] == pytest.approx(ref_hd95, rel=0.05, abs=0.2)
    assert max(to_gt.max(), to_pred.max()) == pytest.approx(medpy.hd(pred, gt, voxelspacing=spacing), rel=1e-6)
    ref_nsd = ((to_gt <= tol).sum() + (to_pred <= tol).sum()) / (to_gt.size + to_pred.size)
    assert m["nsd"] == pytest.approx(ref_nsd, abs=0.03)


def test_bootstrap_ci_brackets_the_mean():
    values = np.random.default_rng(0).uniform(0.6, 0.9, size=30)
    lo, hi = bootstrap_ci(values, seed=1)
    assert lo < values.mean() < hi
    assert (lo, hi) == bootstrap_ci(values, seed=1)


def test_evaluate_run_scores_every_test_case_and_refuses_a_wrong_geometry(study):
    import SimpleITK as sitk

    from samstudy.cases import eval_cases, load_dataset_table
    from samstudy.evaluate import evaluate_run
    from samstudy.infer import write_prediction
    from samstudy.preprocess import load_preprocessed

    cfg, layout = study
    table, info = load_dataset_table(layout, "phantom")
    rows = table.set_index("case_id")
    cases = eval_cases(layout, "phantom")
    for case in cases:  # a perfect "prediction": the ground truth put back through the inverse mapping
        pre = load_preprocessed(layout, "phantom", case)
        write_prediction(
            layout.prediction("gt", "phantom", case), pre["labels"], int(pre["axis"]), rows.loc[case, "images"][0]
        )
    run_info = {"method": "gt", "model": "none", "adaptation": "none", "protocol": "none", "prompted": False}
    frame = evaluate_run(layout, "phantom", "gt", run_info, cfg["evaluate"])
    assert sorted(frame["case_id"].unique()) == sorted(cases)
    assert len(frame) == len(cases) * len(info["labels"])
    assert (frame["dice"] == 1.0).all() and (frame["hd95"] == 0.0).all()
    bad = sitk.ReadImage(layout.prediction("gt", "phantom", cases[0]))
    bad.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(bad, layout.prediction("gt", "phantom", cases[0]))
    with pytest.raises(ValueError, match="direction"):
        evaluate_run(layout, "phantom", "gt", run_info, cfg["evaluate"])


def test_nsd_tolerance_per_label_by_name_value_or_default():
    from samstudy.evaluate import nsd_tolerances

    labels = {1: "liver", 2: "spleen", 3: "kidney"}
    assert nsd_tolerances(2.0, labels) == {1: 2.0, 2: 2.0, 3: 2.0}
    assert nsd_tolerances({"liver": 1.0, "2": 3.0, "default": 2.5}, labels) == {1: 1.0, 2: 3.0, 3: 2.5}
    assert nsd_tolerances({3: 4.0, "liver": 1, "spleen": 2}, labels) == {1: 1.0, 2: 2.0, 3: 4.0}
    with pytest.raises(ValueError, match="no tolerance for label 'kidney'"):
        nsd_tolerances({"liver": 1.0, "spleen": 1.0}, labels)
    # the mapping is study-wide: a label of another dataset is not an error here
    assert nsd_tolerances({"lung": 1.0, "default": 1.5}, labels) == {1: 1.5, 2: 1.5, 3: 1.5}


def test_score_case_uses_each_labels_own_tolerance():
    import SimpleITK as sitk

    from samstudy.evaluate import score_case

    gt = np.zeros((20, 20, 30), dtype=np.uint8)
    gt[5:11, 5:11, 3:9] = 1
    gt[5:11, 5:11, 18:24] = 2
    pred = np.zeros_like(gt)
    pred[5:11, 5:11, 5:11] = 1  # both cubes shifted 2 voxels (2 mm) along x
    pred[5:11, 5:11, 20:26] = 2
    image = sitk.GetImageFromArray(np.zeros(gt.shape, dtype=np.int16))
    pred_img = sitk.GetImageFromArray(pred)
    rows = score_case(pred_img, image, gt, {1: "a", 2: "b"}, {1: 1.0, 2: 2.0}, "p.nii.gz")
    nsd = {r["label"]: r["nsd"] for r in rows}
    # every surface point is within 2 mm of the other surface, but not within 1 mm
    assert nsd["b"] == pytest.approx(1.0) and nsd["a"] < 0.9
    assert [r["dice"] for r in rows] == pytest.approx([2 * 6 * 6 * 4 / (2 * 216)] * 2)


def test_clicks_and_box3d_through_inference_evaluation_summary_and_report(study, tiny_model):
    import pandas as pd

    from samstudy.cases import eval_cases
    from samstudy.embed import embed_dataset
    from samstudy.evaluate import evaluate_clicks, evaluate_run, summarize
    from samstudy.infer import infer_dataset
    from samstudy.io import read_json
    from samstudy.prompts import make_prompts
    from samstudy.report import _clicks_section

    cfg, layout = study
    embed = {"slices": "needed", "slice_margin": 0, "batch_size": 2, "device": "cpu", "precision": "fp32"}
    embed_dataset(layout, "phantom", "litemedsam", {"type": "litemedsam"}, embed)
    settings = {"components": "union", "clicks": {"rounds": 2, "start": "box"}, "box3d": {"margin_px": 3}}
    method = {"model": "litemedsam", "adaptation": "none"}
    info = {
        "method": "zeroshot",
        "model": "litemedsam",
        "adaptation": "none",
        "prompted": True,
        "prompt_source": "ground_truth",
    }
    for protocol in ("clicks", "box3d"):
        make_prompts(layout, "phantom", protocol, settings, cfg["seed"])
        infer_dataset(layout, "phantom", "zeroshot", method, {"type": "litemedsam"}, protocol, "cpu")
        evaluate_run(layout, "phantom", f"zeroshot.{protocol}", {**info, "protocol": protocol}, cfg["evaluate"])
    evaluate_clicks(layout, "phantom", "zeroshot.clicks", {**info, "protocol": "clicks"}, cfg["evaluate"])
    parts = [("zeroshot.clicks", "phantom"), ("zeroshot.box3d", "phantom")]
    summary = summarize(layout, parts, cfg["seed"], parts[:1])

    cases = eval_cases(layout, "phantom")
    clicks = pd.read_parquet(layout.click_metrics())
    assert len(clicks) == len(cases) * 3 * 3 and sorted(clicks["clicks"].unique()) == [0, 1, 2]
    assert clicks["prompted"].all() and clicks["dice"].between(0, 1).all()
    # the volume after the last click is the run's prediction: same scores
    final = clicks[clicks["clicks"] == 2].set_index(["case_id", "label"])["dice"].sort_index()
    metrics = pd.read_parquet(layout.metrics())
    scored = metrics[metrics["run"] == "zeroshot.clicks"].set_index(["case_id", "label"])["dice"].sort_index()
    assert final.to_dict() == pytest.approx(scored.to_dict())
    assert set(summary["zeroshot.clicks"]["phantom"]["mean_dice_after_clicks"]) == {"0", "1", "2"}
    curve = pd.read_csv(layout.clicks_plot())
    assert list(curve["clicks"]) == [0, 1, 2] and set(curve["series"]) == {"zeroshot.clicks/phantom"}
    # the clicks used are recorded: each within the slice, at most one per round, signed
    record = read_json(layout.prompt_record("zeroshot.clicks", "phantom", cases[0]))
    assert record["rounds"] == 2 and record["objects"]
    for obj in record["objects"]:
        assert [c["round"] for c in obj["clicks"]] == sorted({c["round"] for c in obj["clicks"]})
        assert all(c["label"] in (0, 1) and c["region_px"] > 0 for c in obj["clicks"])
    # box3d: one 3D box per label, propagated inside its slice range only
    record = read_json(layout.prompt_record("zeroshot.box3d", "phantom", cases[0]))
    for obj in record["objects"]:
        s0, s1 = obj["box3d"][2], obj["box3d"][5]
        assert all(s0 <= u["slice"] <= s1 for u in obj["propagation"])
    section = _clicks_section(layout)
    assert "Dice vs clicks" in section and "<table" in section and "prompted" in section
    from samstudy.report import _comparison_section, _overlays

    overlays = _overlays(layout, metrics)  # one example slice per dataset: GT + both runs' contours
    assert overlays.count("data:image/png;base64,") == 1 and f"phantom / {sorted(cases)[0]}" in overlays
    tests = pd.read_parquet(layout.paired_tests())
    assert "No automatic run in this study" in _comparison_section("automatic", summary, tests)
    oracle = _comparison_section("oracle", summary, tests)  # two GT-prompted runs, no box run to test against
    assert "zeroshot.box3d" in oracle and "too few cases (n=2)" in oracle and "no paired tests" in oracle


def test_paired_tests_within_the_automatic_and_the_oracle_comparison():
    """Wilcoxon signed-rank per dataset and comparison, Benjamini-Hochberg adjusted; hand-computed values:
    six cases all better -> exact two-sided p = 2 / 2**6 = 0.03125; BH over (0.03125, 1) -> (0.0625, 1).
    Automatic runs (nnU-Net, run:-prompted) are tested against nnU-Net, oracle runs (GT prompts) against
    zero-shot box SAM (or a prompted nnU-Net): never oracle against automatic."""
    import pandas as pd

    from samstudy.evaluate import baseline_run, paired_tests

    cases = [f"c{i}" for i in range(6)]
    base = [0.50, 0.60, 0.55, 0.70, 0.65, 0.40]
    better = [b + 0.05 + 0.01 * i for i, b in enumerate(base)]
    rows = []
    for run, scores, source, adaptation in (
        ("nnunet_2d", base, "none", "supervised"),
        ("better.auto", better, "run:nnunet_2d", "none"),
        ("same.auto", base, "run:nnunet_2d", "none"),
        ("zeroshot.box", [0.9] * 6, "ground_truth", "none"),
        ("decoder.box", [0.95] * 6, "ground_truth", "decoder"),
    ):
        for case, dice in zip(cases, scores, strict=True):
            for label in ("a", "b"):  # two labels with the same Dice: the per-case mean is that Dice
                rows.append(
                    {
                        "dataset": "d",
                        "run": run,
                        "case_id": case,
                        "label": label,
                        "dice": dice,
                        "prompt_source": source,
                        "adaptation": adaptation,
                        "protocol": run.split(".")[-1] if "." in run else "none",
                    }
                )
    rows.append(
        {
            "dataset": "d", "run": "lonely.auto", "case_id": "c0", "label": "a", "dice": 0.9,
            "prompt_source": "run:nnunet_2d", "adaptation": "none", "protocol": "auto",
        }
    )  # fmt: skip
    tests = paired_tests(pd.DataFrame(rows)).set_index("run")
    automatic = tests[tests["comparison"] == "automatic"]
    assert set(automatic["baseline"]) == {"nnunet_2d"} and "nnunet_2d" not in tests.index
    assert set(automatic.index) == {"better.auto", "same.auto", "lonely.auto"}
    assert tests.loc["better.auto", "p"] == pytest.approx(0.03125)
    assert tests.loc["better.auto", "p_adj"] == pytest.approx(0.0625)
    assert tests.loc["better.auto", "mean_diff"] == pytest.approx(0.075)
    assert tests.loc["same.auto", "p"] == 1.0 and tests.loc["same.auto", "p_adj"] == 1.0
    assert tests.loc["lonely.auto", "n_cases"] == 1 and np.isnan(tests.loc["lonely.auto", "p"])
    # the oracle runs: against zero-shot box SAM, adjusted on their own
    assert tests.loc["decoder.box", "comparison"] == "oracle" and tests.loc["decoder.box", "baseline"] == "zeroshot.box"
    assert tests.loc["decoder.box", "mean_diff"] == pytest.approx(0.05) and "zeroshot.box" not in tests.index
    assert tests.loc["decoder.box", "p_adj"] == pytest.approx(0.03125)
    assert baseline_run(["a.box", "nnunet_3d_fullres", "nnunet_2d", "nnunet_best"]) == "nnunet_best"
    assert baseline_run(["a.box", "nnunet_3d_fullres", "nnunet_2d"]) == "nnunet_2d"
    assert baseline_run(["a.box"]) is None


@pytest.mark.parametrize("seed", range(3))
def test_nsd_and_hd95_are_monais_numbers_bit_for_bit(seed):
    """binary_metrics computes NSD and HD95 without torch; the numbers are MONAI's own, exactly (2D and
    3D, anisotropic spacing, shifted, noisy and unrelated masks, ties in the distances)."""
    monai_metrics = pytest.importorskip("monai.metrics")
    import torch

    rng = np.random.default_rng(100 + seed)
    for _ in range(60):
        ndim = 3 if rng.random() < 0.7 else 2
        shape = tuple(int(n) for n in rng.integers(3, 30, size=ndim))
        gt = ndimage.gaussian_filter(rng.normal(size=shape), rng.uniform(0.5, 3)) > rng.uniform(-0.1, 0.2)
        kind = rng.integers(3)
        if kind == 0:
            pred = ndimage.binary_dilation(gt) ^ (rng.random(shape) < 0.05)
        elif kind == 1:
            pred = rng.random(shape) < rng.uniform(0.01, 0.5)
        else:
            pred = np.roll(gt, int(rng.integers(-3, 4)), axis=0)
        if not pred.any() or not gt.any():
            continue
        spacing = [float(s) for s in rng.uniform(0.3, 4, size=ndim)] if rng.random() < 0.8 else [1.0] * ndim
        tol = float(rng.choice([0.5, 1.0, 2.0, rng.uniform(0, 5)]))
        p, g = (torch.from_numpy(m)[None, None].float() for m in (pred, gt))
        nsd = monai_metrics.compute_surface_dice(p, g, [tol], include_background=True, spacing=spacing)[0, 0]
        hd95 = monai_metrics.compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)
        m = binary_metrics(pred, gt, tuple(spacing), tol)
        assert (m["nsd"], m["hd95"]) == (float(nsd), float(hd95[0, 0])), (shape, spacing, tol)


def test_evaluate_scores_the_same_rows_in_the_same_order_with_one_or_two_processes(tmp_path, monkeypatch):
    import concurrent.futures

    import SimpleITK as sitk

    from samstudy import evaluate
    from samstudy.cases import eval_cases, load_dataset_table
    from samstudy.evaluate import evaluate_run
    from samstudy.infer import write_prediction
    from samstudy.ingest import ingest_dataset
    from samstudy.paths import Layout
    from samstudy.preprocess import load_preprocessed, preprocess_dataset
    from samstudy.splits import write_dataset_split
    from tests.conftest import study_config

    cfg = study_config(tmp_path, splits={"test_fraction": 0.5, "val_fraction": 0.5})
    layout, ds = Layout(cfg["results_dir"], cfg["cache_dir"]), cfg["datasets"][0]
    ingest_dataset(ds, layout, cfg["seed"])
    write_dataset_split(layout, "phantom", ds["role"], cfg["seed"], cfg["splits"])
    preprocess_dataset(layout, ds, cfg["preprocess"])
    rows = load_dataset_table(layout, "phantom")[0].set_index("case_id")
    cases = eval_cases(layout, "phantom")
    assert len(cases) >= 3  # one scored in the job's process, the others by two workers
    for i, case in enumerate(cases):  # the ground truth, eroded differently per case: imperfect scores
        pre = load_preprocessed(layout, "phantom", case)
        labels = pre["labels"].copy()
        labels[ndimage.binary_erosion(labels > 0, iterations=i % 2 + 1) == 0] = 0
        write_prediction(layout.prediction("x", "phantom", case), labels, int(pre["axis"]), rows.loc[case, "images"][0])
    info = {"method": "x", "model": "none", "adaptation": "none", "protocol": "none", "prompted": False}
    one = evaluate_run(layout, "phantom", "x", info, cfg["evaluate"], threads=1)

    pools = []

    class CountedPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, workers, **kwargs):
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountedPool)
    two = evaluate_run(layout, "phantom", "x", info, cfg["evaluate"], threads=2)
    assert pools == []  # these small cases score faster here than a worker starts
    monkeypatch.setattr(evaluate, "WORKER_START_S", 0.0)
    two = evaluate_run(layout, "phantom", "x", info, cfg["evaluate"], threads=2)
    assert pools == [2]
    assert one["dice"].between(0, 0.999).any() and one["case_id"].nunique() == len(cases)
    assert one.equals(two)
    assert list(two["case_id"].drop_duplicates()) == list(cases)
    bad = sitk.ReadImage(layout.prediction("x", "phantom", cases[-1]))
    bad.SetSpacing((9.0, 9.0, 9.0))
    sitk.WriteImage(bad, layout.prediction("x", "phantom", cases[-1]))
    with pytest.raises(ValueError, match="spacing"):  # a worker's error reaches the job
        evaluate_run(layout, "phantom", "x", info, cfg["evaluate"], threads=2)
