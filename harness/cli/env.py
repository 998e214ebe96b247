"""Commands about stacks: stack, matrix, releases, wheelhouse."""

from __future__ import annotations

import json
from pathlib import Path

from harness.cli.args import future_dir
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir
from harness.env import canary, check, manifest, pypi, resolve, stack, wheelhouse
from harness.env.matrix import load_matrix
from harness.failures.registry import check_matrix, edge_releases, load_registry
from harness.families import registry as families
from harness.releases import code as release_code
from harness.releases import lock as release_lock
from harness.releases.git import VERSION_FILES, Repo


def register(sub) -> None:
    p = sub.add_parser(
        "stack", help="versions importable in this environment", description="Example: qvl-harness stack --json"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser(
        "matrix",
        help="the matrix cells, a CI matrix, or a check that every cell resolves",
        description="Examples: qvl-harness matrix; qvl-harness matrix --json; qvl-harness matrix --check; "
        "qvl-harness matrix --resolve-canary --write",
    )
    p.add_argument("cells", nargs="*", help="only these cells")
    p.add_argument("--json", action="store_true", help='GitHub Actions matrix: {"include": [...]}')
    p.add_argument("--file", type=Path, help="matrix file (default: matrix.toml of the checkout)")
    p.add_argument(
        "--check",
        action="store_true",
        help="resolve every cell for this machine and the GPU runner, without installing; one line per problem",
    )
    p.add_argument(
        "--resolve-canary",
        action="store_true",
        help="the newest unsloth, unsloth-zoo, transformers, peft, bitsandbytes and trl that install together "
        "(uv, nothing installed), against the recorded canary",
    )
    p.add_argument(
        "--write", action="store_true", help="with --resolve-canary: write the resolved pins into the canary cell"
    )
    p.add_argument(
        "--find-links",
        action="append",
        default=[],
        metavar="DIR",
        help="with --check or --resolve-canary: also look for wheels in DIR",
    )
    p.add_argument("--no-index", action="store_true", help="with --check or --resolve-canary: only --find-links")
    p.set_defaults(func=cmd_matrix)

    releases = sub.add_parser("releases", help="the release code cache").add_subparsers(dest="action", required=True)
    p = releases.add_parser(
        "fetch",
        help="download release wheels into the cache (default: every matrix cell's, the registry's edges and "
        "the transformers releases the families are checked against)",
        description="Example: qvl-harness releases fetch unsloth==2024.12.2 unsloth-zoo==2024.12.1",
    )
    p.add_argument("requirements", nargs="*", help="unsloth==X or unsloth-zoo==Y")
    p.add_argument("--find-links", action="append", default=[], metavar="DIR", help="also look for wheels in DIR")
    p.add_argument("--no-index", action="store_true", help="only --find-links (an air-gapped runner's wheelhouse)")
    p.add_argument(
        "--manifest",
        type=Path,
        metavar="WHEELHOUSE/manifest.json",
        help="accept the slimmed release wheels this wheelhouse manifest lists beside their locked original's digest",
    )
    p.add_argument(
        "--update-lock",
        action="store_true",
        help=f"check each wheel against PyPI's digest (the --find-links copy's with --no-index), "
        f"not the lock, and write it into {release_lock.LOCK_NAME}",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_releases_fetch)
    p = releases.add_parser(
        "place",
        help="the commit each release was made from, in a local clone",
        description="Example: qvl-harness releases place unsloth==2024.12.1 unsloth==2024.12.2 --repo CLONE",
    )
    p.add_argument("requirements", nargs="+", metavar="PACKAGE==VERSION")
    p.add_argument(
        "--repo", required=True, help="a local clone (or bundle, or tarball of a bare repository) of the package"
    )
    p.set_defaults(func=cmd_releases_place)

    p = sub.add_parser(
        "wheelhouse",
        help="wheels a matrix cell needs on an air-gapped GPU runner",
        description="Example: qvl-harness wheelhouse canary --runner fixtures/runners/h100-cuda130-py312.txt "
        "--dest .device/wh-canary",
    )
    p.add_argument("cell")
    p.add_argument(
        "--python", default=resolve.RUNNER_PYTHON, help=f"runner's Python version (default {resolve.RUNNER_PYTHON})"
    )
    p.add_argument("--platform", default=resolve.RUNNER_PLATFORM)
    p.add_argument("--runner", type=Path, help="`pip list --format=freeze` of the runner: what it already has")
    p.add_argument("--cuda", default="130", help="CUDA of the runner's bitsandbytes library to keep (default 130)")
    p.add_argument("--dest", type=Path, default=Path("wheelhouse"))
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_wheelhouse)


def cmd_stack(args) -> int:
    current = stack.collect()
    print(json.dumps(current.as_dict(), indent=2) if args.json else current.table())
    return 0


def cmd_matrix(args) -> int:
    registry = load_registry()
    matrix = check_matrix(load_matrix(args.file), registry)
    if args.write and not args.resolve_canary:
        raise HarnessError("--write goes with --resolve-canary")
    if args.resolve_canary:
        return _resolve_canary(matrix, args)
    if args.check:
        verdicts = check.check(matrix.select(args.cells or None), find_links=args.find_links, no_index=args.no_index)
        for verdict in verdicts:
            print(verdict.line())
        failed = sorted({v.cell for v in verdicts if not v.ok})
        print(
            f"{sum(v.ok for v in verdicts)}/{len(verdicts)} checks passed"
            + (f"; FAILED: {', '.join(failed)}" if failed else "")
        )
        return 1 if failed else 0
    if args.json:
        print(matrix.ci_json(args.cells or None))
        return 0
    for cell in matrix.select(args.cells or None):
        pins = " ".join(f"{k}={v}" for k, v in cell.pins.items())
        states = ", ".join(f"{f}: {s}" for f, s in cell.failure_states(registry).items()) or "-"
        print(f"{cell.name:14} {cell.role or '-':8} {pins}\n{'':24}{states}")
    return 0


def _resolve_canary(matrix, args) -> int:
    resolved = canary.resolve_canary(matrix, find_links=tuple(args.find_links), no_index=args.no_index)
    print(
        f"upstream stack resolved with torch=={resolved.cell.pins['torch']} (python {resolve.this_python()}, uv; nothing installed):"  # noqa: E501 (a message kept whole, to be found by grep)
    )
    recorded = resolved.cell.stack
    for name, version in resolved.pins.items():
        was = recorded.get(name)
        print(
            f"  {name:14} {version:12} " + ("(as recorded)" if was == version else f"(recorded: {was or 'not pinned'})")
        )
    changes = resolved.changes()
    if not changes:
        print(f"unchanged since the recorded canary (cell {resolved.cell.name} of {matrix.path.name})")
        return 0
    moved = ", ".join(f"{n} {old or '-'} -> {new}" for n, old, new in changes)
    if args.write:
        canary.write(matrix, resolved, find_links=tuple(args.find_links), no_index=args.no_index)
        print(
            f"wrote {len(changes)} new pin(s) into [cells.{resolved.cell.name}] of {matrix.path} "
            f"(their release wheels' digests into {release_lock.LOCK_NAME}): {moved}; "
            f"check it with: qvl-harness matrix --check {resolved.cell.name}"
        )
    else:
        print(
            f"{len(changes)} change(s) since the recorded canary: {moved} (--write puts them into {matrix.path.name})"
        )
    return 0


def default_releases() -> list[str]:
    """What the suites and tests read: every cell's releases, those the registry's edges were checked in, and the
    transformers releases the families' declarations are checked against."""
    sources = [f"transformers=={v}" for v in families.source_releases()]
    return list(dict.fromkeys(load_matrix().release_requirements() + edge_releases(load_registry()) + sources))


def cmd_releases_fetch(args) -> int:
    paths = release_code.fetch(
        args.requirements or default_releases(),
        published=pypi.published_digests,
        find_links=args.find_links,
        no_index=args.no_index,
        manifest=args.manifest,
        update_lock=release_lock.LOCK_FILE if args.update_lock else None,
        quiet=args.quiet or None,
    )
    locked = f"; their digests written into {release_lock.LOCK_FILE}" if args.update_lock else ", each checked"
    print(f"{len(paths)} release wheels in {cache_dir('wheels')}{locked}")
    return 0


def cmd_releases_place(args) -> int:
    """One line per release: its commit (tag, or the commit that sets its version; the cached wheel decides
    between candidates), or why it cannot be placed. Exit 1 when one cannot."""
    repo, unplaced = Repo(args.repo), 0
    for requirement in args.requirements:
        package, _, version = requirement.partition("==")
        if package not in VERSION_FILES or not version:
            raise HarnessError(f"{requirement!r}: expected unsloth==VERSION or unsloth-zoo==VERSION")
        wheel = release_code.wheel_path(package, version)
        placed = repo.place(package, version, wheel if wheel.is_file() else None)
        unplaced += placed.commit is None
        where = placed.commit.describe() if placed.commit else "cannot be placed"
        print(f"{requirement:24} {where}: {placed.how}")
    return 1 if unplaced else 0


def cmd_wheelhouse(args) -> int:
    from harness.data import xrays

    # the build empties --dest first: refuse a folder holding what no wheelhouse holds (".", a home, a checkout)
    kept = {wheelhouse.RELEASES_DIR, manifest.MANIFEST, "requirements.txt", "code-under-test.txt", "cell.txt"}
    strangers = (
        [p.name for p in args.dest.iterdir() if p.suffix != ".whl" and p.name not in kept] if args.dest.is_dir() else []
    )
    if strangers:
        raise HarnessError(
            f"--dest {args.dest}: not a wheelhouse (it holds {', '.join(sorted(strangers)[:3])}), "
            "and the build empties it first; name a new or empty folder"
        )
    future_dir(args.dest, "--dest")  # made by the build, after the runner is found fit

    fixture_files = {
        f.source.split(":", 1)[1] for f in xrays.usable(xrays.load_manifest()) if f.source.startswith("pydicom-data:")
    }
    fixture_files |= set(xrays.DECODER_CHECKS)
    info = wheelhouse.build(
        args.cell,
        args.dest,
        args.python,
        args.platform,
        args.runner,
        args.cuda,
        release_wheels=lambda: release_code.fetch(
            default_releases(), published=pypi.published_digests, quiet=args.quiet or None
        ),
        data_files=fixture_files,
        source_files=families.source_files(),
        quiet=args.quiet or None,
    )
    print(
        f"{info['wheels']} wheels, {info['bytes'] / 2**20:.1f} MiB in {args.dest} for cell {info['cell']}; on the runner:"  # noqa: E501 (a message kept whole, to be found by grep)
    )
    print(f"  .ci/gpu-offline {args.dest} tests suites")
    return 0
