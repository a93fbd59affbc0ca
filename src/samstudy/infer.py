"""Inference: a (zero-shot or adapted) SAM model under one prompt protocol, assembled into NIfTI volumes.

Protocols: stored per-slice prompts (box, box_jitter, points<k>) are decoded slice by slice; `box3d`
propagates one 3D box per object from its middle slice (`predict_box3d`); `clicks` runs iterative
correction (`predict_clicks`) and writes the volume after every click (`clicks/<case>/click_NN.nii.gz`)
for evaluate's Dice-vs-clicks table. Dynamic protocols record the prompts they used
(`prompts/<case>.json` beside the predictions).

Each model family (samstudy.families) scales the prompts, puts the decoder's logits back into the native
slice and thresholds them as its official code does. Slices without a prompt get no prediction
(background): they are scored, not dropped. Where two labels (or two objects) claim a voxel, the later
one wins, as in the official code (`infer.overlap: official`), or the larger score (`max_logit`). The
volume gets the original image's geometry (size, spacing, origin, direction); `run.json` beside the
predictions records how they were made (family, transform, threshold, overlap rule).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from tqdm import tqdm

from samstudy import adapt
from samstudy.cases import eval_cases, load_dataset_table, reference_geometry
from samstudy.embed import load_case_embeddings
from samstudy.io import atomic_path, read_json, write_json
from samstudy.models import LoadedModel, load_model, resolve_device
from samstudy.paths import Layout, run_name
from samstudy.preprocess import from_slices, load_preprocessed
from samstudy.prompts import load_prompts, next_click, prompt_target

log = logging.getLogger(__name__)


@torch.inference_mode()
def decode(
    model: LoadedModel,
    embedding: np.ndarray,
    prompts: list[dict],
    hw: tuple[int, int],
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode N prompts of the same form on one slice: (low-res logits (N, 1, L, L), native scores (N, H, W)).

    A prompt has a `box` and/or `points` + `point_labels` in native slice pixels (the family scales them
    into its model frame, as its official code does), or a `model_box` already in the model frame (3D
    propagation); all N must have the same form and number of points. Foreground is where the score is >
    `model.family.threshold`. `mask_input` (N, 1, L, L), L = model.low_res_size, is SAM's mask prompt: the
    previous round's low-res logits (iterative correction). A single point with nothing else is
    ambiguous, so it uses SAM's three-mask output and keeps the mask with the highest predicted IoU (as
    SAM's authors recommend); every other prompt uses the single-mask output (`multimask_output=False`,
    as the official box inference). The low-res logits are returned on CPU.
    """
    forms = {("box" in p or "model_box" in p, len(p.get("points", ()))) for p in prompts}
    if len(forms) != 1:
        raise ValueError(f"one decoder call needs prompts of one form, got {sorted(forms)}")
    has_box, n_points = forms.pop()
    family = model.family
    device = next(model.sam.parameters()).device
    emb = torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None].to(device)
    boxes = points = masks = None
    if has_box:
        framed = [
            p["model_box"] if "model_box" in p else family.boxes_to_model(np.array([p["box"]]), hw)[0] for p in prompts
        ]
        boxes = torch.from_numpy(np.asarray(framed, dtype=np.float32)).to(device)
    if n_points:
        xy = np.array([p["points"] for p in prompts], dtype=np.float64)  # (N, k, 2)
        coords = torch.from_numpy(family.points_to_model(xy, hw)).to(device)
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
    return family.mask_prompt(low_res).cpu(), family.postprocess(low_res, hw).cpu()


def decode_prompts(model: LoadedModel, embedding: np.ndarray, prompts: list[dict], hw: tuple[int, int]) -> torch.Tensor:
    """Mask scores (N, H, W) in the native slice for N prompts of one form on one slice."""
    return decode(model, embedding, prompts, hw)[1]


def decode_boxes(model: LoadedModel, embedding: np.ndarray, boxes: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """Mask scores (N, H, W) for N XYXY boxes on one slice embedding."""
    return decode_prompts(model, embedding, [{"box": list(b)} for b in boxes], hw)


def _embedding(embeddings: dict[int, np.ndarray], s: int, case: str) -> np.ndarray:
    if s not in embeddings:
        raise KeyError(
            f"case {case}: slice {s} needs a prediction but has no cached embedding "
            "(embed.slices: needed embeds each label's slice range; use embed.slices: all or a slice_margin)"
        )
    return embeddings[s]


Predictions = dict[int, list[tuple[int, torch.Tensor]]]  # slice -> [(label value, native scores (H, W))]


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
            scores = decode_prompts(model, _embedding(embeddings, s, case), [{"model_box": box}], hw)[0]
            masks[s] = (scores > family.threshold).numpy()
            predictions[s].append((prompt["label"], scores))
            used.append(
                {"slice": s, "model_box": [float(v) for v in box], "source": source, "voxels": int(masks[s].sum())}
            )
        records.append({**prompt, "propagation": sorted(used, key=lambda u: u["slice"])})
    return dict(predictions), records


def _assemble_slice(
    items: list[dict], scores: list[torch.Tensor], hw: tuple[int, int], threshold: float, overlap: str
) -> np.ndarray:
    """One slice's label map from its objects' scores."""
    return assemble((1, *hw), {0: [(p["label"], scores[k]) for k, p in enumerate(items)]}, threshold, overlap)[0]


def predict_clicks(
    model: LoadedModel,
    embeddings: dict[int, np.ndarray],
    prompts: list[dict],
    labels: np.ndarray,
    rounds: int,
    case: str,
    overlap: str = "official",
) -> tuple[np.ndarray, list[dict]]:
    """Iterative correction (SAM-Med2D / micro-sam style): the stored starting prompt (a box or one
    point) of every object, then `rounds` rounds; each round adds one click per object at the centre of
    its largest error region (`prompts.next_click`: positive in a missed area, negative in a false one)
    and feeds the object's previous low-res logits back in as SAM's mask prompt. An object whose mask
    is already exact gets no more clicks and keeps its mask. The error is judged on each object's own
    mask (score > the family's threshold) against the object it stands for (`prompts.prompt_target`).

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
        emb = _embedding(embeddings, s, case)
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


OVERLAP_RULES = ("official", "max_logit")


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
    overlap: str = "official",
) -> list[str]:
    """Predict every evaluation case of a dataset with one method and protocol; returns written paths."""
    if method_cfg["adaptation"] == adapt.PROMPTFREE:  # no prompts: protocol "none"
        return infer_promptfree(layout, dataset, method, method_cfg, model_cfg, protocol, device)
    model, index = method_model_and_embeddings(layout, dataset, method, method_cfg, model_cfg, device)
    threshold = model.family.threshold
    table, _ = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    artifact = load_prompts(layout, dataset, protocol)
    prompts, settings = artifact["cases"], artifact.get("settings", {})
    kind = artifact.get("kind", protocol)  # a derived protocol (prompts from another run) names its kind
    run = run_name(method, protocol)
    written = []
    for case in tqdm(eval_cases(layout, dataset), desc=f"infer {run}/{dataset}", unit="case"):
        pre = load_preprocessed(layout, dataset, case)
        n, h, w = pre["labels"].shape  # (slices of an RGB image carry a channel axis)
        embeddings = load_case_embeddings(index[case])
        out = layout.prediction(run, dataset, case)
        axis, reference = int(pre["axis"]), rows.loc[case]  # the manifest row: its geometry is the image's
        record: dict | None = None
        if kind == "clicks":
            stack, objects = predict_clicks(
                model, embeddings, prompts[case], pre["labels"], settings["clicks"]["rounds"], case, overlap
            )
            files = []
            for k, label_slices in enumerate(stack):  # the volume after every click, scored by evaluate
                files.append(layout.click_prediction(run, dataset, case, k))
                write_prediction(files[-1], label_slices, axis, reference)
            # relative to the run's predictions folder: the same record in a shard's folder and the gathered one
            stored = [str(Path(f).relative_to(layout.prediction_dir(run, dataset))) for f in files]
            record = {"rounds": settings["clicks"]["rounds"], "click_predictions": stored, "objects": objects}
            label_slices = stack[-1]
        elif kind == "box3d":
            predictions, objects = predict_box3d(
                model, embeddings, prompts[case], (h, w), settings["box3d"]["margin_px"], case
            )
            record = {"objects": objects}
            label_slices = assemble((n, h, w), predictions, threshold, overlap)
        elif kind == "propagate":  # SAM 2: one prompted slice per object, propagated by its video memory
            from samstudy.propagate import predict_propagate

            predictions, objects = predict_propagate(model, embeddings, prompts[case], pre["slices"], case)
            record = {"objects": objects}
            label_slices = assemble((n, h, w), predictions, threshold, overlap)
        else:
            predictions = predict_slices(model, embeddings, prompts[case], (h, w), case)
            label_slices = assemble((n, h, w), predictions, threshold, overlap)
        if record is not None:  # the prompts the dynamic protocols actually used, beside the prediction
            write_json(layout.prompt_record(run, dataset, case), {"case": case, "protocol": protocol, **record})
        write_prediction(out, label_slices, axis, reference)
        written.append(out)
    record = {
        "run": run,
        "dataset": dataset,
        "protocol": protocol,
        "prompt_source": artifact.get("source", "ground_truth"),
        "overlap": overlap,
        **model.family.describe(),
    }
    write_json(layout.run_record(run, dataset), record)
    log.info("infer %s/%s: %d cases (%s)", run, dataset, len(written), record)
    return written


PROMPT_FREE = "none"  # the protocol (and prompt source) of prompt-free runs


@torch.inference_mode()
def predict_promptfree(
    model: LoadedModel,
    embeddings: dict[int, np.ndarray],
    n_slices: int,
    hw: tuple[int, int],
    classes: dict[int, int],
    case: str = "",
    batch_size: int = 8,
) -> np.ndarray:
    """A promptfree (SAMed-style) model's label slices (n, H, W) uint8, with no prompt: every slice decoded
    from its embedding alone (`adapt.promptfree_logits`), the logits of the background (channel 0) and of
    the dataset's classes (`classes`: decoder channel -> label value, `adapt.dataset_classes`) put back into
    the native slice with the family's geometry (`logits_to_native`), then the argmax over them (SAMed
    `utils.py` test_single_volume, line 133: argmax of the softmax over the classes of the upsampled
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
    device = next(model.sam.parameters()).device
    for start in range(0, n_slices, batch_size):
        stop = min(start + batch_size, n_slices)
        emb = np.stack([np.asarray(embeddings[s], dtype=np.float32) for s in range(start, stop)])
        low_res = adapt.promptfree_logits(model, torch.from_numpy(emb).to(device))[:, channels].float()
        winner = model.family.logits_to_native(low_res, hw).argmax(dim=1).cpu()
        out[start:stop] = values[winner].numpy()
    return out


def infer_promptfree(
    layout: Layout,
    dataset: str,
    method: str,
    method_cfg: dict,
    model_cfg: dict,
    protocol: str = PROMPT_FREE,
    device: str = "auto",
) -> list[str]:
    """Predict every evaluation case of a dataset with a promptfree method (no prompts file is read; run
    `<method>` + protocol "none"); a dataset the method has no classes for gets empty predictions."""
    if protocol != PROMPT_FREE:
        raise ValueError(f"method {method} is prompt-free: its protocol is '{PROMPT_FREE}', not '{protocol}'")
    model, index = method_model_and_embeddings(layout, dataset, method, method_cfg, model_cfg, device)
    classes = adapt.dataset_classes(model.sam.mask_decoder.samstudy_classes, dataset)
    if not classes:
        log.warning(
            "infer %s/%s: %s was trained on no class of this dataset: its predictions are empty",
            method,
            dataset,
            method,
        )
    table, _ = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    run = run_name(method, protocol)
    written = []
    for case in tqdm(eval_cases(layout, dataset), desc=f"infer {run}/{dataset}", unit="case"):
        pre = load_preprocessed(layout, dataset, case)
        n, h, w = pre["labels"].shape
        embeddings = load_case_embeddings(index[case]) if classes else {}
        label_slices = predict_promptfree(model, embeddings, n, (h, w), classes, case)
        out = layout.prediction(run, dataset, case)
        write_prediction(out, label_slices, int(pre["axis"]), rows.loc[case])
        written.append(out)
    record = {
        "run": run,
        "dataset": dataset,
        "protocol": protocol,
        "prompt_source": PROMPT_FREE,
        "classes": {str(k): v for k, v in classes.items()},  # decoder channel -> label value
        "rule": "argmax over background + the dataset's classes of the logits in the native slice",
        **model.family.describe(),
    }
    write_json(layout.run_record(run, dataset), record)
    log.info("infer %s/%s: %d cases (%s)", run, dataset, len(written), record)
    return written
