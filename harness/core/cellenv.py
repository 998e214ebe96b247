"""Commands that run on the stack under test (torch, transformers, ...) say where to run them.

The harness's own venv has no stack (it is not a dependency); a matrix cell's tox env has one.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys

from harness.core import packages
from harness.core.errors import HarnessError

# import names of the stack's packages (PyPI names differ by '-'), and what cells install beside them
STACK_MODULES = frozenset({p.replace("-", "_") for p in packages.STACK} | {"xformers", "triton", "torchvision"})
EXAMPLE_CELL = "canary"
NEEDED = ("torch", "transformers")  # what every suite and stack-bound command imports


def missing(modules: tuple[str, ...] = NEEDED) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def where_to_run(argv: list[str]) -> str:
    """How to run ``qvl-harness ARGV`` in a cell's environment instead."""
    command = shlex.join(["qvl-harness", *argv])
    return (
        f"run it in a cell env: tox -e cell-{EXAMPLE_CELL} --notest, then tox exec -e cell-{EXAMPLE_CELL} -- "
        f"{command} (any cell of `qvl-harness matrix`)"
    )


def needs_stack(command: str, argv: list[str], modules: tuple[str, ...] = NEEDED) -> None:
    """Refuse ``qvl-harness COMMAND`` in one line, before any work, when ``modules`` are not installed here."""
    absent = missing(modules)
    if absent:
        raise HarnessError(
            f"{command} needs the stack under test "
            f"({', '.join(absent)} not installed in {sys.prefix}); {where_to_run(argv or command.split())}"
        )


def missing_stack(exc: ModuleNotFoundError, argv: list[str]) -> str | None:
    """The one line for a stack module found missing mid-command, or None when ``exc`` is not about the stack."""
    top = (exc.name or "").split(".")[0]
    if top not in STACK_MODULES:
        return None
    return f"{top} is not installed in {sys.prefix} (it is the stack under test); {where_to_run(argv)}"
