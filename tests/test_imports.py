"""CPU jobs do not import torch (nor MONAI): each `samstudy <verb>` job pays its imports once per job, and
torch alone costs seconds (benchmarks/jobs.py measures it)."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import samstudy
from samstudy.cli import TORCH_FREE_VERBS, VERBS
from tests.conftest import study_config

HEAVY = ("torch", "monai")


def _heavy_after(code: str, *args: str) -> list[str]:
    """The heavy modules loaded at the end of `code` run in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint('HEAVY=' + json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1].removeprefix("HEAVY="))


def _modules_of(verb: str) -> list[str]:
    """The samstudy modules a verb's handler imports (read from its source, so a new import is covered)."""
    tree = ast.parse(inspect.getsource(VERBS[verb][0]))
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("samstudy"):
            modules += [f"samstudy.{a.name}" for a in node.names] if node.module == "samstudy" else [node.module]
    return modules


def test_the_import_probe_sees_torch():
    assert _heavy_after("import samstudy.models") == ["torch"]  # the model registry needs torch
    assert _heavy_after("import samstudy.cli") == []


@pytest.mark.parametrize("verb", [v.split()[0] for v in TORCH_FREE_VERBS])
def test_cpu_verbs_import_neither_torch_nor_monai(verb):
    modules = _modules_of(verb)
    assert modules, f"{verb}: its handler imports no samstudy module"
    code = "import samstudy.cli\n" + "\n".join(f"import {m}" for m in modules)
    assert _heavy_after(code) == [], f"{verb} imports {modules}"


def test_cpu_jobs_run_without_torch(tmp_path):
    """The verbs run for real on a tiny study (each in a fresh interpreter, as Snakemake runs them) and
    end without torch or MONAI loaded: lazy imports inside the functions they call count too."""
    from samstudy.config import as_param
    from samstudy.io import read_json
    from samstudy.paths import Layout

    cfg = study_config(tmp_path)
    layout = Layout(cfg["results_dir"], cfg["cache_dir"])
    ds = cfg["datasets"][0]
    base = ["--results", layout.results_dir, "--cache", layout.cache_dir]
    run_cli = "from samstudy.cli import main\nmain(sys.argv[1:])"

    def job(verb: str, params: dict, *args: str) -> None:
        assert _heavy_after(run_cli, *base, *verb.split(), *args, "--params", as_param(params)) == [], verb

    job("ingest", {"dataset": ds, "seed": cfg["seed"]})
    job("manifest", {"datasets": ["phantom"]})
    job("split", {"role": ds["role"], "seed": cfg["seed"], "splits": cfg["splits"]}, "--dataset", "phantom")
    job("splits", {"datasets": ["phantom"]})
    job("preprocess", {"dataset": ds, "preprocess": cfg["preprocess"]})
    settings = {"components": cfg["prompts"]["components"]}
    job("prompts", {"prompts": settings, "seed": cfg["seed"]}, "--dataset", "phantom", "--protocol", "box")
    _ground_truth_as_run(layout, "gt")
    derived = {"derived": {"from": "gt", "kind": "box"}, "prompts": settings, "seed": cfg["seed"]}
    job("prompts", derived, "--dataset", "phantom", "--protocol", "auto_box")
    info = {"method": "gt", "model": "none", "adaptation": "none", "protocol": "none", "prompted": False}
    info["prompt_source"] = "none"
    job("evaluate", {"run_info": info, "evaluate": cfg["evaluate"]}, "--dataset", "phantom", "--run", "gt")
    job(
        "evaluate",
        {"run_info": info, "evaluate": cfg["evaluate"]},
        "--dataset",
        "phantom",
        "--run",
        "gt",
        "--threads",
        "2",
    )
    job("summarize", {"parts": [["gt", "phantom"]], "seed": cfg["seed"]})
    job("shard", {"shards": 2}, "--dataset", "phantom")
    for shard in ("0of2", "1of2"):
        job(
            f"--shard {shard} prompts",
            {"prompts": settings, "seed": cfg["seed"]},
            "--dataset",
            "phantom",
            "--protocol",
            "box",
        )
    job("gather prompts", {"shards": 2}, "--dataset", "phantom", "--name", "box")
    job("nnunet export", {"dataset_id": 901}, "--dataset", "phantom")
    import pandas as pd

    metrics = pd.read_parquet(layout.run_metrics("gt", "phantom"))
    assert len(metrics) > 0 and (metrics["dice"] == 1.0).all()  # the jobs did their work
    assert read_json(layout.prompts("phantom", "auto_box"))["source"]


def _ground_truth_as_run(layout, run: str) -> None:
    """A "prediction" of every evaluation case: its ground truth put back through the inverse mapping."""
    from samstudy.cases import eval_cases, load_dataset_table
    from samstudy.infer import write_prediction
    from samstudy.preprocess import load_preprocessed

    rows = load_dataset_table(layout, "phantom")[0].set_index("case_id")
    for case in eval_cases(layout, "phantom"):
        pre = load_preprocessed(layout, "phantom", case)
        write_prediction(
            layout.prediction(run, "phantom", case), pre["labels"], int(pre["axis"]), rows.loc[case, "images"][0]
        )


# ---------------------------------------------------------------- the import graph of the package

PACKAGE_ROOT = Path(samstudy.__file__).parent
# The bottom layer (CLI on top): these, and all they import (also inside functions), reach no stage and no
# model. The readers count as bottom: config checks dataset entries with them, and they import no stage
# and no torch; so do the writers of the built-in datasets, which their readers call at ingest.
BOTTOM = ("samstudy.paths", "samstudy.io", "samstudy.config")
LOW_LEVEL = (*BOTTOM, "samstudy.readers", "samstudy.synthetic", "samstudy.builtin")


@dataclass(frozen=True)
class Import:
    """One imported module (and the name taken from it, "" for the module itself) at a line."""

    module: str
    name: str
    line: int
    bound_as: str | None  # the local name the module itself is bound to, if any
    typing_only: bool = False  # under `if TYPE_CHECKING:` (annotations: not run)


def _modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's __init__) for every .py file under root."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _imports(path: Path, module: str, is_package: bool, modules) -> list[Import]:
    """Every import statement anywhere in a module (module level, inside functions, under TYPE_CHECKING),
    relative imports resolved. `from a import b` imports module a.b if there is one, else a's name b (the
    packages above an imported module are added by `import_graph`)."""
    here = module if is_package else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or (alias.name if "." not in alias.name else None)
                found.append(Import(alias.name, "", node.lineno, bound, id(node) in typing_only))
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = here.split(".")
                source = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                hidden = id(node) in typing_only
                if f"{source}.{alias.name}" in modules:
                    found.append(Import(f"{source}.{alias.name}", "", node.lineno, alias.asname or alias.name, hidden))
                else:
                    found.append(Import(source, alias.name, node.lineno, None, hidden))
    return found


def _ancestors(module: str) -> set[str]:
    """The packages above a module (a.b.c -> a.b, a)."""
    parts = module.split(".")
    return {".".join(parts[:k]) for k in range(1, len(parts))}


def import_graph(root: Path, package: str, lazy: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (any import statement, anywhere in it), plus:
    - the packages above an imported module (importing a.b.c runs a.b's __init__, which may import more),
      except the importer's own packages, which are set up before it: a plug-in reading its registry's
      constants is no loop, unless the registry imports that plug-in itself (then the edge stays);
    - `lazy`: registry -> the modules it imports by name at call time (the families' and protocols' tables).
    """
    modules = _modules(root, package)
    found = {module: _imports(path, module, is_package, modules) for module, (path, is_package) in modules.items()}
    direct = {module: {i.module for i in found[module] if i.module in modules} - {module} for module in modules}
    runs = {module: {i.module for i in found[module] if not i.typing_only} for module in modules}
    graph = {}
    for module, imported in direct.items():
        mine = _ancestors(module)
        above = set().union(*(_ancestors(m) for m in imported)) & set(modules) - mine
        # an explicit import of its own package is an edge only if that package runs an import of it
        own = {a for a in mine & imported if module in runs[a]}
        graph[module] = ((imported - mine) | above | own) - {module}
    for registry, targets in (lazy or {}).items():
        graph[registry] |= set(targets) & set(modules)
    return graph


def registry_modules() -> dict[str, set[str]]:
    """The modules the registries import by name (lazily, at call time): families and protocols."""
    from samstudy.families import FAMILY_TABLE
    from samstudy.protocols import PROTOCOL_TABLE

    return {
        "samstudy.families": {info.module for info in FAMILY_TABLE},
        "samstudy.protocols": {info.module for info in PROTOCOL_TABLE},
    }


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a, shortest from its first module) per group of modules that import
    each other (Tarjan's strongly connected components), sorted."""
    index, low, stack, groups = {}, {}, [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set(stack[stack.index(v) :])
            del stack[stack.index(v) :]
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        start = min(group)
        came_from, queue = {start: None}, [start]
        while queue:  # breadth first, inside the group, until an edge leads back to start
            v = queue.pop(0)
            if start in graph[v]:
                break
            for w in sorted(graph[v] & group):
                if w not in came_from:
                    came_from[w] = v
                    queue.append(w)
        path = [v]
        while came_from[path[0]] is not None:
            path.insert(0, came_from[path[0]])
        cycles.append([*path, start])
    return sorted(cycles)


def private_imports(root: Path, package: str) -> list[str]:
    """Where a module uses another module's private name: `from x import _name`, or `x._name` on a module x
    it imported."""
    modules = _modules(root, package)
    found = []
    for module, (path, is_package) in modules.items():
        imports = [i for i in _imports(path, module, is_package, modules) if i.module in modules]
        imports = [i for i in imports if i.module != module]
        found += [f"{module}:{i.line}: from {i.module} import {i.name}" for i in imports if _private(i.name)]
        bound = {i.bound_as for i in imports if i.bound_as}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                if _private(node.attr):
                    found.append(f"{module}:{node.lineno}: {node.value.id}.{node.attr}")
    return sorted(found)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen - {start}


def above_bottom(graph: dict[str, set[str]], bottom: tuple[str, ...], low_level: tuple[str, ...]) -> dict:
    """Each bottom module -> the modules outside the low level (modules or packages) that it reaches."""
    low = lambda m: any(m == x or m.startswith(f"{x}.") for x in low_level)  # noqa: E731
    return {b: sorted(m for m in reachable(graph, b) if not low(m)) for b in bottom}


def test_the_package_has_no_import_cycle():
    """No module of samstudy imports itself back, also through an import inside a function, the package
    above an imported module, or a registry's lazy import of a family or protocol module."""
    lazy = registry_modules()
    assert lazy["samstudy.protocols"] >= {"samstudy.protocols.clicks", "samstudy.protocols.propagate"}
    cycles = import_cycles(import_graph(PACKAGE_ROOT, "samstudy", lazy))
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_name_is_used_across_modules():
    found = private_imports(PACKAGE_ROOT, "samstudy")
    assert found == [], "private names used across modules:\n" + "\n".join(found)


def test_the_bottom_layer_imports_no_stage_and_no_model():
    """paths, io and config, and all they import (also inside functions), stay in the low level."""
    above = above_bottom(import_graph(PACKAGE_ROOT, "samstudy"), BOTTOM, LOW_LEVEL)
    assert above == dict.fromkeys(BOTTOM, []), above


def test_the_graph_checks_find_a_planted_cycle_a_private_name_and_a_layering_break(tmp_path):
    """The checks above on a tiny package: a loop closed by a relative import inside a function, private
    names taken by `from` and through a module, the bottom importing a stage."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "sub" / "__init__.py"):
        init.write_text("")
    (pkg / "paths.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n\n_hidden = 1\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    (pkg / "sub" / "stage.py").write_text("import pkg.a as first\n\nvalue = first._hidden\n")
    assert import_cycles(import_graph(pkg, "pkg")) == []
    assert above_bottom(import_graph(pkg, "pkg"), ("pkg.paths",), ("pkg.paths",)) == {"pkg.paths": []}
    assert private_imports(pkg, "pkg") == ["pkg.sub.stage:3: first._hidden"]

    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n\n    return a\n")  # closes a -> b -> a
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import _hidden\n\n    return _hidden\n")
    assert import_cycles(import_graph(pkg, "pkg")) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
    assert "pkg.sub.b:2: from pkg.a import _hidden" in private_imports(pkg, "pkg")
    # a longer loop, and a second one: each reported once
    assert import_cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "u": {"v"}, "v": {"u", "x"}}) == [
        ["u", "v", "u"],
        ["x", "y", "z", "x"],
    ]

    (pkg / "paths.py").write_text("def f():\n    import pkg.sub.stage\n")  # the bottom reaches a stage
    above = above_bottom(import_graph(pkg, "pkg"), ("pkg.paths",), ("pkg.paths",))
    assert above == {"pkg.paths": ["pkg.a", "pkg.sub", "pkg.sub.b", "pkg.sub.stage"]}  # pkg.sub's __init__ runs


def test_the_graph_sees_the_packages_above_an_import_and_the_registries_lazy_imports(tmp_path):
    """prompts -> the protocol registry, whose lazy import of the clicks protocol imported prompts: a loop
    only the package edge and the lazy edge show; a plug-in reading its own registry's constants is none."""
    pkg = tmp_path / "pkg"
    (pkg / "reg").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "reg" / "__init__.py").write_text("NAME = 1\nMODULES = ['pkg.reg.plug']\n")
    (pkg / "reg" / "plug.py").write_text("from pkg.reg import NAME\nfrom pkg import user\n")
    (pkg / "user.py").write_text("from pkg.reg.other import X\n")
    (pkg / "reg" / "other.py").write_text("X = 1\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.user"] == {"pkg.reg", "pkg.reg.other"} and graph["pkg.reg.plug"] == {"pkg.user"}
    assert import_cycles(graph) == []
    lazy = {"pkg.reg": {"pkg.reg.plug"}}
    assert import_cycles(import_graph(pkg, "pkg", lazy)) == [["pkg.reg", "pkg.reg.plug", "pkg.user", "pkg.reg"]]
    (pkg / "user.py").write_text("X = 1\n")  # the loop removed: the plug-in's import of its registry is no edge
    assert import_cycles(import_graph(pkg, "pkg", lazy)) == []
    (pkg / "reg" / "__init__.py").write_text("from pkg.reg import plug\nNAME = 1\n")  # a registry importing it
    assert import_cycles(import_graph(pkg, "pkg")) == [["pkg.reg", "pkg.reg.plug", "pkg.reg"]]
