import hashlib
import json

import pytest
import torch

from harness.lab import inference, quant, tinymodel


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_cached_and_deterministic(tiny_checkpoint, tmp_path, monkeypatch):
    assert tinymodel.build() == tiny_checkpoint
    monkeypatch.setenv("QVL_CACHE", str(tmp_path))
    again = tinymodel.build()
    assert again != tiny_checkpoint
    assert sha(again / "model.safetensors") == sha(tiny_checkpoint / "model.safetensors")
    assert sha(again / "tokenizer.json") == sha(tiny_checkpoint / "tokenizer.json")


def test_tokenizer_has_qwen2_vl_special_tokens(tiny_checkpoint, tiny_processor):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    tokenizer = tiny_processor.tokenizer
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config["vision_start_token_id"] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert tokenizer.eos_token == "<|im_end|>"
    text = tiny_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text.endswith("<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n")


def test_the_processors_video_part_passes_transformers_own_class_check(tiny_processor):
    """transformers checks each part against the class its base name resolves to through
    get_possibly_dynamic_module (4.52 in __init__, 4.53 on in check_argument_for_proper_class); without
    torchvision "BaseVideoProcessor" resolves to a dummy, so a shim that lifted only the 4.53 check let
    every 4.52.x run fail at setup ("Received a BaseVideoProcessor ..., but a BaseVideoProcessor was expected")."""
    video = getattr(tiny_processor, "video_processor", None)
    if video is None:
        pytest.skip("this transformers' Qwen2VLProcessor has no video processor (up to 4.51)")
    assert isinstance(video, tiny_processor.get_possibly_dynamic_module("BaseVideoProcessor"))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_16bit_model_captions_a_real_xray(tiny_checkpoint, tiny_processor, chest_xray, dtype):
    model = quant.load_16bit(tiny_checkpoint, dtype)
    assert not quant.linears(model).linear4bit
    with quant.record_vision_input(model) as seen:
        text = inference.caption(model, tiny_processor, chest_xray.image(), max_new_tokens=6)
    assert isinstance(text, str)
    assert seen and seen[0] == getattr(torch, dtype)


@pytest.mark.slow
@pytest.mark.parametrize(
    "skip, visual_quantized",
    [(("lm_head",), True), (("lm_head", "visual", "model.visual", "merger"), False)],
    ids=["full-4bit", "vision-16bit"],
)
def test_4bit_load_quantizes_the_expected_modules(tiny_checkpoint, tiny_processor, chest_xray, skip, visual_quantized):
    import bitsandbytes as bnb

    model = quant.load_4bit(tiny_checkpoint, skip)
    report = quant.linears(model)
    language = [n for n in report.linear4bit if "language_model" in n or n.startswith("model.layers")]
    assert len(language) == 2 * 7  # q,k,v,o,gate,up,down in each of 2 layers
    assert bool(report.quantized_under("visual")) is visual_quantized
    assert "lm_head" in report.linear16
    assert not report.missing_quant_state
    assert isinstance(model.get_submodule(language[0]), bnb.nn.Linear4bit)
    text = inference.caption(model, tiny_processor, chest_xray.image(), max_new_tokens=6)
    assert isinstance(text, str)


def test_skip_lists_keep_what_transformers_4_46_kept():
    names = [
        "lm_head",
        "visual.blocks.0.mlp.fc1",
        "visual.blocks.10.mlp.fc1",
        "visual.merger.mlp.0",
        "model.visual.blocks.1.attn.qkv",
        "model.layers.0.mlp.gate_proj",
    ]
    assert tinymodel.kept_by_skip_list(names, None) == ["lm_head"]  # null: the untied head only
    assert tinymodel.kept_by_skip_list(names, ["lm_head", "merger", "visual.blocks.1.mlp", "visual.blocks.0.mlp"]) == [
        "lm_head",
        "visual.blocks.0.mlp.fc1",
        "visual.merger.mlp.0",
    ]  # blocks.1 is not blocks.10; attn is not mlp


@pytest.mark.slow
@pytest.mark.parametrize("quantization, vision_4bit", [("plain-bnb-4bit", 10), ("unsloth-dynamic-7b", 4)])
def test_standins_keep_the_real_repos_modules_and_declare_their_config(tiny_checkpoint, quantization, vision_4bit):
    """A stand-in stores in 4 bits what the real repo's list did not keep (the dynamic 7B repo keeps every
    vision MLP, not the attention) and carries the real quantization_config verbatim."""
    from safetensors import safe_open

    from harness.data import hub

    real = hub.load_quantizations()[quantization]
    path = tinymodel.build_standin(tiny_checkpoint, real.name, real.config)
    assert json.loads((path / "config.json").read_text())["quantization_config"] == real.config
    with safe_open(path / "model.safetensors", "pt") as weights:
        four_bit = {k.split(".weight.quant_state")[0] for k in weights.keys() if ".weight.quant_state." in k}
    vision = sorted(n for n in four_bit if "visual" in n.split("."))
    assert len(vision) == vision_4bit, vision
    assert not any(n.endswith("lm_head") for n in four_bit)
