"""Releases must not update themselves under test: unsloth 2025.3.15's ``__init__`` runs
``pip install --upgrade unsloth_zoo`` when the installed zoo is older than 2025.3.13, unless
UNSLOTH_DISABLE_AUTO_UPDATES=1. Every process the harness starts that imports or runs a release gets it
from here (tox envs, the CLI, the pytest plugin, overlays and the probes that inherit their environment).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

NAME = "UNSLOTH_DISABLE_AUTO_UPDATES"
VALUE = "1"


def disable(environ: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Set the switch in ``environ`` (this process's environment by default) and return it."""
    environ[NAME] = VALUE
    return environ
