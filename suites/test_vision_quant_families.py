"""The vision-quantization class over families: what the installed release's
``FastVisionModel.from_pretrained(TINY_DIR, load_in_4bit=True)`` quantizes of each family's vision tower.

Each family's tiny 16-bit checkpoint is quantized at load time through the installed release's own code
(harness.failures.vision_quant on harness.failures.loading: its load-time BitsAndBytesConfig with
unsloth-zoo's SKIP_QUANTIZATION_MODULES and its skip-list matcher, then a real transformers + bitsandbytes
load), and one forward pass per X-ray shows the dtype entering the vision tower; a family with a captioner
(a tiny model of it trained on the X-ray fixtures) is loaded the same way and its captions graded against its
16-bit goldens. A cell runs the families its transformers has; the registry (vision_quant.failure_for) says
where a tower is expected in 4 bits.
On a GPU the release's real FastVisionModel must load what the model predicts.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil

import pytest

from harness.data import goldens, hub
from harness.failures import garbage_output, loading, vision_quant
from harness.failures.garbage_output import loaded
from harness.families import registry as families
from harness.lab import captioner, quant
from harness.pytest import captions, goldenwrites, require, results

RELEASE = loading.installed_release()
pytestmark = require.installed("unsloth", "unsloth-zoo", hint="run a matrix cell (tox -e cell-NAME)")


def params(shows: str) -> list:
    """One param per family (those this transformers lacks skip with what they need), marked with the
    registry entry that speaks for it; a symptom test only where the family's cast makes uint8 of a 4-bit tower."""
    out = []
    here = families.plan()
    for param in families.params():
        (family,) = param.values
        marks = list(param.marks)
        if RELEASE is not None and family in here.runs:
            cast = family.pixel_cast(here.transformers)
            if shows == "cause" or (cast is not None and cast.uint8_when_4bit):
                failure, code = vision_quant.failure_for(RELEASE, family)
                marks += failure.marks_for(code, shows=shows)
        out.append(pytest.param(family, id=family.id, marks=marks))
    return out


def captioned(family_params: list) -> list:
    """The params of the families with a captioner, less the tiny Qwen2-VL's: the garbage-output suite grades
    its captions on both of its paths."""
    return [p for p in family_params if families.trains_own_captioner(p.values[0])]


@pytest.fixture(scope="session")
def family_captioner(request, harness_stack, xray_fixtures):
    """``family_captioner(family)``: the family's trained captioner and the golden this device compares it
    against (with --update-golden, this run's 16-bit captions: goldenwrites), made once."""

    @functools.cache
    def made(family_id: str):
        of = families.family(family_id).captioner
        checkpoint = captioner.build(xray_fixtures, of=of)
        return checkpoint, goldenwrites.golden_of(request.config, harness_stack, of, checkpoint, xray_fixtures)

    return lambda family: made(family.id)


@pytest.fixture(scope="session")
def what_loads(xray_fixtures):
    """``what_loads(family, skips=None)``: the installed release's load of the family's tiny checkpoint
    (``skips``: the release's load-time settings with this skip list instead, a mutation), observed once."""

    @functools.cache
    def observe(family_id: str, skips: tuple[str, ...] | None):
        family = families.family(family_id)
        checkpoint = family.build()
        if skips is None:
            return loading.what_loads(
                RELEASE, str(checkpoint), processor=family.processor(checkpoint), fixtures=xray_fixtures
            )
        settings = loading.load_time_settings(RELEASE, family.module)
        mutated = dataclasses.replace(settings, kwargs={**settings.kwargs, "llm_int8_skip_modules": list(skips)})
        plan = loading.plan(RELEASE, str(checkpoint))
        return loading.observe(plan, mutated, "-", family.processor(checkpoint), xray_fixtures, family, captions=False)

    return lambda family, skips=None: observe(family.id, skips)


def towers(seen: loading.Observation) -> str:
    """The vision modules that hold the 4-bit linears, e.g. "visual" or "vision_model, multi_modal_projector"."""
    return ", ".join(v for v in seen.family.vision_modules if any(v in n.split(".") for n in seen.vision_4bit))


# --- the cause: structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", params("cause"))
def test_vision_tower_stays_16bit(family, what_loads, request):
    """Every linear of the family's vision modules stays 16-bit when the release quantizes at load time."""
    seen = loaded(what_loads(family))
    results.record_structure(
        request.config,
        family.id,
        f"{len(seen.vision_4bit)}/{seen.vision_linears} vision linears 4-bit ({seen.quantized_by})",
        ok=not seen.vision_4bit,
    )
    assert seen.vision_linears > 0, f"{family.id}: no linear found under {family.vision_modules}"
    assert not seen.vision_4bit, garbage_output.TOWER_QUANTIZED.format(
        release=RELEASE.label,
        family=family.title,
        n_4bit=len(seen.vision_4bit),
        n_linears=seen.vision_linears,
        towers=towers(seen),
        example=seen.vision_4bit[0],
        quantized_by=seen.quantized_by,
    )


@pytest.mark.parametrize("family", families.params())
def test_no_linear4bit_without_quant_state(family, what_loads):
    seen = loaded(what_loads(family))
    assert not seen.missing_quant_state


# --- the symptom: what reaches the vision tower -----------------------------------------------------------


@pytest.mark.parametrize("family", params("symptom"))
def test_pixels_reach_the_vision_tower_floating(family, what_loads, xray_fixtures):
    """Every X-ray enters the vision tower as a floating tensor (uint8 destroys the image)."""
    seen = loaded(what_loads(family))
    assert list(seen.pixel_dtypes) == [f.id for f in xray_fixtures]
    bad = {fid: d for fid, d in seen.pixel_dtypes.items() if "float" not in d}
    dtypes = ", ".join(sorted(set(bad.values())))
    assert not bad, garbage_output.PIXELS_DESTROYED.format(release=RELEASE.label, dtypes=dtypes) + f" ({family.title})"


@pytest.mark.parametrize("family", captioned(params("symptom")))
def test_captions_of_the_load_match_the_goldens(family, family_captioner, xray_fixtures, request):
    """The family's captioner quantized at load time through the release's own code captions every X-ray as its
    16-bit goldens say (a tower cast to a floating dtype keeps them in 4 bits too; tests/test_captioner_discriminates.py
    shows uint8 pixels fail them)."""
    checkpoint, golden = family_captioner(family)
    seen = loaded(
        loading.what_loads(
            RELEASE, str(checkpoint), processor=family.processor(checkpoint), fixtures=xray_fixtures, captions=True
        )
    )
    short = captions.failures(seen.captions, xray_fixtures, golden, record=(request.config, f"{family.id} load-time"))
    assert not short, garbage_output.CAPTIONS_DIFFER.format(
        release=RELEASE.label, where=f"{family.title} load-time, {seen.repo}", failures="; ".join(short)
    )


@pytest.mark.parametrize("family", captioned(families.params()))
def test_16bit_captions_match_the_goldens(family, family_captioner, xray_fixtures):
    """The control: the family's captioner in 16 bits gives its goldens on this stack."""
    checkpoint, golden = family_captioner(family)
    texts = captioner.sixteen_bit_captions(checkpoint, xray_fixtures, family.captioner)
    short = captions.failures(texts, xray_fixtures, golden)
    assert not short, f"{family.id}: 16-bit captions differ from their goldens ({golden.matched}): " + "; ".join(short)


@pytest.mark.parametrize("family", captioned(families.params()))
def test_goldens_are_current_and_pass_their_fixtures(family, family_captioner, xray_fixtures):
    """Recorded on these fixtures (a changed fixture makes the golden stale), each golden caption within its
    fixture's terms (with --update-golden: an obtained caption that fails them is no golden)."""
    _, golden = family_captioner(family)
    problems = goldens.stale(golden, {f.id: captioner.fixture_digest(f) for f in xray_fixtures})
    assert not problems, f"stale golden {golden.path}: {'; '.join(problems)} (refresh: {goldens.refresh_hint(golden)})"
    for item in xray_fixtures:
        grade = goldens.grade(golden.caption(item.id), item.description, item.must_mention, item.must_not_mention)
        assert grade.at_least("terms"), f"{item.id}: golden caption {golden.caption(item.id)!r}: {grade.describe()}"


# --- the check can fail: the skip list decides -------------------------------------------------------------


@pytest.mark.parametrize("family", families.params())
def test_the_skip_list_decides_what_the_tower_keeps(family, what_loads):
    """The release's own settings with the family's vision modules taken out of the skip list quantize the
    tower, and with them put in keep all of it in 16 bits: the observation follows the settings, not the family."""
    settings = loading.load_time_settings(RELEASE, family.module)
    # no list passed (unsloth < 2024.12.2): transformers then keeps the output head, which the mutation keeps too
    skips = tuple(s for s in settings.skip_modules or ["lm_head"] if s not in family.vision_modules)
    dropped, kept = loaded(what_loads(family, skips)), loaded(what_loads(family, skips + family.vision_modules))
    assert dropped.vision_4bit, f"{family.id}: nothing under {family.vision_modules} quantized without its skip entry"
    assert not kept.vision_4bit, f"{family.id}: 4-bit under its own skip entries: {kept.vision_4bit[:3]}"


# --- any name, any size: the same path ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unsloth/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"])
def test_a_hub_name_of_any_size_goes_through_the_release_mapper(name, what_loads, xray_fixtures, hub_for):
    """A family's hub name is mapped by the release and served from the hub of its ship day, stand-ins made
    of the family's tiny model: the repo loaded is the one the release's mapper names."""
    family = loading.family_of(name)
    checkpoint = family.build()
    seen = loading.what_loads(
        RELEASE, name, processor=family.processor(checkpoint), fixtures=xray_fixtures[:1], hub_for=hub_for
    )
    assert (seen.plan.asked, seen.snapshot) == (name, hub.snapshot_at(RELEASE.shipped).name)
    assert seen.repo == loading.plan(RELEASE, name).repo
    assert seen.error is None and seen.vision_linears > 0, seen.error


# --- the release's real loader on a GPU ------------------------------------------------------------------------


@require.gpu
@pytest.mark.slow
@pytest.mark.own_process
@pytest.mark.parametrize("family", families.params())
def test_fast_vision_model_loads_what_the_model_predicts(family, what_loads, tmp_path):
    """The installed release's FastVisionModel.from_pretrained(TINY_DIR, load_in_4bit=True): the same linears
    in 4 bits as harness.failures.vision_quant predicts for the family (the tiny checkpoint with its processor
    saved beside it, which FastVisionModel loads with the model)."""
    from unsloth import FastVisionModel

    predicted = loaded(what_loads(family))
    folder = tmp_path / family.id
    shutil.copytree(family.build(), folder)
    family.processor(family.build()).save_pretrained(folder)
    model, _ = FastVisionModel.from_pretrained(str(folder), load_in_4bit=True)
    real = {n.removeprefix("base_model.model.") for n in quant.linears(model).linear4bit}
    assert real == set(predicted.linear4bit), (
        f"{family.id}: real minus predicted: {sorted(real - set(predicted.linear4bit))[:5]}; "
        f"predicted minus real: {sorted(set(predicted.linear4bit) - real)[:5]}"
    )
