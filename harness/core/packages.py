"""The packages of a stack, under the names each place uses: PyPI, matrix.toml keys, wheel file names."""

from __future__ import annotations

# PyPI name -> matrix.toml key / wheel file prefix (where they differ from the PyPI name)
STACK = (
    "unsloth",
    "unsloth-zoo",
    "transformers",
    "torch",
    "bitsandbytes",
    "peft",
    "huggingface_hub",
    "accelerate",
    "trl",
)
CODE_UNDER_TEST = ("unsloth", "unsloth-zoo")  # installed with --no-deps; their release code is read from wheels
# releases whose wheels are read, never installed from the cache: the code under test, and transformers,
# whose modeling files the families' pixel-cast declarations are checked against, release by release
SOURCE_READ = (*CODE_UNDER_TEST, "transformers")
MATRIX_KEYS = {"unsloth-zoo": "unsloth_zoo"}
KNOWN = set(STACK) | {"huggingface-hub", "xformers"}  # what a registry entry may name


def matrix_key(package: str) -> str:
    return MATRIX_KEYS.get(package, package)


def from_matrix_key(key: str) -> str:
    return {v: k for k, v in MATRIX_KEYS.items()}.get(key, key)


def wheel_prefix(package: str) -> str:
    """The distribution name in wheel file names (PEP 427: '-' becomes '_')."""
    return package.replace("-", "_")
