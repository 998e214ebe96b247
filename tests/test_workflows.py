"""The nightly workflows call commands that exist: every `qvl-harness …` line parses with the CLI's own
parser, every tox environment they name exists, every `matrix.KEY` they read is in `qvl-harness matrix --json`.
A renamed option or cell breaks here, not at 2 a.m. on the runner."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser, main
from harness.core.paths import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("nightly-*.yml"))
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")
STOP = re.compile(r"\s(?:\|\||&&|\||>>?|;)\s|\)")  # where a command ends inside a shell line


def matrix_entries(capsys) -> list[dict]:
    assert main(["matrix", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["include"]


def run_lines(workflow: Path) -> list[str]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [line.strip() for job in jobs.values() for step in job["steps"] for line in step.get("run", "").splitlines()]


def expand(line: str, entry: dict) -> str:
    """``line`` with its ``${{ … }}`` expressions as they evaluate for the matrix cell ``entry``."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("matrix."):
            return str(entry[name[len("matrix.") :]])
        return "1"  # github.run_id and the like

    return EXPRESSION.sub(value, line)


def commands(line: str, program: str) -> list[list[str]]:
    found = []
    for start in (m.start() for m in re.finditer(rf"(?:^|\s|\(){re.escape(program)}\s", line)):
        words = STOP.split(line[start:].lstrip("( "), maxsplit=1)[0]
        found.append(shlex.split(words))
    return found


@pytest.fixture(scope="module")
def workflows():
    assert [w.name for w in WORKFLOWS] == ["nightly-cpu.yml", "nightly-gpu.yml"]
    return WORKFLOWS


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_every_harness_command_in_the_workflow_parses(workflow, capsys):
    parser, checked = build_parser(), 0
    for entry in matrix_entries(capsys):
        for line in run_lines(workflow):
            for words in commands(expand(line, entry), "qvl-harness"):
                try:
                    parser.parse_args(words[1:])
                except SystemExit:
                    pytest.fail(
                        f"{workflow.name}: `{' '.join(words)}` does not parse: {capsys.readouterr().err.strip()}"
                    )
                checked += 1
    assert checked >= 5 * len(matrix_entries(capsys))  # matrix, resolve, triage, diff, build: at least


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_every_tox_environment_and_matrix_key_exists(workflow, capsys):
    entries = matrix_entries(capsys)
    environments = {"py", "check", "gpu"} | {f"cell-{entry['cell']}" for entry in entries}
    assert all(entry["tox_env"] in environments for entry in entries)
    text = workflow.read_text()
    for key in re.findall(r"(?<![.\w])matrix\.(\w+)", text):
        assert all(key in entry for entry in entries), (
            f"{workflow.name} reads matrix.{key}, which `matrix --json` lacks"
        )
    named = set()
    for entry in entries:
        for line in run_lines(workflow):
            for words in commands(expand(line, entry), "tox"):
                flags = words[2:] if words[1:2] == ["exec"] else words[1:]
                if flags[:1] == ["-e"]:
                    named.add(flags[1])
    assert named and named <= environments, f"{workflow.name} names tox environments {sorted(named - environments)}"


def test_canary_is_resolved_before_it_runs_and_results_are_kept(workflows):
    for workflow in workflows:
        text = workflow.read_text()
        assert text.index("--resolve-canary --write") < text.index("--report-dir reports")
        assert "qvl-harness triage --previous last-night --current reports" in text
        assert "qvl-harness report diff last-night reports --markdown" in text and "$GITHUB_STEP_SUMMARY" in text
        assert "actions/cache/save" in text and "restore-keys" in text
