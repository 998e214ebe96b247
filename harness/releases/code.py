"""The code of a real release: the installed distribution or its wheel from PyPI, read file by file.

Suites that compare releases (the 404 mapping, the dtype-grad hook, what a release loads) run each
release's own source without installing it (harness.releases.sandbox). Wheels are fetched once,
outside the tests (`qvl-harness releases fetch`, run by tox before pytest), into the cache; a test
that needs one that is missing errors with the command that fetches it.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import json
import re
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from harness.core import packages
from harness.core.errors import HarnessError, one_line
from harness.core.paths import cache_dir
from harness.core.progress import Progress


@dataclass(frozen=True)
class ReleaseCode:
    """The files of one release of ``package`` (``unsloth`` or ``unsloth-zoo``)."""

    package: str
    version: str
    origin: str  # "installed", the wheel's path, or "git:CLONE@SHA" (a commit, read from its clone)

    def _wheel(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.origin)

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        clone, sha = self.commit()
        return subprocess.run(["git", "-C", clone, *args[:-1], f"{sha}:{args[-1]}"], capture_output=True, text=True)

    def has(self, relpath: str) -> bool:
        if self.origin == "installed":
            return _installed_root(self.package).joinpath(relpath).is_file()
        if self.origin.startswith("git:"):
            return self._git("cat-file", "-e", relpath).returncode == 0
        return relpath in self._wheel().namelist()

    def read(self, relpath: str) -> str:
        try:
            if self.origin == "installed":
                return _installed_root(self.package).joinpath(relpath).read_text()
            if self.origin.startswith("git:"):
                shown = self._git("show", relpath)
                if shown.returncode:
                    raise KeyError(relpath)
                return shown.stdout
            return self._wheel().read(relpath).decode()
        except (OSError, KeyError):
            raise HarnessError(f"{self.label} has no file {relpath}") from None

    def parse(self, relpath: str) -> ast.Module:
        """The file's syntax tree; the release's own invalid escape sequences are not this run's warnings."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return ast.parse(self.read(relpath), filename=f"{self.label}:{relpath}")

    def commit(self) -> tuple[str, str] | None:
        """(clone, commit id) when this code is a commit rather than a release."""
        if self.origin.startswith("git:"):
            clone, _, sha = self.origin.removeprefix("git:").rpartition("@")
            return clone, sha
        return installed_commit(self.package) if self.origin == "installed" else None

    @property
    def label(self) -> str:
        if self.origin.startswith("git:"):
            return f"{self.package} @ {self.origin.rpartition('@')[2][:7]} ({self.version.partition('+')[0]})"
        return f"{self.package}=={self.version}" + (" (installed)" if self.origin == "installed" else "")


def _installed_root(package: str) -> Path:
    dist = importlib.metadata.distribution(package)
    return Path(dist.locate_file(""))


def installed(package: str) -> ReleaseCode:
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise HarnessError(f"{package} is not installed in this environment") from None
    commit = installed_commit(package)
    return ReleaseCode(package, f"{version}+g{commit[1][:7]}" if commit else version, "installed")


def installed_commit(package: str) -> tuple[str, str] | None:
    """(clone URL, commit id) when ``package`` was installed from git (pip and uv record it, PEP 610)."""
    try:
        text = importlib.metadata.distribution(package).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    info = json.loads(text or "{}")
    commit = info.get("vcs_info", {}).get("commit_id")
    return (info["url"], commit) if commit and info.get("vcs_info", {}).get("vcs") == "git" else None


def from_commit(package: str, clone: Path, sha: str, version: str) -> ReleaseCode:
    """The code of commit ``sha`` of a local clone, read file by file as from a wheel."""
    return ReleaseCode(package, f"{version}+g{sha[:7]}", f"git:{clone}@{sha}")


def of(package: str, version: str, origin: str = "wheel") -> ReleaseCode:
    """The code of a release: the installed one, a wheel from the cache, or a commit read from its clone."""
    if origin == "installed":
        return installed(package)
    if origin.startswith("git:"):
        return ReleaseCode(package, version, origin)
    return from_wheel(package, version)


def is_code_under_test(requirement: str) -> bool:
    """A release of unsloth or unsloth-zoo (``package==version``; a commit is read from its clone)."""
    return "==" in requirement and requirement.split("==")[0] in packages.CODE_UNDER_TEST


def wheel_path(package: str, version: str) -> Path:
    return cache_dir("wheels") / f"{packages.wheel_prefix(package)}-{version}-py3-none-any.whl"


def from_wheel(package: str, version: str) -> ReleaseCode:
    path = wheel_path(package, version)
    if not path.is_file():
        raise HarnessError(
            f"{package}=={version} is not in the release cache ({path.parent}); "
            f"run: qvl-harness releases fetch {package}=={version}"
        )
    return ReleaseCode(package, version, str(path))


def fetch(requirements: list[str], *, find_links: list[str] = (), no_index: bool = False,
          quiet: bool | None = None, workers: int = 8) -> list[Path]:
    """Download the wheels of ``package==version`` requirements into the cache (no deps).

    One ``pip download`` per missing wheel, several at once: pip resolves the requirements of one
    call together, and two versions of one package in one call are a ResolutionImpossible.
    """
    wanted = []
    for req in requirements:
        package, _, version = req.partition("==")
        if package not in packages.CODE_UNDER_TEST or not version:
            raise HarnessError(f"cannot fetch {req!r}: expected unsloth==VERSION or unsloth-zoo==VERSION")
        wanted.append((package, version))
    missing = [pv for pv in dict.fromkeys(wanted) if not wheel_path(*pv).is_file()]
    if missing:
        report = Progress(len(missing), "fetching release wheels", quiet=quiet)
        index = [a for d in find_links for a in ("--find-links", str(d))] + ["--no-index"] * no_index
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = [e for e in pool.map(lambda pv: _download(*pv, index, report), missing) if e]
        report.finish()
        if errors:
            raise HarnessError(f"cannot fetch {len(errors)} of {len(missing)} release wheel(s): {'; '.join(errors)}")
    return [wheel_path(*pv) for pv in wanted]


def _download(package: str, version: str, index_args: list[str], report) -> str | None:
    """Fetch one wheel into the cache through a private folder (atomic: never a partial wheel); the error, or None."""
    started = time.monotonic()
    target = wheel_path(package, version)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
               "--dest", tmp, *index_args, f"{package}=={version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp, target.name)
        if result.returncode != 0 or not got.is_file():
            report.step(f"{package}=={version}", "FAILED")
            return f"{package}=={version}: {one_line(result.stderr) if result.returncode else 'pip saved no ' + target.name}"
        got.replace(target)
    report.step(f"{package}=={version}", f"{target.stat().st_size / 2**20:.1f} MiB, {time.monotonic() - started:.1f}s")
    return None


# --- what a release says it needs ---------------------------------------------------------------

GPU_EXTRA = re.compile(r"cu\d+onlytorch(\d)(\d+)(\d)")


@dataclass(frozen=True)
class GpuExtra:
    """One of unsloth's ``cuXXXonlytorchYYY`` extras: the torch it is for and what it pins beside it."""

    name: str
    torch: str
    pins: dict[str, str]


def requires(code: ReleaseCode) -> list[Requirement]:
    """The release's Requires-Dist, from its wheel's METADATA (or the installed distribution's)."""
    if code.origin == "installed":
        lines = importlib.metadata.distribution(code.package).requires or []
    else:
        with zipfile.ZipFile(code.origin) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            lines = email.message_from_bytes(wheel.read(name)).get_all("Requires-Dist") or []
    return [Requirement(line) for line in lines]


def gpu_extras(code: ReleaseCode) -> list[GpuExtra]:
    """The release's GPU install extras, oldest torch first."""
    found: dict[str, GpuExtra] = {}
    for req in requires(code):
        extra = next((m.group(0) for m in GPU_EXTRA.finditer(str(req.marker or ""))), None)
        if extra is None:
            continue
        major, minor, patch = GPU_EXTRA.fullmatch(extra).groups()
        entry = found.setdefault(extra, GpuExtra(extra, f"{major}.{minor}.{patch}", {}))
        pinned = next((s.version for s in req.specifier if s.operator == "=="), None)
        if pinned:
            entry.pins[req.name] = Version(pinned).base_version if req.name == "torch" else pinned
    return sorted(found.values(), key=lambda e: Version(e.pins.get("torch", e.torch)))
