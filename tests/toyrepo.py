"""A small real git repository of a toy ``unsloth``: installable from any commit without the network (its
build backend lives in the tree), with a known bad commit in its history."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

T0 = datetime(2025, 1, 1, 12, tzinfo=timezone.utc)

PYPROJECT = """[build-system]
requires = []
build-backend = "toy_backend"
backend-path = ["."]

[project]
name = "unsloth"
dynamic = ["version"]
"""

# A PEP 517 backend that zips unsloth/ into a wheel named after unsloth/models/_utils.py's __version__.
BACKEND = """import base64, hashlib, pathlib, re, zipfile

def _wheel(directory, name="unsloth"):
    version = re.search(r'__version__ = "([^"]+)"', pathlib.Path("unsloth/models/_utils.py").read_text()).group(1)
    dist = f"{name}-{version}.dist-info"
    members = {p.as_posix(): p.read_text() for p in sorted(pathlib.Path("unsloth").rglob("*.py"))}
    members[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n"
    members[f"{dist}/WHEEL"] = "Wheel-Version: 1.0\\nGenerator: toy\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    digest = lambda t: base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()
    record = [f"{p},sha256={digest(t)},{len(t.encode())}" for p, t in members.items()]
    members[f"{dist}/RECORD"] = "\\n".join(record + [f"{dist}/RECORD,,"]) + "\\n"
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(pathlib.Path(directory, filename), "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
    return filename

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory)
"""

# (subject, files changed): 1.0 is released from the first commit, the fourth breaks it, 1.1 from the last.
HISTORY = [
    ("Release 1.0", {"unsloth/models/_utils.py": '__version__ = "1.0"\n', "unsloth/flag.py": "BROKEN = False\n"}),
    ("Docs", {"README.md": "toy\n"}),
    ("Refactor the loader", {"unsloth/loader.py": "def load():\n    return 1\n"}),
    ("Map the 72B name to the dynamic repo", {"unsloth/flag.py": "BROKEN = True\n"}),
    ("Tests", {"tests.txt": "more\n"}),
    ("Typo", {"README.md": "toy repo\n"}),
    ("Release 1.1", {"unsloth/models/_utils.py": '__version__ = "1.1"\n'}),
]
FIRST_BAD = 3


def git(repo: Path, *args: str, when: datetime | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "qvl",
        "GIT_AUTHOR_EMAIL": "qvl@example.org",
        "GIT_COMMITTER_NAME": "qvl",
        "GIT_COMMITTER_EMAIL": "qvl@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    if when:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = when.isoformat()
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def make_repo(path: Path) -> list[str]:
    """The toy history in ``path``; the commit ids, oldest first."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    files = {"pyproject.toml": PYPROJECT, "toy_backend.py": BACKEND, "unsloth/__init__.py": ""}
    shas = []
    for day, (subject, changed) in enumerate(HISTORY):
        files.update(changed)
        for relpath, text in files.items():
            (path / relpath).parent.mkdir(parents=True, exist_ok=True)
            (path / relpath).write_text(text)
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", subject, when=T0 + timedelta(days=day))
        shas.append(git(path, "rev-parse", "HEAD"))
    return shas


def release_files(version: str, broken: bool) -> dict[str, str]:
    """The files of the toy release wheels, as the commits that set each version have them."""
    return {
        "unsloth/models/_utils.py": f'__version__ = "{version}"\n',
        "unsloth/flag.py": f"BROKEN = {broken}\n",
        **({"unsloth/loader.py": "def load():\n    return 1\n"} if version != "1.0" else {}),
    }
