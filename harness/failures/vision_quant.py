"""The vision-quantization class over families: the registry entries that speak for a family's vision tower
quantized at load time (``failure_for``), reproduced with ``harness.failures.loading.what_loads`` on the
family's tiny 16-bit checkpoint (suites/test_vision_quant_families.py).
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.failures import garbage_output, loading
from harness.failures.base import Failure
from harness.families.base import Family
from harness.releases.code import ReleaseCode


def _quantized(family: str, towers: str) -> tuple[str, ...]:
    message = garbage_output.TOWER_QUANTIZED.format(
        release="unsloth 2025.3.16 + zoo 2025.3.16",
        family=family,
        n_4bit=12,
        n_linears=12,
        towers=towers,
        example=f"{towers}.encoder.layers.0.mlp.fc1",
        quantized_by="the release's BitsAndBytesConfig",
    )
    return (message,)


class Gemma3VisionAtLoad(Failure):
    """Gemma 3's vision_tower quantized at load time (unsloth-zoo's skip list lacks it)."""

    id = "gemma3-vision-4bit-at-load"
    messages = {"cause": _quantized("Gemma 3", "vision_tower"), "symptom": _quantized("Gemma 3", "vision_tower")}

    def subject(self, version: str, origin: str = "wheel") -> loading.Release:
        return loading.release_pair(version, origin)

    def reproduce(self, release: loading.Release, *, checkpoint: Path, processor, fixtures):
        return loading.what_loads(release, str(checkpoint), processor=processor, fixtures=fixtures)


class MllamaVisionAtLoad(Gemma3VisionAtLoad):
    """Llama-3.2-Vision's vision_model quantized at load time (no skip list names it)."""

    id = "mllama-vision-4bit-at-load"
    messages = {
        "cause": _quantized("Llama-3.2-Vision", "vision_model"),
        "symptom": _quantized("Llama-3.2-Vision", "vision_model"),
    }


FAMILY_FAILURES = {"gemma3": Gemma3VisionAtLoad, "mllama": MllamaVisionAtLoad}


def failure_for(release: loading.Release, family: Family) -> tuple[Failure, ReleaseCode]:
    """The registry entry that speaks for a family's load-time quantization on ``release``, and the code it is
    judged on: the ``visual`` towers (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) are garbage_output's load-time path."""
    if family.id in FAMILY_FAILURES:
        return FAMILY_FAILURES[family.id](), release.zoo
    if "visual" in family.vision_modules:
        return garbage_output.failure_for(release, "load-time")
    raise HarnessError(f"no registry entry speaks for {family.id}'s vision quantization: add one to FAMILY_FAILURES")
