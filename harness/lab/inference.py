"""Prompting a Qwen2-VL model about one image: chat inputs and greedy captions."""

from __future__ import annotations

PROMPT = "Describe this X-ray."


def chat_inputs(processor, image, prompt: str = PROMPT, answer: str | None = None):
    """Processor inputs for one image and prompt; with ``answer``, the text includes it (for training)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if answer is not None:
        text += answer + "<|im_end|>"
    return processor(text=[text], images=[image], return_tensors="pt")


def caption(model, processor, image, prompt: str = PROMPT, max_new_tokens: int = 24) -> str:
    """The model's greedy answer to ``prompt`` about ``image``."""
    import torch

    inputs = chat_inputs(processor, image, prompt).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
