"""Qwen2.5-VL: windowed attention in the vision tower, the Qwen2-VL tokens and image processor."""

from pathlib import Path

from harness.families import tiny
from harness.families.base import Family, PixelCast
from harness.lab import captioner, compat, tinymodel

SIZES = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "vision_hidden": 64, "vision_depth": 2}


def config(sizes: dict, tokenizer):
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tinymodel.SPECIAL_TOKENS}
    half = sizes["hidden"] // sizes["heads"] // 2
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": sizes["hidden"],
        "intermediate_size": 2 * sizes["hidden"],
        "num_hidden_layers": sizes["layers"],
        "num_attention_heads": sizes["heads"],
        "num_key_value_heads": sizes["kv_heads"],
        "max_position_embeddings": 1024,
        "rope_scaling": {"type": "mrope", "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]},
        "rope_theta": 10000.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": sizes["vision_depth"],
        "hidden_size": sizes["vision_hidden"],
        "num_heads": 2,
        "intermediate_size": 2 * sizes["vision_hidden"],
        "out_hidden_size": sizes["hidden"],
        "fullatt_block_indexes": [sizes["vision_depth"] - 1],
        "window_size": 56,
    }
    # flat text sizes up to 4.51 (which keeps an unknown text_config as a dict it cannot save), text_config from 4.52
    nested = {"text_config": text} if "text_config" in transformers.Qwen2_5_VLConfig.sub_configs else {}
    return transformers.Qwen2_5_VLConfig(
        **text,
        **nested,
        vision_config=vision,
        **tinymodel.vision_token_ids(ids),
        tie_word_embeddings=False,
    )


def build() -> Path:
    return tiny.build("qwen2.5-vl", FAMILY.model_class, SIZES, config, tinymodel.build_tokenizer)


def processor(path: Path):
    import transformers

    return compat.image_only_processor(
        "Qwen2_5_VLProcessor",
        image_processor=tinymodel.image_processor(),
        tokenizer=transformers.AutoTokenizer.from_pretrained(path),
        chat_template=tinymodel.CHAT_TEMPLATE,
    )


FAMILY = Family(
    id="qwen2.5-vl",
    title="Qwen2.5-VL",
    model_class="Qwen2_5_VLForConditionalGeneration",
    module="qwen2_5_vl",
    since="4.49.0",
    vision_modules=("visual",),
    pixel_casts=(
        PixelCast(
            ">=4.49",
            "qwen2_5_vl",
            "pixel_values.type(self.visual.dtype)",
            "the vision tower's floating dtype",
            uint8_when_4bit=False,
        ),
    ),
    hub_names={
        size: (
            f"Qwen/Qwen2.5-VL-{size}-Instruct",
            f"unsloth/Qwen2.5-VL-{size}-Instruct",
            f"unsloth/Qwen2.5-VL-{size}-Instruct-bnb-4bit",
            f"unsloth/Qwen2.5-VL-{size}-Instruct-unsloth-bnb-4bit",
        )
        for size in ("3B", "7B", "32B", "72B")
    },
    build=build,
    processor=processor,
    captioner=captioner.Base(
        "tiny-captioner-qwen2.5-vl", "tiny Qwen2.5-VL captioner", "Qwen2_5_VLForConditionalGeneration", build, processor
    ),
)
