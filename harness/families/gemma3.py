"""Gemma 3: a SigLIP vision tower, its patches average-pooled into a fixed number of image tokens."""

from pathlib import Path

from harness.families import tiny
from harness.families.base import Family, PixelCast

SIZES = {
    "hidden": 64,
    "layers": 2,
    "heads": 4,
    "kv_heads": 2,
    "vision_hidden": 64,  # bitsandbytes' CPU 4-bit kernel needs in_features >= its blocksize (64)
    "vision_layers": 2,
    "image_side": 28,
    "image_tokens": 4,
    "vision_use_head": False,  # as the real Gemma 3 configs: SigLIP's pooling head is unused, so not built
}  # 2x2 patches of 14, one image token each
SPECIAL_TOKENS = [
    "<pad>",
    "<end_of_turn>",
    "<bos>",
    "<start_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
# The Gemma 3 chat template, reduced to what the harness sends (text and image parts).
CHAT_TEMPLATE = (
    "<bos>{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<start_of_image>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def make_tokenizer():
    return tiny.tokenizer(
        SPECIAL_TOKENS,
        CHAT_TEMPLATE,
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
    )


def config(sizes: dict, tokenizer):
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = sizes["hidden"] // sizes["heads"]
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": sizes["hidden"],
        "intermediate_size": 2 * sizes["hidden"],
        "num_hidden_layers": sizes["layers"],
        "num_attention_heads": sizes["heads"],
        "head_dim": head_dim,
        "num_key_value_heads": sizes["kv_heads"],
        "query_pre_attn_scalar": head_dim,
        "sliding_window": 64,
        "max_position_embeddings": 1024,
        "pad_token_id": ids["<pad>"],
        "eos_token_id": ids["<end_of_turn>"],
        "bos_token_id": ids["<bos>"],
    }
    vision = {
        "hidden_size": sizes["vision_hidden"],
        "intermediate_size": 2 * sizes["vision_hidden"],
        "num_hidden_layers": sizes["vision_layers"],
        "num_attention_heads": 2,
        "image_size": sizes["image_side"],
        "patch_size": 14,
        "vision_use_head": sizes["vision_use_head"],
    }
    return transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=sizes["image_tokens"],
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )


def build() -> Path:
    return tiny.build("gemma3", FAMILY.model_class, SIZES, config, make_tokenizer)


def processor(path: Path):
    import transformers

    side = SIZES["image_side"]
    images = tiny.pil_image_processor("Gemma3ImageProcessor", size={"height": side, "width": side})
    return transformers.Gemma3Processor(
        images, transformers.AutoTokenizer.from_pretrained(path), image_seq_length=SIZES["image_tokens"]
    )


FAMILY = Family(
    id="gemma3",
    title="Gemma 3",
    model_class="Gemma3ForConditionalGeneration",
    module="gemma3",
    since="4.50.0",
    vision_modules=("vision_tower", "multi_modal_projector"),
    pixel_casts=(
        PixelCast(
            ">=4.50",
            "siglip",
            "pixel_values.to(dtype=target_dtype)",
            "the dtype of SigLIP's patch embedding (a convolution, never 4-bit)",
            uint8_when_4bit=False,
        ),
    ),
    # 1b and 270m are text-only Gemma 3 (Gemma3ForCausalLM): not this family
    hub_names={
        size: tuple(
            name
            for kind in ("it", "pt")
            for name in (
                f"google/gemma-3-{size}-{kind}",
                f"unsloth/gemma-3-{size}-{kind}",
                f"unsloth/gemma-3-{size}-{kind}-bnb-4bit",
                f"unsloth/gemma-3-{size}-{kind}-unsloth-bnb-4bit",
            )
        )
        for size in ("4b", "12b", "27b")
    },
    build=build,
    processor=processor,
)
