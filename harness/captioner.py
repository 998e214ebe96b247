"""A tiny Qwen2-VL trained to caption the X-ray fixtures with their reference descriptions.

An untrained tiny model answers noise whatever it is given, so it cannot tell a destroyed image
from a sound one. This one is trained (seeded, full-batch, float32 on CPU) until its greedy
16-bit answer to each fixture is that fixture's description, so a configuration that garbles the
image or the weights shows up as a wrong caption. Its 16-bit captions are the hermetic goldens.

The trained checkpoint is cached like tinymodel's builds (atomic rename under a file lock); the
cache key covers the recipe, the base spec and every fixture's description and image bytes, so a
changed fixture retrains it. The key is also the model fingerprint the goldens are recorded with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import inference, tinymodel, xrays
from .paths import cache_dir

MODEL_NAME = "tiny-captioner"


@dataclass(frozen=True)
class Recipe:
    """How the captioner is trained: full-batch AdamW on every fixture, answer tokens only."""

    steps: int = 200
    learning_rate: float = 3e-3
    seed: int = 0
    version: int = 1  # bump when the training code changes in a way the fields above do not show


def fixture_digest(item: xrays.XrayFixture) -> str:
    """What a golden caption of ``item`` depends on: its description and its image bytes."""
    return hashlib.sha256(item.description.encode() + b"|" + item.path.read_bytes()).hexdigest()[:16]


def fingerprint(fixtures: list[xrays.XrayFixture], recipe: Recipe = Recipe(),
                spec: tinymodel.TinySpec = tinymodel.TinySpec()) -> str:
    """The identity of the trained captioner; independent of the transformers version on purpose:
    every stack must caption the fixtures the same way, which is what the goldens check."""
    payload = {
        "recipe": asdict(recipe),
        "spec": asdict(spec),
        "fixtures": {f.id: fixture_digest(f) for f in fixtures},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _training_batch(processor, fixtures):
    """Chat inputs with each description as the answer, and labels that score only the answer."""
    import torch

    rows = [inference.chat_inputs(processor, f.image(), answer=f.description) for f in fixtures]
    prompts = [inference.chat_inputs(processor, f.image())["input_ids"].shape[1] for f in fixtures]
    width = max(r["input_ids"].shape[1] for r in rows)
    pad = processor.tokenizer.pad_token_id
    # Per-token tensors (input_ids, attention_mask and, in transformers 5, mm_token_type_ids)
    # are right-padded; the image tensors are concatenated.
    token_keys = [k for k, v in rows[0].items() if v.dim() == 2 and v.shape == rows[0]["input_ids"].shape]
    batch = {k: torch.full((len(rows), width), pad if k == "input_ids" else 0) for k in token_keys}
    batch["labels"] = torch.full((len(rows), width), -100)
    for i, (row, start) in enumerate(zip(rows, prompts)):
        n = row["input_ids"].shape[1]
        for k in token_keys:
            batch[k][i, :n] = row[k][0]
        batch["labels"][i, start:n] = row["input_ids"][0, start:n]
    for k in rows[0].keys() - set(token_keys):
        batch[k] = torch.cat([r[k] for r in rows])
    return batch


def train(base: Path, fixtures, recipe: Recipe, out: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(recipe.seed)
    processor = tinymodel.load_processor(base)
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(base, **tinymodel.dtype_kwarg(torch.float32))
    model.train()
    batch = _training_batch(processor, fixtures)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    for _ in range(recipe.steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    tinymodel._save_assets(model, tokenizer, out)
    (out / "captioner.json").write_text(json.dumps({"final_loss": float(loss), "recipe": asdict(recipe)}, indent=1))


def build(fixtures: list[xrays.XrayFixture] | None = None, recipe: Recipe = Recipe(),
          spec: tinymodel.TinySpec = tinymodel.TinySpec()) -> Path:
    """The trained captioner checkpoint (float32), trained once per fingerprint and transformers version."""
    fixtures = xrays.load_manifest() if fixtures is None else fixtures
    base = tinymodel.build(spec)
    key = f"{fingerprint(fixtures, recipe, spec)}-{spec.key()}"
    return tinymodel._atomic_build(cache_dir("models") / f"{MODEL_NAME}-{key}",
                                  lambda out: train(base, fixtures, recipe, out))


def model_fingerprint(path: Path) -> str:
    """The fingerprint a built captioner was trained under (the first part of its directory name)."""
    return path.name[len(MODEL_NAME) + 1:].split("-")[0]
