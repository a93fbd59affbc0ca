"""Model families: one file per family with its builder, official input transform, prompt scaling,
postprocessing and 3D propagation rule; this registry maps the config's model types to them."""

from __future__ import annotations

from samstudy.families.base import Family
from samstudy.families.litemedsam import LiteMedSAM
from samstudy.families.medsam import MedSAM
from samstudy.families.sam import SAM
from samstudy.families.sam2 import SAM2, SAM2_CONFIGS

FAMILIES: dict[str, Family] = {
    "litemedsam": LiteMedSAM(),
    "sam_vit_b": SAM("vit_b"),
    "sam_vit_l": SAM("vit_l"),
    "sam_vit_h": SAM("vit_h"),
    "medsam_vit_b": MedSAM(),
    **{model_type: SAM2(model_type) for model_type in SAM2_CONFIGS},
}


def family_of(model_type: str) -> Family:
    """The family that runs a config model type."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise KeyError(f"unknown model type '{model_type}'; known: {sorted(FAMILIES)}") from None


__all__ = ["FAMILIES", "Family", "family_of"]
