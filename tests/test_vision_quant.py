"""harness.failures.vision_quant: any family's name or local checkpoint finds its family, and what cannot be
modelled offline is refused in one line."""

from __future__ import annotations

import json

import pytest

from harness.core.errors import HarnessError
from harness.failures import loading, vision_quant


@pytest.mark.parametrize(
    "name, family",
    [
        ("unsloth/gemma-3-4b-it", "gemma3"),
        ("UNSLOTH/QWEN2.5-VL-72B-INSTRUCT-BNB-4BIT", "qwen2.5-vl"),
        ("Qwen/Qwen2-VL-2B-Instruct", "qwen2-vl"),
        ("unsloth/Qwen3-VL-8B-Thinking-unsloth-bnb-4bit", "qwen3-vl"),
        ("meta-llama/Llama-3.2-90B-Vision-Instruct", "mllama"),
    ],
)
def test_a_hub_name_of_any_size_finds_its_family(name, family):
    assert loading.family_of(name).id == family


def test_a_local_checkpoint_finds_its_family_by_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mllama"}))
    assert loading.family_of(str(tmp_path)).id == "mllama"


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "is a folder without a config.json naming its model_type"),
        ({"model_type": "llava"}, "model_type 'llava' is no family's; families: gemma3 (gemma3), mllama (mllama)"),
    ],
)
def test_a_folder_of_no_family_is_one_line(tmp_path, config, message):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HarnessError) as raised:
        loading.family_of(str(tmp_path))
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_unknown_name_is_one_line():
    with pytest.raises(HarnessError) as raised:
        loading.family_of("unsloth/Pixtral-12B")
    assert str(raised.value) == (
        "'unsloth/Pixtral-12B' is no family's hub name and no local checkpoint; "
        "`qvl-harness families` lists the families"
    )


def test_a_hub_name_the_snapshot_has_no_repo_of_is_refused():
    """The local hub's snapshots hold Qwen2-VL repos only: a Gemma 3 name cannot be served, so it is refused
    rather than answered with a 404 that would read as a missing repo."""
    release = loading.release_of("2026.10.7", "2026.10.7")
    with pytest.raises(HarnessError) as raised:
        loading.what_loads(release, "unsloth/gemma-3-4b-it", processor=None, fixtures=[], hub_for=None)
    assert "has no Gemma 3 repo: load a local checkpoint of gemma3 instead" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_every_family_has_a_registry_entry_for_its_vision_quantization():
    from harness.families import registry as families

    release = loading.release_of("2026.10.7", "2026.10.7")
    speakers = {f.id: vision_quant.failure_for(release, f)[0].id for f in families.families()}
    assert speakers == {
        "gemma3": "gemma3-vision-4bit-at-load",
        "mllama": "mllama-vision-4bit-at-load",
        "qwen2-vl": "vision-4bit-at-load",
        "qwen2.5-vl": "vision-4bit-at-load",
        "qwen3-vl": "vision-4bit-at-load",
    }
