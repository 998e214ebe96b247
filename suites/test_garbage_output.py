"""Seed failure 'garbage output', and its load-time sibling: what the installed release really loads.

What happened, which releases and why: the registry's entries garbage-output and vision-4bit-at-load
(`qvl-harness known` prints them).

harness.failures.garbage_output (on harness.failures.loading) runs the installed release's own code: its
mapper, the hub as it was when it shipped (serving stand-ins of a tiny captioner trained on the X-ray
fixtures, quantized as the real repos are), its load-time BitsAndBytesConfig and skip-list matcher, then a
real transformers + bitsandbytes load. Structure (the cause) and captions against the 16-bit goldens (the symptom) are
checked on two paths: the reported one (the hub name) and the load-time one (a local 16-bit folder).
Expectations come from the registry (garbage-output, vision-4bit-at-load). On a GPU the release's
real FastVisionModel must load what the model predicts.
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from pathlib import Path

import pytest

from harness.data import goldens, hub, hub_server
from harness.failures import garbage_output, loading
from harness.failures.garbage_output import PATHS, SEVEN_B, grades, loaded
from harness.lab import captioner, inference, quant, tinymodel
from harness.pytest import captions, goldenwrites, require, results, summary

RELEASE = loading.installed_release()
pytestmark = require.installed("unsloth", "unsloth-zoo", hint="run a matrix cell (tox -e cell-NAME)")


def params(shows: str) -> list:
    """One param per path, marked with the registry entry that speaks for it (garbage_output.failure_for)."""
    out = []
    for path in PATHS:
        marks = []
        if RELEASE is not None:
            failure, code = garbage_output.failure_for(RELEASE, path)
            marks = failure.marks_for(code, shows=shows)
        out.append(pytest.param(path, id=path, marks=marks))
    return out


@pytest.fixture(scope="session")
def captioner_checkpoint(xray_fixtures):
    return captioner.build(xray_fixtures)


@pytest.fixture(scope="session")
def captioner_processor(captioner_checkpoint):
    return tinymodel.load_processor(captioner_checkpoint)


@pytest.fixture(scope="session")
def golden(request, harness_stack, captioner_checkpoint, xray_fixtures):
    """The golden this device compares against; with --update-golden, this run's 16-bit captions (goldenwrites)."""
    return goldenwrites.golden_of(
        request.config, harness_stack, captioner.TINY_QWEN2_VL, captioner_checkpoint, xray_fixtures
    )


@pytest.fixture(scope="session")
def what_loads(captioner_checkpoint, captioner_processor, xray_fixtures, hub_for):
    """``what_loads(path)``: the installed release's load of the 7B name or of the local 16-bit
    checkpoint (garbage_output.what_loads), observed once per session."""
    return functools.cache(
        lambda path: garbage_output.what_loads(
            RELEASE, path, captioner_checkpoint, captioner_processor, xray_fixtures, hub_for
        )
    )


# --- what the release loads: one table ----------------------------------------------------------------

COLUMNS = [
    "release",
    "path",
    "name asked",
    "repo loaded",
    "hub snapshot",
    "quantized by",
    "vision linears 4-bit",
    "pixel dtype into vision tower",
]


def table_row(seen: loading.Observation, path: str, graded: dict, fixtures) -> dict[str, str]:
    """One path's row: the columns above, then the caption grade of each X-ray under its fixture id."""
    home = str(Path.home())
    return {
        "release": RELEASE.label,
        "path": path,
        "name asked": seen.plan.asked.replace(home, "~"),
        "repo loaded": seen.repo.replace(home, "~"),
        "hub snapshot": seen.snapshot,
        "quantized by": seen.quantized_by or "-",
        "vision linears 4-bit": f"{len(seen.vision_4bit)}/{seen.vision_linears}",
        "pixel dtype into vision tower": ", ".join(sorted(set(seen.pixel_dtypes.values()))) or "-",
        **{f.id: graded[f.id].describe() if graded[f.id].level == "missing" else graded[f.id].level for f in fixtures},
    }


def test_what_the_release_loads(what_loads, golden, captioner_checkpoint, xray_fixtures, request):
    """Both paths, as one table in the summary and the report: name asked, repo loaded, hub snapshot,
    where the quantization came from, vision linears in 4 bits, the pixel dtype entering the vision
    tower, the caption grade per X-ray. Each row must say what the load did: the name it was asked, the
    snapshot it was served, and per X-ray the grade of that X-ray's own caption (or "missing")."""
    ids = [f.id for f in xray_fixtures]
    rows = {
        path: table_row(what_loads(path), path, grades(what_loads(path), golden, xray_fixtures), xray_fixtures)
        for path in PATHS
    }
    summary.add_table(
        request.config,
        "what the installed release loads",
        COLUMNS + ids,
        [[row[column] for column in COLUMNS + ids] for row in rows.values()],
    )
    for path, row in rows.items():
        seen = what_loads(path)
        assert row["name asked"] == (PATHS[path] or str(captioner_checkpoint)).replace(str(Path.home()), "~"), row
        assert row["hub snapshot"] == (hub.snapshot_at(RELEASE.shipped).name if PATHS[path] else "-"), row
        if seen.error is None:  # a load that worked was quantized by something and captioned every X-ray
            assert row["quantized by"] != "-" and seen.vision_linears > 0, row
            assert list(seen.captions) == list(seen.pixel_dtypes) == ids, row
        for item in xray_fixtures:  # each X-ray's cell: its own caption against its own golden caption
            own = (
                "missing"
                if item.id not in seen.captions
                else goldens.grade(
                    seen.captions[item.id], golden.caption(item.id), item.must_mention, item.must_not_mention
                ).level
            )
            assert row[item.id].split(",")[0] == own, f"{path}: {item.id} shows {row[item.id]!r}, its caption: {own}"


# --- the cause: structure ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", params("cause"))
def test_vision_dtype_source_stays_16bit(path, what_loads, request):
    """transformers <4.52 casts pixel_values to visual.get_dtype(), the dtype of the vision tower's
    blocks.0.mlp.fc2: that linear must not be 4-bit (the dynamic repos keep every vision MLP in 16
    bits; the plain -bnb-4bit repos and load-time quantization before zoo 2026.10.4 do not)."""
    seen = loaded(what_loads(path))
    results.record_structure(
        request.config,
        path,
        f"{seen.repo}: {len(seen.vision_4bit)}/{seen.vision_linears} vision linears 4-bit ({seen.quantized_by})",
        ok=not seen.dtype_source_4bit,
    )
    assert not seen.dtype_source_4bit, garbage_output.DTYPE_SOURCE_4BIT.format(
        release=RELEASE.label,
        repo=seen.repo,
        source=loading.DTYPE_SOURCE,
        n_4bit=len(seen.vision_4bit),
        n_linears=seen.vision_linears,
        quantized_by=seen.quantized_by,
    )


@pytest.mark.parametrize("path", list(PATHS))
def test_no_linear4bit_without_quant_state(path, what_loads):
    """Every 4-bit linear carries its quantization state (a skip list the loader misreads leaves
    16-bit weights in Linear4bit modules)."""
    assert not loaded(what_loads(path)).missing_quant_state


# --- the symptom: what reaches the vision tower, and the captions ------------------------------------------


@pytest.mark.parametrize("path", params("symptom"))
def test_pixels_reach_the_vision_tower_floating(path, what_loads, request):
    seen = loaded(what_loads(path))
    results.record_structure(
        request.config,
        path,
        "pixel_values enter the vision tower as " + ", ".join(sorted(set(seen.pixel_dtypes.values()))),
        ok="uint8" not in str(seen.pixel_dtypes),
    )
    bad = {fid: d for fid, d in seen.pixel_dtypes.items() if "float" not in d}
    assert not bad, garbage_output.PIXELS_DESTROYED.format(
        release=RELEASE.label, dtypes=", ".join(sorted(set(bad.values())))
    )


@pytest.mark.parametrize("path", params("symptom"))
def test_captions_match_goldens(path, what_loads, golden, xray_fixtures, request):
    seen = loaded(what_loads(path))
    failures = captions.failures(
        seen.captions, xray_fixtures, golden, record=(request.config, f"{path} ({seen.repo.rsplit('/', 1)[-1]})")
    )
    assert not failures, garbage_output.CAPTIONS_DIFFER.format(
        release=RELEASE.label, where=f"{path}, {seen.repo}", failures="; ".join(failures)
    )


# --- the reproduction can fail: remove the cause, the outcome flips ------------------------------------------


@require.symptom_conditions(
    garbage_output.GarbageOutput(), hint="run a cell with an older transformers (u2024-11-11, u2024-12-01, ...)"
)
def test_keeping_the_dtype_source_16bit_removes_the_symptom(
    captioner_checkpoint, captioner_processor, golden, xray_fixtures
):
    """Serve unsloth 2024.11.11's repo with a stand-in that keeps visual.blocks.0.mlp in 16 bits (its
    only change): the pixels stay floating and the captions match, where the real stand-in destroys them."""
    seed = loading.release_of("2024.11.11", "2024.11.8")
    outcomes = {}
    for mutated in (False, True):
        quantizations = hub.load_quantizations()
        if mutated:
            plain = quantizations["plain-bnb-4bit"]
            quantizations["plain-bnb-4bit"] = hub.Quantization(
                plain.name,
                {**plain.config, "llm_int8_skip_modules": ["lm_head", "visual.blocks.0.mlp"]},
                plain.stands_for,
                "mutation: the dtype source kept in 16 bits",
                "test",
            )
        with hub_server.LocalHub(
            hub.snapshot_at(seed.shipped), tinymodel.standins(captioner_checkpoint, quantizations)
        ) as server:
            with hub_server.pointed_at(server):
                seen = loading.observe(
                    loading.plan(seed, SEVEN_B),
                    loading.load_time_settings(seed),
                    server.snapshot.name,
                    captioner_processor,
                    xray_fixtures,
                )
        outcomes[mutated] = (loaded(seen), grades(seen, golden, xray_fixtures))
    (original, original_grades), (fixed, fixed_grades) = outcomes[False], outcomes[True]
    assert original.dtype_source_4bit and "torch.uint8" in original.pixel_dtypes.values()
    assert not all(g.at_least(golden.required) for g in original_grades.values()), (
        "the unmutated load should destroy a caption"
    )
    assert not fixed.dtype_source_4bit and set(fixed.pixel_dtypes.values()) == {"torch.bfloat16"}
    assert all(g.at_least(golden.required) for g in fixed_grades.values()), {
        k: g.describe() for k, g in fixed_grades.items()
    }


# --- the 16-bit reference and the goldens --------------------------------------------------------------------


def test_16bit_captions_match_goldens(captioner_checkpoint, captioner_processor, golden, xray_fixtures):
    """The control: the captioner in 16 bits gives its goldens on this stack."""
    texts = captioner.sixteen_bit_captions(captioner_checkpoint, xray_fixtures)
    failures = captions.failures(texts, xray_fixtures, golden)
    assert not failures, f"16-bit captions differ from their goldens ({golden.matched}): " + "; ".join(failures)


def test_goldens_are_current(golden, xray_fixtures):
    problems = goldens.stale(golden, {f.id: captioner.fixture_digest(f) for f in xray_fixtures})
    assert not problems, (
        f"stale golden {golden.path}: " + "; ".join(problems) + f" (refresh: {goldens.refresh_hint(golden)})"
    )


def test_obtained_captions_pass_their_fixtures(request, golden, xray_fixtures):
    """With --update-golden: a golden that fails its own fixture's terms is no golden."""
    if not request.config.getoption("--update-golden"):
        pytest.skip("checks obtained captions only with --update-golden")
    for item in xray_fixtures:
        grade = goldens.grade(golden.caption(item.id), item.description, item.must_mention, item.must_not_mention)
        assert grade.at_least("terms"), (
            f"{item.id}: obtained 16-bit caption {golden.caption(item.id)!r} fails its fixture: {grade.describe()}"
        )


# --- the release's real loader on a GPU ------------------------------------------------------------------------


@require.gpu
@pytest.mark.slow
@pytest.mark.own_process
@pytest.mark.parametrize("path", params("symptom"))
def test_fast_vision_model_loads_what_the_model_predicts(
    path, what_loads, captioner_checkpoint, captioner_processor, golden, xray_fixtures, hub_for
):
    """The installed release's FastVisionModel.from_pretrained(load_in_4bit=True) on the same hub or
    folder: the same linears in 4 bits as harness.failures.loading predicts, and captions that match the
    goldens (except where the registry expects the garbage)."""
    from unsloth import FastVisionModel

    predicted = loaded(what_loads(path))
    name = PATHS[path] or str(captioner_checkpoint)
    server = hub_for(predicted.snapshot, base=captioner_checkpoint) if PATHS[path] else None
    with hub_server.pointed_at(server) if server else nullcontext():
        model, _ = FastVisionModel.from_pretrained(name, load_in_4bit=True)
    FastVisionModel.for_inference(model)
    real = {n.removeprefix("base_model.model.") for n in quant.linears(model).linear4bit}
    assert real == set(predicted.linear4bit), (
        f"real minus predicted: {sorted(real - set(predicted.linear4bit))[:5]}; "
        f"predicted minus real: {sorted(set(predicted.linear4bit) - real)[:5]}"
    )
    texts = {
        item.id: inference.caption(model, captioner_processor, item.image(), max_new_tokens=captioner.MAX_NEW_TOKENS)
        for item in xray_fixtures
    }
    failures = captions.failures(texts, xray_fixtures, golden)
    assert not failures, garbage_output.CAPTIONS_DIFFER.format(
        release=RELEASE.label, where=f"FastVisionModel, {path}", failures="; ".join(failures)
    )


# --- real models (opt-in: --models real) -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", params("symptom"))
def test_real_model_captions_xrays(path, request, xray_fixtures):
    """A real Qwen2-VL through the same model of the release: QVL_REAL_MODEL (a local 16-bit checkpoint:
    the load-time path), or the live hub (--hub live: both paths). Per-fixture criteria, not goldens:
    must mention chest/lung/radiograph, never shirt/fabric/pattern."""
    import transformers

    if request.config.getoption("--models") != "real":
        pytest.skip("real checkpoints run with --models real")
    live = request.config.getoption("--hub") == "live"
    local = os.environ.get("QVL_REAL_MODEL")
    if not (local or live) or (path == "reported" and not live):
        pytest.skip("--models real needs QVL_REAL_MODEL=<local Qwen2-VL dir> (load-time path) or --hub live")
    name = PATHS[path] or local or "Qwen/Qwen2-VL-7B-Instruct"
    plan = loading.plan(RELEASE, name)
    processor = transformers.AutoProcessor.from_pretrained(plan.repo)
    seen = loaded(
        loading.observe(plan, loading.load_time_settings(RELEASE), "live" if live else "-", processor, xray_fixtures)
    )
    failures = captions.failures(seen.captions, xray_fixtures)
    assert not failures, garbage_output.CAPTIONS_DIFFER.format(
        release=RELEASE.label, where=plan.repo, failures="; ".join(failures)
    )
