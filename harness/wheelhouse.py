"""Wheelhouses for air-gapped GPU runners: what a matrix cell needs that the runner lacks.

The cell's companions and the harness's own dependencies are resolved for the runner's Python
and platform with the runner's installed packages as constraints (so its CUDA torch stays), and
only what the runner does not already have is downloaded. bitsandbytes keeps only the CPU
library and the runner's CUDA one; unsloth loses its `studio/` web app. The runner then installs
with `--no-index` (see `install_commands`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from . import xrays
from .errors import HarnessError
from .matrix import load_matrix
from .paths import REPO_ROOT

# The harness's runtime dependencies on a runner (pyproject's list, plus the test extra).
HARNESS_DEPS = ["pytest>=8", "pytest-socket>=0.7", "pytest-xdist>=3", "hypothesis>=6", "filelock>=3.12",
                "numpy", "pillow", "pydicom>=3.0", "pydicom-data>=1.0", "packaging"]


RUNNER_FIXED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(path: Path) -> dict[str, str]:
    """name -> version from a `pip list --format=freeze` of the runner."""
    pins = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[_canonical(name)] = version
    if not pins:
        raise HarnessError(f"{path}: no 'name==version' lines (expected `pip list --format=freeze` output)")
    return pins


def resolve(requirements: list[str], python: str, platform: str, runner: dict[str, str]) -> dict[str, str]:
    """Pin ``requirements`` for the runner with uv.

    The runner's CUDA stack is a hard constraint; its other packages are preferences (uv prefers
    the versions already in its output file), so they are reused wherever the cell allows.
    """
    fixed = {n: v for n, v in runner.items() if RUNNER_FIXED.match(n)}
    with tempfile.TemporaryDirectory() as tmp:
        reqs, cons, out = Path(tmp, "in.txt"), Path(tmp, "constraints.txt"), Path(tmp, "out.txt")
        reqs.write_text("\n".join(requirements) + "\n")
        cons.write_text("".join(f"{n}=={v}\n" for n, v in fixed.items()))
        out.write_text("".join(f"{n}=={v}\n" for n, v in runner.items()))
        target = platform.replace("manylinux_", "x86_64-manylinux_").replace("_x86_64", "") if platform.startswith("manylinux") else platform
        cmd = ["uv", "pip", "compile", str(reqs), "--constraint", str(cons), "--output-file", str(out),
               "--python-version", python, "--python-platform", target, "--no-header", "--no-annotate", "--quiet"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        text = out.read_text()
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["uv pip compile failed"])[-1]
        raise HarnessError(f"cannot resolve the cell's packages for the runner: {last}")
    pins = {}
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[_canonical(name)] = version.split(";")[0].strip()
    return pins


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


def slim(dest: Path, cuda: str) -> None:
    for wheel in dest.glob("bitsandbytes-*.whl"):
        keep = {"libbitsandbytes_cpu.so", f"libbitsandbytes_cuda{cuda}.so"}
        _slim(wheel, lambda n: n.endswith(".so") and "libbitsandbytes_" in n and Path(n).name not in keep)
    for wheel in dest.glob("unsloth-*.whl"):
        _slim(wheel, lambda n: n.startswith("studio/") or "/studio/" in n.split(".dist-info")[0])
    # pydicom-data is 34 MB of test images; a runner needs only the ones the X-ray manifest uses.
    used = {f.source.split(":", 1)[1] for f in xrays.load_manifest() if f.source.startswith("pydicom-data:")}
    for wheel in dest.glob("pydicom_data-*.whl"):
        _slim(wheel, lambda n: n.startswith("data_store/data/") and Path(n).name not in used)


def build(cell_name: str, dest: Path, python: str, platform: str, runner_freeze: Path | None, cuda: str) -> dict:
    cell = load_matrix().cell(cell_name)
    runner = read_freeze(runner_freeze) if runner_freeze else {}
    requirements = cell.companions(torch="") + HARNESS_DEPS
    pins = resolve(requirements, python, platform, runner)
    missing = sorted(f"{n}=={v}" for n, v in pins.items() if runner.get(n) != v)
    if any(r.startswith("torch==") for r in missing):
        raise HarnessError("the cell's packages would replace the runner's torch; pass the runner's freeze with --runner")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                *[f"--platform={tag}" for tag in compatible_platforms(platform)],
                "--python-version", python, "--implementation", "cp", "--dest", str(dest)]
    result = subprocess.run(download + missing + cell.code_under_test(), capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip download failed"])[-1]
        raise HarnessError(f"cannot download wheels for {cell_name}: {last}")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest),
                            str(REPO_ROOT)], capture_output=True, text=True)
    if built.returncode != 0:
        raise HarnessError(f"cannot build the harness wheel: {(built.stderr.strip().splitlines() or ['?'])[-1]}")
    slim(dest, cuda)
    (dest / "requirements.txt").write_text("\n".join(missing + ["qvl-harness"]) + "\n")
    (dest / "code-under-test.txt").write_text("\n".join(cell.code_under_test()) + "\n")
    (dest / "cell.txt").write_text(cell.name + "\n")
    size = sum(p.stat().st_size for p in dest.glob("*.whl"))
    return {"cell": cell.name, "wheels": len(list(dest.glob("*.whl"))), "bytes": size, "missing": missing}


def install_commands(dest: str, python: str = "python3", target: str | None = None) -> list[str]:
    """The runner-side install: companions then the code under test, from the wheelhouse alone."""
    where = f" --target {target}" if target else ""
    base = f"{python} -m pip install --quiet --no-index --find-links {dest}{where}"
    return [f"{base} --no-deps -r {dest}/requirements.txt", f"{base} --no-deps -r {dest}/code-under-test.txt"]


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("wheelhouse", help="wheels a matrix cell needs on an air-gapped GPU runner")
    p.add_argument("cell")
    p.add_argument("--python", default="3.12", help="runner's Python version (default 3.12)")
    p.add_argument("--platform", default="manylinux_2_28_x86_64")
    p.add_argument("--runner", type=Path, help="`pip list --format=freeze` of the runner: what it already has")
    p.add_argument("--cuda", default="130", help="CUDA of the runner's bitsandbytes library to keep (default 130)")
    p.add_argument("--dest", type=Path, default=Path("wheelhouse"))
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    info = build(args.cell, args.dest, args.python, args.platform, args.runner, args.cuda)
    print(f"{info['wheels']} wheels, {info['bytes'] / 2**20:.1f} MiB in {args.dest} for cell {info['cell']}")
    for line in install_commands(str(args.dest)):
        print(f"  {line}")
    return 0
