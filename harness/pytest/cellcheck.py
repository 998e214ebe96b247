"""Checked before collection: a run of the harness has a stack to test, and it is the stack of the cell
it names, so a typo or another env's QVL_CELL cannot give a green run recorded under a cell's name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.core import cellenv, packages
from harness.core.errors import HarnessError
from harness.env import stack
from harness.env.matrix import Cell, load_matrix

OUTSIDE_MATRIX = "none"  # --cell none: a stack outside the matrix (bisect probes, triage re-runs)


def require_stack() -> None:
    absent = cellenv.missing()
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        raise pytest.UsageError(
            f"qvl-harness: this run needs a matrix cell's stack ({', '.join(absent)} {verb} not installed here): "
            "tox -e cell-canary (or tox exec -e cell-NAME -- pytest ...)"
        )


def check_cell(name: str | None, named_by: str, gpu_run: bool) -> None:
    """``named_by``: where the name came from (``--cell`` or ``QVL_CELL``), for the line that refuses it."""
    if name is None or name == OUTSIDE_MATRIX:
        return
    try:
        matrix = load_matrix()
    except HarnessError as exc:
        raise pytest.UsageError(f"qvl-harness: {exc}") from None
    cell = matrix.cells.get(name)
    if cell is None:
        raise pytest.UsageError(
            f"qvl-harness: {named_by} {name!r} is not a cell of {matrix.path.name}; known cells: "
            f"{', '.join(matrix.cells)} (or --cell {OUTSIDE_MATRIX} for a stack outside the matrix)"
        )
    differ = [
        f"{package} {pinned} (installed: {installed})" for package, pinned, installed in mismatches(cell, gpu_run)
    ]
    if differ:
        env = f"QVL_CELL={name} tox -e gpu" if gpu_run else f"tox -e {cell.tox_env}"
        raise pytest.UsageError(
            f"qvl-harness: this environment does not have cell {name}'s stack: {'; '.join(differ)}; "
            f"run the cell in its own env ({env}) or say --cell {OUTSIDE_MATRIX}"
        )


def mismatches(cell: Cell, gpu_run: bool) -> Iterator[tuple[str, str, str]]:
    """(package, what the cell pins, installed version) for each installed package the cell pins otherwise.

    A pinned package that is not installed is not compared: the tests that need it skip, saying so. On a
    GPU runner torch is the runner's: it is held to the cell's gpu range only.
    """
    for package, pinned in cell.stack.items():
        installed = stack.dist_version(package)
        if installed is None:
            continue
        if package == "torch" and gpu_run:
            if not cell.gpu.admits(installed):
                yield package, f"{cell.gpu.torch} on a GPU runner", installed
        elif not same_version(package, pinned, installed):
            yield package, pinned, installed


def same_version(package: str, pinned: str, installed: str) -> bool:
    try:
        if package in packages.CODE_UNDER_TEST:
            # exact: a commit shows as VERSION+gSHORT, which is not the release VERSION (nor another commit)
            return Version(installed) == Version(pinned)
        return SpecifierSet(f"=={pinned}").contains(installed, prereleases=True)  # a build label (+cpu) is the same
    except InvalidVersion:
        return installed == pinned
