"""What every protocol module shares: the case it is given, what it returns, the decoder calls it makes
through the model's predictor, and the assembly of per-object scores into label slices.

A protocol module (samstudy/protocols/<module>.py) has:
- `run(model, case: CaseInputs) -> CaseResult`: one case's label slices (and, for `clicks`, the stack after
  every click) and the record of the prompts it used (dynamic protocols; None for the others);
- `run_record(model, method, dataset, artifact, overlap) -> dict`: what `run.json` records about the run beyond
  the run's name and the family (the prompt source, the overlap rule; prompt-free: its classes).
The predictor capabilities it needs are its registry line's `needs` (samstudy.protocols).
`model` is a samstudy.models.LoadedModel: its `predictor` runs the encoder and decoder, its `family` scales
prompts and thresholds as the official code does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

Predictions = dict[int, list[tuple[int, torch.Tensor]]]  # slice -> [(label value, native scores (H, W))]
OVERLAP_RULES = ("official", "max_logit")


@dataclass
class CaseInputs:
    """One evaluation case as a protocol sees it."""

    case: str
    dataset: str
    slices: np.ndarray  # preprocessed uint8 slices (n, H, W) or (n, H, W, 3)
    labels: np.ndarray  # preprocessed label slices (n, H, W): their shape is the prediction's
    prompts: list[dict]  # the case's stored prompts (none for prompt-free runs)
    settings: dict  # the settings the prompts were made with (clicks rounds, box3d margin)
    overlap: str  # infer.overlap
    load_embeddings: Callable[[], dict[int, np.ndarray]] = field(repr=False)

    @cached_property
    def embeddings(self) -> dict[int, np.ndarray]:
        """slice -> cached embedding, read when a protocol first asks (a run with nothing to predict reads none)."""
        return self.load_embeddings()


@dataclass
class CaseResult:
    """What a protocol made of one case."""

    label_slices: np.ndarray  # (n, H, W) uint8: the prediction
    click_stack: np.ndarray | None = None  # (rounds + 1, n, H, W): the prediction after every click (clicks)
    record: dict | None = None  # the prompts the protocol used (dynamic protocols), written beside it


def prompted_run_record(model, method: str, dataset: str, artifact: dict, overlap: str) -> dict:
    """run.json of a prompted run: where its prompts came from and the overlap rule."""
    return {"prompt_source": artifact.get("source", "ground_truth"), "overlap": overlap}


def decode(
    model, embedding: np.ndarray, prompts: list[dict], hw: tuple[int, int], mask_input: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(low-res logits (N, 1, L, L), native scores (N, H, W)) of N prompts of one form on one slice: the
    model's predictor (samstudy.families.base.Predictor.decode)."""
    return model.predictor.decode(embedding, prompts, hw, mask_input)


def decode_prompts(model, embedding: np.ndarray, prompts: list[dict], hw: tuple[int, int]) -> torch.Tensor:
    """Mask scores (N, H, W) in the native slice for N prompts of one form on one slice."""
    return decode(model, embedding, prompts, hw)[1]


def embedding_of(embeddings: dict[int, np.ndarray], s: int, case: str) -> np.ndarray:
    """A slice's cached embedding; a clear error when the slice was not embedded."""
    if s not in embeddings:
        raise KeyError(
            f"case {case}: slice {s} needs a prediction but has no cached embedding "
            "(embed.slices: needed embeds each label's slice range; use embed.slices: all or a slice_margin)"
        )
    return embeddings[s]


def assemble(
    shape: tuple[int, int, int],
    predictions: dict[int, list[tuple[int, torch.Tensor]]],
    threshold: float,
    overlap: str = "official",
) -> np.ndarray:
    """Per-slice (label, scores) lists -> label slices (n, H, W); foreground where a score > threshold.

    Where several objects claim a pixel (`infer.overlap`): `official` applies them in order and a later
    one overwrites (`segs[mask > 0] = label` in CVPR24_LiteMedSAM_infer.py; prompts are stored in label
    order); `max_logit` gives the pixel to the object with the larger score (a samstudy option).
    """
    if overlap not in OVERLAP_RULES:
        raise ValueError(f"infer.overlap must be one of {OVERLAP_RULES}, got '{overlap}'")
    out = np.zeros(shape, dtype=np.uint8)
    for s, items in predictions.items():
        lab = torch.zeros(shape[1:], dtype=torch.uint8)
        if overlap == "official":
            for value, scores in items:
                lab[scores > threshold] = value
        else:
            best = torch.full(shape[1:], float(threshold))
            for value, scores in items:
                win = scores > best
                best = torch.where(win, scores, best)
                lab[win] = value
        out[s] = lab.numpy()
    return out
