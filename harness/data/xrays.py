"""Real X-ray fixtures: the manifest, DICOM decoding and windowing, and the cached 8-bit images."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path

from harness.core import atomic, schema
from harness.core.errors import HarnessError, one_line
from harness.core.paths import FIXTURES_DIR, cache_dir

MANIFEST = FIXTURES_DIR / "xrays.toml"
# Projection radiography only: what a "describe this X-ray" prompt is about.
XRAY_MODALITIES = {
    "CR": "computed radiography",
    "DX": "digital radiography",
    "MG": "mammography",
    "RF": "radiofluoroscopy",
    "XA": "X-ray angiography",
    "IO": "intra-oral radiography",
    "PX": "panoramic X-ray",
}
REQUIRED = ("id", "source", "modality", "description", "must_mention")
OPTIONAL = ("body_part", "view", "must_not_mention", "crop")
MIN_SIDE = 64  # pixels; smaller images carry no anatomy worth captioning
MAX_SIDE = 512  # cached images are downscaled to this
DECODER_VERSION = 1  # bump when windowing changes, so cached images are rebuilt
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
# pydicom-data files the harness's own decoder tests read beside the fixtures (a wheelhouse carries them too):
# every compressed radiograph of pydicom-data with its uncompressed original, JPEG lossless and JPEG-LS.
COMPRESSED_RADIOGRAPHS = ("RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm")
DECODER_CHECKS = (
    *COMPRESSED_RADIOGRAPHS,
    "RG1_UNCR.dcm",
    "RG3_UNCR.dcm",
    "JPEG-LL.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
)


@dataclass(frozen=True)
class XrayFixture:
    id: str
    source: str
    modality: str
    description: str
    must_mention: tuple[str, ...]
    must_not_mention: tuple[str, ...] = ()
    body_part: str = ""
    view: str = ""
    crop: tuple[float, ...] = ()  # (left, top, right, bottom), fractions of the source image; () is all of it
    refused: str = ""  # why the manifest entry cannot be a fixture; the others keep working

    @property
    def path(self) -> Path:
        return resolve_source(self.source)

    def content(self) -> bytes:
        """What the image is made from: the file's bytes, and the crop of it when there is one."""
        data = self.path.read_bytes()
        return data + f"|crop={list(self.crop)}".encode() if self.crop else data

    def image(self):
        """The fixture as an 8-bit RGB PIL image (decoded once, then read from the cache)."""
        from PIL import Image

        if self.refused:
            raise HarnessError(self.refused)
        if not self.path.is_file():
            raise HarnessError(f"fixture {self.id!r}: file not found: {self.path}")
        digest = hashlib.sha256(self.content() + f"|{DECODER_VERSION}".encode()).hexdigest()[:16]
        cached = cache_dir("xrays") / f"{self.id}-{digest}.png"
        if not cached.exists():
            gray = decode(self.path, self.modality, self.id, self.crop)
            png = io.BytesIO()
            gray.save(png, format="PNG")
            atomic.write_bytes(cached, png.getvalue())
        return Image.open(cached).convert("RGB")


def resolve_source(source: str) -> Path:
    if source.startswith("pydicom-data:"):
        spec = importlib.util.find_spec("data_store")
        if spec is None or spec.origin is None:
            raise HarnessError("fixture source needs the pydicom-data package: pip install pydicom-data")
        return Path(spec.origin).parent / "data" / source.split(":", 1)[1]
    return FIXTURES_DIR / source


def _gray_to_image(pixels, crop: tuple[float, ...] = ()):
    """Scale windowed pixel values to 8 bits, cut ``crop`` out at full resolution, and downscale the long side
    to MAX_SIDE. The window is the whole image's: a region looks as it does on the film, not re-stretched."""
    import numpy as np
    from PIL import Image

    pixels = pixels.astype("float64")
    low, high = np.percentile(pixels, 0.5), np.percentile(pixels, 99.5)
    if high <= low:
        raise ValueError("the image is blank (a single grey level)")
    scaled = _cropped(np.clip((pixels - low) / (high - low), 0, 1), crop)
    image = Image.fromarray((scaled * 255).round().astype("uint8"), mode="L")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return image


def _decode_dicom(path: Path, modality: str):
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a file cut short
        raise ValueError(f"truncated or unreadable DICOM: {one_line(str(exc), 160)}") from None
    missing = [name for name in ("Modality", "PixelData") if name not in ds]
    if missing:
        raise ValueError(f"truncated or unreadable DICOM: no {' or '.join(missing)} element")
    actual = str(ds.Modality or "?")
    if actual not in XRAY_MODALITIES:
        raise ValueError(f"DICOM modality {actual} is not an X-ray modality (accepted: {', '.join(XRAY_MODALITIES)})")
    if actual != modality:
        raise ValueError(f"manifest says modality {modality} but the DICOM file says {actual}")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for undecodable pixel data
        if "less than expected" in str(exc):
            raise ValueError(f"truncated DICOM: {one_line(str(exc).split(' - ')[0], 160)}") from None
        raise ValueError(
            f"pixel data cannot be decoded ({ds.file_meta.TransferSyntaxUID.name}): {one_line(str(exc), 200)}"
        ) from None
    if pixels.ndim != 2:
        raise ValueError(f"expected one grayscale frame, got pixel array of shape {pixels.shape}")
    pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    if ds.PhotometricInterpretation == "MONOCHROME1":  # bright = low attenuation: invert to film look
        pixels = pixels.max() - pixels
    return pixels


def _cropped(pixels, crop: tuple[float, ...]):
    """The (left, top, right, bottom) fractions of ``pixels``."""
    if not crop:
        return pixels
    height, width = pixels.shape
    left, top, right, bottom = crop
    cut = pixels[round(top * height) : round(bottom * height), round(left * width) : round(right * width)]
    if min(cut.shape) < MIN_SIDE:
        raise ValueError(
            f"crop {list(crop)} is {cut.shape[1]}x{cut.shape[0]} px of {width}x{height}; "
            f"at least {MIN_SIDE} px a side is needed"
        )
    return cut


def decode(path: Path, modality: str, fixture_id: str = "?", crop: tuple[float, ...] = ()):
    """Decode a DICOM/PNG/JPEG radiograph into a windowed 8-bit grayscale PIL image (``crop`` of it), or refuse it."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    where = f"fixture {fixture_id!r} ({path.name})"
    if modality not in XRAY_MODALITIES:
        raise HarnessError(
            f"{where}: modality {modality!r} is not an X-ray modality (accepted: {', '.join(XRAY_MODALITIES)})"
        )
    if not path.is_file():
        raise HarnessError(f"{where}: file not found: {path}")
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                pixels = np.asarray(Image.open(path).convert("L"))
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"not a readable image: {exc}") from None
        else:
            import pydicom.errors

            try:
                pixels = _decode_dicom(path, modality)
            except pydicom.errors.InvalidDicomError:
                raise ValueError("not a DICOM file (and not .png/.jpg/.jpeg)") from None
        if min(pixels.shape) < MIN_SIDE:
            raise ValueError(
                f"image is {pixels.shape[1]}x{pixels.shape[0]} px; at least {MIN_SIDE} px a side is needed"
            )
        return _gray_to_image(pixels, crop)
    except ValueError as exc:
        raise HarnessError(f"{where}: {exc}") from None


def parse_manifest(text: str, where: str = MANIFEST.name) -> list[XrayFixture]:
    """Every entry of the manifest. A malformed file or a duplicate id fails the whole manifest; an entry
    that cannot be a fixture (wrong keys, a modality that is not projection radiography) is kept with
    the reason it is ``refused``, so the others keep working."""
    return manifest_of(schema.parse_toml(text, where), where)


def manifest_of(data: dict, where: str) -> list[XrayFixture]:
    """The fixtures of a parsed manifest (see parse_manifest)."""
    entries = data.get("fixture")
    if not isinstance(entries, list) or not entries:
        raise HarnessError(f"{where}: no [[fixture]] entries")
    fixtures, seen = [], set()
    for n, entry in enumerate(entries, 1):
        fid = str(entry.get("id", f"#{n}"))
        if fid in seen:
            raise HarnessError(f"{where} fixture #{n}: duplicate id {fid!r}")
        seen.add(fid)
        try:
            fixtures.append(_fixture(entry, f"{where} fixture #{n} ({fid})"))
        except HarnessError as exc:
            fixtures.append(
                XrayFixture(
                    id=fid,
                    source=str(entry.get("source", "")),
                    modality=str(entry.get("modality", "?")),
                    description="",
                    must_mention=(),
                    refused=str(exc),
                )
            )
    return fixtures


def _fixture(entry: dict, label: str) -> XrayFixture:
    schema.keys(label, entry, set(REQUIRED), set(OPTIONAL))
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", str(entry["id"])):
        raise HarnessError(f"{label}: id {entry['id']!r} must be lower-case letters, digits and dashes")
    if entry["modality"] not in XRAY_MODALITIES:
        raise HarnessError(
            f"{label}: modality {entry['modality']!r} is not an X-ray modality (accepted: {', '.join(XRAY_MODALITIES)})"
        )
    return XrayFixture(
        id=entry["id"],
        source=entry["source"],
        modality=entry["modality"],
        description=entry["description"],
        must_mention=schema.string_list(label, "must_mention", entry["must_mention"], lower=True),
        must_not_mention=schema.string_list(label, "must_not_mention", entry.get("must_not_mention", []), lower=True),
        body_part=entry.get("body_part", ""),
        view=entry.get("view", ""),
        crop=_crop(label, entry.get("crop")),
    )


def _crop(label: str, value) -> tuple[float, ...]:
    """``crop = [left, top, right, bottom]``: fractions of the source image, a non-empty box inside it."""
    if value is None:
        return ()
    numbers = isinstance(value, list) and len(value) == 4
    numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not numbers or not (0 <= value[0] < value[2] <= 1 and 0 <= value[1] < value[3] <= 1):
        raise HarnessError(
            f"{label}: crop must be [left, top, right, bottom], fractions of the image with "
            f"0 <= left < right <= 1 and 0 <= top < bottom <= 1, got {value!r}"
        )
    return tuple(float(v) for v in value)


def load_manifest(path: Path = MANIFEST) -> list[XrayFixture]:
    return manifest_of(schema.load_toml(path, "fixture manifest"), path.name)


def usable(fixtures: list[XrayFixture]) -> list[XrayFixture]:
    """The fixtures whose manifest entries were accepted (decoding may still refuse a file)."""
    return [f for f in fixtures if not f.refused]


def fixture(fixture_id: str, path: Path = MANIFEST) -> XrayFixture:
    for item in load_manifest(path):
        if item.id == fixture_id:
            return item
    raise HarnessError(f"unknown fixture {fixture_id!r}; known: {', '.join(f.id for f in load_manifest(path))}")


def write_preview(item: XrayFixture, out_dir: Path) -> Path:
    """``OUT_DIR/ID-preview.png``: the decoded fixture with its id and reference description under it."""
    from PIL import Image, ImageDraw

    image = item.image()
    image.thumbnail((384, 384))
    canvas = Image.new("RGB", (max(image.width, 384), image.height + 40), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, image.height + 4), f"{item.id} [{item.modality} {item.body_part} {item.view}]", fill="black")
    draw.text((4, image.height + 20), item.description[:64], fill="black")
    out = Path(out_dir) / f"{item.id}-preview.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
