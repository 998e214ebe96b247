"""The `qvl-harness` command line. Bad input ends in one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import HarnessError


def cmd_stack(args) -> int:
    from . import stack

    current = stack.collect()
    print(json.dumps(current.as_dict(), indent=2) if args.json else current.table())
    return 0


def cmd_matrix(args) -> int:
    from .matrix import load_matrix

    matrix = load_matrix(args.file)
    if args.check:
        from . import matrix_check

        verdicts = matrix_check.check(matrix.select(args.cells or None), find_links=args.find_links, no_index=args.no_index)
        for verdict in verdicts:
            print(verdict.line())
        failed = [v for v in verdicts if not v.ok]
        print(f"{len(verdicts) - len(failed)}/{len(verdicts)} checks passed" + (f"; FAILED: {', '.join(sorted({v.cell for v in failed}))}" if failed else ""))
        return 1 if failed else 0
    if args.json:
        print(matrix.ci_json(args.cells or None))
        return 0
    from .known import load_registry

    registry = load_registry()
    for cell in matrix.select(args.cells or None):
        pins = " ".join(f"{k}={v}" for k, v in cell.pins.items())
        states = ", ".join(f"{f}: {s}" for f, s in cell.failure_states(registry).items()) or "-"
        print(f"{cell.name:14} {cell.role or '-':8} {pins}\n{'':24}{states}")
    return 0


def cmd_fixtures_list(args) -> int:
    from . import xrays

    refused = 0
    for item in xrays.load_manifest(args.manifest):
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
    from . import xrays

    from .paths import cache_dir

    item = xrays.fixture(args.id, args.manifest)
    out = xrays.write_preview(item, args.out_dir or cache_dir("previews"))
    print(f"id: {item.id}\nsource: {item.source} ({item.path})\nmodality: {item.modality} "
          f"({xrays.XRAY_MODALITIES[item.modality]})\nbody part: {item.body_part}\nview: {item.view}\n"
          f"description: {item.description}\nmust mention: {', '.join(item.must_mention)}\n"
          f"must not mention: {', '.join(item.must_not_mention)}\npreview: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvl-harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stack", help="versions importable in this environment")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("matrix", help="list the matrix cells, or emit them as a CI matrix")
    p.add_argument("cells", nargs="*", help="only these cells")
    p.add_argument("--json", action="store_true", help='GitHub Actions matrix: {"include": [...]}')
    p.add_argument("--file", type=Path, help="matrix file (default: matrix.toml of the checkout)")
    p.add_argument("--check", action="store_true",
                   help="resolve every cell for this machine and the GPU runner, without installing; one line per problem")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR", help="with --check: also look for wheels in DIR")
    p.add_argument("--no-index", action="store_true", help="with --check: only --find-links")
    p.set_defaults(func=cmd_matrix)

    fixtures = sub.add_parser("fixtures", help="X-ray fixtures").add_subparsers(dest="action", required=True)
    p = fixtures.add_parser("list", help="list fixtures and whether each decodes")
    p.add_argument("--manifest", type=Path, default=None)
    p.set_defaults(func=cmd_fixtures_list)
    p = fixtures.add_parser("show", help="describe one fixture and write a preview PNG")
    p.add_argument("id")
    p.add_argument("--out-dir", type=Path, help="folder for ID-preview.png (default: the harness cache's previews/)")
    p.add_argument("--manifest", type=Path, default=None)
    p.set_defaults(func=cmd_fixtures_show)

    from . import goldens, hub, known, releases, report, wheelhouse
    from .bisection import cli as bisect

    for module in (releases, wheelhouse, hub, bisect, known, goldens, report):
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "manifest", "unset") is None:
        from .xrays import MANIFEST

        args.manifest = MANIFEST
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"qvl-harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
