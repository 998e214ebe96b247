"""Tiny checkpoints of the families, built locally: a real transformers model of the family's class with a
few layers of width 32-64, seeded weights and a byte-level BPE tokenizer with the family's special tokens.

A build is a pure function of the family, its sizes and the installed transformers version, cached like
the tiny Qwen2-VL (harness.lab.tinymodel), whose checkpoint the Qwen2-VL family is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from harness.core.paths import cache_dir
from harness.env.stack import dist_version
from harness.lab import tinymodel
from harness.lab.tinymodel import atomic_build  # one build per target across processes

FORMAT = 2
PROMPT = "Describe this image."


def build(
    name: str,
    model_class: str,
    sizes: dict,
    make_config: Callable[[dict, object], object],
    make_tokenizer: Callable[[], object],
) -> Path:
    """The checkpoint of ``model_class`` with the config ``make_config(sizes, tokenizer)``; built once, then cached
    (torch imported only to build: tinymodel.missing finds what is to build without it)."""

    def _build(out: Path) -> None:
        import torch
        import transformers

        tokenizer = make_tokenizer()
        torch.manual_seed(0)
        model = getattr(transformers, model_class)(make_config(sizes, tokenizer)).to(torch.float32)
        _randomize_zeros(model)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    payload = {"name": name, "sizes": sizes, "transformers": dist_version("transformers"), "format": FORMAT}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return atomic_build(cache_dir("models") / f"tiny-{name}-{key}", _build)


def _randomize_zeros(model) -> None:
    """Give every parameter a family initializes to zero small random values: in a model nobody trains,
    Gemma 3's zero projection (mm_input_projection_weight) and mllama's zero cross-attention gates would
    keep every image from reaching the text model."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(std=0.02)


def tokenizer(special_tokens: list[str], chat_template: str, **named: str):
    """A byte-level BPE over the tiny Qwen2-VL's corpus with ``special_tokens``; ``named`` sets attributes
    such as ``image_token`` that a family's processor reads from its tokenizer."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        tinymodel.TOKENIZER_CORPUS * 4,
        trainer=trainers.BpeTrainer(
            vocab_size=tinymodel.TinySpec.bpe_vocab,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=special_tokens[0],
        eos_token=special_tokens[1],
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
        extra_special_tokens=named,
    )
    tok.add_special_tokens({"additional_special_tokens": special_tokens})
    tok.chat_template = chat_template
    return tok


def pil_image_processor(name: str, **kwargs):
    """The PIL-backed image processor ``name`` (transformers 5 calls it ``namePil``; in 4.x the plain class is)."""
    import transformers

    return (getattr(transformers, name + "Pil", None) or getattr(transformers, name))(**kwargs)


def inputs(processor, image, prompt: str = PROMPT):
    """Model inputs for one image and one question, through the family's chat template and processor."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    # the tokenizer's template: 4.x processors of some families take no template of their own
    text = processor.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[image], return_tensors="pt")
