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

Every method works with SAM's ViT (segment_anything ``Block``) and LiteMedSAM's TinyViT
(``TinyViTBlock``): both have blocks with ``attn`` (with a ``qkv`` and a ``proj`` linear) and ``mlp``.
New layers start as the identity (LoRA's B and the adapters' up-projections are zero), so training starts
from the pretrained model. Normalisation layers stay in eval mode during training (their running
statistics are the pretrained ones; batches of a few slices would only make them noisy).

A checkpoint holds only the trained tensors plus metadata; loading rebuilds the method's layers from the
metadata and checks the base model's hash.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from samstudy.config import ENCODER_ADAPTATIONS, METHOD_OPTIONS
from samstudy.io import sha256_file
from samstudy.models import LoadedModel

ADAPTATIONS = ("decoder", "lora", "adapter", "full")
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


def add_layers(model: LoadedModel, adaptation: str, options: dict) -> None:
    """Insert the method's new layers (LoRA, adapters) into the image encoder, in place."""
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


def _is_trained(name: str, adaptation: str) -> bool:
    if name.startswith("mask_decoder."):
        return True
    if adaptation == "lora":
        return "lora_" in name
    if adaptation == "adapter":
        return ADAPTER_TAG in name
    if adaptation == "full":
        return name.startswith("image_encoder.")
    return False


def prepare(model: LoadedModel, adaptation: str, options: dict) -> list[nn.Parameter]:
    """Add the method's layers, freeze everything else; returns the trainable parameters."""
    if adaptation not in ADAPTATIONS:
        raise ValueError(f"unknown adaptation '{adaptation}'; known: {', '.join(ADAPTATIONS)}")
    add_layers(model, adaptation, options)
    params = []
    for name, p in model.sam.named_parameters():
        p.requires_grad_(_is_trained(name, adaptation))
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
    return {k: v.detach().cpu().clone() for k, v in model.sam.state_dict().items() if _is_trained(k, adaptation)}


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
    add_layers(model, adaptation, meta.get("options", {}))
    expected = {k for k in model.sam.state_dict() if _is_trained(k, adaptation)}
    if set(ckpt["state"]) != expected:
        stray = sorted(set(ckpt["state"]) ^ expected)[:3]
        raise AdaptedCheckpointError(f"{path}: parameters do not fit the {adaptation} method of this model: {stray}")
    model.sam.load_state_dict(ckpt["state"], strict=False)
    model.sam.eval()  # after loading: TinyViT re-caches its attention biases
    model.adapted_sha256 = sha256_file(path)
    return meta
