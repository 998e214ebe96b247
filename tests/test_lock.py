"""releases.lock.toml: every read and every fetch of a release wheel checks PyPI's digest of it.

Real release wheels from the harness cache (tox runs `qvl-harness releases fetch` before pytest),
copied into a temporary cache and damaged there; toy wheels for releases outside the lock.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from toywheels import toy_index, write_wheel

from harness.cli import main
from harness.cli.env import default_releases
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT, cache_dir
from harness.env import pypi
from harness.releases import code as release_code
from harness.releases import lock

SMALL = ("unsloth-zoo", "2024.11.8")  # a locked release with a small wheel


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty harness cache holding one real locked release wheel, copied from the warm cache."""
    wheel = release_code.wheel_path(*SMALL)
    if not wheel.is_file():
        pytest.fail(f"run: qvl-harness releases fetch {SMALL[0]}=={SMALL[1]} (tox does, before pytest)")
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    shutil.copy2(wheel, cache_dir("wheels"))
    return release_code.wheel_path(*SMALL)


def test_a_locked_wheel_is_read_and_its_digest_is_pypis(cache):
    code = release_code.from_wheel(*SMALL)
    assert "unsloth_zoo/__init__.py" in code._wheel().namelist() and code.has("unsloth_zoo/__init__.py")
    pypi_digest = lock.load()[cache.name].sha256
    assert release_code.wheel_digest(*SMALL) == pypi_digest == hashlib.sha256(cache.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_cached_wheel_is_refused_on_read_in_one_line_naming_both_digests(cache, damage):
    locked = lock.load()[cache.name].sha256
    flip_a_byte(cache) if damage == "flipped byte" else cache.write_bytes(cache.read_bytes()[:-100])
    actual = hashlib.sha256(cache.read_bytes()).hexdigest()
    with pytest.raises(HarnessError) as refused:
        release_code.from_wheel(*SMALL).read("unsloth_zoo/__init__.py")
    assert str(refused.value) == (
        f"{cache} has sha256 {actual} but releases.lock.toml says {locked}: a changed or truncated wheel; "
        f"delete it and run: qvl-harness releases fetch unsloth-zoo==2024.11.8"
    )
    with pytest.raises(HarnessError, match="releases.lock.toml says"):
        release_code.requires(release_code.from_wheel(*SMALL))  # the METADATA read is checked too


def test_fetch_fails_on_a_cached_wheel_that_differs_from_the_lock(cache, tmp_path, capsys):
    """What CI runs before pytest (tox's commands_pre): a damaged cache stops the run in one line."""
    flip_a_byte(cache)
    status = main(["releases", "fetch", "-q", "--no-index", "--find-links", str(tmp_path), "unsloth-zoo==2024.11.8"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert f"{cache} has sha256 " in err and f"releases.lock.toml says {lock.load()[cache.name].sha256}" in err


def test_a_wheel_named_like_a_locked_release_is_refused_at_fetch_and_never_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    fake = write_wheel(tmp_path, "unsloth_zoo", "2024.11.8", "__version__ = 'not the release'\n")
    status = main(["releases", "fetch", "-q", "--no-index", "--find-links", str(tmp_path), "unsloth-zoo==2024.11.8"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert (
        f"unsloth-zoo==2024.11.8: {fake.name} has sha256 {lock.sha256(fake)} but releases.lock.toml says "
        f"{lock.load()[fake.name].sha256}"
    ) in err
    assert not release_code.wheel_path(*SMALL).exists()


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A toy release outside the lock, an index that has nothing (no network), and its PyPI-format release data."""
    wheels, simple, data = tmp_path / "wheels", tmp_path / "simple", tmp_path / "data"
    for folder in (wheels, simple, data):
        folder.mkdir()
    wheel = write_wheel(wheels, "unsloth", "1.0", "N = 1\n")
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip asks the empty local index, not the machine's
    monkeypatch.setenv("PIP_INDEX_URL", simple.as_uri())
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)

    def publish(digest: str) -> pypi.DirectoryIndex:
        (data / "unsloth.json").write_text(
            json.dumps(
                {
                    "releases": {
                        "1.0": [
                            {
                                "filename": wheel.name,
                                "digests": {"sha256": digest},
                                "upload_time_iso_8601": "2025-01-01T00:00:00Z",
                            }
                        ]
                    }
                }
            )
        )
        return pypi.DirectoryIndex(data)

    return wheels, wheel, publish


def test_a_release_outside_the_lock_is_checked_against_pypis_digest_and_recorded(outside):
    wheels, wheel, publish = outside
    index = publish(lock.sha256(wheel))
    [cached] = release_code.fetch(["unsloth==1.0"], published=index.digests, find_links=[str(wheels)], quiet=True)
    assert release_code.wheel_digest("unsloth", "1.0") == lock.sha256(wheel)
    assert lock.recorded(cached) == {"sha256": lock.sha256(wheel), "checked": "PyPI", "slimmed_from": None}
    flip_a_byte(cached)  # the recorded digest guards its later reads
    with pytest.raises(HarnessError, match=r"but its fetch \(PyPI\) says"):
        release_code.from_wheel("unsloth", "1.0").read("unsloth/__init__.py")


def test_a_release_outside_the_lock_that_differs_from_pypi_is_refused(outside):
    wheels, wheel, publish = outside
    index = publish("0" * 64)
    with pytest.raises(HarnessError) as refused:
        release_code.fetch(["unsloth==1.0"], published=index.digests, find_links=[str(wheels)], quiet=True)
    assert str(refused.value) == (
        f"cannot fetch 1 of 1 release wheel(s): unsloth==1.0: {wheel.name} has sha256 "
        f"{lock.sha256(wheel)} but PyPI says {'0' * 64}"
    )
    assert not release_code.wheel_path("unsloth", "1.0").exists()


def test_a_cached_wheel_no_fetch_vouched_for_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    write_wheel(cache_dir("wheels"), "unsloth", "1.0")
    with pytest.raises(
        HarnessError,
        match=r"outside releases.lock.toml and no fetch recorded its digest; delete it "
        r"and run: qvl-harness releases fetch unsloth==1.0$",
    ):
        release_code.from_wheel("unsloth", "1.0").has("unsloth/__init__.py")


def test_resolve_canary_write_locks_the_releases_it_moves_the_canary_to(tmp_path, monkeypatch, capsys):
    folder, matrix = toy_index(
        tmp_path,
        monkeypatch,
        [
            ("unsloth", "1.0", []),
            ("unsloth", "1.1", []),
            ("unsloth_zoo", "1.0", []),
            ("unsloth_zoo", "1.1", []),
            ("transformers", "1.0", []),
            ("peft", "1.0", []),
            ("trl", "1.0", []),
            ("bitsandbytes", "1.0", []),
            ("torch", "1.0.0", []),
        ],
        '[defaults]\ntorch = "1.0.0"\nbitsandbytes = "1.0"\n\n[cells.canary]\nrole = "canary"\nunsloth = "1.0"\n'
        'unsloth_zoo = "1.0"\ntransformers = "1.0"\npeft = "1.0"\ntrl = "1.0"\n',
    )
    assert (
        main(
            ["matrix", "--file", str(matrix), "--resolve-canary", "--write", "--no-index", "--find-links", str(folder)]
        )
        == 0
    )
    assert "their release wheels' digests into releases.lock.toml" in capsys.readouterr().out
    written = lock.load(matrix.parent / lock.LOCK_NAME)
    assert {(e.name, e.version, e.sha256) for e in written.values()} == {
        ("unsloth", "1.1", lock.sha256(folder / "unsloth-1.1-py3-none-any.whl")),
        ("unsloth-zoo", "1.1", lock.sha256(folder / "unsloth_zoo-1.1-py3-none-any.whl")),
    }


def releases_named_in(folder: Path) -> set[str]:
    """Every from_wheel("PACKAGE", "VERSION") of a real release (unsloth's versions are dates; toy ones are 1.0)
    with literal arguments in the Python files of ``folder``."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "from_wheel"
                and len(node.args) == 2
                and all(isinstance(a, ast.Constant) for a in node.args)
                and node.args[1].value.startswith("20")
            ):
                found.add(f"{node.args[0].value}=={node.args[1].value}")
    return found


def test_the_lock_covers_every_release_the_matrix_suites_and_tests_read():
    locked = {f"{e.name}=={e.version}" for e in lock.load().values()}
    read = set(default_releases()) | releases_named_in(REPO_ROOT / "tests") | releases_named_in(REPO_ROOT / "suites")
    assert len(read) > 15 and not read - locked, (
        f"not in releases.lock.toml: {sorted(read - locked)}; run: qvl-harness releases fetch --update-lock"
    )
    for entry in lock.load().values():
        assert entry.file == release_code.wheel_path(entry.name, entry.version).name and len(entry.sha256) == 64
