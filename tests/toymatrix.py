"""A matrix of one toy cell that pins what this environment has, for pytest runs of toy suites.

The plugin checks a named cell's pins against the installed stack, so a toy cell must pin the versions
installed here (a pin whose package is absent is not compared: the fallback version is never checked).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

FALLBACK = {"unsloth": "2025.1.5", "unsloth_zoo": "2025.1.3"}


def installed(package: str, fallback: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return fallback


def write(folder: Path, cell: str) -> Path:
    pins = {
        **{key: installed(key.replace("_", "-"), version) for key, version in FALLBACK.items()},
        "transformers": metadata.version("transformers"),
    }
    matrix = folder / "matrix.toml"
    matrix.write_text(f"[cells.{cell}]\n" + "".join(f'{key} = "{version}"\n' for key, version in pins.items()))
    return matrix
