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
