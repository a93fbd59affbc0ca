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


def spread(values: list[float]) -> dict:
    """Median and spread of repeated measurements: {median, min, max, rel_spread = (max - min) / median,
    values}. Benchmarks comparing setups measure them interleaved (A B A B ..., every setup once per
    round), so a load change on this shared machine lands on every setup, not on one."""
    import statistics

    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "rel_spread": (max(values) - min(values)) / med if med else None,
        "values": list(values),
    }


def fmt(stat: dict, digits: int = 2) -> str:
    """'median [min, max]' of a `spread` result."""
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}, {stat['max']:.{digits}f}]"
