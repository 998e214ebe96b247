"""Run a release's own model-name mapping (`get_model_name`) without importing the release.

Old unsloth releases cannot be imported on a machine without a GPU, but their name mapping is
plain Python: `unsloth/models/mapper.py` (dicts, no imports) and `get_model_name` in
`loader_utils.py` (from 2024.11.8) or `loader.py` (before). We execute mapper.py, then the
top-level statements of the loader file that `get_model_name` depends on, unmodified, in a fresh
namespace whose imports resolve to: the executed mapper for `.mapper`; the real module for the
standard library, packaging, requests and transformers' version; and, for anything else (torch,
unsloth_zoo, ...), a stand-in that raises if the mapping code actually uses it. The release's
run-time fetch of a newer mapper from GitHub goes through real `requests`, refused by
``hermetic.loopback_only`` — the outcome of that attempt is recorded.
"""

from __future__ import annotations

import ast
import builtins
import importlib.metadata
import sys
import types
from dataclasses import dataclass, field

from . import hermetic
from .errors import HarnessError
from .releases import ReleaseCode

MAPPER = "unsloth/models/mapper.py"
LOADER_FILES = ("unsloth/models/loader_utils.py", "unsloth/models/loader.py")
REAL_IMPORTS = {"packaging", "requests", "huggingface_hub"}
MAPPER_DICTS = ("INT_TO_FLOAT_MAPPER", "FLOAT_TO_INT_MAPPER", "MAP_TO_UNSLOTH_16bit")


class UnavailableModule(types.ModuleType):
    """A module the isolated mapping run does not provide; using any of it is an error."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "Version":  # releases re-export packaging's Version from their own utils
            from packaging.version import Version

            return Version
        return UnavailableModule(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise HarnessError(f"the release's name mapping used {self.__name__}, which the isolated run does not provide")

    def __bool__(self):
        raise HarnessError(f"the release's name mapping tested {self.__name__}, which the isolated run does not provide")


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds (descending into top-level if/try/with blocks)."""
    names: set[str] = set()
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(stmt.name)
    elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
        names.update((a.asname or a.name).split(".")[0] for a in stmt.names)
    elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    else:
        for block in ("body", "orelse", "finalbody"):
            for child in getattr(stmt, block, []) or []:
                names |= _bound_names(child)
        for handler in getattr(stmt, "handlers", []) or []:
            for child in handler.body:
                names |= _bound_names(child)
    return names


def _used_names(stmt: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)}


def _closure(tree: ast.Module, root: str) -> list[ast.stmt]:
    """The top-level statements ``root`` needs, in source order."""
    bound = [_bound_names(s) for s in tree.body]
    used = [_used_names(s) for s in tree.body]
    keep, seen, todo = set(), set(), [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for i, names in enumerate(bound):
            if name in names and i not in keep:
                keep.add(i)
                todo.extend(used[i] - seen)
    return [tree.body[i] for i in sorted(keep)]


@dataclass
class MappingRun:
    """The outcome of one get_model_name call, with what it tried to reach on the network."""

    release: str
    model_name: str
    load_in_4bit: bool
    resolved: str | None = None
    error: str | None = None
    blocked_connections: list[str] = field(default_factory=list)


class ReleaseMapper:
    """A release's own ``get_model_name``, executed in isolation from its source files."""

    def __init__(self, code: ReleaseCode):
        if code.package != "unsloth":
            raise HarnessError(f"name mapping lives in unsloth, not {code.package}")
        self.code = code
        self.mapper = self._module("unsloth.models.mapper", code.parse(MAPPER))
        loader = next((f for f in LOADER_FILES if code.has(f) and "def get_model_name" in code.read(f)), None)
        if loader is None:
            raise HarnessError(f"{code.label} has no get_model_name in {' or '.join(LOADER_FILES)}")
        self.loader_file = loader
        self.setup_errors: list[str] = []
        self.namespace = self._load_closure(loader)

    @staticmethod
    def _module(name: str, tree: ast.Module) -> types.ModuleType:
        module = types.ModuleType(name)
        exec(compile(tree, name, "exec"), module.__dict__)
        return module

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        if level > 0 or name.startswith("unsloth"):
            if name.split(".")[-1] == "mapper":
                return self.mapper
            return UnavailableModule(name or "unsloth.models")
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in REAL_IMPORTS:
            return builtins.__import__(name, globals, locals, fromlist, level)
        if name == "transformers" and list(fromlist or ()) == ["__version__"]:
            return types.SimpleNamespace(__version__=importlib.metadata.version("transformers"))
        return UnavailableModule(name)

    def _load_closure(self, loader: str) -> dict:
        tree = self.code.parse(loader)
        namespace = {
            "__name__": "unsloth.models." + loader.rsplit("/", 1)[-1][:-3],
            "__package__": "unsloth.models",
            "__builtins__": {**builtins.__dict__, "__import__": self._import},
        }
        for stmt in _closure(tree, "get_model_name"):
            try:
                exec(compile(ast.Module(body=[stmt], type_ignores=[]), f"{self.code.label}:{loader}", "exec"), namespace)
            except Exception as exc:  # noqa: BLE001 - a statement needing the GPU stack; recorded, not fatal
                self.setup_errors.append(f"{loader}:{stmt.lineno}: {type(exc).__name__}: {exc}")
        if "get_model_name" not in namespace:
            raise HarnessError(f"{self.code.label}: get_model_name did not load: {'; '.join(self.setup_errors)}")
        return namespace

    def resolve(self, model_name: str, load_in_4bit: bool) -> MappingRun:
        run = MappingRun(self.code.label, model_name, load_in_4bit)
        with hermetic.loopback_only() as blocked:
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
