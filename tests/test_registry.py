"""The known-failure registry: one schema, validated on load, each problem one line naming file, entry and key;
and the expectations it sets on tests (a reproduction must match the registry's message)."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.core.errors import HarnessError
from harness.failures import registry

ENTRY = '''[[failure]]
id = "{id}"
package = "{package}"
affected = "{affected}"
symptom = "only Tensors of floating point dtype"
seed = "s"
description = "d"
evidence = "e"
found_by = "qvl-harness bisect ..."
suite = "suites/x.py"
'''


def entry(**fields) -> str:
    values = {"id": "toy", "package": "unsloth-zoo", "affected": ">=2025.1.1,<2025.3.13", **fields}
    return ENTRY.format(**values)


@pytest.mark.parametrize("text, message", [
    (entry() + entry(), "entry #2 (toy): duplicate id 'toy' (entry #1 has it)"),
    (entry(affected=">=2024.12.2,,<2025.1.6"), "affected '>=2024.12.2,,<2025.1.6' is not a version specifier"),
    (entry(affected=">=2025.1.6,<2024.12.2"), "affected '>=2025.1.6,<2024.12.2' is an empty range"),
    (entry(affected=">=2025.1.6,<2025.1.6"), "is an empty range"),
    (entry(affected=""), "affected is empty"),
    (entry(package="unslot"), "unknown package 'unslot'"),
    (entry() + 'requires = { unslot = ">=1" }\n', "requires: unknown package 'unslot'"),
    (entry() + 'symptom_requires = { transformers = "4.52" }\n', "symptom_requires.transformers '4.52' is not a version specifier"),
    (entry() + 'cause = "(unclosed"\n', "cause '(unclosed' is not a regular expression"),
    (entry() + 'reported_as = ["ok", "[x"]\n', "reported_as '[x' is not a regular expression"),
    (entry() + 'reported_as = "one string"\n', "reported_as must be a list of non-empty strings"),
    (entry().replace('seed = "s"\n', ""), "missing ['seed']"),
    (entry() + 'typo = 1\n', "unknown key(s) ['typo']"),
])
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
    pytester.makepyfile('''
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
    ''')
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", "-rxXf")
    result.assert_outcomes(xfailed=1, failed=2, passed=1)
    result.stdout.fnmatch_lines([
        "*known failure 'dtype-grad' (cause) was expected in unsloth-zoo==2025.1.3, but the test failed with something else*",
        "*[[]XPASS(strict)[]] known failure 'dtype-grad' (cause) was expected in unsloth-zoo==2025.1.3*",
    ])


def test_known_prints_package_range_conditions_message_and_command(capsys):
    assert main(["known"]) == 0
    out = capsys.readouterr().out
    for failure in registry.load_registry().values():
        assert f"affected:   {failure.package}{failure.affected}" in out
        assert f"found by:   {failure.found_by}" in out
    assert "shows with: transformers<4.52" in out and "only Tensors of floating point dtype" in out
