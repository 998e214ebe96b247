"""The version matrix (matrix.toml): named cells of pinned stacks, the single source for tox and CI."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from harness.core import packages, schema
from harness.core.errors import HarnessError
from harness.core.paths import MATRIX_FILE
from harness.releases.git import Commit, Repo

ROLES = ("canary", "control")
PINNED = ("unsloth", "unsloth_zoo", "transformers", "peft", "bitsandbytes", "trl", "torch")
REQUIRED = ("unsloth", "unsloth_zoo", "transformers")
CELL_KEYS = set(PINNED) | {"role", "failures", "note", "extra", "gpu", "overrides"}
DEFAULT_KEYS = {"torch", "bitsandbytes", "runtime"}
GPU_KEYS = {"torch", "packages"}


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
class GitSource:
    """unsloth or unsloth-zoo pinned to a commit: ``{ git = "CLONE, BUNDLE or URL", rev = "SHA, TAG or BRANCH" }``."""

    location: str
    repo: Repo
    commit: Commit
    version: str  # the __version__ the commit sets

    @property
    def pin(self) -> str:
        """The stack's version of it: the version it sets, with the commit as a PEP 440 local label."""
        return f"{self.version}+g{self.commit.short}"


@dataclass(frozen=True)
class Cell:
    name: str
    pins: dict[str, str]
    role: str = ""  # "canary" (the newest that installs), "control" (a pinned stack outside every known failure), or ""
    runtime: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    note: str = ""
    gpu: GpuNeeds = GpuNeeds(SpecifierSet())
    sources: dict[str, GitSource] = field(default_factory=dict)  # distribution name -> its commit
    # package -> why the cell installs a version its unsloth or unsloth-zoo's Requires-Dist excludes
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def tox_env(self) -> str:
        return f"cell-{self.name}"

    def code_under_test(self) -> list[str]:
        """Requirements for unsloth and unsloth-zoo, to install with --no-deps (a commit as a git direct reference)."""
        return [
            self.sources[p].repo.requirement(p, self.sources[p].commit.sha)
            if p in self.sources
            else f"{p}=={self.pins[packages.matrix_key(p)]}"
            for p in packages.CODE_UNDER_TEST
        ]

    def releases(self) -> list[str]:
        """The code under test that is a PyPI release (``package==version``): what the release cache holds."""
        return [req for req in self.code_under_test() if "==" in req]

    def companions(self, torch: str | None = None) -> list[str]:
        """Requirements resolved normally: the pinned companions, torch and the runtime deps.

        ``torch`` replaces the cell's torch pin with a specifier ("" leaves torch out).
        """
        reqs = [
            f"{packages.from_matrix_key(k)}=={self.pins[k]}"
            for k in PINNED
            if k not in ("unsloth", "unsloth_zoo", "torch") and k in self.pins
        ]
        torch_req = f"torch=={self.pins['torch']}" if torch is None else f"torch{torch}" if torch else None
        return reqs + ([torch_req] if torch_req else []) + list(self.runtime)

    @property
    def stack(self) -> dict[str, str]:
        """Distribution name -> pinned version."""
        return {packages.from_matrix_key(k): v for k, v in self.pins.items()}

    def failure_states(self, registry: dict) -> dict[str, str]:
        """Per listed known failure, what this stack shows of it, from the registry: "reproduces" (the
        symptom), "cause only" (the cause without the conditions for the symptom), "fixed" (past the
        range), "before" (older than the range), "unaffected" (in range, but its requirements unmet)."""
        return {fid: failure_state(registry[fid], self.stack, self.sources) for fid in self.failures}

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


def failure_state(failure, stack: dict[str, str], sources: dict[str, GitSource] | None = None) -> str:
    source = (sources or {}).get(failure.package)
    version = Version(
        failure.placed(stack[failure.package], source.repo, source.commit.sha) if source else stack[failure.package]
    )
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

    def release_requirements(self) -> list[str]:
        """unsloth and unsloth-zoo releases of every cell, each once: what the cross-release suites read."""
        return list(dict.fromkeys(req for cell in self.cells.values() for req in cell.releases()))

    def select(self, names: list[str] | None) -> list[Cell]:
        return [self.cell(n) for n in names] if names else list(self.cells.values())

    def ci_json(self, names: list[str] | None = None) -> str:
        """A GitHub Actions ``strategy.matrix`` value: ``{"include": [cell, ...]}``."""
        return json.dumps({"include": [c.as_json() for c in self.select(names)]}, indent=2)


def _gpu(where: str, value: object) -> GpuNeeds:
    if not isinstance(value, dict) or set(value) - GPU_KEYS or "torch" not in value:
        raise HarnessError(
            f'{where}: gpu must be a table like {{ torch = "==2.5.0", packages = ["xformers==0.0.28.post2"] }}'
        )
    return GpuNeeds(
        schema.specifier(where, "gpu.torch", value["torch"], empty_ok=True),
        schema.string_list(where, "gpu.packages", value.get("packages", [])),
    )


def _overrides(where: str, value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise HarnessError(
            f"{where}: overrides must be a table of package = \"why the cell differs from the release's "
            f'requirement", like {{ protobuf = "..." }}'
        )
    return {canonicalize_name(name): reason for name, reason in value.items()}


def _git_source(where: str, key: str, value: dict) -> GitSource:
    if set(value) != {"git", "rev"} or not all(isinstance(v, str) and v for v in value.values()):
        raise HarnessError(
            f"{where}: {key} must be a version string or a commit like "
            f'{{ git = "fixtures/git/unsloth-2025-01.bundle", rev = "a72a9d9" }}, got {value!r}'
        )
    try:
        repo = Repo(value["git"])
        commit = repo.commit(value["rev"])
    except HarnessError as exc:
        raise HarnessError(f"{where}: {key}: {exc}") from None
    package = packages.from_matrix_key(key)
    version = repo.version_at(commit.sha, package)
    if version is None:
        raise HarnessError(f"{where}: {key}: commit {commit.short} of {value['git']} sets no __version__ of {package}")
    return GitSource(value["git"], repo, commit, version)


def parse_matrix(text: str, path: Path = MATRIX_FILE) -> Matrix:
    return matrix_of(schema.parse_toml(text, path.name), path)


def matrix_of(data: dict, path: Path) -> Matrix:
    """The matrix the parsed TOML of ``path`` declares."""
    unknown = set(data) - {"defaults", "cells"}
    if unknown:
        raise HarnessError(
            f"{path.name}: unknown top-level table(s) {sorted(unknown)}; expected [defaults] and [cells.NAME]"
        )
    defaults = schema.keys(f"{path.name} [defaults]", data.get("defaults", {}), set(), DEFAULT_KEYS)
    runtime = schema.string_list(f"{path.name} [defaults]", "runtime", defaults.get("runtime", []))
    raw_cells = data.get("cells")
    if not isinstance(raw_cells, dict) or not raw_cells:
        raise HarnessError(f"{path.name}: no cells; add at least one [cells.NAME] table")
    cells = {}
    for name, raw in raw_cells.items():
        where = f"{path.name} [cells.{name}]"
        schema.keys(where, raw, set(REQUIRED), CELL_KEYS)
        role = raw.get("role", "")
        if role and role not in ROLES:
            raise HarnessError(f"{where}: role must be one of {list(ROLES)} (or left out), got {role!r}")
        pins, sources = {}, {}
        for key in PINNED:
            value = raw.get(key, defaults.get(key) if key in ("torch", "bitsandbytes") else None)
            if isinstance(value, dict) and key in ("unsloth", "unsloth_zoo"):
                sources[packages.from_matrix_key(key)] = source = _git_source(where, key, value)
                pins[key] = source.pin
            elif value is not None:
                pins[key] = schema.version(where, key, value)
        cells[name] = Cell(
            name=name,
            role=role,
            pins=pins,
            runtime=runtime + schema.string_list(where, "extra", raw.get("extra", [])),
            failures=schema.string_list(where, "failures", raw.get("failures", [])),
            note=str(raw.get("note", "")),
            gpu=_gpu(where, raw["gpu"]) if "gpu" in raw else GpuNeeds(SpecifierSet()),
            sources=sources,
            overrides=_overrides(where, raw.get("overrides", {})),
        )
    return Matrix(path=path, cells=cells)


def load_matrix(path: Path | None = None) -> Matrix:
    path = Path(path or os.environ.get("QVL_MATRIX") or MATRIX_FILE)
    return matrix_of(schema.load_toml(path, "matrix file"), path)
