"""The code under test below a release: commits of a git clone of unsloth or unsloth-zoo.

A location is a local clone (bare or not), a git bundle or a tarball of a bare (shallow) repository
(unpacked once into the cache: how a few commits travel with the checkout), or a URL (cloned once
into the cache, needs the network). A commit
is installed like a release, ``name @ git+file://CLONE@SHA`` with --no-deps, so pip/uv record it in
the distribution's direct_url.json and the stack shows it as ``VERSION+gSHORT``.

Release <-> commit: a release is placed on a tag named after it where the project has one, else on
the commit that sets its ``__version__``; when several do (a nightly commit and its squash), the one
whose files equal the release's wheel. A release no commit sets (unsloth 2024.11.11) cannot be placed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from filelock import FileLock

from harness.core import packages
from harness.core.errors import HarnessError, one_line
from harness.core.paths import REPO_ROOT, cache_dir

# Where each project keeps its version, newest layout first (unsloth moved it in 2026-08, #8395).
VERSION_FILES = {
    "unsloth": ("unsloth/_version.py", "unsloth/models/_utils.py"),
    "unsloth-zoo": ("unsloth_zoo/__init__.py",),
}
VERSION_LINE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
ARCHIVE = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    date: datetime

    @property
    def short(self) -> str:
        return self.sha[:7]

    def describe(self) -> str:
        return f'{self.short} {self.date:%Y-%m-%d} "{self.subject}"'


@dataclass(frozen=True)
class Placement:
    version: str
    commit: Commit | None
    how: str  # how it was placed, or why it could not be


class Repo:
    """A local git repository holding a project's history."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.path = _local_clone(self.location)

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise HarnessError(f"git {' '.join(args[:2])} in {self.location}: {one_line(result.stderr)}")
        return result.stdout if result.returncode == 0 else ""

    def commit(self, ref: str) -> Commit:
        """The commit ``ref`` names (a sha, short sha, tag or branch); one clear line when it names none."""
        found = self._log("-1", f"{ref}^{{commit}}")
        if not found:
            raise HarnessError(
                f"{ref!r} is not a commit of {self.location} (git log finds no such tag, branch or commit id)"
            )
        return found[0]

    def _log(self, *revisions: str) -> list[Commit]:
        out = self.git("log", "--format=%H%x00%cI%x00%s", *revisions, "--", check=False)
        return [
            Commit(sha, subject, datetime.fromisoformat(date))
            for sha, date, subject in (line.split("\x00", 2) for line in out.splitlines())
        ]

    def is_ancestor(self, older: str, newer: str) -> bool | None:
        """Whether ``older`` is in ``newer``'s history; None when this clone lacks one of them."""
        for ref in (older, newer):
            if not self.git("cat-file", "-t", f"{ref}^{{commit}}", check=False):
                return None
        result = subprocess.run(["git", "-C", str(self.path), "merge-base", "--is-ancestor", older, newer])
        return result.returncode == 0

    def between(self, old: str, new: str) -> list[Commit]:
        """The commits after ``old`` up to ``new``, oldest first, along ``new``'s first-parent line from
        ``old`` (a merge stands for its branch, as mozregression's pushlog does)."""
        first, last = self.commit(old), self.commit(new)
        if not self.is_ancestor(first.sha, last.sha):
            raise HarnessError(
                f"{first.short} is not an ancestor of {last.short} in {self.location}: "
                "commits are bisected along one line of history"
            )
        shas = self.git(
            "rev-list", "--first-parent", "--ancestry-path", "--reverse", f"{first.sha}..{last.sha}"
        ).split()
        if not shas:  # old and new on one first-parent line is the usual case; else fall back to the whole path
            shas = self.git(
                "rev-list", "--ancestry-path", "--reverse", "--topo-order", f"{first.sha}..{last.sha}"
            ).split()
        return self._log("--no-walk=unsorted", *shas) if shas else []

    def version_at(self, sha: str, package: str) -> str | None:
        for relpath in VERSION_FILES[package]:
            text = self.git("show", f"{sha}:{relpath}", check=False)
            found = VERSION_LINE.search(text)
            if found:
                return found.group(1)
        return None

    def place(self, package: str, version: str, wheel: Path | None = None) -> Placement:
        """The commit release ``package==version`` was made from (see the module docstring)."""
        for tag in (f"v{version}", version, f"{package}-{version}"):
            if self.git("rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False):
                return Placement(version, self.commit(tag), f"tag {tag}")
        files = VERSION_FILES[package]
        changed = self.git("log", "HEAD", "--format=%H", "-G", r"^__version__ = ", "--", *files).split()
        setting = [
            sha
            for sha in changed
            if self.version_at(sha, package) == version and self.version_at(f"{sha}^", package) != version
        ]
        if not setting:
            return Placement(
                version,
                None,
                f"no tag names it and no commit on {self.head_name()} sets "
                f'__version__ = "{version}" ({" or ".join(files)})',
            )
        if len(setting) == 1 and wheel is None:
            return Placement(version, self.commit(setting[0]), "the commit that sets its __version__")
        if wheel is None:
            return Placement(
                version,
                self.commit(setting[-1]),
                f"the oldest of {len(setting)} commits that set its __version__ (no wheel to compare)",
            )
        differing = {sha: self.differences(sha, wheel, package) for sha in setting}
        best = min(setting, key=lambda sha: differing[sha])
        if differing[best] == 0:
            return Placement(
                version, self.commit(best), "the commit that sets its __version__; its files equal the wheel's"
            )
        return Placement(
            version,
            self.commit(best),
            f"the commit that sets its __version__, but {differing[best]} "
            f"file(s) of the wheel differ from it: built from a later commit",
        )

    def head_name(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD", check=False).strip() or "HEAD"

    def differences(self, sha: str, wheel: Path, package: str) -> int:
        """How many of the wheel's Python files differ from ``sha``'s (line endings aside)."""
        top = packages.wheel_prefix(package)
        count = 0
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith(f"{top}/") and name.endswith(".py"):
                    text = self.git("show", f"{sha}:{name}", check=False)
                    count += text.replace("\r\n", "\n") != archive.read(name).decode().replace("\r\n", "\n")
        return count

    def requirement(self, package: str, sha: str) -> str:
        """What installs ``sha`` like a release: a direct reference pip and uv record with its commit id."""
        return f"{package} @ git+{self.url}@{sha}"


def local_path(location: str) -> Path | None:
    """The path a location names on this machine (a path or a file:// URL, relative to the checkout), or None
    for a remote URL."""
    parsed = urlparse(location)
    if parsed.scheme in ("http", "https", "ssh", "git"):
        return None
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else location)
    return path if path.is_absolute() else REPO_ROOT / path


def _local_clone(location: str) -> Path:
    """A local repository for ``location``: the clone itself, or a clone of a bundle or URL in the cache."""
    path = local_path(location)
    if path is not None and path.is_dir():
        if subprocess.run(["git", "-C", str(path), "rev-parse", "--git-dir"], capture_output=True).returncode != 0:
            raise HarnessError(f"{location} is not a git repository")
        return path
    if path is not None and not path.is_file():
        raise HarnessError(f"{location}: no such git repository or bundle")
    source = str(path) if path is not None else location
    key = hashlib.sha256(source.encode()).hexdigest()[:10]
    clone = cache_dir("git") / f"{Path(urlparse(location).path).stem or 'repo'}-{key}.git"
    stamp = path.stat().st_mtime_ns if path is not None else 0
    marker = clone / "qvl-source"
    with FileLock(f"{clone}.lock"):
        if not (marker.is_file() and marker.read_text() == f"{source} {stamp}"):
            with tempfile.TemporaryDirectory(dir=clone.parent, prefix=f".{clone.name}-") as tmp:
                fresh = Path(tmp, "repo")
                if source.endswith(ARCHIVE):
                    _unpack(Path(source), fresh)
                else:
                    cloned = subprocess.run(
                        ["git", "clone", "--quiet", "--mirror", source, str(fresh)], capture_output=True, text=True
                    )
                    if cloned.returncode != 0:
                        raise HarnessError(f"cannot clone {location}: {one_line(cloned.stderr)}")
                (fresh / "qvl-source").write_text(f"{source} {stamp}")
                shutil.rmtree(clone, ignore_errors=True)
                fresh.rename(clone)
    return clone


def _unpack(archive: Path, dest: Path) -> None:
    """A tarball of one bare repository (a shallow one carries a few commits in megabytes, where a bundle
    cannot: git refuses to clone a bundle whose oldest commit lacks its parents)."""
    with tarfile.open(archive) as tar:
        tar.extractall(dest.parent / "unpacked", filter="data")
    found = [p for p in (dest.parent / "unpacked").iterdir() if (p / "HEAD").is_file()]
    if len(found) != 1:
        raise HarnessError(f"{archive}: expected one bare git repository inside, found {len(found)}")
    found[0].rename(dest)
