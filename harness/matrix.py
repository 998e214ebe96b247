"""The version matrix (matrix.toml): named cells of pinned stacks, the single source for tox and CI."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from .errors import HarnessError
from .paths import MATRIX_FILE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PURPOSES = ("control", "canary", "reproduces", "fixed")
PINNED = ("unsloth", "unsloth_zoo", "transformers", "peft", "bitsandbytes", "trl", "torch")
REQUIRED = ("unsloth", "unsloth_zoo", "transformers")
CELL_KEYS = set(PINNED) | {"purpose", "failures", "note", "extra", "python"}
DEFAULT_KEYS = {"torch", "bitsandbytes", "runtime", "python"}
# PyPI distribution names of the pinned keys.
DIST_NAMES = {"unsloth_zoo": "unsloth-zoo"}


@dataclass(frozen=True)
class Cell:
    name: str
    purpose: str
    pins: dict[str, str]
    runtime: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    note: str = ""
    python: str | None = None

    @property
    def tox_env(self) -> str:
        return f"cell-{self.name}"

    def code_under_test(self) -> list[str]:
        """Requirements for unsloth and unsloth-zoo, to install with --no-deps."""
        return [f"{DIST_NAMES.get(k, k)}=={self.pins[k]}" for k in ("unsloth", "unsloth_zoo")]

    def companions(self, torch: str | None = None) -> list[str]:
        """Requirements resolved normally: the pinned companions, torch and the runtime deps.

        ``torch`` overrides the cell's torch pin (a GPU runner keeps its own torch: pass "").
        """
        reqs = []
        for key in PINNED:
            if key in ("unsloth", "unsloth_zoo"):
                continue
            version = self.pins.get(key)
            if key == "torch" and torch is not None:
                version = torch or None
            if version:
                reqs.append(f"{DIST_NAMES.get(key, key)}=={version}")
        return reqs + list(self.runtime)

    def as_json(self) -> dict:
        return {
            "cell": self.name,
            "tox_env": self.tox_env,
            "purpose": self.purpose,
            "failures": list(self.failures),
            **{k: v for k, v in self.pins.items()},
            "note": self.note,
        }


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
        purpose = raw.get("purpose")
        if purpose not in PURPOSES:
            raise HarnessError(f"{where}: purpose must be one of {list(PURPOSES)}, got {purpose!r}")
        pins = {}
        for key in PINNED:
            value = raw.get(key, defaults.get(key) if key in ("torch", "bitsandbytes") else None)
            if value is not None:
                pins[key] = _version(where, key, value)
        failures = _string_list(where, "failures", raw.get("failures", []))
        if purpose in ("reproduces", "fixed") and not failures:
            raise HarnessError(f"{where}: purpose {purpose!r} needs failures = [\"<known failure id>\"]")
        cells[name] = Cell(
            name=name,
            purpose=purpose,
            pins=pins,
            runtime=runtime + _string_list(where, "extra", raw.get("extra", [])),
            failures=failures,
            note=str(raw.get("note", "")),
            python=raw.get("python", defaults.get("python")),
        )
    return Matrix(path=path, cells=cells)


def load_matrix(path: Path | None = None) -> Matrix:
    path = Path(path or os.environ.get("QVL_MATRIX") or MATRIX_FILE)
    try:
        text = path.read_text()
    except OSError as exc:
        raise HarnessError(f"cannot read matrix file {path}: {exc.strerror}") from None
    return parse_matrix(text, path)
