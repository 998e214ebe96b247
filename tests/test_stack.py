import importlib.metadata
import json
import xml.etree.ElementTree as ET

from harness.cli import main
from harness.env import stack

pytest_plugins = ["pytester"]


def test_collect_reports_installed_versions():
    current = stack.collect()
    assert current.packages["torch"] == importlib.metadata.version("torch")
    assert current.packages["transformers"] == importlib.metadata.version("transformers")
    assert set(current.packages) == set(stack.PACKAGES)
    assert current.device_class == ("cpu" if not current.gpus else current.device_class)


def test_cli_stack_table_and_json(capsys):
    assert main(["stack"]) == 0
    table = capsys.readouterr().out
    assert "transformers" in table and "python" in table
    assert main(["stack", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["packages"]["torch"] == importlib.metadata.version("torch")
    assert data["device_class"]


def test_stack_in_header_fixture_and_junit_properties(pytester):
    pytester.makepyfile(
        """
        def test_sees_stack(harness_stack):
            assert harness_stack.packages["torch"]
        """
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess("-p", "harness.pytest.plugin", f"--junitxml={junit}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["qvl-harness stack: *transformers=*torch=*"])
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert props["stack.torch"] == importlib.metadata.version("torch")
    assert "stack.unsloth" in props and "stack.cuda" in props
