"""Seed failure 'dtype-grad': `only Tensors of floating point dtype can require gradients` while fine-tuning.

Every release runs its own unsloth-zoo hook code (harness.failures.dtype_grad) on a tiny Qwen2-VL,
4-bit with the release's skip list, prepared like unsloth's get_peft_model, and steps on a real
X-ray. Expectations come from the registry (fixtures/known_failures.toml, id "dtype-grad"); the
report's path (vision LoRA) only where the installed transformers really casts the pixels to a
non-float dtype (measured in the same step). These tests call the release's hook themselves, as
unsloth's get_peft_model does from unsloth 2025.1.1: they test the cause.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.failures import dtype_grad
from harness.failures.base import subject_of
from harness.lab import compat, quant, tinymodel
from harness.pytest import require, summary

FAILURE = dtype_grad.DtypeGrad()
RELEASES = FAILURE.params(shows="cause")
UNMARKED = [pytest.param(p.values[0], id=p.id) for p in RELEASES]
PROBE_TABLE = ("dtype-grad: vision LoRA step, root-cause probe", ["release", "outcome", "probe"])
KWARGS_TABLE = (
    "dtype-grad: release pre-hook on calls without positional arguments (recorded)",
    ["release", "call", "outcome"],
)
TABLE_ROWS: dict[tuple, list] = {}


@pytest.fixture(scope="session", autouse=True)
def one_table_per_kind(pytestconfig):
    """Rows added by the tests below, shown as one table each in the terminal summary."""
    yield
    for (title, header), rows in TABLE_ROWS.items():
        summary.add_table(pytestconfig, title, header, rows)


def add_rows(table, *rows) -> None:
    TABLE_ROWS.setdefault((table[0], tuple(table[1])), []).extend(rows)


@functools.cache
def vision_step(param) -> dtype_grad.Step:
    return FAILURE.reproduce(subject_of(param), vision=True)


def apply_registry_where_pixels_are_integers(step: dtype_grad.Step, param, request) -> None:
    """The report's trigger exists only where the pixels reach the vision tower as integers; there the
    release's hook may fail on them, and the registry says whether it must."""
    if step.pixels_cast_to_non_float:
        for mark in FAILURE.marks(param[1], shows="cause"):
            request.applymarker(mark)
    else:
        request.applymarker(pytest.mark.known_failure(FAILURE.id, version=param[1]))


@pytest.mark.slow
@pytest.mark.parametrize("param", UNMARKED)
def test_vision_lora_step_trains(param, request):
    """The report's path: LoRA on vision and language layers, one step on a chest X-ray; a finite loss
    and non-zero language LoRA gradients, except where the registry expects the seed error."""
    step = vision_step(param)
    apply_registry_where_pixels_are_integers(step, param, request)
    outcome = f"{type(step.error).__name__}" if step.error else f"loss {step.loss:.4f}"
    add_rows(PROBE_TABLE, [step.label, outcome, step.probe().split(": ", 1)[1]])
    step.assert_trains(vision=False)


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
    apply_registry_where_pixels_are_integers(step, param, request)
    if step.vision_blocks_checkpointed_without_grad_input:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="the checkpointed vision blocks get an input that does not require grad: no vision LoRA gradient",  # noqa: E501 (a message kept whole, to be found by grep)
            )
        )
    step.assert_trains(vision=True)


@pytest.mark.slow
@pytest.mark.parametrize("param", RELEASES)
def test_modules_to_save_embeddings_step_trains(param):
    """Trigger B: int64 input_ids enter the hooked embedding wrapper; reproduces on any stack."""
    FAILURE.reproduce(subject_of(param), vision=False, modules_to_save=["embed_tokens"]).assert_trains(vision=False)


def release_pre_hook(param) -> dtype_grad.HookSite:
    """The release's own requires_grad_pre_hook, as it installed it on a real model."""
    code = subject_of(param)
    if dtype_grad.requires_grad_function(dtype_grad.peft_utils(code)) is None:
        pytest.skip(
            f"unsloth-zoo {param[1]} predates {dtype_grad.FUNCTION} (added in 2025.1.1); "
            "unsloth then used transformers' enable_input_require_grads"
        )
    return dtype_grad.pre_hook(dtype_grad.hooked_embedding_model(code))


@pytest.mark.parametrize("param", RELEASES)
def test_release_hook_given_the_pixels_transformers_4x_feeds_visual(param):
    """The release's own hook, called as torch calls it on ``visual(pixel_values, grid_thw=...)``."""
    site = release_pre_hook(param)
    tower, pixels, grid = dtype_grad.uint8_pixels_and_tower()
    assert not pixels.is_floating_point(), f"a 4-bit vision tower's get_dtype() gave {pixels.dtype}"
    site.call(tower, (pixels,), {"grid_thw": grid})
    assert not pixels.requires_grad


@pytest.mark.parametrize("param", UNMARKED)
def test_floating_pixels_remove_the_error(param):
    """The same call with the pixels the vision tower gets from transformers >=4.52 (floating): every
    release's hook, the affected ones included, marks them and raises nothing. With the test above,
    the reproduction flips when its cause, a non-floating first input, is removed."""
    site = release_pre_hook(param)
    tower, pixels, grid = dtype_grad.uint8_pixels_and_tower()
    floating = pixels.to(torch.bfloat16)
    site.call(tower, (floating,), {"grid_thw": grid})
    assert floating.requires_grad


DTYPES = [
    torch.float32,
    torch.bfloat16,
    torch.float16,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int32,
    torch.int64,
    torch.bool,
]
KWARG_NAMES = ["grid_thw", "hidden_states", "pixel_values", "inputs_embeds", "attention_mask", "position_ids"]
tensors = st.builds(
    lambda dtype, shape: torch.zeros(shape, dtype=dtype),
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 3), max_size=3),
)
values = st.recursive(
    st.one_of(tensors, st.none(), st.integers(-2, 2), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple)),
    max_leaves=6,
)
# torch passes a pre-hook the positional arguments; the first is the module's input.
calls = st.tuples(
    tensors,
    st.lists(values, max_size=3),
    st.dictionaries(st.sampled_from(KWARG_NAMES), values, max_size=3),
    st.sampled_from([tuple, list]),
)


@pytest.mark.parametrize("param", RELEASES)
def test_pre_hook_contract(param):
    """For any call whose first positional argument is a tensor of any dtype or shape, followed by
    anything (nested tuples/lists of int/float/bool tensors, None, numbers) and any keyword
    arguments, a correct hook never raises and marks exactly that first tensor when it is floating.
    A call with no positional argument (kwargs only, or nothing) is recorded, not asserted."""
    site = release_pre_hook(param)
    add_rows(KWARGS_TABLE, *kwargs_only_outcomes(site, subject_of(param).label))

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
        # no explain phase: on an affected release it took most of the test's time (about 3.5 s each on 2 cores)
        # for a note on which parts of the shrunk call vary freely; the shrunk call and its error stay
        phases=[p for p in Phase if p != Phase.explain],
    )
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


@require.gpu
@pytest.mark.slow
@pytest.mark.own_process
def test_fast_vision_model_lora_step_on_an_xray(request):
    """The seed's own path, through the installed releases: FastVisionModel.from_pretrained(4-bit),
    get_peft_model with vision and language layers, one training step on a chest X-ray. It must
    raise the seed error exactly where the registry puts the installed unsloth-zoo (and unsloth) and
    the installed transformers casts pixel_values to the 4-bit vision weights' dtype; elsewhere it must train."""
    from unsloth import FastVisionModel

    zoo = FAILURE.subject("", origin="installed")
    # The trigger (uint8 pixels) exists only where transformers casts them to the 4-bit weights' dtype;
    # the registry adds its own condition, an unsloth that calls the hook.
    marks = (
        FAILURE.marks_for(zoo)
        if compat.casts_pixels_to_vision_weight_dtype()
        else [pytest.mark.known_failure(FAILURE.id, version=zoo.version)]
    )
    for mark in marks:
        request.applymarker(mark)
    model, _ = FastVisionModel.from_pretrained(str(tinymodel.build()), load_in_4bit=True)
    model = FastVisionModel.get_peft_model(
        model,
        finetune_vision_layers=True,
        finetune_language_layers=True,
        r=8,
        lora_alpha=8,
        lora_dropout=0,
        random_state=0,
    )
    FastVisionModel.for_training(model)
    batch = dtype_grad.xray_batch(model.device)
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
