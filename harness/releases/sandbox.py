"""The one way the harness runs a release's own Python: its files, unmodified, without installing it.

A release cannot simply be imported: old unsloth releases need a GPU at import, new unsloth-zoo
releases patch transformers globally, and several releases are read in one process. A Sandbox
executes a release's module files from its wheel (or installed files) in fresh module objects,
resolving their imports by a policy:

- the release's own modules (relative imports, or its package by name) that ``run_own`` admits are
  executed from the same release's files, once, cycles allowed;
- the release's other modules, and outside packages ``real`` refuses, become stand-ins that raise
  when used (``StandIn``), so a code path that needs them says so instead of doing something else;
- every other import is the real one (the standard library, torch, packaging, ...).

``closure`` runs only the top-level statements a name needs (get_model_name of a loader file
whose other statements need the GPU stack).
"""

from __future__ import annotations

import ast
import builtins
import sys
import types
from collections.abc import Callable

from harness.core.errors import HarnessError
from harness.releases.code import ReleaseCode


class StandIn(types.ModuleType):
    """A module the sandbox does not provide; calling or testing anything of it is an error."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name == "Version":  # releases re-export packaging's Version from their own utils
            from packaging.version import Version

            return Version
        return StandIn(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        raise HarnessError(f"the release's code used {self.__name__}, which the sandbox does not provide")

    def __bool__(self):
        raise HarnessError(f"the release's code tested {self.__name__}, which the sandbox does not provide")


class Sandbox:
    """Modules of one release (``code``, top-level package ``package``), executed on first import."""

    def __init__(
        self,
        code: ReleaseCode,
        package: str,
        *,
        run_own: Callable[[str], bool] = lambda dotted: True,
        real: Callable[[str], bool] = lambda name: True,
        special: Callable | None = None,
    ):
        self.code, self.package = code, package
        self.run_own, self.real, self.special = run_own, real, special
        self.loaded: dict[str, types.ModuleType] = {}

    def module(self, dotted: str) -> types.ModuleType:
        """``PACKAGE.<dotted>`` of this release (e.g. ``peft_utils``), executed from its file."""
        if dotted in self.loaded:
            return self.loaded[dotted]
        relpath = f"{self.package}/{dotted.replace('.', '/')}.py"
        if not self.code.has(relpath):
            raise HarnessError(f"{self.code.label} has no {relpath}")
        name = f"{self.package}.{dotted}"
        module = types.ModuleType(name)
        module.__file__ = f"{self.code.origin}/{relpath}"
        module.__package__ = name.rpartition(".")[0]
        module.__dict__["__builtins__"] = self.builtins(module.__package__)
        self.loaded[dotted] = module  # before exec: import cycles between siblings see the partial module
        exec(compile(self.code.parse(relpath), f"{self.code.label}:{relpath}", "exec"), module.__dict__)
        return module

    def closure(self, relpath: str, root: str) -> dict:
        """A namespace holding ``root`` from ``relpath``, built by running only the top-level statements it
        needs, in source order. A statement that fails (it needs the GPU stack) is recorded in
        ``__sandbox_errors__``, not raised; a missing ``root`` is a HarnessError naming them."""
        tree = self.code.parse(relpath)
        package = (
            f"{self.package}.{relpath.removeprefix(self.package + '/').rpartition('/')[0].replace('/', '.')}".rstrip(
                "."
            )
        )
        namespace = {
            "__name__": f"{package}.{relpath.rsplit('/', 1)[-1][:-3]}",
            "__package__": package,
            "__builtins__": self.builtins(package),
            "__sandbox_errors__": [],
        }
        for stmt in _closure(tree, root):
            try:
                exec(
                    compile(ast.Module(body=[stmt], type_ignores=[]), f"{self.code.label}:{relpath}", "exec"), namespace
                )
            except Exception as exc:  # noqa: BLE001 - a statement needing the GPU stack; recorded, not fatal
                namespace["__sandbox_errors__"].append(f"{relpath}:{stmt.lineno}: {type(exc).__name__}: {exc}")
        if root not in namespace:
            raise HarnessError(f"{self.code.label}: {root} did not load: {'; '.join(namespace['__sandbox_errors__'])}")
        return namespace

    def builtins(self, package: str) -> dict:
        return {**builtins.__dict__, "__import__": self._importer(package)}

    def _importer(self, package: str):
        def _import(name, globals=None, locals=None, fromlist=(), level=0):
            if level:
                parts = package.split(".")
                base = parts[: len(parts) - (level - 1)]
                dotted = ".".join([*base, name] if name else base)
            else:
                dotted = name
            if dotted != self.package and not dotted.startswith(self.package + "."):
                if self.special is not None and (found := self.special(name, fromlist)) is not None:
                    return found
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or self.real(name):
                    return builtins.__import__(name, globals, locals, fromlist, 0)
                return StandIn(name)
            inner = dotted[len(self.package) + 1 :]
            if not inner:  # `from . import x` / `import PACKAGE`: the submodules asked for
                return types.SimpleNamespace(**{n: self._own(n) for n in fromlist or ()})
            target = self._own(inner)
            return target if fromlist or level else sys.modules.get(self.package, target)

        return _import

    def _own(self, dotted: str):
        return self.module(dotted) if self.run_own(dotted) else StandIn(f"{self.package}.{dotted}")


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


def _closure(tree: ast.Module, root: str) -> list[ast.stmt]:
    """The top-level statements ``root`` needs, in source order."""
    bound = [_bound_names(s) for s in tree.body]
    used = [{n.id for n in ast.walk(s) if isinstance(n, ast.Name)} for s in tree.body]
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
