"""`qvl-harness matrix --check`: every cell resolves and names real releases, without installing anything.

Per cell: the releases under test exist on the index; the companions resolve for this machine (the
cpu envs) and for the GPU runner's Python and platform with the torch the cell declares for GPUs
(the gpu env); and that GPU declaration agrees with the unsloth release's own metadata (one of its
``cuXXXonlytorchYYY`` extras). A failure is one line naming the cell and the conflict.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from harness.core.errors import HarnessError
from harness.env import resolve
from harness.env.matrix import Cell
from harness.releases import code as release_code


@dataclass(frozen=True)
class Verdict:
    cell: str
    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.cell:14} {self.check:22} {'ok' if self.ok else 'FAILED'}  {self.detail}"


def _attempt(cell: Cell, check: str, run) -> Verdict:
    try:
        return Verdict(cell.name, check, True, run())
    except HarnessError as exc:
        return Verdict(cell.name, check, False, str(exc))


def releases_exist(cell: Cell, index: dict) -> str:
    """The releases are on the index; a commit was found in its clone when the matrix loaded."""
    if cell.releases():
        resolve.compile_pins(cell.releases(), python=resolve.this_python(), platform=resolve.RUNNER_PLATFORM,
                             no_deps=True, **index)
    commits = [f"{name} @ {s.commit.short} ({s.version}) of {s.location}" for name, s in cell.sources.items()]
    return " ".join(cell.releases() + commits)


def resolves(requirements: list[str], python: str, platform: str, index: dict) -> str:
    pins = resolve.compile_pins(requirements, python=python, platform=platform, **index)
    return f"{len(pins)} packages, torch {pins.get('torch', '?')}"


def gpu_needs_match_release(cell: Cell, index: dict) -> str:
    """The cell's gpu declaration is one the unsloth release ships an extra for (for a commit: the release
    its __version__ names)."""
    version = cell.sources["unsloth"].version if "unsloth" in cell.sources else cell.pins["unsloth"]
    release_code.fetch([f"unsloth=={version}"], quiet=True, **index)
    code = release_code.from_wheel("unsloth", version)
    base = next((r.specifier for r in release_code.requires(code) if r.name == "torch" and not r.marker), None)
    extras = [e for e in release_code.gpu_extras(code) if cell.gpu.admits(e.torch)]
    wanted = {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in cell.gpu.packages}
    fitting = [e for e in extras if all(canonicalize_name(n) not in wanted or wanted[canonicalize_name(n)] == v
                                        for n, v in e.pins.items())]
    if not fitting:
        newest = release_code.gpu_extras(code)[-1] if release_code.gpu_extras(code) else None
        hint = f"; its newest is {newest.name}: torch {newest.torch} {newest.pins}" if newest else ""
        raise HarnessError(f"gpu = {cell.gpu.describe()} matches none of unsloth {code.version}'s GPU extras{hint}")
    if base is not None and not any(base.contains(e.torch) for e in fitting):
        raise HarnessError(f"gpu torch{cell.gpu.torch} is outside unsloth {code.version}'s torch{base}")
    return f"{fitting[-1].name} (torch {fitting[-1].torch})"


def check(cells: list[Cell], *, runner_python: str = resolve.RUNNER_PYTHON, runner_platform: str = resolve.RUNNER_PLATFORM,
          find_links: tuple[str, ...] = (), no_index: bool = False) -> list[Verdict]:
    """Every check of every cell (in parallel); ``find_links``/``no_index`` choose the package index."""
    index = {"find_links": tuple(find_links), "no_index": no_index}
    jobs = []
    for cell in cells:
        jobs += [
            (cell, "releases exist", lambda c=cell: releases_exist(c, index)),
            (cell, f"cpu (py{resolve.this_python()})",
             lambda c=cell: resolves(c.companions(), resolve.this_python(), resolve.RUNNER_PLATFORM, index)),
            (cell, f"gpu (py{runner_python})",
             lambda c=cell: resolves(c.gpu_requirements(), runner_python, runner_platform, index)),
            (cell, "gpu needs vs release", lambda c=cell: gpu_needs_match_release(c, index)),
        ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda job: _attempt(*job), jobs))
