"""Wheelhouses for air-gapped GPU runners: everything a matrix cell's run needs that the runner lacks.

A runner whose torch cannot host the cell's releases (the cell's `gpu` declaration) is refused in
one line. Otherwise the cell's companions and the harness's own dependencies are resolved for the
runner's Python and platform with the runner's installed packages as constraints (so its CUDA
torch stays), and only what the runner does not already have is downloaded, with the release
wheels the cross-release suites read (``releases/``, less the code under test, read from its own copy).
bitsandbytes keeps only the CPU library and the runner's CUDA one; unsloth loses its `studio/` web app.
``manifest.json`` holds the sha256 of
every file (a slimmed wheel's PyPI original beside it) and the requirements files pin every wheel,
the harness's own included, with ``--hash``: `.ci/gpu-offline` checks the manifest, installs it all
with `--no-index --require-hashes` and seeds an empty release cache from ``releases/``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

from harness.core import schema
from harness.core.errors import HarnessError, one_line
from harness.core.paths import REPO_ROOT
from harness.core.progress import Progress
from harness.env import manifest, resolve
from harness.env.matrix import Cell, load_matrix
from harness.releases import lock

RUNNER_FIXED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
RELEASES_DIR = "releases"  # the release wheels the cross-release suites read, for `releases fetch --no-index`


def harness_requirements() -> list[str]:
    """The harness's runtime dependencies on a runner: pyproject's list and the test extra (tox aside)."""
    project = schema.load_toml(REPO_ROOT / "pyproject.toml", "the harness's pyproject.toml")["project"]
    test = [r for r in project["optional-dependencies"]["test"] if not Requirement(r).name.startswith("tox")]
    return [r for r in project["dependencies"] + test if Requirement(r).name != "pip"]


def read_freeze(path: Path) -> dict[str, str]:
    """name -> version from a `pip list --format=freeze` of the runner."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise HarnessError(f"cannot read the runner's freeze {path}: {exc.strerror}") from None
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[resolve.canonical(name)] = version
    if not pins:
        raise HarnessError(f"{path}: no 'name==version' lines (expected `pip list --format=freeze` output)")
    return pins


def refuse_unfit_runner(cell: Cell, runner: dict[str, str]) -> None:
    """One line when the runner's torch cannot host the cell's releases (their era's torch and xformers)."""
    torch = runner.get("torch")
    if torch and not cell.gpu.admits(torch):
        raise HarnessError(
            f"cell {cell.name} needs {cell.gpu.describe()} on a GPU (unsloth {cell.pins['unsloth']}'s own extras) "
            f"but the runner has torch {torch}: build a runner image with that torch, or on a networked runner "
            f"run QVL_CELL={cell.name} tox -e gpu"
        )


def resolve_for_runner(requirements: list[str], python: str, platform: str, runner: dict[str, str]) -> dict[str, str]:
    """Pin ``requirements`` for the runner: its CUDA stack is fixed, its other packages are kept
    wherever the cell allows."""
    fixed = {n: v for n, v in runner.items() if RUNNER_FIXED.match(n)}
    try:
        return resolve.compile_pins(
            requirements, python=python, platform=platform, constraints=fixed, preferences=runner, only_binary=True
        )
    except resolve.ResolutionError as exc:
        raise HarnessError(f"cannot resolve the cell's packages for the runner: {exc}") from None


def compatible_platforms(platform: str) -> list[str]:
    """pip's --platform matches one tag exactly; a manylinux_2_X runner also takes older glibc tags."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if not match:
        return [platform]
    glibc, arch = int(match.group(1)), match.group(2)
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags = [f"manylinux_2_{v}_{arch}" for v in range(glibc, 4, -1)]
    return tags + [f"{legacy[v]}_{arch}" for v in legacy if v <= glibc]


def _slim(wheel: Path, drop) -> None:
    """Rewrite ``wheel`` without the members ``drop(name)`` selects (RECORD rewritten to match)."""
    tmp = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if drop(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = "".join(
                    line + "\n" for line in data.decode().splitlines() if not drop(line.split(",")[0])
                ).encode()
            dst.writestr(item, data)
    tmp.replace(wheel)


def slim(dest: Path, cuda: str, data_files: set[str], source_files: set[str]) -> None:
    for wheel in dest.glob("bitsandbytes-*.whl"):
        keep = {"libbitsandbytes_cpu.so", f"libbitsandbytes_cuda{cuda}.so"}
        _slim(wheel, lambda n, keep=keep: n.endswith(".so") and "libbitsandbytes_" in n and Path(n).name not in keep)
    for wheel in [*dest.glob("unsloth-*.whl"), *dest.glob(f"{RELEASES_DIR}/unsloth-*.whl")]:
        _slim(wheel, lambda n: n.startswith("studio/") or "/studio/" in n.split(".dist-info")[0])
    # a transformers wheel in releases/ is read for a few modeling files (the families' declarations), not installed
    for wheel in dest.glob(f"{RELEASES_DIR}/transformers-*.whl"):
        _slim(wheel, lambda n: not (n in source_files or ".dist-info/" in n))
    # pydicom-data is 34 MB of test images; a runner needs only the ones the X-ray manifest uses.
    for wheel in dest.glob("pydicom_data-*.whl"):
        _slim(wheel, lambda n: n.startswith("data_store/data/") and Path(n).name not in data_files)


def build(
    cell_name: str,
    dest: Path,
    python: str,
    platform: str,
    runner_freeze: Path | None,
    cuda: str,
    *,
    release_wheels,
    data_files: set[str],
    source_files: set[str],
    quiet: bool | None = None,
) -> dict:
    """Build the wheelhouse; ``release_wheels()`` gives the release wheels the suites read (called once the
    runner is known to fit), ``data_files`` the pydicom-data files the X-ray fixtures use, ``source_files`` the
    files read from the transformers release wheels."""
    cell = load_matrix().cell(cell_name)
    runner = read_freeze(runner_freeze) if runner_freeze else {}
    refuse_unfit_runner(cell, runner)
    report = Progress(4, f"building the wheelhouse of cell {cell.name}", quiet=quiet)
    if cell.sources:
        raise HarnessError(
            f"cell {cell_name} pins {' and '.join(cell.sources)} to a commit; a wheelhouse carries releases "
            f"(run that cell on a GPU runner with the network: QVL_CELL={cell_name} tox -e gpu)"
        )
    pins = resolve_for_runner(cell.gpu_requirements() + harness_requirements(), python, platform, runner)
    missing = sorted(f"{n}=={v}" for n, v in pins.items() if runner.get(n) != v)
    if any(r.startswith("torch==") for r in missing):
        raise HarnessError(
            "the cell's packages would replace the runner's torch; pass the runner's freeze with --runner"
        )
    if dest.exists():
        shutil.rmtree(dest)
    (dest / RELEASES_DIR).mkdir(parents=True)
    download = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        *[f"--platform={tag}" for tag in compatible_platforms(platform)],
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--dest",
        str(dest),
    ]
    report.step("resolved for the runner", f"{len(missing)} of {len(pins)} packages missing there")
    result = subprocess.run(download + missing + cell.code_under_test(), capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(f"cannot download wheels for {cell_name}: {one_line(result.stderr)}")
    report.step("downloaded", f"{len(missing) + 2} wheels")
    for wheel in release_wheels():
        if not (dest / wheel.name).exists():  # the code under test is read from its installed wheel's copy
            shutil.copy2(wheel, dest / RELEASES_DIR / wheel.name)
    report.step("release wheels the suites read", str(len(list((dest / RELEASES_DIR).glob("*.whl")))))
    # PyPI's digests, before slimming: pip checked each download against the index's, fetch each release wheel
    originals = {p.relative_to(dest).as_posix(): lock.sha256(p) for p in _wheels(dest)}
    _refuse_unlocked_code(dest, originals)
    build_harness_wheel(dest)
    slim(dest, cuda, data_files, source_files)
    report.step("harness wheel built, wheels slimmed")
    report.finish()
    seal(dest, cell.name, missing, cell.code_under_test(), originals)
    wheels = _wheels(dest)
    return {
        "cell": cell.name,
        "wheels": len(wheels),
        "bytes": sum(p.stat().st_size for p in wheels),
        "missing": missing,
    }


def _wheels(dest: Path) -> list[Path]:
    return [*dest.glob("*.whl"), *dest.glob(f"{RELEASES_DIR}/*.whl")]


def _refuse_unlocked_code(dest: Path, originals: dict[str, str]) -> None:
    """The code under test that pip downloaded must be the locked bytes (the release wheels were checked by fetch)."""
    locked = lock.load()
    for rel, digest in originals.items():
        entry = locked.get(rel)
        if entry and entry.sha256 != digest:
            raise HarnessError(f"downloaded {dest / rel} has sha256 {digest} but {lock.LOCK_NAME} says {entry.sha256}")


def seal(dest: Path, cell: str, missing: list[str], code_under_test: list[str], originals: dict[str, str]) -> None:
    """The requirements files, every wheel pinned with its digest (the harness's own wheel ``==`` its version),
    then the manifest of every file (``originals``: relpath -> PyPI's digest, taken before slimming)."""
    by_name = {resolve.canonical(parse_wheel_filename(p.name)[0]): p for p in dest.glob("*.whl")}
    harness_pin = f"qvl-harness=={parse_wheel_filename(by_name['qvl-harness'].name)[1]}"
    (dest / "requirements.txt").write_text("".join(_hashed(r, by_name) for r in [*missing, harness_pin]))
    (dest / "code-under-test.txt").write_text("".join(_hashed(r, by_name) for r in code_under_test))
    (dest / "cell.txt").write_text(cell + "\n")
    manifest.write(dest, originals)


def _hashed(requirement: str, by_name: dict[str, Path]) -> str:
    """A requirements line pip's --require-hashes takes: the pin and the digest of the file the wheelhouse holds."""
    wheel = by_name[resolve.canonical(Requirement(requirement).name)]
    return f"{requirement} --hash=sha256:{lock.sha256(wheel)}\n"


def build_harness_wheel(dest: Path) -> None:
    """The harness's own wheel, built from a copy of its sources (setuptools writes build/ beside them)."""
    with tempfile.TemporaryDirectory(prefix="qvl-harness-src-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO_ROOT / name, tmp)
        shutil.copytree(REPO_ROOT / "harness", Path(tmp, "harness"), ignore=shutil.ignore_patterns("__pycache__"))
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), tmp],
            capture_output=True,
            text=True,
        )
    if built.returncode != 0:
        raise HarnessError(f"cannot build the harness wheel: {one_line(built.stderr)}")
