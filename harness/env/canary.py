"""The canary that follows upstream: the newest unsloth, unsloth-zoo, transformers, peft, bitsandbytes and
trl that install together with the canary cell's torch, found by uv's resolver (nothing installed).

The nightly resolves it, writes the pins into the canary cell (``--write``; the new releases' wheel
digests go into the lock beside the matrix) and runs it; the control cell keeps its pins, so "canary
red, control green" says an upstream release broke something.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.core import atomic, packages
from harness.core.errors import HarnessError
from harness.env import pypi, resolve
from harness.env.matrix import Cell, Matrix, parse_matrix
from harness.releases import code as release_code
from harness.releases import lock

UPSTREAM = ("unsloth", "unsloth-zoo", "transformers", "peft", "bitsandbytes", "trl")


@dataclass(frozen=True)
class Resolved:
    cell: Cell
    pins: dict[str, str]  # distribution name -> the newest version that installs with the rest

    def changes(self) -> list[tuple[str, str | None, str]]:
        """(package, recorded, resolved) for every pin that moved."""
        recorded = self.cell.stack
        return [
            (name, recorded.get(name), version) for name, version in self.pins.items() if recorded.get(name) != version
        ]


def canary_cell(matrix: Matrix) -> Cell:
    found = [cell for cell in matrix.cells.values() if cell.role == "canary"]
    if len(found) != 1:
        raise HarnessError(f'{matrix.path.name}: expected one cell with role = "canary", found {len(found)}')
    return found[0]


def resolve_canary(
    matrix: Matrix,
    *,
    python: str | None = None,
    platform: str = "linux",
    find_links: tuple[str, ...] = (),
    no_index: bool = False,
) -> Resolved:
    """The newest upstream stack that installs with the canary's torch and runtime on ``python``/``platform``."""
    cell = canary_cell(matrix)
    requirements = [*UPSTREAM, f"torch=={cell.pins['torch']}", *cell.runtime]
    try:
        found = resolve.compile_pins(
            requirements,
            python=python or resolve.this_python(),
            platform=platform,
            find_links=find_links,
            no_index=no_index,
        )
    except resolve.ResolutionError as exc:
        raise HarnessError(f"the upstream stack does not resolve with torch=={cell.pins['torch']}: {exc}") from None
    return Resolved(cell, {name: found[resolve.canonical(name)] for name in UPSTREAM})


def write(matrix: Matrix, resolved: Resolved, *, find_links: tuple[str, ...] = (), no_index: bool = False) -> Path:
    """Set the canary cell's pins that moved to ``resolved`` (comments, the other pins and cells stay), once
    the release wheels it moves to are fetched, checked against PyPI and written into the lock beside the matrix."""
    moved = [
        f"{name}=={version}" for name, _recorded, version in resolved.changes() if name in packages.CODE_UNDER_TEST
    ]
    if moved:
        release_code.fetch(
            moved,
            published=pypi.published_digests,
            find_links=list(find_links),
            no_index=no_index,
            update_lock=matrix.path.parent / lock.LOCK_NAME,
            quiet=True,
        )
    text = matrix.path.read_text()
    header = re.search(rf"^\[cells\.{re.escape(resolved.cell.name)}\]\s*$", text, re.M)
    end = re.search(r"^\[", text[header.end() :], re.M)
    stop = header.end() + end.start() if end else len(text)
    block = text[header.end() : stop]
    for name, _recorded, version in resolved.changes():
        key = packages.matrix_key(name)
        line = f'{key} = "{version}"'
        block, count = re.subn(rf'^{key} = "[^"]*"', line, block, count=1, flags=re.M)
        if not count:  # a pin the cell took from [defaults]: it gets its own line, after the cell's pins
            keys = "|".join(packages.matrix_key(upstream) for upstream in UPSTREAM)
            pins = list(re.finditer(rf'^(?:{keys}) = "[^"]*".*$', block, re.M))
            at = pins[-1].end() if pins else 0
            block = f"{block[:at]}\n{line}{block[at:]}"
    updated = text[: header.end()] + block + text[stop:]
    parse_matrix(updated, matrix.path)  # never write a matrix that does not load
    atomic.write_text(matrix.path, updated)
    return matrix.path
