"""Whether a pytest run asked for the harness.

The plugin is a pytest11 entry point, so pytest loads it in every run of a venv that has the harness
installed; a run of another project must go on as if it were not there. A run asks for the harness
when its rootdir is a harness checkout, when it names a cell (``--cell``) or when it loads the plugin
by name (``-p harness.pytest.plugin``, what the harness's own pytester runs do).
"""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGIN = "harness.pytest.plugin"


def is_checkout(folder: Path) -> bool:
    return (folder / "matrix.toml").is_file() and (folder / "suites").is_dir()


def asked_for(config: pytest.Config) -> bool:
    return (
        is_checkout(config.rootpath)
        or config.getoption("--cell") is not None
        or PLUGIN in (config.getoption("plugins") or [])
    )
