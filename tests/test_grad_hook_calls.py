"""What the gradient-hook suite measures in a step: each hooked call (positional or keywords only, the output's
type) and the known failure whose trigger it is, on small modules hooked by a real unsloth-zoo release."""

import pytest
import torch

from harness.failures import dtype_grad, grad_hooks
from harness.families import registry as families
from harness.releases import code as release_code


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    def forward(self, inputs_embeds):
        for layer in self.layers:
            inputs_embeds = layer(inputs_embeds)
        return inputs_embeds


class Tower(torch.nn.Module):
    """Like SigLIP: the encoder holding the first trainable layer is called with keywords only."""

    def __init__(self):
        super().__init__()
        self.encoder = Encoder()

    def forward(self, x):
        return self.encoder(inputs_embeds=x)


def hooked_tower(version: str) -> Tower:
    tower = Tower()
    dtype_grad.requires_grad_function(dtype_grad.peft_utils(release_code.from_wheel("unsloth-zoo", version)))(tower)
    return tower


def measured(calls) -> grad_hooks.FamilyStep:
    return grad_hooks.FamilyStep(families.family("gemma3"), dtype_grad.Step("toy"), list(calls))


def test_a_keywords_only_call_of_a_pre_hooked_module_is_the_trigger_of_2131():
    tower = hooked_tower("2025.3.16")
    with grad_hooks.record_hook_calls(tower) as calls, pytest.raises(RuntimeError, match="Failed to make input"):
        tower(torch.zeros(1, 4))
    assert calls == [grad_hooks.HookCall("encoder", "pre", False, None)]
    assert measured(calls).triggers() == [grad_hooks.PreHookWithoutArguments.id]
    assert measured(calls).describe() == "pre-hook on encoder: keywords only"


def test_a_positional_floating_call_triggers_nothing():
    tower = hooked_tower("2025.3.16")
    with grad_hooks.record_hook_calls(tower) as calls:
        tower.encoder(torch.zeros(1, 4))
    assert calls == [grad_hooks.HookCall("encoder", "pre", True, torch.float32)]
    assert measured(calls).triggers() == []


def test_an_integer_input_is_the_trigger_of_dtype_grad():
    step = measured([grad_hooks.HookCall("visual", "pre", True, torch.uint8)])
    assert step.triggers() == [dtype_grad.DtypeGrad.id]


def test_a_post_hook_returning_a_model_output_is_the_trigger_of_1613():
    outputs = [grad_hooks.HookCall("", "post", True, torch.int64, "Qwen2_5_VLCausalLMOutputWithPast")]
    assert measured(outputs).triggers() == [grad_hooks.PostHookOnModelOutput.id]
    tensors = [grad_hooks.HookCall("embed_tokens", "post", True, torch.int64, "Tensor")]
    assert measured(tensors).triggers() == []


def test_the_recorder_leaves_no_hook_behind():
    tower = hooked_tower("2025.3.16")
    before = (dict(tower.encoder._forward_pre_hooks), dict(tower.encoder._forward_hooks))
    with grad_hooks.record_hook_calls(tower):
        pass
    assert (dict(tower.encoder._forward_pre_hooks), dict(tower.encoder._forward_hooks)) == before
