import hashlib
import json

import pytest
import torch
import transformers

from harness import inference, quant, tinymodel


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
        add_generation_prompt=True, tokenize=False,
    )
    assert text.endswith("<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_16bit_model_captions_a_real_xray(tiny_checkpoint, tiny_processor, chest_xray, dtype):
    model = quant.load_16bit(tiny_checkpoint, dtype)
    assert not quant.inspect(model).linear4bit
    with quant.record_vision_input(model) as seen:
        text = inference.caption(model, tiny_processor, chest_xray.image(), max_new_tokens=6)
    assert isinstance(text, str)
    assert seen and seen[0] == getattr(torch, dtype)


@pytest.mark.slow
@pytest.mark.parametrize(
    "skip, visual_quantized",
    [(tinymodel.HEAD_ONLY_SKIP, True), (tinymodel.DYNAMIC_SKIP, False)],
    ids=["full-4bit", "dynamic-4bit"],
)
def test_4bit_load_quantizes_the_expected_modules(tiny_checkpoint, tiny_processor, chest_xray, skip, visual_quantized):
    import bitsandbytes as bnb

    model = quant.load_4bit(tiny_checkpoint, skip)
    report = quant.inspect(model)
    language = [n for n in report.linear4bit if "language_model" in n]
    assert len(language) == 2 * 7  # q,k,v,o,gate,up,down in each of 2 layers
    assert bool(report.quantized_under("visual")) is visual_quantized
    assert "lm_head" in report.linear16
    assert not report.missing_quant_state
    assert isinstance(model.get_submodule(language[0]), bnb.nn.Linear4bit)
    text = inference.caption(model, tiny_processor, chest_xray.image(), max_new_tokens=6)
    assert isinstance(text, str)


@pytest.mark.slow
@pytest.mark.parametrize("kind, visual_quantized", [("bnb-4bit", True), ("unsloth-bnb-4bit", False)])
def test_prequantized_checkpoints_declare_and_keep_their_skip_list(kind, visual_quantized):
    path = tinymodel.checkpoint(kind)
    qconfig = json.loads((path / "config.json").read_text())["quantization_config"]
    assert qconfig["quant_method"] == "bitsandbytes" and qconfig["load_in_4bit"]
    assert qconfig["llm_int8_skip_modules"] == list(tinymodel.KINDS[kind])
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(path)
    assert bool(quant.inspect(model).quantized_under("visual")) is visual_quantized
