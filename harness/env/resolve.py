"""Resolving requirements without installing them (``uv pip compile``), for a given Python and platform.

`qvl-harness matrix --check` resolves every cell for this machine and for the GPU runner, so a cell
that cannot install fails in seconds with the conflict in one line; the wheelhouse resolves a cell
for an air-gapped runner around the packages the runner already has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.core.errors import HarnessError, one_line

# The air-gapped GPU runner the wheelhouse and the gpu checks target unless told otherwise.
RUNNER_PYTHON = "3.12"
RUNNER_PLATFORM = "manylinux_2_28_x86_64"
# This workplace's local CPU torch wheel, which uv cannot see otherwise (the toxfile passes it too).
LOCAL_WHEELS = Path("/opt/wheels")


class ResolutionError(HarnessError):
    """The requirements cannot be installed together; ``str()`` names the conflict in one line."""


def uv_binary() -> str:
    found = shutil.which("uv")
    if not found:
        try:
            from uv import find_uv_bin

            found = find_uv_bin()
        except (ImportError, FileNotFoundError):
            found = None
    if not found:
        raise HarnessError("uv is needed on PATH (pip install uv) to resolve and build environments")
    return found


def uv_platform(platform: str) -> str:
    """uv's --python-platform for a wheel platform tag (manylinux_2_28_x86_64 -> x86_64-manylinux_2_28)."""
    match = re.fullmatch(r"(manylinux_\d+_\d+)_(x86_64|aarch64)", platform)
    return f"{match.group(2)}-{match.group(1)}" if match else platform


def this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def conflict(stderr: str) -> str:
    """The heart of uv's resolver error: its first "Because X, we can conclude" clause, else one line."""
    text = " ".join(line.strip(" ╰─▶×│") for line in stderr.splitlines())
    match = re.search(r"Because (.+?), we can conclude", text)
    if match:
        return match.group(1)
    match = re.search(r"(Because .+?)(?: And because|$)", text)
    return match.group(1) if match else one_line(stderr)


def compile_pins(
    requirements: list[str],
    *,
    python: str,
    platform: str,
    constraints: dict[str, str] | None = None,
    preferences: dict[str, str] | None = None,
    no_deps: bool = False,
    only_binary: bool = False,
    find_links: tuple[str, ...] = (),
    no_index: bool = False,
) -> dict[str, str]:
    """``{canonical name: version}`` of everything ``requirements`` install on that Python and platform.

    ``constraints`` are hard pins; ``preferences`` are versions uv keeps wherever the requirements
    allow (it prefers what its output file already lists). ``only_binary``: versions with a wheel for
    that platform only (an air-gapped runner cannot build an sdist).
    """
    with tempfile.TemporaryDirectory(prefix="qvl-resolve-") as tmp:
        reqs, cons, out = Path(tmp, "in.txt"), Path(tmp, "constraints.txt"), Path(tmp, "out.txt")
        reqs.write_text("\n".join(requirements) + "\n")
        cons.write_text("".join(f"{n}=={v}\n" for n, v in (constraints or {}).items()))
        out.write_text("".join(f"{n}=={v}\n" for n, v in (preferences or {}).items()))
        cmd = [
            uv_binary(),
            "pip",
            "compile",
            str(reqs),
            "--constraint",
            str(cons),
            "--output-file",
            str(out),
            "--python-version",
            python,
            "--python-platform",
            uv_platform(platform),
            "--no-header",
            "--no-annotate",
            "--quiet",
            *(["--no-deps"] if no_deps else []),
            *(["--only-binary", ":all:"] if only_binary else []),
        ]
        for folder in [*find_links, *([LOCAL_WHEELS] if LOCAL_WHEELS.is_dir() else [])]:
            cmd += ["--find-links", str(folder)]
        if no_index:
            cmd.append("--no-index")
        result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
        text = out.read_text()
    if result.returncode != 0:
        raise ResolutionError(conflict(result.stderr))
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[canonical(name)] = version.split(";")[0].strip()
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
