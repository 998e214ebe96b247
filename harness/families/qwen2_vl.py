"""Qwen2-VL: the family of the seed's failures; its tiny model is the tiny Qwen2-VL of the suites."""

from harness.families.base import Family, PixelCast
from harness.lab import captioner, tinymodel

FAMILY = Family(
    id="qwen2-vl",
    title="Qwen2-VL",
    model_class="Qwen2VLForConditionalGeneration",
    module="qwen2_vl",
    since="4.45.0",
    vision_modules=("visual",),  # the merger (projector) is visual.merger
    pixel_casts=(
        PixelCast(
            "<4.52",
            "qwen2_vl",
            "pixel_values.type(self.visual.get_dtype())",
            "the dtype of visual.blocks[0].mlp.fc2.weight",
            uint8_when_4bit=True,
        ),
        PixelCast(
            ">=4.52.1",
            "qwen2_vl",
            "pixel_values.type(self.visual.dtype)",  # 4.52.0 is yanked
            "the vision tower's floating dtype",
            uint8_when_4bit=False,
        ),
    ),
    # names of unsloth 2026.10.7's mapper; the 72B has no -unsloth-bnb-4bit repo (the 404 failure)
    hub_names={
        size: (
            f"Qwen/Qwen2-VL-{size}",
            f"Qwen/Qwen2-VL-{size}-Instruct",
            f"unsloth/Qwen2-VL-{size}-Instruct",
            f"unsloth/Qwen2-VL-{size}-Instruct-bnb-4bit",
            f"unsloth/Qwen2-VL-{size}-bnb-4bit",
        )
        + ((f"unsloth/Qwen2-VL-{size}", f"unsloth/Qwen2-VL-{size}-Instruct-unsloth-bnb-4bit") if size != "72B" else ())
        for size in ("2B", "7B", "72B")
    },
    build=tinymodel.build,
    processor=tinymodel.load_processor,
    captioner=captioner.TINY_QWEN2_VL,  # the garbage-output suite's
)
