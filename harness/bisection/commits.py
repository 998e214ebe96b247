"""Below a release: the commits between two adjacent releases (or two refs) of a local clone, searched
with the same oracle, probe log and endpoint checks as releases; each commit is installed like a
release (``name @ git+file://CLONE@SHA``, --no-deps) into a cached overlay."""

from __future__ import annotations

from harness.bisection.candidates import Point
from harness.bisection.engine import Outcome
from harness.bisection.oracle import GOOD
from harness.core.errors import HarnessError
from harness.releases import code as release_code
from harness.releases.git import Commit, Repo


def commit_point(repo: Repo, package: str, commit: Commit) -> Point:
    return Point(
        commit.sha[:12],
        f'{package} @ {commit.sha[:12]} "{commit.subject}"',
        commit.date,
        (repo.requirement(package, commit.sha),),
    )


def endpoint(repo: Repo, package: str, value: str, releases: set[str]) -> tuple[Commit, str]:
    """The commit of ``value`` (a release, placed on its commit, or a ref) and how it was found."""
    if value not in releases:
        commit = repo.commit(value)
        return commit, f"{value} is commit {commit.describe()}"
    wheel = release_code.wheel_path(package, value)
    placed = repo.place(package, value, wheel if wheel.is_file() else None)
    if placed.commit is None:
        raise HarnessError(
            f"cannot place {package} {value} on a commit of {repo.location}: {placed.how}; "
            "name commits with --good/--bad instead"
        )
    return placed.commit, f"{package} {value} is commit {placed.commit.describe()} ({placed.how})"


def points_between(repo: Repo, package: str, old: Commit, new: Commit) -> list[Point]:
    """``old`` and every commit after it up to ``new`` along ``new``'s first-parent line."""
    return [commit_point(repo, package, c) for c in [old, *repo.between(old.sha, new.sha)]]


def answer(repo: Repo, outcome: Outcome) -> list[str]:
    """The found commit in full (id, date, subject), and how to go on when it is a merge."""
    if not (outcome.first_new and outcome.last_old):
        return []
    found = repo.commit(outcome.first_new.key)
    lines = [f'{outcome.new_name} commit: {found.sha} {found.date:%Y-%m-%d %H:%M %z} "{found.subject}"']
    parents = repo.git("rev-list", "--parents", "-n", "1", found.sha).split()[1:]
    if len(parents) > 1:
        old, new = ("--good", "--bad") if outcome.old == GOOD else ("--bad", "--good")
        lines.append(
            f"it is a merge: the change came in on its branch; bisect that with {old} "
            f"{repo.git('merge-base', parents[0], parents[1]).strip()[:12]} {new} {parents[1][:12]}"
        )
    return lines
