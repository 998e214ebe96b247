"""One probe's verdict: good, bad, or skip (the probe could not judge the release, with the reason).

Like ``git bisect run``: exit 0 good, 1-127 bad, 125 skip, anything else aborts. A pytest oracle runs
with ``--runxfail`` (no expectation may turn a failure into a pass; the nightly's triage keeps them)
and is read from its junit XML:
a test that fails with an assertion, or with a known failure's message (fixtures/known_failures.toml),
says "bad"; a run whose failures are all something else (an ImportError from a companion pin, a
crash in a fixture, a HarnessError because the suite cannot read this release) could not judge the
release and is a skip, as are pytest exits 2-5 and a run where every selected test skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from harness.core.errors import HarnessError, one_line
from harness.core.noise import without_noise
from harness.core.paths import REPO_ROOT
from harness.env import overlay

GOOD, BAD, SKIP = "good", "bad", "skip"
SKIP_EXIT = 125
PYTEST_SKIP_EXITS = {
    2: "interrupted or collection error",
    3: "pytest internal error",
    4: "pytest usage error",
    5: "no tests collected",
}
TAIL_LINES = 12
OUTSIDE_THE_MATRIX = "none"  # the --cell of a run the harness starts on a stack of its own
PLUGIN_OFF = "no:harness.pytest.plugin"
MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([\w]+)[\w.]*'")


@dataclass
class Run:
    exit: int | None
    verdict: str
    tail: str
    seconds: float
    reason: str = ""  # why a skip could not judge; "" for good and bad
    output: str = ""  # the file with the probe's whole output (the tail leaves known noise out)
    from_log: bool = False  # read from the probe log of an earlier run, not probed now (never written to it)

    def describe(self) -> str:
        timing = f"exit {self.exit}, {self.seconds:.1f}s" if self.exit is not None else "not run"
        return f"{self.verdict} ({timing}{': ' + self.reason if self.reason else ''}{'; from the log' * self.from_log})"


def verdict_of(code: int) -> str:
    if code == 0:
        return GOOD
    if code == SKIP_EXIT:
        return SKIP
    if 1 <= code <= 127:
        return BAD
    raise HarnessError(f"the oracle exited {code} (killed or out of range): aborting, as `git bisect run` does")


def judge_pytest(code: int, junit: Path, patterns: list[str]) -> tuple[str, str]:
    """(verdict, reason) of a pytest oracle from its exit status and junit XML."""
    if code in PYTEST_SKIP_EXITS:
        return SKIP, f"pytest exit {code} ({PYTEST_SKIP_EXITS[code]})"
    try:
        cases = list(ET.parse(junit).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return (verdict_of(code), "") if code in (0, 1) else (SKIP, f"pytest exit {code} without a junit report")
    if code == 0:
        skipped = [c.find("skipped") for c in cases]
        if cases and all(s is not None and s.get("type") == "pytest.skip" for s in skipped):
            return SKIP, "every selected test skipped"
        return GOOD, ""
    problems = [
        (p.tag, p.get("message") or "", p.text or "") for c in cases for p in c if p.tag in ("failure", "error")
    ]
    if any(tag == "failure" and judges(message, text, patterns) for tag, message, text in problems):
        return BAD, ""
    first = next(iter(problems), ("", "pytest exit 1 without a failing test", ""))
    return SKIP, f"could not judge: {first[1].splitlines()[0][:200] if first[1] else first[0]}"


def judges(message: str, text: str, patterns: list[str]) -> bool:
    """Whether a test failure is the oracle's verdict: an assertion, or a known failure's own message."""
    if message.startswith(("AssertionError", "assert ", "Failed: ")) or message.startswith("[XPASS(strict)]"):
        return True
    return any(re.search(p, f"{message}\n{text}", re.I | re.S) for p in patterns)


def registry_patterns() -> list[str]:
    from harness.failures.registry import load_registry

    return [p for f in load_registry().values() for p in (f.symptom, f.cause) if p]


class Oracle:
    """A pytest selection (run from the checkout) or a shell command, run inside an overlay."""

    def __init__(
        self,
        *,
        pytest_selection: str | None = None,
        command: str | None = None,
        timeout: float = 1800,
        runxfail: bool = True,
        patterns: list[str] = (),
        rootdir: Path = REPO_ROOT,
    ):
        """``runxfail=False`` keeps the registry's expectations (a known failure that reproduces is good);
        ``patterns`` are more messages that make a failing test say "bad" (the nightly's own failure);
        a pytest selection runs from ``rootdir`` (the checkout)."""
        if bool(pytest_selection) == bool(command):
            raise HarnessError("give exactly one oracle: --oracle-pytest SELECTION or --oracle-cmd COMMAND")
        self.pytest_selection, self.command, self.timeout, self.runxfail = pytest_selection, command, timeout, runxfail
        self.rootdir = Path(rootdir)
        self.patterns = [*patterns, *registry_patterns()] if pytest_selection else []

    def describe(self) -> str:
        return f"pytest {self.pytest_selection}" if self.pytest_selection else self.command

    def run(self, python: Path, label: str, output: Path | None = None) -> Run:
        """Judge the environment of ``python`` (an overlay's, or any venv's); its whole output goes to ``output``."""
        python = Path(python)
        env = self._env(python, label)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="qvl-oracle-") as tmp:
            junit = Path(tmp, "junit.xml")
            if self.pytest_selection:
                cmd = [
                    *self._pytest(python),
                    "-q",
                    "--tb=short",
                    *["--runxfail"] * self.runxfail,
                    f"--junitxml={junit}",
                ]
                code, text = self._execute(cmd, env, cwd=self.rootdir, shell=False)
            else:
                code, text = self._execute(self.command, env, cwd=Path.cwd(), shell=True)
            if output is not None:
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(text)
            tail = "\n".join(without_noise(text).rstrip().splitlines()[-TAIL_LINES:])
            seconds, saved = time.monotonic() - started, str(output or "")
            if code is None:
                return Run(None, SKIP, tail, seconds, f"oracle timed out after {self.timeout:.0f}s", saved)
            if self.pytest_selection:
                verdict, reason = judge_pytest(code, junit, self.patterns)
                return Run(code, verdict, tail, seconds, reason, saved)
            return Run(code, verdict_of(code), tail, seconds, "oracle exit 125" if code == SKIP_EXIT else "", saved)

    def collect_error(self, python: Path, installed_by_probe: set[str]) -> str | None:
        """Why the pytest selection does not collect any test in the environment of ``python``; None when it does,
        or when all it lacks is a module of ``installed_by_probe`` (package names a probe installs)."""
        code, text = self._execute(
            [*self._pytest(Path(python)), "--collect-only", "-q"],
            self._env(Path(python), "collect"),
            cwd=self.rootdir,
            shell=False,
        )
        if code == 0:
            return None
        if code is None:
            return f"pytest --collect-only ran past {self.timeout:.0f}s"
        if code == 5:
            return "it selects no test"
        lines = without_noise(text).splitlines()
        errors = [line[1:].strip() for line in lines if line.startswith("E ")]
        missing = [MISSING_MODULE.fullmatch(error) for error in errors]
        if code == 2 and errors and all(m and canonicalize_name(m[1]) in installed_by_probe for m in missing):
            return None  # the base lacks what each probe installs
        said = (
            next(iter(errors), None)
            or next((line for line in reversed(lines) if line.startswith("ERROR")), None)
            or one_line(text)
        )
        return f"pytest --collect-only exit {code}: {said}"

    def _pytest(self, python: Path) -> list[str]:
        """pytest over the selection; a run outside the matrix (``--cell none``) where the harness plugin loads."""
        words = shlex.split(self.pytest_selection)
        cell = [] if PLUGIN_OFF in words else ["--cell", OUTSIDE_THE_MATRIX]
        return [str(python), "-m", "pytest", *words, "-p", "no:cacheprovider", *cell]

    def _env(self, python: Path, label: str) -> dict[str, str]:
        env = {
            **os.environ,
            "VIRTUAL_ENV": str(python.parent.parent),
            "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "QVL_PROBE_PYTHON": str(python),
            "QVL_PROBE": label,
            "QVL_CELL": OUTSIDE_THE_MATRIX,
        }
        env.pop("PYTHONHOME", None)
        if (python.parent.parent / overlay.MARKER).is_file():
            env.pop("PYTHONPATH", None)  # the overlay's .pth has the base's entries, after its own pins
        return env

    def _execute(self, cmd, env, cwd, shell) -> tuple[int | None, str]:
        """Exit status and output; None on timeout (the whole process group is killed)."""
        proc = subprocess.Popen(
            cmd,
            shell=shell,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            output, _ = proc.communicate()
            return None, output
        except KeyboardInterrupt:
            _kill_group(proc.pid)
            proc.wait()
            raise
        code = proc.returncode
        return (128 - code if code < 0 else code), output  # a signal reads as 128+N, which aborts


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # it has already ended
        pass
