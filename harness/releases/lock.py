"""The lock of the release wheels the suites read: each wheel's file name and PyPI's sha256 of it.

``releases.lock.toml`` sits beside matrix.toml. Every read of a cached wheel checks its digest
(``verify``; once per file, size and mtime, so reads stay fast). A wheel outside the lock (a bisect
probe, a release a user names) is checked against its index when fetched, and the digest it was
fetched with is recorded beside it (``<wheel>.digest.json``); a slimmed wheel from a runner's
wheelhouse is recorded with the locked digest of the original it was slimmed from.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.core import atomic, schema
from harness.core.errors import HarnessError
from harness.core.paths import MATRIX_FILE

LOCK_NAME = "releases.lock.toml"
LOCK_FILE = MATRIX_FILE.parent / LOCK_NAME
HEADER = """\
# The release wheels the matrix, the suites and the tests read, with PyPI's sha256 of each: every
# read of a cached wheel checks it, and `qvl-harness releases fetch` (tox runs it before pytest)
# fails on a wheel that differs. Written by `qvl-harness releases fetch --update-lock` and, for the
# releases it moves the canary to, by `qvl-harness matrix --resolve-canary --write`.
"""


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    file: str
    sha256: str


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_loaded: dict[Path, tuple[tuple[int, int], dict[str, Locked]]] = {}
_verified: dict[tuple[str, int, int], str] = {}
_guard = threading.Lock()


def load(path: Path = LOCK_FILE) -> dict[str, Locked]:
    """file name -> its lock entry; no lock file is an empty lock."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {}
    key = (stat.st_mtime_ns, stat.st_size)
    with _guard:
        if path in _loaded and _loaded[path][0] == key:
            return _loaded[path][1]
    entries = schema.keys(path.name, schema.load_toml(path, "the release lock"), set(), {"release"}).get("release", [])
    found = {}
    for i, entry in enumerate(entries if isinstance(entries, list) else [None]):
        where = f"{path.name}: release {i + 1}"
        schema.keys(where, entry, {"name", "version", "file", "sha256"})
        if not (isinstance(entry["sha256"], str) and len(entry["sha256"]) == 64):
            raise HarnessError(f"{where}: sha256 must be 64 hex digits, got {entry['sha256']!r}")
        found[entry["file"]] = Locked(
            entry["name"], schema.version(where, "version", entry["version"]), entry["file"], entry["sha256"].lower()
        )
    with _guard:
        _loaded[path] = (key, found)
    return found


def write(entries: list[Locked], path: Path = LOCK_FILE) -> Path:
    """Add or replace ``entries`` (by file name); the other entries stay."""
    merged = {**load(path), **{e.file: e for e in entries}}
    blocks = [
        f'[[release]]\nname = "{e.name}"\nversion = "{e.version}"\nfile = "{e.file}"\nsha256 = "{e.sha256}"\n'
        for e in sorted(merged.values(), key=lambda e: e.file)
    ]
    return atomic.write_text(path, HEADER + "".join(f"\n{b}" for b in blocks))


def record_path(wheel: Path) -> Path:
    return wheel.with_name(wheel.name + ".digest.json")


def record(wheel: Path, digest: str, checked: str, slimmed_from: str | None = None) -> None:
    """Write down the digest ``wheel`` was fetched with and what it was checked against."""
    entry = {"sha256": digest, "checked": checked, "slimmed_from": slimmed_from}
    atomic.write_text(record_path(wheel), json.dumps(entry))


def recorded(wheel: Path) -> dict | None:
    try:
        return json.loads(record_path(wheel).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def expected(wheel: Path, lock: Path = LOCK_FILE) -> tuple[str, str] | None:
    """(the digest ``wheel`` must have, where that digest comes from), or None when nothing says."""
    locked, fetched = load(lock).get(wheel.name), recorded(wheel)
    if locked and fetched and fetched.get("slimmed_from") == locked.sha256:
        return fetched["sha256"], f"its wheelhouse manifest (slimmed from the locked {locked.sha256})"
    if locked:
        return locked.sha256, lock.name
    if fetched:
        return fetched["sha256"], f"its fetch ({fetched['checked']})"
    return None


def verify(wheel: Path, requirement: str) -> str:
    """The wheel's sha256 once it matches the lock (or its recorded fetch); else one line naming both digests."""
    stat = wheel.stat()
    key = (str(wheel), stat.st_mtime_ns, stat.st_size)
    if key in _verified:
        return _verified[key]
    want = expected(wheel)
    if want is None:
        raise HarnessError(
            f"{wheel} is outside {LOCK_NAME} and no fetch recorded its digest; "
            f"delete it and run: qvl-harness releases fetch {requirement}"
        )
    actual = sha256(wheel)
    if actual != want[0]:
        raise HarnessError(
            f"{wheel} has sha256 {actual} but {want[1]} says {want[0]}: a changed or truncated wheel; "
            f"delete it and run: qvl-harness releases fetch {requirement}"
        )
    _verified[key] = actual
    return actual
