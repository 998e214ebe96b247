"""A wheelhouse's manifest and hashed requirements: a changed or truncated wheel stops the runner before
anything is installed. Real pip with --require-hashes; a real locked release wheel slimmed as the
wheelhouse slims it, seeded into an empty release cache as `.ci/gpu-offline` does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from toywheels import write_wheel

from harness.cli import main
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT
from harness.env import manifest, wheelhouse
from harness.families import registry as families
from harness.families.base import modeling_file
from harness.releases import code as release_code
from harness.releases import lock

SLIMMED = ("unsloth", "2026.10.7")  # its wheel carries studio/, which the wheelhouse drops
SOURCE = ("transformers", "4.45.0")  # read for the families' modeling files only, which is all the wheelhouse keeps
ZOO = ("unsloth-zoo", "2024.11.8")


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A wheelhouse as `qvl-harness wheelhouse` leaves it: a toy companion, a toy harness wheel, a real
    release at the root and a real unsloth in releases/, slimmed, sealed with its requirements and manifest."""
    for release in (SLIMMED, ZOO, SOURCE):
        if not release_code.wheel_path(*release).is_file():
            pytest.fail(f"run: qvl-harness releases fetch {'=='.join(release)} (tox does, before pytest)")
    dest = tmp_path_factory.mktemp("wh") / "wh"
    (dest / wheelhouse.RELEASES_DIR).mkdir(parents=True)
    write_wheel(dest, "qvltoy", "1.0", "N = 1\n")
    write_wheel(dest, "qvl_harness", "0.1.0")
    shutil.copy2(release_code.wheel_path(*ZOO), dest)
    shutil.copy2(release_code.wheel_path(*SLIMMED), dest / wheelhouse.RELEASES_DIR)
    shutil.copy2(release_code.wheel_path(*SOURCE), dest / wheelhouse.RELEASES_DIR)
    # PyPI's digests before slimming; a runner's cache holds the slimmed copy, so the lock says the original's
    locked = lock.load()
    originals = {
        p.relative_to(dest).as_posix(): locked[p.name].sha256 if p.name in locked else lock.sha256(p)
        for p in wheelhouse._wheels(dest)
    }
    wheelhouse.slim(dest, "130", set(), families.source_files())
    wheelhouse.seal(dest, "canary", ["qvltoy==1.0"], ["unsloth-zoo==2024.11.8"], originals)
    return dest


@pytest.fixture
def wh(built, tmp_path):
    """A fresh copy of the wheelhouse, to damage."""
    return Path(shutil.copytree(built, tmp_path / "wh"))


def pip_install(wh: Path, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--require-hashes",
            "--no-deps",
            "--find-links",
            str(wh),
            "--target",
            str(target),
            "-r",
            str(wh / "requirements.txt"),
            "-r",
            str(wh / "code-under-test.txt"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )


def test_every_file_is_in_the_manifest_and_every_requirement_is_pinned_with_its_digest(wh):
    files = json.loads((wh / manifest.MANIFEST).read_text())["files"]
    held = {p.relative_to(wh).as_posix() for p in wh.rglob("*") if p.is_file()}
    assert set(files) == held - {"manifest.json"}
    slim = files[f"releases/unsloth-{SLIMMED[1]}-py3-none-any.whl"]  # by its new digest, PyPI's original beside it
    assert slim["pypi_sha256"] == lock.load()[f"unsloth-{SLIMMED[1]}-py3-none-any.whl"].sha256 != slim["sha256"]
    assert "pypi_sha256" not in files["qvltoy-1.0-py3-none-any.whl"]
    requirements = (wh / "requirements.txt").read_text().splitlines()
    toy, harness = wh / "qvltoy-1.0-py3-none-any.whl", wh / "qvl_harness-0.1.0-py3-none-any.whl"
    assert requirements == [
        f"qvltoy==1.0 --hash=sha256:{lock.sha256(toy)}",
        f"qvl-harness==0.1.0 --hash=sha256:{lock.sha256(harness)}",
    ]
    assert manifest.check(wh) == len(files)


def test_a_sealed_wheelhouse_installs_with_require_hashes(wh, tmp_path):
    done = pip_install(wh, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "qvltoy" / "__init__.py").is_file() and (tmp_path / "site" / "unsloth_zoo").is_dir()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_wheelhouse_wheel_is_refused_by_the_manifest_and_by_pip(wh, tmp_path, damage):
    wheel = wh / "qvltoy-1.0-py3-none-any.whl"
    listed = lock.sha256(wheel)
    flip_a_byte(wheel) if damage == "flipped byte" else wheel.write_bytes(wheel.read_bytes()[:-40])
    with pytest.raises(HarnessError) as refused:
        manifest.check(wh)
    assert str(refused.value) == (
        f"wheelhouse file {wheel} has sha256 {lock.sha256(wheel)} but its manifest says "
        f"{listed}: changed or truncated on the way; copy the wheelhouse again"
    )
    done = pip_install(wh, tmp_path / "site")
    assert done.returncode != 0 and "DO NOT MATCH THE HASHES" in done.stderr
    assert not (tmp_path / "site" / "qvltoy").exists()


def test_gpu_offline_stops_a_tampered_wheelhouse_before_installing_in_one_line(wh, tmp_path):
    flip_a_byte(wh / "unsloth_zoo-2024.11.8-py3-none-any.whl")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "QVL_SITE": str(tmp_path / "site"),
        "QVL_CACHE": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [str(REPO_ROOT / ".ci" / "gpu-offline"), str(wh), "tests"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("qvl-harness: error: wheelhouse file ")
    assert "unsloth_zoo-2024.11.8-py3-none-any.whl has sha256 " in done.stderr
    assert not (tmp_path / "site").exists()  # nothing installed


def test_an_unlisted_or_missing_file_is_refused(wh):
    (wh / "stowaway-1.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(HarnessError, match="holds stowaway-1.0-py3-none-any.whl, which its manifest does not list"):
        manifest.check(wh)
    (wh / "stowaway-1.0-py3-none-any.whl").unlink()
    (wh / "cell.txt").unlink()
    with pytest.raises(HarnessError, match="lacks cell.txt, which its manifest lists"):
        manifest.check(wh)


def test_a_transformers_source_wheel_keeps_only_the_families_modeling_files(wh, tmp_path, monkeypatch):
    """The families' declarations are checked against its source on the runner too, from a wheel of a few kB."""
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    assert seed(wh, "--manifest", str(wh / manifest.MANIFEST), release="==".join(SOURCE)) == 0
    code = release_code.from_wheel(*SOURCE)
    with zipfile.ZipFile(code.origin) as wheel:
        kept = {n for n in wheel.namelist() if ".dist-info/" not in n}
    assert kept and kept <= families.source_files(), sorted(kept - families.source_files())[:5]
    assert "pixel_values.type(self.visual.get_dtype())" in code.read(modeling_file("qwen2_vl"))


def seed(wh: Path, *extra: str, release: str = "==".join(SLIMMED)) -> int:
    """What `.ci/gpu-offline` does on the runner: the release cache from the wheelhouse's releases/."""
    return main(
        [
            "releases",
            "fetch",
            "-q",
            "--no-index",
            "--find-links",
            str(wh / wheelhouse.RELEASES_DIR),
            *extra,
            release,
        ]
    )


def test_the_runner_cache_accepts_the_slimmed_release_its_manifest_names_with_the_locked_digest(
    wh, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    slimmed = wh / wheelhouse.RELEASES_DIR / f"unsloth-{SLIMMED[1]}-py3-none-any.whl"
    assert seed(wh) == 2  # without the manifest it is not the locked wheel
    assert f"has sha256 {lock.sha256(slimmed)} but releases.lock.toml says" in capsys.readouterr().err
    assert seed(wh, "--manifest", str(wh / manifest.MANIFEST)) == 0
    code = release_code.from_wheel(*SLIMMED)
    assert code.has("unsloth/__init__.py") and not code.has("studio/__init__.py")
    assert release_code.wheel_digest(*SLIMMED) == lock.sha256(slimmed)


def test_a_manifest_naming_another_original_is_not_accepted(wh, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    path = wh / manifest.MANIFEST
    listed = json.loads(path.read_text())
    listed["files"][f"releases/unsloth-{SLIMMED[1]}-py3-none-any.whl"]["pypi_sha256"] = "0" * 64
    path.write_text(json.dumps(listed))
    assert seed(wh, "--manifest", str(path)) == 2
    assert "releases.lock.toml says" in capsys.readouterr().err
