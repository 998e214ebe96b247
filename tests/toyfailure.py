"""A toy known failure for tests that show a new one plugs in: a registry entry beside the real ones,
its module (a Failure subclass) and its suite, each written into a folder of the test's."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness.failures import registry

ID = "toy-failure"
MESSAGE = "toy failure reproduced"

MODULE = f'''
"""A toy failure: an unsloth-zoo release in its range raises its message."""

from harness.failures.base import Failure


class ToyFailure(Failure):
    id = "{ID}"

    def reproduce(self, release, **context):
        package, version, origin = release
        if self.entry.affects(version):
            raise RuntimeError("{MESSAGE}")
'''

SUITE = """
import pytest

from harness.failures.toy_failure import ToyFailure

FAILURE = ToyFailure()


@pytest.mark.parametrize("release", FAILURE.params())
def test_the_release_raises_no_toy_failure(release):
    FAILURE.reproduce(release)
"""


def entry(suite: str) -> str:
    return textwrap.dedent(f'''
        [[failure]]
        id = "{ID}"
        package = "unsloth-zoo"
        affected = ">=2025.1.1,<2025.3.13"
        symptom = "{MESSAGE}"
        seed = "RuntimeError: {MESSAGE}"
        description = "a toy failure of unsloth-zoo"
        evidence = "written by tests/toyfailure.py"
        found_by = "qvl-harness bisect unsloth-zoo --find-fix --bad 2025.1.3 --good 2025.3.13"
        suite = "{suite}"
    ''')


def write_registry(folder: Path, suite: str) -> Path:
    """The real registry with the toy entry after its own."""
    path = folder / "known_failures.toml"
    path.write_text(registry.REGISTRY.read_text() + entry(suite))
    return path


def write_module(folder: Path) -> Path:
    path = folder / "toy_failure.py"
    path.write_text(MODULE)
    return path


def write_suite(folder: Path) -> Path:
    path = folder / "test_toy_failure.py"
    path.write_text(SUITE)
    return path
