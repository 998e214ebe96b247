"""Missing repos: a release maps names with load_in_4bit=True to a dynamic repo that was not on the hub.

Each entry of the class (fixtures/known_failures.toml, those with ``names``) is reproduced by the hub sweep
(harness.failures.hub_sweep): the release's own mapper against the hub history on the day it shipped. The 404
entry (the Qwen2-VL-72B names, unsloth 2024.12.2-2025.1.5) is also reproduced along the user's whole path: the
release's own get_model_name and the hub as it was when the release shipped (harness.failures.loading) give the
RepositoryNotFoundError.
"""

from __future__ import annotations

from harness.data import hub, hub_server
from harness.failures import hub_sweep, loading
from harness.failures.base import Failure

NAMES_72B = ["unsloth/Qwen2-VL-72B-Instruct", "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit", "Qwen/Qwen2-VL-72B-Instruct"]
MISSING = "unsloth/qwen2-vl-72b-instruct-unsloth-bnb-4bit"
PLAIN = "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit"


class MappedToMissingRepo(Failure):
    """A failure of the missing-repo class: the sweep's absent rows its entry's ``names`` claim."""

    # huggingface_hub's error for a repo the hub does not have, as the local hub makes it raise
    messages = {
        "symptom": (
            "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. (Request ID: qvl-local)\n\n"
            "Repository Not Found for url: http://127.0.0.1:8080/api/models/unsloth/qwen2-vl-72b-instruct-unsloth-bnb-4bit",
        )
    }

    def subject(self, version: str, origin: str = "wheel") -> loading.Release:
        return loading.release_pair(version, origin)

    def swept(self, release: loading.Release) -> tuple[hub_sweep.Sweep, list[hub_sweep.Row]]:
        """The release's sweep, and its absent rows this failure claims."""
        found = hub_sweep.sweep(release)
        return found, found.claimed(self.id)


class MissingLlama31Dynamic(MappedToMissingRepo):
    """unslothai/unsloth#1892: the Llama-3.1-8B-Instruct names sent to a dynamic repo not on the hub."""

    id = "404-llama-3.1-8b"


class MissingRepo(MappedToMissingRepo):
    id = "404"

    def reproduce(
        self, release: loading.Release, *, name: str, hub_for, mapper_edits: dict | None = None
    ) -> loading.Observation:
        """The release's load of ``name`` from the hub as it was when it shipped (tiny stand-ins, no captions);
        ``mapper_edits`` retargets the release's mapper first (what a fix would do)."""
        snapshot = hub.snapshot_at(release.shipped)
        with hub_server.pointed_at(hub_for(snapshot)):
            return loading.observe(
                loading.plan(release, name, mapper_edits=mapper_edits),
                loading.load_time_settings(release),
                snapshot.name,
                None,
                [],
            )
