"""Which Hugging Face repo existed when: fixtures/hub/history.toml, the one source.

Each repo the history knows has dated observations, each with its evidence (an issue's error, a commit,
a repo's first commit): ``present`` (seen on the hub that day), ``absent`` (seen missing that day) or
``created`` (its first commit: absent before, present from then). A repo it does not list is unknown.
What holds on a day between observations is read with one rule (``History.state``):

- a repo seen present stays present until the next observation (repos persist);
- a repo seen absent was absent back to the previous observation (it was not there before it was missed);
- between two observations that disagree, and after a last "absent", it is unknown.

The local hub's snapshots (``[snapshots.NAME]``: a date and a description) are the repos present at
their date (harness.data.hub derives them). ``merge`` folds a night's observations file
(``pytest --hub live``) into the history; only what changes an answer is kept.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

from harness.core import atomic, schema
from harness.core.errors import HarnessError
from harness.core.paths import FIXTURES_DIR

HISTORY_FILE = FIXTURES_DIR / "hub" / "history.toml"
STATES = ("present", "absent", "created")
OBSERVATION_KEYS = {"state", "date", "source"}
LIVE = "(pytest --hub live)"  # ends the source of a night's observation (harness.failures.hub_sweep.live_sweep)
HEADER = """\
# Which Hugging Face repo existed when: the one source of the harness's hub (harness/data/hub_history.py).
# seen: observations with their evidence. "present": seen on the hub that day (it stays until the next
# observation); "absent": seen missing that day (it was not there back to the previous observation);
# "created": its first commit (absent before). A repo not listed here is unknown: `qvl-harness hub unknown`
# lists the mapped ones still to look up. [snapshots.NAME]: the local hub's snapshots, the repos present on
# their date. `qvl-harness hub history --merge FILE` folds in a night's `pytest --hub live` observations.
"""


@dataclass(frozen=True)
class Observation:
    state: str
    date: datetime.date
    source: str


@dataclass(frozen=True)
class Answer:
    """What the history says of a repo on a day, with the observations it rests on."""

    state: str  # present, absent or unknown
    evidence: tuple[Observation, ...] = ()

    def describe(self) -> str:
        return "; ".join(f"{o.state} {o.date}: {o.source}" for o in self.evidence) or "no observation"


@dataclass(frozen=True)
class SnapshotDate:
    name: str
    date: datetime.date
    description: str


class History:
    def __init__(self, repos: dict[str, tuple[str, list[Observation]]], snapshots: dict[str, SnapshotDate]):
        self._repos = repos  # lower-case id -> (id as written, observations oldest first)
        self.snapshots = snapshots

    def ids(self) -> list[str]:
        return [spelled for spelled, _ in self._repos.values()]

    def record(self, repo: str) -> tuple[str, list[Observation]] | None:
        return self._repos.get(repo.lower())

    def state(self, repo: str, day: datetime.date) -> Answer:
        found = self.record(repo)
        seen = found[1] if found else []
        same_day = [o for o in seen if o.date == day]
        if same_day:
            return Answer("absent" if same_day[0].state == "absent" else "present", (same_day[0],))
        before = next((o for o in reversed(seen) if o.date < day), None)
        after = next((o for o in seen if o.date > day), None)
        if before is not None and before.state != "absent" and (after is None or after.state == "present"):
            return Answer("present", (before,))
        if after is not None and after.state != "present" and (before is None or before.state == "absent"):
            return Answer("absent", tuple(o for o in (before, after) if o))
        return Answer("unknown", tuple(o for o in (before, after) if o))

    def present_on(self, day: datetime.date) -> list[str]:
        return [spelled for spelled, _ in self._repos.values() if self.state(spelled, day).state == "present"]

    def merge(self, repo: str, observation: Observation) -> bool:
        """Add ``observation`` when it changes what the history answers for its day; True when added."""
        answer = self.state(repo, observation.date)
        clash = next((o for o in answer.evidence if o.date == observation.date), None)
        if clash is not None and clash.state != observation.state:
            raise HarnessError(
                f"{repo}: observed {observation.state} on {observation.date}, but the history has "
                f"{clash.state} that day ({clash.source})"
            )
        if answer.state == ("absent" if observation.state == "absent" else "present"):
            return False
        spelled, seen = self._repos.setdefault(repo.lower(), (repo, []))
        seen.append(observation)
        seen.sort(key=lambda o: o.date)
        seen[:] = _compacted(seen)
        _check_order(spelled, seen)
        return True

    def dumps(self) -> str:
        blocks = [HEADER]
        for snapshot in self.snapshots.values():
            blocks.append(
                f'\n[snapshots."{snapshot.name}"]\ndate = {snapshot.date}\n'
                f"description = {json.dumps(snapshot.description)}\n"
            )
        for spelled, seen in sorted(self._repos.values(), key=lambda r: r[0].lower()):
            lines = "".join(
                f'    {{ state = "{o.state}", date = {o.date}, source = {json.dumps(o.source)} }},\n' for o in seen
            )
            blocks.append(f'\n[[repo]]\nid = "{spelled}"\nseen = [\n{lines}]\n')
        return "".join(blocks)


def _compacted(seen: list[Observation]) -> list[Observation]:
    """Without the nights' observations inside a run of one state: the run's first and last answer the same
    for every day between them, so night after night of one repo missing stays two lines (cited ones stay)."""
    return [
        o
        for i, o in enumerate(seen)
        if not (0 < i < len(seen) - 1 and o.source.endswith(LIVE) and seen[i - 1].state == o.state == seen[i + 1].state)
    ]


def _check_order(repo: str, seen: list[Observation]) -> None:
    days = [o.date for o in seen]
    if len(set(days)) != len(days):
        raise HarnessError(f"{HISTORY_FILE.name}: {repo} has two observations on one day")
    created = [i for i, o in enumerate(seen) if o.state == "created"]
    if created and (len(created) > 1 or any(o.state == "present" for o in seen[: created[0]])):
        raise HarnessError(
            f"{HISTORY_FILE.name}: {repo}: 'created' must be its only creation, with no 'present' before it"
        )


def _date(where: str, value) -> datetime.date:
    if type(value) is not datetime.date:
        raise HarnessError(f"{where}: date must be a TOML date like 2024-12-04, got {value!r}")
    return value


def parse(text: str, where: str = HISTORY_FILE.name) -> History:
    data = schema.keys(where, schema.parse_toml(text, where), set(), {"snapshots", "repo"})
    snapshots = {}
    for name, entry in data.get("snapshots", {}).items():
        label = f"{where} [snapshots.{name}]"
        schema.keys(label, entry, {"date", "description"})
        snapshots[name] = SnapshotDate(name, _date(label, entry["date"]), str(entry["description"]))
    repos: dict[str, tuple[str, list[Observation]]] = {}
    for number, entry in enumerate(data.get("repo", []), 1):
        label = f"{where}: repo #{number} ({entry.get('id', '?') if isinstance(entry, dict) else '?'})"
        schema.keys(label, entry, {"id", "seen"})
        repo = entry["id"]
        if not isinstance(repo, str) or repo.count("/") != 1:
            raise HarnessError(f"{label}: id must be an OWNER/NAME repo id")
        if repo.lower() in repos:
            raise HarnessError(f"{label}: {repo} is listed twice (repo ids are case-insensitive)")
        seen = []
        for raw in entry["seen"] if isinstance(entry["seen"], list) else [None]:
            schema.keys(f"{label} seen", raw, OBSERVATION_KEYS)
            if raw["state"] not in STATES:
                raise HarnessError(f"{label}: state {raw['state']!r} is not one of {', '.join(STATES)}")
            if not (isinstance(raw["source"], str) and raw["source"].strip()):
                raise HarnessError(f"{label}: every observation needs its evidence in source")
            seen.append(Observation(raw["state"], _date(label, raw["date"]), raw["source"]))
        seen.sort(key=lambda o: o.date)
        _check_order(repo, seen)
        repos[repo.lower()] = (repo, seen)
    return History(repos, snapshots)


def load(path: Path = HISTORY_FILE) -> History:
    try:
        text = path.read_text()
    except OSError as exc:
        raise HarnessError(f"hub history {path}: cannot read it ({exc.strerror})") from None
    return parse(text, path.name)


# --- a night's observations (pytest --hub live) -----------------------------------------------------


def write_observations(path: Path, observations: list[tuple[str, Observation]]) -> Path:
    rows = [
        {"repo": repo, "state": o.state, "date": o.date.isoformat(), "source": o.source} for repo, o in observations
    ]
    return atomic.write_text(path, json.dumps({"observations": rows}, indent=1) + "\n")


def read_observations(path: Path) -> list[tuple[str, Observation]]:
    try:
        found = [
            (r["repo"], Observation(r["state"], datetime.date.fromisoformat(r["date"]), r["source"]))
            for r in json.loads(path.read_text())["observations"]
        ]
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise HarnessError(f"{path}: not an observations file (written by pytest --hub live --report-dir)") from None
    wrong = next((o.state for _, o in found if o.state not in ("present", "absent")), None)
    if wrong is not None:
        raise HarnessError(f"{path}: observed state {wrong!r}; a night observes present or absent")
    return found


def merge_file(observations: Path, path: Path = HISTORY_FILE) -> int:
    """Fold an observations file into the history at ``path``; returns how many observations were kept."""
    history = load(path)
    added = sum(history.merge(repo, observation) for repo, observation in read_observations(observations))
    atomic.write_text(path, history.dumps())
    return added
