"""The folders of harness/ are its layers: a module imports only from its own layer or the layers below,
and no two modules import each other, directly or around a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.core.paths import REPO_ROOT

# bottom first: what everything may use, ..., the command line on top
LAYERS = [
    "core",
    "releases",
    "env",
    "data",
    "lab",
    "families",
    "failures",
    "bisection",
    "pytest",
    "nightly",
    "report",
    "cli",
]
PACKAGE = REPO_ROOT / "harness"


def modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }


def imports(path: Path, known: set[str]) -> set[str]:
    """The harness modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("harness.") and name.count(".") >= 1:
                found.add(name)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        raise AssertionError(f"{module} is in no layer folder: put it under one of {LAYERS}")
    return LAYERS.index(parts[1])


GRAPH = {m: imports(p, set(modules())) - {m} for m, p in modules().items() if m != "harness"}


def test_every_module_sits_in_a_layer_folder():
    for module in GRAPH:
        layer(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    upward = sorted(d for d in GRAPH[module] if d != "harness" and layer(d) > layer(module))
    assert not upward, f"{module} (layer {LAYERS[layer(module)]}) imports from above: {upward}"


def test_no_import_cycles():
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for dep in sorted(GRAPH.get(module, ())):
            if dep.removesuffix(".__init__") not in GRAPH:
                continue
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
