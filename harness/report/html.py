"""The HTML run report: one self-contained file (inline CSS, thumbnails as data: URIs, no scripts)
built from the ``results-<cell>.json`` files that ``pytest --report-dir`` writes (harness.pytest.collector).

Sections: what changed since the previous run (with --previous); the compatibility matrix (cells x
known failures, one short verdict each, details folded); per X-ray fixture, a thumbnail and every
configuration's caption against its golden with word-level differences; structural findings; the
runs and each cell's full stack; the tables suites added to the summary.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import html
import io
from collections import Counter
from pathlib import Path

from harness.core.errors import HarnessError
from harness.data import xrays
from harness.failures import registry
from harness.nightly import diff
from harness.pytest import results
from harness.report.markdown import culprit_text, headline

THUMBNAIL_SIDE = 200
# Matrix states, the most pressing first: a cell shows the first state any of its records has.
STATES = {
    "unexpected": "failed where the registry expects a pass, passed (XPASS) where it expects the failure, or errored",
    "reproduced": "fails as the registry expects (strict xfail) for a release in the affected range",
    "fixed": "passes, as expected for a release outside the affected range",
    "passed": "passes where the range does not decide (no range yet, or this path does not trigger it)",
    "not run": "no test of this failure ran in the cell (none collected, or skipped)",
}
SYMBOLS = {
    "unexpected": "&#10006;",
    "reproduced": "&#9679;",
    "fixed": "&#10004;",
    "passed": "&#10003;",
    "not run": "&#8211;",
}
GRADE_CLASSES = {"exact": "good", "token": "good", "terms": "fair", "semantic": "fair", "mismatch": "bad"}

CSS = """
body { font: 14px/1.4 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px; color: #1f2328; background: #fff; }
h1 { margin: 0 0 4px; font-size: 24px; } h2 { margin-top: 32px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } .muted { color: #57606a; } code { font-size: 12px; }
.fixture { display: flex; gap: 16px; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px; margin: 12px 0; }
.fixture .thumb { flex: none; width: 202px; } .fixture img { border: 1px solid #8c959f; background: #000; }
.fixture h3 { margin: 0 0 4px; } .fixture .captions { width: 100%; }
.caption-line { margin: 2px 0; } .caption-line .label { display: inline-block; width: 70px; color: #57606a; font-size: 12px; }
del { background: #ffd7d5; color: #82071e; } ins { background: #ccffd8; color: #055d20; text-decoration: none; font-weight: bold; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 12px; font-weight: bold; }
.good { background: #1a7f37; color: #fff; } .fair { background: #bf8700; color: #fff; } .bad { background: #cf222e; color: #fff; }
table.matrix td, table.matrix th.cell-name { white-space: nowrap; padding: 2px 8px; line-height: 1.25; }
table.matrix th { font-size: 13px; } table.matrix th .muted { font-weight: normal; font-size: 11px; }
table.matrix th.cell-name .stack { display: block; font-weight: normal; font-size: 10px; color: #57606a; }
td.state { width: 150px; font-size: 13px; font-weight: bold; } td.state a { color: inherit; text-decoration: none; }
td.state .count { display: inline-block; min-width: 16px; border-radius: 8px; background: #82071e; color: #fff; text-align: center; font-size: 11px; }
table.matrix td.totals { white-space: normal; font-size: 11px; color: #57606a; } .legend .badge { margin-right: 6px; }
.details details { margin: 2px 0; font-size: 13px; } .details ul { margin: 2px 0 6px; font-size: 12px; }
.state-unexpected { background: #ffcecb; color: #82071e; } .state-reproduced { background: #fff1b8; color: #6f4a00; }
.state-fixed { background: #c8f0d2; color: #055d20; } .state-passed { background: #ddf4ff; color: #0a3069; }
.state-not-run { background: #eaeef2; color: #57606a; }
.culprit { font-weight: bold; margin-top: 2px; } .culprit.unjudged { color: #9a6700; } tr.change[data-kind="new failure"] td { background: #fff5f5; }
"""


def render(results_files: list[Path], out: Path, previous: Path | None = None) -> Path:
    """Write the HTML report of ``results_files`` (one per cell) to ``out``; with ``previous`` (the
    last run's results file or folder) it leads with what changed since then."""
    if not results_files:
        raise HarnessError("report: no results files given (write them with pytest --report-dir DIR)")
    runs = [results.read(Path(p)) for p in results_files]
    seen: dict[str, Path] = {}
    for run, path in zip(runs, results_files, strict=True):
        if run["cell"] in seen:
            raise HarnessError(f"report: {seen[run['cell']]} and {path} are both results of cell {run['cell']!r}")
        seen[run["cell"]] = path
    known = registry.load_registry()
    changes = [_changes(diff.compare(diff.load_runs(previous), {r["cell"]: r for r in runs}))] if previous else []
    parts = [
        _header(runs),
        *changes,
        _matrix(runs, known),
        _fixtures(runs),
        _structure(runs),
        _stacks(runs),
        _tables(runs),
    ]
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>qvl-harness report</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return out


def e(value) -> str:
    return html.escape(str(value), quote=True)


def _short_stack(stack: dict) -> str:
    packages = stack.get("packages", {})
    names = ("unsloth", "unsloth-zoo", "transformers", "torch", "bitsandbytes", "peft")
    return " ".join(f"{n}={packages.get(n) or '-'}" for n in names) + f" [{stack.get('device_class', '?')}]"


def _header(runs: list[dict]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<header><h1>qvl-harness run report</h1><p class="muted">generated {e(now)} from {len(runs)} '
        f"results file(s): {e(', '.join(r['cell'] for r in runs))}</p></header>"
    )


def _runs(runs: list[dict]) -> str:
    rows = "".join(
        f"<tr><td>{e(r['cell'])}</td><td>{e(r['created'])}</td><td><code>{e(_short_stack(r['stack']))}</code></td>"
        f"<td>{len(r['tests'])} tests, {len(r['captions'])} captions, {len(r['structure'])} findings, "
        f"{len(r['known_failures'])} known-failure outcomes</td></tr>"
        for r in runs
    )
    return f'<table id="cells"><tr><th>cell</th><th>run at</th><th>stack</th><th>recorded</th></tr>{rows}</table>'


def _thumbnail(item: xrays.XrayFixture) -> str:
    try:
        image = item.image()
    except HarnessError as exc:
        return f'<p class="muted">no thumbnail: {e(exc)}</p>'
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" width="{image.width}" height="{image.height}" '
        f'alt="{e(item.id)} thumbnail">'
    )


def word_diff(golden: str, obtained: str) -> tuple[str, str]:
    """Escaped HTML of both captions: words only in the golden in <del>, only in the obtained in <ins>."""
    a, b = golden.split(), obtained.split()
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in a], b=[w.lower() for w in b], autojunk=False)
    left, right = [], []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        old, new = e(" ".join(a[i1:i2])), e(" ".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f"<del>{old}</del>")
        if new:
            right.append(f"<ins>{new}</ins>")
    return " ".join(left), " ".join(right)


def _caption_row(cell: str, record: dict) -> str:
    golden, obtained = word_diff(record["golden"], record["obtained"])
    grade = record["grade"]
    return (
        f'<tr class="caption" data-cell="{e(cell)}" data-configuration="{e(record["configuration"])}" '
        f'data-grade="{e(grade)}"><td>{e(cell)}</td><td>{e(record["configuration"])}</td>'
        f'<td><span class="badge {GRADE_CLASSES.get(grade, "bad")}">{e(grade)}</span></td><td>'
        f'<div class="caption-line golden"><span class="label">golden</span>{golden}</div>'
        f'<div class="caption-line obtained"><span class="label">obtained</span>{obtained}</div>'
        f'<div class="muted">{e(record["details"])}</div></td></tr>'
    )


def _fixtures(runs: list[dict]) -> str:
    manifest = {item.id: item for item in xrays.load_manifest()}
    recorded = [c["fixture"] for r in runs for c in r["captions"]]
    ids = list(manifest) + [fid for fid in dict.fromkeys(recorded) if fid not in manifest]
    # Configurations in the order they first appear (xdist workers record in any order).
    order = list(dict.fromkeys(c["configuration"] for r in runs for c in r["captions"]))
    cards = []
    for fid in ids:
        item = manifest.get(fid)
        rows = "".join(
            _caption_row(r["cell"], c)
            for r in runs
            for c in sorted(r["captions"], key=lambda c: order.index(c["configuration"]))
            if c["fixture"] == fid
        )
        table = (
            (
                f'<table class="captions"><tr><th>cell</th><th>configuration</th><th>grade</th><th>golden vs obtained</th></tr>'
                f"{rows}</table>"
            )
            if rows
            else '<p class="muted">no captions recorded for this fixture</p>'
        )
        if item:
            picture = _thumbnail(item)
            about = (
                f'<p class="muted">{e(item.modality)} {e(item.body_part)} {e(item.view)} &middot; {e(item.source)}</p>'
                f'<p class="reference"><b>Reference:</b> {e(item.description)}</p>'
            )
        else:
            picture, about = "", '<p class="muted">not in the fixture manifest (fixtures/xrays.toml)</p>'
        cards.append(
            f'<article class="fixture" data-fixture="{e(fid)}"><div class="thumb">{picture}</div><div class="captions">'
            f"<h3>{e(fid)}</h3>{about}{table}</div></article>"
        )
    return '<section id="fixtures"><h2>X-ray fixtures: golden vs obtained captions</h2>' + "".join(cards) + "</section>"


def _structure(runs: list[dict]) -> str:
    rows = "".join(
        f'<tr data-cell="{e(r["cell"])}" data-ok="{str(s["ok"]).lower()}"><td>{e(r["cell"])}</td><td>{e(s["configuration"])}</td>'
        f'<td><span class="badge {"good" if s["ok"] else "bad"}">{"ok" if s["ok"] else "problem"}</span></td>'
        f"<td>{e(s['finding'])}</td><td><code>{e(s['test'])}</code></td></tr>"
        for r in runs
        for s in r["structure"]
    )
    body = (
        f"<table><tr><th>cell</th><th>configuration</th><th>result</th><th>finding</th><th>test</th></tr>{rows}</table>"
        if rows
        else '<p class="muted">no structural findings recorded</p>'
    )
    return f'<section id="structure"><h2>Structural findings</h2>{body}</section>'


def cell_state(records: list[dict]) -> str:
    """The matrix state of one cell and failure: 'unexpected' if any record is; otherwise that of
    the cell's own (installed) release where it was tested, else of every release tested."""
    if any(r["state"] == "unexpected" for r in records):
        return "unexpected"
    pool = [r for r in records if r["origin"] == "installed"] or records
    return min((r["state"] for r in pool), key=list(STATES).index, default="not run")


def _slug(*parts: str) -> str:
    return "d-" + "-".join("".join(ch if ch.isalnum() else "_" for ch in p) for p in parts)


def _matrix_cell(cell: str, failure_id: str, records: list[dict]) -> str:
    """One verdict: a symbol and a word, the count of unexpected tests, a link to the folded details."""
    state = cell_state(records)
    unexpected = sum(r["state"] == "unexpected" for r in records)
    count = f' <span class="count">{unexpected}</span>' if unexpected else ""
    tip = "; ".join(
        f"{p} {v}: {s}" for p, v, s in sorted({(r["package"], r["version"], r["state"]) for r in records}, key=str)
    )
    css = "state-" + state.replace(" ", "-")
    body = f"{SYMBOLS[state]} {e(state)}{count}"
    if records:
        body = f'<a href="#{_slug(cell, failure_id)}">{body}</a>'
    return (
        f'<td class="state {css}" data-cell="{e(cell)}" data-failure="{e(failure_id)}" data-state="{e(state)}" '
        f'title="{e(tip or "no test of this failure ran")}">{body}</td>'
    )


def _matrix_details(cell: str, failure_id: str, records: list[dict]) -> str:
    """What a verdict stands for, folded: each release tested, and every unexpected test with its message."""
    state = cell_state(records)
    per_release = Counter((r["package"], r["version"], r["origin"], r["state"]) for r in records)
    releases = "".join(
        f"<li>{e(p)} {e(v)} ({e(o)}): {e(s)} &times;{n}</li>"
        for (p, v, o, s), n in sorted(per_release.items(), key=str)
    )
    tests = "".join(
        f"<li><code>{e(r['test'])}</code>: {e(r['message'])}</li>" for r in records if r["state"] == "unexpected"
    )
    return (
        f'<details id="{_slug(cell, failure_id)}" data-cell="{e(cell)}" data-failure="{e(failure_id)}">'
        f"<summary>{e(cell)} &times; {e(failure_id)}: "
        f"{e(state)} ({len(records)} test{'s' * (len(records) != 1)})</summary><ul>{releases}{tests}</ul></details>"
    )


def _matrix(runs: list[dict], registry: dict[str, registry.KnownFailure]) -> str:
    """Cells x known failures as a grid of short verdicts, with counts; the details fold underneath."""
    recorded = [k["id"] for r in runs for k in r["known_failures"]]
    ids = list(registry) + [i for i in dict.fromkeys(recorded) if i not in registry]
    by_cell = {r["cell"]: {i: [k for k in r["known_failures"] if k["id"] == i] for i in ids} for r in runs}
    states = {(c, i): cell_state(records) for c, per in by_cell.items() for i, records in per.items()}
    head = "".join(
        f'<th title="{e(registry[i].description) if i in registry else "not in fixtures/known_failures.toml"}">{e(i)}'
        f'<div class="muted">{e(registry[i].package) + " " + e(registry[i].affected or "range pending") if i in registry else "unregistered"}</div></th>'
        for i in ids
    )
    rows = "".join(
        f'<tr><th class="cell-name" title="{e(_short_stack(r["stack"]))}">{e(r["cell"])}'
        f'<span class="stack">{e(_compact_stack(r["stack"]))}</span></th>'
        + "".join(_matrix_cell(r["cell"], i, by_cell[r["cell"]][i]) for i in ids)
        + "</tr>"
        for r in runs
    )
    totals = "".join(
        '<td class="totals">'
        + " ".join(f"{n}&nbsp;{e(s)}" for s in STATES if (n := sum(states[(c, i)] == s for c in by_cell)))
        + "</td>"
        for i in ids
    )
    overall = Counter(states.values())
    headline = ", ".join(f"{overall[s]} {s}" for s in STATES if overall[s])
    legend = " ".join(
        f'<span class="badge state-{s.replace(" ", "-")}" title="{e(doc)}">{SYMBOLS[s]} {e(s)}</span>'
        for s, doc in STATES.items()
    )
    tested = [(c, i, records) for c, per in by_cell.items() for i, records in per.items() if records]
    unexpected = "".join(_matrix_details(c, i, records) for c, i, records in tested if states[(c, i)] == "unexpected")
    others = [_matrix_details(c, i, records) for c, i, records in tested if states[(c, i)] != "unexpected"]
    details = unexpected + (
        f'<details class="others"><summary>every other verdict ({len(others)})</summary>{"".join(others)}</details>'
        if others
        else ""
    )
    return (
        f'<section id="matrix"><h2>Compatibility matrix: {len(runs)} cells &times; {len(ids)} known failures</h2>'
        f'<p class="headline">{e(headline)}</p>'
        f'<table class="matrix"><tr><th>cell</th>{head}</tr>{rows}<tr><th>totals</th>{totals}</tr></table>'
        f'<p class="legend">{legend}</p><div class="details"><h3>Details</h3>{details}</div></section>'
    )


def _compact_stack(stack: dict) -> str:
    packages = stack.get("packages", {})
    short = {"unsloth": "unsloth", "unsloth-zoo": "zoo", "transformers": "tf"}
    return " · ".join(f"{label} {packages.get(name) or '-'}" for name, label in short.items())


def _changes(comparison: diff.Comparison) -> str:
    """Since the previous run: the new failures first (with the triage's answer), then the rest, folded."""

    def table(changes: list[diff.Change], detail) -> str:
        rows = "".join(
            f'<tr class="change" data-kind="{e(c.kind)}" data-cell="{e(c.cell)}"><td>{e(c.cell)}</td>'
            f"<td><code>{e(c.test)}</code></td><td>{detail(c)}</td></tr>"
            for c in changes
        )
        return f"<table><tr><th>cell</th><th>test</th><th>detail</th></tr>{rows}</table>"

    def triage(c: diff.Change) -> str:
        answer = e(culprit_text(c, strong=""))
        unjudged = " unjudged" if c.culprit and c.culprit["status"] == "could not judge" else ""
        return f'{e(c.message)}<div class="culprit{unjudged}">{answer}</div>'

    new = comparison.of("new failure")
    parts = [
        f'<p class="headline">{e(headline(comparison))}</p>',
        "<h3>New failures</h3>" + (table(new, triage) if new else '<p class="muted">none</p>'),
    ]
    for kind, detail in (
        ("flaky", lambda c: e("re-runs: " + ", ".join(c.reruns))),
        ("fixed", lambda c: e(f"was {c.before}: {c.message}")),
        ("still failing", lambda c: e(c.message)),
        ("new test", lambda c: e(c.after)),
        ("removed test", lambda c: e(c.before)),
    ):
        changes = comparison.of(kind)
        if changes:
            parts.append(
                f'<details data-kind="{e(kind)}"{" open" if kind == "flaky" else ""}><summary>{e(kind)} '
                f"({len(changes)})</summary>{table(changes, detail)}</details>"
            )
    stacks = "".join(
        f"<tr><td>{e(cell)}</td><td>{e(p)}</td><td>{e(old or '-')}</td><td>{e(new or '-')}</td></tr>"
        for cell, rows in comparison.stack_changes.items()
        for p, old, new in rows
    )
    parts.append(
        "<h3>Stack changes</h3>"
        + (
            f"<table><tr><th>cell</th><th>package</th><th>previous</th><th>now</th></tr>{stacks}</table>"
            if stacks
            else '<p class="muted">none</p>'
        )
    )
    return '<section id="changes"><h2>Since the previous run</h2>' + "".join(parts) + "</section>"


def _stack_rows(stack: dict) -> dict[str, str]:
    rows = {name: version or "not installed" for name, version in stack.get("packages", {}).items()}
    rows["python"] = stack.get("python", "?")
    rows["cuda"] = stack.get("cuda") or "none"
    rows["gpus"] = ", ".join(g["name"] for g in stack.get("gpus", [])) or "none"
    rows["device class"] = stack.get("device_class", "?")
    return rows


def _stacks(runs: list[dict]) -> str:
    per_cell = [_stack_rows(r["stack"]) for r in runs]
    keys = list(dict.fromkeys(k for rows in per_cell for k in rows))
    head = "".join(f"<th>{e(r['cell'])}</th>" for r in runs)
    body = "".join(
        f"<tr><th>{e(k)}</th>" + "".join(f"<td>{e(rows.get(k, '-'))}</td>" for rows in per_cell) + "</tr>" for k in keys
    )
    return (
        f'<section id="stacks"><h2>Runs and their stacks</h2>{_runs(runs)}'
        f"<table><tr><th></th>{head}</tr>{body}</table></section>"
    )


def _tables(runs: list[dict]) -> str:
    blocks = []
    for r in runs:
        for t in r["tables"]:
            head = "".join(f"<th>{e(h)}</th>" for h in t["header"])
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t["rows"])
            blocks.append(f"<h3>{e(r['cell'])}: {e(t['title'])}</h3><table><tr>{head}</tr>{body}</table>")
    return (
        '<section id="tables"><h2>Suite tables</h2>' + ("".join(blocks) or '<p class="muted">none</p>') + "</section>"
    )
