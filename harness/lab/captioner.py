"""A tiny Qwen-VL model (the tiny Qwen2-VL; a family's tiny model: ``Base``) trained to caption the X-ray
fixtures with their reference descriptions.

An untrained tiny model answers noise whatever it is given, so it cannot tell a destroyed image
from a sound one. This one is trained (seeded, float32 on CPU) until its greedy
16-bit answer to each fixture is that fixture's description, so a configuration that garbles the
image or the weights shows up as a wrong caption. Its 16-bit captions are the hermetic goldens.

Training runs in a fresh interpreter: a process that has imported unsloth has patched
transformers' models and losses (its kernels refuse the CPU tensors the captioner trains on), and
the goldens must not depend on what a pytest worker ran before. The trained checkpoint is cached
like tinymodel's builds (atomic rename under a file lock); the cache key covers the recipe, the
base spec and every fixture's description and image bytes, so a changed fixture retrains it. The
key is also the model fingerprint the goldens are recorded with.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.core import progress
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.core.progress import Progress
from harness.data import xrays
from harness.env.stack import dist_version
from harness.lab import compat, inference, quant, tinymodel

MODEL_NAME = "tiny-captioner"
PROGRESS_EVERY = 50  # training steps per progress line


@dataclass(frozen=True)
class Recipe:
    """How the captioner is trained: AdamW on every fixture each step, answer tokens only."""

    steps: int = 200
    learning_rate: float = 3e-3
    seed: int = 0
    version: int = 3  # bump when the training code changes in a way the fields above do not show


@dataclass(frozen=True)
class Base:
    """The tiny model a captioner is trained from: a Qwen-VL class (the chat template, the answer's end token
    and the M-RoPE positions are Qwen's), its checkpoint and processor. ``name`` names the captioner in the
    model cache and in fixtures/goldens/. Module-level callables: train_apart pickles them."""

    name: str
    title: str  # as progress lines name it
    model_class: str
    checkpoint: Callable[[], Path]
    processor: Callable[[Path], object]


TINY_QWEN2_VL = Base(
    MODEL_NAME, "tiny captioner", "Qwen2VLForConditionalGeneration", tinymodel.build, tinymodel.load_processor
)


def fixture_digest(item: xrays.XrayFixture) -> str:
    """What a golden caption of ``item`` depends on: its description and its image (file bytes and crop)."""
    return hashlib.sha256(item.description.encode() + b"|" + item.content()).hexdigest()[:16]


def recipe_fingerprint(
    recipe: Recipe = Recipe(), spec: tinymodel.TinySpec = tinymodel.TinySpec(), base: Base = TINY_QWEN2_VL
) -> str:
    """How the captioner is made, independent of the fixtures and of the transformers version on
    purpose: every stack must caption the fixtures the same way, which is what the goldens check.
    (The tiny Qwen2-VL's is the fingerprint its goldens were recorded with: another base adds its class.)"""
    payload = {"recipe": asdict(recipe), "spec": asdict(spec)}
    if base != TINY_QWEN2_VL:
        payload["base"] = [base.name, base.model_class]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _training_example(model, processor, item):
    """Chat inputs with the description as the answer, labels that score only the answer, and the
    3-D M-RoPE position ids that generate() uses for the same text."""
    inputs = dict(inference.chat_inputs(processor, item.image(), answer=item.description))
    start = inference.chat_inputs(processor, item.image())["input_ids"].shape[1]
    labels = inputs["input_ids"].clone()
    labels[:, :start] = -100
    return {**inputs, "labels": labels, "position_ids": rope_positions(model, inputs)}


def rope_positions(model, inputs):
    """Image-aware (M-RoPE) position ids from the model's own ``get_rope_index``. Passed explicitly:
    a plain forward of transformers <4.49 trains with 1-D positions (4.46 never computes M-RoPE
    outside generate(); 4.48 only on a model's first forward, huggingface/transformers#36009),
    so a captioner trained that way miscaptions under generate()."""
    get_rope_index = getattr(model, "get_rope_index", None) or model.model.get_rope_index  # 4.x: top class; 5.x: .model
    extra = {"mm_token_type_ids": inputs["mm_token_type_ids"]} if "mm_token_type_ids" in inputs else {}
    return get_rope_index(
        inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"], attention_mask=inputs["attention_mask"], **extra
    )[0]


def train(base: Path, fixtures, recipe: Recipe, out: Path, of: Base = TINY_QWEN2_VL) -> None:
    import torch
    import transformers

    torch.manual_seed(recipe.seed)
    processor = of.processor(base)
    model = getattr(transformers, of.model_class).from_pretrained(base, **compat.dtype_kwarg(torch.float32))
    model.train()
    # One example per forward pass: no padding, so no stack's padding or position-id handling
    # can make training differ from generation; their gradients are averaged per step.
    examples = [_training_example(model, processor, item) for item in fixtures]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    report = Progress(
        recipe.steps // PROGRESS_EVERY,
        f"training the {of.title} on {len(examples)} X-ray fixtures "
        f"({recipe.steps} steps, once per fixture set and {checkpoint_line()}.x)",
    )
    for step in range(1, recipe.steps + 1):
        optimizer.zero_grad()
        loss = sum(model(**example).loss for example in examples) / len(examples)
        loss.backward()
        optimizer.step()
        if step % PROGRESS_EVERY == 0:
            report.step(f"step {step}/{recipe.steps}", f"loss {loss.item():.4f}")
    report.finish()
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    tinymodel._save_assets(model, tokenizer, out)
    (out / "captioner.json").write_text(json.dumps({"final_loss": float(loss), "recipe": asdict(recipe)}, indent=1))


def train_apart(base: Path, fixtures, recipe: Recipe, out: Path, of: Base = TINY_QWEN2_VL) -> None:
    """train() in a child interpreter, its progress lines passed on as they come."""
    with tempfile.NamedTemporaryFile(suffix=".pickle") as job:
        pickle.dump((base, list(fixtures), recipe, out, of), job)
        job.flush()
        child = subprocess.Popen(
            [sys.executable, "-m", "harness.lab.captioner", job.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        tail = []
        for line in child.stderr:
            if line.startswith("qvl-harness: "):
                progress.relay(line.rstrip("\n"))
            else:
                tail = [*tail[-19:], line]
        if child.wait():
            raise HarnessError(f"training the {of.title} failed (exit {child.returncode}):\n{''.join(tail)}")


def checkpoint_line() -> str:
    """The transformers releases one trained captioner serves: those of one major version. A checkpoint saved by
    transformers 5 does not load in 4.x; one trained under 4.46 has the same weights under 4.48 and captions the
    same under 4.46, 4.48 and 5.17 (measured), so the 4.x cells share one and every cell's 16-bit golden test
    proves it on its own stack. The first run of a line trains it (in CI: the oldest cell of 4.x)."""
    return f"transformers {dist_version('transformers').split('.')[0]}"


def build(
    fixtures: list[xrays.XrayFixture] | None = None,
    recipe: Recipe = Recipe(),
    spec: tinymodel.TinySpec = tinymodel.TinySpec(),
    *,
    of: Base = TINY_QWEN2_VL,
    in_this_process: bool = False,
) -> Path:
    """The trained captioner checkpoint (float32): trained once per recipe, fixture set, base and
    checkpoint_line() (about 15 s on 2 cores), then cached. ``spec`` shapes the tiny Qwen2-VL base (another
    base is its family's tiny model). ``in_this_process``: train here, for a process that is itself a fresh
    interpreter without unsloth (harness.pytest.prebuild's child)."""
    fixtures = xrays.usable(xrays.load_manifest()) if fixtures is None else fixtures
    base = tinymodel.build(spec) if of == TINY_QWEN2_VL else of.checkpoint()
    digests = json.dumps({f.id: fixture_digest(f) for f in fixtures}, sort_keys=True)
    made_from = json.dumps([asdict(spec), of.name, of.model_class, checkpoint_line()])
    key = hashlib.sha256(f"{recipe_fingerprint(recipe, spec, of)}|{digests}|{made_from}".encode()).hexdigest()[:16]
    trainer = train if in_this_process else train_apart
    return tinymodel.atomic_build(
        cache_dir("models") / f"{of.name}-{key}", lambda out: trainer(base, fixtures, recipe, out, of)
    )


# --- what its goldens are recorded in ---------------------------------------------------------------

GOLDEN_DTYPE = "bfloat16"  # the 16-bit reference: the dtype 4-bit loads compute in
MAX_NEW_TOKENS = 48  # the longest description is about 35 tokens


def golden_configuration(
    recipe: Recipe = Recipe(), spec: tinymodel.TinySpec = tinymodel.TinySpec(), of: Base = TINY_QWEN2_VL
) -> dict:
    """What a golden of this captioner must have been recorded in to be compared against."""
    return {
        "configuration": "16bit",
        "dtype": GOLDEN_DTYPE,
        "prompt": inference.PROMPT,
        "max_new_tokens": MAX_NEW_TOKENS,
        "recipe": recipe_fingerprint(recipe, spec, of),
    }


def sixteen_bit_captions(checkpoint: Path, fixtures, of: Base = TINY_QWEN2_VL) -> dict[str, str]:
    """The captions its goldens hold: the checkpoint in GOLDEN_DTYPE, greedy, on this device."""
    model, processor = quant.load_16bit(checkpoint, GOLDEN_DTYPE, of.model_class), of.processor(checkpoint)
    return {
        item.id: inference.caption(model, processor, item.image(), max_new_tokens=MAX_NEW_TOKENS) for item in fixtures
    }


if __name__ == "__main__":  # the child of train_apart
    with open(sys.argv[1], "rb") as job:
        train(*pickle.load(job))
