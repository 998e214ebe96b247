"""Tiny Qwen2-VL checkpoints built locally: config, seeded weights, tokenizer, processor, chat template.

A build is a pure function of its spec and the installed transformers version, written once into
the cache (atomic rename under a file lock, so xdist workers share it; a run builds what its tests
need in children started before the workers, which take their builds' locks first, harness.pytest.prebuild).
Every build's path is known before torch is
imported, so ``missing()`` can tell what a builder would build without building it. Stand-ins for the hub's
pre-quantized repos are real bitsandbytes nf4 checkpoints of a base checkpoint, quantized to the
module set the real repo's quantization_config kept in 16 bits, and carrying that config verbatim.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from harness.core.paths import cache_dir
from harness.env.stack import dist_version
from harness.lab import compat, quant

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
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"  # noqa: E501
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

    def key(self, **variant) -> str:
        payload = {"spec": asdict(self), "variant": variant, "transformers": dist_version("transformers"), "format": 1}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


BUILD_LOG = "builds.log"  # in the models cache: a line per build, with the process that made it
_planned: list[Path] | None = None  # inside missing(): the targets a builder would build
_held: dict[Path, FileLock] = {}  # locks hold() took for builds this process runs later


def hold(targets: list[Path]) -> list[Path]:
    """Take the build locks of ``targets`` now, for builds this process runs later: from now on a process that
    wants one waits for this one's build instead of making its own. One another process holds is left to it.
    Returns the targets held."""
    for target in targets:
        if (target / ".complete").exists() or target in _held:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(target) + ".lock")
        with contextlib.suppress(Timeout):
            lock.acquire(timeout=0)
            _held[target] = lock
    return list(_held)


@contextlib.contextmanager
def _build_lock(target: Path):
    held = _held.pop(target, None)
    if held is None:
        with FileLock(str(target) + ".lock"):
            yield
        return
    try:
        yield
    finally:
        held.release(force=True)


def atomic_build(target: Path, build) -> Path:
    """Run ``build(tmpdir)`` once per target; other processes wait on the lock and reuse it."""
    if _planned is not None:
        if not (target / ".complete").exists():
            _planned.append(target)
        return target
    if (target / ".complete").exists():
        return target
    with _build_lock(target):
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
        builder = os.environ.get("PYTEST_XDIST_WORKER") or f"pid {os.getpid()}"
        with open(target.parent / BUILD_LOG, "a") as log:
            log.write(f"{target.name}\t{builder}\n")
    return target


def missing(make) -> list[Path]:
    """The cache entries ``make()`` would build, in order, without building any (the builders import
    torch only to build)."""
    global _planned
    _planned = []
    try:
        make()
        return _planned
    finally:
        _planned = None


def vision_token_ids(ids: dict[str, int]) -> dict[str, int]:
    """The image and video token ids a Qwen-VL config names, from the Qwen2-VL special tokens' ids."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def build_tokenizer():
    """A byte-level BPE tokenizer with the Qwen2-VL special tokens, as the Qwen2 tokenizer class."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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
    tok = cls(
        tokenizer_object=bpe,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
    )
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
    return compat.image_only_processor(
        "Qwen2VLProcessor", image_processor=image_processor(), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )


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
        **vision_token_ids(ids),
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


def build(spec: TinySpec = TinySpec()) -> Path:
    """The 16-bit (float32 by default) tiny checkpoint for ``spec``; built once, then cached."""

    def _build(out: Path) -> None:
        import torch
        import transformers

        tokenizer = build_tokenizer()
        config = _config(spec, tokenizer)
        torch.manual_seed(spec.seed)
        model = transformers.Qwen2VLForConditionalGeneration(config).to(getattr(torch, spec.dtype))
        _save_assets(model, tokenizer, out)

    return atomic_build(cache_dir("models") / f"{spec.name}-{spec.key()}", _build)


def kept_by_skip_list(module_names, skip_modules: list[str] | None) -> list[str]:
    """The linear modules a ``llm_int8_skip_modules`` list keeps in 16 bits by the rule of transformers
    4.46, which made the hub's repos: an entry keeps the module named exactly so, and every module
    whose dotted name contains "ENTRY.". None (a null in config.json) keeps the untied output head."""
    entries = ["lm_head"] if skip_modules is None else skip_modules
    return sorted(n for n in module_names if any(n == e or f"{e}." in n for e in entries))


def build_standin(base: Path, name: str, quantization_config: dict) -> Path:
    """A bitsandbytes nf4 checkpoint of ``base`` standing in for a real pre-quantized repo: the modules
    its ``quantization_config`` kept in 16 bits stay 16-bit, every other linear is nf4, and its
    config.json carries ``quantization_config`` verbatim (so loaders read what they read from the real repo)."""

    def _build(out: Path) -> None:
        import torch
        import transformers

        with torch.device("meta"):
            skeleton = transformers.Qwen2VLForConditionalGeneration(transformers.AutoConfig.from_pretrained(base))
        linears = [n for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)]
        keep = kept_by_skip_list(linears, quantization_config.get("llm_int8_skip_modules"))
        model = quant.load_4bit(
            base,
            keep,
            quant_type=quantization_config["bnb_4bit_quant_type"],
            double_quant=quantization_config["bnb_4bit_use_double_quant"],
            compute_dtype=quantization_config["bnb_4bit_compute_dtype"],
        )
        _save_assets(model, transformers.AutoTokenizer.from_pretrained(base), out)
        config_path = out / "config.json"
        config = json.loads(config_path.read_text())
        config["quantization_config"] = quantization_config
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    key = hashlib.sha256(json.dumps([base.name, quantization_config], sort_keys=True).encode()).hexdigest()[:12]
    return atomic_build(cache_dir("models") / f"{base.name}-{name}-{key}", _build)


def standins(base: Path | None = None, quantizations: dict | None = None):
    """``checkpoints(kind)`` for a local hub: the 16-bit ``base`` (default: the tiny Qwen2-VL), or its
    stand-in for a real repo's quantization (fixtures/hub/quantization.toml unless ``quantizations``)."""
    from harness.data import hub

    def checkpoints(kind: str) -> Path:
        source = base or build()
        if kind == "16bit":
            return source
        quantization = (quantizations or hub.load_quantizations())[kind]
        return build_standin(source, quantization.name, quantization.config)

    return checkpoints
