"""Inference: a (zero-shot or adapted) SAM model under one prompt protocol, assembled into NIfTI volumes.

Slices without a prompt get no prediction (background): they are scored, not dropped. Where two labels
claim a voxel, the label with the larger logit wins. The volume gets the original image's geometry
(size, spacing, origin, direction) through CopyInformation.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from samstudy import train
from samstudy.embed import load_case_embeddings
from samstudy.ingest import load_dataset_table, reference_geometry
from samstudy.io import atomic_path, read_json
from samstudy.models import LoadedModel, load_model, resolve_device
from samstudy.paths import Layout, run_name
from samstudy.preprocess import box_to_model, from_slices, load_preprocessed, logits_to_native
from samstudy.prompts import load_prompts
from samstudy.splits import cases_in, load_split

log = logging.getLogger(__name__)


@torch.inference_mode()
def decode_prompts(model: LoadedModel, embedding: np.ndarray, prompts: list[dict], hw: tuple[int, int]) -> torch.Tensor:
    """Mask logits (N, H, W) in the native slice for N prompts of one kind (boxes or points) on one slice.

    A single point is ambiguous, so it uses SAM's three-mask output and keeps the mask with the highest
    predicted IoU (as SAM's authors recommend); boxes and several points use the single-mask output.
    """
    device = next(model.sam.parameters()).device
    emb = torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None].to(device)
    boxes = points = None
    multimask = False
    if "box" in prompts[0]:
        boxes = torch.from_numpy(box_to_model(np.array([p["box"] for p in prompts]), hw, model.spec)).to(device)
    else:
        xy = np.array([p["points"] for p in prompts], dtype=np.float32)  # (N, k, 2)
        scaled = box_to_model(np.concatenate([xy, xy], axis=-1).reshape(-1, 4), hw, model.spec)[:, :2]
        coords = torch.from_numpy(scaled.reshape(xy.shape)).to(device)
        point_labels = torch.tensor([p["point_labels"] for p in prompts], dtype=torch.int, device=device)
        points = (coords, point_labels)
        multimask = xy.shape[1] == 1
    sparse, dense = model.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, iou = model.sam.mask_decoder(
        image_embeddings=emb,
        image_pe=model.sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )
    if multimask:
        best = iou.argmax(dim=1)
        low_res = low_res[torch.arange(low_res.shape[0]), best][:, None]
    return logits_to_native(low_res.float(), hw, model.spec).cpu()


def decode_boxes(model: LoadedModel, embedding: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """Mask logits (N, H, W) for N XYXY boxes on one slice embedding."""
    return decode_prompts(model, embedding, [{"box": list(b)} for b in boxes], hw)


def assemble(shape: tuple[int, int, int], predictions: dict[int, list[tuple[int, torch.Tensor]]]) -> np.ndarray:
    """Per-slice (label, logits) lists -> label slices (n, H, W); overlaps go to the larger logit."""
    out = np.zeros(shape, dtype=np.uint8)
    for s, items in predictions.items():
        best = torch.full(shape[1:], 0.0)
        lab = torch.zeros(shape[1:], dtype=torch.uint8)
        for value, logits in items:
            win = logits > best
            best = torch.where(win, logits, best)
            lab[win] = value
        out[s] = lab.numpy()
    return out


def write_prediction(path: str, slices: np.ndarray, axis: int, reference) -> None:
    """Label slices back to the original grid, with the reference's geometry, as NIfTI. `reference`: the
    case's manifest row (exact; needed for 2D files, whose spacing comes from the config) or an image path.
    A 2D image (one slice) gets a 2D NIfTI in its own 2D geometry."""
    size, spacing, origin, direction = reference_geometry(reference)
    array = from_slices(slices, axis)
    img = sitk.GetImageFromArray(array[0] if len(size) == 2 else array)
    if img.GetSize() != size:
        raise RuntimeError(f"{path}: assembled size {img.GetSize()} differs from the image's size {size}")
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def eval_cases(layout: Layout, dataset: str) -> list[str]:
    """The cases every method is scored on: the test part of the dataset's split."""
    return cases_in(load_split(layout, dataset), "test")


def infer_dataset(
    layout: Layout, dataset: str, method: str, method_cfg: dict, model_cfg: dict, protocol: str, device: str = "auto"
) -> list[str]:
    """Predict every evaluation case of a dataset with one method and protocol; returns written paths."""
    model = load_model(model_cfg, resolve_device(device))
    if method_cfg["adaptation"] != "none":
        train.load_adapted(model, layout.checkpoint(method), method_cfg["adaptation"])
    table, _ = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    index = read_json(layout.embed_index(method_cfg["model"], dataset))["cases"]
    prompts = load_prompts(layout, dataset, protocol)["cases"]
    run = run_name(method, protocol)
    written = []
    for case in tqdm(eval_cases(layout, dataset), desc=f"infer {run}/{dataset}", unit="case"):
        pre = load_preprocessed(layout, dataset, case)
        n, h, w = pre["labels"].shape  # (slices of an RGB image carry a channel axis)
        embeddings = load_case_embeddings(index[case])
        by_slice = defaultdict(list)
        for p in prompts[case]:
            by_slice[p["slice"]].append(p)
        predictions = {}
        for s, items in by_slice.items():
            if s not in embeddings:
                raise KeyError(f"case {case}: slice {s} has a prompt but no cached embedding")
            logits = decode_prompts(model, embeddings[s], items, (h, w))
            predictions[s] = [(p["label"], logits[k]) for k, p in enumerate(items)]
        out = layout.prediction(run, dataset, case)
        write_prediction(out, assemble((n, h, w), predictions), int(pre["axis"]), rows.loc[case, "images"][0])
        written.append(out)
    log.info("infer %s/%s: %d cases", run, dataset, len(written))
    return written
