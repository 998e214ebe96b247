"""Where the harness keeps its files: the checkout's data and the per-user cache."""

import os
from pathlib import Path


def _checkout_root() -> Path:
    """The qvl-harness checkout: $QVL_ROOT, else the nearest folder up from the working directory
    holding matrix.toml and fixtures/ (an installed harness run from a checkout), else the
    package's parent (an editable install)."""
    if os.environ.get("QVL_ROOT"):
        return Path(os.environ["QVL_ROOT"]).resolve()
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "matrix.toml").is_file() and (folder / "fixtures").is_dir():
            return folder
    return Path(__file__).resolve().parents[2]  # harness/core/paths.py


REPO_ROOT = _checkout_root()
FIXTURES_DIR = REPO_ROOT / "fixtures"
MATRIX_FILE = REPO_ROOT / "matrix.toml"


def cache_dir(*parts: str) -> Path:
    """A directory under the harness cache (``QVL_CACHE`` or ``~/.cache/qvl-harness``), created on demand."""
    root = Path(os.environ.get("QVL_CACHE") or Path.home() / ".cache" / "qvl-harness")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
