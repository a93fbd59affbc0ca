"""Shared by the benchmark scripts: the model entry and a phantom study's config in a scratch folder."""

from __future__ import annotations

from pathlib import Path

from samstudy import config as samstudy_config


def model_cfg(model: str) -> dict:
    """A registry entry; models other than litemedsam are randomly initialised (speed only, no weights)."""
    return {"type": model} if model == "litemedsam" else {"type": model, "checkpoint": "none"}


def phantom_config(root: Path, model: str, n_patients: int, shape: list[int], **sections) -> dict:
    """A validated config: one CT phantom dataset "bench", model "m", results and cache under `root`,
    plus the given config sections (embed, splits, ...)."""
    return samstudy_config.validate(
        {
            "results_dir": str(root / "results"),
            "cache_dir": str(root / "cache"),
            "datasets": [
                {
                    "name": "bench",
                    "format": "synthetic",
                    "modality": "CT",
                    "synthetic": {"n_patients": n_patients, "shape": shape},
                }
            ],
            "models": {"m": model_cfg(model)},
            "methods": {"zeroshot": {"model": "m"}},
            **sections,
        }
    )
