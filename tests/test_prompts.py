import numpy as np

from samstudy.prompts import case_prompts, case_rng, jitter_box, tight_box


def test_tight_box_of_a_rectangle():
    mask = np.zeros((20, 30), dtype=bool)
    mask[4:9, 10:25] = True
    assert tight_box(mask) == [10, 4, 24, 8]


def test_jitter_moves_sides_outward_within_bounds_and_is_seeded():
    box = [10, 4, 24, 8]
    for seed in range(20):
        j = jitter_box(box, 5, (20, 30), case_rng(seed, "a"))
        assert j[0] <= 10 and j[1] <= 4 and j[2] >= 24 and j[3] >= 8
        assert j[0] >= 5 and j[1] >= 0 and j[2] <= 29 and j[3] <= 19
    assert jitter_box(box, 5, (20, 30), case_rng(1, "a")) == jitter_box(box, 5, (20, 30), case_rng(1, "a"))


def test_one_prompt_per_label_per_slice():
    labels = np.zeros((3, 10, 10), dtype=np.uint8)
    labels[0, 1:3, 1:3] = 1
    labels[1, 5:8, 2:4] = 2
    labels[1, 1:2, 1:2] = 1
    prompts = case_prompts(labels, "box", {}, case_rng(0))
    assert [(p["slice"], p["label"]) for p in prompts] == [(0, 1), (1, 1), (1, 2)]
    assert prompts[2]["box"] == [2, 5, 3, 7]


def test_points_are_inside_the_object_first_at_its_centre_and_negatives_outside():
    from samstudy.prompts import sample_points

    mask = np.zeros((40, 60), dtype=bool)
    mask[10:31, 5:46] = True  # centre of the rectangle: row 20, col 25
    points, labels = sample_points(mask, 5, 2, case_rng(3, "x"))
    assert labels == [1, 1, 1, 1, 1, 0, 0]
    assert points[0] == [25, 20]
    assert all(mask[y, x] for x, y in points[:5])
    assert not any(mask[y, x] for x, y in points[5:])
    assert sample_points(mask, 5, 2, case_rng(3, "x")) == (points, labels)


def test_point_protocols_store_points_not_boxes():
    labels = np.zeros((2, 10, 10), dtype=np.uint8)
    labels[1, 2:7, 3:8] = 2
    prompts = case_prompts(labels, "points3", {"negative_points": 1}, case_rng(0))
    assert len(prompts) == 1 and "box" not in prompts[0]
    assert prompts[0]["point_labels"] == [1, 1, 1, 0] and len(prompts[0]["points"]) == 4


def _two_rectangles() -> np.ndarray:
    """One slice, label 1 as two separate rectangles: a large one (rows 2-9, cols 2-11) and a small one."""
    labels = np.zeros((1, 20, 30), dtype=np.uint8)
    labels[0, 2:10, 2:12] = 1  # 80 px
    labels[0, 14:17, 20:26] = 1  # 18 px
    return labels


def test_components_union_all_largest():
    from samstudy.masks import prompt_target

    labels = _two_rectangles()
    union = case_prompts(labels, "box", {"components": "union"}, case_rng(0))
    assert [p["box"] for p in union] == [[2, 2, 25, 16]] and "component" not in union[0]
    every = case_prompts(labels, "box", {"components": "all"}, case_rng(0))
    assert [(p["component"], p["box"]) for p in every] == [(1, [2, 2, 11, 9]), (2, [20, 14, 25, 16])]
    largest = case_prompts(labels, "box", {"components": "largest"}, case_rng(0))
    assert [p["box"] for p in largest] == [[2, 2, 11, 9]]
    # a component prompt stands for exactly its component
    assert prompt_target(labels[0], every[1]).sum() == 18 and prompt_target(labels[0], union[0]).sum() == 98


def test_diagonal_neighbours_are_one_component():
    from samstudy.prompts import objects

    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True
    assert len(objects(mask, "all")) == 1


def test_box3d_one_box_per_label_and_component_over_slices():
    labels = np.zeros((8, 20, 30), dtype=np.uint8)
    labels[2:6, 3:9, 4:15] = 1  # a cuboid on slices 2..5
    labels[1:3, 12:15, 20:23] = 2
    labels[6:8, 12:15, 20:23] = 2  # label 2: two blobs apart along the slices
    prompts = case_prompts(labels, "box3d", {"components": "union"}, case_rng(0))
    assert [(p["label"], p["box3d"]) for p in prompts] == [(1, [4, 3, 2, 14, 8, 5]), (2, [20, 12, 1, 22, 14, 7])]
    split = case_prompts(labels, "box3d", {"components": "all"}, case_rng(0))
    assert [p["box3d"][2::3] for p in split if p["label"] == 2] == [[1, 2], [6, 7]]
    assert all("slice" not in p for p in prompts)


def test_clicks_store_the_starting_prompt_only():
    labels = np.zeros((2, 20, 30), dtype=np.uint8)
    labels[1, 4:9, 10:25] = 1  # innermost point: row 6, col 17
    box = case_prompts(labels, "clicks", {"clicks": {"start": "box", "rounds": 3}}, case_rng(0))
    point = case_prompts(labels, "clicks", {"clicks": {"start": "point", "rounds": 3}}, case_rng(0))
    assert box == [{"slice": 1, "label": 1, "box": [10, 4, 24, 8]}]
    assert point == [{"slice": 1, "label": 1, "points": [[17, 6]], "point_labels": [1]}]


def test_next_click_goes_to_the_centre_of_the_largest_error_with_the_right_sign():
    from samstudy.masks import next_click

    target = np.zeros((30, 40), dtype=bool)
    target[5:20, 5:30] = True
    missed = target.copy()
    missed[5:20, 20:30] = False  # the prediction misses columns 20..29: a 15 x 10 region, centre (12, 24/25)
    click = next_click(missed, target)
    assert click["label"] == 1 and click["region_px"] == 150
    x, y = click["xy"]
    assert target[y, x] and not missed[y, x] and y == 12 and x in (24, 25)
    extra = target.copy()
    extra[22:29, 2:38] = True  # a false area (7 x 36) larger than a small miss
    extra[5:8, 5:8] = False
    click = next_click(extra, target)
    x, y = click["xy"]
    assert click["label"] == 0 and extra[y, x] and not target[y, x] and y == 25
    assert next_click(target, target) is None
    tie = target.copy()
    tie[5:7, 5:7] = False  # 4 px missed
    tie[25:27, 30:32] = True  # 4 px false: a tie goes to the missed area
    assert next_click(tie, target)["label"] == 1


def test_make_prompts_records_settings_and_seed(study):
    from samstudy.prompts import load_prompts, make_prompts

    cfg, layout = study
    settings = {"components": "union", "clicks": {"rounds": 2, "start": "box"}}
    make_prompts(layout, "phantom", "clicks", settings, cfg["seed"])
    artifact = load_prompts(layout, "phantom", "clicks")
    assert artifact["settings"] == settings and artifact["seed"] == cfg["seed"]
    assert all("box" in p and "points" not in p for ps in artifact["cases"].values() for p in ps)


def _write_source_prediction(layout, dataset: str, run: str, case: str, slices: np.ndarray) -> None:
    """A source run's prediction of one case, in the case's geometry (as nnU-Net writes them)."""
    from samstudy.cases import load_dataset_table
    from samstudy.infer import write_prediction
    from samstudy.preprocess import load_preprocessed

    table, _ = load_dataset_table(layout, dataset)
    axis = int(load_preprocessed(layout, dataset, case)["axis"])
    write_prediction(layout.prediction(run, dataset, case), slices, axis, table.set_index("case_id").loc[case])


def test_derived_prompts_are_boxes_of_the_source_runs_masks_not_of_the_ground_truth(study):
    import pytest

    from samstudy.cases import eval_cases
    from samstudy.preprocess import load_preprocessed
    from samstudy.prompts import derive_prompts

    cfg, layout = study
    cases = eval_cases(layout, "phantom")
    predicted = {}
    for k, case in enumerate(cases):
        gt = load_preprocessed(layout, "phantom", case)["labels"]
        pred = np.zeros_like(gt)
        pred[2, 5:9, 10:20] = 1  # a source "prediction" unrelated to the ground truth
        pred[2, 20:23, 3:4] = 3
        pred[5, 0:2, 30:34] = 1 + k
        predicted[case] = pred
        _write_source_prediction(layout, "phantom", "nnunet_2d", case, pred)
    spec = {"from": "nnunet_2d", "kind": "box"}
    artifact = derive_prompts(layout, "phantom", "auto_box", spec, {"components": "union"}, 7)
    assert artifact["source"] == "run:nnunet_2d" and artifact["from_ground_truth"] is False
    assert sorted(artifact["cases"]) == sorted(cases)  # the test cases only
    first = artifact["cases"][cases[0]]
    assert first == [
        {"slice": 2, "label": 1, "box": [10, 5, 19, 8]},
        {"slice": 2, "label": 3, "box": [3, 20, 3, 22]},
        {"slice": 5, "label": 1, "box": [30, 0, 33, 1]},
    ]  # XYXY of the predicted masks; slices where the source predicts nothing get no prompt
    box3d = derive_prompts(layout, "phantom", "auto_box3d", {**spec, "kind": "box3d"}, {"components": "union"}, 7)
    assert box3d["kind"] == "box3d" and box3d["cases"][cases[0]][0] == {"label": 1, "box3d": [10, 0, 2, 33, 8, 5]}
    # a missing source prediction is an error naming the file
    import os

    os.remove(layout.prediction("nnunet_2d", "phantom", cases[0]))
    with pytest.raises(FileNotFoundError, match="nnunet_2d has no prediction"):
        derive_prompts(layout, "phantom", "auto_box", spec, {"components": "union"}, 7)


def test_a_derived_protocol_must_name_a_run_of_the_study(tmp_path):
    import pytest

    from samstudy.config import ConfigError
    from tests.conftest import study_config

    leak = {"leak": {"from": "zeroshot.box"}}  # a ground-truth-prompted run's masks carry the ground truth
    with pytest.raises(ConfigError, match="would leak the ground truth"):
        study_config(tmp_path, prompts={"derived": leak}, embed={"slices": "all"})
    # a source the study does not make (another configuration, nnU-Net disabled) adds no run: no error,
    # and no need to embed every slice
    other = {"auto_box": {"from": "nnunet_3d_fullres"}}
    study_config(tmp_path, prompts={"derived": other})
    study_config(tmp_path, prompts={"derived": {"auto_box": {"from": "nnunet_2d"}}}, nnunet={"enabled": False})
    with pytest.raises(ConfigError, match="embed.slices: all"):
        study_config(tmp_path, prompts={"derived": {"auto_box": {"from": "nnunet_2d"}}})
    with pytest.raises(ConfigError, match="taken by a ground-truth protocol"):
        study_config(tmp_path, prompts={"derived": {"box": {"from": "nnunet_2d"}}}, embed={"slices": "all"})
    cfg = study_config(tmp_path, prompts={"derived": {"auto_box": {"from": "nnunet_2d"}}}, embed={"slices": "all"})
    assert cfg["prompts"]["derived"]["auto_box"]["kind"] == "box"


def test_the_four_arms_example_dag(tmp_path):
    """config/examples/four_arms.yaml: automatic arms (nnU-Net, SAM from nnU-Net's masks, prompt-free SAM)
    and oracle arms (box SAM, nnU-Net given the boxes); derived prompts wait for their source's predictions."""
    import re

    from tests.conftest import dry_run_jobs

    jobs = dry_run_jobs(tmp_path, "--configfile", "config/examples/four_arms.yaml")
    derived = [d for rule, d in jobs if rule == "derived_prompts"]
    assert len(derived) == 4  # auto_box and auto_box3d on the two datasets nnU-Net is trained on
    for d in derived:
        dataset = re.search(r"wildcards: .*\bdataset=(\w+)", d).group(1)
        assert re.search(rf"input: \S+/predictions/nnunet_2d/{dataset}[,\n]", d)
    runs = {m.group(1) for _, d in jobs if (m := re.search(r"output: \S+/predictions/([^/]+)/", d))}
    assert {"nnunet_2d", "zeroshot.auto_box", "promptfree.none", "zeroshot.box", "nnunet_prompted_2d"} <= runs
    prompted = [d for rule, d in jobs if rule == "nnunet_prompted_predict"]
    assert prompted and all("/prompts/" in d and "box.json" in d for d in prompted)  # the boxes SAM gets
