"""Model families: one file per family (its builder, official input transform, prompt scaling,
postprocessing and predictor); this registry maps the config's model types to them.

The registry is a table of plain data (`FamilyInfo`) and imports no torch: config validation and the study
table read what a family can run (`family_info`) without loading a model. `family_of` imports the family's
module when a job needs the family itself.

Adding a family: one file `families/<family>.py` (a `Family` subclass and, where its model is not
segment_anything's, its own predictor), one `FamilyInfo` line per model type below, and its tests
(against a transcription of its official code, as tests/official_reference.py does).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing the family modules would import torch
    from samstudy.families.base import Family

# Every adaptation samstudy builds (the schema's `methods.*.adaptation` enum; samstudy.adapt builds them).
ADAPTATIONS = ("none", "decoder", "lora", "adapter", "full", "promptfree")
# Capabilities a family's predictor can have (samstudy.families.base): `slice` = encoder -> embedding
# cache -> decoder per slice; `volume` = a session over one case (set the image, add interactions, 3D out).
SLICE = "slice"
VOLUME = "volume"
CAPABILITIES = (SLICE, VOLUME)

SAM2_REFUSED = (
    "promptfree builds a segment_anything mask decoder, which SAM 2's (high-resolution features, "
    "object-score head) is not; lora, adapter and full are not verified on the Hiera encoder yet"
)


@dataclass(frozen=True)
class FamilyInfo:
    """What the study needs to know about one config model type, without loading it."""

    model_type: str  # the config's `models.*.type`
    family: str  # the family's name (its file in samstudy/families)
    label: str  # how messages name the family ("SAM 2")
    module: str  # the module holding the family class
    factory: str  # the family class in `module`
    args: tuple = ()  # its constructor's arguments
    capabilities: frozenset[str] = frozenset({SLICE})
    adaptations: tuple[str, ...] = ADAPTATIONS  # the adaptations samstudy runs on it ("none" included)
    refused: str = ""  # why the other adaptations are not run (empty when it runs them all)
    needs_checkpoint: bool = True  # False: the weights ship with samstudy (a checkpoint path is optional)
    model_keys: frozenset[str] = frozenset()  # model-entry keys only this family reads (e.g. image_size)

    def runs(self, adaptation: str) -> bool:
        """Whether samstudy runs this adaptation on this family."""
        return adaptation in self.adaptations


def _sam2(model_type: str) -> FamilyInfo:
    return FamilyInfo(
        model_type,
        "sam2",
        "SAM 2",
        "samstudy.families.sam2",
        "SAM2",
        (model_type,),
        frozenset({SLICE, VOLUME}),
        ("none", "decoder"),
        SAM2_REFUSED,
        True,
        frozenset({"image_size"}),
    )


FAMILY_TABLE: tuple[FamilyInfo, ...] = (
    FamilyInfo("litemedsam", "litemedsam", "LiteMedSAM", "samstudy.families.litemedsam", "LiteMedSAM",
               needs_checkpoint=False),
    FamilyInfo("sam_vit_b", "sam", "SAM", "samstudy.families.sam", "SAM", ("vit_b",)),
    FamilyInfo("sam_vit_l", "sam", "SAM", "samstudy.families.sam", "SAM", ("vit_l",)),
    FamilyInfo("sam_vit_h", "sam", "SAM", "samstudy.families.sam", "SAM", ("vit_h",)),
    FamilyInfo("medsam_vit_b", "medsam", "MedSAM", "samstudy.families.medsam", "MedSAM"),
    _sam2("sam2.1_hiera_t"),
    _sam2("sam2.1_hiera_s"),
    _sam2("sam2.1_hiera_b+"),
    _sam2("sam2.1_hiera_l"),
    _sam2("medsam2"),  # MedSAM2's weights are SAM 2.1 Hiera-T weights
)  # fmt: skip
REGISTRY: dict[str, FamilyInfo] = {info.model_type: info for info in FAMILY_TABLE}
MODEL_TYPES: tuple[str, ...] = tuple(REGISTRY)


def family_info(model_type: str) -> FamilyInfo:
    """What a config model type is and runs (no torch imported)."""
    try:
        return REGISTRY[model_type]
    except KeyError:
        raise KeyError(f"unknown model type '{model_type}'; known: {sorted(MODEL_TYPES)}") from None


def types_with(key: str) -> tuple[str, ...]:
    """The model types whose entries may carry `key` (e.g. image_size: the SAM 2 types)."""
    return tuple(t for t in MODEL_TYPES if key in REGISTRY[t].model_keys)


_instances: dict[str, Family] = {}


def family_of(model_type: str) -> Family:
    """The family that runs a config model type (imports its module, and torch, on first use)."""
    info = family_info(model_type)
    if model_type not in _instances:
        cls = getattr(importlib.import_module(info.module), info.factory)
        _instances[model_type] = cls(*info.args)
    return _instances[model_type]


class _Families(Mapping):
    """model type -> Family, each family built on first access (`family_of`)."""

    def __getitem__(self, model_type: str) -> Family:
        return family_of(model_type)

    def __iter__(self) -> Iterator[str]:
        return iter(MODEL_TYPES)

    def __len__(self) -> int:
        return len(MODEL_TYPES)


FAMILIES: Mapping[str, Family] = _Families()

__all__ = [
    "ADAPTATIONS",
    "CAPABILITIES",
    "FAMILIES",
    "FAMILY_TABLE",
    "MODEL_TYPES",
    "SLICE",
    "VOLUME",
    "FamilyInfo",
    "family_info",
    "family_of",
    "types_with",
]
