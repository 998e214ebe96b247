"""dtype-grad: `only Tensors of floating point dtype can require gradients` from unsloth-zoo's hook.

unsloth-zoo's `requires_grad_for_gradient_checkpointing` (from 2025.1.1; unsloth calls it from its
get_peft_model from 2025.1.1) puts `requires_grad_pre_hook` on the module that feeds the first LoRA
layer; before 2025.3.13 the hook calls `input[0].requires_grad_(True)` on whatever enters. A
release's own `unsloth_zoo/peft_utils.py` runs in the sandbox (harness.releases.sandbox): up to
2025.10.x it imports only the standard library and torch, later ones sibling modules, executed from
the same release's files; the package's `__init__` never runs (it needs a GPU in old releases and
patches transformers globally in new ones).

Two real stacks hand the hook an integer tensor: LoRA on the vision layers with a 4-bit vision tower
on transformers <4.52, which casts pixel_values to the 4-bit weights' storage dtype (uint8); and
`modules_to_save=["embed_tokens"]`, which puts the hook on the embedding wrapper (int64 input_ids).
`train_step` runs one such step on a tiny Qwen2-VL and a real chest X-ray and records what entered.
"""

from __future__ import annotations

import functools
import math
import types
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.core.errors import HarnessError
from harness.data import xrays
from harness.failures.base import Failure
from harness.lab import inference, quant, tinymodel
from harness.releases.code import ReleaseCode
from harness.releases.sandbox import Sandbox

FUNCTION = "requires_grad_for_gradient_checkpointing"
PRE_HOOK = "requires_grad_pre_hook"
POST_HOOK = "requires_grad_post_hook"
# Releases without SKIP_QUANTIZATION_MODULES (before 2024.12) left the same modules in 16 bits.
SKIP_BEFORE_ZOO_LIST = ("lm_head", "multi_modal_projector", "merger")
ANSWER = "chest radiograph frontal view"


class DtypeGrad(Failure):
    id = "dtype-grad"
    # torch's error, raised through the zoo's requires_grad_pre_hook
    RAISED = "RuntimeError: only Tensors of floating point dtype can require gradients"
    messages = {"cause": (RAISED,), "symptom": (RAISED,)}

    def subject(self, version: str, origin: str = "wheel") -> ReleaseCode:
        return super().subject(version, origin)

    def reproduce(self, subject: ReleaseCode, *, vision: bool = True, modules_to_save=None) -> Step:
        """One training step of the report's path (vision LoRA) or trigger B (modules_to_save)."""
        return train_step(subject, vision=vision, modules_to_save=modules_to_save)


@functools.cache
def peft_utils(code: ReleaseCode) -> types.ModuleType | None:
    """The release's ``unsloth_zoo.peft_utils``, or None where the release has none (before 2024.11.6)."""
    if code.package != "unsloth-zoo":
        raise HarnessError(f"peft_utils lives in unsloth-zoo, not {code.package}")
    if not code.has("unsloth_zoo/peft_utils.py"):
        return None
    return Sandbox(code, "unsloth_zoo").module("peft_utils")


def requires_grad_function(module: types.ModuleType | None):
    """``requires_grad_for_gradient_checkpointing`` of a peft_utils module, or None where the release
    predates it (before 2025.1.1: unsloth then only called transformers' ``enable_input_require_grads``)."""
    return getattr(module, FUNCTION, None)


# --- where the release's hooks sit ---------------------------------------------------------------------


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


@contextmanager
def record_checkpointed_block_inputs(tower):
    """``requires_grad`` of the hidden states each vision block gets through transformers' gradient
    checkpointing (none recorded where the tower is not checkpointed, as in transformers 4.46)."""
    seen: list[bool] = []
    original = getattr(tower, "_gradient_checkpointing_func", None)
    if original is not None and getattr(tower, "gradient_checkpointing", False):

        def recording(function, *args, **kwargs):
            seen.append(bool(getattr(args[0], "requires_grad", False)))
            return original(function, *args, **kwargs)

        tower._gradient_checkpointing_func = recording
    try:
        yield seen
    finally:
        if original is not None:
            tower._gradient_checkpointing_func = original


# --- one training step, as unsloth's get_peft_model prepares it ---------------------------------------------


def prepare_for_training(model):
    """unsloth's prepare_model_for_kbit_training: only LoRA trains, reentrant checkpointing, and
    transformers' input-embedding hook (unsloth runs it before and after the zoo call)."""
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_A." in name or ".lora_B." in name)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    return model


def lora_model(code: ReleaseCode, *, vision: bool, modules_to_save=None):
    """The tiny Qwen2-VL through FastVisionModel.get_peft_model's steps, with the release's own
    skip list, target regex and requires_grad_for_gradient_checkpointing."""
    module = peft_utils(code)
    skip = getattr(module, "SKIP_QUANTIZATION_MODULES", SKIP_BEFORE_ZOO_LIST)
    model = prepare_for_training(quant.load_4bit(tinymodel.build(), skip))
    targets = module.get_peft_regex(
        model,
        finetune_vision_layers=vision,
        finetune_language_layers=True,
        finetune_attention_modules=True,
        finetune_mlp_modules=True,
    )
    return lora_on(model, targets, requires_grad_function(module), modules_to_save)


def lora_on(model, targets, requires_grad, modules_to_save=None):
    """peft's LoRA on ``targets``, the release's ``requires_grad`` hook installer (None: none), then
    unsloth's preparation again, as get_peft_model does."""
    import peft
    import torch

    torch.manual_seed(3407)
    config = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        modules_to_save=modules_to_save,
    )
    model = peft.get_peft_model(model, config)
    with torch.no_grad():  # LoRA B starts at zero; give it weight so every A can get a gradient
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.02)
    if requires_grad is not None:
        requires_grad(model)
    return prepare_for_training(model)


@functools.cache
def xray_batch(device="cpu"):
    """A chest X-ray with a short answer, labelled for training (image tokens not scored)."""
    chest = next(f for f in xrays.usable(xrays.load_manifest()) if f.body_part == "CHEST")
    processor = tinymodel.load_processor(tinymodel.build())
    inputs = inference.chat_inputs(processor, chest.image(), answer=ANSWER)
    labels = inputs["input_ids"].clone()
    labels[labels == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")] = -100
    return {k: v.to(device) for k, v in {**inputs, "labels": labels}.items()}


@dataclass
class Step:
    """One forward/backward: loss, LoRA gradient norms, and what entered the hooked modules."""

    label: str
    loss: float | None = None
    grads: dict[str, float] = field(default_factory=dict)
    pixel_dtypes: list = field(default_factory=list)
    hooked_inputs: list = field(default_factory=list)
    checkpointed_block_inputs: list[bool] = field(
        default_factory=list
    )  # requires_grad of each checkpointed vision block's input
    error: BaseException | None = None
    vision_marker: str = ".visual."  # what names the vision tower's parameters

    def lora_grads(self, vision: bool) -> dict[str, float]:
        return {n: g for n, g in self.grads.items() if (self.vision_marker in n) == vision and ".lora_" in n}

    def run(self, model, batch) -> None:
        """Forward and backward on ``batch``; the release's error, if one is raised, is the result."""
        try:
            loss = model(**batch).loss
            loss.backward()
            self.loss = loss.item()
        except Exception as exc:  # noqa: BLE001 - the release's failure is the result
            self.error = exc

    def finish(self, model) -> None:
        """The probe on the error, and every trainable parameter's gradient norm."""
        if self.error is not None:
            self.error.add_note(self.probe())
        self.grads = {
            n: (0.0 if p.grad is None else p.grad.float().norm().item())
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    @property
    def pixels_cast_to_non_float(self) -> bool:
        return bool(self.pixel_dtypes) and not self.pixel_dtypes[0].is_floating_point

    @property
    def vision_blocks_checkpointed_without_grad_input(self) -> bool:
        """Reentrant checkpointing of the vision blocks (transformers >=4.47) handed an input that does not
        require grad: torch then records no graph through the blocks and their LoRA gets no gradient."""
        return bool(self.checkpointed_block_inputs) and not self.checkpointed_block_inputs[0]

    def probe(self) -> str:
        hooked = "; ".join(f"{n or '<root>'}: {d} {list(s)}" for n, d, s in self.hooked_inputs) or "none seen"
        pixels = self.pixel_dtypes[0] if self.pixel_dtypes else "not reached"
        return (
            f"{self.label}: pixel_values entering the vision tower: {pixels}; "
            f"tensor entering the module with the zoo hook: {hooked}"
        )

    def assert_trains(self, vision: bool) -> None:
        """A finite loss and a non-zero gradient for every LoRA parameter of the language (or vision) layers."""
        if self.error is not None:
            raise self.error
        assert self.loss is not None and math.isfinite(self.loss), f"{self.label}: loss {self.loss}"
        grads = self.lora_grads(vision)
        where = "vision" if vision else "language"
        assert grads, f"{self.label}: no {where} LoRA parameters are trainable"
        zero = sorted(n for n, g in grads.items() if not g > 0)
        assert not zero, (
            f"{self.label}: {len(zero)}/{len(grads)} {where} LoRA gradients are zero, e.g. {zero[0]}. {self.probe()}"
        )


def train_step(code: ReleaseCode, *, vision: bool, modules_to_save=None) -> Step:
    step = Step(code.label)
    try:
        model = lora_model(code, vision=vision, modules_to_save=modules_to_save)
    except Exception as exc:  # noqa: BLE001 - the release failed while installing its hooks; that is the result
        step.error = exc
        return step
    model.train()
    batch = xray_batch(model.device)
    with (
        quant.record_vision_input(model.get_base_model()) as pixels,
        record_hooked_inputs(model) as hooked,
        record_checkpointed_block_inputs(quant.vision_tower(model)) as blocks,
    ):
        step.run(model, batch)
        step.pixel_dtypes, step.hooked_inputs, step.checkpointed_block_inputs = list(pixels), list(hooked), list(blocks)
    step.finish(model)
    return step


@functools.cache
def hooked_embedding_model(code: ReleaseCode):
    """Language LoRA with modules_to_save=['embed_tokens']: the zoo's pre-hook lands on the
    embedding wrapper on every transformers version (trigger B)."""
    return lora_model(code, vision=False, modules_to_save=["embed_tokens"])


@functools.cache
def uint8_pixels_and_tower():
    """What transformers <4.52 hands the vision tower of a real 4-bit tiny model:
    ``pixel_values.type(visual.get_dtype())``, where get_dtype is the storage dtype of blocks[0].mlp.fc2."""
    model = quant.load_4bit(tinymodel.build(), SKIP_BEFORE_ZOO_LIST)
    tower = quant.vision_tower(model)
    storage = tower.get_dtype() if hasattr(tower, "get_dtype") else tower.blocks[0].mlp.fc2.weight.dtype
    batch = xray_batch(next(tower.parameters()).device)
    return tower, batch["pixel_values"].type(storage), batch["image_grid_thw"]
