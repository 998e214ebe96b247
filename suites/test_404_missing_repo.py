"""Seed failure 1, '404 / Repository Not Found', and the missing-repo class (the registry's 404 entries,
`qvl-harness known` prints them): a release maps a name to a repo that was not on the hub.

The installed release's load goes through harness.failures.loading, the same model of "what a release
loads" as the garbage-output suite: its own get_model_name, the local hub as it was when it shipped,
a real transformers load. Every matrix release's own get_model_name is also checked against the
December 2024 hub with the real huggingface_hub client, and every name its mapper knows against the
hub history on the day it shipped (harness.failures.hub_sweep; with --hub live, the canary's against
the hub of today). Inside the registry's affected range
(fixtures/known_failures.toml, id "404") the load must end in RepositoryNotFoundError; outside it the
resolved repo must load. Pointing the release's mapper entry back at the plain -bnb-4bit repo (the
fix of unsloth 2025.1.6) must turn the 404 into a load.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from harness.data import hub, hub_history, hub_server
from harness.failures import hub_sweep, loading
from harness.failures.base import commit_at, failure_classes, subject_of
from harness.failures.missing_repo import (
    MISSING,
    NAMES_72B,
    PLAIN,
    MissingRepo,
)
from harness.failures.registry import expectation_marks, load_registry
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

    with hub_server.pointed_at(server):
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
    download_config(
        hub_for(SNAPSHOT), run.resolved, f"{run.release} maps {model_name!r} (load_in_4bit=True) to {run.resolved!r}"
    )


@pytest.mark.parametrize("release", [pytest.param(p.values[0], id=p.id) for p in RELEASES])
def test_16bit_loading_never_leaves_the_hub(release, hub_for):
    """With load_in_4bit=False no release redirects the 72B names, in or out of the affected range."""
    mapper = ReleaseMapper(subject_of(release))
    for name in NAMES_72B:
        run = mapper.resolve(name, load_in_4bit=False)
        assert run.error is None, run.error
        download_config(hub_for(SNAPSHOT), run.resolved, f"{run.release} maps {name!r} (load_in_4bit=False)")


# --- every name each release maps, against the hub as it was (the hub history) and as it is (--hub live) -------


def sweep_params() -> list:
    """Every matrix cell's unsloth code, and the installed release (id ``installed-VERSION``: what
    `qvl-harness bisect` selects with ``-k installed``)."""
    params = [pytest.param(r, id=r.unsloth.label.replace(" ", "")) for r in hub_sweep.covered_releases()]
    if INSTALLED is not None:
        params.append(pytest.param(INSTALLED, id=f"installed-{INSTALLED.unsloth.version}"))
    return params


def claim_params() -> list:
    """Each release with each registry entry about missing repos, marked with that entry's expectation for the
    cause: inside its range the sweep must find the repos it names missing, outside it none of them."""
    return [
        pytest.param(
            param.values[0],
            failure.id,
            id=f"{param.id}-{failure.id}",
            marks=expectation_marks(
                failure.id, param.values[0].unsloth.version, shows="cause", commit=commit_at(param.values[0].unsloth)
            ),
        )
        for param in sweep_params()
        for failure in hub_sweep.missing_repo_failures(load_registry())
    ]


def show(found: hub_sweep.Sweep, request) -> None:
    """The sweep's counts and absent rows in the summary table (and so in the HTML report)."""
    summary.add_table(
        request.config,
        f"hub sweep: {found.release} against {found.where} on {found.day}",
        hub_sweep.SUMMARY_HEADER,
        found.summary_rows(),
    )


def assert_nothing_new(found: hub_sweep.Sweep) -> None:
    """A missing target no registry entry explains fails as a new finding."""
    new = found.new(load_registry())
    missing = ", ".join(sorted({r.target for r in new}))
    assert not new, (
        f"new finding: {found.release} maps {len(new)} name(s) to {missing}, missing on {found.where} on "
        f"{found.day}, which no known failure explains: " + "; ".join(r.describe() for r in new)
    )


def assert_not_missing(found: hub_sweep.Sweep, rows: list[hub_sweep.Row]) -> None:
    """Missing targets a registry entry claims fail with the hub's error (the entries' pattern)."""
    assert not rows, (
        f"{found.release} maps {len(rows)} name(s) to repos missing on {found.where} on {found.day} "
        f"(Repository Not Found): " + "; ".join(f"{r.describe()} [{r.claimed_by}]" for r in rows)
    )


@pytest.mark.parametrize("release", sweep_params())
def test_every_mapped_target_existed_when_the_release_shipped(release, request):
    """Every name the release's mapper knows, with and without 4-bit: where the name's repo was not missing
    on the day the release shipped, its target must have existed (the hub history; unknown is listed), or a
    registry entry must explain it."""
    found = hub_sweep.sweep(release)
    show(found, request)
    assert_nothing_new(found)


@pytest.mark.parametrize(("release", "failure_id"), claim_params())
def test_the_repos_a_known_failure_names_are_mapped_only_in_its_range(release, failure_id):
    """The sweep's absent rows an entry claims: the known failure, where its range has the release."""
    assert_not_missing(*failure_classes()[failure_id]().swept(release))


def test_live_hub_has_every_target_the_canary_maps(request):
    """On a networked runner (--hub live): the canary's mapper against the hub as it is today; each answer is
    written to the report dir as an observation for `qvl-harness hub history --merge`."""
    import huggingface_hub

    if request.config.getoption("--hub") != "live":
        pytest.skip("needs --hub live (a networked runner): the canary's mapper against the real hub")
    release = hub_sweep.canary_release()
    found, observations = hub_sweep.live_sweep(
        release, huggingface_hub.HfApi().repo_exists, huggingface_hub.constants.ENDPOINT, datetime.date.today()
    )
    report_dir = request.config.getoption("--report-dir")
    if report_dir:
        cell = request.config.getoption("--cell") or "local"
        hub_history.write_observations(Path(report_dir) / f"hub-observations-{cell}.json", observations)
    show(found, request)
    assert_nothing_new(found)
    assert_not_missing(found, found.expected(load_registry()))


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
    fixed = FAILURE.reproduce(
        release, name="unsloth/Qwen2-VL-72B-Instruct", hub_for=hub_for, mapper_edits={MISSING: PLAIN}
    )
    assert fixed.error is None and fixed.repo.lower() == PLAIN.lower()
    assert fixed.quantized_by == "the checkpoint's quantization_config" and not fixed.missing_quant_state


@require.gpu
@pytest.mark.slow
@pytest.mark.own_process
@pytest.mark.parametrize("release", [p for p in RELEASES if p.id.startswith("installed-")])
def test_fast_vision_model_loads_the_72b_name_in_4bit(release, hub_for):
    """The installed release's real loader against the local hub (unsloth needs CUDA to load 4-bit)."""
    from unsloth import FastVisionModel

    server = hub_for(SNAPSHOT)
    with hub_server.pointed_at(server):
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


# --- the loader against a hub of today that lost one repo the release maps -------------------------------------

GONE_TODAY = "unsloth/Qwen2-VL-2B-Instruct"  # its 4-bit target is taken off the hub of today


def hub_of_today(name: str, release: loading.Release, without: str = "") -> hub.Snapshot:
    """Every repo ``release``'s mapper names (names and targets), on a hub of today, but ``without``."""
    repos = [r for r, _, _ in hub_sweep.mapped_repos([release]).values() if r.lower() != without.lower()]
    return hub.snapshot_with(name, f"the hub of today without {without or 'nothing'}", datetime.date.today(), repos)


def load_from(server, name: str):
    """The installed release's own loader for ``name`` in 4 bits from ``server``; the hub's error it ends in
    (RepositoryNotFoundError, which releases wrap in FileNotFoundError/OSError) raised as itself."""
    from unsloth import FastVisionModel

    with hub_server.pointed_at(server):
        try:
            return FastVisionModel.from_pretrained(name, load_in_4bit=True)[0]
        except Exception as exc:  # noqa: BLE001 - only the hub's own error is unwrapped
            missing = loading.repo_not_found(exc)
            if missing is None:
                raise
            raise missing from exc


@require.gpu
@pytest.mark.slow
@pytest.mark.own_process
@pytest.mark.skipif(INSTALLED is None, reason="unsloth is not installed here: run a matrix cell")
def test_the_loader_raises_the_hubs_error_for_a_mapped_repo_gone_today_and_loads_with_it_back(hub_for):
    """The installed release (the canary on the nightly) maps the name with 4-bit to a repo; on a hub of today
    without that repo its FastVisionModel.from_pretrained raises the hub's RepositoryNotFoundError for it, and
    the same hub with the repo back loads the name in 4 bits."""
    target = ReleaseMapper(INSTALLED.unsloth).resolve(GONE_TODAY, load_in_4bit=True).resolved
    assert target and target.lower() != GONE_TODAY.lower(), f"{INSTALLED.label} maps {GONE_TODAY} to {target}"
    gone = hub_for(hub_of_today("today-without-one", INSTALLED, without=target))
    with pytest.raises(RepositoryNotFoundError):
        load_from(gone, GONE_TODAY)
    assert any(target.lower() in r.path.lower() and r.status == 404 for r in gone.requests), gone.requests[-5:]
    back = hub_for(hub_of_today("today", INSTALLED))
    report = quant.linears(load_from(back, GONE_TODAY))
    assert report.linear4bit and not report.missing_quant_state
    assert any(target.lower() in r.path.lower() for r in back.requests if r.status == 200)
