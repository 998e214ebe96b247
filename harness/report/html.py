"""The HTML run report: one self-contained file (inline CSS, thumbnails as data: URIs, no scripts)
built from the ``results-<cell>.json`` files that ``pytest --report-dir`` writes (harness.pytest.collector).

Sections: what changed since the previous run (with --previous); the compatibility matrix (cells x
known failures, one short verdict each, details folded); per X-ray fixture, a thumbnail and every
configuration's caption against its golden with word-level differences; structural findings; the
runs and each cell's full stack; the tables suites added to the summary.

This module gathers what the page shows; its shape is templates/report.html.j2, autoescaped, so a recorded
text reaches the page as text unless it is marked up here (only the word diff is).
"""

from __future__ import annotations

import base64
import datetime
import difflib
import io
from collections import Counter
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

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
SYMBOLS = {"unexpected": "✖", "reproduced": "●", "fixed": "✔", "passed": "✓", "not run": "–"}
GRADE_CLASSES = {"exact": "good", "token": "good", "terms": "fair", "semantic": "fair", "mismatch": "bad"}
PAGE = jinja2.Environment(
    loader=jinja2.PackageLoader("harness.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
).get_template("report.html.j2")


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
    comparison = diff.compare(diff.load_runs(previous), {r["cell"]: r for r in runs}) if previous else None
    document = PAGE.render(
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=runs,
        changes=_changes(comparison) if comparison else None,
        matrix=_matrix(runs, registry.load_registry()),
        fixtures=_fixtures(runs),
        structure=[(r["cell"], s) for r in runs for s in r["structure"]],
        stacks=_stacks(runs),
        tables=[(r["cell"], t) for r in runs for t in r["tables"]],
        states=STATES,
        symbols=SYMBOLS,
        grade_classes=GRADE_CLASSES,
        short_stack=_short_stack,
        culprit_text=culprit_text,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return out


def _short_stack(stack: dict) -> str:
    packages = stack.get("packages", {})
    names = ("unsloth", "unsloth-zoo", "transformers", "torch", "bitsandbytes", "peft")
    return " ".join(f"{n}={packages.get(n) or '-'}" for n in names) + f" [{stack.get('device_class', '?')}]"


def _compact_stack(stack: dict) -> str:
    packages = stack.get("packages", {})
    short = {"unsloth": "unsloth", "unsloth-zoo": "zoo", "transformers": "tf"}
    return " · ".join(f"{label} {packages.get(name) or '-'}" for name, label in short.items())


def _thumbnail(item: xrays.XrayFixture) -> dict:
    """The fixture's image, shrunk to a PNG data: URI, or why there is none."""
    try:
        image = item.image()
    except HarnessError as exc:
        return {"thumbnail": None, "no_thumbnail": str(exc)}
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"thumbnail": {"data": data, "width": image.width, "height": image.height}, "no_thumbnail": None}


def word_diff(golden: str, obtained: str) -> tuple[Markup, Markup]:
    """Escaped HTML of both captions: words only in the golden in <del>, only in the obtained in <ins>."""
    a, b = golden.split(), obtained.split()
    matcher = difflib.SequenceMatcher(a=[w.lower() for w in a], b=[w.lower() for w in b], autojunk=False)
    left, right = [], []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        old, new = escape(" ".join(a[i1:i2])), escape(" ".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(Markup("<del>%s</del>") % old)
        if new:
            right.append(Markup("<ins>%s</ins>") % new)
    return Markup(" ").join(left), Markup(" ").join(right)


def _caption_row(cell: str, record: dict) -> dict:
    golden, obtained = word_diff(record["golden"], record["obtained"])
    return {"cell": cell, "record": record, "golden": golden, "obtained": obtained}


def _fixtures(runs: list[dict]) -> list[dict]:
    """One card per fixture of the manifest, then per fixture captioned but not in it."""
    manifest = {item.id: item for item in xrays.load_manifest()}
    recorded = [c["fixture"] for r in runs for c in r["captions"]]
    ids = list(manifest) + [fid for fid in dict.fromkeys(recorded) if fid not in manifest]
    # Configurations in the order they first appear (xdist workers record in any order).
    order = list(dict.fromkeys(c["configuration"] for r in runs for c in r["captions"]))
    cards = []
    for fid in ids:
        item = manifest.get(fid)
        rows = [
            _caption_row(r["cell"], c)
            for r in runs
            for c in sorted(r["captions"], key=lambda c: order.index(c["configuration"]))
            if c["fixture"] == fid
        ]
        picture = _thumbnail(item) if item else {"thumbnail": None, "no_thumbnail": None}
        cards.append({"id": fid, "item": item, "rows": rows, **picture})
    return cards


def cell_state(records: list[dict]) -> str:
    """The matrix state of one cell and failure: 'unexpected' if any record is; otherwise that of
    the cell's own (installed) release where it was tested, else of every release tested."""
    if any(r["state"] == "unexpected" for r in records):
        return "unexpected"
    pool = [r for r in records if r["origin"] == "installed"] or records
    return min((r["state"] for r in pool), key=list(STATES).index, default="not run")


def _slug(*parts: str) -> str:
    return "d-" + "-".join("".join(ch if ch.isalnum() else "_" for ch in p) for p in parts)


def _verdict(cell: str, failure_id: str, records: list[dict]) -> dict:
    """One matrix cell: a state, the count of unexpected tests, a tip of every release tested, a link to the details."""
    tip = "; ".join(
        f"{p} {v}: {s}" for p, v, s in sorted({(r["package"], r["version"], r["state"]) for r in records}, key=str)
    )
    return {
        "failure": failure_id,
        "state": cell_state(records),
        "unexpected": sum(r["state"] == "unexpected" for r in records),
        "tip": tip or "no test of this failure ran",
        "link": _slug(cell, failure_id) if records else None,
    }


def _details(cell: str, failure_id: str, records: list[dict]) -> dict:
    """What a verdict stands for, folded: each release tested, and every unexpected test with its message."""
    per_release = Counter((r["package"], r["version"], r["origin"], r["state"]) for r in records)
    return {
        "slug": _slug(cell, failure_id),
        "cell": cell,
        "failure": failure_id,
        "state": cell_state(records),
        "records": records,
        "per_release": sorted(per_release.items(), key=str),
    }


def _matrix(runs: list[dict], known: dict[str, registry.KnownFailure]) -> dict:
    """Cells x known failures as a grid of short verdicts, with counts; the details fold underneath."""
    recorded = [k["id"] for r in runs for k in r["known_failures"]]
    ids = list(known) + [i for i in dict.fromkeys(recorded) if i not in known]
    by_cell = {r["cell"]: {i: [k for k in r["known_failures"] if k["id"] == i] for i in ids} for r in runs}
    states = {(c, i): cell_state(records) for c, per in by_cell.items() for i, records in per.items()}
    overall = Counter(states.values())
    tested = [(c, i, records) for c, per in by_cell.items() for i, records in per.items() if records]
    return {
        "columns": [
            {
                "id": i,
                "title": known[i].description if i in known else "not in fixtures/known_failures.toml",
                "subtitle": f"{known[i].package} {known[i].affected or 'range pending'}"
                if i in known
                else "unregistered",
            }
            for i in ids
        ],
        "rows": [
            {
                "cell": r["cell"],
                "stack": _short_stack(r["stack"]),
                "compact_stack": _compact_stack(r["stack"]),
                "verdicts": [_verdict(r["cell"], i, by_cell[r["cell"]][i]) for i in ids],
            }
            for r in runs
        ],
        "totals": [[(s, n) for s in STATES if (n := sum(states[(c, i)] == s for c in by_cell))] for i in ids],
        "headline": ", ".join(f"{overall[s]} {s}" for s in STATES if overall[s]),
        "unexpected": [_details(c, i, records) for c, i, records in tested if states[(c, i)] == "unexpected"],
        "others": [_details(c, i, records) for c, i, records in tested if states[(c, i)] != "unexpected"],
    }


def _changes(comparison: diff.Comparison) -> dict:
    """Since the previous run: the new failures first (the template adds the triage's answer), then the rest,
    each kind with the detail its rows show."""
    details = {
        "flaky": lambda c: "re-runs: " + ", ".join(c.reruns),
        "fixed": lambda c: f"was {c.before}: {c.message}",
        "still failing": lambda c: c.message,
        "new test": lambda c: c.after,
        "removed test": lambda c: c.before,
    }
    return {
        "headline": headline(comparison),
        "new": comparison.of("new failure"),
        "others": [(kind, comparison.of(kind), detail) for kind, detail in details.items() if comparison.of(kind)],
        "stacks": [(cell, p, old, new) for cell, rows in comparison.stack_changes.items() for p, old, new in rows],
    }


def _stack_rows(stack: dict) -> dict[str, str]:
    rows = {name: version or "not installed" for name, version in stack.get("packages", {}).items()}
    rows["python"] = stack.get("python", "?")
    rows["cuda"] = stack.get("cuda") or "none"
    rows["gpus"] = ", ".join(g["name"] for g in stack.get("gpus", [])) or "none"
    rows["device class"] = stack.get("device_class", "?")
    return rows


def _workers(run: dict) -> str:
    """Where the run's tests ran: each worker with its GPU pin, the GPU CUDA gave it, and its share of tests."""
    counts: dict[str, int] = {}
    for test in run["tests"]:
        counts[test.get("worker", "main")] = counts.get(test.get("worker", "main"), 0) + 1
    return "; ".join(
        f"{w['worker']}: CUDA_VISIBLE_DEVICES={w['cuda_visible_devices'] or '-'}, {w['gpu'] or 'no GPU used'}"
        f" ({counts.get(w['worker'], 0)} tests)"
        for w in sorted(run["workers"], key=lambda w: w["worker"])
    )


def _stacks(runs: list[dict]) -> list[tuple[str, list[str]]]:
    """Each package (and python, cuda, GPUs, the workers) with its version in every cell."""
    per_cell = [{**_stack_rows(r["stack"]), "workers": _workers(r) or "-"} for r in runs]
    keys = list(dict.fromkeys(k for rows in per_cell for k in rows))
    return [(k, [rows.get(k, "-") for rows in per_cell]) for k in keys]
