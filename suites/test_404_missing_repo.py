"""Seed failure 1, '404 / Repository Not Found': a release maps the Qwen2-VL-72B names with
load_in_4bit=True to `unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit`, which was never on the hub.

The installed release's load goes through harness.failures.loading, the same model of "what a release
loads" as the garbage-output suite: its own get_model_name, the local hub as it was when it shipped,
a real transformers load. Every matrix release's own get_model_name is also checked against the
December 2024 hub with the real huggingface_hub client. Inside the registry's affected range
(fixtures/known_failures.toml, id "404") the load must end in RepositoryNotFoundError; outside it the
resolved repo must load. Pointing the release's mapper entry back at the plain -bnb-4bit repo (the
fix of unsloth 2025.1.6) must turn the 404 into a load.
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from harness.data import hub
from harness.failures import loading
from harness.failures.base import subject_of
from harness.failures.missing_repo import (
    MISSING,
    NAMES_72B,
    PLAIN,
    MissingRepo,
    missing_targets,
)
from harness.lab import quant
from harness.pytest import require, summary
from harness.releases.mapper import ReleaseMapper

SNAPSHOT = "2024-12"
FAILURE = MissingRepo()
RELEASES = FAILURE.params(shows="symptom")
INSTALLED = loading.installed_release()


def download_config(server, repo_id: str, context: str) -> None:
    """Fetch config.json of ``repo_id`` from ``server`` with the real client; a 404 names its context."""
    import huggingface_hub

    with hub.pointed_at(server):
        try:
            huggingface_hub.hf_hub_download(repo_id, "config.json")
        except RepositoryNotFoundError as exc:
            exc.add_note(f"{context}: {repo_id!r} is not on hub snapshot {server.snapshot.name!r}")
            raise


@pytest.mark.parametrize("model_name", NAMES_72B)
@pytest.mark.parametrize("release", RELEASES)
def test_72b_name_resolves_to_a_repo_on_the_hub(release, model_name, hub_for):
    run = ReleaseMapper(subject_of(release)).resolve(model_name, load_in_4bit=True)
    assert run.error is None, f"{run.release}: get_model_name({model_name!r}, load_in_4bit=True) raised {run.error}"
    download_config(hub_for(SNAPSHOT), run.resolved, f"{run.release} maps {model_name!r} (load_in_4bit=True) to {run.resolved!r}")


@pytest.mark.parametrize("release", [pytest.param(p.values[0], id=p.id) for p in RELEASES])
def test_16bit_loading_never_leaves_the_hub(release, hub_for):
    """With load_in_4bit=False no release redirects the 72B names, in or out of the affected range."""
    mapper = ReleaseMapper(subject_of(release))
    for name in NAMES_72B:
        run = mapper.resolve(name, load_in_4bit=False)
        assert run.error is None, run.error
        download_config(hub_for(SNAPSHOT), run.resolved, f"{run.release} maps {name!r} (load_in_4bit=False)")


# Inside the 404 range the sweep must find the missing 72B target: it tests the cause.
@pytest.mark.parametrize("release", FAILURE.params(shows="cause"))
def test_mapper_integrity_sweep(release, hub_for, request):
    """Every name the release's mapper knows, with and without 4-bit: where the hub has the input
    repo, the mapped target must exist too (on the local snapshot, or huggingface.co with --hub live)."""
    import huggingface_hub

    live = request.config.getoption("--hub") == "live"
    mapper = ReleaseMapper(subject_of(release))
    server = None if live else hub_for(SNAPSHOT)
    with hub.pointed_at(server) if server else nullcontext():
        rows = missing_targets(mapper, huggingface_hub.HfApi().repo_exists)
    where = "huggingface.co" if live else f"local snapshot {SNAPSHOT}"
    summary.add_table(request.config, f"mapper sweep: {mapper.code.label} against {where}: missing targets",
                      ["input name", "load_in_4bit", "resolved (missing)"], rows or [["(none)", "", ""]])
    assert not rows, f"{mapper.code.label} maps {len(rows)} available name(s) to repos missing on {where} (Repository Not Found): {rows}"


# --- the installed release's whole load path ------------------------------------------------------------

def installed_params() -> list:
    if INSTALLED is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="unsloth is not installed here: run a matrix cell"))]
    return [pytest.param(name, id=name, marks=FAILURE.marks_for(INSTALLED.unsloth)) for name in NAMES_72B]


@pytest.mark.parametrize("name", installed_params())
def test_the_installed_release_loads_the_72b_name(name, hub_for):
    seen = FAILURE.reproduce(INSTALLED, name=name, hub_for=hub_for)
    if seen.error is not None:
        if loading.repo_not_found(seen.error):
            seen.error.add_note(f"{INSTALLED.label} asked the {seen.snapshot} hub for {seen.repo}")
        raise seen.error
    assert seen.linear4bit and not seen.missing_quant_state, f"{seen.repo}: {seen.quantized_by}"


def test_pointing_the_mapper_back_at_the_plain_repo_removes_the_404(hub_for):
    """unsloth 2024.12.11's own load of the 72B name 404s; the same release with its mapper entries for
    the missing dynamic repo pointed at unsloth/Qwen2-VL-72B-Instruct-bnb-4bit (what 2025.1.6 did) loads."""
    release = FAILURE.subject("2024.12.11")
    original = FAILURE.reproduce(release, name="unsloth/Qwen2-VL-72B-Instruct", hub_for=hub_for)
    assert loading.repo_not_found(original.error), f"expected the 404, got {original.error!r}"
    fixed = FAILURE.reproduce(release, name="unsloth/Qwen2-VL-72B-Instruct", hub_for=hub_for, mapper_edits={MISSING: PLAIN})
    assert fixed.error is None and fixed.repo.lower() == PLAIN.lower()
    assert fixed.quantized_by == "the checkpoint's quantization_config" and not fixed.missing_quant_state


@require.gpu
@pytest.mark.slow
@pytest.mark.xdist_group("fast-vision-model")
@pytest.mark.parametrize("release", [p for p in RELEASES if p.id.startswith("installed-")])
def test_fast_vision_model_loads_the_72b_name_in_4bit(release, hub_for):
    """The installed release's real loader against the local hub (unsloth needs CUDA to load 4-bit)."""
    from unsloth import FastVisionModel


    server = hub_for(SNAPSHOT)
    with hub.pointed_at(server):
        try:
            model, _ = FastVisionModel.from_pretrained("unsloth/Qwen2-VL-72B-Instruct", load_in_4bit=True)
        except Exception as exc:  # noqa: BLE001 - releases wrap the 404 in FileNotFoundError/OSError
            missing = loading.repo_not_found(exc)
            if missing is None:
                raise
            asked = sorted({r.path.split("/resolve/")[0] for r in server.requests if r.status == 404})
            missing.add_note(f"{subject_of(release).label}: FastVisionModel asked the hub for {asked}")
            raise missing from exc
    report = quant.linears(model)
    assert report.linear4bit and not report.missing_quant_state
    assert any("72b-instruct-bnb-4bit" in r.path.lower() for r in server.requests if r.status == 200)
