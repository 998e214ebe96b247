"""Overlay venvs: a few pinned releases layered over a base environment that has the heavy stack.

An overlay is a uv venv made from the base's interpreter, with only the pinned requirements
installed (``--no-deps``) and a ``.pth`` file that adds the base's site-packages *after* its own.
torch, transformers and the harness come from the base; the pinned release shadows the base's
copy. (``--system-site-packages`` would expose the base interpreter's packages, not a base venv's.)
Overlays live in ``cache_dir('venvs')`` under a name derived from the pins and the base, and are
reused once a marker says the install succeeded or failed, so a repeat run installs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from packaging.requirements import InvalidRequirement, Requirement

from harness.core.errors import HarnessError, one_line
from harness.core.paths import cache_dir

MARKER = "qvl-overlay.json"
WHEELHOUSE = Path("/opt/wheels")

_DESCRIBE = (
    "import json, sys, sysconfig; p = sysconfig.get_paths(); "
    "print(json.dumps({'version': sys.version.split()[0], 'executable': sys.executable, "
    "'site': list(dict.fromkeys([p['purelib'], p['platlib']]))}))"
)
_VERIFY = """
import importlib, importlib.metadata as md, json, sys
from packaging.version import Version
pins, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, wanted in pins.items():
    try:
        found = md.version(name)
    except md.PackageNotFoundError:
        sys.exit(f"{name} is not visible in the overlay")
    if Version(found) != Version(wanted):
        sys.exit(f"the overlay sees {name} {found}, not {wanted}")
for module in modules:
    try:
        importlib.import_module(module)
    except BaseException as exc:
        sys.exit(f"import {module} failed: {type(exc).__name__}: {exc}")
"""


@dataclass(frozen=True)
class Base:
    """The environment an overlay sits on: its interpreter and site-packages."""

    python: str
    version: str
    site: tuple[str, ...]

    @classmethod
    def of(cls, python: str) -> "Base":
        try:
            out = subprocess.run([python, "-c", _DESCRIBE], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise HarnessError(f"base python {python!r} does not run: {exc}") from None
        info = json.loads(out)
        return cls(python=str(Path(python).absolute()), version=info["version"], site=tuple(info["site"]))


@dataclass(frozen=True)
class Overlay:
    path: Path
    pins: dict[str, str]
    error: str | None  # why the install or the check failed; None when usable

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.path / "bin"


def parse_pins(requirements: list[str]) -> dict[str, str]:
    """``name==version`` requirements as {name: version}; anything else is a clear error."""
    pins = {}
    for text in requirements:
        try:
            req = Requirement(text)
            (spec,) = req.specifier
        except (InvalidRequirement, ValueError):
            raise HarnessError(f"{text!r}: an overlay takes exact pins like unsloth-zoo==2025.1.4") from None
        if spec.operator != "==":
            raise HarnessError(f"{text!r}: an overlay takes exact pins like unsloth-zoo==2025.1.4")
        pins[req.name] = spec.version
    return pins


class Overlays:
    """Creates or reuses overlays over ``base``; counts what it installed and reused."""

    def __init__(self, base: Base, *, find_links: list[str] = (), no_index: bool = False,
                 offline: bool = False, import_check: list[str] = ()):
        self.uv = shutil.which("uv") or _uv_from_package()
        if not self.uv:
            raise HarnessError("bisect needs uv on PATH (https://docs.astral.sh/uv/) to build probe environments")
        self.base = base
        self.index_args = [a for d in find_links for a in ("--find-links", str(d))]
        self.index_args += ["--no-index"] * no_index + ["--offline"] * offline
        # the same sources for the release wheels the suites read
        self.fetch_options = {"find_links": tuple(find_links), "no_index": no_index or offline}
        self.import_check = list(import_check)
        self.installed = 0
        self.reused = 0

    def path_for(self, pins: dict[str, str]) -> Path:
        key = json.dumps([sorted(pins.items()), self.base.python, self.base.site, self.import_check])
        first, version = next(iter(pins.items()))
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{first}-{version}")
        return cache_dir("venvs") / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def get(self, requirements: list[str]) -> Overlay:
        pins = parse_pins(requirements)
        path = self.path_for(pins)
        with FileLock(f"{path}.lock"):
            marker = path / MARKER
            if marker.is_file():
                self.reused += 1
                return Overlay(path, pins, json.loads(marker.read_text())["error"])
            self.installed += 1
            error = self._build(path, pins)
            marker.write_text(json.dumps({"pins": pins, "error": error}))
            return Overlay(path, pins, error)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        env.pop("VIRTUAL_ENV", None)
        if WHEELHOUSE.is_dir() and "UV_FIND_LINKS" not in env:
            env["UV_FIND_LINKS"] = str(WHEELHOUSE)
        return env

    def _build(self, path: Path, pins: dict[str, str]) -> str | None:
        """Create the overlay; returns why it is unusable (install or check failure), or None."""
        shutil.rmtree(path, ignore_errors=True)
        env = self._env()
        made = subprocess.run([self.uv, "venv", "--quiet", "--python", self.base.python, str(path)],
                              capture_output=True, text=True, env=env)
        if made.returncode != 0:
            raise HarnessError(f"uv venv failed for {path.name}: {one_line(made.stderr)}")
        site = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        # Lines of a .pth starting with "import" run at start-up; addsitedir also runs the base's own .pth files.
        lines = [f"import site; site.addsitedir({d!r})" for d in self.base.site]
        Path(site, "zz_qvl_base.pth").write_text("\n".join(lines) + "\n")
        reqs = [f"{n}=={v}" for n, v in pins.items()]
        install = subprocess.run([self.uv, "pip", "install", "--quiet", "--no-deps", "--python", str(path / "bin" / "python"),
                                  *self.index_args, *reqs], capture_output=True, text=True, env=env)
        if install.returncode != 0:
            return f"install failed: {one_line(install.stderr)}"
        check = subprocess.run([str(path / "bin" / "python"), "-c", _VERIFY, json.dumps(pins), json.dumps(self.import_check)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            return one_line(check.stderr)
        return None


def _uv_from_package() -> str | None:
    """The binary of the `uv` PyPI package, when it is installed but its bin dir is not on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None

