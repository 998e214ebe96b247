"""Commands about the harness's data: X-ray fixtures, the local hub, golden captions."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from harness.core.paths import cache_dir
from harness.data import goldens, hub, xrays
from harness.lab import captioner, tinymodel


def register(sub) -> None:
    fixtures = sub.add_parser("fixtures", help="X-ray fixtures").add_subparsers(dest="action", required=True)
    p = fixtures.add_parser("list", help="every fixture and whether it decodes (exit 1 when one is refused)",
                            description="Example: qvl-harness fixtures list")
    p.add_argument("--manifest", type=Path, default=None)
    p.set_defaults(func=cmd_fixtures_list)
    p = fixtures.add_parser("show", help="describe one fixture and write a preview PNG",
                            description="Example: qvl-harness fixtures show chest-pa --out-dir previews")
    p.add_argument("id")
    p.add_argument("--out-dir", type=Path, help="folder for ID-preview.png (default: the harness cache's previews/)")
    p.add_argument("--manifest", type=Path, default=None)
    p.set_defaults(func=cmd_fixtures_show)

    hubs = sub.add_parser("hub", help="the local Hugging Face hub").add_subparsers(dest="action", required=True)
    p = hubs.add_parser("serve", help="serve a hub snapshot on 127.0.0.1 until Ctrl-C",
                        description="Example: qvl-harness hub serve --snapshot 2024-12 (then export the HF_ENDPOINT it prints)")
    p.add_argument("--snapshot", required=True, help="snapshot name (fixtures/hub/NAME.toml) or path to a .toml")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--base", type=Path, help="serve stand-ins of this 16-bit checkpoint (default: the tiny Qwen2-VL)")
    p.set_defaults(func=cmd_hub_serve)
    p = hubs.add_parser("list", help="the snapshots and their repos", description="Example: qvl-harness hub list")
    p.set_defaults(func=cmd_hub_list)

    golden = sub.add_parser("goldens", help="golden captions").add_subparsers(dest="action", required=True)
    p = golden.add_parser("accept", help="promote a reviewed *.obtained.json to the golden beside it",
                          description="Example: qvl-harness goldens accept fixtures/goldens/tiny-captioner/cpu.obtained.json")
    p.add_argument("obtained", type=Path)
    p.set_defaults(func=cmd_goldens_accept)
    p = golden.add_parser("status", help="every golden, what made it stale and how to refresh it (exit 1 when stale)",
                          description="Example: qvl-harness goldens status")
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
    out = xrays.write_preview(item, args.out_dir or cache_dir("previews"))
    print(f"id: {item.id}\nsource: {item.source} ({item.path})\nmodality: {item.modality} "
          f"({xrays.XRAY_MODALITIES[item.modality]})\nbody part: {item.body_part}\nview: {item.view}\n"
          f"description: {item.description}\nmust mention: {', '.join(item.must_mention)}\n"
          f"must not mention: {', '.join(item.must_not_mention)}\npreview: {out}")
    return 0


def cmd_hub_serve(args) -> int:
    # A process started in the background inherits SIGINT ignored; Ctrl-C must still stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with hub.LocalHub(args.snapshot, tinymodel.standins(args.base), port=args.port) as server:
        print(f"serving hub snapshot {server.snapshot.name} ({len(server.snapshot.repos)} repos) at {server.url}")
        print(f"export HF_ENDPOINT={server.url}", flush=True)
        try:
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


def cmd_goldens_accept(args) -> int:
    print(goldens.accept(args.obtained))
    return 0


def cmd_goldens_status(args) -> int:
    digests = {f.id: captioner.fixture_digest(f) for f in xrays.usable(xrays.load_manifest())}
    worst = 0
    for path, problems in goldens.status(captioner.golden_configuration(), digests):
        pending = path.name.endswith(".obtained.json")
        label = "obtained, awaiting review: qvl-harness goldens accept " + str(path) if pending else ("stale" if problems else "current")
        print(f"{path.relative_to(goldens.GOLDENS_DIR)}: {label}")
        for problem in problems:
            print(f"  {problem}")
        if problems and not pending:
            print(f"  refresh: {goldens.refresh_hint(path.stem)}")
            worst = 1
    return worst
