"""The static per-slice protocols: `box`, `box_jitter`, `points1`, `points3`, `points5` (and derived
`box` protocols). Their prompts are all known before inference (samstudy.prompts stores the prompt of
every object on every slice where it is present); each slice is decoded once with its objects' prompts.
One module for the five: they differ only in the prompts samstudy.prompts makes, not in how they run.
Slices without a prompt get no prediction (background): they are scored, not dropped.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from samstudy.protocols.base import (
    CaseInputs,
    CaseResult,
    Predictions,
    assemble,
    decode_prompts,
    embedding_of,
)
from samstudy.protocols.base import prompted_run_record as run_record


def predict_slices(
    model, embeddings: dict[int, np.ndarray], prompts: list[dict], hw: tuple[int, int], case: str
) -> Predictions:
    """Stored per-slice prompts (box, box_jitter, points<k>): one decoder call per slice."""
    by_slice = defaultdict(list)
    for p in prompts:
        by_slice[p["slice"]].append(p)
    predictions: Predictions = {}
    for s, items in by_slice.items():
        logits = decode_prompts(model, embedding_of(embeddings, s, case), items, hw)
        predictions[s] = [(p["label"], logits[k]) for k, p in enumerate(items)]
    return predictions


def run(model, case: CaseInputs) -> CaseResult:
    """One case: every slice's stored prompts decoded, the objects assembled by the overlap rule."""
    n, h, w = case.labels.shape  # (slices of an RGB image carry a channel axis)
    predictions = predict_slices(model, case.embeddings, case.prompts, (h, w), case.case)
    return CaseResult(assemble((n, h, w), predictions, model.family.threshold, case.overlap))


__all__ = ["predict_slices", "run", "run_record"]
