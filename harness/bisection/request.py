"""One bisect, as asked: what is searched, how a probe is judged, where probes install from.

The command line fills it (harness/cli); the bisection layer takes nothing else. Its shape is checked
when it is made; what needs the index, the registry or the oracle's files, in harness.bisection.inputs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError

DEFAULT_ORACLE_TIMEOUT = 1800.0


@dataclass(frozen=True)
class BisectRequest:
    packages: tuple[str, ...]
    oracle_pytest: str | None = None
    oracle_cmd: str | None = None
    good: str | None = None
    bad: str | None = None
    find_fix: bool = False
    find_range: bool = False
    by_date: bool = False
    range_start: str | None = None
    range_end: str | None = None
    exclude_newer: str | None = None
    pre: bool = False
    oracle_timeout: float = DEFAULT_ORACLE_TIMEOUT
    companions: tuple[str, ...] = ()
    cell: str | None = None
    base_python: str | None = None  # None: this python, and the commands printed name no --base-python
    import_check: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    offline: bool = False
    release_data: Path | None = None
    commits: str | None = None
    resume: bool = False
    record: str | None = None

    def __post_init__(self):
        if bool(self.oracle_pytest) == bool(self.oracle_cmd):
            raise HarnessError("give exactly one oracle: --oracle-pytest SELECTION or --oracle-cmd COMMAND")
        if self.find_range and (self.good or not self.bad):
            raise HarnessError("--find-range takes one known --bad version and no --good")
        if len(self.packages) > 1 and not self.by_date:
            raise HarnessError("several packages are bisected together only with --by-date")
        if self.record and self.by_date:
            raise HarnessError(
                "--record needs a single-package bisect (a registry range is over one package's versions)"
            )
        if self.commits and (self.by_date or self.find_range):
            raise HarnessError(
                "--commits continues a search over one package's releases: not with --by-date or --find-range"
            )

    @property
    def python(self) -> str:
        return self.base_python or sys.executable

    @property
    def package(self) -> str:
        return self.packages[0]

    def command(
        self,
        good: str | None,
        bad: str | None,
        mode: str,
        start: str | None = None,
        end: str | None = None,
        *,
        resume: bool = True,
    ) -> list[str]:
        """This bisect as a command over ``good``/``bad`` (and the range ``start``..``end``) in ``mode``
        (first-bad, first-fixed, or find-range); with ``resume``, answered from the logged probes."""
        cmd = ["qvl-harness", "bisect", *self.packages]
        cmd += {"first-bad": [], "first-fixed": ["--find-fix"], "find-range": ["--find-range"]}[mode]
        for flag, value in (("--good", good), ("--bad", bad), ("--range-start", start), ("--range-end", end)):
            if value:
                cmd += [flag, value]
        for flag, on in (
            ("--by-date", self.by_date),
            ("--pre", self.pre),
            ("--no-index", self.no_index),
            ("--offline", self.offline),
        ):
            cmd += [flag] * on
        for flag, value in (
            ("--exclude-newer", self.exclude_newer),
            ("--oracle-pytest", self.oracle_pytest),
            ("--oracle-cmd", self.oracle_cmd),
            ("--cell", self.cell),
            ("--release-data", self.release_data),
            ("--commits", self.commits),
            ("--base-python", self.base_python),
        ):
            if value:
                cmd += [flag, str(value)]
        if self.oracle_timeout != DEFAULT_ORACLE_TIMEOUT:
            cmd += ["--oracle-timeout", f"{self.oracle_timeout:g}"]
        for flag, values in (
            ("--with", self.companions),
            ("--import-check", self.import_check),
            ("--find-links", self.find_links),
        ):
            for value in values:
                cmd += [flag, value]
        return cmd + ["--resume"] * resume
