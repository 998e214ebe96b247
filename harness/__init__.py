"""qvl-harness: regression and compatibility harness for quantized Qwen2-VL loading with Unsloth."""

__version__ = "0.1.0"
