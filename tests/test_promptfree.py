"""The prompt-free (SAMed-style) adaptation: multi-class decoder, training, checkpoint, inference."""

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from samstudy import adapt
from samstudy import train as train_mod
from samstudy.adapt import load_adapted
from samstudy.embed import embed_dataset
from samstudy.families import FAMILIES, family_of
from samstudy.infer import infer_dataset, method_model_and_embeddings
from samstudy.models import LoadedModel
from samstudy.protocols.promptfree import predict_promptfree
from tests.conftest import tiny_sam

EMBED = {"slices": "all", "slice_margin": 0, "batch_size": 4, "device": "cpu", "precision": "fp32"}
METHOD = {"model": "m", "adaptation": "promptfree"}
MODEL = {"type": "litemedsam"}


def small_sam(seed: int = 0):
    """A SAM with LiteMedSAM's frames (256 input, 64x64 embeddings, 256 low-res) and a 32-wide decoder:
    ~8x cheaper than tiny_sam's, so that a test can train it until it has learnt."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=256, patch_size=4, embed_dim=16, depth=1, num_heads=1, out_chans=32, window_size=8
    )
    prompt = PromptEncoder(embed_dim=32, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=4)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
        transformer_dim=32,
        iou_head_hidden_dim=32,
    )
    return Sam(encoder, prompt, decoder, [0.0, 0.0, 0.0], [255.0, 255.0, 255.0]).eval()


def _loaded(sam, name="small-0") -> LoadedModel:
    return LoadedModel("litemedsam", sam, family_of("litemedsam"), None, name)


@pytest.fixture
def small_model(monkeypatch):
    """Like conftest's tiny_model (load_model patched in every stage), with small_sam."""

    def fake_load(model_cfg, device="cpu", random_init=False):
        seed = int(model_cfg.get("tiny_seed", 0))
        return _loaded(small_sam(seed).to(device), f"small-{seed}")

    monkeypatch.setattr(adapt, "load_model", fake_load)  # every stage loads through adapt.load_method_model
    return fake_load


def _synthetic(rng: np.random.Generator, dataset: str = "syn", size: int = 64) -> dict:
    """A trivially learnable slice: a square of label 1 (top left) and one of label 2 (bottom right) at
    random places; the embedding marks them in channels 0 and 1 (on the 64x64 grid = the 64x64 slice)."""
    labels = np.zeros((size, size), dtype=np.uint8)
    y, x = rng.integers(4, 24, 2)
    labels[y : y + 16, x : x + 16] = 1
    y, x = rng.integers(36, 52, 2)
    labels[y : y + 10, x : x + 10] = 2
    emb = rng.normal(0.0, 0.1, (32, 64, 64)).astype(np.float16)
    emb[0][labels == 1] += 2
    emb[1][labels == 2] += 2
    return {"id": f"{dataset}/x/{rng.integers(1e9)}", "dataset": dataset, "embedding": emb, "labels": labels}


def test_multiclass_decoder_keeps_the_pretrained_weights_where_they_fit():
    model = _loaded(tiny_sam(0))
    old = {k: v.clone() for k, v in model.sam.mask_decoder.state_dict().items()}
    classes = [["a", 1], ["a", 2], ["b", 1], ["b", 4], ["b", 7]]  # 5 classes + background: 6 mask tokens
    params = adapt.prepare(model, "promptfree", {}, classes)
    dec = model.sam.mask_decoder
    assert dec.num_mask_tokens == 6 and dec.num_multimask_outputs == 5
    new = dec.state_dict()
    shared = [k for k in new if k.startswith(("transformer.", "output_upscaling.", "iou_token."))]
    assert shared and all(torch.equal(new[k], old[k]) for k in shared)
    assert torch.equal(new["mask_tokens.weight"][:4], old["mask_tokens.weight"])
    assert torch.equal(new["mask_tokens.weight"][4], old["mask_tokens.weight"][1])  # extras: multimask tokens
    assert torch.equal(new["mask_tokens.weight"][5], old["mask_tokens.weight"][2])
    for k, source in enumerate([0, 1, 2, 3, 1, 2]):
        for name in ("layers.0.weight", "layers.2.bias"):
            assert torch.equal(
                new[f"output_hypernetworks_mlps.{k}.{name}"], old[f"output_hypernetworks_mlps.{source}.{name}"]
            )
    assert torch.equal(new["iou_prediction_head.layers.2.weight"][:4], old["iou_prediction_head.layers.2.weight"])
    trained = {n for n, p in model.sam.named_parameters() if p.requires_grad}
    assert trained == {n for n in dict(model.sam.named_parameters()) if n.startswith("mask_decoder.")} | {
        "prompt_encoder.no_mask_embed.weight"
    }
    assert sum(p.numel() for p in params) == sum(p.numel() for n, p in model.sam.named_parameters() if n in trained)
    assert dec.samstudy_classes == [("a", 1), ("a", 2), ("b", 1), ("b", 4), ("b", 7)]
    assert adapt.dataset_classes(dec.samstudy_classes, "b") == {3: 1, 4: 4, 5: 7}

    emb = torch.randn(3, 256, 64, 64)
    with torch.no_grad():
        batched = adapt.promptfree_logits(model, emb)
        single = torch.cat([adapt.promptfree_logits(model, emb[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 6, 256, 256)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)  # a batch of slices, one empty prompt

    # with 3 classes the decoder has SAM's 4 tokens: it is the pretrained decoder, outputs included
    base = _loaded(tiny_sam(0))
    three = _loaded(tiny_sam(0))
    adapt.prepare(three, "promptfree", {}, [["a", 1], ["a", 2], ["a", 3]])
    sparse, dense = base.sam.prompt_encoder(points=None, boxes=None, masks=None)
    with torch.no_grad():
        ref, _ = base.sam.mask_decoder.predict_masks(emb[:1], base.sam.prompt_encoder.get_dense_pe(), sparse, dense)
        torch.testing.assert_close(adapt.promptfree_logits(three, emb[:1]), ref)


@pytest.mark.parametrize("family", ["litemedsam", "sam_vit_b", "medsam_vit_b"])
def test_logits_to_native_is_the_postprocess_geometry_without_the_score(family):
    fam = FAMILIES[family]
    low = torch.randn(2, 3, 256, 256)
    hw = (37, 52)
    native = fam.logits_to_native(low, hw)
    assert native.shape == (2, 3, *hw)
    for c in range(3):
        scores = fam.postprocess(low[:, c : c + 1], hw)
        if family == "litemedsam":
            torch.testing.assert_close(torch.sigmoid(native[:, c]), scores)
        elif family == "sam_vit_b":
            torch.testing.assert_close(native[:, c], scores)
        else:  # MedSAM's official order is sigmoid, then resize: the same foreground up to the interpolation
            assert ((torch.sigmoid(native[:, c]) > 0.5) == (scores > 0.5)).float().mean() > 0.97


def test_targets_are_class_indices_and_only_the_datasets_classes_compete():
    model = _loaded(small_sam())
    a = {"id": "a/x/0", "dataset": "a", "embedding": None, "labels": np.zeros((64, 64), np.uint8)}
    a["labels"][:32, :32] = 2
    b = {"id": "b/x/0", "dataset": "b", "embedding": None, "labels": np.zeros((64, 64), np.uint8)}
    b["labels"][32:, 32:] = 1
    classes = train_mod.class_map([a, b])
    assert classes == [["a", 2], ["b", 1]]
    train_mod.add_targets(model, [a, b], classes)
    assert a["target"].shape == (256, 256) and set(np.unique(a["target"])) == {0, 1}
    assert (a["target"][:128, :128] == 1).all() and (a["target"][128:, :] == 0).all()
    assert (b["target"][128:, 128:] == 2).all() and b["target"][:128].max() == 0
    assert a["allowed"].tolist() == [True, True, False] and b["allowed"].tolist() == [True, False, True]
    logits = torch.zeros(1, 3, 256, 256)
    logits[:, 2] = 10.0  # the other dataset's class shouts: masked, it cannot win or cost
    target = torch.from_numpy(a["target"])[None]
    allowed = torch.from_numpy(a["allowed"])[None]
    masked = logits.masked_fill(~allowed[:, :, None, None], train_mod.MASKED_LOGIT)
    unmasked_loss = train_mod.promptfree_loss(logits, target, torch.ones_like(allowed))
    assert train_mod.promptfree_loss(masked, target, allowed) < unmasked_loss


def test_training_on_a_learnable_set_predicts_several_labels_at_once():
    torch.manual_seed(0)
    model = _loaded(small_sam())
    rng = np.random.default_rng(0)
    samples = [_synthetic(rng) for _ in range(6)]
    held_out = _synthetic(rng)
    classes = train_mod.class_map(samples)
    assert classes == [["syn", 1], ["syn", 2]]
    params = adapt.prepare(model, "promptfree", {}, classes)
    train_mod.add_targets(model, samples + [held_out], classes)
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)

    def loss_now():
        with torch.no_grad():
            return float(train_mod.promptfree_loss(*train_mod._promptfree_batch(model, samples, "cpu")))

    before = loss_now()
    for it in range(40):
        train_mod.promptfree_step(model, opt, samples[:4] if it % 2 else samples[2:], "cpu")
    after = loss_now()
    assert after < 0.1 * before, (before, after)
    assert train_mod.promptfree_validation_dice(model, [held_out], "cpu") > 0.9
    pred = predict_promptfree(model, {0: held_out["embedding"]}, 1, (64, 64), {1: 1, 2: 2}, "c")
    assert set(np.unique(pred)) == {0, 1, 2}  # both labels from one decoder call, no prompt
    for value in (1, 2):
        truth = held_out["labels"] == value
        dice = 2 * (pred[0][truth] == value).sum() / ((pred[0] == value).sum() + truth.sum())
        assert dice > 0.9, (value, dice)
    # only the dataset's classes compete: label 2's class left out, its pixels go to background or 1
    only_one = predict_promptfree(model, {0: held_out["embedding"]}, 1, (64, 64), {1: 1}, "c")
    assert set(np.unique(only_one)) <= {0, 1} and (only_one == 1).any()
    # a dataset the method has no classes for predicts nothing (and needs no embeddings)
    assert not predict_promptfree(model, {}, 3, (64, 64), {}, "c").any()
    with pytest.raises(KeyError, match="case c: slice 1 has no cached embedding"):
        predict_promptfree(model, {0: held_out["embedding"]}, 2, (64, 64), {1: 1, 2: 2}, "c")


def test_promptfree_method_trains_saves_loads_and_infers(study, small_model, caplog):
    cfg, layout = study
    embed_dataset(layout, "phantom", "m", MODEL, EMBED)
    settings = {**cfg["train"], "device": "cpu", "epochs": 2, "batch_size": 4, "lr": 1e-2}
    train_slices = train_mod.collect_slices(layout, ["phantom"], "m", "train", 0)
    fresh = small_model(MODEL)
    adapt.prepare(fresh, "promptfree", {}, train_mod.class_map(train_slices))
    train_mod.add_targets(fresh, train_slices, train_mod.class_map(train_slices))

    def loss_of(model):
        with torch.no_grad():
            return float(train_mod.promptfree_loss(*train_mod._promptfree_batch(model, train_slices, "cpu")))

    before = loss_of(fresh)
    meta = train_mod.train_method(layout, "pf", METHOD, MODEL, ["phantom"], settings, cfg["seed"])
    assert meta["classes"] == [["phantom", 1], ["phantom", 2], ["phantom", 3]]
    ckpt = torch.load(layout.checkpoint("pf"), weights_only=True)
    assert ckpt["meta"]["classes"] == meta["classes"] and ckpt["meta"]["adaptation"] == "promptfree"
    assert all(k.startswith(("mask_decoder.", "prompt_encoder.no_mask_embed.")) for k in ckpt["state"])
    assert ckpt["state"]["mask_decoder.mask_tokens.weight"].shape[0] == 4
    with open(layout.curves("pf")) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert meta["val_dice"] == max(float(r["val_dice"]) for r in rows[1:])  # the untrained state is not chosen
    assert meta["epoch"] > 0 and rows[0]["best_val_dice"] == "nan"

    loaded = small_model(MODEL)
    load_adapted(loaded, layout.checkpoint("pf"), "promptfree")
    for key, value in ckpt["state"].items():
        assert torch.equal(loaded.sam.state_dict()[key], value), key
    after = loss_of(loaded)
    assert after < 0.9 * before, (before, after)  # the chosen (trained) state has a lower training loss

    model, index = method_model_and_embeddings(layout, "phantom", "pf", METHOD, MODEL, "cpu")
    assert model.sam.mask_decoder.samstudy_classes == [("phantom", 1), ("phantom", 2), ("phantom", 3)]
    written = infer_dataset(layout, "phantom", "pf", METHOD, MODEL, "none", "cpu")
    assert written and all(Path(p).is_file() and "pf.none" in p for p in written)
    assert not Path(layout.prompt_record("pf.none", "phantom", "x")).parent.exists()  # no prompt records
    with pytest.raises(ValueError, match="prompt-free"):
        infer_dataset(layout, "phantom", "pf", METHOD, MODEL, "box", "cpu")

    # a method whose classes are all another dataset's: empty predictions, and a log line saying why
    ckpt["meta"]["classes"] = [["elsewhere", v] for _, v in ckpt["meta"]["classes"]]
    Path(layout.checkpoint("other")).parent.mkdir(parents=True)
    torch.save(ckpt, layout.checkpoint("other"))
    with caplog.at_level(logging.WARNING):
        empty = infer_dataset(layout, "phantom", "other", METHOD, MODEL, "none", "cpu")
    assert "trained on no class of this dataset" in caplog.text
    assert all(sitk.GetArrayFromImage(sitk.ReadImage(p)).max() == 0 for p in empty)
