"""The torch-free registries of families and protocols, and the protocol modules behind them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from samstudy.families import MODEL_TYPES, family_info, types_with
from samstudy.protocols import PROTOCOLS, family_runs_protocol, protocol_info


def test_the_registries_import_no_torch():
    code = "import sys, samstudy.families, samstudy.protocols\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_registries_cover_the_schema_and_name_unknown_entries():
    from samstudy.config import schema

    props = schema()["properties"]
    model_enum = props["models"]["additionalProperties"]["properties"]["type"]["enum"]
    assert set(MODEL_TYPES) == set(model_enum)
    protocol_enum = props["prompts"]["properties"]["protocols"]["items"]["enum"]
    assert set(protocol_enum) | {"none"} == set(PROTOCOLS)
    with pytest.raises(KeyError, match="unknown model type 'sam3'; known: .*litemedsam"):
        family_info("sam3")
    with pytest.raises(KeyError, match="unknown protocol 'scribble'; known: .*box3d"):
        protocol_info("scribble")


def test_only_sam2_runs_the_volume_protocol_and_refuses_promptfree():
    sam2 = types_with("image_size")
    assert set(sam2) == {"sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "medsam2"}
    for model_type in MODEL_TYPES:
        assert family_runs_protocol(model_type, "box") and family_runs_protocol(model_type, "box3d")
        assert family_runs_protocol(model_type, "propagate") == (model_type in sam2)
        info = family_info(model_type)
        assert info.runs("promptfree") == (model_type not in sam2) and bool(info.refused) == (model_type in sam2)
