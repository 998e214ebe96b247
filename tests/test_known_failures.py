"""One place lists the known failures: every registry entry has its Failure class and its suite, every class its
entry, and a new failure is an entry, a module and a suite that plug in with no other file changed."""

from __future__ import annotations

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
