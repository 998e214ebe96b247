"""The version matrix (matrix.toml): named cells of pinned stacks, the single source for tox and CI."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .errors import HarnessError
from .paths import MATRIX_FILE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROLES = ("canary", "control")
PINNED = ("unsloth", "unsloth_zoo", "transformers", "peft", "bitsandbytes", "trl", "torch")
REQUIRED = ("unsloth", "unsloth_zoo", "transformers")
CELL_KEYS = set(PINNED) | {"role", "failures", "note", "extra", "gpu"}
DEFAULT_KEYS = {"torch", "bitsandbytes", "runtime"}
GPU_KEYS = {"torch", "packages"}
# PyPI distribution names of the pinned keys.
DIST_NAMES = {"unsloth_zoo": "unsloth-zoo"}


@dataclass(frozen=True)
class GpuNeeds:
    """What the cell's releases need on a GPU runner, from their own metadata (checked by
    `qvl-harness matrix --check`): a torch specifier and pinned packages such as xformers."""

    torch: SpecifierSet
    packages: tuple[str, ...] = ()

    def admits(self, torch_version: str) -> bool:
        return self.torch.contains(Version(torch_version).base_version, prereleases=True)

    def describe(self) -> str:
        return " ".join([f"torch{self.torch}", *self.packages])


@dataclass(frozen=True)
class Cell:
    name: str
    pins: dict[str, str]
    role: str = ""  # "canary" (the newest that installs), "control" (a pinned stack outside every known failure), or ""
    runtime: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    note: str = ""
    gpu: GpuNeeds = GpuNeeds(SpecifierSet())

    @property
    def tox_env(self) -> str:
        return f"cell-{self.name}"

    def code_under_test(self) -> list[str]:
        """Requirements for unsloth and unsloth-zoo, to install with --no-deps."""
        return [f"{DIST_NAMES.get(k, k)}=={self.pins[k]}" for k in ("unsloth", "unsloth_zoo")]

    def companions(self, torch: str | None = None) -> list[str]:
        """Requirements resolved normally: the pinned companions, torch and the runtime deps.

        ``torch`` replaces the cell's torch pin with a specifier ("" leaves torch out).
        """
        reqs = [f"{DIST_NAMES.get(k, k)}=={self.pins[k]}" for k in PINNED
                if k not in ("unsloth", "unsloth_zoo", "torch") and k in self.pins]
        torch_req = f"torch=={self.pins['torch']}" if torch is None else f"torch{torch}" if torch else None
        return reqs + ([torch_req] if torch_req else []) + list(self.runtime)

    @property
    def stack(self) -> dict[str, str]:
        """Distribution name -> pinned version."""
        return {DIST_NAMES.get(k, k): v for k, v in self.pins.items()}

    def failure_states(self, registry: dict) -> dict[str, str]:
        """Per listed known failure, what this stack shows of it, from the registry: "reproduces" (the
        symptom), "cause only" (the cause without the conditions for the symptom), "fixed" (past the
        range), "before" (older than the range), "unaffected" (in range, but its requirements unmet)."""
        return {fid: failure_state(registry[fid], self.stack) for fid in self.failures}

    def gpu_requirements(self) -> list[str]:
        """The companions on a GPU runner: torch as the releases need it (a runner torch that fits
        is kept), plus what the releases need there beside it (xformers)."""
        return self.companions(torch=str(self.gpu.torch)) + list(self.gpu.packages)

    def as_json(self) -> dict:
        return {
            "cell": self.name,
            "tox_env": self.tox_env,
            "role": self.role,
            "failures": list(self.failures),
            **{k: v for k, v in self.pins.items()},
            "gpu": self.gpu.describe(),
            "note": self.note,
        }


def failure_state(failure, stack: dict[str, str]) -> str:
    version = Version(stack[failure.package])
    if failure.affects(str(version)):
        if failure.unmet("cause", stack):
            return "unaffected"
        return "cause only" if failure.unmet("symptom", stack) else "reproduces"
    if failure.first_fixed and version >= Version(failure.first_fixed):
        return "fixed"
    return "before"


@dataclass(frozen=True)
class Matrix:
    path: Path
    cells: dict[str, Cell] = field(default_factory=dict)

    def cell(self, name: str) -> Cell:
        try:
            return self.cells[name]
        except KeyError:
            raise HarnessError(
                f"unknown matrix cell {name!r} in {self.path.name}; known cells: {', '.join(self.cells)}"
            ) from None

    def select(self, names: list[str] | None) -> list[Cell]:
        return [self.cell(n) for n in names] if names else list(self.cells.values())

    def ci_json(self, names: list[str] | None = None) -> str:
        """A GitHub Actions ``strategy.matrix`` value: ``{"include": [cell, ...]}``."""
        return json.dumps({"include": [c.as_json() for c in self.select(names)]}, indent=2)


def _version(where: str, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise HarnessError(f"{where}: {key} must be a version string like \"2024.11.11\", got {value!r}")
    try:
        Version(value)
    except InvalidVersion:
        raise HarnessError(f"{where}: {key} = {value!r} is not a valid version") from None
    return value


def _string_list(where: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HarnessError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _gpu(where: str, value: object) -> GpuNeeds:
    if not isinstance(value, dict) or set(value) - GPU_KEYS or "torch" not in value:
        raise HarnessError(f"{where}: gpu must be a table like {{ torch = \"==2.5.0\", packages = [\"xformers==0.0.28.post2\"] }}")
    try:
        torch = SpecifierSet(value["torch"])
    except (InvalidSpecifier, TypeError):
        raise HarnessError(f"{where}: gpu.torch {value['torch']!r} is not a version specifier like \"==2.5.0\"") from None
    return GpuNeeds(torch, _string_list(where, "gpu.packages", value.get("packages", [])))


def parse_matrix(text: str, path: Path = MATRIX_FILE) -> Matrix:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path.name}: not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "cells"}
    if unknown:
        raise HarnessError(f"{path.name}: unknown top-level table(s) {sorted(unknown)}; expected [defaults] and [cells.NAME]")
    defaults = data.get("defaults", {})
    if set(defaults) - DEFAULT_KEYS:
        raise HarnessError(f"{path.name}: [defaults] has unknown key(s) {sorted(set(defaults) - DEFAULT_KEYS)}")
    runtime = _string_list(f"{path.name} [defaults]", "runtime", defaults.get("runtime", []))
    raw_cells = data.get("cells")
    if not isinstance(raw_cells, dict) or not raw_cells:
        raise HarnessError(f"{path.name}: no cells; add at least one [cells.NAME] table")
    cells = {}
    for name, raw in raw_cells.items():
        where = f"{path.name} [cells.{name}]"
        if not isinstance(raw, dict):
            raise HarnessError(f"{where}: must be a table")
        extra_keys = set(raw) - CELL_KEYS
        if extra_keys:
            raise HarnessError(f"{where}: unknown key(s) {sorted(extra_keys)}; allowed: {sorted(CELL_KEYS)}")
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise HarnessError(f"{where}: missing required pin(s) {missing}")
        role = raw.get("role", "")
        if role and role not in ROLES:
            raise HarnessError(f"{where}: role must be one of {list(ROLES)} (or left out), got {role!r}")
        pins = {}
        for key in PINNED:
            value = raw.get(key, defaults.get(key) if key in ("torch", "bitsandbytes") else None)
            if value is not None:
                pins[key] = _version(where, key, value)
        failures = _string_list(where, "failures", raw.get("failures", []))
        cells[name] = Cell(
            name=name,
            role=role,
            pins=pins,
            runtime=runtime + _string_list(where, "extra", raw.get("extra", [])),
            failures=failures,
            note=str(raw.get("note", "")),
            gpu=_gpu(where, raw["gpu"]) if "gpu" in raw else GpuNeeds(SpecifierSet()),
        )
    return Matrix(path=path, cells=cells)


def check_against_registry(matrix: Matrix, registry: dict) -> Matrix:
    """Every listed failure exists, and a control cell lies outside every range it lists."""
    for cell in matrix.cells.values():
        where = f"{matrix.path.name} [cells.{cell.name}]"
        unknown = [f for f in cell.failures if f not in registry]
        if unknown:
            raise HarnessError(f"{where}: failures: unknown id(s) {unknown}; known: {', '.join(registry)}")
        if cell.role == "control":
            inside = {f: s for f, s in cell.failure_states(registry).items() if s in ("reproduces", "cause only")}
            if inside:
                fid = next(iter(inside))
                raise HarnessError(f"{where}: role control, but {registry[fid].package} {cell.stack[registry[fid].package]} "
                                   f"is inside {fid}'s range {registry[fid].affected} ({inside[fid]})")
    return matrix


def load_matrix(path: Path | None = None) -> Matrix:
    from .known import load_registry

    path = Path(path or os.environ.get("QVL_MATRIX") or MATRIX_FILE)
    try:
        text = path.read_text()
    except OSError as exc:
        raise HarnessError(f"cannot read matrix file {path}: {exc.strerror}") from None
    return check_against_registry(parse_matrix(text, path), load_registry())
