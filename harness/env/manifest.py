"""A wheelhouse's manifest: the sha256 of every file it holds, checked on the runner before anything is installed.

``manifest.json`` is ``{"files": {"RELPATH": {"sha256": HEX, "pypi_sha256": HEX}}}``; ``pypi_sha256`` stands
beside a wheel the harness slimmed: the digest of its PyPI original, which the release lock names.
`.ci/gpu-offline` runs ``python3 -m harness.env.manifest WHEELHOUSE`` first (only the checkout's
harness and packaging are importable there yet): a changed, truncated, missing or unlisted file is
one line and exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.core import atomic
from harness.core.errors import HarnessError
from harness.releases.lock import sha256

MANIFEST = "manifest.json"


def _files(dest: Path) -> list[str]:
    return sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and p.name != MANIFEST)


def write(dest: Path, originals: dict[str, str]) -> Path:
    """List every file of ``dest`` with its digest; ``originals`` (relpath -> PyPI's digest, taken before
    slimming) stands beside each file whose bytes the build changed."""
    files = {}
    for rel in _files(dest):
        digest = sha256(dest / rel)
        slimmed = originals.get(rel, digest) != digest
        files[rel] = {"sha256": digest, **({"pypi_sha256": originals[rel]} if slimmed else {})}
    return atomic.write_text(dest / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")


def check(dest: Path) -> int:
    """The number of files, once each is as the manifest says; else one line naming the file and both digests."""
    try:
        listed = json.loads((dest / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise HarnessError(f"{dest}: no readable {MANIFEST}; rebuild it with qvl-harness wheelhouse") from None
    unlisted = sorted(set(_files(dest)) - set(listed))
    if unlisted:
        raise HarnessError(
            f"wheelhouse {dest} holds {unlisted[0]}, which its manifest does not list; rebuild the wheelhouse"
        )
    for rel, entry in listed.items():
        if not (dest / rel).is_file():
            raise HarnessError(
                f"wheelhouse {dest} lacks {rel}, which its manifest lists; copy the whole wheelhouse again"
            )
        actual = sha256(dest / rel)
        if actual != entry["sha256"]:
            raise HarnessError(
                f"wheelhouse file {dest / rel} has sha256 {actual} but its manifest says "
                f"{entry['sha256']}: changed or truncated on the way; copy the wheelhouse again"
            )
    return len(listed)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m harness.env.manifest WHEELHOUSE", file=sys.stderr)
        return 2
    try:
        count = check(Path(argv[0]))
    except HarnessError as exc:
        print(f"qvl-harness: error: {exc}", file=sys.stderr)
        return 2
    print(f"wheelhouse {argv[0]}: {count} files as its manifest says")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
