"""The code of a real release: the installed distribution or its wheel from PyPI, read file by file.

Suites that compare releases (the 404 mapping, the dtype-grad hook) run each release's own source
without installing it. Wheels are fetched once, outside the tests (`qvl-harness releases fetch`,
run by tox before pytest), into the cache; a test that needs one that is missing errors with the
command that fetches it.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import HarnessError
from .paths import cache_dir

WHEEL_NAMES = {"unsloth": "unsloth", "unsloth-zoo": "unsloth_zoo"}


@dataclass(frozen=True)
class ReleaseCode:
    """The files of one release of ``package`` (``unsloth`` or ``unsloth-zoo``)."""

    package: str
    version: str
    origin: str  # "installed" or the wheel's path

    def _wheel(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.origin)

    def has(self, relpath: str) -> bool:
        if self.origin == "installed":
            return _installed_root(self.package).joinpath(relpath).is_file()
        return relpath in self._wheel().namelist()

    def read(self, relpath: str) -> str:
        try:
            if self.origin == "installed":
                return _installed_root(self.package).joinpath(relpath).read_text()
            return self._wheel().read(relpath).decode()
        except (OSError, KeyError):
            raise HarnessError(f"{self.label} has no file {relpath}") from None

    @property
    def label(self) -> str:
        return f"{self.package}=={self.version}" + (" (installed)" if self.origin == "installed" else "")


def _installed_root(package: str) -> Path:
    dist = importlib.metadata.distribution(package)
    return Path(dist.locate_file(""))


def installed(package: str) -> ReleaseCode:
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise HarnessError(f"{package} is not installed in this environment") from None
    return ReleaseCode(package, version, "installed")


def wheel_path(package: str, version: str) -> Path:
    return cache_dir("wheels") / f"{WHEEL_NAMES[package]}-{version}-py3-none-any.whl"


def from_wheel(package: str, version: str) -> ReleaseCode:
    path = wheel_path(package, version)
    if not path.is_file():
        raise HarnessError(
            f"{package}=={version} is not in the release cache ({path.parent}); "
            f"run: qvl-harness releases fetch {package}=={version}"
        )
    return ReleaseCode(package, version, str(path))


def fetch(requirements: list[str]) -> list[Path]:
    """Download the wheels of ``package==version`` requirements into the cache (no deps)."""
    missing = []
    for req in requirements:
        package, _, version = req.partition("==")
        if package not in WHEEL_NAMES or not version:
            raise HarnessError(f"cannot fetch {req!r}: expected unsloth==VERSION or unsloth-zoo==VERSION")
        if not wheel_path(package, version).is_file():
            missing.append(req)
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
               "--dest", str(cache_dir("wheels")), *missing]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip download failed"])[-1]
            raise HarnessError(f"cannot fetch {', '.join(missing)}: {last}")
    return [wheel_path(*req.split("==")) for req in requirements]


def matrix_requirements() -> list[str]:
    """unsloth and unsloth-zoo releases of every matrix cell: what the cross-release suites read."""
    from .matrix import load_matrix

    reqs = []
    for cell in load_matrix().cells.values():
        reqs.extend(r for r in cell.code_under_test() if r not in reqs)
    return reqs


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser("releases", help="release code cache").add_subparsers(dest="action", required=True)
    p = parser.add_parser("fetch", help="download release wheels into the cache (default: every matrix cell's)")
    p.add_argument("requirements", nargs="*", help="unsloth==X or unsloth-zoo==Y")
    p.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args) -> int:
    paths = fetch(args.requirements or matrix_requirements())
    for path in paths:
        print(path)
    return 0
