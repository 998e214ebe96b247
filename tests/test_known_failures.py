"""One place lists the known failures: every registry entry has its Failure class and its suite, every class its
entry, and a new failure is an entry, a module and a suite that plug in with no other file changed."""

from __future__ import annotations

import re
import sys

import pytest
import toyfailure

import harness.failures as package
from harness.cli import main
from harness.core.errors import HarnessError
from harness.failures import base, registry

pytest_plugins = ["pytester"]


@pytest.fixture
def drop(tmp_path, monkeypatch):
    """Put modules beside the failure modules (on the package's search path) for one test."""
    modules = tmp_path / "failures"
    modules.mkdir()
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(modules)])
    yield modules
    for name in [m for m in sys.modules if m.startswith(f"{package.__name__}.toy")]:
        del sys.modules[name]


@pytest.fixture
def toy(drop, monkeypatch):
    """The toy failure: its entry in a copy of the registry, its module, its suite."""
    toyfailure.write_module(drop)
    suite = toyfailure.write_suite(drop.parent)
    monkeypatch.setattr(registry, "REGISTRY", toyfailure.write_registry(drop.parent, str(suite)))
    return suite


def test_every_entry_has_its_class_and_its_suite_and_every_class_its_entry():
    assert base.disagreements(registry.load_registry(), base.failure_classes()) == []


def test_a_new_known_failure_is_an_entry_a_module_and_a_suite(toy, capsys, pytester):
    classes = base.failure_classes()
    assert base.qualified(classes[toyfailure.ID]) == "harness.failures.toy_failure.ToyFailure"
    assert base.disagreements(registry.load_registry(), classes) == []
    assert main(["known"]) == 0
    assert f"{toyfailure.ID}: a toy failure of unsloth-zoo" in capsys.readouterr().out
    # its suite runs on every matrix release, the registry's range deciding which must reproduce
    result = pytester.runpytest_inprocess("-p", "harness.pytest.plugin", "-q", "-p", "no:randomly", str(toy))
    outcomes = result.parseoutcomes()
    assert outcomes["xfailed"] >= 1 and outcomes["passed"] >= 1 and "failed" not in outcomes, result.stdout.str()


def test_an_entry_without_its_class_is_one_line(drop, monkeypatch):
    suite = toyfailure.write_suite(drop.parent)
    monkeypatch.setattr(registry, "REGISTRY", toyfailure.write_registry(drop.parent, str(suite)))
    assert base.disagreements(registry.load_registry(), base.failure_classes()) == [
        f"known_failures.toml: entry {toyfailure.ID!r} has no Failure class "
        f"(declare one with id = {toyfailure.ID!r} in a module of harness/failures)"
    ]


def test_an_entry_whose_suite_is_gone_is_one_line(drop, monkeypatch):
    toyfailure.write_module(drop)
    monkeypatch.setattr(registry, "REGISTRY", toyfailure.write_registry(drop.parent, "suites/test_gone.py"))
    assert base.disagreements(registry.load_registry(), base.failure_classes()) == [
        f"known_failures.toml: entry {toyfailure.ID!r}: suite suites/test_gone.py does not exist"
    ]


def test_a_class_without_its_entry_is_one_line(drop):
    toyfailure.write_module(drop)
    assert base.disagreements(registry.load_registry(), base.failure_classes()) == [
        f"harness.failures.toy_failure.ToyFailure: id {toyfailure.ID!r} is not in known_failures.toml"
    ]


def test_two_classes_with_one_id_are_one_line(drop):
    (drop / "toy_again.py").write_text(
        "from harness.failures.base import Failure\n\n\nclass Again(Failure):\n    id = '404'\n"
    )
    with pytest.raises(HarnessError) as caught:
        base.failure_classes()
    assert str(caught.value) == (
        "two failure classes declare the id '404': harness.failures.missing_repo.MissingRepo and "
        "harness.failures.toy_again.Again"
    )


def test_a_class_imported_from_another_module_is_counted_where_it_is_declared(drop):
    (drop / "toy_reuse.py").write_text("from harness.failures.missing_repo import MissingRepo\n")
    assert base.qualified(base.failure_classes()["404"]) == "harness.failures.missing_repo.MissingRepo"


def alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a registry pattern (``a|b`` outside groups and classes)."""
    found, depth, start, in_class = [], 0, 0, False
    for i, c in enumerate(pattern):
        if pattern[i - 1 : i] == "\\":
            continue
        if c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        elif not in_class and c == "(":
            depth += 1
        elif not in_class and c == ")":
            depth -= 1
        elif c == "|" and depth == 0 and not in_class:
            found.append(pattern[start:i])
            start = i + 1
    return [*found, pattern[start:]]


def pattern_gaps(entries, classes) -> list[str]:
    """Each registry pattern against its class's messages: every message matches, no alternative is dead."""
    gaps = []
    for failure_id, entry in entries.items():
        messages = classes[failure_id].messages
        for kind in ("cause", "symptom"):
            pattern = getattr(entry, kind)
            if not pattern:
                continue
            said = messages.get(kind, ())
            if not said:
                gaps.append(f"{failure_id}: no {kind} message declared")
            gaps += [f"{failure_id}: {kind} pattern misses {m!r}" for m in said if not re.search(pattern, m)]
            gaps += [
                f"{failure_id}: {kind} alternative {a!r} matches none of its messages"
                for a in alternatives(pattern)
                if said and not any(re.search(a, m) for m in said)
            ]
    return gaps


def test_every_registry_pattern_matches_the_messages_its_failure_fails_with():
    """A registry pattern and the assertion (or release error) it stands for are tied: a reworded message
    or a pattern edited alone turns this red."""
    assert pattern_gaps(registry.load_registry(), base.failure_classes()) == []


def test_a_reworded_message_is_a_gap():
    entries = registry.load_registry()
    classes = dict(base.failure_classes())
    reworded = type("Reworded", (classes["garbage-output"],), {"messages": {"cause": ("is 4-bit",), "symptom": ()}})
    classes["garbage-output"] = reworded
    gaps = pattern_gaps({"garbage-output": entries["garbage-output"]}, classes)
    assert gaps[0] == "garbage-output: cause pattern misses 'is 4-bit'"
    assert [g.split("alternative ")[1][:7] for g in gaps[1:3]] == ["'visual", "'vision"]
    assert gaps[3:] == ["garbage-output: no symptom message declared"]
