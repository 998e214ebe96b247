"""Known third-party noise: lines the stack prints on every import that say nothing about the run.

They are dropped from what the harness shows (a probe's evidence, a re-run's reason); the probe's own
log file keeps the full output. One list, so a new line of noise is silenced in one place.
"""

from __future__ import annotations

import re

PATTERNS = (
    # bitsandbytes, without the optional `kernels` package
    r"^Failed to load CPU gemm_4bit_forward from kernels-community\b",
    # torch's pytree deprecation, once per Enum torchao registers
    r"torch/utils/_pytree\.py:\d+\].* is an Enum subclass and is now natively supported by torch\.compile",
    # torchao's optional compiled kernels, built for another python or torch
    r"^Failed to load \S*torchao\S*: Could not load this library",
    r"^Skipping import of cpp extensions due to incompatible torch version .* for torchao version",
)
NOISE = re.compile("|".join(f"(?:{p})" for p in PATTERNS))


def is_noise(line: str) -> bool:
    return NOISE.search(line) is not None


def without_noise(text: str) -> str:
    """``text`` without its known-noise lines."""
    return "\n".join(line for line in text.splitlines() if not is_noise(line))
