"""The code of a real release: the installed distribution or its wheel from PyPI, read file by file.

Suites that compare releases (the 404 mapping, the dtype-grad hook, what a release loads) run each
release's own source without installing it (harness.releases.sandbox). Wheels are fetched once,
outside the tests (`qvl-harness releases fetch`, run by tox before pytest), into the cache; a test
that needs one that is missing errors with the command that fetches it. Every wheel is checked
against the lock (harness.releases.lock) when fetched and when read.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from harness.core import packages
from harness.core.errors import HarnessError, one_line
from harness.core.paths import cache_dir
from harness.core.progress import Progress
from harness.releases import lock


@dataclass(frozen=True)
class ReleaseCode:
    """The files of one release of ``package`` (``unsloth`` or ``unsloth-zoo``; ``transformers`` for its source)."""

    package: str
    version: str
    origin: str  # "installed", the wheel's path, or "git:CLONE@SHA" (a commit, read from its clone)

    def _wheel(self) -> zipfile.ZipFile:
        lock.verify(Path(self.origin), f"{self.package}=={self.version}")  # the bytes the lock names, or one line
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


Published = Callable[[str, str], dict[str, str]]  # (package, version) -> {file name: sha256} as PyPI publishes them


def fetch(
    requirements: list[str],
    *,
    published: Published | None = None,
    find_links: list[str] = (),
    no_index: bool = False,
    manifest: Path | None = None,
    update_lock: Path | None = None,
    quiet: bool | None = None,
    workers: int = 8,
) -> list[Path]:
    """Download the wheels of ``package==version`` requirements into the cache (no deps), each one checked.

    A wheel in the lock must have its locked digest, or be a slimmed copy whose entry in a wheelhouse
    ``manifest`` names the locked original; a wheel outside it (every wheel, with ``update_lock``) must
    have the digest ``published`` gives, unless there is no index to ask (``no_index``: the --find-links
    folders are the index). ``update_lock`` then writes the wheels' digests into that lock. A cached
    wheel is checked the same way, so a damaged cache fails the fetch (tox runs it before pytest).
    One ``pip download`` per missing wheel, several at once: pip resolves the requirements of one
    call together, and two versions of one package in one call are a ResolutionImpossible.
    """
    wanted = []
    for req in requirements:
        package, _, version = req.partition("==")
        if package not in packages.SOURCE_READ or not version:
            raise HarnessError(
                f"cannot fetch {req!r}: expected unsloth==VERSION, unsloth-zoo==VERSION or transformers==VERSION"
            )
        wanted.append((package, version))
    check = _Check({} if update_lock else lock.load(), published, no_index, _slimmed_copies(manifest))
    missing = []
    for package, version in dict.fromkeys(wanted):
        path = wheel_path(package, version)
        if path.is_file() and update_lock:
            error = check(package, version, path)
            if error:
                raise HarnessError(f"cached {error}; delete it and fetch again")
        elif path.is_file() and lock.expected(path):
            lock.verify(path, f"{package}=={version}")
        else:
            missing.append((package, version))
    if missing:
        report = Progress(len(missing), "fetching release wheels", quiet=quiet)
        index = [a for d in find_links for a in ("--find-links", str(d))] + ["--no-index"] * no_index
        with ThreadPoolExecutor(max_workers=workers) as pool:
            errors = [e for e in pool.map(lambda pv: _download(*pv, index, check, report), missing) if e]
        report.finish()
        if errors:
            raise HarnessError(f"cannot fetch {len(errors)} of {len(missing)} release wheel(s): {'; '.join(errors)}")
    if update_lock:
        lock.write(
            [
                lock.Locked(p, v, wheel_path(p, v).name, lock.recorded(wheel_path(p, v))["sha256"])
                for p, v in dict.fromkeys(wanted)
            ],
            update_lock,
        )
    return [wheel_path(*pv) for pv in wanted]


def wheel_digest(package: str, version: str) -> str:
    """The sha256 of the cached wheel of a release, checked (what a probe log or a range's evidence records)."""
    code = from_wheel(package, version)
    return lock.verify(Path(code.origin), code.label)


@dataclass(frozen=True)
class _Check:
    """Whether a fetched wheel is the release: its digest against the lock, a wheelhouse's slimmed copy, or PyPI's."""

    locked: dict[str, lock.Locked]
    published: Published | None
    no_index: bool
    slimmed: dict[str, tuple[str, str]]  # file name -> (its digest, the digest of the original it was slimmed from)

    def __call__(self, package: str, version: str, path: Path) -> str | None:
        """None once the wheel is accepted (and its digest recorded beside it), else the problem in a few words."""
        actual, name = lock.sha256(path), path.name
        if name in self.locked:
            want, source = self.locked[name].sha256, lock.LOCK_NAME
        elif self.no_index:
            want, source = actual, "--find-links, no index to ask"
        elif self.published is None:
            return f"{package}=={version}: outside {lock.LOCK_NAME}, and no index digest to check it against"
        else:
            want, source = self.published(package, version).get(name), "PyPI"
            if want is None:
                return f"{package}=={version}: PyPI publishes no {name}"
        if actual == want:
            lock.record(path, actual, source)
        elif source == lock.LOCK_NAME and self.slimmed.get(name) == (actual, want):
            lock.record(path, actual, "a wheelhouse manifest", slimmed_from=want)
        else:
            return f"{package}=={version}: {name} has sha256 {actual} but {source} says {want}"
        return None


def _slimmed_copies(manifest: Path | None) -> dict[str, tuple[str, str]]:
    """The slimmed wheels a wheelhouse's manifest lists: file name -> (sha256, PyPI's sha256 of the original)."""
    if manifest is None:
        return {}
    try:
        files = json.loads(Path(manifest).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise HarnessError(f"{manifest}: not a wheelhouse manifest (qvl-harness wheelhouse writes one)") from None
    return {Path(f).name: (e["sha256"], e["pypi_sha256"]) for f, e in files.items() if e.get("pypi_sha256")}


def _download(package: str, version: str, index_args: list[str], check: _Check, report) -> str | None:
    """Fetch one wheel into the cache through a private folder (atomic: never a partial or unchecked wheel);
    the error, or None."""
    started = time.monotonic()
    target = wheel_path(package, version)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--dest",
            tmp,
            *index_args,
            f"{package}=={version}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp, target.name)
        error = (
            f"{package}=={version}: {one_line(result.stderr)}"
            if result.returncode
            else f"{package}=={version}: pip saved no {target.name}"
            if not got.is_file()
            else None
        )
        if error is None:
            error = check(package, version, got)
        if error:
            report.step(f"{package}=={version}", "FAILED")
            return error
        lock.record_path(got).replace(lock.record_path(target))  # the record first: a wheel is never unchecked
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
        with code._wheel() as wheel:
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
