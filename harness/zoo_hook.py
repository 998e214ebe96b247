"""A release's own unsloth-zoo `requires_grad_for_gradient_checkpointing`, run without installing it.

`unsloth_zoo/peft_utils.py` is executed unmodified from the release's files (a cached wheel or the
installed distribution). Up to 2025.10.x it imports only the standard library and torch; later
releases import sibling modules relatively (`.log`, `.empty_model`, ...), which are executed from
the same release's files in turn. The package's `__init__` is never run: it needs a GPU in old
releases and patches transformers globally in new ones.

The hook the function installs is found on the model by its name (`requires_grad_pre_hook` /
`requires_grad_post_hook`), so a suite can call the release's own hook directly or watch what
enters the module it sits on.
"""

from __future__ import annotations

import builtins
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import HarnessError
from .releases import ReleaseCode

SEED_ERROR = "only Tensors of floating point dtype can require gradients"
FUNCTION = "requires_grad_for_gradient_checkpointing"
PRE_HOOK = "requires_grad_pre_hook"
POST_HOOK = "requires_grad_post_hook"
PACKAGE = "unsloth_zoo"


class ZooModules:
    """The modules of one unsloth-zoo release, executed from its files on first import."""

    def __init__(self, code: ReleaseCode):
        if code.package != "unsloth-zoo":
            raise HarnessError(f"peft_utils lives in unsloth-zoo, not {code.package}")
        self.code = code
        self.loaded: dict[str, types.ModuleType] = {}

    def module(self, dotted: str) -> types.ModuleType:
        """``unsloth_zoo.<dotted>`` of this release (e.g. ``peft_utils``)."""
        if dotted in self.loaded:
            return self.loaded[dotted]
        relpath = f"{PACKAGE}/{dotted.replace('.', '/')}.py"
        if not self.code.has(relpath):
            raise HarnessError(f"{self.code.label} has no {relpath}")
        module = types.ModuleType(f"{PACKAGE}.{dotted}")
        module.__file__ = f"{self.code.origin}/{relpath}"
        module.__package__ = f"{PACKAGE}.{dotted.rpartition('.')[0]}".rstrip(".")
        module.__dict__["__builtins__"] = {**builtins.__dict__, "__import__": self._import_for(module.__package__)}
        self.loaded[dotted] = module  # before exec: import cycles between siblings see the partial module
        exec(compile(self.code.parse(relpath), f"{self.code.label}:{relpath}", "exec"), module.__dict__)
        return module

    def _import_for(self, package: str):
        def _import(name, globals=None, locals=None, fromlist=(), level=0):
            if level == 0 and name != PACKAGE and not name.startswith(PACKAGE + "."):
                return builtins.__import__(name, globals, locals, fromlist, level)
            if level:
                base = package.split(".")[: len(package.split(".")) - (level - 1)]
                dotted = ".".join([*base, name] if name else base)
            else:
                dotted = name
            inner = dotted[len(PACKAGE) + 1:]
            if not inner:  # `from . import x` / `import unsloth_zoo`: the submodules asked for
                return types.SimpleNamespace(**{n: self.module(n) for n in fromlist or ()})
            target = self.module(inner)
            return target if fromlist or level else sys.modules.get(PACKAGE, target)

        return _import


def peft_utils(code: ReleaseCode) -> types.ModuleType | None:
    """The release's ``unsloth_zoo.peft_utils``, or None where the release has none (before 2024.11.6)."""
    if not code.has(f"{PACKAGE}/peft_utils.py"):
        return None
    return ZooModules(code).module("peft_utils")


def requires_grad_function(module: types.ModuleType | None):
    """``requires_grad_for_gradient_checkpointing`` of a peft_utils module, or None where the release
    predates it (before 2025.1.1: unsloth then only called transformers' ``enable_input_require_grads``)."""
    return getattr(module, FUNCTION, None)


@dataclass(frozen=True)
class HookSite:
    """Where the release put a hook: the module's dotted name, the module, pre or post, the hook."""

    name: str
    module: object
    kind: str
    hook: object
    with_kwargs: bool = False

    def call(self, module, args: tuple, kwargs: dict | None = None):
        """Call the pre-hook the way torch does when ``module(*args, **kwargs)`` runs."""
        if self.with_kwargs:
            return self.hook(module, args, kwargs or {})
        return self.hook(module, args)


def hook_sites(model) -> list[HookSite]:
    """Every zoo requires-grad hook on ``model``'s modules."""
    sites = []
    for name, module in model.named_modules():
        for hook_id, hook in module._forward_pre_hooks.items():
            if getattr(hook, "__name__", "") == PRE_HOOK:
                sites.append(HookSite(name, module, "pre", hook, hook_id in module._forward_pre_hooks_with_kwargs))
        for hook in module._forward_hooks.values():
            if getattr(hook, "__name__", "") == POST_HOOK:
                sites.append(HookSite(name, module, "post", hook))
    return sites


def pre_hook(model) -> HookSite:
    """The single forward pre-hook the release installed, or a HarnessError saying where its hooks went."""
    sites = hook_sites(model)
    pre = [s for s in sites if s.kind == "pre"]
    if len(pre) != 1:
        where = ", ".join(f"{s.kind}-hook on {s.name or '<root>'}" for s in sites) or "no hooks"
        raise HarnessError(f"expected one {PRE_HOOK} on the model, found {where}")
    return pre[0]


def first_tensor(args, kwargs=None):
    """The first tensor among positional then keyword arguments (what a pre-hook's ``input[0]`` is)."""
    import torch

    for value in list(args) + list((kwargs or {}).values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


@contextmanager
def record_hooked_inputs(model):
    """Record ``(module name, dtype, shape)`` of the first tensor entering each module that carries a
    zoo hook, seen before the zoo hook runs (the root-cause probe)."""
    seen: list[tuple[str, object, tuple]] = []
    handles = []
    for site in {s.name: s for s in hook_sites(model)}.values():
        def probe(module, args, kwargs, _name=site.name):
            tensor = first_tensor(args, kwargs)
            seen.append((_name, getattr(tensor, "dtype", None), tuple(getattr(tensor, "shape", ()))))

        handles.append(site.module.register_forward_pre_hook(probe, with_kwargs=True, prepend=True))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
