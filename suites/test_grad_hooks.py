"""The gradient-hook class over families: each release's requires_grad hooks through a vision LoRA step.

Every matrix release of unsloth-zoo (and the installed one) runs its own
``requires_grad_for_gradient_checkpointing`` on each family's tiny model (4-bit with the release's skip
list, prepared like FastVisionModel.get_peft_model) and steps on a real chest X-ray. What entered each
hooked module is measured in the step; where it is the trigger of a known failure, the registry says
whether the release must fail with that failure's message (fixtures/known_failures.toml: dtype-grad,
post-hook-model-output #1613, pre-hook-no-arguments #2131), and everywhere else the step must train.
A family the installed transformers lacks is reported "not run: needs transformers >= X".
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from harness.failures import dtype_grad, grad_hooks
from harness.failures.base import subject_of
from harness.families import registry as families
from harness.pytest import require, summary

FAILURES = {
    f.id: f for f in (dtype_grad.DtypeGrad(), grad_hooks.PreHookWithoutArguments(), grad_hooks.PostHookOnModelOutput())
}
RELEASES = [pytest.param(p.values[0], id=p.id) for p in grad_hooks.PreHookWithoutArguments().params()]
FAMILIES = families.params()
STEP_TABLE = ("gradient hooks: vision LoRA step per family", ["release", "family", "outcome", "vision LoRA", "hooks"])
ROWS: list[list[str]] = []


@pytest.fixture(scope="module", autouse=True)
def one_table(pytestconfig):
    yield
    summary.add_table(pytestconfig, STEP_TABLE[0], STEP_TABLE[1], ROWS)


@functools.cache
def family_step(param, family_id: str) -> grad_hooks.FamilyStep:
    return grad_hooks.train_step(subject_of(param), families.family(family_id))


def apply_registry_where_triggered(step: grad_hooks.FamilyStep, param, request) -> None:
    """A known failure is judged only where its trigger reached the release's hook in this very step."""
    triggers = step.triggers()
    assert len(triggers) <= 1, f"{step.step.label}: several triggers at once ({triggers}): {step.describe()}"
    for failure_id in triggers:
        for mark in FAILURES[failure_id].marks(param[1], shows="cause"):
            request.applymarker(mark)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("param", RELEASES)
def test_vision_lora_step_trains(param, family, request):
    """LoRA on vision and language layers, the release's hooks, one step on a chest X-ray: a finite loss and a
    gradient for every language LoRA parameter, except where the registry expects the measured trigger's error."""
    step = family_step(param, family.id)
    apply_registry_where_triggered(step, param, request)
    vision = step.step.lora_grads(vision=True)
    ROWS.append(
        [
            subject_of(param).label,
            family.id,
            f"{type(step.step.error).__name__}" if step.step.error else f"loss {step.step.loss:.4f}",
            f"{sum(g > 0 for g in vision.values())}/{len(vision)} with a gradient",
            step.describe(),
        ]
    )
    step.step.assert_trains(vision=False)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("param", RELEASES)
def test_keywords_given_positionally_remove_the_error(param, family):
    """The flip of #2131: each pre-hook the release put on a module called with keywords only, called again with
    the same tensor as its positional argument, marks it and raises nothing: the keywords-only call is the cause."""
    step = family_step(param, family.id)
    calls = [c for c in step.calls if c.kind == "pre" and not c.positional]
    if not calls:
        pytest.skip(f"{step.step.label}: no pre-hooked module was called with keywords only ({step.describe()})")
    for site in dtype_grad.hook_sites(grad_hooks.lora_model(subject_of(param), family)):  # a model not stepped
        if site.kind == "pre" and site.name in {c.module for c in calls}:
            hidden = torch.zeros(1, 4, 8)
            site.call(site.module, (hidden,))
            assert hidden.requires_grad, f"{step.step.label}: the release's pre-hook on {site.name} left it alone"


def release_post_hook(param, family) -> dtype_grad.HookSite:
    """The release's own requires_grad_post_hook, as it installs it for language LoRA (on the input embeddings)."""
    code = subject_of(param)
    if dtype_grad.requires_grad_function(dtype_grad.peft_utils(code)) is None:
        pytest.skip(f"unsloth-zoo {param[1]} predates {dtype_grad.FUNCTION} (added in 2025.1.1)")
    sites = [s for s in dtype_grad.hook_sites(grad_hooks.language_lora_model(code, family)) if s.kind == "post"]
    if not sites:
        pytest.skip(f"unsloth-zoo {param[1]} puts no {dtype_grad.POST_HOOK} on {family.id}'s language LoRA")
    return sites[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("param", RELEASES)
def test_release_post_hook_given_the_model_output(param, family, request):
    """#1613's cause: the release's post-hook, where it sits on a module that returns the model's output (the root,
    when no forward in the chain names the module it looks for), handed that real output object."""
    for mark in FAILURES[grad_hooks.PostHookOnModelOutput.id].marks(param[1], shows="cause"):
        request.applymarker(mark)
    site = release_post_hook(param, family)
    output = grad_hooks.model_output(family)
    assert not isinstance(output, torch.Tensor), f"{family.id}'s forward returned a tensor"
    site.hook(site.module, (), output)
    assert output.loss.requires_grad


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("param", RELEASES)
def test_a_tensor_output_removes_the_post_hook_error(param, family):
    """The flip of #1613: the same hook handed a tensor (the logits of that output) marks it in every release."""
    site = release_post_hook(param, family)
    logits = grad_hooks.model_output(family).logits.detach()
    site.hook(site.module, (), logits)
    assert logits.requires_grad


@require.gpu
@pytest.mark.slow
@pytest.mark.own_process
@pytest.mark.parametrize("family", FAMILIES)
def test_fast_vision_model_lora_step_per_family(family, request):
    """Each family's tiny model through the installed unsloth: FastVisionModel.from_pretrained(4-bit),
    get_peft_model with vision and language layers, one training step on a chest X-ray with a finite loss and
    LoRA gradients; where the installed unsloth-zoo's hooks meet a known failure's trigger, the registry decides."""
    from unsloth import FastVisionModel

    zoo = FAILURES[grad_hooks.PreHookWithoutArguments.id].subject("", origin="installed")
    model, _ = FastVisionModel.from_pretrained(str(family.build()), load_in_4bit=True)
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
    batch = grad_hooks.xray_batch(family, str(model.device))
    step = dtype_grad.Step(zoo.label)
    with grad_hooks.record_hook_calls(model) as calls:
        step.run(model, batch)
    seen = grad_hooks.FamilyStep(family, step, list(calls))
    for failure_id in seen.triggers()[:1]:
        for mark in FAILURES[failure_id].marks_for(zoo):
            request.applymarker(mark)
    if step.error is not None:
        step.error.add_note(f"{zoo.label} on {family.id}: {seen.describe()}")
        raise step.error
    assert math.isfinite(step.loss), f"{zoo.label} on {family.id}: loss {step.loss}"
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), f"{zoo.label} on {family.id}: no LoRA gradient"
