from pathlib import Path

import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from harness import xrays
from harness.cli import main
from harness.errors import HarnessError

ENTRY = """
[[fixture]]
id = "{id}"
source = "{source}"
modality = "{modality}"
description = "a radiograph"
must_mention = ["radiograph"]
"""


def manifest(tmp_path, **entry):
    path = tmp_path / "xrays.toml"
    path.write_text(ENTRY.format(**{"id": "x", "modality": "CR", **entry}))
    return path


def test_checked_in_fixtures_are_real_windowed_radiographs(xray_fixtures):
    assert {f.body_part for f in xray_fixtures} >= {"CHEST", "EXTREMITY"}
    for item in xray_fixtures:
        pixels = np.asarray(item.image().convert("L"), dtype=float)
        assert min(pixels.shape) >= xrays.MIN_SIDE
        assert pixels.std() > 30, f"{item.id} looks flat after windowing"
        assert 0 <= pixels.min() < 10 and pixels.max() > 245


def test_chest_is_inverted_from_monochrome1(chest_xray):
    # MONOCHROME1 stores bone dark; after inversion the spine column (centre) is brighter than the lungs.
    pixels = np.asarray(chest_xray.image().convert("L"), dtype=float)
    h, w = pixels.shape
    spine = pixels[h // 3 : h // 2, w // 2 - 10 : w // 2 + 10].mean()
    lung = pixels[h // 3 : h // 2, w // 4 - 10 : w // 4 + 10].mean()
    assert spine > lung


def test_decoding_is_cached(chest_xray):
    first = chest_xray.image()
    assert list(Path(xrays.cache_dir("xrays")).glob(f"{chest_xray.id}-*.png"))
    assert np.array_equal(np.asarray(first), np.asarray(chest_xray.image()))


def test_user_png_fixture_is_accepted(tmp_path, monkeypatch):
    monkeypatch.setattr(xrays, "FIXTURES_DIR", tmp_path)
    gradient = np.tile(np.linspace(0, 255, 128, dtype=np.uint8), (96, 1))
    Image.fromarray(gradient).save(tmp_path / "hand.png")
    (item,) = xrays.load_manifest(manifest(tmp_path, source="hand.png", modality="DX"))
    assert item.image().size == (128, 96)


@pytest.mark.parametrize(
    "source, modality, reason",
    [
        ("mr.dcm", "CR", "DICOM modality MR is not an X-ray modality"),
        ("pydicom-data:RG1_UNCR.dcm", "DX", "manifest says modality DX but the DICOM file says CR"),
        ("missing.dcm", "CR", "file not found"),
        ("garbage.png", "CR", "not a readable image"),
        ("garbage.dcm", "CR", "not a DICOM file"),
        ("tiny.png", "CR", "at least 64 px"),
    ],
)
def test_bad_fixture_files_are_refused_with_a_reason(tmp_path, monkeypatch, source, modality, reason):
    monkeypatch.setattr(xrays, "FIXTURES_DIR", tmp_path)
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 300)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "tiny.png")
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")  # ships with pydicom itself
    (item,) = xrays.load_manifest(manifest(tmp_path, source=source, modality=modality))
    with pytest.raises(HarnessError, match=reason):
        item.image()


@pytest.mark.parametrize(
    "entry, reason",
    [
        ({"modality": "MR", "source": "a.png"}, "not an X-ray modality"),
        ({"id": "Bad Id", "source": "a.png"}, "lower-case"),
    ],
)
def test_bad_manifest_entries_are_refused(tmp_path, entry, reason):
    with pytest.raises(HarnessError, match=reason):
        xrays.load_manifest(manifest(tmp_path, **entry))


def test_cli_fixtures_list_and_show(tmp_path, capsys):
    assert main(["fixtures", "list"]) == 0
    out = capsys.readouterr().out
    assert "chest-pa" in out and "ok " in out
    preview = tmp_path / "chest.png"
    assert main(["fixtures", "show", "chest-pa", "--out", str(preview)]) == 0
    assert Image.open(preview).size[0] >= 300
    assert main(["fixtures", "show", "nope"]) == 2
    assert "unknown fixture 'nope'" in capsys.readouterr().err
