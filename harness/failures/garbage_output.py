"""garbage-output and vision-4bit-at-load: what the release loads, and whether the image survives it.

Their history is the registry's (`qvl-harness known` prints them): the reported path (a hub name the
mapper sends to a repo whose vision tower is 4-bit) and the load-time path (a 16-bit checkpoint quantized
with unsloth-zoo's skip list) both run through harness.failures.loading.
"""

from __future__ import annotations

from pathlib import Path

from harness.data import goldens
from harness.failures import loading
from harness.failures.base import Failure
from harness.releases.code import ReleaseCode

# The suites' assertion messages (str.format templates), named once.
DTYPE_SOURCE_4BIT = (
    "{release} loads {repo}: the vision tower's {source} (visual.get_dtype()) is Linear4bit; "
    "{n_4bit} of {n_linears} vision linears are 4-bit ({quantized_by})"
)
PIXELS_DESTROYED = "{release}: pixel_values reach the vision tower as {dtypes}: the image is destroyed"
CAPTIONS_DIFFER = "{release} ({where}): captions differ from the 16-bit goldens: {failures}"
TOWER_QUANTIZED = (
    "{release} quantizes {family}: {n_4bit} of {n_linears} vision linears are Linear4bit at load time, "
    "under {towers} (e.g. {example}; {quantized_by})"
)
_SEEN = {"release": "unsloth 2024.11.11 + zoo 2024.11.8", "repo": "unsloth/Qwen2-VL-7B-Instruct-bnb-4bit"}

SEVEN_B = "unsloth/Qwen2-VL-7B-Instruct"
PATHS = {"reported": SEVEN_B, "load-time": None}  # None: a local 16-bit checkpoint


class GarbageOutput(Failure):
    """The reported path: the 7B name, mapped by the release, from the hub as it was when it shipped."""

    id = "garbage-output"
    messages = {
        "cause": (
            DTYPE_SOURCE_4BIT.format(
                **_SEEN, source=loading.DTYPE_SOURCE, n_4bit=10, n_linears=10, quantized_by="the checkpoint's"
            ),
            TOWER_QUANTIZED.format(
                **_SEEN,
                family="Qwen2.5-VL",
                n_4bit=12,
                n_linears=12,
                towers="visual",
                example="visual.blocks.0.mlp",
                quantized_by="the release's BitsAndBytesConfig",
            ),
        ),
        "symptom": (
            CAPTIONS_DIFFER.format(**_SEEN, where="reported", failures="tibia-ap: 'frontal chest radiograph'"),
            PIXELS_DESTROYED.format(**_SEEN, dtypes="torch.uint8"),
        ),
    }

    def subject(self, version: str, origin: str = "wheel") -> loading.Release:
        return loading.release_pair(version, origin)

    def reproduce(self, release: loading.Release, *, path: str, checkpoint: Path, processor, fixtures, hub_for):
        return what_loads(release, path, checkpoint, processor, fixtures, hub_for)


class VisionAtLoad(GarbageOutput):
    """The load-time path: a 16-bit checkpoint quantized with unsloth-zoo's SKIP_QUANTIZATION_MODULES."""

    id = "vision-4bit-at-load"


def failure_for(release: loading.Release, path: str) -> tuple[Failure, ReleaseCode]:
    """The registry entry that speaks for ``path`` of ``release``, and the code it is judged on:
    garbage-output for the mapped name; on the load-time path garbage-output where the unsloth release
    passes no skip list at all, else vision-4bit-at-load (unsloth-zoo's skip list)."""
    garbage = GarbageOutput()
    if path == "reported" or garbage.entry.affects(release.unsloth.version):
        return garbage, release.unsloth
    return VisionAtLoad(), release.zoo


def what_loads(
    release: loading.Release, path: str, checkpoint: Path, processor, fixtures, hub_for
) -> loading.Observation:
    """The release's load of the 7B name (from the hub as it was when it shipped, serving stand-ins of
    ``checkpoint``) or of the local 16-bit ``checkpoint``, captioning every fixture (loading.what_loads)."""
    name = PATHS[path] or str(checkpoint)
    return loading.what_loads(
        release, name, processor=processor, fixtures=fixtures, hub_for=hub_for, base=checkpoint, captions=True
    )


def grades(seen: loading.Observation, golden: goldens.Golden, fixtures) -> dict[str, goldens.Grade]:
    """Every fixture's grade by fixture id; one the load left without a caption is ``missing``, with the error."""
    why = f"the load ended in {type(seen.error).__name__}" if seen.error is not None else ""
    return goldens.grades(seen.captions, golden, fixtures, why)


def loaded(seen: loading.Observation) -> loading.Observation:
    """The observation of a load that worked; a load that failed re-raises its own error."""
    if seen.error is not None:
        raise seen.error
    return seen
