"""Which xdist worker runs what next in a --dist loadgroup run (the gpu env's): the longest tests first, and never a
long test held on one worker behind another long one.

xdist's loadgroup scheduler keeps every worker one unit ahead (a worker runs a test once it knows the next, for the
fixtures' teardown), taken from the head of the queue. With the longest tests first (own_process sorts them), the
13th to 24th longest each waited behind one of the 12 longest: on the H200 a 67 s LoRA step started at 196 s on the
worker of the 147 s goldens test, and the run ended at 294 s, the other 11 workers done by 254 s. Here a worker whose
unfinished work holds a long test is handed the unit at the end of the queue (expected the shortest) instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadGroupScheduling

from harness.pytest.own_process import expected_seconds

LONG_SECONDS = 30  # expected seconds from which a test holds up the unit that waits behind it
EXPECTED = "qvl_expected_seconds"  # in a worker's workerinput: where it writes its collection's expected seconds
SECONDS_FILE = pytest.StashKey[Path]()  # the controller's, in a folder of its own


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, as it starts each worker
def pytest_configure_node(node) -> None:
    config = node.config
    if config.getvalue("dist") != "loadgroup":
        return
    if SECONDS_FILE not in config.stash:
        config.stash[SECONDS_FILE] = Path(tempfile.mkdtemp(prefix="qvl-schedule-")) / "expected-seconds.json"
    node.workerinput[EXPECTED] = str(config.stash[SECONDS_FILE])


@pytest.hookimpl(optionalhook=True)  # before xdist's own (trylast)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    expected = config.stash.get(SECONDS_FILE, None)  # only a loadgroup run has one
    return LongestFirst(config, log, expected) if expected is not None else None


def pytest_collection_finish(session: pytest.Session) -> None:
    """On a worker: each collected test's expected seconds, in collection order (the scheduler's order too; the
    positions hold whatever ids xdist gives the tests). Every worker collects the same: the last write stands."""
    path = getattr(session.config, "workerinput", {}).get(EXPECTED)
    if path:
        written = Path(f"{path}.{os.getpid()}")
        written.write_text(json.dumps([expected_seconds(item) for item in session.items]))
        os.replace(written, path)


def pytest_unconfigure(config: pytest.Config) -> None:
    expected = config.stash.get(SECONDS_FILE, None)
    if expected is not None:
        shutil.rmtree(expected.parent, ignore_errors=True)


class LongestFirst(LoadGroupScheduling):
    def __init__(self, config: pytest.Config, log, expected: Path) -> None:
        super().__init__(config, log)
        self.expected = expected
        self.long: set[str] | None = None

    def long_tests(self) -> set[str]:
        """The collection's long tests, once every worker has collected (the file is written by then). A file
        missing or of another length leaves xdist's own order: a wrong guess costs time, never a result."""
        if self.long is None:
            try:
                seconds = json.loads(self.expected.read_text())
            except (OSError, ValueError):
                seconds = []
            collection = self.collection or []
            paired = zip(collection, seconds, strict=True) if len(seconds) == len(collection) else ()
            self.long = {nodeid for nodeid, s in paired if s >= LONG_SECONDS}
        return self.long

    def _assign_work_unit(self, node) -> None:
        long = self.long_tests()
        unfinished = (n for unit in self.assigned_work.get(node, {}).values() for n, done in unit.items() if not done)
        if len(self.workqueue) > 1 and any(nodeid in long for nodeid in unfinished):
            self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
        super()._assign_work_unit(node)
