"""What a bisect searches: one package's releases in upload order, or the states of a whole stack over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from datetime import time as dtime

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


def index_of(points: list[Point], value: str, by_date: bool, releases: list[pypi.Release] | None,
             yanked: dict[str, str] | None = None) -> int:
    """The position of ``value`` (a version, or a date with ``by_date``) among ``points``."""
    if by_date:
        moment = pypi.parse_date(value)
        index = max((i for i, p in enumerate(points) if p.uploaded <= moment), default=None)
        if index is None:
            raise HarnessError(f"{value} is before the first state in range ({points[0].key})")
        return index
    reason = pypi.yanked_reason(yanked or {}, value)
    if reason is not None:
        package = releases[0].package if releases else "the package"
        raise HarnessError(f"{package} {value} was yanked from PyPI{f' ({reason})' if reason else ''}: "
                           "it is no candidate; pick a release beside it")
    key = pypi.release_of(releases, value).version
    for i, point in enumerate(points):
        if point.key == key:
            return i
    raise HarnessError(f"{value} is outside the range {points[0].key} .. {points[-1].key}")
