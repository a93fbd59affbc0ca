"""Adaptation training. `decoder`: the mask decoder fine-tuned from cached embeddings (the encoder never
runs). Jittered GT boxes simulated per step, Dice + BCE loss, AdamW, seeded, validated on the study's
validation split every epoch, best checkpoint by validation Dice, early stopping, resumable.

A checkpoint holds only the trained parameters plus metadata (base model hash, method, config, epoch,
validation Dice); loading checks the base model hash.
"""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from samstudy.embed import load_case_embeddings
from samstudy.io import atomic_path, read_json, sha256_json
from samstudy.models import LoadedModel, load_model, resolve_device
from samstudy.paths import Layout
from samstudy.preprocess import box_to_model, load_preprocessed, mask_to_model
from samstudy.prompts import case_rng, jitter_box, tight_box
from samstudy.splits import cases_in, load_split

log = logging.getLogger(__name__)

CURVE_FIELDS = ["epoch", "train_loss", "val_dice", "best_val_dice"]


class AdaptedCheckpointError(RuntimeError):
    """An adapted checkpoint does not belong to this base model or method."""


def trainable_parameters(model: LoadedModel, adaptation: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what the adaptation trains."""
    for p in model.sam.parameters():
        p.requires_grad_(False)
    if adaptation != "decoder":
        raise NotImplementedError(f"adaptation '{adaptation}' is not implemented yet (decoder is)")
    params = list(model.sam.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def trained_state(model: LoadedModel, adaptation: str) -> dict[str, torch.Tensor]:
    """Only the trained parameters' state (small checkpoints)."""
    return {f"mask_decoder.{k}": v.detach().cpu().clone() for k, v in model.sam.mask_decoder.state_dict().items()}


def load_adapted(model: LoadedModel, path: str | Path, adaptation: str) -> dict:
    """Load an adapted checkpoint into a base model, checking it was trained from these base weights."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt["meta"]
    if meta["base_sha256"] != model.sha256:
        raise AdaptedCheckpointError(
            f"{path}: trained from base weights {meta['base_sha256'][:12]}, but the model has {model.sha256[:12]}"
        )
    if meta["adaptation"] != adaptation:
        raise AdaptedCheckpointError(f"{path}: adaptation {meta['adaptation']} differs from {adaptation}")
    missing, unexpected = model.sam.load_state_dict(ckpt["state"], strict=False)
    if unexpected:
        raise AdaptedCheckpointError(f"{path}: unexpected parameters {unexpected[:3]}")
    model.sam.eval()
    return meta


def collect_samples(layout: Layout, datasets: list[str], model_name: str, part: str, fold: int) -> list[dict]:
    """(embedding, label mask, native box) samples of every labelled embedded slice in one split part."""
    samples = []
    for dataset in datasets:
        split = load_split(layout, dataset)
        index = read_json(layout.embed_index(model_name, dataset))["cases"]
        for case in cases_in(split, part, fold):
            pre = load_preprocessed(layout, dataset, case)
            embeddings = load_case_embeddings(index[case])
            for s, emb in embeddings.items():
                for value in np.unique(pre["labels"][s]):
                    if value == 0:
                        continue
                    mask = pre["labels"][s] == value
                    samples.append(
                        {
                            "id": f"{dataset}/{case}/{s}/{value}",
                            "slice": f"{dataset}/{case}/{s}",
                            "embedding": emb,
                            "mask": mask,
                            "box": tight_box(mask),
                        }
                    )
    return samples


def _forward(model: LoadedModel, embedding: torch.Tensor, boxes: np.ndarray, hw) -> torch.Tensor:
    box = torch.from_numpy(box_to_model(boxes, hw, model.spec)).to(embedding.device)
    with torch.no_grad():
        sparse, dense = model.sam.prompt_encoder(points=None, boxes=box, masks=None)
    low_res, _ = model.sam.mask_decoder(
        image_embeddings=embedding[None],
        image_pe=model.sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return low_res[:, 0]


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(-2, -1))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1)
    return dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def _target(model: LoadedModel, masks: list[np.ndarray], device) -> torch.Tensor:
    return torch.from_numpy(np.stack([mask_to_model(m, model.low_res_size, model.spec) for m in masks])).to(device)


@torch.no_grad()
def validation_dice(model: LoadedModel, samples: list[dict], device) -> float:
    """Mean Dice in the decoder's frame with tight boxes (the checkpoint-choice score)."""
    model.sam.eval()
    scores = []
    for group in _by_slice(samples):
        hw = group[0]["mask"].shape
        emb = torch.from_numpy(group[0]["embedding"].astype(np.float32)).to(device)
        logits = _forward(model, emb, np.array([s["box"] for s in group]), hw)
        target = _target(model, [s["mask"] for s in group], device)
        pred = (logits > 0).float()
        inter = (pred * target).sum(dim=(-2, -1))
        scores.extend(((2 * inter + 1e-6) / (pred.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + 1e-6)).tolist())
    return float(np.mean(scores)) if scores else float("nan")


def _by_slice(samples: list[dict]) -> list[list[dict]]:
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["slice"], []).append(s)
    return list(groups.values())


def train_method(
    layout: Layout, method: str, method_cfg: dict, model_cfg: dict, datasets: list[str], settings: dict, seed: int
) -> dict:
    """Train one adaptation method on the training part of the given datasets; write checkpoint + curves."""
    torch.manual_seed(seed)
    random.seed(seed)
    device = resolve_device(settings["device"])
    model = load_model(model_cfg, device)
    params = trainable_parameters(model, method_cfg["adaptation"])
    fold = settings["fold"]
    train = collect_samples(layout, datasets, method_cfg["model"], "train", fold)
    val = collect_samples(layout, datasets, method_cfg["model"], "val", fold)
    if not train:
        raise ValueError(f"method {method}: no labelled training slices in datasets {datasets}")
    opt = torch.optim.AdamW(params, lr=settings["lr"], weight_decay=settings["weight_decay"])
    run_id = sha256_json(
        {"method": method_cfg, "train": settings, "seed": seed, "base": model.sha256, "datasets": datasets}
    )
    meta = {
        "method": method,
        "adaptation": method_cfg["adaptation"],
        "base_model": method_cfg["model"],
        "base_sha256": model.sha256,
        "train": settings,
        "seed": seed,
        "run_id": run_id,
    }
    last_path = Path(layout.model_dir(method)) / "last.pt"
    start, best, curves, best_state = 0, -1.0, [], None
    if last_path.is_file():  # resume after an interruption, only if it is the same training run
        last = torch.load(last_path, map_location="cpu", weights_only=True)
        if last["meta"]["run_id"] == run_id:
            model.sam.load_state_dict(last["state"], strict=False)
            opt.load_state_dict(last["optimizer"])
            start, best, curves, best_state = last["epoch"] + 1, last["best"], last["curves"], last["best_state"]
            log.info("resuming %s from epoch %d", method, start)
    if start == 0:
        zero = validation_dice(model, val, device)
        curves.append({"epoch": 0, "train_loss": float("nan"), "val_dice": zero, "best_val_dice": zero})
        best, best_state = zero, trained_state(model, method_cfg["adaptation"])
        start = 1
    patience, stale = settings.get("patience", 5), 0
    for epoch in range(start, settings["epochs"] + 1):
        model.sam.train()
        rng = case_rng(seed, method, str(epoch))
        order = rng.permutation(len(train))
        losses = []
        batch = [train[i] for i in order]
        bar = tqdm(range(0, len(batch), settings["batch_size"]), desc=f"train {method} epoch {epoch}", unit="batch")
        for b in bar:
            opt.zero_grad()
            loss_sum, count = 0.0, 0
            for group in _by_slice(batch[b : b + settings["batch_size"]]):
                hw = group[0]["mask"].shape
                boxes = np.array([jitter_box(s["box"], settings["jitter_px"], hw, rng) for s in group])
                emb = torch.from_numpy(group[0]["embedding"].astype(np.float32)).to(device)
                logits = _forward(model, emb, boxes, hw)
                loss = dice_bce_loss(logits, _target(model, [s["mask"] for s in group], device)) * len(group)
                loss.backward()
                loss_sum, count = loss_sum + float(loss), count + len(group)
            opt.step()
            losses.append(loss_sum / count)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        score = validation_dice(model, val, device) if val else -float(np.mean(losses))
        if score > best:
            best, best_state, stale = score, trained_state(model, method_cfg["adaptation"]), 0
        else:
            stale += 1
        curves.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": score, "best_val_dice": best})
        log.info("%s epoch %d: loss %.4f val dice %.4f (best %.4f)", method, epoch, np.mean(losses), score, best)
        with atomic_path(last_path) as tmp:
            torch.save(
                {
                    "meta": meta,
                    "state": trained_state(model, method_cfg["adaptation"]),
                    "epoch": epoch,
                    "optimizer": opt.state_dict(),
                    "best": best,
                    "curves": curves,
                    "best_state": best_state,
                },
                tmp,
            )
        if stale >= patience:
            log.info("%s: early stop at epoch %d", method, epoch)
            break
    best_epoch = max(curves, key=lambda c: c["val_dice"])["epoch"]
    meta.update({"epoch": best_epoch, "val_dice": best})
    with atomic_path(layout.checkpoint(method)) as tmp:
        torch.save({"meta": meta, "state": best_state}, tmp)
    with atomic_path(layout.curves(method)) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(curves)
    last_path.unlink(missing_ok=True)
    return meta
