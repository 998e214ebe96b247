"""Seed failure 2, 'only Tensors of floating point dtype can require gradients' while fine-tuning.

unsloth-zoo's `requires_grad_for_gradient_checkpointing` puts `requires_grad_pre_hook` on the module
that feeds the first LoRA layer. Releases before the fix call `input[0].requires_grad_(True)` on
whatever tensor enters it. Two real stacks hand it an integer tensor:

- the report's path (trigger A): LoRA on the vision layers (FastVisionModel.get_peft_model's
  default) puts the pre-hook on the vision tower, and transformers <4.52 casts pixel_values to
  `visual.get_dtype()`, the storage dtype of a bitsandbytes 4-bit vision block: uint8;
- `modules_to_save=["embed_tokens"]` (trigger B) puts it on the embedding wrapper: int64 input_ids.

Every release runs its own code (harness.zoo_hook) on a tiny Qwen2-VL, 4-bit with the release's
skip list, prepared like unsloth's get_peft_model, and steps on a real X-ray. Expectations come
from the registry (fixtures/known_failures.toml, id "dtype-grad"); trigger A's only where the
installed transformers really casts the pixels to a non-float dtype (probed in the same step).
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import inference, known, quant, subjects, summary, tinymodel, zoo_hook

FAILURE = "dtype-grad"
# These tests call the release's requires_grad_for_gradient_checkpointing themselves, as unsloth's
# get_peft_model does from unsloth 2025.1.1: they test the cause, the hook.
RELEASES = subjects.release_params("unsloth-zoo", FAILURE, shows="cause")
UNMARKED = [pytest.param(p.values[0], id=p.id) for p in RELEASES]
# Releases without SKIP_QUANTIZATION_MODULES (before 2024.12) left the same modules in 16 bits.
SKIP_BEFORE_ZOO_LIST = ("lm_head", "multi_modal_projector", "merger")
ANSWER = "chest radiograph frontal view"
PROBE_TABLE = ("dtype-grad: vision LoRA step, root-cause probe", ["release", "outcome", "probe"])
KWARGS_TABLE = ("dtype-grad: release pre-hook on calls without positional arguments (recorded)", ["release", "call", "outcome"])
TABLE_ROWS: dict[tuple, list] = {}


@pytest.fixture(scope="session", autouse=True)
def one_table_per_record(pytestconfig):
    """Rows recorded by the tests below, shown as one table each in the terminal summary."""
    yield
    for (title, header), rows in TABLE_ROWS.items():
        summary.add_table(pytestconfig, title, header, rows)


def record(table, *rows) -> None:
    TABLE_ROWS.setdefault((table[0], tuple(table[1])), []).extend(rows)


@functools.cache
def release(param):
    """(peft_utils module or None, the release's requires_grad function or None) for a release param."""
    module = zoo_hook.peft_utils(subjects.release_code(param))
    return module, zoo_hook.requires_grad_function(module)


def prepare_for_training(model):
    """unsloth's prepare_model_for_kbit_training: only LoRA trains, reentrant checkpointing, and
    transformers' input-embedding hook (unsloth runs it before and after the zoo call)."""
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_A." in name or ".lora_B." in name)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.enable_input_require_grads()
    return model


def lora_model(param, *, vision: bool, modules_to_save=None):
    """The tiny Qwen2-VL through FastVisionModel.get_peft_model's steps, with the release's own
    skip list, target regex and requires_grad_for_gradient_checkpointing."""
    import peft

    peft_utils, requires_grad = release(param)
    skip = getattr(peft_utils, "SKIP_QUANTIZATION_MODULES", SKIP_BEFORE_ZOO_LIST)
    model = prepare_for_training(quant.load_4bit(tinymodel.build(), skip))
    targets = peft_utils.get_peft_regex(
        model, finetune_vision_layers=vision, finetune_language_layers=True,
        finetune_attention_modules=True, finetune_mlp_modules=True,
    )
    torch.manual_seed(3407)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0, bias="none",
                             task_type="CAUSAL_LM", modules_to_save=modules_to_save)
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
    from harness import xrays

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
    checkpointed_block_inputs: list[bool] = field(default_factory=list)  # requires_grad of each checkpointed vision block's input
    error: BaseException | None = None

    def lora_grads(self, vision: bool) -> dict[str, float]:
        return {n: g for n, g in self.grads.items() if (".visual." in n) == vision and ".lora_" in n}

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
        return (f"{self.label}: pixel_values entering the vision tower: {self.pixel_dtypes[0] if self.pixel_dtypes else 'not reached'}; "
                f"tensor entering the module with the zoo hook: {hooked}")


def train_step(param, **setup) -> Step:
    step = Step(subjects.release_code(param).label)
    try:
        model = lora_model(param, **setup)
    except Exception as exc:  # the release failed while installing its hooks; that is the result
        step.error = exc
        return step
    model.train()
    batch = xray_batch(model.device)
    with quant.record_vision_input(model.get_base_model()) as pixels, zoo_hook.record_hooked_inputs(model) as hooked, \
            record_checkpointed_block_inputs(quant.vision_tower(model)) as blocks:
        try:
            loss = model(**batch).loss
            loss.backward()
            step.loss = loss.item()
        except Exception as exc:
            step.error = exc
        step.pixel_dtypes, step.hooked_inputs, step.checkpointed_block_inputs = list(pixels), list(hooked), list(blocks)
    if step.error is not None:
        step.error.add_note(step.probe())
    step.grads = {n: (0.0 if p.grad is None else p.grad.float().norm().item())
                  for n, p in model.named_parameters() if p.requires_grad}
    return step


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


@functools.cache
def vision_step(param) -> Step:
    return train_step(param, vision=True)


def assert_trains(step: Step, vision: bool) -> None:
    if step.error is not None:
        raise step.error
    assert step.loss is not None and math.isfinite(step.loss), f"{step.label}: loss {step.loss}"
    grads = step.lora_grads(vision)
    where = "vision" if vision else "language"
    assert grads, f"{step.label}: no {where} LoRA parameters are trainable"
    zero = sorted(n for n, g in grads.items() if not g > 0)
    assert not zero, f"{step.label}: {len(zero)}/{len(grads)} {where} LoRA gradients are zero, e.g. {zero[0]}. {step.probe()}"


@pytest.mark.slow
@pytest.mark.parametrize("param", UNMARKED)
def test_vision_lora_step_trains(param, request):
    """The report's path: LoRA on vision and language layers, one step on a chest X-ray.

    Reproduces where the release is in the registry's range and the installed transformers casts
    pixel_values to a non-float dtype before the vision tower (transformers <4.52 with a 4-bit
    vision tower); elsewhere the step must give a finite loss and non-zero language LoRA gradients.
    """
    step = vision_step(param)
    if step.pixels_cast_to_non_float:
        for mark in known.expectation_marks(FAILURE, param[1], shows="cause"):
            request.applymarker(mark)
    else:
        request.applymarker(pytest.mark.known_failure(FAILURE, version=param[1]))
    outcome = f"{type(step.error).__name__}" if step.error else f"loss {step.loss:.4f}"
    record(PROBE_TABLE, [step.label, outcome, step.probe().split(": ", 1)[1]])
    assert_trains(step, vision=False)


@pytest.mark.slow
@pytest.mark.parametrize("param", UNMARKED)
def test_vision_lora_gradients_reach_the_vision_tower(param, request):
    """Finding, separate from the registry: where transformers (>=4.47) runs the vision blocks through
    reentrant gradient checkpointing and nothing entering them requires grad, torch records no graph
    through the blocks and every vision LoRA gradient is zero. That happens when the release's hook
    cannot mark the pixels (no hook before zoo 2025.1.1; uint8 pixels for the fixed hook, which skips
    non-floating tensors). Expected to fail exactly there (strict), measured in the step itself;
    transformers 4.46 does not checkpoint the vision blocks, so its vision LoRA gets gradients, though
    it learns from pixels truncated to integers."""
    step = vision_step(param)
    if step.pixels_cast_to_non_float:  # the release's hook may fail first, on the pixels: the registry decides
        for mark in known.expectation_marks(FAILURE, param[1], shows="cause"):
            request.applymarker(mark)
    if step.vision_blocks_checkpointed_without_grad_input:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="the checkpointed vision blocks get an input that does not require grad: no vision LoRA gradient"))
    assert_trains(step, vision=True)


@functools.cache
def embedding_wrapper_model(param):
    """Language LoRA with modules_to_save=['embed_tokens']: the zoo's pre-hook lands on the
    embedding wrapper on every transformers version (trigger B)."""
    return lora_model(param, vision=False, modules_to_save=["embed_tokens"])


@pytest.mark.slow
@pytest.mark.parametrize("param", RELEASES)
def test_modules_to_save_embeddings_step_trains(param, request):
    """Trigger B: int64 input_ids enter the hooked embedding wrapper; reproduces on any stack."""
    try:
        model = embedding_wrapper_model(param)
    except Exception as exc:  # noqa: BLE001 - the release's own setup failure is the outcome
        step = Step(subjects.release_code(param).label, error=exc)
    else:
        step = Step(subjects.release_code(param).label)
        batch = xray_batch(model.device)
        with zoo_hook.record_hooked_inputs(model) as hooked:
            try:
                loss = model(**batch).loss
                loss.backward()
                step.loss = loss.item()
            except RuntimeError as exc:
                exc.add_note(f"{step.label}: tensors entering the modules with the zoo hook: {hooked}")
                raise
        step.grads = {n: (0.0 if p.grad is None else p.grad.float().norm().item())
                      for n, p in model.named_parameters() if p.requires_grad}
    assert_trains(step, vision=False)


def release_pre_hook(param) -> zoo_hook.HookSite:
    """The release's own requires_grad_pre_hook, as it installed it on a real model."""
    if release(param)[1] is None:
        pytest.skip(f"unsloth-zoo {param[1]} predates {zoo_hook.FUNCTION} (added in 2025.1.1); "
                    "unsloth then used transformers' enable_input_require_grads")
    return zoo_hook.pre_hook(embedding_wrapper_model(param))


@functools.cache
def uint8_pixels_and_tower():
    """What transformers <4.52 hands the vision tower of a real 4-bit tiny model:
    ``pixel_values.type(visual.get_dtype())``, where get_dtype is the storage dtype of blocks[0].mlp.fc2."""
    model = quant.load_4bit(tinymodel.build(), SKIP_BEFORE_ZOO_LIST)
    tower = quant.vision_tower(model)
    storage = tower.get_dtype() if hasattr(tower, "get_dtype") else tower.blocks[0].mlp.fc2.weight.dtype
    batch = xray_batch(next(tower.parameters()).device)
    return tower, batch["pixel_values"].type(storage), batch["image_grid_thw"]


@pytest.mark.parametrize("param", RELEASES)
def test_release_hook_given_the_pixels_transformers_4x_feeds_visual(param):
    """The release's own hook, called as torch calls it on ``visual(pixel_values, grid_thw=...)``."""
    site = release_pre_hook(param)
    tower, pixels, grid = uint8_pixels_and_tower()
    assert not pixels.is_floating_point(), f"a 4-bit vision tower's get_dtype() gave {pixels.dtype}"
    site.call(tower, (pixels,), {"grid_thw": grid})
    assert not pixels.requires_grad


@pytest.mark.parametrize("param", UNMARKED)
def test_floating_pixels_remove_the_error(param):
    """The same call with the pixels the vision tower gets from transformers >=4.52 (floating): every
    release's hook, the affected ones included, marks them and raises nothing. With the test above,
    the reproduction flips when its cause, a non-floating first input, is removed."""
    site = release_pre_hook(param)
    tower, pixels, grid = uint8_pixels_and_tower()
    floating = pixels.to(torch.bfloat16)
    site.call(tower, (floating,), {"grid_thw": grid})
    assert floating.requires_grad


DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64,
          torch.uint8, torch.int8, torch.int32, torch.int64, torch.bool]
KWARG_NAMES = ["grid_thw", "hidden_states", "pixel_values", "inputs_embeds", "attention_mask", "position_ids"]
tensors = st.builds(lambda dtype, shape: torch.zeros(shape, dtype=dtype),
                    st.sampled_from(DTYPES), st.lists(st.integers(0, 3), max_size=3))
values = st.recursive(st.one_of(tensors, st.none(), st.integers(-2, 2), st.booleans()),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple)),
                      max_leaves=6)
# torch passes a pre-hook the positional arguments; the first is the module's input.
calls = st.tuples(tensors, st.lists(values, max_size=3), st.dictionaries(st.sampled_from(KWARG_NAMES), values, max_size=3),
                  st.sampled_from([tuple, list]))


@pytest.mark.parametrize("param", RELEASES)
def test_pre_hook_contract(param):
    """For any call whose first positional argument is a tensor of any dtype or shape, followed by
    anything (nested tuples/lists of int/float/bool tensors, None, numbers) and any keyword
    arguments, a correct hook never raises and marks exactly that first tensor when it is floating.
    A call with no positional argument (kwargs only, or nothing) is recorded, not asserted."""
    site = release_pre_hook(param)
    record(KWARGS_TABLE, *kwargs_only_outcomes(site, subjects.release_code(param).label))

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(call=calls)
    def holds(call):
        first, rest, kwargs, container = call
        site.call(site.module, container([first, *rest]), kwargs)
        assert first.requires_grad == first.is_floating_point()

    holds()


def kwargs_only_outcomes(site, label) -> list[list[str]]:
    rows = []
    for name, kwargs in (("no arguments", {}), ("hidden_states=float32 only", {"hidden_states": torch.zeros(2, 2)})):
        try:
            site.call(site.module, (), kwargs)
            outcome = "marks it" if kwargs and kwargs["hidden_states"].requires_grad else "no error"
        except Exception as exc:  # noqa: BLE001 - recorded
            outcome = f"{type(exc).__name__}: {exc}"
        rows.append([label, name, outcome])
    return rows


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.xdist_group("fast-vision-model")
def test_fast_vision_model_lora_step_on_an_xray(request):
    """The seed's own path, through the installed releases: FastVisionModel.from_pretrained(4-bit),
    get_peft_model with vision and language layers, one training step on a chest X-ray. It must
    raise the seed error exactly where the registry puts the installed unsloth-zoo and the installed
    transformers casts pixel_values to the 4-bit vision weights' dtype; elsewhere it must train."""
    import inspect

    import transformers.models.qwen2_vl.modeling_qwen2_vl as qwen2_vl
    from unsloth import FastVisionModel

    from harness import releases

    zoo = releases.installed("unsloth-zoo")
    casts = "visual.get_dtype()" in inspect.getsource(qwen2_vl)
    # The trigger (uint8 pixels) exists only where transformers casts them to the 4-bit weights' dtype;
    # the registry adds its own condition, an unsloth that calls the hook.
    marks = known.expectation_marks(FAILURE, zoo.version, shows="symptom") if casts else \
        [pytest.mark.known_failure(FAILURE, version=zoo.version)]
    for mark in marks:
        request.applymarker(mark)
    model, _ = FastVisionModel.from_pretrained(str(tinymodel.build()), load_in_4bit=True)
    model = FastVisionModel.get_peft_model(model, finetune_vision_layers=True, finetune_language_layers=True,
                                           r=8, lora_alpha=8, lora_dropout=0, random_state=0)
    FastVisionModel.for_training(model)
    batch = xray_batch(model.device)
    with quant.record_vision_input(model) as seen:
        try:
            loss = model(**batch).loss
            loss.backward()
        except RuntimeError as exc:
            exc.add_note(f"{zoo.label}: pixel_values entered the vision tower as {seen}")
            raise
    assert math.isfinite(loss.item()), f"{zoo.label}: loss {loss.item()}"
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), f"{zoo.label}: no LoRA gradient"
