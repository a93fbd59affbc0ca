"""The torch-free registries of families and protocols, and the protocol modules behind them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import samstudy
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


def test_each_protocol_module_has_the_interface_and_the_registry_its_needs():
    from samstudy.families import CAPABILITIES
    from samstudy.protocols import PROTOCOL_TABLE, protocol_for

    for info in PROTOCOL_TABLE:
        module = protocol_for(info.name)
        assert callable(module.run) and callable(module.run_record), info.name
        assert not hasattr(module, "CAPABILITY"), info.name  # the registry is the one source
        assert info.needs and info.needs <= set(CAPABILITIES), info.name
    assert protocol_info("propagate").needs == {"slice", "volume"}  # its prompt slice takes the slice path
    assert [p.name for p in PROTOCOL_TABLE if p.per_step] == ["clicks"]


def test_a_protocol_needing_capabilities_a_family_lacks_is_not_run(monkeypatch):
    """Every capability a protocol needs must be the family's: a volume-only family runs neither propagate
    (it needs the slice path too) nor box; a slice + volume family runs both."""
    from samstudy import families

    volume_only = families.FamilyInfo("vol", "vol", "Vol", "x", "X", capabilities=frozenset({"volume"}))
    both = families.FamilyInfo("both", "both", "Both", "x", "X", capabilities=frozenset({"slice", "volume"}))
    monkeypatch.setitem(families.REGISTRY, "vol", volume_only)
    monkeypatch.setitem(families.REGISTRY, "both", both)
    assert not family_runs_protocol("vol", "propagate") and not family_runs_protocol("vol", "box")
    assert family_runs_protocol("both", "propagate") and family_runs_protocol("both", "box")


def test_each_family_predictor_has_the_registrys_capabilities():
    from samstudy.families import FAMILY_TABLE, family_of
    from samstudy.families.sam2 import SAM2_CONFIGS

    for info in FAMILY_TABLE:
        assert family_of(info.model_type).capabilities == info.capabilities, info.model_type
    assert set(SAM2_CONFIGS) == {t for t in MODEL_TYPES if family_info(t).family == "sam2"}


PACKAGE_ROOT = Path(samstudy.__file__).parent


def _strings(path: Path) -> set[str]:
    """The string constants of a module's code: its docstrings (module, class, function) and the keys of
    dicts (`{"box": ...}`, `prompt["box"]`: a stored prompt's fields, not a protocol) left out."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    docs |= {id(key) for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys}
    docs |= {id(node.slice) for node in ast.walk(tree) if isinstance(node, ast.Subscript)}
    return {
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    }


@pytest.mark.parametrize(
    "module",
    [
        "infer",
        "study",
        "embed",
        "train",
        # not paths.py: the one path layout names folders ("clicks/") and the prompts the prompted nnU-Net
        # is given (NNUNET_PROMPT_PROTOCOL = "box"): names of places and of one oracle's input, not dispatch
    ],
)
def test_the_stages_name_no_protocol(module):
    """They dispatch through the registry: no protocol's name is a string in their code."""
    found = _strings(PACKAGE_ROOT / f"{module}.py") & (set(PROTOCOLS) - {"none"})  # "none": also an adaptation
    assert not found, f"samstudy/{module}.py names protocols {sorted(found)}"


def test_no_model_type_is_named_outside_the_families():
    """Only samstudy/families knows the model types (the schema's enum aside): elsewhere, a family is asked."""
    found = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        if path.parent.name != "families":
            names = _strings(path) & set(MODEL_TYPES)
            if names:
                found[str(path.relative_to(PACKAGE_ROOT))] = sorted(names)
    assert found == {}, found


EMBED = {"slices": "needed", "slice_margin": 0, "batch_size": 4, "device": "cpu", "precision": "fp32"}
METHOD = {"model": "m", "adaptation": "none"}


def _write_prompts(layout, kind: str, cases: dict) -> None:
    from samstudy.io import write_json

    artifact = {"dataset": "phantom", "protocol": kind, "kind": kind, "source": "ground_truth", "settings": {}}
    write_json(layout.prompts("phantom", kind), {**artifact, "cases": cases})


def test_infer_runs_a_protocol_registered_in_the_registry(study, tiny_model, monkeypatch):
    """A new protocol is one module and one registry line: infer finds it by the prompts' kind."""
    import types

    import numpy as np

    from samstudy import protocols
    from samstudy.cases import eval_cases
    from samstudy.embed import embed_dataset
    from samstudy.infer import infer_dataset
    from samstudy.io import read_json
    from samstudy.protocols.base import CaseResult, prompted_run_record

    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    seen = []

    def run(model, case):
        seen.append((case.case, case.prompts, sorted(case.embeddings)[:1]))
        return CaseResult(np.ones(case.labels.shape, dtype=np.uint8), record={"note": case.prompts[0]["note"]})

    fake = types.ModuleType("samstudy_fake_protocol")
    fake.run, fake.run_record = run, prompted_run_record
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    info = protocols.ProtocolInfo("fake", fake.__name__, frozenset({"slice"}), protocols.PER_SLICE, False)
    monkeypatch.setitem(protocols.REGISTRY, "fake", info)
    cases = eval_cases(layout, "phantom")
    _write_prompts(layout, "fake", {c: [{"note": f"hello {c}"}] for c in cases})
    written = infer_dataset(layout, "phantom", "zs", METHOD, {"type": "litemedsam"}, "fake", "cpu")
    assert [s[0] for s in seen] == cases and len(written) == len(cases)
    record = read_json(layout.prompt_record("zs.fake", "phantom", cases[0]))
    assert record == {"case": cases[0], "protocol": "fake", "note": f"hello {cases[0]}"}
    assert read_json(layout.run_record("zs.fake", "phantom"))["prompt_source"] == "ground_truth"


def test_a_family_without_the_volume_capability_refuses_the_volume_protocol(study, tiny_model):
    import numpy as np

    from samstudy.cases import eval_cases
    from samstudy.embed import embed_dataset
    from samstudy.families.base import CapabilityError
    from samstudy.infer import infer_dataset

    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    _write_prompts(layout, "propagate", {c: [] for c in eval_cases(layout, "phantom")})
    with pytest.raises(ValueError, match="propagate .* needs the volume capability, which model family litemedsam"):
        infer_dataset(layout, "phantom", "zs", METHOD, {"type": "litemedsam"}, "propagate", "cpu")
    model = tiny_model({"type": "litemedsam"})
    with pytest.raises(CapabilityError, match="litemedsam has no volume capability"):
        model.predictor.volume_session(np.zeros((2, 8, 8), dtype=np.uint8))


def test_infer_refuses_a_protocol_whose_capabilities_the_predictor_lacks(study, tiny_model, monkeypatch):
    """A volume-only predictor is refused propagate and box before any case; a slice + volume one runs
    propagate (here with no objects: the session is opened and nothing is tracked)."""

    from samstudy.cases import eval_cases
    from samstudy.embed import embed_dataset
    from samstudy.families.base import Predictor
    from samstudy.infer import infer_dataset

    cfg, layout = study
    embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, EMBED)
    cases = eval_cases(layout, "phantom")
    _write_prompts(layout, "propagate", {c: [] for c in cases})
    _write_prompts(layout, "box", {c: [] for c in cases})
    monkeypatch.setattr(Predictor, "capabilities", frozenset({"volume"}))
    for kind in ("propagate", "box"):
        with pytest.raises(ValueError, match=f"{kind} .* needs the slice capability, which model family litemedsam"):
            infer_dataset(layout, "phantom", "zs", METHOD, {"type": "litemedsam"}, kind, "cpu")
    monkeypatch.setattr(Predictor, "capabilities", frozenset({"slice", "volume"}))
    monkeypatch.setattr(Predictor, "volume_session", lambda self, slices: object())
    written = infer_dataset(layout, "phantom", "zs", METHOD, {"type": "litemedsam"}, "propagate", "cpu")
    assert len(written) == len(cases)
