import sys

import pytest
import torch

from harness.core.errors import HarnessError
from harness.failures import dtype_grad
from harness.releases import code as release_code
from harness.releases.sandbox import Sandbox


class Tower(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)])

    def forward(self, x, scale=None):
        for blk in self.blocks:
            x = blk(x.float())
        return x


class TwoStage(torch.nn.Module):
    """The first trainable layer sits in a `for blk in self.blocks:` loop, like Qwen2-VL's vision tower."""

    def __init__(self):
        super().__init__()
        self.tower = Tower()

    def forward(self, x):
        return self.tower(x)


def zoo(version):
    return dtype_grad.peft_utils(release_code.from_wheel("unsloth-zoo", version))


def hooked_model(version):
    model = TwoStage()
    dtype_grad.requires_grad_function(zoo(version))(model)
    return model


def test_release_code_runs_from_the_wheel_without_the_package():
    module = zoo("2025.3.13")
    assert module.__file__.endswith("unsloth_zoo-2025.3.13-py3-none-any.whl/unsloth_zoo/peft_utils.py")
    assert "torch.is_floating_point(input[0])" in release_code.from_wheel("unsloth-zoo", "2025.3.13").read(
        "unsloth_zoo/peft_utils.py"
    )
    assert callable(dtype_grad.requires_grad_function(module))
    assert "unsloth_zoo" not in sys.modules or sys.modules["unsloth_zoo"].__dict__ is not module.__dict__


def test_relative_imports_load_sibling_files_of_the_same_release():
    sandbox = Sandbox(release_code.from_wheel("unsloth-zoo", "2026.10.7"), "unsloth_zoo")
    module = sandbox.module("peft_utils")
    assert {"log", "empty_model"} <= set(sandbox.loaded)
    assert module.logger is sandbox.loaded["log"].logger
    assert sandbox.loaded["log"].__file__.endswith("unsloth_zoo-2026.10.7-py3-none-any.whl/unsloth_zoo/log.py")


def test_releases_before_the_function_have_none():
    assert dtype_grad.requires_grad_function(zoo("2024.12.6")) is None
    assert dtype_grad.requires_grad_function(zoo("2024.11.8")) is None
    assert dtype_grad.requires_grad_function(None) is None


def test_missing_file_and_wrong_package_are_one_line_errors():
    with pytest.raises(HarnessError, match="has no unsloth_zoo/nope.py"):
        Sandbox(release_code.from_wheel("unsloth-zoo", "2025.3.13"), "unsloth_zoo").module("nope")
    with pytest.raises(HarnessError, match="not unsloth"):
        dtype_grad.peft_utils(release_code.ReleaseCode("unsloth", "2025.1.5", "installed"))


# Matrix releases only: their wheels are what `qvl-harness releases fetch` puts in the cache.
@pytest.mark.parametrize("version, raises", [("2025.1.4", True), ("2025.3.13", False)])
def test_pre_hook_is_found_and_called_as_torch_calls_it(version, raises):
    model = hooked_model(version)
    site = dtype_grad.pre_hook(model)
    assert (site.name, site.kind, site.with_kwargs) == ("tower", "pre", False)
    ids = torch.arange(4).reshape(1, 4)
    if raises:
        with pytest.raises(RuntimeError, match=dtype_grad.DtypeGrad().entry.symptom):
            site.call(site.module, (ids,), {"scale": 1})
    else:
        site.call(site.module, (ids,), {"scale": 1})
    floats = torch.zeros(1, 4)
    site.call(site.module, (floats,))
    assert floats.requires_grad


def test_record_hooked_inputs_sees_the_tensor_before_the_zoo_hook_raises():
    model = hooked_model("2025.1.4")
    with (
        dtype_grad.record_hooked_inputs(model) as seen,
        pytest.raises(RuntimeError, match=dtype_grad.DtypeGrad().entry.symptom),
    ):
        model(torch.ones(2, 4, dtype=torch.uint8))
    assert seen == [("tower", torch.uint8, (2, 4))]


def test_pre_hook_names_where_the_hooks_went_when_there_is_no_single_pre_hook():
    with pytest.raises(HarnessError, match="expected one requires_grad_pre_hook on the model, found no hooks"):
        dtype_grad.pre_hook(TwoStage())
