"""The vision families: each tiny model is a real model of its class that takes an image through its
processor, its declarations match the transformers source, and a new family is one new module."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from harness import cli
from harness.core.errors import HarnessError
from harness.data import xrays
from harness.env.stack import dist_version
from harness.families import registry, tiny
from harness.families.base import modeling_file
from harness.releases import code as release_code

INSTALLED = dist_version("transformers")
# the transformers releases the declarations are checked against, each read from its wheel in the release cache
SOURCES = registry.source_releases()


def check_forward(family):
    """The tiny model answers an X-ray through the family's processor, the image changes the answer, and the
    declared vision modules are in the model."""
    import transformers

    path = family.build()
    processor = family.processor(path)
    model = getattr(transformers, family.model_class).from_pretrained(path).eval()
    logits = {}
    for fixture_id in ("chest-pa", "tibia-ap"):
        batch = tiny.inputs(processor, xrays.fixture(fixture_id).image().convert("RGB"))
        with torch.no_grad():
            logits[fixture_id] = model(**batch).logits
        assert logits[fixture_id].shape[:2] == batch["input_ids"].shape
        assert torch.isfinite(logits[fixture_id]).all()
    assert not torch.equal(logits["chest-pa"][0, -1], logits["tibia-ap"][0, -1]), "the image never reached the model"
    missing = [name for name, found in family.vision_module_paths(model).items() if not found]
    assert not missing, f"{family.id}: declared vision modules absent from {family.model_class}: {missing}"


@pytest.mark.parametrize("family", registry.params())
def test_tiny_model_takes_an_image_through_its_processor(family):
    check_forward(family)


@pytest.mark.parametrize("family", registry.families(), ids=lambda f: f.id)
def test_first_release_and_pixel_cast_match_the_installed_source(family):
    module = f"transformers.models.{family.module}.modeling_{family.module}"
    if not family.available(INSTALLED):
        has_class = importlib.util.find_spec(f"transformers.models.{family.module}") is not None and hasattr(
            importlib.import_module(module), family.model_class
        )
        assert not has_class, f"transformers {INSTALLED} has {family.model_class}, declared from {family.since}"
        return
    assert hasattr(importlib.import_module(module), family.model_class)
    check_cast(
        family,
        INSTALLED,
        lambda name: inspect.getsource(importlib.import_module(f"transformers.models.{name}.modeling_{name}")),
    )


def check_cast(family, version: str, source_of):
    declared = family.pixel_cast(version)
    assert declared is not None, f"{family.id}: no pixel cast declared for transformers {version}"
    assert declared.source in source_of(declared.module), (
        f"{family.id}: transformers {version} does not cast with {declared.source!r} ({declared.versions})"
    )
    for other in family.pixel_casts:
        if other.source != declared.source:
            assert other.source not in source_of(other.module), (
                f"{family.id}: transformers {version} still casts with {other.source!r}, declared for {other.versions}"
            )


def missing_sources() -> list[str]:
    return [v for v in SOURCES if not release_code.wheel_path("transformers", v).is_file()]


@pytest.mark.skipif(
    bool(missing_sources()),
    reason=f"transformers {', '.join(missing_sources())} not in the release cache "
    "(run: qvl-harness releases fetch; tox does, before pytest)",
)
@pytest.mark.parametrize("family", registry.families(), ids=lambda f: f.id)
def test_declarations_match_the_source_of_other_releases(family):
    for version in SOURCES:
        source = release_code.from_wheel("transformers", version)
        path = modeling_file(family.module)
        has_class = source.has(path) and f"class {family.model_class}(" in source.read(path)
        assert has_class == family.available(version), (
            f"{family.id}: transformers {version} {'has' if has_class else 'lacks'} {family.model_class}, "
            f"declared from {family.since}"
        )
        if has_class:
            check_cast(family, version, lambda name, s=source: s.read(modeling_file(name)))


def test_the_checked_releases_are_each_range_edge():
    """Each family's first release and the first release of each cast range: a new range adds its edge."""
    assert {"4.45.0", "4.49.0", "4.50.0", "4.52.1", "4.57.0"} <= set(SOURCES)
    for family in registry.families():
        assert family.since in SOURCES
        for cast in family.pixel_casts:
            assert any(cast.covers(v) and family.available(v) for v in SOURCES), f"{family.id}: {cast.versions}"


def test_a_release_runs_the_families_it_has():
    plan = registry.plan("4.48.0")
    assert {"mllama", "qwen2-vl"} <= {f.id for f in plan.runs}
    reasons = {f.id: plan.reason(f) for f in plan.not_run}
    newer = {  # a family added later adds to either side
        "gemma3": "not run: needs transformers >= 4.50.0 (this run: 4.48.0)",
        "qwen2.5-vl": "not run: needs transformers >= 4.49.0 (this run: 4.48.0)",
        "qwen3-vl": "not run: needs transformers >= 4.57.0 (this run: 4.48.0)",
    }
    assert {f: reasons.get(f) for f in newer} == newer
    assert len(registry.plan("4.57.0").runs) == len(registry.families())


def test_params_skip_what_this_transformers_lacks():
    for param in registry.params():
        (family,) = param.values
        skips = [m.kwargs["reason"] for m in param.marks if m.name == "skip"]
        assert skips == (
            []
            if family.available(INSTALLED)
            else [f"not run: needs transformers >= {family.since} (this run: {INSTALLED})"]
        )


def test_families_lists_each_family_and_what_each_cell_runs(capsys):
    assert cli.main(["families"]) == 0
    out = capsys.readouterr().out
    for family in registry.families():
        assert re.search(rf"^{re.escape(family.id)} +>={family.since} +{family.model_class} ", out, re.M)
    old = registry.plan("4.48.0")  # what it holds: test_a_release_runs_the_families_it_has
    runs, skipped = " ".join(f.id for f in old.runs), ", ".join(f"{f.id} (needs >= {f.since})" for f in old.not_run)
    assert f"u2025-01-05    transformers 4.48.0    runs: {runs}; not run: {skipped}" in out
    assert "gemma3 (needs >= 4.50.0)" in skipped
    every = " ".join(f.id for f in registry.families())
    assert f"canary         transformers 5.17.0    runs: {every}; not run: -" in out


def test_families_of_one_cell_say_what_runs_and_how_it_casts_pixels(capsys):
    assert cli.main(["families", "--cell", "u2025-01-05"]) == 0
    out = capsys.readouterr().out
    assert "cell u2025-01-05 (transformers 4.48.0):" in out and "canary " not in out
    assert "  qwen2-vl     runs; pixels cast to the dtype of visual.blocks[0].mlp.fc2.weight (uint8 when 4-bit)" in out
    assert "  qwen3-vl     not run: needs transformers >= 4.57.0" in out


def test_an_unknown_cell_is_one_line(capsys):
    assert cli.main(["families", "--cell", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("qvl-harness: error: unknown matrix cell 'nope' in matrix.toml; known cells: canary")
    assert captured.err.count("\n") == 1


TOY = '''
"""A toy family: the tiny Qwen2-VL under another name."""

from harness.families.base import Family, PixelCast
from harness.lab import tinymodel

FAMILY = Family(
    id="{id}", title="Toy-VL", model_class="Qwen2VLForConditionalGeneration", module="qwen2_vl", since="{since}",
    vision_modules=("visual",),
    pixel_casts=(PixelCast(">=4.45", "qwen2_vl", "pixel_values.type(", "a dtype", uint8_when_4bit=False),),
    hub_names={{"1B": ("toy/Toy-VL-1B-Instruct",)}},
    build=tinymodel.build,
    processor=tinymodel.load_processor,
)
'''


def test_a_new_family_is_one_module(tmp_path, monkeypatch, capsys):
    """Two modules dropped beside the families (one for a transformers to come) are found, listed, planned
    per cell and tested like the others: no other file changes."""
    import harness.families as package

    real = registry.families()
    (tmp_path / "toy_vl.py").write_text(textwrap.dedent(TOY.format(id="toy-vl", since="4.45.0")))
    (tmp_path / "toy_future_vl.py").write_text(textwrap.dedent(TOY.format(id="toy-future-vl", since="99.0")))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])

    toy, future = registry.family("toy-vl"), registry.family("toy-future-vl")
    assert len(registry.families()) == len(real) + 2
    assert toy in registry.plan().runs and future in registry.plan().not_run
    reasons = {p.values[0].id: [m.kwargs["reason"] for m in p.marks] for p in registry.params()}
    assert reasons["toy-vl"] == [] and reasons["toy-future-vl"] == [
        f"not run: needs transformers >= 99.0 (this run: {INSTALLED})"
    ]
    check_forward(toy)

    assert cli.main(["families", "--cell", "u2024-11-11"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^toy-vl +>=4.45.0 +Qwen2VLForConditionalGeneration +visual +1B$", out, re.M)
    assert "  toy-vl       runs; pixels cast to a dtype" in out
    assert "  toy-future-vl not run: needs transformers >= 99.0" in out


def test_two_modules_with_one_id_are_one_line(tmp_path, monkeypatch):
    import harness.families as package

    (tmp_path / "qwen2_vl_again.py").write_text(textwrap.dedent(TOY.format(id="qwen2-vl", since="4.45.0")))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(tmp_path)])
    with pytest.raises(HarnessError, match="^two family modules declare the id 'qwen2-vl'$"):
        registry.families()


def test_listing_the_families_needs_no_stack():
    """`qvl-harness families` runs in the harness venv: declarations import neither torch nor transformers."""
    probe = (
        "import contextlib, io, sys\nfrom harness import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    assert cli.main(['families']) == 0\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
