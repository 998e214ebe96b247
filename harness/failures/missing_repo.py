"""404: a release maps the Qwen2-VL-72B names with load_in_4bit=True to a dynamic repo that never existed.

unsloth 2024.12.2-2025.1.5 send `unsloth/Qwen2-VL-72B-Instruct` (and `Qwen/…`, `…-bnb-4bit`) to
`unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit`. The release's own get_model_name and the hub as it
was when the release shipped (harness.failures.loading) reproduce the RepositoryNotFoundError.
"""

from __future__ import annotations

from harness.data import hub
from harness.failures import loading
from harness.failures.base import Failure

NAMES_72B = ["unsloth/Qwen2-VL-72B-Instruct", "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit", "Qwen/Qwen2-VL-72B-Instruct"]
MISSING = "unsloth/qwen2-vl-72b-instruct-unsloth-bnb-4bit"
PLAIN = "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit"


class MissingRepo(Failure):
    id = "404"

    def subject(self, version: str, origin: str = "wheel") -> loading.Release:
        return loading.release_pair(version, origin)

    def reproduce(
        self, release: loading.Release, *, name: str, hub_for, mapper_edits: dict | None = None
    ) -> loading.Observation:
        """The release's load of ``name`` from the hub as it was when it shipped (tiny stand-ins, no captions);
        ``mapper_edits`` retargets the release's mapper first (what a fix would do)."""
        snapshot = hub.snapshot_at(release.shipped)
        with hub.pointed_at(hub_for(snapshot)):
            return loading.observe(
                loading.plan(release, name, mapper_edits=mapper_edits),
                loading.load_time_settings(release),
                snapshot.name,
                None,
                [],
            )
