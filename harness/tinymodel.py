"""Tiny Qwen2-VL checkpoints built locally: config, seeded weights, tokenizer, processor, chat template.

A build is a pure function of its spec and the installed transformers version, written once into
the cache (atomic rename under a file lock, so xdist workers share it). Pre-quantized variants are
real bitsandbytes nf4 checkpoints with ``quantization_config`` in config.json, like the hub's
``-bnb-4bit`` (everything quantized but the head) and ``-unsloth-bnb-4bit`` (a skip list) repos.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from filelock import FileLock

from .paths import cache_dir
from .stack import dist_version

IMAGE_SIDE = 112  # pixels; 8x8 patches of 14, merged 2x2 into 16 image tokens
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The Qwen2-VL chat template, reduced to what the harness sends (text and image parts).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Text the byte-level BPE is trained on: chat scaffolding and radiology words, so captions are a
# few tokens each. Any other text still encodes (byte fallback).
TOKENIZER_CORPUS = [
    "system user assistant You are a helpful assistant.",
    "Describe this image. What does this X-ray show? Caption the radiograph.",
    "chest radiograph frontal view lungs heart ribs thorax clavicle diaphragm mediastinum",
    "extremity radiograph lower leg tibia fibula ankle knee bone lesion fibroma cortex",
    "hand wrist finger skull pelvis spine shoulder femur elbow foot",
    "a shirt with geometric patterns fabric textile cloth pattern stripes",
    "normal abnormal fracture opacity effusion pneumonia nodule lucent well-defined",
    "the of a an and with in on at left right anterior posterior view image shows",
]

# Module names the hub's pre-quantized variants leave in 16 bits. transformers 4.x matches a skip
# entry as a substring of the dotted name ("visual"); 5.x only as a prefix, regex or suffix, so
# "visual" alone no longer covers "model.visual.blocks.0..." and the prefix form is listed too.
HEAD_ONLY_SKIP = ("lm_head",)
DYNAMIC_SKIP = ("lm_head", "visual", "model.visual", "merger")


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny Qwen2-VL. Defaults: 2 text layers of width 64, 2 vision blocks of width 64."""

    name: str = "tiny-qwen2-vl"
    seed: int = 0
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vision_depth: int = 2
    vision_embed_dim: int = 64  # bitsandbytes CPU kernels need in_features >= its blocksize (64)
    vision_heads: int = 2
    bpe_vocab: int = 384
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    def key(self, **variant) -> str:
        payload = {"spec": asdict(self), "variant": variant, "transformers": dist_version("transformers"), "format": 1}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_build(target: Path, build) -> Path:
    """Run ``build(tmpdir)`` once per target; other processes wait on the lock and reuse it."""
    if (target / ".complete").exists():
        return target
    with FileLock(str(target) + ".lock"):
        if (target / ".complete").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            build(tmp)
            (tmp / ".complete").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tokenizer():
    """A byte-level BPE tokenizer with the Qwen2-VL special tokens, as the Qwen2 tokenizer class."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import transformers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TinySpec.bpe_vocab,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TOKENIZER_CORPUS * 4, trainer=trainer)
    cls = getattr(transformers, "Qwen2TokenizerFast", None) or transformers.Qwen2Tokenizer
    tok = cls(tokenizer_object=bpe, unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
              errors="replace", clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def image_processor(**kwargs):
    """The PIL-backed Qwen2-VL image processor: works without torchvision (CPU) and with it."""
    import transformers

    cls = getattr(transformers, "Qwen2VLImageProcessorPil", None)
    if cls is None:  # transformers 4.x: the plain class is PIL-backed
        cls = transformers.Qwen2VLImageProcessor
    side = IMAGE_SIDE * IMAGE_SIDE
    return cls(min_pixels=side, max_pixels=side, **kwargs)


def load_processor(path: str | Path):
    """The processor of a tiny checkpoint, built with the PIL image processor (no torchvision needed)."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    parts = {"image_processor": image_processor(), "tokenizer": tokenizer, "chat_template": CHAT_TEMPLATE}
    get_attributes = getattr(transformers.Qwen2VLProcessor, "get_attributes", None)  # 4.x: a class list
    attributes = get_attributes() if get_attributes else transformers.Qwen2VLProcessor.attributes
    if "video_processor" not in attributes:
        return transformers.Qwen2VLProcessor(**parts)
    from transformers.video_processing_utils import BaseVideoProcessor

    # transformers 5 insists on a video processor and, without torchvision, rejects every one;
    # images never reach it, so the torchvision-free base class stands in.
    class ImageOnlyQwen2VLProcessor(transformers.Qwen2VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor":
                return type(argument)
            return super().check_argument_for_proper_class(argument_name, argument)

    return ImageOnlyQwen2VLProcessor(video_processor=BaseVideoProcessor(), **parts)


def _config(spec: TinySpec, tokenizer):
    import transformers

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = spec.hidden_size // spec.num_attention_heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    return transformers.Qwen2VLConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=1024,
        max_window_layers=spec.num_hidden_layers,
        rope_scaling={"type": "mrope", "mrope_section": mrope},
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "hidden_size": spec.hidden_size,
            "num_heads": spec.vision_heads,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        torch_dtype=spec.dtype,
    )


def _save_assets(model, tokenizer, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    image_processor().save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


def dtype_kwarg(dtype) -> dict:
    """``from_pretrained``'s dtype argument: ``dtype`` in transformers 5, ``torch_dtype`` in 4.x."""
    major = int((dist_version("transformers") or "5").split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def build(spec: TinySpec = TinySpec()) -> Path:
    """The 16-bit (float32 by default) tiny checkpoint for ``spec``; built once, then cached."""
    import torch
    import transformers

    def _build(out: Path) -> None:
        tokenizer = build_tokenizer()
        config = _config(spec, tokenizer)
        torch.manual_seed(spec.seed)
        model = transformers.Qwen2VLForConditionalGeneration(config).to(getattr(torch, spec.dtype))
        _save_assets(model, tokenizer, out)

    return _atomic_build(cache_dir("models") / f"{spec.name}-{spec.key()}", _build)


def build_prequantized(base: Path, skip_modules: tuple[str, ...], name: str) -> Path:
    """A bitsandbytes nf4 checkpoint of ``base`` with ``quantization_config`` in its config.json.

    ``skip_modules`` stay in 16 bits (``llm_int8_skip_modules``), as in the hub's pre-quantized repos.
    """
    import transformers

    from . import quant

    def _build(out: Path) -> None:
        model = quant.load_4bit(base, skip_modules)
        tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        _save_assets(model, tokenizer, out)

    key = hashlib.sha256(f"{base.name}|{sorted(skip_modules)}".encode()).hexdigest()[:12]
    return _atomic_build(cache_dir("models") / f"{name}-{key}", _build)


# Checkpoint kinds, named like the hub's repo suffixes.
KINDS = {"16bit": None, "bnb-4bit": HEAD_ONLY_SKIP, "unsloth-bnb-4bit": DYNAMIC_SKIP}


def checkpoint(kind: str = "16bit", spec: TinySpec = TinySpec()) -> Path:
    """The tiny checkpoint of one kind: '16bit', 'bnb-4bit' (all but lm_head quantized) or
    'unsloth-bnb-4bit' (dynamic: vision tower and head kept in 16 bits)."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; known: {', '.join(KINDS)}")
    base = build(spec)
    if KINDS[kind] is None:
        return base
    return build_prequantized(base, KINDS[kind], f"{spec.name}-{kind}")


def variant(spec: TinySpec = TinySpec(), **changes) -> TinySpec:
    return replace(spec, **changes)
