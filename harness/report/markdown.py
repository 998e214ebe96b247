"""The Markdown summary of a run against the previous one (for a CI job summary): new failures first,
each with the triage's answer, then flaky, fixed and still failing tests, then the stack changes."""

from __future__ import annotations

from harness.nightly.diff import Change, Comparison

LISTED = 20  # rows of a section shown before the rest is folded into a count


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")[:240]


def culprit_text(change: Change, strong: str = "**") -> str:
    """The triage's answer for a new failure: 'first bad: PACKAGE==VERSION (evidence)', or why there is none."""
    culprit = change.culprit
    if not culprit:
        return "not triaged" if not change.reruns else f"re-runs: {', '.join(change.reruns)}"
    if culprit["status"] == "found":
        return f"{strong}first bad: {culprit['first_bad']}{strong} ({culprit['evidence']}; {culprit['probes']} probes)"
    return f"{culprit['status']}: {culprit['note']}"


def headline(comparison: Comparison) -> str:
    counts = comparison.counts()
    new = counts["new failure"]
    return f"{new} new failure{'s' * (new != 1)}, {counts['flaky']} flaky, {counts['fixed']} fixed, {counts['still failing']} still failing"  # noqa: E501 (a message kept whole, to be found by grep)


def summary(comparison: Comparison) -> str:
    since = ", ".join(f"{c} {t}" for c, t in sorted(comparison.previous_created.items())) or "no previous run"
    lines = [f"## qvl-harness: {headline(comparison)}", "", f"Compared with the previous run ({since}).", ""]
    new = comparison.of("new failure")
    lines += ["### New failures", ""]
    if new:
        lines += ["| cell | test | message | triage |", "|---|---|---|---|"]
        lines += [
            f"| {cell(c.cell)} | `{cell(c.test)}` | {cell(c.message)} | {cell(culprit_text(c))} |" for c in new[:LISTED]
        ]
        lines += _more(new)
    else:
        lines.append("None.")
    for kind, title in (
        ("flaky", "Flaky (failed, then passed when re-run)"),
        ("fixed", "Fixed since the previous run"),
    ):
        changes = comparison.of(kind)
        if changes:
            lines += ["", f"### {title}", "", "| cell | test | detail |", "|---|---|---|"]
            detail = (
                (lambda c: f"re-runs: {', '.join(c.reruns)}")
                if kind == "flaky"
                else (lambda c: f"was {c.before}: {c.message}")
            )
            lines += [f"| {cell(c.cell)} | `{cell(c.test)}` | {cell(detail(c))} |" for c in changes[:LISTED]] + _more(
                changes
            )
    stacks = {name: rows for name, rows in comparison.stack_changes.items() if rows}
    lines += ["", "### Stack changes", ""]
    if stacks:
        lines += ["| cell | package | previous | now |", "|---|---|---|---|"]
        lines += [
            f"| {cell(name)} | {p} | {old or '-'} | {new or '-'} |"
            for name, rows in stacks.items()
            for p, old, new in rows
        ]
    else:
        lines.append("None: every cell ran the same stack as before.")
    still = comparison.of("still failing")
    if still:
        lines += ["", f"<details><summary>Still failing ({len(still)})</summary>", ""]
        lines += [f"- {c.cell}: `{c.test}`: {cell(c.message)}" for c in still] + ["", "</details>"]
    added, removed = comparison.of("new test"), comparison.of("removed test")
    lines += [
        "",
        f"New tests: {len(added)}; removed tests: {len(removed)}"
        + (f"; new cells: {', '.join(comparison.cells_added)}" if comparison.cells_added else "")
        + (f"; cells gone: {', '.join(comparison.cells_removed)}" if comparison.cells_removed else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _more(changes: list[Change]) -> list[str]:
    return [f"| … | {len(changes) - LISTED} more | | |"] if len(changes) > LISTED else []
