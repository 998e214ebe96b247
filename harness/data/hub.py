"""What the local hub serves: snapshots of which repos existed when, and what the real 4-bit repos declare.

A *snapshot* says which repos existed at a point in time: a named date of the hub history
(``fixtures/hub/history.toml``, harness.data.hub_history) and the repos present then, or a TOML file. Each repo is
16-bit or has the name of a real repo's quantization (``fixtures/hub/quantization.toml``: its quantization_config,
with where it was read). The server that serves a snapshot over HTTP is harness.data.hub_server.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from harness.core import schema
from harness.core.errors import HarnessError
from harness.core.paths import FIXTURES_DIR
from harness.data import hub_history

SNAPSHOTS_DIR = FIXTURES_DIR / "hub"
QUANTIZATION_FILE = SNAPSHOTS_DIR / "quantization.toml"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
REPO_KEYS = {"id", "quantization", "gated", "private"}
SNAPSHOT_KEYS = {"description", "date", "repos"}
QUANTIZATION_KEYS = {"stands_for", "source", "evidence", "quantization_config"}


# --- what the real pre-quantized repos declare ---------------------------------------------------


@dataclass(frozen=True)
class Quantization:
    """A real repo's config.json quantization_config, with where it was read and how much was seen."""

    name: str
    config: dict
    stands_for: tuple[str, ...]
    source: str
    evidence: str

    @property
    def skip_modules(self) -> list[str] | None:
        return self.config.get("llm_int8_skip_modules")


def load_quantizations(path: Path = QUANTIZATION_FILE) -> dict[str, Quantization]:
    where = path.name
    found = {}
    for name, entry in schema.load_toml(path, "quantization declarations").items():
        schema.keys(f"{where} [{name}]", entry, QUANTIZATION_KEYS)
        config = entry["quantization_config"]
        if config.get("quant_method") != "bitsandbytes" or config.get("load_in_4bit") is not True:
            raise HarnessError(f"{where} [{name}]: quantization_config must be bitsandbytes with load_in_4bit = true")
        skips = config.get("llm_int8_skip_modules", [])
        if not isinstance(skips, list) or not all(isinstance(s, str) and s for s in skips):
            raise HarnessError(f"{where} [{name}]: llm_int8_skip_modules must be a list of module names")
        found[name] = Quantization(name, dict(config), tuple(entry["stands_for"]), entry["source"], entry["evidence"])
    return found


# --- snapshots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubRepo:
    id: str
    quantization: str | None = None  # None: a 16-bit repo
    gated: bool = False
    private: bool = False

    @property
    def kind(self) -> str:
        return self.quantization or "16bit"


@dataclass(frozen=True)
class Snapshot:
    name: str
    description: str
    date: datetime.date
    repos: tuple[HubRepo, ...]

    def find(self, repo_id: str) -> HubRepo | None:
        """The repo named ``repo_id`` in any letter case, or None."""
        wanted = repo_id.lower()
        return next((r for r in self.repos if r.id.lower() == wanted), None)


def parse_snapshot(text: str, name: str) -> Snapshot:
    """A snapshot from TOML text; anything malformed is one HarnessError line naming the file."""
    return snapshot_of(schema.parse_toml(text, f"hub snapshot {name}"), name)


def snapshot_of(data: dict, name: str) -> Snapshot:
    """The snapshot a parsed TOML file declares."""
    where = f"hub snapshot {name}"
    quantizations = load_quantizations()
    schema.keys(where, data, set(), SNAPSHOT_KEYS)
    if not isinstance(data.get("description"), str):
        raise HarnessError(f"{where}: description must be a string")
    if type(data.get("date")) is not datetime.date:
        raise HarnessError(f"{where}: date must be a TOML date like 2024-12-31")
    raw_repos = data.get("repos")
    if not isinstance(raw_repos, list) or not raw_repos:
        raise HarnessError(f"{where}: needs at least one [[repos]] entry")
    repos: list[HubRepo] = []
    for number, raw in enumerate(raw_repos, 1):
        entry = f"{where}: repo #{number}"
        schema.keys(entry, raw, set(), REPO_KEYS)
        repo_id = raw.get("id")
        if not isinstance(repo_id, str) or not REPO_ID.fullmatch(repo_id):
            raise HarnessError(f"{entry}: id {repo_id!r} is not an OWNER/NAME repo id")
        quantization = raw.get("quantization")
        if quantization is not None and quantization not in quantizations:
            raise HarnessError(
                f"{entry} ({repo_id}): unknown quantization {quantization!r}; "
                f"known ({QUANTIZATION_FILE.name}): {', '.join(quantizations)}"
            )
        flags = {
            flag: schema.boolean(f"{entry} ({repo_id})", flag, raw.get(flag, False)) for flag in ("gated", "private")
        }
        repo = HubRepo(repo_id, quantization, **flags)
        clash = next((r for r in repos if r.id.lower() == repo_id.lower()), None)
        if clash:
            raise HarnessError(
                f"{entry}: {repo_id} is listed twice (repo ids are case-insensitive; first as {clash.id})"
            )
        repos.append(repo)
    return Snapshot(name, data["description"], data["date"], tuple(repos))


def snapshot_names() -> list[str]:
    return sorted(hub_history.load().snapshots)


def derived_snapshot(name: str) -> Snapshot:
    """The snapshot ``name`` of the hub history: the repos present on its date, each served as the
    quantization.toml entry that stands for it says (16-bit where none does: the stand-in answers for the
    repo's existence, not its weights)."""
    history = hub_history.load()
    if name not in history.snapshots:
        raise HarnessError(f"unknown hub snapshot {name!r}; known: {', '.join(sorted(history.snapshots))}")
    when = history.snapshots[name]
    return snapshot_with(name, when.description, when.date, history.present_on(when.date))


def snapshot_with(name: str, description: str, date: datetime.date, repo_ids) -> Snapshot:
    """A snapshot of ``repo_ids``, each served as the quantization.toml entry that stands for it says."""
    kinds = {repo.lower(): q.name for q in load_quantizations().values() for repo in q.stands_for}
    repos = tuple(HubRepo(repo, kinds.get(repo.lower())) for repo in sorted(repo_ids, key=str.lower))
    return Snapshot(name, description, date, repos)


def snapshot_at(moment: datetime.date) -> Snapshot:
    """The newest fixture snapshot from on or before ``moment`` (the hub a release met when it shipped)."""
    snapshots = sorted((load_snapshot(n) for n in snapshot_names()), key=lambda s: s.date)
    before = [s for s in snapshots if s.date <= moment]
    if not before:
        raise HarnessError(
            f"no hub snapshot from on or before {moment} (oldest: {snapshots[0].name}, {snapshots[0].date})"
        )
    return before[-1]


def load_snapshot(name_or_path: str | Path) -> Snapshot:
    """The snapshot NAME of the hub history (fixtures/hub/history.toml), or the TOML file at a path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        return derived_snapshot(str(name_or_path))
    return snapshot_of(schema.load_toml(path, "hub snapshot"), path.stem)
