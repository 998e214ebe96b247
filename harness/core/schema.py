"""One way to read the harness's TOML files: parse, then check each entry, every problem one line
naming the file, the entry and the key (matrix.toml, known_failures.toml, xrays.toml, hub snapshots)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from harness.core.errors import HarnessError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_toml(path: Path, what: str) -> dict:
    """The parsed file; an unreadable or malformed one is one line naming it."""
    return parse_toml(read_text(path, what), Path(path).name)


def read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise HarnessError(f"cannot read {what} {path}: {exc.strerror}") from None


def parse_toml(text: str, where: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{where}: not valid TOML: {exc}") from None


def keys(where: str, entry, required: set[str], optional: set[str] = frozenset()) -> dict:
    """``entry`` as a table with every required key and no unknown one."""
    if not isinstance(entry, dict):
        raise HarnessError(f"{where}: must be a table")
    missing, unknown = sorted(required - set(entry)), sorted(set(entry) - required - optional)
    if missing or unknown:
        raise HarnessError(
            f"{where}: "
            + "; ".join(
                ([f"missing {missing}"] if missing else []) + ([f"unknown key(s) {unknown}"] if unknown else [])
            )
        )
    return entry


def version(where: str, key: str, value) -> str:
    if not isinstance(value, str):
        raise HarnessError(f'{where}: {key} must be a version string like "2024.11.11", got {value!r}')
    try:
        Version(value)
    except InvalidVersion:
        raise HarnessError(f"{where}: {key} = {value!r} is not a valid version") from None
    return value


def specifier(where: str, key: str, value, *, empty_ok: bool = False) -> SpecifierSet:
    """A version range (">=2024.12.2,<2025.1.6"): well-formed, non-empty unless ``empty_ok``, satisfiable."""
    example = '">=2024.12.2,<2025.1.6"'
    try:
        if not isinstance(value, str) or (value.strip() and any(not part.strip() for part in value.split(","))):
            raise InvalidSpecifier(str(value))
        spec = SpecifierSet(value)
    except InvalidSpecifier:
        raise HarnessError(f"{where}: {key} {value!r} is not a version specifier like {example}") from None
    if not str(spec) and not empty_ok:
        raise HarnessError(f"{where}: {key} is empty; give the range the evidence supports")
    lows = [(Version(s.version), s.operator) for s in spec if s.operator in (">=", ">")]
    highs = [(Version(s.version), s.operator) for s in spec if s.operator in ("<", "<=")]
    if lows and highs:
        (low, low_op), (high, high_op) = max(lows), min(highs)
        if low > high or (low == high and (low_op == ">" or high_op == "<")):
            raise HarnessError(
                f"{where}: {key} {value!r} is an empty range (its lower bound is not below its upper bound)"
            )
    return spec


def string_list(where: str, key: str, value, *, lower: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise HarnessError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(v.lower() for v in value) if lower else tuple(value)


def boolean(where: str, key: str, value) -> bool:
    if not isinstance(value, bool):
        raise HarnessError(f"{where}: {key} must be true or false")
    return value


def load_json(path: Path, what: str, keys: set[str], version: int, hint: str = "") -> dict:
    """A JSON document of the harness's own (results, goldens): format ``version`` with exactly ``keys``."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read {what} {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{what} {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != keys or data["format"] != version:
        raise HarnessError(
            f"{what} {path}: expected format {version} with exactly the keys {sorted(keys)}"
            + (f" ({hint})" if hint else "")
        )
    return data
