"""The `propagate` protocol: SAM 2 prompts one slice per object and its memory propagates the mask through
the volume, as MedSAM's authors evaluate SAM 2 (and MedSAM2) on 3D images. It needs the volume capability
(SAM 2's video predictor: samstudy.families.sam2_video, where the official frames, state and feature cache
are cited).

Official: bowang-lab/MedSAM `exp_inference/infer_SAM2_3D_npz.py` (commit 87bc795), `infer_3d`, for each
object in label order:
- the frames are the object's slices z_min..z_max (the stored 3D box's s0..s1: `session.track`);
- the prompt slice is the slab's middle, z_min + int(n / 2); its mask comes from the image predictor with
  the 3D box's xy box (`SAM2ImagePredictor.predict(box, multimask_output=False)`: samstudy's 2D path with
  the cached embedding, held equal to it in tests/test_sam2.py);
- `add_new_mask` on that frame, `propagate_in_video` forward, `reset_state`, `add_new_mask` again,
  `propagate_in_video(reverse=True)`; every frame's mask (logits > 0) is written with the object's label
  (`segs_3D[...] = idx`): both directions write the prompt slice, and a later object overwrites an
  earlier one; no postprocessing.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from samstudy.protocols.base import CaseInputs, CaseResult, Predictions, assemble, decode_prompts, embedding_of
from samstudy.protocols.base import prompted_run_record as run_record


@torch.inference_mode()
def predict_propagate(
    model, embeddings: dict[int, np.ndarray], prompts: list[dict], slices: np.ndarray, case: str
) -> tuple[Predictions, list[dict]]:
    """Every object's 3D box (`box3d` prompts): its middle slice predicted from the box's xy extent by the
    2D path (cached embedding), that mask propagated forward and backward through the box's slices by the
    family's volume session. Returns per slice the (label, logits at native size) to assemble in object
    order (a later object overwrites), and per object the prompt slice, its box and the frames predicted."""
    hw = (int(slices.shape[1]), int(slices.shape[2]))
    session = model.predictor.volume_session(slices)  # the case's image features are computed once
    predictions: Predictions = defaultdict(list)
    records = []
    for prompt in prompts:
        x0, y0, s0, x1, y1, s1 = (int(v) for v in prompt["box3d"])
        n = s1 - s0 + 1
        middle = s0 + int(n / 2)  # z_mid = int(img.shape[0] / 2); z_mid_orig = z_mid + z_min
        box = [x0, y0, x1, y1]  # box[[0, 1, 3, 4]]
        scores = decode_prompts(model, embedding_of(embeddings, middle, case), [{"box": box}], hw)[0]
        mask = (scores > model.family.threshold).numpy()
        session.track(s0, s1)
        written: dict[str, list[int]] = {}
        for direction, reverse in (("forward", False), ("reverse", True)):
            first = session.add_mask(middle, mask)
            if not reverse:  # segs_3D[z_mid_orig, masks[0] > 0] = idx
                predictions[middle].append((prompt["label"], first.float().cpu()))
            frames_done = []
            for s, logits in session.propagate(reverse=reverse):
                predictions[s].append((prompt["label"], logits.float().cpu()))
                frames_done.append(s)
            written[direction] = frames_done
            session.reset()
        records.append(
            {
                **prompt,
                "prompt_slice": middle,
                "prompt_box": box,
                "prompt_voxels": int(mask.sum()),
                "slices": written,
            }
        )
    return dict(predictions), records


def run(model, case: CaseInputs) -> CaseResult:
    """One case: every object propagated through its slices; the prompt slices and frames recorded."""
    n, h, w = case.labels.shape
    predictions, objects = predict_propagate(model, case.embeddings, case.prompts, case.slices, case.case)
    label_slices = assemble((n, h, w), predictions, model.family.threshold, case.overlap)
    return CaseResult(label_slices, record={"objects": objects})


__all__ = ["predict_propagate", "run", "run_record"]
