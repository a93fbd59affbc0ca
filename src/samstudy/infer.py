"""Inference: a (zero-shot or adapted) SAM model under one prompt protocol, assembled into NIfTI volumes.

Protocols: stored per-slice prompts (box, box_jitter, points<k>) are decoded slice by slice; `box3d`
propagates one 3D box per object from its middle slice (`predict_box3d`); `clicks` runs iterative
correction (`predict_clicks`) and writes the volume after every click (`clicks/<case>/click_NN.nii.gz`)
for evaluate's Dice-vs-clicks table. Dynamic protocols record the prompts they used
(`prompts/<case>.json` beside the predictions).

Slices without a prompt get no prediction (background): they are scored, not dropped. Where two labels
(or two objects) claim a voxel, the one with the larger logit wins; a voxel is foreground where that
logit is > 0. The volume gets the original image's geometry (size, spacing, origin, direction).
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from samstudy import adapt
from samstudy.embed import load_case_embeddings
from samstudy.ingest import load_dataset_table, reference_geometry
from samstudy.io import atomic_path, read_json, write_json
from samstudy.models import LoadedModel, load_model, resolve_device
from samstudy.paths import Layout, run_name
from samstudy.preprocess import box_to_model, from_slices, load_preprocessed, logits_to_native
from samstudy.prompts import grow_box, load_prompts, next_click, prompt_target, tight_box
from samstudy.splits import eval_cases

log = logging.getLogger(__name__)


def _points_to_model(xy: np.ndarray, hw: tuple[int, int], spec) -> np.ndarray:
    """(N, k, 2) XY native pixels -> the model input frame (the same scaling as boxes)."""
    scaled = box_to_model(np.concatenate([xy, xy], axis=-1).reshape(-1, 4), hw, spec)[:, :2]
    return scaled.reshape(xy.shape)


@torch.inference_mode()
def decode(
    model: LoadedModel,
    embedding: np.ndarray,
    prompts: list[dict],
    hw: tuple[int, int],
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode N prompts of the same form on one slice: (low-res logits (N, 1, L, L), native logits (N, H, W)).

    A prompt has a `box`, `points` + `point_labels`, or both; all N must have the same form and number
    of points. `mask_input` (N, 1, L, L), L = model.low_res_size, is SAM's mask prompt: the previous
    round's low-res logits (iterative correction). A single point with nothing else is ambiguous, so it
    uses SAM's three-mask output and keeps the mask with the highest predicted IoU (as SAM's authors
    recommend); every other prompt uses the single-mask output. The low-res logits are returned on CPU.
    """
    forms = {("box" in p, len(p.get("points", ()))) for p in prompts}
    if len(forms) != 1:
        raise ValueError(f"one decoder call needs prompts of one form, got {sorted(forms)}")
    has_box, n_points = forms.pop()
    device = next(model.sam.parameters()).device
    emb = torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None].to(device)
    boxes = points = masks = None
    if has_box:
        boxes = torch.from_numpy(box_to_model(np.array([p["box"] for p in prompts]), hw, model.spec)).to(device)
    if n_points:
        xy = np.array([p["points"] for p in prompts], dtype=np.float32)  # (N, k, 2)
        coords = torch.from_numpy(_points_to_model(xy, hw, model.spec)).to(device)
        point_labels = torch.tensor([p["point_labels"] for p in prompts], dtype=torch.int, device=device)
        points = (coords, point_labels)
    if mask_input is not None:
        masks = mask_input.to(device=device, dtype=torch.float32)
    multimask = not has_box and n_points == 1 and masks is None
    sparse, dense = model.sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
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
    low_res = low_res.float()
    return low_res.cpu(), logits_to_native(low_res, hw, model.spec).cpu()


def decode_prompts(model: LoadedModel, embedding: np.ndarray, prompts: list[dict], hw: tuple[int, int]) -> torch.Tensor:
    """Mask logits (N, H, W) in the native slice for N prompts of one form on one slice."""
    return decode(model, embedding, prompts, hw)[1]


def decode_boxes(model: LoadedModel, embedding: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """Mask logits (N, H, W) for N XYXY boxes on one slice embedding."""
    return decode_prompts(model, embedding, [{"box": list(b)} for b in boxes], hw)


def _embedding(embeddings: dict[int, np.ndarray], s: int, case: str) -> np.ndarray:
    if s not in embeddings:
        raise KeyError(
            f"case {case}: slice {s} needs a prediction but has no cached embedding "
            "(embed.slices: needed embeds each label's slice range; use embed.slices: all or a slice_margin)"
        )
    return embeddings[s]


Predictions = dict[int, list[tuple[int, torch.Tensor]]]  # slice -> [(label value, native logits (H, W))]


def predict_slices(
    model: LoadedModel, embeddings: dict[int, np.ndarray], prompts: list[dict], hw: tuple[int, int], case: str
) -> Predictions:
    """Stored per-slice prompts (box, box_jitter, points<k>): one decoder call per slice."""
    by_slice = defaultdict(list)
    for p in prompts:
        by_slice[p["slice"]].append(p)
    predictions: Predictions = {}
    for s, items in by_slice.items():
        logits = decode_prompts(model, _embedding(embeddings, s, case), items, hw)
        predictions[s] = [(p["label"], logits[k]) for k, p in enumerate(items)]
    return predictions


def predict_box3d(
    model: LoadedModel,
    embeddings: dict[int, np.ndarray],
    prompts: list[dict],
    hw: tuple[int, int],
    margin_px: int,
    case: str,
) -> tuple[Predictions, list[dict]]:
    """One 3D box per object, LiteMedSAM style: its xy box on the middle slice of its slice range, then
    slice by slice up and down, each slice prompted with the bounding box (grown by `margin_px`) of the
    previous slice's predicted mask, within the 3D box's slice range [s0, s1] (both ends included).
    A direction stops at the first empty prediction; slices not reached get nothing (they are scored).

    Returns the predictions and the record of the boxes actually used, per object.
    """
    predictions: Predictions = defaultdict(list)
    records = []
    for prompt in prompts:
        x0, y0, s0, x1, y1, s1 = prompt["box3d"]
        middle = (s0 + s1) // 2
        used = []
        first = _predict_box(model, embeddings, hw, case, prompt["label"], middle, [x0, y0, x1, y1], predictions, used)
        for step in (1, -1):
            previous, s = first, middle + step
            while s0 <= s <= s1 and previous.any():
                box = grow_box(tight_box(previous.numpy()), margin_px, hw)
                previous = _predict_box(model, embeddings, hw, case, prompt["label"], s, box, predictions, used)
                s += step
        records.append({**prompt, "propagation": sorted(used, key=lambda u: u["slice"])})
    return dict(predictions), records


def _predict_box(
    model: LoadedModel,
    embeddings: dict[int, np.ndarray],
    hw: tuple[int, int],
    case: str,
    label: int,
    s: int,
    box: list[int],
    predictions: Predictions,
    used: list[dict],
) -> torch.Tensor:
    """One box on slice s: its logits go to `predictions`, the box to `used`; returns the mask."""
    logits = decode_prompts(model, _embedding(embeddings, s, case), [{"box": box}], hw)[0]
    predictions[s].append((label, logits))
    used.append({"slice": s, "box": box, "voxels": int((logits > 0).sum())})
    return logits > 0


def _assemble_slice(items: list[dict], logits: list[torch.Tensor], hw: tuple[int, int]) -> np.ndarray:
    """One slice's label map from its objects' logits (overlaps to the larger logit)."""
    return assemble((1, *hw), {0: [(p["label"], logits[k]) for k, p in enumerate(items)]})[0]


def predict_clicks(
    model: LoadedModel,
    embeddings: dict[int, np.ndarray],
    prompts: list[dict],
    labels: np.ndarray,
    rounds: int,
    case: str,
) -> tuple[np.ndarray, list[dict]]:
    """Iterative correction (SAM-Med2D / micro-sam style): the stored starting prompt (a box or one
    point) of every object, then `rounds` rounds; each round adds one click per object at the centre of
    its largest error region (`prompts.next_click`: positive in a missed area, negative in a false one)
    and feeds the object's previous low-res logits back in as SAM's mask prompt. An object whose mask
    is already exact gets no more clicks and keeps its mask. The error is judged on each object's own
    mask (logits > 0) against the object it stands for (`prompts.prompt_target`).

    Returns the label slices after 0..rounds clicks, (rounds + 1, slices, H, W) uint8 (overlaps to the
    larger logit, as everywhere), and per object its start prompt and the clicks it got.
    """
    n, h, w = labels.shape
    stack = np.zeros((rounds + 1, n, h, w), dtype=np.uint8)
    by_slice = defaultdict(list)
    for p in prompts:
        by_slice[p["slice"]].append(p)
    records = []
    for s, items in sorted(by_slice.items()):
        emb = _embedding(embeddings, s, case)
        targets = [prompt_target(labels[s], p) for p in items]
        forms = [{key: p[key] for key in ("box", "points", "point_labels") if key in p} for p in items]
        low, native = decode(model, emb, forms, (h, w))
        low_res, logits = list(low), list(native)  # per object; replaced (never modified) each round
        clicks: list[list[dict]] = [[] for _ in items]
        active = list(range(len(items)))
        stack[0, s] = _assemble_slice(items, logits, (h, w))
        for r in range(1, rounds + 1):
            still = []
            for k in active:
                click = next_click(logits[k].numpy() > 0, targets[k])
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
            stack[r, s] = _assemble_slice(items, logits, (h, w))
        for k, p in enumerate(items):
            records.append({**p, "clicks": clicks[k]})
    return stack, records


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


def method_model_and_embeddings(
    layout: Layout, dataset: str, method: str, method_cfg: dict, model_cfg: dict, device: str
) -> tuple[LoadedModel, dict[str, dict]]:
    """The method's model (base + adapted checkpoint) and the embedding index of the dataset's evaluation
    cases: the base model's, or, for methods that adapt the encoder (LoRA, adapters, full), the adapted
    encoder's (written by `embed.embed_adapted`)."""
    model = load_model(model_cfg, resolve_device(device))
    adaptation = method_cfg["adaptation"]
    if adaptation != "none":
        adapt.load_adapted(model, layout.checkpoint(method), adaptation)
    if adapt.adapts_encoder(adaptation):
        path = layout.adapted_embed_index(method, dataset)
        index = read_json(path)
        if index["model_sha256"] != model.weights_id:
            raise ValueError(f"{path}: embedded by other weights than {method}'s checkpoint; rerun embed_adapted")
        return model, index["cases"]
    return model, read_json(layout.embed_index(method_cfg["model"], dataset))["cases"]


def infer_dataset(
    layout: Layout,
    dataset: str,
    method: str,
    method_cfg: dict,
    model_cfg: dict,
    protocol: str,
    device: str = "auto",
) -> list[str]:
    """Predict every evaluation case of a dataset with one method and protocol; returns written paths."""
    model, index = method_model_and_embeddings(layout, dataset, method, method_cfg, model_cfg, device)
    table, _ = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    artifact = load_prompts(layout, dataset, protocol)
    prompts, settings = artifact["cases"], artifact.get("settings", {})
    run = run_name(method, protocol)
    written = []
    for case in tqdm(eval_cases(layout, dataset), desc=f"infer {run}/{dataset}", unit="case"):
        pre = load_preprocessed(layout, dataset, case)
        n, h, w = pre["labels"].shape  # (slices of an RGB image carry a channel axis)
        embeddings = load_case_embeddings(index[case])
        out = layout.prediction(run, dataset, case)
        axis, reference = int(pre["axis"]), rows.loc[case]  # the manifest row: its geometry is the image's
        record: dict | None = None
        if protocol == "clicks":
            stack, objects = predict_clicks(
                model, embeddings, prompts[case], pre["labels"], settings["clicks"]["rounds"], case
            )
            files = []
            for k, label_slices in enumerate(stack):  # the volume after every click, scored by evaluate
                files.append(layout.click_prediction(run, dataset, case, k))
                write_prediction(files[-1], label_slices, axis, reference)
            record = {"rounds": settings["clicks"]["rounds"], "click_predictions": files, "objects": objects}
            label_slices = stack[-1]
        elif protocol == "box3d":
            predictions, objects = predict_box3d(
                model, embeddings, prompts[case], (h, w), settings["box3d"]["margin_px"], case
            )
            record = {"objects": objects}
            label_slices = assemble((n, h, w), predictions)
        else:
            label_slices = assemble((n, h, w), predict_slices(model, embeddings, prompts[case], (h, w), case))
        if record is not None:  # the prompts the dynamic protocols actually used, beside the prediction
            write_json(layout.prompt_record(run, dataset, case), {"case": case, "protocol": protocol, **record})
        write_prediction(out, label_slices, axis, reference)
        written.append(out)
    log.info("infer %s/%s: %d cases", run, dataset, len(written))
    return written
