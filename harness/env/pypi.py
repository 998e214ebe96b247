"""Release history of a package from PyPI's JSON API: versions with upload times, oldest first, and
the sha256 PyPI publishes for each file (what a release wheel outside the lock is checked against).

The JSON of each package is cached in ``cache_dir('pypi')`` for ``ttl`` seconds; ``offline`` reads
the cache whatever its age. ``DirectoryIndex`` reads the same JSON format from local files
(``<dir>/<package>.json``): a mirror, or the hermetic tests' index.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness.core import atomic
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir

PYPI_JSON = "https://pypi.org/pypi/{name}/json"
DEFAULT_TTL = 6 * 3600


@dataclass(frozen=True)
class Release:
    package: str
    version: str
    uploaded: datetime  # earliest upload of any of the release's files (UTC)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def parse_date(text: str) -> datetime:
    """An ISO date or date-time (UTC unless it says otherwise), as uv's --exclude-newer takes."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HarnessError(f"{text!r} is not a date; expected e.g. 2025-01-09 or 2025-01-09T13:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def yanked_from_json(data: dict) -> dict[str, str]:
    """Version -> the reason it was yanked ("" when none was given), for releases whose every file is yanked."""
    return {
        version: next((f.get("yanked_reason") or "" for f in files), "")
        for version, files in (data.get("releases") or {}).items()
        if files and all(f.get("yanked") for f in files)
    }


def yanked_reason(yanked: dict[str, str], version: str) -> str | None:
    """Why ``version`` was yanked, or None when it was not (PEP 440 equality)."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        return None
    return next((reason for v, reason in yanked.items() if _same(v, wanted)), None)


def _same(text: str, wanted: Version) -> bool:
    try:
        return Version(text) == wanted
    except InvalidVersion:
        return False


def digests_from_json(data: dict, version: str) -> dict[str, str]:
    """File name -> sha256 of each file of release ``version`` (PEP 440 equality), as PyPI publishes them."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        return {}
    return {
        f["filename"]: f["digests"]["sha256"]
        for v, files in (data.get("releases") or {}).items()
        if _same(v, wanted)
        for f in files
        if (f.get("digests") or {}).get("sha256")
    }


def releases_from_json(package: str, data: dict, *, pre: bool = False) -> list[Release]:
    """Non-yanked releases with at least one file, ordered by upload time (PyPI JSON format)."""
    out = []
    for version, files in (data.get("releases") or {}).items():
        live = [f for f in files if not f.get("yanked")]
        if not live:
            continue  # no files, or every file yanked
        try:
            parsed = Version(version)
        except InvalidVersion:
            continue
        if parsed.is_prerelease and not pre:
            continue
        uploaded = min(parse_date(f["upload_time_iso_8601"]) for f in live)
        out.append(Release(package, version, uploaded))
    return sorted(out, key=lambda r: (r.uploaded, Version(r.version)))


class PyPIIndex:
    """pypi.org's JSON API with a file cache."""

    def __init__(self, ttl: float = DEFAULT_TTL, offline: bool = False):
        self.ttl, self.offline = ttl, offline

    def _json(self, package: str) -> dict:
        name = canonicalize_name(package)
        cached = cache_dir("pypi") / f"{name}.json"
        fresh = cached.is_file() and time.time() - cached.stat().st_mtime < self.ttl
        if cached.is_file() and (fresh or self.offline):
            return json.loads(cached.read_text())
        if self.offline:
            raise HarnessError(f"no cached release data for {name} in {cached.parent}; run once without --offline")
        try:
            with urllib.request.urlopen(PYPI_JSON.format(name=name), timeout=60) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise HarnessError(f"{name} is not on PyPI") from None
            raise HarnessError(f"PyPI answered {exc.code} for {name}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            if cached.is_file():
                return json.loads(cached.read_text())  # stale beats nothing when offline by accident
            raise HarnessError(f"cannot reach PyPI for {name}: {getattr(exc, 'reason', exc)}") from None
        data = json.loads(body)
        atomic.write_bytes(cached, body)
        return data

    def releases(self, package: str, *, pre: bool = False) -> list[Release]:
        return releases_from_json(canonicalize_name(package), self._json(package), pre=pre)

    def yanked(self, package: str) -> dict[str, str]:
        return yanked_from_json(self._json(package))

    def digests(self, package: str, version: str) -> dict[str, str]:
        """PyPI's sha256 of each file of a release; a release newer than the cached JSON reads it again."""
        found = digests_from_json(self._json(package), version)
        if not found and not self.offline:
            found = digests_from_json(PyPIIndex(ttl=0)._json(package), version)
        return found


def published_digests(package: str, version: str) -> dict[str, str]:
    """What the release cache checks a wheel outside the lock against (harness.releases.code.fetch)."""
    return PyPIIndex().digests(package, version)


class DirectoryIndex:
    """Release data from ``<directory>/<package>.json`` files in PyPI's JSON format."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _json(self, package: str) -> dict:
        path = self.directory / f"{canonicalize_name(package)}.json"
        try:
            return json.loads(path.read_text())
        except OSError:
            raise HarnessError(f"no release data for {canonicalize_name(package)}: {path} is missing") from None
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}: not valid JSON: {exc}") from None

    def releases(self, package: str, *, pre: bool = False) -> list[Release]:
        return releases_from_json(canonicalize_name(package), self._json(package), pre=pre)

    def yanked(self, package: str) -> dict[str, str]:
        return yanked_from_json(self._json(package))

    def digests(self, package: str, version: str) -> dict[str, str]:
        return digests_from_json(self._json(package), version)


def history(index, package: str, *, exclude_newer: datetime | None = None, pre: bool = False) -> list[Release]:
    """The releases of ``package`` oldest first, without those uploaded after ``exclude_newer``."""
    found = index.releases(package, pre=pre)
    if exclude_newer is not None:
        found = [r for r in found if r.uploaded <= exclude_newer]
    if not found:
        raise HarnessError(
            f"{package} has no releases" + (f" uploaded before {exclude_newer:%Y-%m-%d %H:%M}" if exclude_newer else "")
        )
    return found


def release_of(releases: list[Release], version: str) -> Release:
    """The release ``version`` (PEP 440 equality, so 2025.01.06 finds 2025.1.6)."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        raise HarnessError(f"{version!r} is not a valid version") from None
    for release in releases:
        if Version(release.version) == wanted:
            return release
    package = releases[0].package if releases else "package"
    raise HarnessError(f"{package} {version} is not a release in range (yanked, a pre-release, or excluded by date)")


def newest_at(releases: list[Release], moment: datetime) -> Release | None:
    """The highest version uploaded no later than ``moment``: what ``uv --exclude-newer`` would pick."""
    eligible = [r for r in releases if r.uploaded <= moment]
    return max(eligible, key=lambda r: Version(r.version)) if eligible else None
