"""The known-failure registry: one schema, validated on load, each problem one line naming file, entry and key;
and the expectations it sets on tests (a reproduction must match the registry's message)."""

from __future__ import annotations

import ast

import pytest
from packaging.markers import default_environment
from packaging.specifiers import SpecifierSet

from harness.cli import main
from harness.core.errors import HarnessError
from harness.failures import registry
from harness.releases import code as release_code
from harness.releases.mapper import ReleaseMapper

ENTRY = """[[failure]]
id = "{id}"
package = "{package}"
affected = "{affected}"
symptom = "only Tensors of floating point dtype"
seed = "s"
description = "d"
evidence = "e"
found_by = "qvl-harness bisect ..."
suite = "suites/x.py"
"""


def entry(**fields) -> str:
    values = {"id": "toy", "package": "unsloth-zoo", "affected": ">=2025.1.1,<2025.3.13", **fields}
    return ENTRY.format(**values)


@pytest.mark.parametrize(
    "text, message",
    [
        (entry() + entry(), "entry #2 (toy): duplicate id 'toy' (entry #1 has it)"),
        (entry(affected=">=2024.12.2,,<2025.1.6"), "affected '>=2024.12.2,,<2025.1.6' is not a version specifier"),
        (entry(affected=">=2025.1.6,<2024.12.2"), "affected '>=2025.1.6,<2024.12.2' is an empty range"),
        (entry(affected=">=2025.1.6,<2025.1.6"), "is an empty range"),
        (entry(affected=""), "affected is empty"),
        (entry(package="unslot"), "unknown package 'unslot'"),
        (entry() + 'requires = { unslot = ">=1" }\n', "requires: unknown package 'unslot'"),
        (
            entry() + 'symptom_requires = { transformers = "4.52" }\n',
            "symptom_requires.transformers '4.52' is not a version specifier",
        ),
        (entry() + 'cause = "(unclosed"\n', "cause '(unclosed' is not a regular expression"),
        (entry() + 'reported_as = ["ok", "[x"]\n', "reported_as '[x' is not a regular expression"),
        (entry() + 'reported_as = "one string"\n', "reported_as must be a list of non-empty strings"),
        (entry().replace('seed = "s"\n', ""), "missing ['seed']"),
        (entry() + "typo = 1\n", "unknown key(s) ['typo']"),
    ],
)
def test_a_bad_registry_is_one_line_naming_entry_and_key(text, message):
    with pytest.raises(HarnessError) as caught:
        registry.parse_registry(text, "known_failures.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("known_failures.toml: entry #")


def test_conditions_and_messages_decide_the_expectation():
    failure = registry.parse_registry(entry() + 'symptom_requires = { unsloth = ">=2025.1.1" }\n')["toy"]
    old_caller, new_caller = {"unsloth": "2024.12.11"}, {"unsloth": "2025.1.5"}
    assert failure.expected("2025.1.3", "symptom", new_caller)
    assert not failure.expected("2025.1.3", "symptom", old_caller)  # unsloth 2024.12 never calls the hook
    assert failure.expected("2025.1.3", "cause", old_caller)  # the hook itself is still broken
    assert not failure.expected("2025.3.13", "cause", new_caller)
    assert failure.unmet("symptom", old_caller) == ["unsloth 2024.12.11 is not >=2025.1.1"]
    assert failure.matches("symptom", "RuntimeError: only Tensors of floating point dtype can require gradients")
    assert not failure.matches("symptom", "NotImplementedError: get_input_embeddings")


pytest_plugins = ["pytester"]


def test_only_the_registry_message_counts_as_a_reproduction(pytester):
    """Inside the range a test reproduces only with the registry's message; another error fails with its own
    text and a line saying what was expected; a pass is XPASS(strict); outside the range a pass is a pass."""
    pytester.makepyfile("""
        import pytest
        from harness.failures import registry

        def marks(version):
            return registry.expectation_marks("dtype-grad", version, shows="cause")

        @pytest.mark.parametrize("version", [pytest.param("2025.1.3", marks=marks("2025.1.3"))])
        def test_seed_message(version):
            raise RuntimeError("only Tensors of floating point dtype can require gradients")

        @pytest.mark.parametrize("version", [pytest.param("2025.1.3", marks=marks("2025.1.3"))])
        def test_other_error(version):
            raise NotImplementedError("get_input_embeddings is not implemented for the vision tower")

        @pytest.mark.parametrize("version", [pytest.param("2025.1.3", marks=marks("2025.1.3"))])
        def test_passes_inside_the_range(version):
            pass

        @pytest.mark.parametrize("version", [pytest.param("2025.3.13", marks=marks("2025.3.13"))])
        def test_passes_outside_the_range(version):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "-rxXf")
    result.assert_outcomes(xfailed=1, failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*known failure 'dtype-grad' (cause) was expected in unsloth-zoo==2025.1.3, but the test failed with something else*",  # noqa: E501 (a message kept whole, to be found by grep)
            "*[[]XPASS(strict)[]] known failure 'dtype-grad' (cause) was expected in unsloth-zoo==2025.1.3*",
        ]
    )


def test_known_prints_package_range_conditions_message_and_command(capsys):
    assert main(["known"]) == 0
    out = capsys.readouterr().out
    for failure in registry.load_registry().values():
        assert f"affected:   {failure.package}{failure.affected}" in out
        assert f"found by:   {failure.found_by}" in out
    assert "shows with: transformers<4.52" in out and "only Tensors of floating point dtype" in out


# --- the ranges' edges, read in the edge releases' own code (`qvl-harness releases fetch` fetches every
# release an entry's `edges` lists) ------------------------------------------------------------------------


def imported_names(code, relpath: str) -> set[str]:
    return {
        alias.name for node in ast.walk(code.parse(relpath)) if isinstance(node, ast.ImportFrom) for alias in node.names
    }


def assigns(code, relpath: str, name: str) -> bool:
    return any(
        isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets)
        for node in ast.walk(code.parse(relpath))
    )


def skip_list_arguments(code) -> set[str]:
    """How unsloth's vision loader passes SKIP_QUANTIZATION_MODULES: "list" itself or ".copy()"."""
    found = set()
    for node in ast.walk(code.parse("unsloth/models/vision.py")):
        if isinstance(node, ast.keyword) and node.arg == "llm_int8_skip_modules":
            passed = ast.unparse(node.value).removeprefix("SKIP_QUANTIZATION_MODULES")
            found.add("list" if isinstance(node.value, ast.Name) else passed)
    return found


def base_requirement(code, name: str, python: str = "3.11") -> SpecifierSet:
    env = {
        **default_environment(),
        "python_version": python,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "extra": "",
    }
    (req,) = [r for r in release_code.requires(code) if r.name == name and (r.marker is None or r.marker.evaluate(env))]
    return req.specifier


def test_garbage_output_starts_where_the_users_path_first_exists():
    """`from unsloth import FastVisionModel` with the Qwen2-VL mapper entries: 2024.11.8 has both, 2024.11.7 neither."""
    failure = registry.known_failure("garbage-output")
    for version, has_path in (("2024.11.7", False), ("2024.11.8", True)):
        code = release_code.from_wheel("unsloth", version)
        assert "from .models import *" in code.read("unsloth/__init__.py")
        assert ("FastVisionModel" in imported_names(code, "unsloth/models/__init__.py")) is has_path
        resolved = ReleaseMapper(code).resolve("Qwen/Qwen2-VL-7B-Instruct", True).resolved
        assert (resolved == "unsloth/qwen2-vl-7b-instruct-bnb-4bit") is has_path, resolved
        assert failure.affects(version) is has_path
    assert {"unsloth==2024.11.7", "unsloth==2024.11.8"} <= set(failure.edges)


def test_vision_4bit_at_load_starts_with_the_zoos_skip_list():
    failure = registry.known_failure("vision-4bit-at-load")
    for version, has_list in (("2024.11.8", False), ("2024.12.1", True)):
        zoo = release_code.from_wheel("unsloth-zoo", version)
        assert assigns(zoo, "unsloth_zoo/peft_utils.py", "SKIP_QUANTIZATION_MODULES") is has_list
        assert failure.affects(version) is has_list


def test_vision_4bit_at_load_symptom_ends_where_the_zoo_requires_a_fixed_transformers():
    """From zoo 2026.9.5 its own Requires-Dist excludes every transformers <4.52: the symptom's range ends there,
    the cause's stays open until 2026.10.4."""
    failure = registry.known_failure("vision-4bit-at-load")
    symptom_transformers = failure.symptom_requires["transformers"]
    for version, admits_symptom in (("2026.9.4", True), ("2026.9.5", False)):
        wanted = base_requirement(release_code.from_wheel("unsloth-zoo", version), "transformers")
        old_enough = [v for v in ("4.51.3", "4.50.3", "4.49.0", "4.48.3", "4.46.3") if symptom_transformers.contains(v)]
        assert any(wanted.contains(v) for v in old_enough) is admits_symptom, wanted
        old_stack = {"unsloth": "2025.3.15", "transformers": "4.48.3"}
        assert failure.expected(version, "symptom", old_stack) is admits_symptom
        assert failure.expected(version, "cause", old_stack)
    assert str(failure.symptom_affected) == "<2026.9.5,>=2024.12.1" and failure.first_fixed == "2026.10.4"
    assert failure.unmet("symptom", {"unsloth": "2025.3.15", "transformers": "4.48.3", "unsloth-zoo": "2026.10.3"}) == [
        "unsloth-zoo 2026.10.3 is not <2026.9.5,>=2024.12.1"
    ]


def test_unsloth_passes_a_copy_of_the_skip_list_from_2025_3_10():
    assert skip_list_arguments(release_code.from_wheel("unsloth", "2025.3.9")) == {"list"}
    assert skip_list_arguments(release_code.from_wheel("unsloth", "2025.3.10")) == {".copy()"}
    history = registry.known_failure("vision-4bit-at-load").history
    assert ".copy() from 2025.3.10" in history and "2025.3.11" not in history


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            'symptom_affected = ">=2025.1.1,<2025.4"\n',
            "symptom_affected '<2025.4,>=2025.1.1' reaches past affected '<2025.3.13,>=2025.1.1' on its upper side",
        ),
        ('symptom_affected = "<2025.2"\n', "on its lower side"),
        ('edges = ["torch==2.5.0"]\n', "edges: 'torch==2.5.0' is not unsloth==VERSION or unsloth-zoo==VERSION"),
    ],
)
def test_a_symptom_range_outside_the_cause_or_a_foreign_edge_is_one_line(extra, message):
    with pytest.raises(HarnessError) as caught:
        registry.parse_registry(entry() + extra, "known_failures.toml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_known_shows_the_cause_and_the_symptom_range(capsys):
    assert main(["known"]) == 0
    out = capsys.readouterr().out
    assert "affected:   unsloth<2024.12.2,>=2024.11.8 (first fixed 2024.12.2)" in out
    assert "affected:   unsloth-zoo<2026.10.4,>=2024.12.1 (first fixed 2026.10.4)" in out
    assert "symptom in: unsloth-zoo<2026.9.5,>=2024.12.1 (the cause: <2026.10.4,>=2024.12.1)" in out


def test_releases_fetch_brings_every_edge_release_by_default():
    from harness.cli.env import default_releases

    edges = registry.edge_releases(registry.load_registry())
    assert "unsloth==2024.11.7" in edges and set(edges) <= set(default_releases())
