import csv
import logging

import numpy as np
import pytest
import torch

from samstudy import train as train_mod
from samstudy.embed import embed_dataset
from samstudy.train import AdaptedCheckpointError, _forward, _target, dice_bce_loss, load_adapted, train_method

EMBED = {"slices": "needed", "slice_margin": 0, "batch_size": 4, "device": "cpu", "precision": "fp32"}
METHOD = {"model": "m", "adaptation": "decoder"}


def _settings(cfg, **kw):
    return {**cfg["train"], "device": "cpu", "epochs": 2, "batch_size": 4, **kw}


def test_decoder_training_lowers_the_loss(study, tiny_model):
    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    model = tiny_model({"type": "litemedsam"})
    params = train_mod.trainable_parameters(model, "decoder")
    assert all(not p.requires_grad for p in model.sam.image_encoder.parameters())
    samples = train_mod.collect_samples(layout, ["phantom"], "m", "train", 0)[:4]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def loss_now():
        total = 0.0
        for s in samples:
            emb = torch.from_numpy(s["embedding"].astype(np.float32))
            logits = _forward(model, emb, np.array([s["box"]]), s["mask"].shape)
            total = total + dice_bce_loss(logits, _target(model, [s["mask"]], "cpu"))
        return total

    before = float(loss_now())
    for _ in range(15):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert float(loss_now()) < 0.7 * before


def test_checkpoint_round_trip_and_base_hash_check(study, tiny_model):
    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    meta = train_method(
        layout, "dec", METHOD, {"type": "litemedsam"}, ["phantom"], _settings(cfg, epochs=1), cfg["seed"]
    )
    ckpt = torch.load(layout.checkpoint("dec"), weights_only=True)
    assert set(ckpt["meta"]) >= {"base_sha256", "method", "adaptation", "epoch", "val_dice", "train"}
    assert all(k.startswith("mask_decoder.") for k in ckpt["state"])  # only trained parameters
    with open(layout.curves("dec")) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert meta["val_dice"] == max(float(r["val_dice"]) for r in rows)
    fresh = tiny_model({"type": "litemedsam"})
    load_adapted(fresh, layout.checkpoint("dec"), "decoder")
    key = next(iter(ckpt["state"]))
    assert torch.equal(fresh.sam.state_dict()[key], ckpt["state"][key])
    other = tiny_model({"type": "litemedsam", "tiny_seed": 3})
    with pytest.raises(AdaptedCheckpointError, match="base weights"):
        load_adapted(other, layout.checkpoint("dec"), "decoder")


def test_same_seed_same_training_and_resume_after_interruption(study, tiny_model, monkeypatch, caplog):
    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    settings = _settings(cfg, epochs=2)
    train_method(layout, "a", METHOD, {"type": "litemedsam"}, ["phantom"], settings, cfg["seed"])
    reference = torch.load(layout.checkpoint("a"), weights_only=True)
    real = train_mod.validation_dice
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # zero-shot, epoch 1, then die during epoch 2's validation
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validation_dice", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_method(layout, "b", METHOD, {"type": "litemedsam"}, ["phantom"], settings, cfg["seed"])
    monkeypatch.setattr(train_mod, "validation_dice", real)
    with caplog.at_level(logging.INFO):
        train_method(layout, "b", METHOD, {"type": "litemedsam"}, ["phantom"], settings, cfg["seed"])
    assert "resuming b from epoch 2" in caplog.text
    resumed = torch.load(layout.checkpoint("b"), weights_only=True)
    assert resumed["meta"]["val_dice"] == pytest.approx(reference["meta"]["val_dice"], abs=1e-6)
