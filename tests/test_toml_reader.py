"""One TOML reader (harness.core.schema.load_toml) behind every file the harness loads: a missing or malformed
matrix, registry, fixture manifest or hub snapshot is one line naming it."""

from __future__ import annotations

import pytest

from harness.core.errors import HarnessError
from harness.data import hub, xrays
from harness.env.matrix import load_matrix
from harness.failures import registry

LOADERS = {
    "matrix file": load_matrix,
    "known-failure registry": registry.load_registry,
    "fixture manifest": xrays.load_manifest,
    "hub snapshot": hub.load_snapshot,
}


def one_line(load, path) -> str:
    with pytest.raises(HarnessError) as caught:
        load(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("what", LOADERS)
def test_a_malformed_file_is_one_line_naming_it(what, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[cells.a\nunsloth = "2024.11.11"\n')
    assert one_line(LOADERS[what], path).startswith("broken.toml: not valid TOML: ")


@pytest.mark.parametrize("what", LOADERS)
def test_a_missing_file_is_one_line_naming_it(what, tmp_path):
    path = tmp_path / "gone.toml"
    assert one_line(LOADERS[what], path) == f"cannot read {what} {path}: No such file or directory"
