"""Adaptation methods: LoRA, adapters, full fine-tuning (and decoder) on SAM's ViT and LiteMedSAM's TinyViT."""

import numpy as np
import pytest
import torch

from samstudy import adapt
from samstudy.config import ConfigError
from samstudy.families import family_of
from samstudy.models import LoadedModel, load_model
from samstudy.train import train_step
from tests.conftest import study_config, tiny_sam

OPTIONS = {"rank": 4, "alpha": 8.0, "bottleneck": 8}


def _tiny() -> LoadedModel:
    return LoadedModel("litemedsam", tiny_sam(0), family_of("litemedsam"), None, "tiny-0")


def _sample(seed: int = 0, name: str = "a") -> dict:
    """A bright rectangle on a dark noisy background, with its mask and tight box."""
    rng = np.random.default_rng(seed)
    img = (rng.random((48, 56)) * 60).astype(np.uint8)
    mask = np.zeros((48, 56), dtype=bool)
    mask[12:30, 10:40] = True
    img[mask] += 150
    return {"slice": name, "image": img, "mask": mask, "box": [10, 12, 39, 29]}


def _encoder_output(model: LoadedModel) -> torch.Tensor:
    x = torch.linspace(0, 1, 3 * 256 * 256).reshape(1, 3, 256, 256)
    with torch.no_grad():
        return model.sam.image_encoder(x)


def _trained_names(model: LoadedModel) -> set[str]:
    return {n for n, p in model.sam.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("adaptation", ["lora", "adapter", "full"])
def test_each_method_trains_what_it_should_and_starts_from_the_base_model(adaptation):
    model = _tiny()
    before = _encoder_output(model)
    params = adapt.prepare(model, adaptation, OPTIONS)
    names = _trained_names(model)
    assert len(params) == len(names)
    assert any(n.startswith("mask_decoder.") for n in names)
    assert not any(n.startswith("prompt_encoder.") for n in names)  # frozen in every method
    encoder = {n for n in names if n.startswith("image_encoder.")}
    if adaptation == "lora":
        assert encoder and all("lora_" in n for n in encoder)
        assert any("qkv.lora_A" in n for n in encoder)
    elif adaptation == "adapter":
        assert encoder and all(adapt.ADAPTER_TAG in n for n in encoder)
    else:
        all_encoder = {n for n, _ in model.sam.image_encoder.named_parameters()}
        assert encoder == {f"image_encoder.{n}" for n in all_encoder}
    # new layers start as the identity: the adapted encoder reproduces the pretrained one
    assert torch.allclose(_encoder_output(model), before, atol=1e-6)


@pytest.mark.parametrize("adaptation", ["lora", "adapter", "full"])
def test_each_method_lowers_the_loss_in_a_few_steps(adaptation):
    torch.manual_seed(0)
    model = _tiny()
    params = adapt.prepare(model, adaptation, OPTIONS)
    opt = torch.optim.AdamW(params, lr=1e-3)
    batch = [_sample(0, "a"), _sample(1, "b")]
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(8):
        adapt.train_mode(model, adaptation)
        losses.append(train_step(model, opt, batch, 0, rng, "cpu"))
    assert losses[-1] < 0.7 * losses[0]
    # the encoder really changed (its gradients flowed), except nothing frozen moved
    assert not torch.allclose(_encoder_output(model), _encoder_output(_tiny_prepared(adaptation)), atol=1e-7)


def _tiny_prepared(adaptation: str) -> LoadedModel:
    model = _tiny()
    adapt.prepare(model, adaptation, OPTIONS)
    return model


def test_frozen_parameters_do_not_move():
    model = _tiny()
    frozen = {k: v.clone() for k, v in model.sam.image_encoder.state_dict().items()}
    params = adapt.prepare(model, "lora", OPTIONS)
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(2):
        train_step(model, opt, [_sample()], 0, np.random.default_rng(0), "cpu")
    after = model.sam.image_encoder.state_dict()
    for key, value in frozen.items():
        lora_key = key.replace(".qkv.", ".qkv.base_layer.")
        assert torch.equal(after.get(key, after.get(lora_key)), value), key


@pytest.mark.parametrize("adaptation", ["lora", "adapter", "full"])
def test_real_litemedsam_tinyvit_takes_every_method(adaptation):
    """The real-weights path: LiteMedSAM's TinyViT with its packaged weights, two training steps."""
    model = load_model({"type": "litemedsam"})
    params = adapt.prepare(model, adaptation, OPTIONS)
    counts = adapt.count_parameters(model)
    assert 0 < counts["trainable"] <= counts["total"]
    if adaptation == "lora":  # LoRA sits in TinyViT's attention blocks (layers 1-3, 10 blocks)
        assert sum("lora_A" in n for n in _trained_names(model)) == 10
    opt = torch.optim.AdamW(params, lr=1e-4)
    rng = np.random.default_rng(0)
    first = None
    for _ in range(2):
        adapt.train_mode(model, adaptation)
        loss = train_step(model, opt, [_sample()], 0, rng, "cpu")
        first = loss if first is None else first
    assert np.isfinite(loss) and loss <= first
    state = adapt.trained_state(model, adaptation)
    if adaptation != "full":  # small checkpoints: no frozen encoder weight inside
        new_layers = ("lora_", adapt.ADAPTER_TAG)
        frozen = [k for k in state if k.startswith("image_encoder.") and not any(t in k for t in new_layers)]
        assert not frozen


def test_method_options_are_checked_by_the_config(tmp_path):
    cfg = study_config(
        tmp_path,
        methods={
            "lo": {"model": "litemedsam", "adaptation": "lora"},
            "ad": {"model": "litemedsam", "adaptation": "adapter"},
        },
    )
    assert cfg["methods"]["lo"]["rank"] == 4 and cfg["methods"]["lo"]["alpha"] == 8.0
    assert cfg["methods"]["ad"]["bottleneck"] == 32 and "rank" not in cfg["methods"]["ad"]
    with pytest.raises(ConfigError, match="'rank' applies to adaptation 'lora' only"):
        study_config(tmp_path, methods={"d": {"model": "litemedsam", "adaptation": "decoder", "rank": 8}})
    with pytest.raises(ConfigError, match="schema"):
        study_config(tmp_path, methods={"x": {"model": "litemedsam", "adaptation": "prefix"}})


def test_the_adaptations_are_the_registrys_and_the_schemas():
    """One list of adaptations: the family registry's; the schema's enum and adapt's (less zero-shot) match it."""
    from samstudy.config import schema
    from samstudy.families import ADAPTATIONS

    method = schema()["properties"]["methods"]["additionalProperties"]["properties"]["adaptation"]
    assert tuple(method["enum"]) == ADAPTATIONS
    assert adapt.ADAPTATIONS == tuple(a for a in ADAPTATIONS if a != "none")
