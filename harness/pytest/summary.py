"""Tables a suite wants shown after the run (terminal summary) and kept for the HTML report."""

from __future__ import annotations

import pytest

TABLES = pytest.StashKey[list]()


def add_table(config: pytest.Config, title: str, header: list[str], rows: list[list]) -> None:
    config.stash.setdefault(TABLES, []).append((title, header, [[str(c) for c in r] for r in rows]))


def tables(config: pytest.Config) -> list:
    return config.stash.get(TABLES, [])


def render(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])
