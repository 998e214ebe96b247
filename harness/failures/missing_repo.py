"""404: a release maps the Qwen2-VL-72B names with load_in_4bit=True to a dynamic repo that never existed.

unsloth 2024.12.2-2025.1.5 send `unsloth/Qwen2-VL-72B-Instruct` (and `Qwen/…`, `…-bnb-4bit`) to
`unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit`. The release's own get_model_name and the hub as it
was when the release shipped (harness.failures.loading) reproduce the RepositoryNotFoundError.
"""

from __future__ import annotations

from harness.data import hub
from harness.failures import loading
from harness.failures.base import Failure
from harness.releases.mapper import ReleaseMapper

NAMES_72B = ["unsloth/Qwen2-VL-72B-Instruct", "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit", "Qwen/Qwen2-VL-72B-Instruct"]
MISSING = "unsloth/qwen2-vl-72b-instruct-unsloth-bnb-4bit"
PLAIN = "unsloth/Qwen2-VL-72B-Instruct-bnb-4bit"


class MissingRepo(Failure):
    id = "404"

    def subject(self, version: str, origin: str = "wheel") -> loading.Release:
        return loading.release_pair(version, origin)

    def reproduce(self, release: loading.Release, *, name: str, hub_for, mapper_edits: dict | None = None) -> loading.Observation:
        """The release's load of ``name`` from the hub as it was when it shipped (tiny stand-ins, no captions);
        ``mapper_edits`` retargets the release's mapper first (what a fix would do)."""
        snapshot = hub.snapshot_at(release.shipped)
        with hub.pointed_at(hub_for(snapshot)):
            return loading.observe(loading.plan(release, name, mapper_edits=mapper_edits),
                                   loading.load_time_settings(release), snapshot.name, None, [])


def missing_targets(mapper: ReleaseMapper, repo_exists) -> list[list]:
    """Every name the release's mapper knows whose target is missing where the name itself exists
    (``repo_exists(name) -> bool``: the local snapshot, or huggingface.co): [name, load_in_4bit, target]."""
    known = {name: repo_exists(name) for name in mapper.mapper_names()}
    rows = []
    for name, exists in known.items():
        if not exists:
            continue  # the snapshot predates or lacks this model: nothing to check
        for four_bit in (True, False):
            run = mapper.resolve(name, four_bit)
            target_ok = run.error is None and (known[run.resolved] if run.resolved in known else repo_exists(run.resolved))
            if not target_ok:
                rows.append([name, four_bit, run.resolved or run.error])
    return rows
