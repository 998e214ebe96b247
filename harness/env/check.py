"""`qvl-harness matrix --check`: every cell resolves and names real releases, without installing anything.

Per cell: the releases under test exist on the index; the companions resolve for this machine (the
cpu envs) and for the GPU runner's Python and platform with the torch the cell declares for GPUs
(the gpu env); and that GPU declaration agrees with the unsloth release's own metadata (one of its
``cuXXXonlytorchYYY`` extras); and what the cell installs meets the base Requires-Dist of its unsloth and
unsloth-zoo (both are installed with --no-deps, so nothing else checks it), unless the cell declares an
override with its reason. A failure is one line naming the cell and the conflict.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.core import packages
from harness.core.errors import HarnessError
from harness.env import pypi, resolve
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
        resolve.compile_pins(
            cell.releases(), python=resolve.this_python(), platform=resolve.RUNNER_PLATFORM, no_deps=True, **index
        )
    commits = [f"{name} @ {s.commit.short} ({s.version}) of {s.location}" for name, s in cell.sources.items()]
    return " ".join(cell.releases() + commits)


class Resolutions:
    """Each set of requirements resolved once for a Python and platform, however many checks ask for it
    (the checks run in parallel: the first asks uv, the others wait for its answer)."""

    def __init__(self, index: dict):
        self.index, self._lock, self._answers = index, threading.Lock(), {}

    def pins(self, requirements: list[str], python: str, platform: str) -> dict[str, str]:
        key = (tuple(requirements), python, platform)
        with self._lock:
            answer, mine = self._answers.get(key), key not in self._answers
            if mine:
                answer = self._answers[key] = Future()
        if mine:
            try:
                answer.set_result(resolve.compile_pins(requirements, python=python, platform=platform, **self.index))
            except HarnessError as exc:
                answer.set_exception(exc)
        return answer.result()


def resolves(requirements: list[str], python: str, platform: str, resolutions: Resolutions) -> str:
    pins = resolutions.pins(requirements, python, platform)
    return f"{len(pins)} packages, torch {pins.get('torch', '?')}"


def marker_environment(python: str, platform: str) -> dict[str, str]:
    """PEP 508 marker values of the target Python and wheel platform tag; no extra, so only base requirements."""
    system = (
        ("linux", "Linux")
        if "linux" in platform
        else ("darwin", "Darwin")
        if "macosx" in platform
        else ("win32", "Windows")
    )
    machine = next((m for m in ("x86_64", "aarch64", "arm64", "amd64") if m in platform.lower()), "x86_64")
    return {
        **default_environment(),
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": system[0],
        "platform_system": system[1],
        "platform_machine": machine,
        "os_name": "nt" if system[0] == "win32" else "posix",
        "extra": "",
    }


def installs(
    cell: Cell, requirements: list[str], python: str, platform: str, resolutions: Resolutions
) -> dict[str, str]:
    """What the cell installs for that target, by canonical name: the resolution, else (it does not resolve,
    which its own check reports) the exact pins alone; the code under test as the cell pins it."""
    try:
        found = resolutions.pins(requirements, python, platform)
    except HarnessError:
        exact = [Requirement(r) for r in requirements]
        found = {
            canonicalize_name(r.name): next(iter(r.specifier)).version
            for r in exact
            if len(r.specifier) == 1 and next(iter(r.specifier)).operator == "=="
        }
    return {**found, **{canonicalize_name(p): cell.pins[packages.matrix_key(p)] for p in packages.CODE_UNDER_TEST}}


def meets_release_requirements(
    cell: Cell, targets: dict[str, tuple[list[str], str, str]], resolutions: Resolutions, index: dict
) -> str:
    """Every base requirement of the cell's unsloth and unsloth-zoo (for a commit: the release its __version__
    names) that a target installs is met, or overridden in the cell with its reason. A requirement of a package
    the cell leaves out there (xformers and triton on CPU) is not compared."""
    versions = {
        p: cell.sources[p].version if p in cell.sources else cell.pins[packages.matrix_key(p)]
        for p in packages.CODE_UNDER_TEST
    }
    release_code.fetch(
        [f"{p}=={v}" for p, v in versions.items()], quiet=True, published=pypi.published_digests, **index
    )
    outside, left_out, met = {}, {}, set()  # outside: (name, installed, asked) -> ({releases asking}, {targets})
    for target, (requirements, python, platform) in targets.items():
        installed = installs(cell, requirements, python, platform, resolutions)
        environment = marker_environment(python, platform)
        for owner, version in versions.items():
            for req in release_code.requires(release_code.from_wheel(owner, version)):
                if req.marker is not None and not req.marker.evaluate(environment):
                    continue
                name, asked = canonicalize_name(req.name), f"{req.name}{req.specifier}"
                have = installed.get(name)
                if have is None:
                    left_out.setdefault(name, {})[target] = None
                elif req.specifier.contains(have, prereleases=True):
                    met.add((owner, asked))
                else:
                    asking, where = outside.setdefault((name, have, asked), ({}, {}))
                    asking[f"{owner} {version}"], where[target] = None, None
    lines = {
        key: f"{key[0]} {key[1]} ({', '.join(where)}) is outside {key[2]}, asked by {' and '.join(asking)}"
        for key, (asking, where) in outside.items()
    }
    conflicts = [line for (name, *_), line in lines.items() if name not in cell.overrides]
    if conflicts:
        raise HarnessError(
            "; ".join(conflicts) + ' (on purpose? say why in the cell\'s overrides = { PACKAGE = "..." })'
        )
    unused = sorted(set(cell.overrides) - {name for name, *_ in outside})
    if unused:
        raise HarnessError(
            f"overrides {', '.join(unused)}: what the cell installs meets every requirement of its "
            "releases; drop the override"
        )
    said = [f"{len(met)} requirements met"]
    said += [f"override: {line}: {cell.overrides[key[0]]}" for key, line in lines.items()]
    absent = ", ".join(f"{name} ({', '.join(where)})" for name, where in sorted(left_out.items()))
    return "; ".join(said + ([f"not installed: {absent}"] if absent else []))


def gpu_needs_match_release(cell: Cell, index: dict) -> str:
    """The cell's gpu declaration is one the unsloth release ships an extra for (for a commit: the release
    its __version__ names)."""
    version = cell.sources["unsloth"].version if "unsloth" in cell.sources else cell.pins["unsloth"]
    release_code.fetch([f"unsloth=={version}"], quiet=True, published=pypi.published_digests, **index)
    code = release_code.from_wheel("unsloth", version)
    base = next((r.specifier for r in release_code.requires(code) if r.name == "torch" and not r.marker), None)
    extras = [e for e in release_code.gpu_extras(code) if cell.gpu.admits(e.torch)]
    wanted = {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in cell.gpu.packages}
    fitting = [
        e
        for e in extras
        if all(canonicalize_name(n) not in wanted or wanted[canonicalize_name(n)] == v for n, v in e.pins.items())
    ]
    if not fitting:
        newest = release_code.gpu_extras(code)[-1] if release_code.gpu_extras(code) else None
        hint = f"; its newest is {newest.name}: torch {newest.torch} {newest.pins}" if newest else ""
        raise HarnessError(f"gpu = {cell.gpu.describe()} matches none of unsloth {code.version}'s GPU extras{hint}")
    if base is not None and not any(base.contains(e.torch) for e in fitting):
        raise HarnessError(f"gpu torch{cell.gpu.torch} is outside unsloth {code.version}'s torch{base}")
    return f"{fitting[-1].name} (torch {fitting[-1].torch})"


def check(
    cells: list[Cell],
    *,
    runner_python: str = resolve.RUNNER_PYTHON,
    runner_platform: str = resolve.RUNNER_PLATFORM,
    find_links: tuple[str, ...] = (),
    no_index: bool = False,
) -> list[Verdict]:
    """Every check of every cell (in parallel); ``find_links``/``no_index`` choose the package index."""
    index = {"find_links": tuple(find_links), "no_index": no_index}
    resolutions = Resolutions(index)
    jobs = []
    for cell in cells:
        targets = {
            "cpu": (cell.companions(), resolve.this_python(), resolve.RUNNER_PLATFORM),
            "gpu": (cell.gpu_requirements(), runner_python, runner_platform),
        }
        jobs += [
            (cell, "releases exist", lambda c=cell: releases_exist(c, index)),
            (cell, f"cpu (py{resolve.this_python()})", lambda t=targets["cpu"]: resolves(*t, resolutions)),
            (cell, f"gpu (py{runner_python})", lambda t=targets["gpu"]: resolves(*t, resolutions)),
            (cell, "gpu needs vs release", lambda c=cell: gpu_needs_match_release(c, index)),
            (
                cell,
                "release requirements",
                lambda c=cell, t=targets: meets_release_requirements(c, t, resolutions, index),
            ),
        ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda job: _attempt(*job), jobs))
