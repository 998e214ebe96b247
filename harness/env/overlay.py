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

from harness.core import auto_updates
from harness.core.errors import HarnessError, one_line
from harness.core.paths import cache_dir
from harness.env import pypi

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
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(f"{name} is not visible in the overlay")
    if wanted.startswith("git+"):  # a commit: pip and uv record it in direct_url.json (PEP 610)
        commit = json.loads(dist.read_text("direct_url.json") or "{}").get("vcs_info", {}).get("commit_id")
        if commit != wanted.rpartition("@")[2]:
            sys.exit(f"the overlay sees {name} at commit {commit}, not {wanted}")
    elif Version(dist.version) != Version(wanted):
        sys.exit(f"the overlay sees {name} {dist.version}, not {wanted}")
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
    def of(cls, python: str) -> Base:
        try:
            out = subprocess.run([python, "-c", _DESCRIBE], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise HarnessError(f"base python {python!r} does not run: {exc}") from None
        info = json.loads(out)
        # PYTHONPATH (how an air-gapped runner's wheelhouse install is found) belongs to the base too, but an
        # overlay's own packages must come first: it joins the site dirs and is left out of the overlay's env.
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        return cls(
            python=str(Path(python).absolute()),
            version=info["version"],
            site=tuple(dict.fromkeys(extra + info["site"])),
        )


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


GIT_COMMIT = re.compile(r"git\+\S+@[0-9a-f]{40}")
EXACT = "an overlay takes exact pins like unsloth-zoo==2025.1.4 or a commit, unsloth @ git+file:///CLONE@SHA40"


def python_env() -> dict[str, str]:
    """The environment for an overlay's python: without PYTHONPATH, which would shadow the overlay's pins
    (the base's PYTHONPATH entries are in the overlay's .pth, after its own site-packages), and with the
    releases' self-updates off (its import check imports them)."""
    return auto_updates.disable({k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})


def parse_pins(requirements: list[str]) -> dict[str, str]:
    """``name==version`` or ``name @ git+URL@SHA`` requirements as {name: version or URL}; else a clear error."""
    pins = {}
    for text in requirements:
        try:
            req = Requirement(text)
            if req.url:
                if not GIT_COMMIT.fullmatch(req.url):
                    raise ValueError
                pins[req.name] = req.url
                continue
            (spec,) = req.specifier
        except (InvalidRequirement, ValueError):
            raise HarnessError(f"{text!r}: {EXACT}") from None
        if spec.operator != "==":
            raise HarnessError(f"{text!r}: {EXACT}")
        pins[req.name] = spec.version
    return pins


def requirement(name: str, pin: str) -> str:
    return f"{name} @ {pin}" if pin.startswith("git+") else f"{name}=={pin}"


class Overlays:
    """Creates or reuses overlays over ``base``; counts what it installed and reused."""

    def __init__(
        self,
        base: Base,
        *,
        find_links: list[str] = (),
        no_index: bool = False,
        offline: bool = False,
        import_check: list[str] = (),
    ):
        self.uv = shutil.which("uv") or _uv_from_package()
        if not self.uv:
            raise HarnessError("bisect needs uv on PATH (https://docs.astral.sh/uv/) to build probe environments")
        self.base = base
        self.index_args = [a for d in find_links for a in ("--find-links", str(d))]
        self.index_args += ["--no-index"] * no_index + ["--offline"] * offline
        # the same sources for the release wheels the suites read; one outside the lock is checked against PyPI's digest
        self.fetch_options = {
            "find_links": tuple(find_links),
            "no_index": no_index or offline,
            "published": pypi.published_digests,
        }
        self.import_check = list(import_check)
        self.installed = 0
        self.reused = 0

    def path_for(self, pins: dict[str, str]) -> Path:
        key = json.dumps([sorted(pins.items()), self.base.python, self.base.site, self.import_check])
        first, version = next(iter(pins.items()))
        version = f"g{version[-40:-33]}" if version.startswith("git+") else version
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
        # building a commit can import it (setuptools' version = {attr = ...} falls back to importing)
        env = auto_updates.disable({**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
        env.pop("VIRTUAL_ENV", None)
        if WHEELHOUSE.is_dir() and "UV_FIND_LINKS" not in env:
            env["UV_FIND_LINKS"] = str(WHEELHOUSE)
        return env

    def _build(self, path: Path, pins: dict[str, str]) -> str | None:
        """Create the overlay; returns why it is unusable (install or check failure), or None."""
        shutil.rmtree(path, ignore_errors=True)
        env = self._env()
        made = subprocess.run(
            [self.uv, "venv", "--quiet", "--python", self.base.python, str(path)],
            capture_output=True,
            text=True,
            env=env,
        )
        if made.returncode != 0:
            raise HarnessError(f"uv venv failed for {path.name}: {one_line(made.stderr)}")
        site = subprocess.run(
            [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            env=python_env(),
        ).stdout.strip()
        # Lines of a .pth starting with "import" run at start-up; addsitedir also runs the base's own .pth files.
        lines = [f"import site; site.addsitedir({d!r})" for d in self.base.site]
        Path(site, "zz_qvl_base.pth").write_text("\n".join(lines) + "\n")
        reqs = [requirement(n, v) for n, v in pins.items()]
        install = subprocess.run(
            [
                self.uv,
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                str(path / "bin" / "python"),
                *self.index_args,
                *reqs,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if install.returncode != 0:
            return f"install failed: {one_line(install.stderr)}"
        check = subprocess.run(
            [str(path / "bin" / "python"), "-c", _VERIFY, json.dumps(pins), json.dumps(self.import_check)],
            capture_output=True,
            text=True,
            env=python_env(),
        )
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
