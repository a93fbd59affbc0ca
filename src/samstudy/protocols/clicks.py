"""The `clicks` protocol: iterative correction (SAM-Med2D / micro-sam style) from a stored starting prompt
(a box or one point) of every object on every slice. The correction clicks depend on the model's own
predictions, so they are made here (samstudy.masks.next_click) and recorded per object; the prediction
after every click is returned for evaluate's Dice-vs-clicks table.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from samstudy.masks import next_click, prompt_target
from samstudy.protocols.base import CaseInputs, CaseResult, assemble, decode, embedding_of
from samstudy.protocols.base import prompted_run_record as run_record


def _assemble_slice(
    items: list[dict], scores: list[torch.Tensor], hw: tuple[int, int], threshold: float, overlap: str
) -> np.ndarray:
    """One slice's label map from its objects' scores."""
    return assemble((1, *hw), {0: [(p["label"], scores[k]) for k, p in enumerate(items)]}, threshold, overlap)[0]


def predict_clicks(
    model,
    embeddings: dict[int, np.ndarray],
    prompts: list[dict],
    labels: np.ndarray,
    rounds: int,
    case: str,
    overlap: str = "official",
) -> tuple[np.ndarray, list[dict]]:
    """Iterative correction (SAM-Med2D / micro-sam style): the stored starting prompt (a box or one
    point) of every object, then `rounds` rounds; each round adds one click per object at the centre of
    its largest error region (`masks.next_click`: positive in a missed area, negative in a false one)
    and feeds the object's previous low-res logits back in as SAM's mask prompt. An object whose mask
    is already exact gets no more clicks and keeps its mask. The error is judged on each object's own
    mask (score > the family's threshold) against the object it stands for (`masks.prompt_target`).

    Returns the label slices after 0..rounds clicks, (rounds + 1, slices, H, W) uint8 (overlaps by
    `overlap`, as everywhere), and per object its start prompt and the clicks it got.
    """
    n, h, w = labels.shape
    threshold = model.family.threshold
    stack = np.zeros((rounds + 1, n, h, w), dtype=np.uint8)
    by_slice = defaultdict(list)
    for p in prompts:
        by_slice[p["slice"]].append(p)
    records = []
    for s, items in sorted(by_slice.items()):
        emb = embedding_of(embeddings, s, case)
        targets = [prompt_target(labels[s], p) for p in items]
        forms = [{key: p[key] for key in ("box", "points", "point_labels") if key in p} for p in items]
        low, native = decode(model, emb, forms, (h, w))
        low_res, logits = list(low), list(native)  # per object; replaced (never modified) each round
        clicks: list[list[dict]] = [[] for _ in items]
        active = list(range(len(items)))
        stack[0, s] = _assemble_slice(items, logits, (h, w), threshold, overlap)
        for r in range(1, rounds + 1):
            still = []
            for k in active:
                click = next_click(logits[k].numpy() > threshold, targets[k])
                if click is None:  # exact already: no more clicks for this object
                    continue
                clicks[k].append({"round": r, **click})
                forms[k] = {
                    **forms[k],
                    "points": forms[k].get("points", []) + [click["xy"]],
                    "point_labels": forms[k].get("point_labels", []) + [click["label"]],
                }
                still.append(k)
            active = still
            if active:  # every active object has the same prompt form: one batched decoder call
                mask_input = torch.stack([low_res[k] for k in active])
                low, native = decode(model, emb, [forms[k] for k in active], (h, w), mask_input)
                for j, k in enumerate(active):
                    low_res[k], logits[k] = low[j], native[j]
            stack[r, s] = _assemble_slice(items, logits, (h, w), threshold, overlap)
        for k, p in enumerate(items):
            records.append({**p, "clicks": clicks[k]})
    return stack, records


def run(model, case: CaseInputs) -> CaseResult:
    """One case: the stack after 0..rounds clicks (the last is the prediction) and the clicks recorded;
    infer writes every click's volume and adds their paths to the record (`click_predictions`)."""
    rounds = case.settings["clicks"]["rounds"]
    stack, objects = predict_clicks(model, case.embeddings, case.prompts, case.labels, rounds, case.case, case.overlap)
    return CaseResult(stack[-1], click_stack=stack, record={"rounds": rounds, "objects": objects})


__all__ = ["predict_clicks", "run", "run_record"]
