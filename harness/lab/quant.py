"""Loading in bitsandbytes 4-bit and inspecting what actually got quantized."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from harness.lab import compat


def bnb_config(skip_modules=("lm_head",), *, quant_type="nf4", double_quant=True, compute_dtype="bfloat16"):
    import torch
    import transformers

    return transformers.BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        llm_int8_skip_modules=list(skip_modules),
    )


def load_4bit(path, skip_modules=("lm_head",), **bnb):
    """Quantize a 16-bit checkpoint on load with plain transformers + bitsandbytes (nf4 unless ``bnb`` says)."""
    import torch
    import transformers

    if device() == "cpu":
        compat.allow_cpu_bitsandbytes()  # also outside pytest (the CLI, benchmarks)
    return transformers.Qwen2VLForConditionalGeneration.from_pretrained(
        path,
        quantization_config=bnb_config(skip_modules, **bnb),
        device_map=device(),
        **compat.dtype_kwarg(torch.bfloat16),
    )


def load_16bit(path, dtype="float32", model_class="Qwen2VLForConditionalGeneration"):
    import torch
    import transformers

    return getattr(transformers, model_class).from_pretrained(
        path, device_map=device(), **compat.dtype_kwarg(getattr(torch, dtype))
    )


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class QuantReport:
    """Which linear layers are 4-bit, and which 4-bit layers lack the state they need."""

    linear4bit: tuple[str, ...]
    linear16: tuple[str, ...]
    missing_quant_state: tuple[str, ...]

    def quantized_under(self, prefix_word: str) -> list[str]:
        """4-bit layers whose dotted name contains the component ``prefix_word`` (e.g. 'visual')."""
        return [n for n in self.linear4bit if prefix_word in n.split(".")]


def linears(model) -> QuantReport:
    import bitsandbytes as bnb
    import torch

    four, sixteen, missing = [], [], []
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            four.append(name)
            if getattr(module.weight, "quant_state", None) is None:
                missing.append(name)
        elif isinstance(module, torch.nn.Linear):
            sixteen.append(name)
    return QuantReport(tuple(four), tuple(sixteen), tuple(missing))


def vision_tower(model):
    """The vision tower (``visual``), also under peft/unsloth wrappers."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "visual":
            return module
    raise AttributeError(f"{type(model).__name__} has no vision tower (visual)")


@contextmanager
def record_vision_input(model):
    """Record the dtype of the first tensor entering the vision tower (the pixel_values after any cast)."""
    seen: list = []

    def hook(module, args, kwargs):
        tensor = next((a for a in list(args) + list(kwargs.values()) if hasattr(a, "dtype")), None)
        if tensor is not None:
            seen.append(tensor.dtype)

    # prepend: seen before any other pre-hook on the tower runs (one may raise on these very inputs)
    handle = vision_tower(model).register_forward_pre_hook(hook, with_kwargs=True, prepend=True)
    try:
        yield seen
    finally:
        handle.remove()
