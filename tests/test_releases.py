"""`qvl-harness releases fetch` from an empty harness cache: every release, two versions of one package included."""

from __future__ import annotations

import pytest
from toywheels import write_wheel

from harness.cli import main
from harness.releases import code as release_code

# toy releases outside releases.lock.toml: a toy wheel named like a locked release is refused (tests/test_lock.py)
VERSIONS = {"unsloth": ["1.0", "1.1"], "unsloth_zoo": ["1.0", "1.1"]}


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A wheel folder with two releases of each package under test, and an empty harness cache."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name, versions in VERSIONS.items():
        for version in versions:
            write_wheel(wheels, name, version, f"__version__ = {version!r}\n")
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "empty-cache"))
    return wheels


def test_fetch_fills_an_empty_cache_with_two_versions_of_one_package(index, capsys):
    wanted = [f"{name.replace('_', '-')}=={v}" for name, versions in VERSIONS.items() for v in versions]
    assert main(["releases", "fetch", "--no-index", "--find-links", str(index), *wanted]) == 0
    for requirement in wanted:
        package, version = requirement.split("==")
        code = release_code.from_wheel(package, version)
        assert f"__version__ = {version!r}" in code.read(f"{package.replace('-', '_')}/__init__.py")
    err = capsys.readouterr().err
    assert "[4/4]" in err and "FAILED" not in err
    # a second run finds everything cached: nothing to fetch, nothing printed but the summary
    assert main(["releases", "fetch", "--no-index", "--find-links", str(index), *wanted]) == 0
    assert "steps" not in capsys.readouterr().err


def test_a_missing_release_is_one_line_naming_it(index, capsys):
    assert (
        main(["releases", "fetch", "-q", "--no-index", "--find-links", str(index), "unsloth==1.0", "unsloth==1999.1.1"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot fetch 1 of 2 release wheel(s): unsloth==1999.1.1" in err
    assert release_code.wheel_path("unsloth", "1.0").is_file()  # the rest still arrived
    assert not list(release_code.wheel_path("unsloth", "x").parent.glob(".fetch-*"))  # no partial downloads left
