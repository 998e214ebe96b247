"""Llama-3.2-Vision (mllama): a tiled vision encoder whose features reach the text model by cross-attention."""

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
    "tiles": 4,
}  # 4 tiles: the default aspect ratios
SPECIAL_TOKENS = [
    "<|finetune_right_pad_id|>",
    "<|eot_id|>",
    "<|begin_of_text|>",
    "<|image|>",
    "<|python_tag|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
]
# The Llama 3.2 Vision chat template, reduced to what the harness sends (text and image parts).
CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def make_tokenizer():
    tok = tiny.tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE)
    tok.bos_token = "<|begin_of_text|>"
    return tok


def config(sizes: dict, tokenizer):
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vision = {
        "hidden_size": sizes["vision_hidden"],
        "num_hidden_layers": sizes["vision_layers"],
        "num_global_layers": 1,
        "attention_heads": 2,
        "intermediate_size": 2 * sizes["vision_hidden"],
        "intermediate_layers_indices": [0],
        "vision_output_dim": 2 * sizes["vision_hidden"],
        "image_size": sizes["image_side"],
        "patch_size": 14,
        "max_num_tiles": sizes["tiles"],
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": sizes["hidden"],
        "intermediate_size": 2 * sizes["hidden"],
        "num_hidden_layers": sizes["layers"],
        "num_attention_heads": sizes["heads"],
        "num_key_value_heads": sizes["kv_heads"],
        "cross_attention_layers": [1],
        "max_position_embeddings": 1024,
        "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "default"},  # transformers 4.x reads its rope_type unguarded
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": ids["<|eot_id|>"],
        "pad_token_id": ids["<|finetune_right_pad_id|>"],
    }
    return transformers.MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids["<|image|>"])


def build() -> Path:
    return tiny.build("mllama", FAMILY.model_class, SIZES, config, make_tokenizer)


def processor(path: Path):
    import transformers

    side = SIZES["image_side"]
    images = tiny.pil_image_processor(
        "MllamaImageProcessor", size={"height": side, "width": side}, max_image_tiles=SIZES["tiles"]
    )
    return transformers.MllamaProcessor(images, transformers.AutoTokenizer.from_pretrained(path))


FAMILY = Family(
    id="mllama",
    title="Llama-3.2-Vision",
    model_class="MllamaForConditionalGeneration",
    module="mllama",
    since="4.45.0",
    vision_modules=("vision_model", "multi_modal_projector"),
    pixel_casts=(
        PixelCast(
            "<4.49", "mllama", "pixel_values.to(self.dtype)", "the vision model's floating dtype", uint8_when_4bit=False
        ),
        PixelCast(
            ">=4.49",
            "mllama",
            "pixel_values.to(target_device, target_dtype)",
            "the dtype of the patch embedding (a convolution, never 4-bit)",
            uint8_when_4bit=False,
        ),
    ),
    hub_names={
        size: (
            f"meta-llama/Llama-3.2-{size}-Vision",
            f"meta-llama/Llama-3.2-{size}-Vision-Instruct",
            f"unsloth/Llama-3.2-{size}-Vision",
            f"unsloth/Llama-3.2-{size}-Vision-Instruct",
            f"unsloth/Llama-3.2-{size}-Vision-bnb-4bit",
            f"unsloth/Llama-3.2-{size}-Vision-Instruct-bnb-4bit",
        )
        + (
            (
                f"unsloth/Llama-3.2-{size}-Vision-unsloth-bnb-4bit",
                f"unsloth/Llama-3.2-{size}-Vision-Instruct-unsloth-bnb-4bit",
            )
            if size == "11B"
            else ()
        )
        for size in ("11B", "90B")
    },
    build=build,
    processor=processor,
)
