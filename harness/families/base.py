"""What a vision family declares: its transformers class and first release, its tiny model, its vision
modules, how its forward casts pixels (per transformers range), its hub names per size and its processor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from harness.lab import captioner


def modeling_file(module: str) -> str:
    """Where a transformers release (its wheel, or its installed package's root) holds a model's forward."""
    return f"transformers/models/{module}/modeling_{module}.py"


@dataclass(frozen=True)
class PixelCast:
    """How the forward casts ``pixel_values`` before the vision tower, in the transformers releases of ``versions``.

    ``source`` is the line fragment that does it in ``transformers/models/<module>/modeling_<module>.py``;
    ``uint8_when_4bit`` says whether the target is the dtype of a linear weight (uint8 once bitsandbytes
    quantized the tower, which destroys the image) or a floating dtype (a 4-bit tower then loses quality only).
    """

    versions: str  # a PEP 440 specifier over transformers, e.g. "<4.52"
    module: str
    source: str
    target: str
    uint8_when_4bit: bool

    def covers(self, version: str) -> bool:
        return SpecifierSet(self.versions).contains(Version(version).base_version, prereleases=True)


@dataclass(frozen=True)
class Family:
    id: str
    title: str
    model_class: str  # the transformers class of the model, e.g. "Qwen2VLForConditionalGeneration"
    module: str  # transformers/models/<module>/
    since: str  # the first transformers release that has model_class
    vision_modules: tuple[str, ...]  # the vision tower (and a projector outside it), by the attribute name
    pixel_casts: tuple[PixelCast, ...]
    hub_names: dict[str, tuple[str, ...]]  # size -> the repos of that size (which existed when: the hub history)
    build: Callable[[], Path] = field(repr=False)  # the tiny checkpoint, built once per transformers version
    processor: Callable[[Path], object] = field(repr=False)  # the tiny checkpoint's processor (PIL image processor)
    # the tiny model trained to caption the X-ray fixtures, whose captions of a 4-bit load are checked against
    # its 16-bit goldens (a Qwen-VL chat model; None: the family's loads are checked by structure only)
    captioner: captioner.Base | None = field(default=None, repr=False)

    def available(self, transformers_version: str) -> bool:
        return Version(Version(transformers_version).base_version) >= Version(self.since)

    def pixel_cast(self, transformers_version: str) -> PixelCast | None:
        """The declared cast for that release; None before the family exists (or in a gap the declaration leaves)."""
        return next((c for c in self.pixel_casts if c.covers(transformers_version)), None)

    def vision_module_paths(self, model) -> dict[str, list[str]]:
        """Each declared vision module name -> the dotted names it has in ``model`` (``visual``,
        ``model.visual``, ...: transformers 4.52 moved the towers under ``model``)."""
        names = [n for n, _ in model.named_modules()]
        return {v: [n for n in names if n == v or n.endswith("." + v)] for v in self.vision_modules}
