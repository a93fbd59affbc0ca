"""Loading models: SAM ViT-B/L/H, MedSAM and LiteMedSAM, built by their family (samstudy.families) from
the official segment_anything modules.

Checkpoints load with ``weights_only=True``; their SHA-256 is recorded (and checked when the config gives
one). A missing, unreadable or wrong-architecture checkpoint gives a clear error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from samstudy.families import MODEL_TYPES, family_of
from samstudy.families.base import Family, Predictor
from samstudy.io import sha256_file, sha256_json


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of the wrong architecture or has the wrong hash."""


@dataclass
class LoadedModel:
    """A ready model with what the cache and the checkpoints need to know about it."""

    kind: str
    sam: torch.nn.Module
    family: Family
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
    def predictor(self) -> Predictor:
        """The family's predictor over this model: the only caller of its encoder and decoder (built on
        each access: it holds nothing but the family and the module, whose layers adaptation may change)."""
        return self.family.predictor(self.sam)

    @property
    def embedding_size(self) -> int:
        return self.predictor.embedding_size

    @property
    def low_res_size(self) -> int:
        return self.predictor.low_res_size


def checkpoint_path(model_cfg: dict) -> Path:
    """The checkpoint path a model entry points to (by default the weights its family ships, if any)."""
    if model_cfg.get("checkpoint"):
        return Path(model_cfg["checkpoint"]).expanduser()
    packaged = family_of(model_cfg["type"]).packaged_checkpoint() if model_cfg["type"] in MODEL_TYPES else None
    if packaged is not None:
        return packaged
    raise CheckpointError(f"model type {model_cfg['type']} needs a 'checkpoint' path in the config")


def checkpoint_sha256(model_cfg: dict) -> str:
    """SHA-256 of the model's checkpoint file (what caches and adapted checkpoints are keyed by)."""
    path = checkpoint_path(model_cfg)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return sha256_file(path)


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's weights: for every state-dict entry in order, its name, dtype, shape and raw
    bytes (what a random-init model's caches and adapted checkpoints are keyed by, as a file's hash keys a
    checkpoint's)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())  # the tensor's own buffer: no copy of the bytes
    return digest.hexdigest()


def load_model(model_cfg: dict, device: str | torch.device = "cpu", random_init: bool = False) -> LoadedModel:
    """Build a registry model and load its checkpoint safely.

    `random_init=True` (or the entry's `random_init: true`) skips the checkpoint (tests, offline demos and
    benchmarks of speed only): the weights are drawn from the entry's `seed` (config.validate fills in the
    study's; 0 when absent), the same in every process, and the model's hash is the hash of those weights
    (`weights_sha256`), so a cache never serves embeddings of other random weights.
    """
    kind = model_cfg["type"]
    if kind not in MODEL_TYPES:
        raise CheckpointError(f"unknown model type '{kind}'; known: {sorted(MODEL_TYPES)}")
    family = family_of(kind).configured(model_cfg)
    random_init = random_init or bool(model_cfg.get("random_init"))
    path: Path | None = None
    if random_init:
        sam = family.build_random(int(model_cfg.get("seed") or 0))
        digest = weights_sha256(sam)
    else:
        sam = family.build()
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
            family.load_state(sam, state)
        except RuntimeError as err:
            first = str(err).splitlines()[0:3]
            raise CheckpointError(f"checkpoint {path} does not fit model type '{kind}': {' '.join(first)}") from err
    # eval() after load_state_dict: TinyViT caches its attention biases when switched to eval.
    sam.eval()
    sam.to(device)
    return LoadedModel(kind, sam, family, str(path) if path else None, digest)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
