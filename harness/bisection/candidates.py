"""What a bisect searches: one package's releases in upload order, the states of a whole stack over time,
or the steps from one run's stack to the next run's (the nightly's culprit search)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from datetime import time as dtime

from packaging.version import Version

from harness.core.errors import HarnessError
from harness.env import pypi


@dataclass(frozen=True)
class Point:
    """One candidate: a release (or a stack state) that a probe installs and judges."""

    key: str  # the version, or the ISO moment in --by-date mode; what --good/--bad take
    label: str
    uploaded: datetime
    pins: tuple[str, ...]


def end_of_day(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(timezone.utc).date(), dtime.max, tzinfo=timezone.utc)


def version_points(releases: list[pypi.Release]) -> list[Point]:
    return [Point(r.version, r.requirement, r.uploaded, (r.requirement,)) for r in releases]


def stack_points(histories: dict[str, list[pypi.Release]], start: datetime | None, end: datetime) -> list[Point]:
    """The states of a stack over time: every upload of any of its packages that changes the state."""
    earliest = max(h[0].uploaded for h in histories.values())  # every package has a release from here on
    start = max(start or earliest, earliest)
    moments = sorted({r.uploaded for h in histories.values() for r in h if start < r.uploaded <= end} | {start})
    points: list[Point] = []
    previous: tuple[str, ...] = ()
    for moment in moments:
        state = tuple(pypi.newest_at(h, moment).requirement for h in histories.values())
        if state == previous:
            continue
        changed = [req for req in state if req not in previous]
        key = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(Point(key, f"@{key} ({' '.join(changed)})", moment, state))
        previous = state
    return points


def index_of(points: list[Point], value: str, by_date: bool, releases: list[pypi.Release] | None) -> int:
    """The position of ``value`` (a version, or a date with ``by_date``) among ``points``; a version is
    checked on the index first (harness.bisection.inputs)."""
    if by_date:
        moment = pypi.parse_date(value)
        index = max((i for i, p in enumerate(points) if p.uploaded <= moment), default=None)
        if index is None:
            raise HarnessError(f"{value} is before the first state in range ({points[0].key})")
        return index
    key = pypi.release_of(releases, value).version
    for i, point in enumerate(points):
        if point.key == key:
            return i
    raise HarnessError(f"{value} is outside the range {points[0].key} .. {points[-1].key}")


def between_stacks(
    before: dict[str, str], after: dict[str, str], histories: dict[str, list[pypi.Release]], together: timedelta
) -> list[Point]:
    """The states from stack ``before`` to stack ``after`` (package -> version), one upload at a time.

    Only the packages whose versions differ move: every release of each between its two versions
    (the newer end included), merged in upload order. Uploads of different packages closer than
    ``together`` are one step (unsloth and unsloth-zoo are released minutes apart and often need
    each other). The first point is ``before``; every point pins every changed package.
    """
    moving = {name: history for name, history in histories.items() if before.get(name) != after.get(name)}
    events = []
    for name, history in moving.items():
        old, new = pypi.release_of(history, before[name]), pypi.release_of(history, after[name])
        if Version(new.version) < Version(old.version):
            raise HarnessError(f"{name} went back from {old.version} to {new.version}: a downgrade is not bisected")
        events += [r for r in history if Version(old.version) < Version(r.version) <= Version(new.version)]
    events.sort(key=lambda r: r.uploaded)
    state = {name: before[name] for name in moving}
    points = [
        Point(
            "previous",
            "the previous stack (" + " ".join(f"{n}=={v}" for n, v in state.items()) + ")",
            min((r.uploaded for r in events), default=datetime.now(timezone.utc)),
            _pins(state),
        )
    ]
    step: list[pypi.Release] = []
    for release in [*events, None]:
        if step and (
            release is None
            or release.uploaded - step[0].uploaded > together
            or release.package in {r.package for r in step}
        ):
            state.update({r.package: r.version for r in step})
            key = " + ".join(r.requirement for r in step)
            points.append(Point(key, key, step[-1].uploaded, _pins(state)))
            step = []
        if release is not None:
            step.append(release)
    return points


def _pins(state: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{name}=={version}" for name, version in state.items())
