"""The prompt-free protocol ("none"): a promptfree (SAMed-style) method's every slice decoded from its
embedding alone, the argmax over the background and the dataset's classes. No prompts file is read; a
dataset the method has no classes for gets empty predictions.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from samstudy.adapt import dataset_classes
from samstudy.protocols import PROMPT_FREE
from samstudy.protocols.base import CaseInputs, CaseResult

log = logging.getLogger(__name__)

RULE = "argmax over background + the dataset's classes of the logits in the native slice"


def model_classes(model, dataset: str) -> dict[int, int]:
    """The method's classes of one dataset: decoder channel -> label value (its checkpoint's class map)."""
    return dataset_classes(model.sam.mask_decoder.samstudy_classes, dataset)


@torch.inference_mode()
def predict_promptfree(
    model,
    embeddings: dict[int, np.ndarray],
    n_slices: int,
    hw: tuple[int, int],
    classes: dict[int, int],
    case: str = "",
    batch_size: int = 8,
) -> np.ndarray:
    """A promptfree (SAMed-style) model's label slices (n, H, W) uint8, with no prompt: every slice decoded
    from its embedding alone (the predictor's `promptfree_logits`), the logits of the background (channel 0)
    and of the dataset's classes (`classes`: decoder channel -> label value, `adapt.dataset_classes`) put
    back into the native slice with the family's geometry (`logits_to_native`), then the argmax over them
    (SAMed `utils.py` test_single_volume, line 133: argmax of the softmax over the classes of the upsampled
    masks; the softmax does not change the argmax). Other datasets' classes do not compete. No classes:
    an empty prediction. Every slice needs an embedding (embed.slices: all)."""
    out = np.zeros((n_slices, *hw), dtype=np.uint8)
    if not classes:
        return out
    missing = [s for s in range(n_slices) if s not in embeddings]
    if missing:
        raise KeyError(
            f"case {case}: slice {missing[0]} has no cached embedding ({len(missing)} of {n_slices} slices "
            "lack one); prompt-free inference predicts every slice: set embed.slices: all"
        )
    channels = [0, *classes]
    values = torch.tensor([0, *classes.values()], dtype=torch.uint8)
    predictor = model.predictor
    device = predictor.device
    for start in range(0, n_slices, batch_size):
        stop = min(start + batch_size, n_slices)
        emb = np.stack([np.asarray(embeddings[s], dtype=np.float32) for s in range(start, stop)])
        low_res = predictor.promptfree_logits(torch.from_numpy(emb).to(device))[:, channels].float()
        winner = predictor.logits_to_native(low_res, hw).argmax(dim=1).cpu()
        out[start:stop] = values[winner].numpy()
    return out


def run(model, case: CaseInputs) -> CaseResult:
    """One case: every slice's argmax over the dataset's classes (no embedding read when it has none)."""
    n, h, w = case.labels.shape
    classes = model_classes(model, case.dataset)
    embeddings = case.embeddings if classes else {}
    return CaseResult(predict_promptfree(model, embeddings, n, (h, w), classes, case.case))


def run_record(model, method: str, dataset: str, artifact: dict, overlap: str) -> dict:
    """run.json of a prompt-free run: its classes on this dataset and the rule (no overlap: one argmax)."""
    classes = model_classes(model, dataset)
    if not classes:
        log.warning(
            "infer %s/%s: %s was trained on no class of this dataset: its predictions are empty",
            method,
            dataset,
            method,
        )
    return {
        "prompt_source": PROMPT_FREE,
        "classes": {str(k): v for k, v in classes.items()},  # decoder channel -> label value
        "rule": RULE,
    }


__all__ = ["predict_promptfree", "run", "run_record"]
