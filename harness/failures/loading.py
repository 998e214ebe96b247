"""What ``FastVisionModel.from_pretrained(NAME, load_in_4bit=True)`` of a release loads, from its own code.

One model of the garbage-output, 404 and vision-quantization failures, made of the release's code wherever it
has it:

1. the release's name mapping (``harness.releases.mapper``: its own ``get_model_name``), skipped where the
   caller passes ``use_exact_model_name`` (unsloth >= 2025.1.1);
2. the local hub as it was when the release shipped (``hub.snapshot_at`` its wheel's build date),
   which answers 404 for a repo that did not exist;
3. the quantization: a pre-quantized repo's own ``quantization_config`` (transformers uses it and
   ignores the caller's), else the release's load-time settings: the ``BitsAndBytesConfig`` its
   vision loader builds, evaluated from its source with unsloth-zoo's ``SKIP_QUANTIZATION_MODULES``
   (``load_time_settings``), matched the way the release makes transformers match it
   (``release_matcher``: its own patches of transformers 5's ``should_convert_module``);
4. a real transformers + bitsandbytes load, then what it gives: the linears in 4 bits, the dtype
   entering the vision tower, and (in the suites) the captions against the goldens.

Any name of any family of harness.families, any size, or a local checkpoint of one, goes through the same
path (``what_loads``): the family gives the model class, the model type, the vision modules and the tower.

Old releases cannot be imported without a GPU, so their code is read, not imported; on a GPU the
suites also run the installed release's real ``FastVisionModel`` and compare.
"""

from __future__ import annotations

import ast
import datetime
import importlib.metadata
import json
import zipfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.data import hub, hub_server
from harness.env.matrix import load_matrix
from harness.families import registry as families
from harness.families import tiny
from harness.families.base import Family
from harness.lab import compat, inference, quant
from harness.releases import code as release_code
from harness.releases.code import ReleaseCode
from harness.releases.git import Repo
from harness.releases.mapper import ReleaseMapper

VISION_LOADER = "unsloth/models/vision.py"
SKIP_LIST_HOME = "unsloth_zoo/peft_utils.py"
# The compute dtype the release picks on a bfloat16-capable GPU (torch.bfloat16); with the model's type
# (machine_names), what its loader computes for names that depend on the machine and the checkpoint.
COMPUTE_DTYPE = "bfloat16"
QWEN2_VL = "qwen2_vl"
# Where unsloth and unsloth-zoo patch transformers 5's skip-list matcher (both at import).
MATCHER_PATCHES = (("unsloth-zoo", "unsloth_zoo/patching_utils.py"), ("unsloth", "unsloth/models/_utils.py"))
MATCHER = "should_convert_module"


@dataclass(frozen=True)
class Release:
    """An unsloth release and the unsloth-zoo release installed with it (both read from their wheels)."""

    unsloth: ReleaseCode
    zoo: ReleaseCode

    @property
    def label(self) -> str:
        return f"unsloth {self.unsloth.version} + zoo {self.zoo.version}"

    @property
    def shipped(self) -> datetime.date:
        """The day the unsloth wheel was built (its METADATA's date: PyPI's upload day for every release checked),
        or a commit's day."""
        commit = self.unsloth.commit()
        if commit is not None:
            return Repo(commit[0]).commit(commit[1]).date.date()
        if self.unsloth.origin == "installed":
            raise HarnessError("the ship date is read from a release wheel, not an installed distribution")
        with zipfile.ZipFile(self.unsloth.origin) as wheel:
            info = next(i for i in wheel.infolist() if i.filename.endswith(".dist-info/METADATA"))
        return datetime.date(*info.date_time[:3])

    def has_exact_names(self) -> bool:
        """Whether from_pretrained takes use_exact_model_name (unsloth >= 2025.1.1)."""
        return any(
            self.unsloth.has(f) and "use_exact_model_name" in self.unsloth.read(f)
            for f in ("unsloth/models/loader.py", VISION_LOADER)
        )


# --- the release's load-time quantization settings ------------------------------------------------


@dataclass(frozen=True)
class LoadSettings:
    """The keyword arguments of the release's ``BitsAndBytesConfig(load_in_4bit=True, ...)``."""

    kwargs: dict
    where: str  # file:line of the call in the release's source

    @property
    def skip_modules(self) -> list[str] | None:
        return self.kwargs.get("llm_int8_skip_modules")

    def bnb_config(self):
        import torch
        import transformers

        return transformers.BitsAndBytesConfig(
            **{**self.kwargs, "bnb_4bit_compute_dtype": getattr(torch, COMPUTE_DTYPE)}
        )


def zoo_skip_list(zoo: ReleaseCode) -> list[str] | None:
    """unsloth-zoo's SKIP_QUANTIZATION_MODULES (a literal list in peft_utils.py), None before zoo 2024.12.1."""
    if not zoo.has(SKIP_LIST_HOME):
        return None
    for node in zoo.parse(SKIP_LIST_HOME).body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "SKIP_QUANTIZATION_MODULES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return None


def machine_names(model_type: str) -> dict:
    return {"model_types": [model_type], "model_type": model_type}


def load_time_settings(release: Release, model_type: str = QWEN2_VL) -> LoadSettings:
    """The BitsAndBytesConfig the release's vision loader builds for ``load_in_4bit=True`` on a checkpoint of
    ``model_type``, its keyword arguments evaluated from the release's own source (``_Evaluator``)."""
    tree = release.unsloth.parse(VISION_LOADER)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and _called_name(call) == "BitsAndBytesConfig"):
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        if not (isinstance(keywords.get("load_in_4bit"), ast.Constant) and keywords["load_in_4bit"].value is True):
            continue
        function = call
        while function in parents and not isinstance(function, ast.FunctionDef):
            function = parents[function]
        evaluator = _Evaluator(release, tree, function, call.lineno, machine_names(model_type))
        kwargs = {}
        for name, value in keywords.items():
            kwargs[name] = COMPUTE_DTYPE if name == "bnb_4bit_compute_dtype" else evaluator.value(value)
        return LoadSettings(kwargs, f"{VISION_LOADER}:{call.lineno}")
    raise HarnessError(f"{release.unsloth.label}: no BitsAndBytesConfig(load_in_4bit=True) in {VISION_LOADER}")


def _called_name(call: ast.Call) -> str | None:
    return getattr(call.func, "id", None) or getattr(call.func, "attr", None)


class _Evaluator:
    """Evaluates an expression of the release's loader the way the release computes it: literals,
    lists and ``+``, ``.copy()``, names assigned earlier in the same function, calls of the module's
    own pure functions, unsloth-zoo's SKIP_QUANTIZATION_MODULES and the machine-dependent ``machine``
    names. Anything else is refused, naming the construct, rather than guessed."""

    def __init__(self, release: Release, module: ast.Module, function: ast.AST, line: int, machine: dict):
        self.release, self.module, self.function, self.line = release, module, function, line
        self.machine = machine

    def value(self, node: ast.AST):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.value(node.left) + self.value(node.right)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "copy"
            and not node.args
        ):
            return list(self.value(node.func.value))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self.call(node)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        raise HarnessError(
            f"{self.release.unsloth.label}:{VISION_LOADER}:{self.line}: cannot evaluate {ast.unparse(node)!r}"
        )

    def name(self, name: str):
        if name == "SKIP_QUANTIZATION_MODULES":
            skips = zoo_skip_list(self.release.zoo)
            if skips is None:
                raise HarnessError(
                    f"{self.release.unsloth.label} imports SKIP_QUANTIZATION_MODULES, which "
                    f"{self.release.zoo.label} lacks: that pair fails at import"
                )
            return skips
        if name in self.machine:
            return self.machine[name]
        assigned = [
            n
            for n in ast.walk(self.function)
            if isinstance(n, ast.Assign)
            and n.lineno < self.line
            and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
        ]
        if not assigned:
            raise HarnessError(
                f"{self.release.unsloth.label}:{VISION_LOADER}:{self.line}: cannot evaluate name {name!r}"
            )
        return self.value(max(assigned, key=lambda n: n.lineno).value)

    def call(self, node: ast.Call):
        definition = next(
            (d for d in self.module.body if isinstance(d, ast.FunctionDef) and d.name == node.func.id), None
        )
        if definition is None:
            raise HarnessError(
                f"{self.release.unsloth.label}:{VISION_LOADER}:{self.line}: cannot evaluate call {ast.unparse(node)!r}"
            )
        namespace: dict = {}
        exec(compile(ast.Module(body=[definition], type_ignores=[]), self.release.unsloth.label, "exec"), namespace)
        return namespace[definition.name](*[self.value(a) for a in node.args])


# --- the release's skip-list matcher ----------------------------------------------------------------


@contextmanager
def release_matcher(release: Release):
    """transformers' ``should_convert_module`` as the release leaves it: the top-level statements of
    unsloth-zoo and unsloth that replace it (transformers 5; zoo first, as unsloth imports it first),
    executed from their files. A no-op where transformers has no such function (4.x) or the release
    does not patch it. The original is restored on exit."""
    import transformers.quantizers.quantizers_utils as quantizers_utils

    original = getattr(quantizers_utils, MATCHER, None)
    users = _matcher_users()
    if original is None:
        yield None
        return
    try:
        for package, relpath in MATCHER_PATCHES:
            code = release.zoo if package == "unsloth-zoo" else release.unsloth
            if code.has(relpath):
                for statement in _matcher_patches(code.parse(relpath)):
                    namespace = {"_transformers_bnb": users.get("transformers.integrations.bitsandbytes")}
                    exec(
                        compile(ast.Module(body=statement, type_ignores=[]), f"{code.label}:{relpath}", "exec"),
                        namespace,
                    )
        yield getattr(quantizers_utils, MATCHER)
    finally:
        for module in [quantizers_utils, *users.values()]:
            if module is not None and hasattr(module, MATCHER):
                setattr(module, MATCHER, original)


def _matcher_users() -> dict:
    import importlib

    try:
        return {
            "transformers.integrations.bitsandbytes": importlib.import_module("transformers.integrations.bitsandbytes")
        }
    except ImportError:
        return {}


def _matcher_patches(tree: ast.Module) -> list[list[ast.stmt]]:
    """Each top-level ``if`` that assigns ``_quantizers_utils.should_convert_module``, with the imports it needs."""
    imports = ast.parse(
        "import re\nimport transformers\nimport transformers.integrations.bitsandbytes\n"
        "import transformers.quantizers.quantizers_utils as _quantizers_utils"
    ).body
    return [
        [*imports, statement]
        for statement in tree.body
        if isinstance(statement, ast.If)
        and any(
            isinstance(n, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == MATCHER for t in n.targets)
            for n in ast.walk(statement)
        )
    ]


# --- the plan: which repo the release asks for --------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    release: Release
    asked: str
    exact: bool  # use_exact_model_name=True: the mapper is skipped
    repo: str | None
    mapping_error: str | None = None
    blocked: tuple[str, ...] = field(default_factory=tuple)  # what the mapper tried to reach on the network

    @property
    def path(self) -> str:
        return "use_exact_model_name" if self.exact else "mapped"


def plan(release: Release, name: str, *, exact: bool = False, mapper_edits: dict[str, str] | None = None) -> Plan:
    """The repo ``FastVisionModel.from_pretrained(name, load_in_4bit=True)`` of ``release`` asks the hub for
    (``mapper_edits``: targets of the release's mapper replaced, to test what a fix would do)."""
    if exact:
        if not release.has_exact_names():
            raise HarnessError(f"{release.unsloth.label} has no use_exact_model_name (it arrived in unsloth 2025.1.1)")
        return Plan(release, name, True, name)
    mapper = ReleaseMapper(release.unsloth)
    if mapper_edits:
        mapper.retarget(mapper_edits)
    run = mapper.resolve(name, load_in_4bit=True)
    return Plan(release, name, False, run.resolved, run.error, tuple(run.blocked_connections))


# --- the load ------------------------------------------------------------------------------------------


def load(plan: Plan, settings: LoadSettings, family: Family):
    """A real transformers + bitsandbytes load of the planned repo (a model of ``family``) with the release's
    settings and matcher, from whatever hub this process's clients point at; the hub's 404 propagates."""
    import torch
    import transformers

    if plan.repo is None:
        raise HarnessError(f"{plan.release.label}: get_model_name({plan.asked!r}) failed: {plan.mapping_error}")
    if quant.device() == "cpu":
        compat.allow_cpu_bitsandbytes()
    with release_matcher(plan.release):
        return getattr(transformers, family.model_class).from_pretrained(
            plan.repo,
            quantization_config=settings.bnb_config(),
            device_map=quant.device(),
            **compat.dtype_kwarg(torch.bfloat16),
        )


def repo_not_found(exc: BaseException):
    """The RepositoryNotFoundError behind an exception (transformers wraps the hub's 404 in OSError), or None."""
    from huggingface_hub.errors import RepositoryNotFoundError

    while exc is not None:
        if isinstance(exc, RepositoryNotFoundError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# --- what the load gives ---------------------------------------------------------------------------------

DTYPE_SOURCE = "blocks.0.mlp.fc2"  # what transformers <4.52's visual.get_dtype() reads (4.46-4.51 modeling_qwen2_vl)


@dataclass
class Observation:
    """What one load of a ``family`` model gave: where its quantization came from, the 4-bit linears, and
    per X-ray the dtype entering the vision tower and the caption (or the error the load ended in)."""

    plan: Plan
    snapshot: str  # the hub snapshot asked ("-" for a local checkpoint)
    family: Family = field(default_factory=lambda: families.family("qwen2-vl"))
    quantized_by: str = ""
    linear4bit: tuple[str, ...] = ()
    vision_linears: int = 0
    missing_quant_state: tuple[str, ...] = ()
    pixel_dtypes: dict[str, str] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None

    def is_vision(self, name: str) -> bool:
        """Whether a module lies in one of the family's vision modules (tower and projector)."""
        return any(v in name.split(".") for v in self.family.vision_modules)

    @property
    def vision_4bit(self) -> list[str]:
        return [n for n in self.linear4bit if self.is_vision(n)]

    @property
    def dtype_source_4bit(self) -> bool:
        return any(n.endswith(f"visual.{DTYPE_SOURCE}") for n in self.linear4bit)

    @property
    def repo(self) -> str:
        return self.plan.repo or f"(mapping failed: {self.plan.mapping_error})"


def observe(
    plan: Plan, settings: LoadSettings, snapshot: str, processor, fixtures, family: Family | None = None, captions=True
) -> Observation:
    """Load ``plan`` (a ``family`` model, default Qwen2-VL; from whatever hub this process points at) and
    caption every fixture greedily, or with ``captions=False`` run one forward pass per fixture (a family's
    untrained tiny model has nothing to say; what enters its vision tower is the observation)."""
    seen = Observation(plan, snapshot, **({"family": family} if family else {}))
    try:
        model = load(plan, settings, seen.family)
    except Exception as exc:  # noqa: BLE001 - the load's own failure (a 404) is the observation
        seen.error = exc
        return seen
    seen.quantized_by = (
        "the checkpoint's quantization_config"
        if _checkpoint_quantized(plan.repo)
        else f"the release's BitsAndBytesConfig ({settings.where})"
    )
    report = quant.linears(model)
    seen.linear4bit, seen.missing_quant_state = report.linear4bit, report.missing_quant_state
    seen.vision_linears = sum(1 for n in report.linear4bit + report.linear16 if seen.is_vision(n))
    for item in fixtures:
        with record_tower_input(seen.family, model) as dtypes:
            try:
                if captions:
                    seen.captions[item.id] = inference.caption(model, processor, item.image(), max_new_tokens=48)
                else:
                    forward(model, processor, item.image().convert("RGB"))
            except Exception as exc:  # noqa: BLE001 - a load that cannot run (e.g. 4-bit without quant state)
                seen.error = exc
                return seen
        seen.pixel_dtypes[item.id] = str(dtypes[0]) if dtypes else "not reached"
    return seen


def forward(model, processor, image) -> None:
    import torch

    with torch.no_grad():
        model(**tiny.inputs(processor, image).to(model.device))


@contextmanager
def record_tower_input(family: Family, model):
    """The dtype of the first tensor entering the family's vision tower (its first vision module, outermost
    instance), recorded before any other pre-hook on it runs (one may raise on these very inputs)."""
    found = family.vision_module_paths(model)[family.vision_modules[0]]
    if not found:
        raise HarnessError(f"{type(model).__name__} has no {family.vision_modules[0]} ({family.title})")
    seen: list = []

    def hook(module, args, kwargs):
        tensor = next((a for a in list(args) + list(kwargs.values()) if hasattr(a, "dtype")), None)
        if tensor is not None:
            seen.append(tensor.dtype)

    handle = model.get_submodule(min(found, key=len)).register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
    try:
        yield seen
    finally:
        handle.remove()


def _checkpoint_quantized(repo: str) -> bool:
    """Whether the repo's own config.json declares a quantization (read through transformers' config loader)."""
    import transformers

    return getattr(transformers.AutoConfig.from_pretrained(repo), "quantization_config", None) is not None


def installed_release() -> Release | None:
    """The installed unsloth and unsloth-zoo, read from their release wheels (the same files, and the
    wheel carries the ship date); None where either is not installed."""
    try:
        versions = [importlib.metadata.version(p) for p in ("unsloth", "unsloth-zoo")]
    except importlib.metadata.PackageNotFoundError:
        return None
    return Release(
        *(
            release_code.installed(p) if release_code.installed_commit(p) else release_code.from_wheel(p, v)
            for p, v in zip(("unsloth", "unsloth-zoo"), versions, strict=True)
        )
    )


def release_pair(unsloth: str, origin: str = "wheel") -> Release:
    """The installed pair, or unsloth ``unsloth`` with the unsloth-zoo its matrix cell pins."""
    if origin == "installed":
        found = installed_release()
        if found is None:
            raise HarnessError("unsloth and unsloth-zoo are not both installed here")
        return found
    cell = next((c for c in load_matrix().cells.values() if c.pins["unsloth"] == unsloth), None)
    if cell is None:
        raise HarnessError(f"unsloth {unsloth} is in no matrix cell: name its unsloth-zoo with release_of()")
    return Release(*(cell_code(cell, package) for package in ("unsloth", "unsloth-zoo")))


def cell_code(cell, package: str) -> ReleaseCode:
    """A matrix cell's release of ``package``, or its commit read from the clone."""
    source = cell.sources.get(package)
    if source is None:
        return release_code.from_wheel(package, cell.stack[package])
    return release_code.from_commit(package, source.repo.path, source.commit.sha, source.version)


def release_of(unsloth: str, zoo: str) -> Release:
    return Release(release_code.from_wheel("unsloth", unsloth), release_code.from_wheel("unsloth-zoo", zoo))


# --- any name of any family: the same path ---------------------------------------------------------


def family_of(name: str) -> Family:
    """The family of a hub name (one of a family's ``hub_names``, any case) or of a local checkpoint (its
    config.json's model_type is a family's transformers module)."""
    folder = Path(name)
    every = families.families()
    if folder.is_dir():
        try:
            model_type = json.loads((folder / "config.json").read_text())["model_type"]
        except (OSError, ValueError, KeyError):
            raise HarnessError(f"{name} is a folder without a config.json naming its model_type") from None
        found = next((f for f in every if f.module == model_type), None)
        if found is None:
            raise HarnessError(
                f"{name}: model_type {model_type!r} is no family's; families: "
                + ", ".join(f"{f.id} ({f.module})" for f in every)
            )
        return found
    found = next(
        (f for f in every for names in f.hub_names.values() if name.lower() in (n.lower() for n in names)), None
    )
    if found is None:
        raise HarnessError(
            f"{name!r} is no family's hub name and no local checkpoint; `qvl-harness families` lists the families"
        )
    return found


def what_loads(
    release: Release, name: str, *, processor, fixtures, hub_for=None, base: Path | None = None, captions=False
) -> Observation:
    """The release's load of ``name``: a local 16-bit checkpoint (quantized at load time), or a hub name served
    by the local hub of the release's ship day with stand-ins of ``base`` (default: the family's tiny model).
    ``captions``: caption every fixture (a trained captioner), else one forward pass each."""
    family = family_of(name)
    settings = load_time_settings(release, family.module)
    server, snapshot = None, "-"
    if not Path(name).is_dir():
        found = hub.snapshot_at(release.shipped)
        if not any(found.find(n) for names in family.hub_names.values() for n in names):
            raise HarnessError(
                f"the hub snapshot {found.name} of {release.label} has no {family.title} repo: "
                f"load a local checkpoint of {family.id} instead"
            )
        if hub_for is None:
            raise HarnessError(f"{name} is a hub name: what_loads needs hub_for to serve snapshot {found.name}")
        server, snapshot = hub_for(found.name, base=base or family.build()), found.name
    with hub_server.pointed_at(server) if server else nullcontext():
        return observe(plan(release, name), settings, snapshot, processor, fixtures, family, captions=captions)
