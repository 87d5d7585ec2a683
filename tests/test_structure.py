"""The shape of the house: layers that import only downward, no import circles (function-level imports
count), small modules. The README's layout section is the map; this test keeps it true."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "perf", "ci")
# Lowest first; a module imports only modules of its own layer or below.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("kernels", frozenset({"kernels"})),
    ("foundation", frozenset({"perf.errors", "perf.metric", "perf.statistic", "perf.paths", "perf.machine",
                              "perf.command", "perf.cli", "perf.pb", "perf.revisions"})),
    ("measurement", frozenset({"perf.timers", "perf.cases", "perf.measure", "perf.callgrind", "perf.zygote",
                               "perf.counting", "perf.processes", "perf.measured", "perf.progress"})),
    ("results and statistics", frozenset({"perf.results", "perf.gate", "perf.drift", "perf.steps", "perf.trend"})),
    ("gate, report, A/B, history, bisection", frozenset({"perf"})),  # the rest of perf
    ("ci", frozenset({"ci"})),
)
MAX_LINES = 600
PLUGIN_MAX_LINES = 200


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name.startswith("test_"):
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def layer(name: str) -> int:
    """The layer of a module: the most specific entry of LAYERS that names it or its package."""
    best, depth = None, -1
    for i, (_, names) in enumerate(LAYERS):
        for entry in names:
            if (name == entry or name.startswith(entry + ".")) and entry.count(".") > depth:
                best, depth = i, entry.count(".")
    assert best is not None, f"{name} is in no layer of tests/test_structure.py"
    return best


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of this project ``name`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names]  # a module, or a name of the module ``base``
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_a_module_imports_only_its_own_layer_or_below(name):
    upward = sorted(t for t in GRAPH[name] if layer(t) > layer(name))
    assert not upward, f"{name} ({LAYERS[layer(name)][0]}) imports from a higher layer: {upward}"


def test_there_is_no_import_circle():
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                raise AssertionError(f"import circle: {' -> '.join(circle)}")
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_product_module_is_over_600_lines_and_the_plugin_is_hooks_only(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    limit = PLUGIN_MAX_LINES if name == "perf.plugin" else MAX_LINES
    assert lines <= limit, f"{name}: {lines} lines (at most {limit})"
