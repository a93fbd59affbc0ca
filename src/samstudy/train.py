"""Adaptation training: decoder, LoRA, adapters or full fine-tuning (see samstudy.adapt for each method).

`decoder` trains from cached embeddings (the encoder never runs); the encoder methods run the (adapted)
encoder on the preprocessed slices. Common to all: jittered GT boxes simulated per step, Dice + BCE loss,
AdamW, seeded, batches of slices drawn across cases, validated on the study's validation split every
epoch, best checkpoint by validation Dice, early stopping, resumable from the last epoch, bf16 autocast on
a GPU. A checkpoint holds only the trained tensors plus metadata (base model hash, method and its options,
config, epoch, validation Dice); loading checks the base model hash.

`promptfree` (SAMed style, samstudy.adapt) trains its multi-class decoder from the cached embeddings too,
with no prompt: one sample per embedded slice of the training cases, its target the slice's label map as
class indices in the decoder's low-res frame, CE + Dice over the classes; the checkpoint is chosen by the
mean foreground Dice on the validation split (`promptfree_validation_dice`). The epoch loop (`_fit`:
seeded order, progress, validation, best state, early stopping, resume, curves) is shared.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from samstudy import adapt
from samstudy.embed import load_case_embeddings, resolve_precision, select_slices
from samstudy.io import atomic_path, read_json, sha256_json, torch_save
from samstudy.models import LoadedModel, resolve_device
from samstudy.paths import Layout
from samstudy.preprocess import load_preprocessed
from samstudy.prompts import case_rng, jitter_box, tight_box
from samstudy.splits import cases_in, load_split

log = logging.getLogger(__name__)

CURVE_FIELDS = ["epoch", "train_loss", "val_dice", "best_val_dice"]


def collect_samples(
    layout: Layout, datasets: list[str], model_name: str, part: str, fold: int, source: str = "embeddings"
) -> list[dict]:
    """One sample per label per labelled slice of one split part: its mask, tight box, and either the
    slice's cached embedding (`source="embeddings"`, the decoder method) or its image (`"images"`)."""
    samples = []
    for dataset in datasets:
        split = load_split(layout, dataset)
        index = read_json(layout.embed_index(model_name, dataset))["cases"] if source == "embeddings" else None
        for case in cases_in(split, part, fold):
            pre = load_preprocessed(layout, dataset, case)
            if index is not None:
                inputs = {s: {"embedding": e} for s, e in load_case_embeddings(index[case]).items()}
            else:
                inputs = {int(s): {"image": pre["slices"][s]} for s in select_slices(pre["labels"], "needed", 0)}
            for s, item in inputs.items():
                for value in np.unique(pre["labels"][s]):
                    if value == 0:
                        continue
                    mask = pre["labels"][s] == value
                    samples.append(
                        {
                            "id": f"{dataset}/{case}/{s}/{value}",
                            "slice": f"{dataset}/{case}/{s}",
                            **item,
                            "mask": mask,
                            "box": tight_box(mask),
                        }
                    )
    return samples


def slice_embeddings(model: LoadedModel, groups: list[list[dict]], device) -> torch.Tensor:
    """Image embeddings (G, C, h, w) of the slices of G sample groups: cached ones, or the encoder's
    (with gradients when the encoder is being trained)."""
    first = [g[0] for g in groups]
    if "embedding" in first[0]:
        return torch.from_numpy(np.stack([f["embedding"] for f in first]).astype(np.float32)).to(device)
    return model.predictor.encode_images([f["image"] for f in first], device)


def _forward(model: LoadedModel, embedding: torch.Tensor, boxes: np.ndarray, hw) -> torch.Tensor:
    """Low-res logits (N, L, L) of N boxes on one slice embedding: the predictor's training forward."""
    return model.predictor.train_logits(embedding, boxes, hw)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(-2, -1))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def _target(model: LoadedModel, masks: list[np.ndarray], device) -> torch.Tensor:
    return torch.from_numpy(np.stack([model.family.mask_to_low_res(m, model.low_res_size) for m in masks])).to(device)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validation_dice(
    model: LoadedModel, samples: list[dict], device, batch_size: int = 8, precision: str = "fp32"
) -> float:
    """Mean Dice in the decoder's frame with tight boxes (the checkpoint-choice score)."""
    model.sam.eval()
    scores = []
    groups = _by_slice(samples)
    for start in range(0, len(groups), batch_size):
        chunk = groups[start : start + batch_size]
        with _autocast(device, precision):
            embeddings = slice_embeddings(model, chunk, device)
            for emb, group in zip(embeddings, chunk, strict=True):
                logits = _forward(model, emb, np.array([s["box"] for s in group]), group[0]["mask"].shape)
                target = _target(model, [s["mask"] for s in group], device)
                pred = (logits.float() > 0).float()
                inter = (pred * target).sum(dim=(-2, -1))
                dice = (2 * inter + 1e-6) / (pred.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1e-6)
                scores.extend(dice.tolist())
    return float(np.mean(scores)) if scores else float("nan")


def _by_slice(samples: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["slice"], []).append(s)
    return list(groups.values())


def train_step(
    model: LoadedModel,
    opt: torch.optim.Optimizer,
    batch: list[dict],
    jitter_px: int,
    rng: np.random.Generator,
    device,
    precision: str = "fp32",
) -> float:
    """One optimiser step on a batch of samples (any mix of slices and cases); returns the mean loss."""
    opt.zero_grad()
    groups = _by_slice(batch)
    total = torch.zeros((), device=device)
    with _autocast(device, precision):
        embeddings = slice_embeddings(model, groups, device)
        for emb, group in zip(embeddings, groups, strict=True):
            hw = group[0]["mask"].shape
            boxes = np.array([jitter_box(s["box"], jitter_px, hw, rng) for s in group])
            logits = _forward(model, emb, boxes, hw).float()
            total = total + dice_bce_loss(logits, _target(model, [s["mask"] for s in group], device)) * len(group)
    loss = total / len(batch)
    loss.backward()
    opt.step()
    return loss.detach().item()


def _meta(method: str, method_cfg: dict, model: LoadedModel, options: dict, datasets, settings, seed) -> dict:
    run_id = sha256_json(
        {"method": method_cfg, "train": settings, "seed": seed, "base": model.sha256, "datasets": datasets}
    )
    return {
        "method": method,
        "adaptation": method_cfg["adaptation"],
        "options": options,
        "base_model": method_cfg["model"],
        "base_sha256": model.sha256,
        "train": settings,
        "seed": seed,
        "run_id": run_id,
        "parameters": adapt.count_parameters(model),
        # the job's torch threads (rule threads, a profile's set-threads): on a CPU they change the float sums
        # of training, so the same config trained with other threads gives slightly different weights
        "torch_threads": torch.get_num_threads(),
    }


def train_method(
    layout: Layout, method: str, method_cfg: dict, model_cfg: dict, datasets: list[str], settings: dict, seed: int
) -> dict:
    """Train one adaptation method on the training part of the given datasets; write checkpoint + curves."""
    torch.manual_seed(seed)
    random.seed(seed)
    device = resolve_device(settings["device"])
    precision = resolve_precision(settings.get("precision", "auto"), device)
    adaptation = method_cfg["adaptation"]
    options = adapt.method_options(method_cfg)
    fold = settings["fold"]
    batch_size = settings["batch_size"]
    if adaptation == adapt.PROMPTFREE:  # its decoder's classes come from the training slices first
        return _train_promptfree(layout, method, method_cfg, model_cfg, options, datasets, settings, seed, precision)
    model = adapt.load_method_model(model_cfg, method_cfg, device)  # base + the method's new layers
    params = adapt.trainable_parameters(model)
    counts = adapt.count_parameters(model)
    log.info("%s (%s): %d trainable of %d parameters", method, adaptation, counts["trainable"], counts["total"])
    source = "images" if adapt.adapts_encoder(adaptation) else "embeddings"
    train = collect_samples(layout, datasets, method_cfg["model"], "train", fold, source)
    val = collect_samples(layout, datasets, method_cfg["model"], "val", fold, source)
    if not train:
        raise ValueError(f"method {method}: no labelled training slices in datasets {datasets}")
    opt = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    meta = _meta(method, method_cfg, model, options, datasets, settings, seed)

    def step(batch: list[dict], rng: np.random.Generator) -> float:
        return train_step(model, opt, batch, settings["jitter_px"], rng, device, precision)

    def validate() -> float:  # looked up at call time (tests replace validation_dice)
        return validation_dice(model, val, device, batch_size, precision)

    return _fit(layout, method, model, opt, meta, train, settings, seed, step, validate if val else None)


def _fit(
    layout: Layout,
    method: str,
    model: LoadedModel,
    opt: torch.optim.Optimizer,
    meta: dict,
    train: list[dict],
    settings: dict,
    seed: int,
    step,
    validate,
    untrained_eligible: bool = True,
) -> dict:
    """The epoch loop every method shares: `step(batch, rng) -> loss` on batches of the training samples
    in a seeded order, `validate() -> score` after every epoch (None: minus the mean training loss),
    best state kept, early stopping, `last.pt` for resuming, then the checkpoint and the curves.
    `untrained_eligible=False`: the state before training (epoch 0) is scored for the curves but never
    chosen (a method whose untrained state is no usable model: promptfree's new class channels)."""
    adaptation = meta["adaptation"]
    run_id = meta["run_id"]
    last_path = Path(layout.model_dir(method)) / "last.pt"
    start, best, curves, best_state, stale = 0, -1.0, [], None, 0
    if last_path.is_file():  # resume after an interruption, only if it is the same training run
        last = torch.load(last_path, map_location="cpu", weights_only=True)
        if last["meta"]["run_id"] == run_id:
            model.sam.load_state_dict(last["state"], strict=False)
            opt.load_state_dict(last["optimizer"])
            start, best, curves, best_state = last["epoch"] + 1, last["best"], last["curves"], last["best_state"]
            # the early-stopping count and torch's random state as they were: the same result as a run
            # that was never interrupted
            stale = last.get("stale", 0)
            if "torch_rng" in last:
                torch.set_rng_state(last["torch_rng"])
            log.info("resuming %s from epoch %d", method, start)
    batch_size = settings["batch_size"]
    if start == 0:
        # without validation cases the score is minus the training loss; before training there is none
        zero = validate() if validate is not None else -float("inf")
        best = zero if untrained_eligible else -float("inf")
        shown = best if untrained_eligible else float("nan")  # no eligible state yet
        curves.append({"epoch": 0, "train_loss": float("nan"), "val_dice": zero, "best_val_dice": shown})
        best_state = adapt.trained_state(model, adaptation)
        start = 1
    patience = settings.get("patience", 5)
    for epoch in range(start, settings["epochs"] + 1):
        adapt.train_mode(model, adaptation)
        rng = case_rng(seed, method, str(epoch))
        order = rng.permutation(len(train))
        losses = []
        batch = [train[i] for i in order]
        bar = tqdm(range(0, len(batch), batch_size), desc=f"train {method} epoch {epoch}", unit="batch")
        for b in bar:
            losses.append(step(batch[b : b + batch_size], rng))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        score = validate() if validate is not None else -float(np.mean(losses))
        if score > best:
            best, best_state, stale = score, adapt.trained_state(model, adaptation), 0
        else:
            stale += 1
        curves.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": score, "best_val_dice": best})
        log.info("%s epoch %d: loss %.4f val dice %.4f (best %.4f)", method, epoch, np.mean(losses), score, best)
        torch_save(
            {
                "meta": meta,
                "state": adapt.trained_state(model, adaptation),
                "epoch": epoch,
                "optimizer": opt.state_dict(),
                "best": best,
                "curves": curves,
                "best_state": best_state,
                "stale": stale,
                "torch_rng": torch.get_rng_state(),
            },
            last_path,
        )
        if stale >= patience:
            log.info("%s: early stop at epoch %d", method, epoch)
            break
    first = 0 if untrained_eligible else min(1, curves[-1]["epoch"])
    best_epoch = max((c for c in curves if c["epoch"] >= first), key=lambda c: c["val_dice"])["epoch"]
    meta.update({"epoch": best_epoch, "val_dice": best})
    torch_save({"meta": meta, "state": best_state}, layout.checkpoint(method))
    with atomic_path(layout.curves(method)) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(curves)
    last_path.unlink(missing_ok=True)
    return meta


# --- promptfree (SAMed style): every class at once from the no-prompt embedding ---------------------------

DICE_WEIGHT = 0.8  # SAMed train.py `--dice_param` default: loss = 0.2 CE + 0.8 Dice (trainer.py calc_loss)
MASKED_LOGIT = -1.0e4  # the logit of a class that does not compete on a slice (another dataset's class)


def collect_slices(layout: Layout, datasets: list[str], model_name: str, part: str, fold: int) -> list[dict]:
    """promptfree: one sample per slice of one split part that has a cached embedding (labelled or not):
    its dataset, embedding and native label slice."""
    samples = []
    for dataset in datasets:
        split = load_split(layout, dataset)
        index = read_json(layout.embed_index(model_name, dataset))["cases"]
        for case in cases_in(split, part, fold):
            pre = load_preprocessed(layout, dataset, case)
            for s, emb in load_case_embeddings(index[case]).items():
                samples.append(
                    {"id": f"{dataset}/{case}/{s}", "dataset": dataset, "embedding": emb, "labels": pre["labels"][s]}
                )
    return samples


def class_map(samples: list[dict]) -> list[list]:
    """The promptfree classes: the (dataset, label value) pairs present in the samples, in order (decoder
    channel k + 1 is class k; channel 0 is the background)."""
    pairs = {(s["dataset"], int(v)) for s in samples for v in np.unique(s["labels"]) if v != 0}
    return [[d, v] for d, v in sorted(pairs)]


def add_targets(model: LoadedModel, samples: list[dict], classes: list) -> None:
    """Each sample's target: its label slice as class indices (int64 (L, L)) in the decoder's low-res frame,
    through the family's geometry (`mask_to_low_res` of each label's mask, nearest-neighbour, so labels
    never overlap), and the classes that compete on it (background + its dataset's, bool (n_classes + 1,)).
    A label value outside the class map (e.g. only in validation cases) counts as background."""
    channel = {(d, int(v)): k for k, (d, v) in enumerate(classes, start=1)}
    size = model.low_res_size
    unknown = set()
    for sample in samples:
        target = np.zeros((size, size), dtype=np.int64)
        for value in np.unique(sample["labels"]):
            if value == 0:
                continue
            k = channel.get((sample["dataset"], int(value)))
            if k is None:
                unknown.add((sample["dataset"], int(value)))
                continue
            target[model.family.mask_to_low_res(sample["labels"] == value, size) > 0.5] = k
        allowed = np.zeros(len(classes) + 1, dtype=bool)
        allowed[[0, *adapt.dataset_classes(classes, sample["dataset"])]] = True
        sample["target"], sample["allowed"] = target, allowed
    if unknown:
        log.warning("promptfree: label values not in the training classes count as background: %s", sorted(unknown))


def _promptfree_batch(model: LoadedModel, batch: list[dict], device) -> tuple[torch.Tensor, ...]:
    """Logits (B, K, L, L) of a batch of slices, other datasets' classes masked out, and targets (B, L, L)."""
    emb = torch.from_numpy(np.stack([s["embedding"] for s in batch]).astype(np.float32)).to(device)
    allowed = torch.from_numpy(np.stack([s["allowed"] for s in batch])).to(device)
    target = torch.from_numpy(np.stack([s["target"] for s in batch])).to(device)
    logits = adapt.promptfree_logits(model, emb).float()
    return logits.masked_fill(~allowed[:, :, None, None], MASKED_LOGIT), target, allowed


def promptfree_loss(logits: torch.Tensor, target: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """SAMed's loss (hitachinsk/SAMed `trainer.py` calc_loss, lines 22-27; `utils.py` DiceLoss, lines
    61-98): (1 - w) CE + w Dice on the low-res logits, w = 0.8; the Dice of each class over the whole
    batch from the softmax, (2 I + 1e-5) / (sum p^2 + sum t^2 + 1e-5), averaged over the classes
    (background included). Across datasets, only the classes that compete on some slice of the batch
    (`allowed`: background + the slices' datasets' classes; the others' logits are masked) are averaged:
    with one dataset that is SAMed's loss exactly."""
    ce = F.cross_entropy(logits, target)
    prob = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = (prob * prob).sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
    return (1 - DICE_WEIGHT) * ce + DICE_WEIGHT * dice[allowed.any(dim=0)].mean()


def promptfree_step(
    model: LoadedModel, opt: torch.optim.Optimizer, batch: list[dict], device, precision: str = "fp32"
) -> float:
    """One optimiser step on a batch of slices (any mix of datasets and cases); returns the loss."""
    opt.zero_grad()
    with _autocast(device, precision):
        loss = promptfree_loss(*_promptfree_batch(model, batch, device))
    loss.backward()
    opt.step()
    return loss.detach().item()


@torch.no_grad()
def promptfree_validation_dice(
    model: LoadedModel, samples: list[dict], device, batch_size: int = 8, precision: str = "fp32"
) -> float:
    """Mean foreground Dice in the decoder's frame (the checkpoint-choice score): each slice's argmax over
    background + its dataset's classes; per class, Dice over all the samples' pixels; the mean over the
    classes present in the targets or the predictions (1.0 when there is none)."""
    model.sam.eval()
    inter = pred_sum = target_sum = 0
    for start in range(0, len(samples), batch_size):
        with _autocast(device, precision):
            logits, target, _ = _promptfree_batch(model, samples[start : start + batch_size], device)
        k = logits.shape[1]
        pred = F.one_hot(logits.argmax(dim=1), k).sum(dim=(0, 1, 2)).double()
        truth = F.one_hot(target, k).sum(dim=(0, 1, 2)).double()
        both = F.one_hot(torch.where(logits.argmax(dim=1) == target, target, 0), k).sum(dim=(0, 1, 2)).double()
        inter, pred_sum, target_sum = inter + both, pred_sum + pred, target_sum + truth
    if not samples:
        return float("nan")
    present = ((pred_sum + target_sum) > 0)[1:]
    if not present.any():
        return 1.0
    dice = (2 * inter / (pred_sum + target_sum).clamp(min=1))[1:]
    return float(dice[present].mean())


def _train_promptfree(
    layout: Layout,
    method: str,
    method_cfg: dict,
    model_cfg: dict,
    options: dict,
    datasets: list[str],
    settings: dict,
    seed: int,
    precision: str,
) -> dict:
    """promptfree: class map from the training slices, multi-class decoder, CE + Dice, shared loop."""
    fold, batch_size = settings["fold"], settings["batch_size"]
    train = collect_slices(layout, datasets, method_cfg["model"], "train", fold)
    classes = class_map(train)
    if not classes:
        raise ValueError(f"method {method}: no labelled training slices in datasets {datasets}")
    device = resolve_device(settings["device"])
    model = adapt.load_method_model(model_cfg, method_cfg, device, classes=classes)
    device = model.predictor.device
    params = adapt.trainable_parameters(model)
    counts = adapt.count_parameters(model)
    log.info(
        "%s (promptfree): %d classes + background, %d trainable of %d parameters",
        method,
        len(classes),
        counts["trainable"],
        counts["total"],
    )
    val = collect_slices(layout, datasets, method_cfg["model"], "val", fold)
    add_targets(model, train, classes)
    add_targets(model, val, classes)
    opt = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    meta = {**_meta(method, method_cfg, model, options, datasets, settings, seed), "classes": classes}

    def step(batch: list[dict], rng: np.random.Generator) -> float:
        return promptfree_step(model, opt, batch, device, precision)

    def validate() -> float:
        return promptfree_validation_dice(model, val, device, batch_size, precision)

    # the untrained class channels are SAM's ambiguity masks, not classes: never the chosen state
    return _fit(layout, method, model, opt, meta, train, settings, seed, step, validate if val else None, False)
