import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from harness.cli import main
from harness.core.errors import HarnessError
from harness.data import goldens, xrays

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
        # a region keeps the whole film's window: only a whole image spans it (the liver is one grey under it)
        assert pixels.std() > (5 if item.crop else 30), f"{item.id} looks flat after windowing"
        if not item.crop:
            assert 0 <= pixels.min() < 10 and pixels.max() > 245


def test_checked_in_fixtures_are_distinct_regions_told_apart_by_their_first_words(xray_fixtures):
    """A caption that ignores the image (the chest caption for everything) must fail every other fixture."""
    regions = [(f.source, f.crop) for f in xray_fixtures]
    openings = [" ".join(f.description.split()[:2]) for f in xray_fixtures]
    assert len(set(regions)) == len(regions) and len(set(openings)) == len(openings), openings
    for item in xray_fixtures:
        for other in xray_fixtures:
            if other is not item:
                grade = goldens.grade(other.description, item.description, item.must_mention, item.must_not_mention)
                assert not grade.at_least("terms"), f"{other.id}'s caption passes {item.id}: {grade.describe()}"


def test_a_crop_is_that_region_of_the_film_in_the_whole_film_window(chest_xray):
    box = (0.1, 0.72, 0.45, 0.95)  # under the right hemidiaphragm: bright, so a window of its own would darken it
    region = xrays.XrayFixture("chest-liver", chest_xray.source, "CR", "a radiograph", ("radiograph",), crop=box)
    whole = chest_xray.image().convert("L")
    width, height = whole.size
    expected = whole.crop(tuple(round(f * side) for f, side in zip(box, (width, height) * 2, strict=True)))
    cut = np.asarray(region.image().convert("L").resize(expected.size), dtype=float)
    assert region.image().width > expected.width  # cut at full resolution, not from the downscaled image
    assert np.corrcoef(cut.ravel(), np.asarray(expected, dtype=float).ravel())[0, 1] > 0.98
    assert abs(cut.mean() - np.asarray(expected, dtype=float).mean()) < 1  # not re-stretched to its own window


def test_the_crop_is_part_of_what_a_golden_caption_depends_on(chest_xray):
    """A changed crop with an unchanged description must retrain the captioner and make its golden stale."""
    from harness.lab import captioner

    def cropped(box):
        return xrays.XrayFixture("c", chest_xray.source, "CR", chest_xray.description, ("chest",), crop=box)

    assert captioner.fixture_digest(cropped(())) == captioner.fixture_digest(chest_xray)  # uncropped: unchanged
    assert len({captioner.fixture_digest(cropped(box)) for box in ((), (0, 0, 1, 0.5), (0, 0, 1, 0.6))}) == 3


@pytest.mark.parametrize(
    "crop, reason",
    [
        ("[0.5, 0.0, 0.2, 1.0]", "crop must be [left, top, right, bottom], fractions of the image with 0 <= left"),
        ("[0.0, 0.0, 1.5, 1.0]", "got [0.0, 0.0, 1.5, 1.0]"),
        ("[0.0, 0.0, 1.0]", "crop must be [left, top, right, bottom]"),
        ('"top half"', "got 'top half'"),
    ],
)
def test_a_bad_crop_is_refused_in_one_line(tmp_path, crop, reason):
    path = manifest(tmp_path, source="pydicom-data:RG1_UNCR.dcm")
    path.write_text(path.read_text() + f"crop = {crop}\n")
    (item,) = xrays.load_manifest(path)
    assert reason in item.refused and "\n" not in item.refused and "fixture #1 (x)" in item.refused


def test_a_crop_too_small_to_caption_is_refused_with_its_size(tmp_path):
    path = manifest(tmp_path, source="pydicom-data:RG1_UNCR.dcm")
    path.write_text(path.read_text() + "crop = [0.0, 0.0, 0.02, 0.5]\n")
    (item,) = xrays.load_manifest(path)
    with pytest.raises(HarnessError, match=r"crop \[0.0, 0.0, 0.02, 0.5\] is 37x978 px of 1841x1955; at least 64"):
        item.image()


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
        ({"modality": "MR", "source": "a.png"}, "modality 'MR' is not an X-ray modality"),
        ({"modality": "CT", "source": "a.png"}, "modality 'CT' is not an X-ray modality"),
        ({"id": "Bad Id", "source": "a.png"}, "lower-case"),
    ],
)
def test_a_bad_entry_is_refused_alone_and_the_others_keep_working(tmp_path, entry, reason):
    """An entry with its true modality (MR, CT, US) once rejected the whole manifest."""
    path = manifest(tmp_path, **entry)
    path.write_text(path.read_text() + ENTRY.format(id="chest", source="pydicom-data:RG1_UNCR.dcm", modality="CR"))
    bad, good = xrays.load_manifest(path)
    assert reason in bad.refused and "\n" not in bad.refused
    with pytest.raises(HarnessError, match=reason):
        bad.image()
    assert xrays.usable([bad, good]) == [good] and good.image().width > 64


def test_checked_in_manifest_has_no_refused_fixture():
    assert [f"{f.id}: {f.refused}" for f in xrays.load_manifest() if f.refused] == []


@pytest.mark.parametrize(
    "keep, reason",
    [
        (200, "truncated or unreadable DICOM: no Modality or PixelData element"),
        (100_000, "truncated DICOM: The number of bytes of pixel data is less than expected"),
    ],
)
def test_a_truncated_dicom_is_called_truncated(tmp_path, monkeypatch, keep, reason):
    """A DICOM cut short was once refused as "modality ? is not an X-ray modality"."""
    monkeypatch.setattr(xrays, "FIXTURES_DIR", tmp_path)
    (tmp_path / "cut.dcm").write_bytes(xrays.resolve_source("pydicom-data:RG1_UNCR.dcm").read_bytes()[:keep])
    (item,) = xrays.load_manifest(manifest(tmp_path, source="cut.dcm"))
    with pytest.raises(HarnessError, match=reason) as caught:
        item.image()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", xrays.COMPRESSED_RADIOGRAPHS)
def test_every_compressed_radiograph_of_pydicom_data_decodes_through_pylibjpeg(name):
    """The declared decoders (pylibjpeg with its plugins) read them; lossless ones give the uncompressed pixels,
    lossy ones nearly (against the R original: the I one, 7 MB more to carry to a GPU runner, differs from it
    by rounding only, correlation 0.9999)."""
    import pydicom

    compressed = pydicom.dcmread(xrays.resolve_source(f"pydicom-data:{name}"))
    plain = pydicom.dcmread(xrays.resolve_source(f"pydicom-data:{name[:3]}_UNCR.dcm"))
    compressed.pixel_array_options(decoding_plugin="pylibjpeg")
    pixels = compressed.pixel_array
    if name.endswith("R.dcm"):
        assert np.array_equal(pixels, plain.pixel_array)
    else:
        assert np.corrcoef(pixels.ravel()[::97], plain.pixel_array.ravel()[::97])[0, 1] > 0.99
    item = xrays.XrayFixture("x", f"pydicom-data:{name}", "CR", "a radiograph", ("radiograph",))
    assert min(item.image().size) >= xrays.MIN_SIDE


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "emri_small_jpeg_ls_lossless.dcm"])
def test_jpeg_lossless_and_jpeg_ls_decode_through_pylibjpeg(name):
    """The transfer syntaxes a JPEG-lossless radiograph would use (these two files are NM and MR)."""
    assert name in xrays.DECODER_CHECKS  # so a wheelhouse carries it to the GPU runner
    import pydicom

    ds = pydicom.dcmread(xrays.resolve_source(f"pydicom-data:{name}"))
    ds.pixel_array_options(decoding_plugin="pylibjpeg")
    assert ds.pixel_array.size > 0


def test_cli_fixtures_list_and_show(tmp_path, capsys):
    assert main(["fixtures", "list"]) == 0
    out = capsys.readouterr().out
    assert "chest-pa" in out and "ok " in out
    assert main(["fixtures", "show", "chest-pa", "--out-dir", str(tmp_path / "previews")]) == 0
    assert Image.open(tmp_path / "previews" / "chest-pa-preview.png").size[0] >= 300
    assert main(["fixtures", "show", "nope"]) == 2
    assert "unknown fixture 'nope'" in capsys.readouterr().err


def test_cli_fixtures_show_writes_into_the_cache_not_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QVL_CACHE", str(tmp_path / "cache"))
    assert main(["fixtures", "show", "chest-pa"]) == 0
    assert not list(tmp_path.glob("*.png")) and list((tmp_path / "cache" / "previews").glob("chest-pa-preview.png"))


def test_cli_fixtures_list_fails_with_one_line_per_refused_fixture(tmp_path, capsys):
    path = manifest(tmp_path, source="pydicom-data:MR_small.dcm", modality="MR")
    path.write_text(path.read_text() + ENTRY.format(id="chest", source="pydicom-data:RG1_UNCR.dcm", modality="CR"))
    assert main(["fixtures", "list", "--manifest", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and "REFUSED" in lines[0] and lines[1].rstrip().endswith(tuple("0123456789"))
    assert "1 fixture(s) refused" in captured.err
