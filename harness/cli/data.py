"""Commands about the harness's data: X-ray fixtures, the local hub, golden captions."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from harness.cli.args import checkpoint_dir, output_dir, port
from harness.core.cellenv import needs_stack
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.data import goldens, hub, hub_history, hub_server, xrays
from harness.families import registry as families
from harness.lab import captioner, tinymodel


def register(sub) -> None:
    fixtures = sub.add_parser("fixtures", help="X-ray fixtures").add_subparsers(dest="action", required=True)
    p = fixtures.add_parser(
        "list",
        help="every fixture and whether it decodes (exit 1 when one is refused)",
        description="Example: qvl-harness fixtures list",
    )
    p.add_argument("--manifest", type=Path, default=None)
    p.set_defaults(func=cmd_fixtures_list)
    p = fixtures.add_parser(
        "show",
        help="describe one fixture and write a preview PNG",
        description="Example: qvl-harness fixtures show chest-pa --out-dir previews",
    )
    p.add_argument("id")
    p.add_argument("--out-dir", type=Path, help="folder for ID-preview.png (default: the harness cache's previews/)")
    p.add_argument("--manifest", type=Path, default=None)
    p.set_defaults(func=cmd_fixtures_show)

    hubs = sub.add_parser("hub", help="the local Hugging Face hub").add_subparsers(dest="action", required=True)
    p = hubs.add_parser(
        "serve",
        help="serve a hub snapshot on 127.0.0.1 until Ctrl-C",
        description="Example: qvl-harness hub serve --snapshot 2024-12 (then export the HF_ENDPOINT it prints)",
    )
    p.add_argument(
        "--snapshot", required=True, help="snapshot name (fixtures/hub/history.toml [snapshots]) or path to a .toml"
    )
    p.add_argument("--port", type=port, default=0, help="port (default: a free one)")
    p.add_argument("--base", type=Path, help="serve stand-ins of this 16-bit checkpoint (default: the tiny Qwen2-VL)")
    p.set_defaults(func=cmd_hub_serve)
    p = hubs.add_parser("list", help="the snapshots and their repos", description="Example: qvl-harness hub list")
    p.set_defaults(func=cmd_hub_list)
    p = hubs.add_parser(
        "history",
        help="a repo's record in the hub history, or fold a night's observations into it",
        description="Example: qvl-harness hub history unsloth/Qwen2-VL-72B-Instruct-unsloth-bnb-4bit; "
        "qvl-harness hub history --merge reports/hub-observations-canary.json",
    )
    p.add_argument("repo", nargs="?", help="OWNER/NAME")
    p.add_argument("--merge", type=Path, metavar="FILE", help="a pytest --hub live observations file")
    p.set_defaults(func=cmd_hub_history)
    p = hubs.add_parser(
        "unknown",
        help="the mapped repos the hub history has no record of, most-mapped first",
        description="Example: qvl-harness hub unknown --release 2024.12.2",
    )
    p.add_argument("--release", metavar="VERSION", help="only the repos this matrix release's mapper names")
    p.set_defaults(func=cmd_hub_unknown)
    p = hubs.add_parser(
        "sweep",
        help="every target a matrix release maps, with its state the day it shipped",
        description="Example: qvl-harness hub sweep --release 2024.12.2",
    )
    p.add_argument("--release", metavar="VERSION", required=True, help="a matrix cell's unsloth version")
    p.set_defaults(func=cmd_hub_sweep)

    golden = sub.add_parser("goldens", help="golden captions").add_subparsers(dest="action", required=True)
    p = golden.add_parser(
        "accept",
        help="promote a reviewed *.obtained.json to the golden beside it",
        description="Example: qvl-harness goldens accept fixtures/goldens/tiny-captioner/cpu.obtained.json",
    )
    p.add_argument("obtained", type=Path)
    p.set_defaults(func=cmd_goldens_accept)
    p = golden.add_parser(
        "status",
        help="every golden, what made it stale and how to refresh it (exit 1 when stale)",
        description="Example: qvl-harness goldens status",
    )
    p.set_defaults(func=cmd_goldens_status)


def _manifest(args) -> list[xrays.XrayFixture]:
    return xrays.load_manifest(args.manifest or xrays.MANIFEST)


def cmd_fixtures_list(args) -> int:
    from harness.core.errors import HarnessError

    refused = 0
    for item in _manifest(args):
        try:
            image = item.image()
            status = f"ok {image.width}x{image.height}"
        except HarnessError as exc:
            refused += 1
            status = f"REFUSED: {exc}"
        print(f"{item.id:12} {item.modality:3} {item.body_part:10} {item.source:30} {status}")
    if refused:
        print(f"{refused} fixture(s) refused", file=sys.stderr)
    return 1 if refused else 0


def cmd_fixtures_show(args) -> int:
    item = xrays.fixture(args.id, args.manifest or xrays.MANIFEST)
    out_dir = output_dir(args.out_dir, "--out-dir") if args.out_dir else cache_dir("previews")
    out = xrays.write_preview(item, out_dir)
    print(
        f"id: {item.id}\nsource: {item.source} ({item.path})\nmodality: {item.modality} "
        f"({xrays.XRAY_MODALITIES[item.modality]})\nbody part: {item.body_part}\nview: {item.view}\n"
        f"description: {item.description}\nmust mention: {', '.join(item.must_mention)}\n"
        f"must not mention: {', '.join(item.must_not_mention)}\npreview: {out}"
    )
    return 0


def cmd_hub_serve(args) -> int:
    base = checkpoint_dir(args.base, "--base") if args.base else None
    needs_stack("hub serve", args.argv)  # it builds the checkpoints it serves
    # A process started in the background inherits SIGINT ignored; Ctrl-C must still stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with hub_server.LocalHub(args.snapshot, tinymodel.standins(base), port=args.port) as server:
        # inside the try before the lines a caller waits for: on a loaded machine a Ctrl-C sent right after
        # them once reached this thread before it had got here, and killed the process (exit -2)
        try:
            print(f"serving hub snapshot {server.snapshot.name} ({len(server.snapshot.repos)} repos) at {server.url}")
            print(f"export HF_ENDPOINT={server.url}", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped", flush=True)
    # Libraries imported to build the checkpoints can leave non-daemon threads that hold up
    # interpreter exit for a long time (seen in full test runs); the server is stopped, so leave now.
    sys.stdout.flush()
    os._exit(0)


def cmd_hub_list(args) -> int:
    for name in hub.snapshot_names():
        snapshot = hub.load_snapshot(name)
        print(f"{name} ({snapshot.date}): {snapshot.description}")
        for repo in snapshot.repos:
            flags = " ".join(f for f in ("gated", "private") if getattr(repo, f))
            print(f"  {repo.id:50} {repo.kind:20} {flags}".rstrip())
    return 0


def cmd_hub_history(args) -> int:
    if (args.repo is None) == (args.merge is None):
        raise HarnessError("hub history: name a REPO to show, or --merge FILE to fold in, not both")
    if args.merge is not None:
        added = hub_history.merge_file(args.merge)
        print(f"{added} observation(s) of {args.merge} folded into {hub_history.HISTORY_FILE} (commit it)")
        return 0
    record = hub_history.load().record(args.repo)
    if record is None:
        print(f"{args.repo}: unknown (no observation in {hub_history.HISTORY_FILE.name}; look it up)")
        return 0
    print(record[0])
    for seen in record[1]:
        print(f"  {seen.state:8} {seen.date}  {seen.source}")
    return 0


def _releases(version: str | None):
    from harness.failures import hub_sweep

    releases = hub_sweep.covered_releases()
    chosen = [r for r in releases if version in (None, r.unsloth.version)]
    if not chosen:
        raise HarnessError(
            f"--release {version}: no matrix cell has it; "
            f"known: {', '.join(dict.fromkeys(r.unsloth.version for r in releases))}"
        )
    return chosen


def cmd_hub_unknown(args) -> int:
    from harness.failures import hub_sweep

    history = hub_history.load()
    mapped = hub_sweep.mapped_repos(_releases(args.release))
    unknown = sorted(
        (entry for key, entry in mapped.items() if history.record(key) is None),
        key=lambda e: (-len(e[1]), -len(e[2]), e[0].lower()),
    )
    print(
        f"{len(unknown)} of {len(mapped)} mapped repos have no record in {hub_history.HISTORY_FILE.name} "
        "(releases naming it, names mapping to it):"
    )
    for repo, releases, names in unknown:
        print(f"  {len(releases):3} {len(names):3}  {repo}")
    return 0


def cmd_hub_sweep(args) -> int:
    from harness.failures import hub_sweep

    for release in _releases(args.release):
        found = hub_sweep.sweep(release)
        counts = found.counts()
        print(
            f"{found.release} against the hub history on {found.day}: {counts['present']} present, "
            f"{counts['absent'] + counts['error']} absent, {counts['unknown']} unknown targets"
        )
        for row in sorted(found.targets().values(), key=lambda r: (r.state, r.target.lower())):
            print(
                f"  {row.state:8} {row.target}"
                + (f"  [{row.claimed_by or 'NEW'}] {row.evidence}" if row.state in ("absent", "error") else "")
            )
    return 0


def cmd_goldens_accept(args) -> int:
    print(goldens.accept(args.obtained))
    return 0


def cmd_goldens_status(args) -> int:
    digests = {f.id: captioner.fixture_digest(f) for f in xrays.usable(xrays.load_manifest())}
    worst = 0
    configurations = {of.name: captioner.golden_configuration(of=of) for of in families.captioners()}
    for path, problems in goldens.status(configurations, digests):
        pending = path.name.endswith(".obtained.json")
        label = (
            "obtained, awaiting review: qvl-harness goldens accept " + str(path)
            if pending
            else ("stale" if problems else "current")
        )
        print(f"{path.relative_to(goldens.GOLDENS_DIR)}: {label}")
        for problem in problems:
            print(f"  {problem}")
        if problems and not pending:
            print(f"  refresh: {goldens.refresh_hint(goldens.read(path))}")
            worst = 1
    return worst
