"""The gpu env's scheduler: xdist's loadgroup scheduling, less a long test held behind another long one."""

from __future__ import annotations

import json
import types

from xdist.scheduler import LoadGroupScheduling

from harness.pytest import scheduling

pytest_plugins = ["pytester"]

# longest first, as the workers sort them: three long tests, then six that take no time
COLLECTION = [f"test_a.py::test_long_{c}" for c in "abc"] + [f"test_a.py::test_short_{i}" for i in range(6)]
SECONDS = [100, 100, scheduling.LONG_SECONDS] + [0] * 6


class Worker:
    """What the scheduler sees of a worker: the indices of the tests it was sent."""

    def __init__(self, name: str) -> None:
        self.name, self.sent, self.shutting_down = name, [], False
        self.gateway = type("Gateway", (), {"id": name})()

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True

    def got(self) -> list[str]:
        return [COLLECTION[i].rsplit("_", 1)[1] for i in self.sent]


def scheduled(pytester, tmp_path, make) -> tuple[Worker, Worker]:
    expected = tmp_path / "expected-seconds.json"
    expected.write_text(json.dumps(SECONDS))
    scheduler = make(pytester.parseconfig("--tx=2*popen"), None, expected)
    first, second = Worker("gw0"), Worker("gw1")
    for worker in (first, second):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, COLLECTION)
    scheduler.schedule()
    scheduler.mark_test_complete(first, 0)  # the first long test ends, the other still runs
    scheduler.mark_test_complete(first, first.sent[1])
    return first, second


def test_a_long_test_is_never_held_behind_another(pytester, tmp_path):
    first, second = scheduled(pytester, tmp_path, scheduling.LongestFirst)
    # each worker holds a short test behind its long one; the third long test goes to the first worker free,
    # and a short one behind it
    assert (first.got(), second.got()) == (["a", "5", "c", "3"], ["b", "4"])


def test_xdist_alone_holds_the_third_long_test_behind_the_first(pytester, tmp_path):
    """What the scheduler is for: xdist's own order, from the same collection."""
    first, second = scheduled(pytester, tmp_path, lambda config, log, _: LoadGroupScheduling(config, log))
    assert (first.got(), second.got()) == (["a", "c", "1", "2"], ["b", "0"])


def test_without_the_workers_seconds_the_order_is_xdists(pytester, tmp_path):
    expected = tmp_path / "absent.json"
    scheduler = scheduling.LongestFirst(pytester.parseconfig("--tx=2*popen"), None, expected)
    scheduler.collection = COLLECTION
    assert scheduler.long_tests() == set()


def test_only_a_loadgroup_run_gets_it(pytester):
    for dist, expected in (("loadgroup", scheduling.LongestFirst), ("load", None)):
        config = pytester.parseconfig("--tx=2*popen", "--dist", dist)
        scheduling.pytest_configure_node(types.SimpleNamespace(config=config, workerinput={}))  # as xdist starts one
        made = scheduling.pytest_xdist_make_scheduler(config=config, log=None)
        scheduling.pytest_unconfigure(config)
        assert (type(made) if made else None) is expected
