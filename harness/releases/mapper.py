"""Run a release's own model-name mapping (`get_model_name`) without importing the release.

Old unsloth releases cannot be imported on a machine without a GPU, but their name mapping is
plain Python: `unsloth/models/mapper.py` (dicts, no imports) and `get_model_name` in
`loader_utils.py` (from 2024.11.8) or `loader.py` (before). The sandbox executes mapper.py, then the
top-level statements of the loader file that `get_model_name` depends on, unmodified. The release's
run-time fetch of a newer mapper from GitHub goes through real `requests`, refused by
``loopback_only``; the outcome of that attempt is recorded. The loader's
``from transformers import __version__`` is answered without importing transformers: the installed
version, or where none is installed (the harness's own venv) the lowest the release's Requires-Dist
admits, so the mapping runs anywhere.
"""

from __future__ import annotations

import importlib.metadata
import types
from dataclasses import dataclass, field

from packaging.version import Version

from harness.core.errors import HarnessError
from harness.core.loopback import loopback_only
from harness.releases import code as release_code
from harness.releases.code import ReleaseCode
from harness.releases.sandbox import Sandbox

LOADER_FILES = ("unsloth/models/loader_utils.py", "unsloth/models/loader.py")
REAL_IMPORTS = {"packaging", "requests", "huggingface_hub"}
MAPPER_DICTS = ("INT_TO_FLOAT_MAPPER", "FLOAT_TO_INT_MAPPER", "MAP_TO_UNSLOTH_16bit")


@dataclass
class MappingRun:
    """The outcome of one get_model_name call, with what it tried to reach on the network."""

    release: str
    model_name: str
    load_in_4bit: bool
    resolved: str | None = None
    error: str | None = None
    blocked_connections: list[str] = field(default_factory=list)


def transformers_version_for(code: ReleaseCode) -> str:
    """The transformers version the release's loader compares against: the installed one, else the lowest
    its Requires-Dist admits (the loaders only test a floor such as ``>= 4.37``)."""
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        pass
    declared = release_code.requires(code) if code.commit() is None else []  # a commit has no wheel METADATA
    floors = [
        Version(s.version)
        for r in declared
        if r.name == "transformers" and not r.marker
        for s in r.specifier
        if s.operator in (">=", "==")
    ]
    if not floors:
        raise HarnessError(
            f"{code.label} declares no transformers version and none is installed: run its mapper in a "
            "cell env (tox -e cell-NAME --notest, then tox exec -e cell-NAME -- ...)"
        )
    return str(max(floors))


def _transformers_stand_in(version: str):
    """``from transformers import __version__`` answered with ``version``, without importing transformers."""

    def special(name: str, fromlist):
        if name == "transformers" and list(fromlist or ()) == ["__version__"]:
            return types.SimpleNamespace(__version__=version)
        return None

    return special


class ReleaseMapper:
    """A release's own ``get_model_name``, executed in isolation from its source files."""

    def __init__(self, code: ReleaseCode):
        if code.package != "unsloth":
            raise HarnessError(f"name mapping lives in unsloth, not {code.package}")
        self.code = code
        self.transformers_version = transformers_version_for(code)
        # Only the mapper of the release's own modules runs; outside it, the standard library and
        # REAL_IMPORTS are real and anything else (torch, unsloth_zoo, ...) is a stand-in.
        self.sandbox = Sandbox(
            code,
            "unsloth",
            run_own=lambda dotted: dotted.rsplit(".", 1)[-1] == "mapper",
            real=lambda name: name.split(".")[0] in REAL_IMPORTS,
            special=_transformers_stand_in(self.transformers_version),
        )
        self.mapper = self.sandbox.module("models.mapper")
        loader = next((f for f in LOADER_FILES if code.has(f) and "def get_model_name" in code.read(f)), None)
        if loader is None:
            raise HarnessError(f"{code.label} has no get_model_name in {' or '.join(LOADER_FILES)}")
        self.loader_file = loader
        self.namespace = self.sandbox.closure(loader, "get_model_name")
        self.setup_errors: list[str] = self.namespace["__sandbox_errors__"]

    def resolve(self, model_name: str, load_in_4bit: bool) -> MappingRun:
        run = MappingRun(self.code.label, model_name, load_in_4bit)
        with loopback_only() as blocked:
            try:
                run.resolved = self.namespace["get_model_name"](model_name=model_name, load_in_4bit=load_in_4bit)
            except HarnessError:
                raise
            except Exception as exc:  # noqa: BLE001 - the release's own failure is the result
                run.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        run.blocked_connections = list(blocked)
        return run

    def retarget(self, edits: dict[str, str]) -> int:
        """Point the mapper's entries whose target is a key of ``edits`` (any case) at its value instead,
        in the dicts get_model_name reads; returns how many entries changed."""
        wanted = {old.lower(): new for old, new in edits.items()}
        changed = 0
        for attr in MAPPER_DICTS:
            table = getattr(self.mapper, attr, {})
            for key, value in table.items():
                if isinstance(value, str) and value.lower() in wanted:
                    table[key] = wanted[value.lower()]
                    changed += 1
        if not changed:
            raise HarnessError(f"{self.code.label}: no mapper entry targets {', '.join(edits)}")
        return changed

    def mapper_names(self) -> list[str]:
        """Every model name the release's mapper knows (keys and values of its name dicts)."""
        names: list[str] = []
        for attr in MAPPER_DICTS:
            for key, value in getattr(self.mapper, attr, {}).items():
                for name in [key] + (list(value) if isinstance(value, (list, tuple)) else [value]):
                    if isinstance(name, str) and "/" in name and name not in names:
                        names.append(name)
        return names
