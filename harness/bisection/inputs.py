"""What a bisect checks before its first probe, so a typo costs a second, not an environment build:
the --record id, each named release on the index, good differs from bad, the oracle's files exist
and collect in the base python."""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness.bisection.oracle import Oracle
from harness.bisection.request import BisectRequest
from harness.core.errors import HarnessError
from harness.env import pypi
from harness.failures import registry

# pytest options whose value is the next argument (a path-looking value is no test file)
VALUE_OPTIONS = {
    "-k",
    "-m",
    "-p",
    "-o",
    "-c",
    "-W",
    "-n",
    "-r",
    "--rootdir",
    "--confcutdir",
    "--basetemp",
    "--deselect",
    "--ignore",
    "--ignore-glob",
    "--junitxml",
    "--report-dir",
    "--cell",
    "--hub",
    "--models",
    "--tb",
}


def check(
    request: BisectRequest, index, exclude_newer: datetime | None, oracle: Oracle, installed_by_probe: set[str]
) -> None:
    """Raise the first problem found; ``installed_by_probe`` are the packages a probe installs (which the base
    python may lack when it collects the oracle)."""
    if request.record:
        check_record(request.record, request.package)
    if not request.by_date:
        named = [
            ("--good", request.good),
            ("--bad", request.bad),
            ("--range-start", request.range_start),
            ("--range-end", request.range_end),
        ]
        for flag, value in named:
            # with --commits a value that is not a release names a commit; the commit search checks it
            if value and not (request.commits and not _on_index(index, request.package, value)):
                check_release(index, request.package, value, flag, pre=request.pre, exclude_newer=exclude_newer)
    if request.good and request.bad and _same(request.good, request.bad, request.by_date):
        raise HarnessError(
            f"--good and --bad both name {request.good}: a bisect needs a good and a bad "
            f"{'moment' if request.by_date else 'release'} that differ"
        )
    if request.oracle_pytest:
        check_paths(request.oracle_pytest, oracle.rootdir)
        why = oracle.collect_error(Path(request.python), installed_by_probe)
        if why:
            raise HarnessError(
                f"--oracle-pytest {request.oracle_pytest!r} does not collect in the base python {request.python}: {why}"
            )


def check_record(failure_id: str, package: str) -> None:
    known = registry.load_registry()
    if failure_id not in known:
        raise HarnessError(
            f"--record {failure_id}: no such known failure in {registry.REGISTRY.name} (it has {', '.join(known)})"
        )
    if known[failure_id].package != canonicalize_name(package):
        raise HarnessError(
            f"--record {failure_id}: that known failure is about {known[failure_id].package}, not {package}"
        )


def check_release(index, package: str, version: str, flag: str, *, pre: bool, exclude_newer: datetime | None) -> None:
    """One line saying what ``version`` is when it cannot be a candidate: not a version, never
    released, yanked, a pre-release (without --pre), or uploaded after --exclude-newer."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        raise HarnessError(f"{flag} {version!r} is not a valid version") from None
    reason = pypi.yanked_reason(index.yanked(package), version)
    if reason is not None:
        raise HarnessError(
            f"{package} {version} was yanked from PyPI{f' ({reason})' if reason else ''}: "
            "it is no candidate; pick a release beside it"
        )
    every = index.releases(package, pre=True)
    release = next((r for r in every if Version(r.version) == wanted), None)
    if release is None:
        span = f"its releases: {every[0].version} .. {every[-1].version}" if every else "it has none"
        raise HarnessError(f"{flag} {version}: {package} has no release {version} on the index ({span})")
    if wanted.is_prerelease and not pre:
        raise HarnessError(
            f"{flag} {version}: {package} {version} is a pre-release; add --pre to bisect over pre-releases"
        )
    if exclude_newer and release.uploaded > exclude_newer:
        raise HarnessError(
            f"{flag} {version}: {package} {version} was uploaded {release.uploaded:%Y-%m-%d %H:%M} UTC, "
            f"after --exclude-newer {exclude_newer:%Y-%m-%d %H:%M}"
        )


def check_paths(selection: str, rootdir: Path) -> None:
    """Every file or folder the pytest selection names exists (relative to the checkout it runs from)."""
    words = shlex.split(selection)
    for before, word in zip([None, *words], words, strict=False):
        if word.startswith("-") or before in VALUE_OPTIONS or not ("/" in word or "::" in word or word.endswith(".py")):
            continue
        path = word.split("::")[0]
        if not (rootdir / path).exists():
            raise HarnessError(
                f"--oracle-pytest: {path} does not exist (the selection runs from the checkout, {rootdir})"
            )


def _on_index(index, package: str, value: str) -> bool:
    try:
        wanted = Version(value)
    except InvalidVersion:
        return False
    return (
        any(Version(r.version) == wanted for r in index.releases(package, pre=True))
        or pypi.yanked_reason(index.yanked(package), value) is not None
    )


def _same(good: str, bad: str, by_date: bool) -> bool:
    if by_date:
        return pypi.parse_date(good) == pypi.parse_date(bad)
    try:
        return Version(good) == Version(bad)
    except InvalidVersion:
        return good == bad
