"""Builds beside the workers: the models a run's test files need, made once, by the controller's children.

Built on first use, every xdist worker reached the same build at once: one built under the file lock
while the others waited through their setup, each with the stack imported. Instead the controller (the
xdist master, or the one process without xdist) reads the run's test files, never importing them,
picks the builds whose names they use (BUILDS: identifiers, not strings or comments), asks
tinymodel.missing which of those are not cached yet, and builds only those, in child interpreters (nothing
the controller imported can patch what is built; one per chain of builds that depend on each other, the
chains side by side). Each child takes the locks of what it will build before xdist's own
pytest_sessionstart starts the workers, so the workers start at once (importing the stack, collecting, running
what needs no build) and a test that needs a model waits on its lock for the child's build, never making its
own. A name the table misses costs time, never a result: the test builds what it needs itself.
"""

from __future__ import annotations

import fnmatch
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.core import progress
from harness.data import hub
from harness.families import registry
from harness.lab import captioner, tinymodel
from harness.pytest import workers

SKIPPED_FOLDERS = ("__pycache__", "node_modules")  # and every hidden folder (.tox, .git, .venv)


def served_kinds() -> list[str]:
    """The quantizations some hub snapshot serves: a stand-in depends on its base and quantization only,
    so one per quantization serves every snapshot."""
    kinds = {repo.kind for name in hub.snapshot_names() for repo in hub.load_snapshot(name).repos}
    return sorted(kinds - {"16bit"})


def standins_of(base: Path | None) -> None:
    checkpoints = tinymodel.standins(base)
    for kind in served_kinds():
        checkpoints(kind)


def family_models() -> None:
    for family in registry.plan().runs:
        family.build()


def family_captioners() -> None:
    """The captioners of the families this transformers has, less the tiny Qwen2-VL's (its own build)."""
    for family in filter(registry.trains_own_captioner, registry.plan().runs):
        captioner.build(of=family.captioner, in_this_process=True)


@dataclass(frozen=True)
class Build:
    id: str
    what: str  # as the progress line names it
    wanted_by: tuple[frozenset[str], ...]  # a test file wants it when it uses a name of each set
    make: Callable[[], object]


HUB = frozenset({"hub_for", "standins"})
CAPTIONER = frozenset({"captioner_checkpoint", "CAPTIONED"})  # the suites' fixture (default recipe, every fixture)
FAMILY_CAPTIONERS = frozenset({"family_captioner", "CAPTIONED"})
BUILDS = (
    Build(
        "tiny",
        "tiny Qwen2-VL",
        (frozenset({"tinymodel", "tiny_checkpoint", "tiny_processor"}) | HUB | CAPTIONER,),
        lambda: tinymodel.build(),
    ),
    Build("tiny-standins", "stand-ins of the tiny Qwen2-VL", (HUB,), lambda: standins_of(None)),
    Build("captioner", "tiny captioner", (CAPTIONER,), lambda: captioner.build(in_this_process=True)),
    Build(
        "captioner-standins",
        "stand-ins of the captioner",
        (CAPTIONER, HUB),
        lambda: standins_of(captioner.build(in_this_process=True)),
    ),
    Build("families", "family models", (frozenset({"families"}),), family_models),
    Build("family-captioners", "family captioners", (FAMILY_CAPTIONERS,), family_captioners),
)
# Builds that run in order in one child; the chains run side by side. A captioner's base and a family
# captioner's model come from another chain: the first to reach a cache entry builds it, under its file lock.
CHAINS = (("tiny", "tiny-standins"), ("captioner", "captioner-standins"), ("families",), ("family-captioners",))


def test_files(args: list[str], invocation_dir: Path, patterns: list[str]) -> list[Path]:
    """The files pytest would collect tests from under ``args`` (paths, node ids), by name only."""
    found = []
    for arg in args:
        path = invocation_dir / arg.split("::")[0]
        if path.is_file():
            found.append(path)
        for folder, subfolders, names in os.walk(path) if path.is_dir() else ():
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in SKIPPED_FOLDERS)
            found += [Path(folder, n) for n in sorted(names) if any(fnmatch.fnmatch(n, p) for p in patterns)]
    return found


def names_in(path: Path) -> set[str]:
    """The identifiers of a Python file (a file that does not tokenize uses none)."""
    try:
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text(errors="replace")).readline)
        return {t.string for t in tokens if t.type == tokenize.NAME}
    except (tokenize.TokenError, SyntaxError):
        return set()


def wanted(files: list[Path]) -> list[Build]:
    uses = [names_in(f) for f in files]
    return [b for b in BUILDS if any(all(names & needed for needed in b.wanted_by) for names in uses)]


def to_build(builds: list[Build]) -> dict[Build, list[Path]]:
    """Each build with the cache entries it still lacks (an entry shared by two builds counts for the first)."""
    seen, todo = set(), {}
    for build in builds:
        fresh = [t for t in tinymodel.missing(build.make) if t not in seen]
        seen.update(fresh)
        if fresh:
            todo[build] = fresh
    return todo


BUILDING = pytest.StashKey["Building"]()


@pytest.hookimpl(tryfirst=True)  # before xdist's pytest_sessionstart, which starts the workers
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    files = test_files(config.args, config.invocation_params.dir, config.getini("python_files"))
    todo = to_build(wanted(files))
    if todo:
        beside = "the workers" if config.pluginmanager.hasplugin("dsession") else "the tests"
        config.stash[BUILDING] = Building(todo, beside)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, as it starts each worker
def pytest_configure_node(node) -> None:
    if node.config.stash.get(BUILDING, None) is not None:
        node.workerinput[workers.BUILDS_BESIDE] = True


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    building = session.config.stash.get(BUILDING, None)
    if building is None:
        return
    line = building.finish()
    if not progress.quiet_by_default():
        progress.relay(f"qvl-harness: {line}")


class Building:
    """The builds of a run, one child interpreter per chain (CHAINS), the chains side by side with the cores shared
    out between them. Each child first takes the locks of every cache entry it is to build, then builds: the
    workers (or the tests) start as soon as the locks are taken, and a test that needs an entry waits for it
    there. One after another in one child, the builds took 73 s on the H200's 16 cores; waited for before the
    workers started, the longest chain (training the captioner) was the wait."""

    def __init__(self, todo: dict[Build, list[Path]], beside: str):
        self.todo, self.beside = todo, beside
        chained = {build_id for chain in CHAINS for build_id in chain}
        chains = [[b for b in todo if b.id in chain] for chain in CHAINS] + [[b] for b in todo if b.id not in chained]
        self.chains = [chain for chain in chains if chain]
        # the controller's children are no workers even inside one's pytest run; one line for all of them, at the end
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
        threads = env.get("OMP_NUM_THREADS")  # set by tox -p or by hand: kept
        env.update(dict.fromkeys(workers.THREAD_VARS, threads) if threads else workers.thread_env(len(self.chains)))
        env["QVL_QUIET"] = "1"
        self.logs = [tempfile.TemporaryFile("w+") for _ in self.chains]  # a pipe left unread can fill
        self.started = time.monotonic()
        self.children = [
            subprocess.Popen(
                [sys.executable, "-m", __name__, *child_arguments(chain, todo)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
            for chain, log in zip(self.chains, self.logs, strict=True)
        ]
        for child in self.children:  # its locks are taken (or it died, and each test builds what it needs)
            child.stdout.readline()
            child.stdout.close()
        self.took: dict[int, float] = {}  # each chain's seconds, as its child ends
        self.waiters = [threading.Thread(target=self._time, args=(i,), daemon=True) for i in range(len(self.chains))]
        for waiter in self.waiters:
            waiter.start()

    def _time(self, chain: int) -> None:
        self.children[chain].wait()
        self.took[chain] = time.monotonic() - self.started

    def finish(self) -> str:
        """Wait for the children; the run's line about its builds."""
        for waiter in self.waiters:
            waiter.join()
        failures = []
        for child, log in zip(self.children, self.logs, strict=True):
            log.seek(0)
            if child.returncode:
                last = ([line for line in log.read().splitlines() if line.strip()] or ["no output"])[-1]
                failures.append(f"exit {child.returncode}: {last}")
            log.close()
        seconds = max(self.took.values())  # the chains ran side by side
        if failures:
            return f"building beside {self.beside} failed ({'; '.join(failures)}); each test built what it needed"
        made = ", ".join(b.what if len(t) == 1 else f"{b.what} ({len(t)})" for b, t in self.todo.items())
        each = ", ".join(f"{'+'.join(b.id for b in chain)} {self.took[i]:.0f}s" for i, chain in enumerate(self.chains))
        return f"built once beside {self.beside}, in {seconds:.0f}s: {made} (side by side: {each})"


HOLD = "--hold"  # the child's arguments: BUILD_ID... --hold TARGET...


def child_arguments(chain: list[Build], todo: dict[Build, list[Path]]) -> list[str]:
    return [*(b.id for b in chain), HOLD, *(str(target) for b in chain for target in todo[b])]


if __name__ == "__main__":  # the child: python -m harness.pytest.prebuild BUILD_ID... --hold TARGET...
    by_id = {b.id: b for b in BUILDS}
    ids, targets = sys.argv[1 : sys.argv.index(HOLD)], sys.argv[sys.argv.index(HOLD) + 1 :]
    tinymodel.hold([Path(t) for t in targets])
    print("held", flush=True)  # the controller lets the workers start
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for build_id in ids:
        by_id[build_id].make()
