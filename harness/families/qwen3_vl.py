"""Qwen3-VL: patches of 16, deepstack mergers, the Qwen2-VL tokens and image processor."""

from pathlib import Path

from harness.families import tiny
from harness.families.base import Family, PixelCast
from harness.lab import compat, tinymodel

# vision width 64: bitsandbytes' CPU 4-bit kernel needs in_features >= its blocksize (64)
SIZES = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "vision_hidden": 64, "vision_depth": 2}


def config(sizes: dict, tokenizer):
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tinymodel.SPECIAL_TOKENS}
    head_dim = sizes["hidden"] // sizes["heads"]
    half = head_dim // 2
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": sizes["hidden"],
        "intermediate_size": 2 * sizes["hidden"],
        "num_hidden_layers": sizes["layers"],
        "num_attention_heads": sizes["heads"],
        "head_dim": head_dim,
        "num_key_value_heads": sizes["kv_heads"],
        "max_position_embeddings": 1024,
        "rope_scaling": {
            "rope_type": "default",
            "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
            "mrope_interleaved": True,
        },
        "rope_theta": 10000.0,
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": sizes["vision_depth"],
        "hidden_size": sizes["vision_hidden"],
        "num_heads": 2,
        "intermediate_size": 2 * sizes["vision_hidden"],
        "out_hidden_size": sizes["hidden"],
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }
    return transformers.Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        **tinymodel.vision_token_ids(ids),
        tie_word_embeddings=False,
    )


def build() -> Path:
    return tiny.build("qwen3-vl", FAMILY.model_class, SIZES, config, tinymodel.build_tokenizer)


def processor(path: Path):
    import transformers

    side = 128  # 8x8 patches of 16, merged 2x2 into 16 image tokens
    images = tiny.pil_image_processor(
        "Qwen2VLImageProcessor", patch_size=16, merge_size=2, min_pixels=side * side, max_pixels=side * side
    )
    return compat.image_only_processor(
        "Qwen3VLProcessor",
        image_processor=images,
        tokenizer=transformers.AutoTokenizer.from_pretrained(path),
        chat_template=tinymodel.CHAT_TEMPLATE,
    )


FAMILY = Family(
    id="qwen3-vl",
    title="Qwen3-VL",
    model_class="Qwen3VLForConditionalGeneration",
    module="qwen3_vl",
    since="4.57.0",
    vision_modules=("visual",),  # with visual.merger and the deepstack mergers
    pixel_casts=(
        PixelCast(
            ">=4.57",
            "qwen3_vl",
            "pixel_values.type(self.visual.dtype)",
            "the vision tower's floating dtype",
            uint8_when_4bit=False,
        ),
    ),
    hub_names={
        size: tuple(
            f"{owner}/Qwen3-VL-{size}-{kind}{suffix}"
            for kind in ("Instruct", "Thinking")
            for owner, suffix in (
                ("Qwen", ""),
                ("Qwen", "-FP8"),
                ("unsloth", ""),
                ("unsloth", "-FP8"),
                ("unsloth", "-bnb-4bit"),
                ("unsloth", "-unsloth-bnb-4bit"),
            )
        )
        for size in ("2B", "4B", "8B", "32B")
    },
    build=build,
    processor=processor,
)
