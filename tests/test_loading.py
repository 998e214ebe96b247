"""harness.failures.loading: a release's load-time settings and matcher read from its own code, checked on
real release_code."""

from __future__ import annotations

import pytest

from harness.core.errors import HarnessError
from harness.data import hub_server
from harness.failures import loading
from harness.lab import quant
from harness.releases import code as release_code


def release(unsloth: str, zoo: str) -> loading.Release:
    return loading.Release(release_code.from_wheel("unsloth", unsloth), release_code.from_wheel("unsloth-zoo", zoo))


ZOO_LIST = ["lm_head", "multi_modal_projector", "merger", "modality_projection"]


@pytest.mark.parametrize(
    "unsloth, zoo, skips, where",
    [
        ("2024.11.11", "2024.11.8", None, "unsloth/models/vision.py:130"),  # no skip list: the seed's full 4-bit
        ("2024.12.1", "2024.11.8", None, "unsloth/models/vision.py:131"),  # the skip list still commented out
        ("2024.12.11", "2024.12.6", ZOO_LIST, "unsloth/models/vision.py:130"),
        ("2025.3.15", "2025.3.13", ZOO_LIST, "unsloth/models/vision.py:267"),  # SKIP_QUANTIZATION_MODULES.copy()
    ],
)
def test_load_time_settings_are_evaluated_from_the_release(unsloth, zoo, skips, where):
    settings = loading.load_time_settings(release(unsloth, zoo))
    assert settings.skip_modules == skips and settings.where == where
    assert settings.kwargs["bnb_4bit_quant_type"] == "nf4" and settings.kwargs["bnb_4bit_use_double_quant"] is True


def test_the_newest_release_adds_its_architecture_list_to_the_zoo_list():
    # 2026.10.1: _skip_modules = SKIP_QUANTIZATION_MODULES.copy() + _architecture_skip_modules(model_types)
    settings = loading.load_time_settings(release("2026.10.1", "2026.10.7"))
    assert "visual" in settings.skip_modules and "out_proj" not in settings.skip_modules  # nothing extra for qwen2_vl


def test_a_pair_that_cannot_import_is_refused():
    with pytest.raises(
        HarnessError,
        match="unsloth==2024.12.11 imports SKIP_QUANTIZATION_MODULES, which "
        "unsloth-zoo==2024.11.8 lacks: that pair fails at import",
    ):
        loading.load_time_settings(release("2024.12.11", "2024.11.8"))


def test_use_exact_model_name_exists_from_2025_1_1():
    assert not release("2024.12.11", "2024.12.6").has_exact_names()
    assert release("2025.1.5", "2025.1.3").has_exact_names()
    with pytest.raises(HarnessError, match="has no use_exact_model_name"):
        loading.plan(release("2024.12.11", "2024.12.6"), "unsloth/Qwen2-VL-7B-Instruct", exact=True)


def test_ship_dates_come_from_the_wheels():
    assert str(release("2024.11.11", "2024.11.8").shipped) == "2024-11-26"
    assert str(release("2025.1.6", "2025.1.4").shipped) == "2025-01-20"


@pytest.mark.slow
def test_the_release_matcher_is_what_lets_transformers_5_read_the_dynamic_repos(tiny_checkpoint, hub_for):
    """transformers 5 matches llm_int8_skip_modules by prefix or suffix, so the dynamic repo's
    "visual.blocks.0.mlp" misses model.visual.blocks.0.mlp.fc1 and its 16-bit weights land in
    Linear4bit modules without quantization state; unsloth-zoo's matcher (component match) reads it right.
    On transformers 4.x, which matches substrings, both load it right."""
    import transformers
    import transformers.quantizers.quantizers_utils as quantizers_utils

    server = hub_for("2024-12")
    newest = release("2026.10.1", "2026.10.7")
    original = getattr(quantizers_utils, "should_convert_module", None)
    with hub_server.pointed_at(server):
        plain = quant.linears(
            transformers.Qwen2VLForConditionalGeneration.from_pretrained(
                "unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit", device_map=quant.device()
            )
        )
        with loading.release_matcher(newest) as matcher:
            matched = quant.linears(
                transformers.Qwen2VLForConditionalGeneration.from_pretrained(
                    "unsloth/Qwen2-VL-7B-Instruct-unsloth-bnb-4bit", device_map=quant.device()
                )
            )
    assert getattr(quantizers_utils, "should_convert_module", None) is original  # restored
    assert not matched.missing_quant_state and len(matched.quantized_under("visual")) == 4
    if original is None:  # transformers 4.x
        assert matcher is None and not plain.missing_quant_state
    else:
        assert matcher is not original
        assert plain.missing_quant_state and all("visual" in n and ".mlp." in n for n in plain.missing_quant_state)
