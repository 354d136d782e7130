"""The package's layering (docs/hacking.md): imports point one way.

Read from the source, not by importing it: every ``import`` a module runs (at its top or
inside a function) is an edge; imports under ``if TYPE_CHECKING:`` are for annotations only
and are not.  No module may import one that imports it back, directly or through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import imageintrospect

SRC = Path(imageintrospect.__file__).parent
PACKAGE = "imageintrospect"


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(SRC).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imported(node: ast.ImportFrom, name: str, is_package: bool, known: set[str]) -> set[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    # ``from pkg import mod`` imports the module; ``from pkg import name`` the package.
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}


def _runtime_imports(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    edges: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for other in node.orelse:
                edges |= _runtime_imports(other, name, is_package, known)
            continue
        if isinstance(node, ast.ImportFrom):
            edges |= _imported(node, name, is_package, known)
        elif isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names}
        edges |= _runtime_imports(node, name, is_package, known)
    return edges


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, (path, is_package) in modules.items():
        edges = _runtime_imports(ast.parse(path.read_text()), name, is_package, known)
        graph[name] = {edge for edge in edges if edge in known and edge != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the path that closes it."""
    found: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append([*path[path.index(node) :], node])
            return
        if node in done:
            return
        for edge in sorted(graph[node]):
            visit(edge, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    assert "imageintrospect.detect" in graph["imageintrospect.core"]
    assert "imageintrospect.formats.vmdk.layout" in graph["imageintrospect.formats.vmdk.probe"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(import_graph()) == []
