"""Imports point down: the module import graph of kerasdl has no cycles (DESIGN.md, "No circles").

The graph is read from the source with ``ast`` (nothing is imported): an edge ``a -> b`` for every
module-level ``import`` / ``from ... import`` in ``a`` of a kerasdl module ``b`` (a name imported
from a package is an edge to the submodule when one has that name). Importing ``a.b.c`` runs the
packages ``a`` and ``a.b`` first, so such an import is also an edge to every package on the way,
except the importer's own ancestors (a package's ``__init__`` importing its children is the usual
layout, not a circle). Imports inside functions (deliberately lazy) and under
``if TYPE_CHECKING:`` are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kerasdl"

# Cycles in modules this change does not own, listed so that the test fails when one is fixed
# (then delete it here) or a new one appears.
KNOWN_CYCLES: list[list[str]] = []


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``{"kerasdl.models.resnet": path, "kerasdl.models": .../__init__.py, ...}``."""
    root = package.parent
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, lazy: bool = False):
    """Import statements executed when the module is imported (not in functions or classes);
    with ``lazy``, also those inside functions and classes."""
    if lazy:
        yield from (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
        return
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                todo.extend(node.body)
            todo.extend(node.orelse)
        elif isinstance(node, ast.Try):
            todo.extend([*node.body, *node.orelse, *node.finalbody])
            for handler in node.handlers:
                todo.extend(handler.body)
        elif isinstance(node, ast.With):
            todo.extend(node.body)


def import_graph(package: Path = PACKAGE, lazy: bool = False) -> dict[str, set[str]]:
    """``{module: {kerasdl modules it imports at module level}}`` (``lazy``: anywhere)."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        targets: set[str] = set()
        for node in _imports(tree, lazy):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if is_package:
            ancestors.add(name)
        edges = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix not in ancestors and prefix != name:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def test_graph_sees_module_level_imports_only() -> None:
    graph = import_graph()
    assert "kerasdl.models.base" in graph["kerasdl.models.resnet"]
    assert "kerasdl.registry" in graph["kerasdl.models.resnet"]
    # the registry loads the model families lazily, inside a function
    assert not any(m.startswith("kerasdl.models") for m in graph["kerasdl.registry"])


def test_find_cycles_reports_a_circle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", ["kerasdl.models", "kerasdl.bench", "kerasdl.layers"])
def test_no_cycles_in_the_zoo_and_the_bench(package: str) -> None:
    cycles = [c for c in find_cycles(import_graph()) if any(m.startswith(package) for m in c)]
    assert cycles == []


def test_bench_modules_do_not_call_each_other_in_a_circle() -> None:
    """Not even through imports inside functions: a case runner never calls back its dispatcher."""
    graph = import_graph(lazy=True)
    bench = {m: {e for e in graph[m] if e.startswith("kerasdl.bench")} for m in graph}
    bench = {m: e for m, e in bench.items() if m.startswith("kerasdl.bench")}
    assert find_cycles(bench) == []


def test_models_do_not_import_nas() -> None:
    graph = import_graph()
    for name, edges in graph.items():
        if name.startswith("kerasdl.models"):
            assert not [e for e in edges if e.startswith("kerasdl.nas")], name


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    if cycles and cycles == KNOWN_CYCLES:
        pytest.xfail(f"import cycles in modules owned elsewhere: {cycles}")
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
