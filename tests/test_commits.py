"""Below a release: commits of a real git repository built here (tests/toyrepo.py), installed with uv like
releases, bisected with the same oracle contract; release <-> commit; a matrix cell pinned to a commit."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import pytest
from toyrepo import FIRST_BAD, HISTORY, T0, git, make_repo, release_files
from toywheels import write_wheel

from harness.cli import main
from harness.core.errors import HarnessError
from harness.env.matrix import parse_matrix
from harness.failures import loading
from harness.failures.registry import parse_registry
from harness.releases import code as release_code
from harness.releases.git import Repo

ORACLE = 'python -c "import sys, unsloth.flag as f; sys.exit(1 if f.BROKEN else 0)"'


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy repository, its releases 1.0 and 1.1 as wheels with PyPI-format release data, a fresh cache."""
    shas = make_repo(tmp_path / "repo")
    wheels, data = tmp_path / "wheels", tmp_path / "data"
    wheels.mkdir(), data.mkdir()
    for version, broken in (("1.0", False), ("1.1", True)):
        write_wheel(wheels, "unsloth", version, files=release_files(version, broken))
    uploaded = {"1.0": T0 + timedelta(hours=1), "1.1": T0 + timedelta(days=len(HISTORY), hours=1)}
    (data / "unsloth.json").write_text(
        json.dumps(
            {
                "releases": {
                    v: [{"upload_time_iso_8601": t.isoformat().replace("+00:00", "Z"), "yanked": False}]
                    for v, t in uploaded.items()
                }
            }
        )
    )
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return tmp_path, shas


def bisect(toy, capsys, *args: str) -> tuple[int, str]:
    root, _ = toy
    status = main(
        [
            "bisect",
            "unsloth",
            "--commits",
            str(root / "repo"),
            "--oracle-cmd",
            ORACLE,
            *args,
            "--release-data",
            str(root / "data"),
            "--find-links",
            str(root / "wheels"),
            "--no-index",
            "--offline",
            "--base-python",
            sys.executable,
        ]
    )
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_places_each_release_on_the_commit_it_was_made_from(toy):
    root, shas = toy
    repo = Repo(root / "repo")
    placed = repo.place("unsloth", "1.0")
    assert placed.commit.sha == shas[0] and placed.how == "the commit that sets its __version__"
    wheel = write_wheel(root, "unsloth", "1.1", files=release_files("1.1", True))
    assert (
        repo.place("unsloth", "1.1", wheel).how == "the commit that sets its __version__; its files equal the wheel's"
    )
    patched = write_wheel(
        root / "data", "unsloth", "1.1", files={**release_files("1.1", True), "unsloth/flag.py": "X = 1\n"}
    )
    assert (
        "1 file(s) of the wheel differ from it: built from a later commit" in repo.place("unsloth", "1.1", patched).how
    )
    never = repo.place("unsloth", "0.9")
    assert never.commit is None and never.how == (
        'no tag names it and no commit on main sets __version__ = "0.9" '
        "(unsloth/_version.py or unsloth/models/_utils.py)"
    )
    git(root / "repo", "tag", "v1.1", shas[-2])  # a tag wins over the version line (projects that tag say so)
    assert repo.place("unsloth", "1.1").commit.sha == shas[-2]


def test_bisects_the_commits_between_two_refs_and_names_the_first_bad(toy, capsys):
    _, shas = toy
    status, out = bisect(toy, capsys, "--good", shas[0][:10], "--bad", shas[-1][:10])
    assert status == 0, out
    subject = HISTORY[FIRST_BAD][0]
    assert f'first bad: unsloth @ {shas[FIRST_BAD][:12]} "{subject}" (committed 2025-01-04 12:00 UTC)' in out
    assert f'first bad commit: {shas[FIRST_BAD]} 2025-01-04 12:00 +0000 "{subject}"' in out
    assert f"last good: unsloth @ {shas[FIRST_BAD - 1][:12]}" in out
    assert int(out.split("probes: ")[1].split()[0]) <= 5  # 7 candidates: ceil(log2 7) + 2
    assert f"--good {shas[FIRST_BAD - 1][:12]} --bad {shas[FIRST_BAD][:12]}" in out and "--resume" in out
    again, out = bisect(toy, capsys, "--good", shas[0][:10], "--bad", shas[-1][:10], "--resume")
    assert again == 0 and "oracle runs: 0 (+" in out and "environments: 0 installed" in out
    assert f"first bad commit: {shas[FIRST_BAD]}" in out


def test_a_release_bisect_goes_on_below_two_adjacent_releases(toy, capsys):
    _, shas = toy
    status, out = bisect(toy, capsys, "--good", "1.0", "--bad", "1.1")
    assert status == 0, out
    assert "first bad: unsloth==1.1" in out and "continuing below the releases, over the commits between them:" in out
    assert f"unsloth 1.0 is commit {shas[0][:7]} 2025-01-01" in out and f"unsloth 1.1 is commit {shas[-1][:7]}" in out
    assert f"first bad commit: {shas[FIRST_BAD]}" in out


def test_the_commit_search_finds_a_fix_too(toy, capsys):
    root, shas = toy
    git(root / "repo", "revert", "--no-edit", shas[FIRST_BAD], when=T0 + timedelta(days=20))
    fixed = git(root / "repo", "rev-parse", "HEAD")
    status, out = bisect(toy, capsys, "--find-fix", "--bad", shas[FIRST_BAD][:10], "--good", fixed[:10])
    assert status == 0, out
    assert f"first fixed commit: {fixed}" in out and "Revert" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (("--good", "nosuchref", "--bad", "HEAD"), "'nosuchref' is not a commit of "),
        (("--good", "HEAD", "--bad", "HEAD~3"), "is not an ancestor of"),
    ],
)
def test_a_bad_ref_is_one_line(toy, capsys, args, message):
    status, out = bisect(toy, capsys, *args)
    assert status == 2 and message in out and len(out.strip().splitlines()) == 1, out


def test_a_missing_clone_is_one_line(toy, capsys):
    root, _ = toy
    status = main(
        [
            "bisect",
            "unsloth",
            "--commits",
            str(root / "nowhere"),
            "--good",
            "a",
            "--bad",
            "b",
            "--oracle-cmd",
            "true",
            "--release-data",
            str(root / "data"),
            "--offline",
        ]
    )
    out = capsys.readouterr().err
    assert status == 2 and "nowhere: no such git repository or bundle" in out and len(out.strip().splitlines()) == 1


CELL = """
[cells.commit]
unsloth = {{ git = "{repo}", rev = "{rev}" }}
unsloth_zoo = "2025.1.3"
transformers = "4.48.0"
torch = "2.13.0"
"""


def test_a_cell_pins_a_commit_installed_and_read_like_a_release(toy):
    root, shas = toy
    cell = parse_matrix(CELL.format(repo=root / "repo", rev=shas[FIRST_BAD][:8])).cell("commit")
    assert cell.stack["unsloth"] == f"1.0+g{shas[FIRST_BAD][:7]}"
    assert cell.code_under_test() == [
        f"unsloth @ git+{(root / 'repo').as_uri()}@{shas[FIRST_BAD]}",
        "unsloth-zoo==2025.1.3",
    ]
    assert cell.releases() == ["unsloth-zoo==2025.1.3"]  # what the release cache fetches
    code = loading.cell_code(cell, "unsloth")
    assert code.read("unsloth/flag.py") == "BROKEN = True\n" and code.label == f"unsloth @ {shas[FIRST_BAD][:7]} (1.0)"
    assert not code.has("unsloth/absent.py")
    with pytest.raises(HarnessError, match="has no file unsloth/absent.py"):
        code.read("unsloth/absent.py")


@pytest.mark.parametrize(
    "rev, message",
    [
        ("deadbeef", "'deadbeef' is not a commit of "),
        ("HEAD:README.md", "is not a commit of"),
    ],
)
def test_a_cell_with_a_bad_ref_is_one_line(toy, rev, message):
    root, _ = toy
    with pytest.raises(HarnessError) as caught:
        parse_matrix(CELL.format(repo=root / "repo", rev=rev))
    assert str(caught.value).startswith("matrix.toml [cells.commit]: unsloth: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


REGISTRY = """
[[failure]]
id = "toy"
package = "unsloth"
affected = "<1.1"
symptom = "BROKEN"
seed = "s"
description = "d"
evidence = "e"
found_by = "f"
suite = "suites/x.py"
commits = {{ fixed = "{fixed}" }}
"""


def test_registry_commits_place_a_commit_between_releases(toy):
    """A commit carries the version of the last release until the next one: the commit the registry says
    fixed the failure moves it past the range, its ancestors stay in it."""
    root, shas = toy
    failure = parse_registry(REGISTRY.format(fixed=shas[FIRST_BAD]))["toy"]
    repo = Repo(root / "repo")
    assert failure.placed("1.0", repo, shas[FIRST_BAD + 1]) == "1.1"
    assert failure.placed("1.0", repo, shas[FIRST_BAD]) == "1.1"
    assert failure.placed("1.0", repo, shas[FIRST_BAD - 1]) == "1.0"
    assert failure.placed("1.0", repo, "0" * 40) == "1.0"  # a commit this clone lacks: its version decides
    with pytest.raises(HarnessError, match="commits.fixed must be a full 40-character commit id"):
        parse_registry(REGISTRY.format(fixed="a72a9d9"))


def test_an_installed_commit_shows_in_the_stack_with_its_id(toy, tmp_path):
    """pip/uv record a git install's commit (PEP 610); the stack shows VERSION+gSHORT and the suites read it."""
    root, shas = toy
    from harness.env.overlay import Base, Overlays, python_env

    overlay = Overlays(Base.of(sys.executable), offline=True).get([Repo(root / "repo").requirement("unsloth", shas[2])])
    assert overlay.error is None
    probe = (
        "from harness.env.stack import dist_version; from harness.releases import code; "
        "print(dist_version('unsloth'), code.installed('unsloth').label, code.installed_commit('unsloth')[1])"
    )
    import subprocess

    out = subprocess.run(
        [str(overlay.python), "-c", probe], capture_output=True, text=True, check=True, env=python_env()
    ).stdout.split()
    assert out == [f"1.0+g{shas[2][:7]}", "unsloth==1.0+g" + shas[2][:7], "(installed)", shas[2]]
    assert release_code.is_code_under_test("unsloth==1.0") and not release_code.is_code_under_test(
        f"unsloth @ git+x@{shas[2]}"
    )


def test_releases_place_prints_a_line_per_release_and_fails_on_one_it_cannot_place(toy, capsys):
    root, shas = toy
    status = main(["releases", "place", "unsloth==1.0", "unsloth==0.9", "--repo", str(root / "repo")])
    out = capsys.readouterr().out.splitlines()
    assert status == 1 and len(out) == 2
    assert out[0].startswith(f'unsloth==1.0             {shas[0][:7]} 2025-01-01 "Release 1.0": the commit that sets')
    assert out[1].startswith("unsloth==0.9             cannot be placed: no tag names it")
