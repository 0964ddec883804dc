"""The package's shape: what may import what, and no import cycles (read from the source, not run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dfpir"

#: Besides itself, the network may use only these parts of dfpir (the method's vocabulary and its errors).
MODEL_MAY_IMPORT = ("dfpir.model", "dfpir.degradations", "dfpir.errors")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The dfpir modules that ``path`` imports anywhere (functions included, ``TYPE_CHECKING`` left out).

    ``from .pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of ``pkg``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = module_name(path)
    base_parts = here.split(".") if is_package(path) else here.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if under_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dfpir"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base_parts[: len(base_parts) - node.level + 1]
                target = ".".join(anchor + (node.module.split(".") if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dfpir":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {m for m in found if m in modules and m != here}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) for name, path in files.items()}


def test_the_model_imports_nothing_from_data_training_inference_or_the_tools():
    graph = import_graph()
    model = sorted(m for m in graph if m == "dfpir.model" or m.startswith("dfpir.model."))
    assert len(model) > 10, "the network's modules live in dfpir/model/"
    bad = [f"{m} imports {t}" for m in model for t in sorted(graph[m])
           if not any(t == allowed or t.startswith(allowed + ".") for allowed in MODEL_MAY_IMPORT)]
    assert not bad, "\n".join(bad)


def test_the_degradation_registry_and_the_error_and_file_helpers_import_no_model():
    graph = import_graph()
    base = [m for m in graph if m.startswith("dfpir.degradations") or m in ("dfpir.errors", "dfpir.files", "dfpir.progress")]
    bad = [f"{m} imports {t}" for m in base for t in graph[m]
           if not (t.startswith("dfpir.degradations") or t in ("dfpir.errors", "dfpir.files"))]
    assert not bad, "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_of_the_package_takes_part_in_an_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("source, expected", [
    ("from . import fused\n", {"dfpir.model.fused"}),
    ("from ..errors import UserError\n", {"dfpir.errors"}),
    ("def f():\n    from ..data import x\n", {"dfpir.data"}),
    ("import typing\nif typing.TYPE_CHECKING:\n    from ..train import loop\n", set()),
])
def test_imports_are_read_inside_functions_and_resolved_relative_to_the_module(tmp_path, source, expected, monkeypatch):
    fake = PACKAGE / "model" / "dgpb.py"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    modules = {"dfpir.model.fused", "dfpir.errors", "dfpir.data", "dfpir.train", "dfpir.train.loop", "dfpir.model.dgpb"}
    assert imports_of(fake, modules) == expected


#: The layers of docs/contributing.md, lowest first; a module may import its own layer and those below.
LAYERS = [
    ("base", ("dfpir.degradations", "dfpir.errors", "dfpir.files", "dfpir.progress")),
    ("model", ("dfpir.model",)),
    ("model I/O", ("dfpir.checkpoint", "dfpir.official", "dfpir.clip")),
    ("inference", ("dfpir.inference", "dfpir.images", "dfpir.metrics")),
]


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return len(LAYERS)  # the tools: data, train, analysis, bench, study, app, the commands, the public API


def test_no_module_imports_from_a_layer_above_its_own():
    graph = import_graph()
    bad = [f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})" for m in sorted(graph) for t in sorted(graph[m])
           if layer_of(t) > layer_of(m)]
    assert not bad, "\n".join(bad)
