"""A tiny Qwen2-VL trained to caption the X-ray fixtures with their reference descriptions.

An untrained tiny model answers noise whatever it is given, so it cannot tell a destroyed image
from a sound one. This one is trained (seeded, float32 on CPU) until its greedy
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
from .errors import HarnessError
from .paths import cache_dir

MODEL_NAME = "tiny-captioner"


@dataclass(frozen=True)
class Recipe:
    """How the captioner is trained: AdamW on every fixture each step, answer tokens only."""

    steps: int = 200
    learning_rate: float = 3e-3
    seed: int = 0
    version: int = 2  # bump when the training code changes in a way the fields above do not show


def fixture_digest(item: xrays.XrayFixture) -> str:
    """What a golden caption of ``item`` depends on: its description and its image bytes."""
    return hashlib.sha256(item.description.encode() + b"|" + item.path.read_bytes()).hexdigest()[:16]


def recipe_fingerprint(recipe: Recipe = Recipe(), spec: tinymodel.TinySpec = tinymodel.TinySpec()) -> str:
    """How the captioner is made, independent of the fixtures and of the transformers version on
    purpose: every stack must caption the fixtures the same way, which is what the goldens check."""
    payload = {"recipe": asdict(recipe), "spec": asdict(spec)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _training_example(processor, item):
    """Chat inputs with the description as the answer, and labels that score only the answer."""
    inputs = dict(inference.chat_inputs(processor, item.image(), answer=item.description))
    start = inference.chat_inputs(processor, item.image())["input_ids"].shape[1]
    labels = inputs["input_ids"].clone()
    labels[:, :start] = -100
    return {**inputs, "labels": labels}


def train(base: Path, fixtures, recipe: Recipe, out: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(recipe.seed)
    processor = tinymodel.load_processor(base)
    model = transformers.Qwen2VLForConditionalGeneration.from_pretrained(base, **tinymodel.dtype_kwarg(torch.float32))
    model.train()
    # One example per forward pass: no padding, so no stack's padding or position-id handling
    # can make training differ from generation; their gradients are averaged per step.
    examples = [_training_example(processor, item) for item in fixtures]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    for _ in range(recipe.steps):
        optimizer.zero_grad()
        loss = sum(model(**example).loss for example in examples) / len(examples)
        loss.backward()
        optimizer.step()
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    tinymodel._save_assets(model, tokenizer, out)
    (out / "captioner.json").write_text(json.dumps({"final_loss": float(loss), "recipe": asdict(recipe)}, indent=1))


def build(fixtures: list[xrays.XrayFixture] | None = None, recipe: Recipe = Recipe(),
          spec: tinymodel.TinySpec = tinymodel.TinySpec()) -> Path:
    """The trained captioner checkpoint (float32): trained once per recipe, fixture set and
    transformers version (about 15 s on 2 cores), then cached."""
    fixtures = xrays.load_manifest() if fixtures is None else fixtures
    base = tinymodel.build(spec)
    digests = json.dumps({f.id: fixture_digest(f) for f in fixtures}, sort_keys=True)
    key = hashlib.sha256(f"{recipe_fingerprint(recipe, spec)}|{digests}|{spec.key()}".encode()).hexdigest()[:16]
    return tinymodel._atomic_build(cache_dir("models") / f"{MODEL_NAME}-{key}",
                                   lambda out: train(base, fixtures, recipe, out))


# --- the configurations the captioner is loaded in ----------------------------------------------

GOLDEN_DTYPE = "bfloat16"  # the 16-bit reference: the dtype 4-bit loads compute in
MAX_NEW_TOKENS = 48  # the longest description is about 35 tokens
PREQUANTIZED_NAME = f"{MODEL_NAME}-unsloth-bnb-4bit"


def golden_configuration(recipe: Recipe = Recipe(), spec: tinymodel.TinySpec = tinymodel.TinySpec()) -> dict:
    """What a golden of this captioner must have been recorded in to be compared against."""
    return {"configuration": "16bit", "dtype": GOLDEN_DTYPE, "prompt": inference.PROMPT,
            "max_new_tokens": MAX_NEW_TOKENS, "recipe": recipe_fingerprint(recipe, spec)}


@dataclass(frozen=True)
class Configuration:
    """One way of loading a checkpoint. ``skips`` are the modules it claims to keep in 16 bits
    (None: not a 4-bit load); ``vision_4bit`` says whether it quantizes the vision tower."""

    name: str
    description: str
    skips: tuple[str, ...] | None
    vision_4bit: bool
    needs_gpu: str = ""  # why it cannot run on CPU, where it cannot

    def load(self, path: Path):
        import torch
        import transformers

        from . import quant

        if self.name == "16bit":
            return quant.load_16bit(path, GOLDEN_DTYPE)
        if self.name == "dynamic-4bit":
            prequantized = tinymodel.build_prequantized(path, self.skips, PREQUANTIZED_NAME)
            return transformers.Qwen2VLForConditionalGeneration.from_pretrained(
                prequantized, device_map=quant.device(), **tinymodel.dtype_kwarg(torch.bfloat16))
        if self.name == "fastvisionmodel":
            from unsloth import FastVisionModel

            model, _ = FastVisionModel.from_pretrained(str(path), load_in_4bit=True)
            FastVisionModel.for_inference(model)
            return model
        return quant.load_4bit(path, self.skips)


# unsloth <= 2024.12.1 passes no llm_int8_skip_modules: transformers then keeps only the output
# head in 16 bits (its default for an untied head), which is what HEAD_ONLY_SKIP says.
CPU_ONLY_FASTVISION = ("FastVisionModel.from_pretrained needs CUDA: it calls torch.cuda.get_device_properties(0) "
                       "(get_device_stats), and its default gradient checkpointing pins host memory")


def configurations(release_skips: tuple[str, ...] | None) -> list[Configuration]:
    """16-bit, full 4-bit (2024.11.11's load_in_4bit), the installed release's skip list applied
    by transformers, the dynamic pre-quantized checkpoint and the release's own FastVisionModel."""
    skips = tinymodel.HEAD_ONLY_SKIP if release_skips is None else release_skips
    return [
        Configuration("16bit", f"{GOLDEN_DTYPE}, nothing quantized", None, False),
        Configuration("full-4bit", "everything but lm_head in nf4, vision tower included (unsloth 2024.11.11)",
                      tinymodel.HEAD_ONLY_SKIP, True),
        Configuration("release-skip", f"load_in_4bit with the installed release's skip list {list(skips)}",
                      skips, not any(covers_vision(s) for s in skips)),
        Configuration("dynamic-4bit", "pre-quantized -unsloth-bnb-4bit checkpoint: vision tower and head in 16 bits",
                      tinymodel.DYNAMIC_SKIP, False),
        Configuration("fastvisionmodel", "the installed release's FastVisionModel.from_pretrained(load_in_4bit=True)",
                      None, False, needs_gpu=CPU_ONLY_FASTVISION),
    ]


def covers_vision(skip_entry: str) -> bool:
    return "visual" in skip_entry.split(".")


def skip_entry_matches(entry: str, module_name: str) -> bool:
    """Whether a module is one a skip entry names, as the releases mean it: the entry's dotted
    components appear in the module's dotted name ("merger" covers model.visual.merger.mlp.0)."""
    want, have = entry.split("."), module_name.split(".")
    return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


# --- what a release skips ------------------------------------------------------------------------

SKIP_LIST_USERS = ("unsloth/models/vision.py", "unsloth/models/loader_utils.py")


def release_skip_list(unsloth_code, zoo_code) -> tuple[str, ...] | None:
    """The skip list a release's vision loader passes with load_in_4bit: unsloth-zoo's
    SKIP_QUANTIZATION_MODULES where the release's code uses it, else None (transformers' default)."""
    import ast

    used = False
    for relpath in SKIP_LIST_USERS:
        if unsloth_code.has(relpath):
            tree = ast.parse(unsloth_code.read(relpath))
            used |= any(isinstance(n, ast.Name) and n.id == "SKIP_QUANTIZATION_MODULES" for n in ast.walk(tree))
    if not used:
        return None
    tree = ast.parse(zoo_code.read("unsloth_zoo/peft_utils.py"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SKIP_QUANTIZATION_MODULES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise HarnessError(f"{zoo_code.label}: no SKIP_QUANTIZATION_MODULES in unsloth_zoo/peft_utils.py")


def installed_skip_list() -> tuple[str, ...] | None:
    """The installed release's skip list; None (transformers' default) where unsloth is not installed."""
    from . import releases

    try:
        code = releases.installed("unsloth"), releases.installed("unsloth-zoo")
    except HarnessError:
        return None
    return release_skip_list(*code)


def skip_list_table() -> list[list[str]]:
    """Per matrix cell and for the installed release: what load_in_4bit keeps in 16 bits."""
    from . import releases
    from .matrix import load_matrix

    rows = []
    for cell in load_matrix().cells.values():
        skips = release_skip_list(releases.from_wheel("unsloth", cell.pins["unsloth"]),
                                  releases.from_wheel("unsloth-zoo", cell.pins["unsloth_zoo"]))
        rows.append([f"{cell.name}: unsloth {cell.pins['unsloth']} / zoo {cell.pins['unsloth_zoo']}", describe_skips(skips)])
    try:
        code = releases.installed("unsloth"), releases.installed("unsloth-zoo")
    except HarnessError:
        return rows
    rows.append([f"installed: {code[0].version} / zoo {code[1].version}", describe_skips(release_skip_list(*code))])
    return rows


def describe_skips(skips) -> str:
    if skips is None:
        return "none passed (transformers default: lm_head); vision tower not listed"
    vision = "listed" if any(covers_vision(s) for s in skips) else "not listed"
    return f"{', '.join(skips)}; vision tower {vision}"
