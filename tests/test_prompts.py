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
