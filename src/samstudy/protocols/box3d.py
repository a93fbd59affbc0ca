"""The `box3d` protocol: one 3D box per object, propagated slice by slice from its middle slice with the
2D decoder, as LiteMedSAM's official 3D inference runs it (bowang-lab/MedSAM `CVPR24_LiteMedSAM_infer.py`,
`MedSAM_infer_npz_3D`, commit 2a5a0556). It records the boxes it used (model frame) per object.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from samstudy.protocols.base import CaseInputs, CaseResult, Predictions, assemble, decode_prompts, embedding_of
from samstudy.protocols.base import prompted_run_record as run_record


def predict_box3d(
    model,
    embeddings: dict[int, np.ndarray],
    prompts: list[dict],
    hw: tuple[int, int],
    margin_px: int,
    case: str,
) -> tuple[Predictions, list[dict]]:
    """One 3D box per object, as LiteMedSAM's official 3D inference runs it (bowang-lab/MedSAM
    `CVPR24_LiteMedSAM_infer.py`, `MedSAM_infer_npz_3D`, commit 2a5a0556): the middle slice
    int((s1 - s0) / 2 + s0) gets the 3D box's xy box; then each slice up to s1, and each slice from the
    middle down to s0 (both ends included), is prompted with the box of the previous slice's predicted
    mask of the object (the family's `propagation_box`: for LiteMedSAM grown by `margin_px` at the
    256-pixel scale); where that mask is empty, the slice falls back to the 3D box's xy box. Every slice
    of the range is predicted. Objects are applied in order (a later one overwrites, `assemble`).

    Returns the predictions and the record of the boxes actually used (model frame), per object.
    """
    family = model.family
    predictions: Predictions = defaultdict(list)
    records = []
    for position, prompt in enumerate(prompts, start=1):
        x0, y0, s0, x1, y1, s1 = prompt["box3d"]
        middle = int((s1 - s0) / 2 + s0)
        middle_box = family.boxes_to_model(np.array([[x0, y0, x1, y1]]), hw)[0]
        used: list[dict] = []
        masks: dict[int, np.ndarray] = {}
        order = [*range(middle, s1 + 1), *range(middle - 1, s0 - 1, -1)]
        for s in order:
            if s == middle:
                box, source = middle_box, "box3d"
            else:
                previous = masks[s - 1] if s > middle else masks[s + 1]
                box = family.propagation_box(previous, hw, margin_px, position)
                box, source = (middle_box, "fallback") if box is None else (box, "previous_mask")
            scores = decode_prompts(model, embedding_of(embeddings, s, case), [{"model_box": box}], hw)[0]
            masks[s] = (scores > family.threshold).numpy()
            predictions[s].append((prompt["label"], scores))
            used.append(
                {"slice": s, "model_box": [float(v) for v in box], "source": source, "voxels": int(masks[s].sum())}
            )
        records.append({**prompt, "propagation": sorted(used, key=lambda u: u["slice"])})
    return dict(predictions), records


def run(model, case: CaseInputs) -> CaseResult:
    """One case: every object's 3D box propagated; the boxes used recorded."""
    n, h, w = case.labels.shape
    margin = case.settings["box3d"]["margin_px"]
    predictions, objects = predict_box3d(model, case.embeddings, case.prompts, (h, w), margin, case.case)
    label_slices = assemble((n, h, w), predictions, model.family.threshold, case.overlap)
    return CaseResult(label_slices, record={"objects": objects})


__all__ = ["predict_box3d", "run", "run_record"]
