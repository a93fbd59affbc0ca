import csv
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from samstudy import adapt
from samstudy import train as train_mod
from samstudy.adapt import AdaptedCheckpointError, load_adapted
from samstudy.cases import eval_cases
from samstudy.embed import embed_adapted, embed_dataset
from samstudy.infer import infer_dataset
from samstudy.train import _forward, _target, dice_bce_loss, train_method
from tests.conftest import dry_run_jobs

EMBED = {"slices": "needed", "slice_margin": 0, "batch_size": 4, "device": "cpu", "precision": "fp32"}
METHOD = {"model": "m", "adaptation": "decoder"}
LORA = {"model": "m", "adaptation": "lora", "rank": 2, "alpha": 4.0}


def _settings(cfg, **kw):
    return {**cfg["train"], "device": "cpu", "epochs": 2, "batch_size": 4, **kw}


def test_decoder_training_lowers_the_loss(study, tiny_model):
    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    model = tiny_model({"type": "litemedsam"})
    params = adapt.prepare(model, "decoder", {})
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
    assert ckpt["meta"]["torch_threads"] == torch.get_num_threads()  # the weights depend on it on a CPU
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


@pytest.mark.parametrize("method_cfg", [METHOD, LORA], ids=["decoder", "lora"])
def test_same_seed_same_training_and_resume_after_interruption(study, tiny_model, monkeypatch, caplog, method_cfg):
    """Trained once uninterrupted, then again in the same folder, killed during epoch 2 and resumed: the
    same checkpoint and curves, byte for byte (the same seed gives the same training, resuming changes
    nothing, and DVC stores the checkpoint once: `dvc status` stays clean)."""
    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    settings = _settings(cfg, epochs=2)
    train_method(layout, "a", method_cfg, {"type": "litemedsam"}, ["phantom"], settings, cfg["seed"])
    checkpoint, curves = Path(layout.checkpoint("a")), Path(layout.curves("a"))
    reference, reference_curves = checkpoint.read_bytes(), curves.read_bytes()
    checkpoint.unlink()
    curves.unlink()
    real = train_mod.train_step
    validations = {"n": 0}

    def counted(*args, **kwargs):
        validations["n"] += 1
        return real_validation(*args, **kwargs)

    def flaky(*args, **kwargs):
        if validations["n"] == 2:  # zero-shot and epoch 1 validated: die in epoch 2's first training step
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    real_validation = train_mod.validation_dice
    monkeypatch.setattr(train_mod, "validation_dice", counted)
    monkeypatch.setattr(train_mod, "train_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_method(layout, "a", method_cfg, {"type": "litemedsam"}, ["phantom"], settings, cfg["seed"])
    assert not checkpoint.exists() and (checkpoint.parent / "last.pt").is_file()  # killed after epoch 1
    monkeypatch.setattr(train_mod, "train_step", real)
    with caplog.at_level(logging.INFO):
        train_method(layout, "a", method_cfg, {"type": "litemedsam"}, ["phantom"], settings, cfg["seed"])
    assert "resuming a from epoch 2" in caplog.text
    assert validations["n"] == 3  # the resumed run validated epoch 2 only
    assert not (checkpoint.parent / "last.pt").exists()
    # the interrupted and resumed training ends with the uninterrupted one's weights, exactly
    expected = torch.load(io.BytesIO(reference), weights_only=True)
    resumed = torch.load(checkpoint, weights_only=True)
    assert resumed["meta"]["val_dice"] == pytest.approx(expected["meta"]["val_dice"], abs=1e-6)
    assert resumed["state"].keys() == expected["state"].keys()
    assert all(torch.equal(resumed["state"][k], expected["state"][k]) for k in expected["state"])
    # and the same bytes: checkpoint (meta, epochs, best state) and curves
    assert checkpoint.read_bytes() == reference
    assert curves.read_bytes() == reference_curves


@pytest.mark.parametrize(
    "method_cfg",
    [LORA, {"model": "m", "adaptation": "adapter", "bottleneck": 8}, {"model": "m", "adaptation": "full"}],
    ids=["lora", "adapter", "full"],
)
def test_encoder_methods_train_save_load_and_predict_with_their_own_embeddings(study, tiny_model, method_cfg):
    """Train from the preprocessed slices (no cached embeddings needed), keep only the trained tensors,
    reload them into a fresh base model, and predict with embeddings of the adapted encoder."""
    cfg, layout = study
    adaptation = method_cfg["adaptation"]
    meta = train_method(
        layout, "enc", method_cfg, {"type": "litemedsam"}, ["phantom"], _settings(cfg, epochs=1, lr=1e-3), cfg["seed"]
    )
    assert meta["options"] == adapt.method_options(method_cfg)
    state = torch.load(layout.checkpoint("enc"), weights_only=True)["state"]
    encoder_keys = [k for k in state if k.startswith("image_encoder.")]
    assert encoder_keys
    if adaptation == "lora":
        assert all("lora_" in k for k in encoder_keys)
    elif adaptation == "adapter":
        assert all(adapt.ADAPTER_TAG in k for k in encoder_keys)
    fresh = tiny_model({"type": "litemedsam"})
    load_adapted(fresh, layout.checkpoint("enc"), adaptation)
    for key, value in state.items():
        assert torch.equal(fresh.sam.state_dict()[key].cpu(), value), key
    assert fresh.adapted_sha256 is not None and fresh.weights_id != fresh.sha256
    with pytest.raises(AdaptedCheckpointError, match="differs from"):
        load_adapted(tiny_model({"type": "litemedsam"}), layout.checkpoint("enc"), "decoder")
    with pytest.raises(AdaptedCheckpointError, match="base weights"):
        load_adapted(tiny_model({"type": "litemedsam", "tiny_seed": 5}), layout.checkpoint("enc"), adaptation)

    from samstudy.prompts import make_prompts

    make_prompts(layout, "phantom", "box", {}, cfg["seed"])
    base = embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    adapted = embed_adapted(layout, "phantom", "enc", method_cfg, {"type": "litemedsam"}, EMBED)
    assert sorted(adapted["cases"]) == sorted(eval_cases(layout, "phantom"))  # the test cases only
    # the adapted encoder's embeddings are cached under their own keys, beside the base model's
    assert {e["key"] for e in adapted["cases"].values()}.isdisjoint(e["key"] for e in base["cases"].values())
    written = infer_dataset(layout, "phantom", "enc", method_cfg, {"type": "litemedsam"}, "box", "cpu")
    assert written and all(Path(p).is_file() for p in written)
    # an index embedded by other weights (here: the checkpoint retrained) is refused, not silently used
    train_method(layout, "enc", method_cfg, {"type": "litemedsam"}, ["phantom"], _settings(cfg, epochs=1, lr=5e-3), 1)
    with pytest.raises(ValueError, match="rerun embed_adapted"):
        infer_dataset(layout, "phantom", "enc", method_cfg, {"type": "litemedsam"}, "box", "cpu")


def test_encoder_methods_are_one_config_switch_away_in_the_workflow(tmp_path):
    """config/examples/adaptations.yaml adds lora, adapter and full to the default study: each trains
    from the preprocessed slices (no base-embedding input) and its inference embeds with its own encoder."""
    jobs = dry_run_jobs(tmp_path, "--configfile", "config/examples/adaptations.yaml")
    trained = {body.split("method=")[1].split()[0].strip(",") for rule, body in jobs if rule == "train"}
    assert trained == {"decoder", "lora", "adapter", "full"}
    for rule, body in jobs:
        if rule == "train" and "method=decoder" not in body:
            assert "embeddings/" not in body.split("output:")[0]  # inputs: preprocessed slices and splits only
        if rule == "infer" and any(f"method={m}" in body for m in ("lora", "adapter", "full")):
            inputs = body.split("output:")[0]
            assert "embeddings/adapted/" in inputs and "embeddings/litemedsam/" not in inputs
            assert "checkpoint.pt" in inputs
    adapted = sorted(b.split("method=")[1].split()[0].strip(",") for r, b in jobs if r == "embed_adapted")
    assert adapted == sorted(["lora", "adapter", "full"] * 3)  # once per method and dataset, not per protocol
