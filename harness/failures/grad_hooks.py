"""The gradient-hook class over families: a release's requires_grad hooks through a vision LoRA step.

unsloth-zoo's ``requires_grad_for_gradient_checkpointing`` (zoo 2025.1.1 on) picks the module that feeds
the first trainable LoRA layer from the model's own forward source and hooks it: a post-hook on its
input embeddings, else a pre-hook on the module, else (nothing matched) a post-hook on the root. Which
hook lands where, and what it is handed, depends on the family and on the transformers release, so the
same release code is run on every family's tiny model (harness.families), 4-bit with the release's
skip list, as unsloth's get_peft_model prepares it (harness.failures.dtype_grad), for one step on a
real X-ray. The incidents it reproduces: dtype-grad (a non-floating input), #1613 (a
post-hook handed the ModelOutput, its cause) and #2131 (SigLIP's encoder pre-hooked, called with keywords only).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.data import xrays
from harness.failures import dtype_grad
from harness.failures.base import Failure
from harness.families import registry, tiny
from harness.families.base import Family
from harness.lab import compat, quant
from harness.releases.code import ReleaseCode

ANSWER = " chest radiograph frontal view"


def load_4bit(family: Family, skip_modules):
    """The family's tiny checkpoint quantized at load to nf4, ``skip_modules`` kept in 16 bits."""
    import torch
    import transformers

    if quant.device() == "cpu":
        compat.allow_cpu_bitsandbytes()
    return getattr(transformers, family.model_class).from_pretrained(
        family.build(),
        quantization_config=quant.bnb_config(skip_modules),
        device_map=quant.device(),
        **compat.dtype_kwarg(torch.bfloat16),
    )


def image_token_id(config) -> int:
    """The id of the token each image stands in for (``image_token_id``, or ``image_token_index`` in
    Gemma 3 and mllama on transformers 4.x)."""
    found = getattr(config, "image_token_id", None)
    return found if found is not None else config.image_token_index


def xray_batch(family: Family, device: str = "cpu") -> dict:
    """A chest X-ray with a short answer through the family's processor, labelled (image tokens not scored)."""
    return _xray_batch(family.id, device)


@functools.cache
def _xray_batch(family_id: str, device: str) -> dict:
    import transformers

    family = registry.family(family_id)
    chest = next(f for f in xrays.usable(xrays.load_manifest()) if f.body_part == "CHEST")
    path = family.build()
    processor = family.processor(path)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": tiny.PROMPT}]}]
    text = processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = dict(processor(text=[text + ANSWER], images=[chest.image().convert("RGB")], return_tensors="pt"))
    labels = inputs["input_ids"].clone()
    labels[labels == image_token_id(transformers.AutoConfig.from_pretrained(path))] = -100
    return {k: v.to(device) for k, v in {**inputs, "labels": labels}.items()}


def vision_tower(family: Family, model):
    """The family's vision tower (its first declared vision module) inside ``model``, wrappers included."""
    found = family.vision_module_paths(model)[family.vision_modules[0]]
    if not found:
        raise AttributeError(f"{type(model).__name__} has no {family.vision_modules[0]} ({family.title})")
    return model.get_submodule(min(found, key=len))


@contextmanager
def record_vision_input(tower):
    """The dtype of the first tensor entering the vision tower, seen before any other pre-hook runs."""
    seen: list = []

    def probe(module, args, kwargs):
        tensor = dtype_grad.first_tensor(args, kwargs)
        if tensor is not None:
            seen.append(tensor.dtype)

    handle = tower.register_forward_pre_hook(probe, with_kwargs=True, prepend=True)
    try:
        yield seen
    finally:
        handle.remove()


def lora_model(code: ReleaseCode, family: Family, *, vision: bool = True):
    """The family's tiny model through FastVisionModel.get_peft_model's steps (vision layers too, by default),
    with the release's own skip list, target regex and requires_grad_for_gradient_checkpointing."""
    module = dtype_grad.peft_utils(code)
    skip = getattr(module, "SKIP_QUANTIZATION_MODULES", dtype_grad.SKIP_BEFORE_ZOO_LIST)
    model = dtype_grad.prepare_for_training(load_4bit(family, skip))
    targets = module.get_peft_regex(
        model,
        finetune_vision_layers=vision,
        finetune_language_layers=True,
        finetune_attention_modules=True,
        finetune_mlp_modules=True,
    )
    return dtype_grad.lora_on(model, targets, dtype_grad.requires_grad_function(module))


def language_lora_model(code: ReleaseCode, family: Family):
    """Language LoRA only: every release from zoo 2025.1.1 puts its post-hook on the input embeddings."""
    return _language_lora_model(code, family.id)


@functools.cache
def _language_lora_model(code: ReleaseCode, family_id: str):
    return lora_model(code, registry.family(family_id), vision=False)


def model_output(family: Family):
    """What the family's 4-bit tiny model returns for the labelled X-ray batch (its ModelOutput, with a loss);
    a fresh one per call, so that what a hook marks in one test is not seen in the next."""
    model = _plain_model(family.id)
    return model(**xray_batch(family, str(model.device)))


@functools.cache
def _plain_model(family_id: str):
    model = load_4bit(registry.family(family_id), dtype_grad.SKIP_BEFORE_ZOO_LIST)
    for param in model.parameters():
        if param.is_floating_point():
            param.requires_grad_(True)
    return model


@dataclass(frozen=True)
class HookCall:
    """One call of a module carrying a zoo hook, seen around the release's hook: what the forward passed
    (positional arguments or keywords only, the first positional tensor's dtype) and what the module returned."""

    module: str
    kind: str  # "pre" or "post": the zoo hook the module carries
    positional: bool
    dtype: object
    output: str = ""  # the output's type name (post-hooked modules)


@contextmanager
def record_hook_calls(model):
    """Every call of a module with a zoo hook: a pre-hook probe that runs first, and for post-hooked modules a
    forward hook that runs before the zoo's, so a call the zoo hook raises on is recorded too."""
    calls: list[HookCall] = []
    handles = []
    for site in dtype_grad.hook_sites(model):

        def before(module, args, kwargs, _site=site):
            tensor = dtype_grad.first_tensor(args)  # what the zoo's pre-hook sees: the positional arguments
            if _site.kind == "pre":
                calls.append(HookCall(_site.name, "pre", bool(args), getattr(tensor, "dtype", None)))

        def after(module, args, output, _site=site):
            tensor = dtype_grad.first_tensor(args)
            calls.append(
                HookCall(_site.name, "post", bool(args), getattr(tensor, "dtype", None), type(output).__name__)
            )

        handles.append(site.module.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        if site.kind == "post":
            handles.append(site.module.register_forward_hook(after, prepend=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class FamilyStep:
    """One step of a family's tiny model: the step (loss, gradients, the error) and every hooked call."""

    family: Family
    step: dtype_grad.Step
    calls: list[HookCall] = field(default_factory=list)

    def triggers(self) -> list[str]:
        """The known failures whose trigger this step measured: ids of the registry."""
        found = []
        if self.step.pixels_cast_to_non_float or any(
            c.kind == "pre" and not c.dtype.is_floating_point for c in self.calls if c.dtype
        ):
            found.append(dtype_grad.DtypeGrad.id)
        if any(c.kind == "pre" and not c.positional for c in self.calls):
            found.append(PreHookWithoutArguments.id)
        if any(c.kind == "post" and c.output != "Tensor" for c in self.calls):
            found.append(PostHookOnModelOutput.id)
        return found

    def describe(self) -> str:
        def one(c: HookCall) -> str:
            given = f"positional {c.dtype}" if c.positional else "keywords only"
            return f"{c.kind}-hook on {c.module or '<root>'}: {given}" + (f" -> {c.output}" if c.output else "")

        return "; ".join(one(c) for c in dict.fromkeys(self.calls)) or "no hooked module was called"


def train_step(code: ReleaseCode, family: Family) -> FamilyStep:
    """One forward/backward of the family's tiny model with the release's hooks; the error, if any, is the result."""
    step = dtype_grad.Step(f"{code.label} on {family.id}", vision_marker=f".{family.vision_modules[0]}.")
    try:
        model = lora_model(code, family)
    except Exception as exc:  # noqa: BLE001 - the release failed while installing its hooks; that is the result
        step.error = exc
        return FamilyStep(family, step)
    model.train()
    batch = xray_batch(family, str(model.device))
    with (
        record_vision_input(vision_tower(family, model)) as pixels,
        dtype_grad.record_hooked_inputs(model) as hooked,
        record_hook_calls(model) as calls,
    ):
        step.run(model, batch)
        step.pixel_dtypes, step.hooked_inputs = list(pixels), list(hooked)
    step.finish(model)
    return FamilyStep(family, step, list(calls))


class GradHookFailure(Failure):
    """A failure of the release's requires_grad hooks on a family's vision LoRA step."""

    def reproduce(self, subject: ReleaseCode, *, family: Family) -> FamilyStep:
        return train_step(subject, family)


class PreHookWithoutArguments(GradHookFailure):
    """#2131: the pre-hook sits on a module its parent calls with keywords only (Gemma 3's SigLIP encoder)."""

    id = "pre-hook-no-arguments"
    RAISED = "RuntimeError: Unsloth: Failed to make input require gradients!"  # the zoo's own error
    messages = {"cause": (RAISED,), "symptom": (RAISED,)}


class PostHookOnModelOutput(GradHookFailure):
    """#1613: the post-hook sits on a module returning a ModelOutput, which has no requires_grad_."""

    id = "post-hook-model-output"
    RAISED = "AttributeError: 'Qwen2_5_VLCausalLMOutputWithPast' object has no attribute 'requires_grad_'"
    messages = {"cause": (RAISED,), "symptom": (RAISED,)}
