"""Tiny installable wheels for tests that need real packages without the network."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def write_wheel(
    directory: Path,
    name: str,
    version: str,
    body: str = "",
    files: dict[str, str] | None = None,
    requires: list[str] = (),
) -> Path:
    """``name-version-py3-none-any.whl`` with ``name/__init__.py`` = ``body`` (plus ``files``), its
    ``Requires-Dist`` lines ``requires``, RECORD included."""
    dist = f"{name}-{version}.dist-info"
    depends = "".join(f"Requires-Dist: {r}\n" for r in requires)
    members = {
        f"{name}/__init__.py": body,
        **(files or {}),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{depends}",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    members[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in members.items():
            wheel.writestr(member, text)
    return path


def toy_index(tmp_path, monkeypatch, wheels: list[tuple[str, str, list[str]]], matrix_text: str):
    """A folder of toy wheels (name, version, requires) and a matrix.toml next to it, with the harness and uv
    caches inside ``tmp_path``: what `qvl-harness matrix --check/--resolve-canary --no-index` resolve against."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name, version, requires in wheels:
        write_wheel(folder, name, version, requires=requires)
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(matrix_text)
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return folder, matrix
