"""Where the harness keeps its files: the checkout's data and the per-user cache."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = REPO_ROOT / "fixtures"
MATRIX_FILE = REPO_ROOT / "matrix.toml"


def cache_dir(*parts: str) -> Path:
    """A directory under the harness cache (``QVL_CACHE`` or ``~/.cache/qvl-harness``), created on demand."""
    root = Path(os.environ.get("QVL_CACHE") or Path.home() / ".cache" / "qvl-harness")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
