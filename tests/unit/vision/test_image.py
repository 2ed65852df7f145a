"""Image decoding: every class of bad input gets its typed error; odd-but-valid images decode."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ufme_ray.config import ImageLimits
from ufme_ray.vision.errors import (
    BadExifError,
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedImageError,
)
from ufme_ray.vision.image import decode_image

LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def face_jpeg(faces_dir: Path) -> bytes:
    """A 480x640 portrait face photo with no EXIF orientation."""
    upright = ImageOps.exif_transpose(Image.open(faces_dir / "pad/live/silentface_image_T1.jpg"))
    return encode(upright.convert("RGB"), "JPEG", quality=95)


def test_camera_exif_orientation(faces_dir: Path):
    """The PAD live sample is stored landscape with an EXIF rotation; we serve it upright."""
    raw = (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()
    assert Image.open(io.BytesIO(raw)).size == (640, 480)
    assert decode_image(raw, LIMITS).bgr.shape[:2] == (640, 480)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, followed by a tiny IDAT: a bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_real_jpeg_decodes_to_bgr(face_jpeg):
    decoded = decode_image(face_jpeg, LIMITS)
    reference = np.asarray(Image.open(io.BytesIO(face_jpeg)).convert("RGB"))[:, :, ::-1]
    assert decoded.format == "JPEG"
    assert decoded.bgr.dtype == np.uint8 and decoded.bgr.shape == reference.shape
    assert np.array_equal(decoded.bgr, reference)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP"])
def test_other_accepted_formats(face_jpeg, fmt):
    original = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    decoded = decode_image(encode(original, fmt, **({"lossless": True} if fmt == "WEBP" else {})), LIMITS)
    assert decoded.format == fmt
    assert np.array_equal(decoded.bgr, np.asarray(original)[:, :, ::-1])


def test_exif_orientation_is_applied(face_jpeg):
    original = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(encode(original, "JPEG", exif=exif.tobytes(), quality=95), LIMITS)
    assert decoded.bgr.shape[:2] == (original.width, original.height)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(face_jpeg, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = encode(Image.open(io.BytesIO(face_jpeg)).convert("RGB"), "JPEG", exif=exif.tobytes(), quality=95)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg)))
    assert np.array_equal(decode_image(jpeg, LIMITS).bgr, np.asarray(upright.convert("RGB"))[:, :, ::-1])


def _ifd0(*entries: bytes, count: int | None = None) -> bytes:
    """A little-endian EXIF block whose first IFD declares `count` entries (default: those given)."""
    declared = len(entries) if count is None else count
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, declared) + b"".join(entries)


_ORIENTATION_6 = struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)


@pytest.mark.parametrize(
    "exif",
    [
        _ifd0(_ORIENTATION_6[:6]),  # the orientation entry cut short
        _ifd0(count=3),  # entries declared, none present
        _ifd0(struct.pack("<HHIHH", 0x0112, 3, 2, 6, 6)),  # two orientations
        _ifd0(struct.pack("<HHIHH", 0x0112, 3, 1, 9, 0)),  # outside 1-8
    ],
    ids=["truncated-entry", "missing-entries", "two-values", "out-of-range"],
)
def test_unreadable_exif_orientation_is_refused(face_jpeg, exif):
    """Never served unrotated: a sideways face would be matched (or refused) wrongly."""
    jpeg = encode(Image.open(io.BytesIO(face_jpeg)).convert("RGB"), "JPEG", exif=exif, quality=95)
    with pytest.raises(BadExifError, match="EXIF orientation") as excinfo:
        decode_image(jpeg, LIMITS)
    assert excinfo.value.code == "bad_exif"


@pytest.mark.parametrize(
    "make",
    [
        lambda img: encode(img.convert("CMYK"), "JPEG"),
        lambda img: encode(img.convert("L"), "PNG"),
        lambda img: encode(img.convert("RGBA"), "PNG"),
        lambda img: encode(img.convert("P"), "PNG"),
        lambda img: encode(Image.fromarray((np.asarray(img.convert("L")).astype(np.uint16) * 257)), "PNG"),
    ],
    ids=["cmyk-jpeg", "grey-png", "rgba-png", "palette-png", "16bit-png"],
)
def test_unusual_modes_decode_to_3_channels(face_jpeg, make):
    original = Image.open(io.BytesIO(face_jpeg)).convert("RGB")
    decoded = decode_image(make(original), LIMITS)
    assert decoded.bgr.shape == (original.height, original.width, 3)
    # Content survives the conversion: same overall brightness as the original within a margin.
    assert abs(float(decoded.bgr.mean()) - float(np.asarray(original).mean())) < 25


def test_empty_bytes():
    with pytest.raises(EmptyImageError):
        decode_image(b"", LIMITS)


@pytest.mark.parametrize(
    "data", [b"hello, this is text", b"%PDF-1.7\n" + b"0" * 100, b"\x00" * 1000, b'{"image": 1}'], ids=["text", "pdf", "zeros", "json"]
)
def test_non_images_are_unsupported(data):
    with pytest.raises(UnsupportedImageError) as excinfo:
        decode_image(data, LIMITS)
    assert excinfo.value.code == "unsupported_image_type"


def test_gif_is_unsupported(face_jpeg):
    frames = [Image.open(io.BytesIO(face_jpeg)).convert("P")] * 2
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImageError):
        decode_image(gif.getvalue(), LIMITS)


def test_truncated_jpeg(face_jpeg):
    with pytest.raises(CorruptImageError) as excinfo:
        decode_image(face_jpeg[: len(face_jpeg) // 2], LIMITS)
    assert "truncated" in excinfo.value.message
    assert excinfo.value.code == "corrupt_image"


def test_truncated_png(face_jpeg):
    png = encode(Image.open(io.BytesIO(face_jpeg)), "PNG")
    with pytest.raises(CorruptImageError):
        decode_image(png[: len(png) // 3], LIMITS)


def test_jpeg_signature_with_garbage_body():
    with pytest.raises((CorruptImageError, UnsupportedImageError)):
        decode_image(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, LIMITS)


def test_byte_limit(face_jpeg):
    with pytest.raises(ImageTooLargeError) as excinfo:
        decode_image(face_jpeg, ImageLimits(max_bytes=len(face_jpeg) - 1))
    assert excinfo.value.code == "image_too_large"


def test_declared_pixels_refused_before_decoding():
    with pytest.raises(ImageTooLargeError) as excinfo:
        decode_image(png_header_only(50_000, 50_000), LIMITS)
    assert "2500000000 pixels" in excinfo.value.message


def test_real_decompression_bomb():
    bomb = encode(Image.new("L", (8000, 6000)), "PNG")  # 48 MP of zeros in a few tens of KB
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb, LIMITS)


def test_tiny_image():
    with pytest.raises(ImageTooSmallError):
        decode_image(encode(Image.new("RGB", (1, 1)), "PNG"), LIMITS)
