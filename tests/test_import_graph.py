"""The import graph: one-way layers, no cycles among the agent's modules, one freshness judge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "desktop_app", "hmm_core")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every project module `path` imports, at any depth of the file (also inside functions)."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = (package or module_name(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    known = {module_name(p) for p in files}
    graph = {module_name(p): imported_modules(p, known) for p in files}
    for module, targets in graph.items():  # a package's __init__ is not a dependency edge
        targets.discard(module)
        targets.difference_update(t for t in list(targets) if module.startswith(t + "."))
    return graph


def cycles(graph: dict[str, set[str]], scope: str) -> list[list[str]]:
    """Strongly connected groups of more than one module under `scope` (Tarjan)."""
    nodes = [n for n in graph if n == scope or n.startswith(scope + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in nodes:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


GRAPH = import_graph()


@pytest.mark.parametrize("scope", ["agent", "desktop_app", "hmm_core"])
def test_no_module_imports_its_way_back_to_itself(scope: str) -> None:
    assert cycles(GRAPH, scope) == []


def test_layers_import_one_way() -> None:
    for module, targets in GRAPH.items():
        layer = module.split(".")[0]
        below = {"desktop_app": PACKAGES, "agent": ("agent", "hmm_core"), "hmm_core": ("hmm_core",)}
        assert {t.split(".")[0] for t in targets} <= set(below[layer]), module


def test_storage_and_staleness_do_not_import_each_other() -> None:
    ledger = {m for m in GRAPH if m.startswith("agent.ledger")}
    assert not any(t == "agent.staleness" for m in ledger for t in GRAPH[m])


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"x.a": {"x.b"}, "x.b": {"x.c"}, "x.c": {"x.a"}, "x.d": {"x.a"}}
    assert cycles(graph, "x") == [["x.a", "x.b", "x.c"]]


def test_only_the_staleness_module_builds_a_verdict() -> None:
    """Every view gets fresh/stale from agent.staleness: no other module constructs one."""
    judges = set()
    for path in [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name | ast.Attribute)
                and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
                in ("Finding", "Staleness", "StaleReason")
            ):
                judges.add(module_name(path))
    assert judges == {"agent.staleness"}
