"""Adaptation methods: what each one adds to a SAM model, what it trains, what its checkpoint holds.

- ``decoder``: the mask decoder only (trained from cached embeddings: the encoder never runs).
- ``lora``: LoRA of rank r on the image encoder's attention ``qkv`` projections (SAMed style) through
  ``peft``'s ``inject_adapter_in_model``, plus the mask decoder. SAMed puts LoRA on the q and v parts of
  the fused projection; peft adapts the whole ``qkv`` layer (q, k and v), the closest it offers.
- ``adapter``: bottleneck adapters in every encoder block (Medical SAM Adapter style): one after the
  attention (with its own skip connection) and one in parallel to the MLP (scaled 0.5); encoder frozen,
  adapters and mask decoder trained. Written here because peft has no bottleneck-adapter method for
  arbitrary torch modules.
- ``full``: image encoder and mask decoder trained, prompt encoder frozen (MedSAM style).
- ``promptfree``: SAMed style (Zhang & Liu, "Customized Segment Anything Model for Medical Image
  Segmentation"; code: github.com/hitachinsk/SAMed), decoder only: no prompt at all, a mask decoder with
  one output mask per class plus background (`promptfree_decoder`), trained from the cached embeddings
  (the encoder never runs) on every training dataset at once. Its classes are the (dataset, label value)
  pairs of the training data, in order, after the background (channel 0); the checkpoint's metadata holds
  that class map (`classes`). Trained: the mask decoder and the prompt encoder's no-mask embedding (the
  only prompt-encoder tensor a prompt-free forward uses; SAMed trains the whole prompt encoder).

SAM 2 models (Hiera) run ``decoder`` only (config validation says so): its mask decoder trained from the
cached features, less the ``conv_s0``/``conv_s1`` projections that make the cached high-resolution
features; ``promptfree`` builds a segment_anything decoder, and LoRA, adapters and full fine-tuning are
not verified on Hiera yet.

Every method works with SAM's ViT (segment_anything ``Block``) and LiteMedSAM's TinyViT
(``TinyViTBlock``): both have blocks with ``attn`` (with a ``qkv`` and a ``proj`` linear) and ``mlp``.
New layers start as the identity (LoRA's B and the adapters' up-projections are zero), so training starts
from the pretrained model. Normalisation layers stay in eval mode during training (their running
statistics are the pretrained ones; batches of a few slices would only make them noisy).

A checkpoint holds only the trained tensors plus metadata; loading rebuilds the method's layers from the
metadata and checks the base model's hash.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from samstudy import families
from samstudy.config import ENCODER_ADAPTATIONS, METHOD_OPTIONS
from samstudy.families.base import Family
from samstudy.io import sha256_file
from samstudy.models import LoadedModel, load_model

# The adaptations that add or train something: the registry's (the schema's enum) less zero-shot "none".
ADAPTATIONS = tuple(a for a in families.ADAPTATIONS if a != "none")
PROMPTFREE = "promptfree"
NO_MASK_EMBED = "prompt_encoder.no_mask_embed."  # trained by promptfree (SAMed trains the prompt encoder)
ADAPTER_TAG = "samstudy_adapter"  # in the names of the adapter layers' parameters


class AdaptedCheckpointError(RuntimeError):
    """An adapted checkpoint does not belong to this base model or method."""


def adapts_encoder(adaptation: str) -> bool:
    """True when the method changes the image encoder (its embeddings are not the cached base ones)."""
    return adaptation in ENCODER_ADAPTATIONS


def method_options(method_cfg: dict) -> dict:
    """The method's structural options (what rebuilding its layers needs), defaults filled in."""
    return {
        key: type(default)(method_cfg.get(key, default))
        for key, (adaptation, default) in METHOD_OPTIONS.items()
        if adaptation == method_cfg["adaptation"]
    }


class Bottleneck(nn.Module):
    """down -> GELU -> up, the up-projection zero-initialised (starts as zero)."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class AttentionWithAdapter(nn.Module):
    """attn(x) followed by an adapter with a skip connection (MSA's Space_Adapter)."""

    def __init__(self, attn: nn.Module, dim: int, bottleneck: int):
        super().__init__()
        self.attn = attn
        setattr(self, ADAPTER_TAG, Bottleneck(dim, bottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(x)
        return y + getattr(self, ADAPTER_TAG)(y)


class MlpWithAdapter(nn.Module):
    """mlp(x) + 0.5 * adapter(x): a parallel adapter (MSA's MLP_Adapter)."""

    def __init__(self, mlp: nn.Module, dim: int, bottleneck: int, scale: float = 0.5):
        super().__init__()
        self.mlp = mlp
        self.scale = scale
        setattr(self, ADAPTER_TAG, Bottleneck(dim, bottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + self.scale * getattr(self, ADAPTER_TAG)(x)


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """Transformer blocks of a SAM ViT or a TinyViT: modules with `attn` (qkv + proj) and `mlp`."""
    blocks = [
        m
        for m in encoder.modules()
        if hasattr(m, "attn") and hasattr(m, "mlp") and hasattr(m.attn, "qkv") and hasattr(m.attn, "proj")
    ]
    if not blocks:
        raise ValueError(f"{type(encoder).__name__}: no attention blocks found to adapt")
    return blocks


def _pretrained_token(k: int, pretrained_tokens: int) -> int:
    """The pretrained mask token (and hypernetwork MLP, IoU-head row) a new token k starts from: itself
    where it exists, else one of SAM's multimask tokens (1..3) in turn."""
    if k < pretrained_tokens:
        return k
    multi = pretrained_tokens - 1
    return 1 + (k - 1) % multi if multi > 0 else 0


def promptfree_decoder(pretrained: nn.Module, n_classes: int) -> nn.Module:
    """A segment_anything MaskDecoder with one output mask per class plus background, built from a
    pretrained one (SAMed: `segment_anything/build_sam.py` `_build_sam`, `num_multimask_outputs=num_classes`:
    n_classes + 1 mask tokens and hypernetwork MLPs; channel 0 is the background).

    Weights: everything whose shape fits is the pretrained decoder's (the two-way transformer, the output
    upscaling, the IoU token and IoU head's hidden layers). The per-token parts (mask token rows,
    hypernetwork MLPs, rows of the IoU head's last layer) are the pretrained token k's where k exists
    (tokens 0..3: SAM's single-mask token becomes the background channel), and an extra token starts as a
    copy of one of SAM's multimask tokens (1, 2, 3, 1, ...). SAMed instead re-initialises all mask tokens,
    hypernetwork MLPs and the IoU head at random whenever their count differs from SAM's
    (`build_sam.py` `load_from`, `except_keys`); copying keeps the start at the pretrained decoder, as
    every other samstudy method starts from the pretrained model, and is deterministic. Copies start
    with equal logits, but their gradients differ as soon as their classes' targets do, so they part.
    """
    from segment_anything.modeling import MaskDecoder

    iou_head = pretrained.iou_prediction_head
    decoder = MaskDecoder(
        transformer_dim=pretrained.transformer_dim,
        transformer=copy.deepcopy(pretrained.transformer),
        num_multimask_outputs=n_classes,
        iou_head_depth=iou_head.num_layers,
        iou_head_hidden_dim=iou_head.layers[0].out_features,
    )
    old, new = pretrained.state_dict(), decoder.state_dict()
    tokens = pretrained.num_mask_tokens
    last_iou = f"iou_prediction_head.layers.{iou_head.num_layers - 1}."
    state = {}
    for key, value in new.items():
        if key == "mask_tokens.weight":
            state[key] = old[key][[_pretrained_token(k, tokens) for k in range(decoder.num_mask_tokens)]]
        elif key.startswith(last_iou):
            state[key] = old[key][[_pretrained_token(k, tokens) for k in range(decoder.num_mask_tokens)]]
        elif key.startswith("output_hypernetworks_mlps."):
            _, k, rest = key.split(".", 2)
            state[key] = old[f"output_hypernetworks_mlps.{_pretrained_token(int(k), tokens)}.{rest}"]
        elif key in old and old[key].shape == value.shape:
            state[key] = old[key]
        else:  # nothing else differs between the two decoders; kept as a guard
            raise ValueError(f"promptfree decoder: no pretrained weight fits {key} {tuple(value.shape)}")
    decoder.load_state_dict({k: v.clone() for k, v in state.items()})
    return decoder.to(next(pretrained.parameters()).device)


def promptfree_logits(model: LoadedModel, embeddings: torch.Tensor) -> torch.Tensor:
    """Image embeddings (B, C, h, w) -> logits of every class (B, n_classes + 1, L, L), channel 0 the
    background, with no prompt (SAMed's forward: the predictor's `promptfree_logits`, where it is cited)."""
    return model.predictor.promptfree_logits(embeddings)


def dataset_classes(classes: list, dataset: str) -> dict[int, int]:
    """A promptfree class map's classes of one dataset: decoder channel -> label value (channel 0, the
    background, is not listed)."""
    return {k: int(value) for k, (name, value) in enumerate(classes, start=1) if name == dataset}


def add_layers(model: LoadedModel, adaptation: str, options: dict, classes: list | None = None) -> None:
    """Insert the method's new layers (LoRA, adapters) into the image encoder, in place; for `promptfree`,
    replace the mask decoder by one with a mask per class of `classes` (the class map) plus background."""
    if adaptation == PROMPTFREE:
        if not classes:
            raise ValueError("promptfree: no classes to predict (its class map is empty)")
        model.sam.mask_decoder = promptfree_decoder(model.sam.mask_decoder, len(classes))
        model.sam.mask_decoder.samstudy_classes = [(str(d), int(v)) for d, v in classes]
        return
    encoder = model.sam.image_encoder
    device = next(model.sam.parameters()).device
    if adaptation == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=options["rank"], lora_alpha=options["alpha"], lora_dropout=0.0, target_modules=["qkv"], bias="none"
        )
        inject_adapter_in_model(config, encoder)
    elif adaptation == "adapter":
        for block in encoder_blocks(encoder):
            dim = block.attn.proj.out_features
            block.attn = AttentionWithAdapter(block.attn, dim, options["bottleneck"])
            block.mlp = MlpWithAdapter(block.mlp, dim, options["bottleneck"])
    model.sam.to(device)


def _is_trained(family: Family, name: str, adaptation: str) -> bool:
    # Every adaptation trains the mask decoder, as the family names it (SAM 2: less the cached projections).
    if family.trains_decoder_tensor(name):
        return True
    if adaptation == PROMPTFREE:
        return name.startswith(NO_MASK_EMBED)
    if adaptation == "lora":
        return "lora_" in name
    if adaptation == "adapter":
        return ADAPTER_TAG in name
    if adaptation == "full":
        return name.startswith("image_encoder.")
    return False


def prepare(model: LoadedModel, adaptation: str, options: dict, classes: list | None = None) -> list[nn.Parameter]:
    """Add the method's layers, freeze everything else; returns the trainable parameters. `classes`: the
    promptfree class map ((dataset, label value) per foreground class)."""
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"unknown adaptation '{adaptation}'; known: {', '.join(ADAPTATIONS)}")
    add_layers(model, adaptation, options, classes)
    params = []
    for name, p in model.sam.named_parameters():
        p.requires_grad_(_is_trained(model.family, name, adaptation))
        if p.requires_grad:
            params.append(p)
    return params


def train_mode(model: LoadedModel, adaptation: str) -> None:
    """Modes for a training step: norms and frozen parts in eval mode; for `full`, TinyViT's attention
    modules in train mode so that their (trained) attention biases are used, not the cached copy."""
    model.sam.eval()
    if adaptation == "full":
        for m in model.sam.image_encoder.modules():
            if hasattr(m, "attention_biases"):
                m.train()


def trained_state(model: LoadedModel, adaptation: str) -> dict[str, torch.Tensor]:
    """Only the trained tensors (small checkpoints for decoder, LoRA and adapters)."""
    return {
        k: v.detach().cpu().clone()
        for k, v in model.sam.state_dict().items()
        if _is_trained(model.family, k, adaptation)
    }


def count_parameters(model: LoadedModel) -> dict[str, int]:
    total = sum(p.numel() for p in model.sam.parameters())
    trainable = sum(p.numel() for p in model.sam.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}


def load_adapted(model: LoadedModel, path: str | Path, adaptation: str) -> dict:
    """Load an adapted checkpoint into a base model (adding the method's layers), checking it was trained
    from these base weights and by this method. Afterwards the model's embeddings are keyed by both."""
    path = Path(path)
    if not path.is_file():
        raise AdaptedCheckpointError(f"adapted checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt["meta"]
    if meta["base_sha256"] != model.sha256:
        raise AdaptedCheckpointError(
            f"{path}: trained from base weights {meta['base_sha256'][:12]}, but the model has {model.sha256[:12]}"
        )
    if meta["adaptation"] != adaptation:
        raise AdaptedCheckpointError(f"{path}: adaptation {meta['adaptation']} differs from {adaptation}")
    add_layers(model, adaptation, meta.get("options", {}), meta.get("classes"))
    expected = {k for k in model.sam.state_dict() if _is_trained(model.family, k, adaptation)}
    if set(ckpt["state"]) != expected:
        stray = sorted(set(ckpt["state"]) ^ expected)[:3]
        raise AdaptedCheckpointError(f"{path}: parameters do not fit the {adaptation} method of this model: {stray}")
    model.sam.load_state_dict(ckpt["state"], strict=False)
    model.sam.eval()  # after loading: TinyViT re-caches its attention biases
    model.adapted_sha256 = sha256_file(path)
    return meta


def load_method_model(
    model_cfg: dict,
    method_cfg: dict | None,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    classes: list | None = None,
    random_init: bool = False,
) -> LoadedModel:
    """The model a method runs, built in this one place: the base model (`models.load_model`) plus the
    method's adaptation. With `checkpoint`: the adapted checkpoint's layers and weights (inference,
    embed_adapted; checked against the base weights). Without (training): the method's new layers, freshly
    made, and everything else frozen (`prepare`; promptfree: a mask per entry of `classes`). A method of
    adaptation "none" (or no method) is the base model."""
    model = load_model(model_cfg, device, random_init=random_init)
    adaptation = method_cfg["adaptation"] if method_cfg else "none"
    if adaptation == "none":
        return model
    if checkpoint is not None:
        load_adapted(model, checkpoint, adaptation)
    else:
        prepare(model, adaptation, method_options(method_cfg), classes)
    return model


def trainable_parameters(model: LoadedModel) -> list[nn.Parameter]:
    """The parameters a training step updates (those `prepare` left trainable), in the module's order."""
    return [p for p in model.sam.parameters() if p.requires_grad]
