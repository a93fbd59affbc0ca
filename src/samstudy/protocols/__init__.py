"""Prompt protocols: one module per protocol (`samstudy/protocols/<module>.py`); this registry says what
each needs and stores, and imports no torch (config validation and the study table read it).

A protocol module has the same small interface (samstudy.protocols.base): `run(predictor inputs of one
case) -> CaseResult` (label slices, optional per-click stack, the record of the prompts it used) and
`run_record`; the predictor capabilities it needs are its registry line's `needs` (the one source).
`infer` loops over the cases and calls `protocol_for(kind).run(...)`; it names no protocol.

Adding a protocol: one file in this package with `run` and `run_record`, one `ProtocolInfo` line below,
the prompts it stores made by samstudy.prompts (`case_prompts`), and its tests (tests/test_protocols.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from samstudy.families import SLICE, VOLUME, family_info

# What a protocol stores in its prompts file (samstudy.prompts makes them):
PER_SLICE = "per_slice"  # the prompt of every object on every slice where it is present
START = "start"  # the starting prompt of every object on every slice (the rest is made at inference)
BOX3D = "box3d"  # one 3D box per object per case
NOTHING = "none"  # no prompts file (prompt-free runs)


@dataclass(frozen=True)
class ProtocolInfo:
    """One protocol kind: what it needs from a family and what it stores and records."""

    name: str  # the kind (a ground-truth protocol's name; a derived protocol names its kind)
    module: str  # samstudy.protocols.<module>
    needs: frozenset[str]  # the predictor capabilities it uses (SLICE, VOLUME): all must be the family's
    stores: str  # PER_SLICE, START, BOX3D or NOTHING
    derivable: bool  # a derived (automatic) protocol may be of this kind (prompts from another run)
    settings: tuple[str, ...] = ()  # the `prompts` config keys its prompts are made with, beyond `components`
    per_step: bool = False  # it returns the prediction after every step (clicks): evaluate scores each


_SLICE = frozenset({SLICE})
# propagate: the prompt slice's mask from the slice path (cached embedding, decoder), then the volume session.
_SLICE_VOLUME = frozenset({SLICE, VOLUME})
PROTOCOL_TABLE: tuple[ProtocolInfo, ...] = (
    ProtocolInfo("box", "samstudy.protocols.static", _SLICE, PER_SLICE, True),
    ProtocolInfo("box_jitter", "samstudy.protocols.static", _SLICE, PER_SLICE, False, ("jitter_px",)),
    ProtocolInfo("points1", "samstudy.protocols.static", _SLICE, PER_SLICE, False, ("negative_points",)),
    ProtocolInfo("points3", "samstudy.protocols.static", _SLICE, PER_SLICE, False, ("negative_points",)),
    ProtocolInfo("points5", "samstudy.protocols.static", _SLICE, PER_SLICE, False, ("negative_points",)),
    ProtocolInfo("clicks", "samstudy.protocols.clicks", _SLICE, START, False, ("clicks",), per_step=True),
    ProtocolInfo("box3d", "samstudy.protocols.box3d", _SLICE, BOX3D, True, ("box3d",)),
    ProtocolInfo("propagate", "samstudy.protocols.propagate", _SLICE_VOLUME, BOX3D, True),
    ProtocolInfo("none", "samstudy.protocols.promptfree", _SLICE, NOTHING, False),
)
REGISTRY: dict[str, ProtocolInfo] = {info.name: info for info in PROTOCOL_TABLE}
PROTOCOLS: tuple[str, ...] = tuple(REGISTRY)
PROMPT_FREE = "none"  # the protocol (and prompt source) of prompt-free runs
DERIVED_KINDS: tuple[str, ...] = tuple(p.name for p in PROTOCOL_TABLE if p.derivable)


def protocol_info(kind: str) -> ProtocolInfo:
    """What a protocol kind needs and stores (no torch imported)."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown protocol '{kind}'; known: {sorted(PROTOCOLS)}") from None


def family_runs_protocol(model_type: str, kind: str) -> bool:
    """Whether a model type's family has every capability a protocol kind needs (`propagate` needs SAM 2's
    video memory, the volume capability, besides the slice path; every other protocol runs on every family)."""
    return protocol_info(kind).needs <= family_info(model_type).capabilities


def protocol_for(kind: str) -> ModuleType:
    """The module that runs a protocol kind (imported on first use: it imports torch)."""
    return importlib.import_module(protocol_info(kind).module)


__all__ = [
    "BOX3D",
    "DERIVED_KINDS",
    "NOTHING",
    "PER_SLICE",
    "PROMPT_FREE",
    "PROTOCOLS",
    "PROTOCOL_TABLE",
    "START",
    "SLICE",
    "VOLUME",
    "ProtocolInfo",
    "family_runs_protocol",
    "protocol_for",
    "protocol_info",
]
