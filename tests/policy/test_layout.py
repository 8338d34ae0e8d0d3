"""The policy package's module graph: no import cycles, and explanations depend on the
evaluator, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gateway" / "policy"


def _imports(path: Path) -> set[str]:
    """The `gateway.policy` modules a module imports at run time (TYPE_CHECKING aside)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.module.startswith("gateway.policy."):
                    found.add(child.module.split(".")[2])
            elif isinstance(child, ast.Import):
                found.update(
                    a.name.split(".")[2]
                    for a in child.names
                    if a.name.startswith("gateway.policy.")
                )
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_policy_modules_import_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [module, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                walk(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])


def test_explain_depends_on_evaluate_and_not_the_reverse() -> None:
    graph = _graph()
    assert "explain" not in graph["evaluate"]
    assert "policyset" not in graph["evaluate"]
    assert "evaluate" in graph["policyset"] and "explain" in graph["policyset"]
