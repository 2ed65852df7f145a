"""Hostile image bytes: truncated, corrupted, decompression bombs, odd-but-valid encodings, non-images.

Pure functions of their inputs and of the `random.Random` they are given, so the bad-input corpus
is reproducible from its seed. Big images are written as PNG streams row block by row block, so a
20000x20000 picture is a 50 KB file that never exists decoded on this side.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import numpy as np
import cv2
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_BLOCK_BYTES = 1 << 20


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


# --- PNG built by hand (bombs, huge sizes, broken chunks) ------------------------------------------


def png_chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    checksum = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)


def png_ihdr(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))


def png_header_bomb(width: int, height: int) -> bytes:
    """IHDR declares width x height; the pixel data is 64 bytes (the bomb is only in the header)."""
    return PNG_MAGIC + png_ihdr(width, height) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")


def zlib_of_repeats(block: bytes, repeats: int, tail: bytes = b"") -> bytes:
    """The zlib stream of `block * repeats + tail`, compressing `block` once.

    A full flush empties the compressor's window, so every copy of the block compresses to the
    same bytes: the stream is those bytes repeated, then the tail, then the Adler-32 of it all.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    finisher = zlib.compressobj(9, zlib.DEFLATED, -15)
    ending = finisher.compress(tail) + finisher.flush()
    checksum = 1
    for _ in range(repeats):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(tail, checksum)
    return b"\x78\xda" + packed * repeats + ending + struct.pack(">I", checksum)


def png_solid(width: int, height: int, *, bit_depth: int = 8, color_type: int = 0, extra_chunks: bytes = b"") -> bytes:
    """A real, complete PNG of zeros: the file is ~1/1000 of the decoded size."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte + packed samples
    rows_per_block = max(1, _BLOCK_BYTES // len(row))
    idat = zlib_of_repeats(row * rows_per_block, height // rows_per_block, row * (height % rows_per_block))
    return PNG_MAGIC + png_ihdr(width, height, bit_depth, color_type) + extra_chunks + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_text_bomb(inflated_bytes: int = 64 << 20) -> bytes:
    """A valid 64x64 PNG carrying a zTXt chunk that inflates to `inflated_bytes` (a metadata bomb)."""
    block = b"A" * _BLOCK_BYTES
    text = zlib_of_repeats(block, inflated_bytes // len(block))
    return png_solid(64, 64, extra_chunks=png_chunk(b"zTXt", b"Comment\0\0" + text))


def png_pixel_data_end(png: bytes) -> int:
    """Offset just past the last IDAT chunk's data: cutting before it loses pixel data."""
    offset, end = len(PNG_MAGIC), 0
    while offset + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[offset : offset + 8])
        if kind == b"IDAT":
            end = offset + 8 + length
        offset += 12 + length
    return end


# --- Other formats' headers declaring huge sizes -----------------------------------------------------


def jpeg_header_bomb(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` with its frame header (SOF0-SOF2) rewritten to declare width x height."""
    offset = 2
    while offset + 4 <= len(jpeg):
        if jpeg[offset] != 0xFF:
            raise ValueError("not a JPEG marker sequence")
        marker = jpeg[offset + 1]
        length = struct.unpack(">H", jpeg[offset + 2 : offset + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            dims = struct.pack(">HH", height, width)
            return jpeg[: offset + 5] + dims + jpeg[offset + 9 :]
        offset += 2 + length
    raise ValueError("no frame header found")


def gif_header_bomb(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00;"


def webp_header_bomb(width: int, height: int) -> bytes:
    """A VP8X (extended WebP) header declaring a width x height canvas, with no bitstream."""
    vp8x = b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_header_bomb(width: int, height: int) -> bytes:
    """A BMP whose info header declares width x height at 24 bits (negative height: top-down)."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\0" * 64
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


# --- Damage to real files ---------------------------------------------------------------------------


def truncated(data: bytes, rng: random.Random, *, end: int | None = None) -> bytes:
    """`data` cut at a random point before `end` (default: the last byte)."""
    return data[: rng.randrange(0, (len(data) if end is None else end))]


def flip_bits(data: bytes, rng: random.Random, count: int, *, start: int = 0) -> bytes:
    damaged = bytearray(data)
    for _ in range(count):
        position = rng.randrange(start, len(damaged))
        damaged[position] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def overwrite_run(data: bytes, rng: random.Random, *, start: int = 0, max_run: int = 512) -> bytes:
    """A run of random bytes written over `data` after `start`."""
    position = rng.randrange(start, len(data))
    run = rng.randbytes(rng.randint(1, max_run))
    return (data[:position] + run + data[position + len(run) :])[: len(data)]


def wrong_magic(data: bytes, rng: random.Random) -> bytes:
    """The first bytes (the format signature) replaced by other bytes."""
    length = rng.randint(2, 8)
    return bytes(b ^ 0xA5 for b in data[:length]) + data[length:]


def png_bad_ihdr_crc(png: bytes) -> bytes:
    start = len(PNG_MAGIC)
    crc_at = start + 8 + 13
    return png[:crc_at] + bytes(b ^ 0xFF for b in png[crc_at : crc_at + 4]) + png[crc_at + 4 :]


def png_bad_bit_depth(png: bytes) -> bytes:
    """IHDR claims bit depth 7 (invalid) with a matching CRC, so only the value is wrong."""
    start = len(PNG_MAGIC)
    width, height = struct.unpack(">II", png[start + 8 : start + 16])
    return PNG_MAGIC + png_ihdr(width, height, bit_depth=7) + png[start + 25 :]


# --- Valid but unusual encodings of a real photo ----------------------------------------------------


def cmyk_jpeg(photo: Image.Image) -> bytes:
    return encode(photo.convert("CMYK"), "JPEG", quality=90)


def png16_gray(photo: Image.Image) -> bytes:
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    return cv2.imencode(".png", grey)[1].tobytes()


def png16_rgb(photo: Image.Image) -> bytes:
    bgr = np.asarray(photo.convert("RGB"))[:, :, ::-1].astype(np.uint16) * 257
    return cv2.imencode(".png", np.ascontiguousarray(bgr))[1].tobytes()


def animated(photo: Image.Image, fmt: str, frames: int = 4) -> bytes:
    """An animated GIF or WebP whose frames are the photo, mirrored and greyed."""
    rgb = photo.convert("RGB")
    sequence = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT), rgb.convert("L").convert("RGB")]
    if fmt == "GIF":  # the web palette, instead of Pillow's slow adaptive quantisation
        sequence = [frame.convert("P") for frame in sequence]
    rest = [sequence[i % len(sequence)] for i in range(1, frames)]
    return encode(sequence[0], fmt, save_all=True, append_images=rest, duration=80, loop=0)


def with_exif_orientation(photo: Image.Image, orientation: int) -> bytes:
    """A JPEG whose EXIF orientation tag is `orientation` (1-8 valid; anything else is not)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo.convert("RGB"), "JPEG", exif=exif.tobytes())


# Valid encodings a decoder must handle: the photo's content survives each.
ODD_ENCODINGS = {
    "cmyk_jpeg": cmyk_jpeg,
    "png16_gray": png16_gray,
    "png16_rgb": png16_rgb,
    "animated_webp": lambda photo: animated(photo, "WEBP"),
    "progressive_jpeg": lambda photo: encode(photo.convert("RGB"), "JPEG", progressive=True, quality=85),
    "grayscale_jpeg": lambda photo: encode(photo.convert("L"), "JPEG"),
    "palette_png": lambda photo: encode(photo.convert("P"), "PNG"),
    "rgba_png": lambda photo: encode(photo.convert("RGBA"), "PNG"),
    "la_png": lambda photo: encode(photo.convert("LA"), "PNG"),
    "bmp": lambda photo: encode(photo.convert("RGB"), "BMP"),
    "lossless_webp": lambda photo: encode(photo.convert("RGB"), "WEBP", lossless=True),
}


# --- Things that are not images ---------------------------------------------------------------------


def _zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("face.jpg", date_time=(2026, 1, 1, 0, 0, 0)), b"\0" * 100_000)  # no clock in it
    return out.getvalue()


def non_images(rng: random.Random) -> dict[str, bytes]:
    """Files of other types, each to be sent under an image name and content type."""
    return {
        "text": b"this is plain text, not a photo\n" * 20,
        "pdf": b"%PDF-1.7\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n",
        "zip": _zip_bytes(),
        "elf": b"\x7fELF\x02\x01\x01\0" + b"\0" * 8 + struct.pack("<HHI", 2, 0x3E, 1) + rng.randbytes(200),
        "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="20000" height="20000"><script>alert(1)</script></svg>',
        "json": b'{"image": "not really"}',
        "empty": b"",
        "nul_bytes": b"\0" * 4096,
        "random": rng.randbytes(rng.randint(1, 65536)),
        "utf16_text": "ceci n'est pas une image".encode("utf-16"),
        "jpeg_magic_only": b"\xff\xd8\xff",
        "png_magic_only": PNG_MAGIC,
        "riff_wave": b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + b"\0" * 28,
    }
