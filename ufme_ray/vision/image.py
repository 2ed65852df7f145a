"""Decoding client images safely: format allow-list, byte and pixel limits, EXIF orientation.

Pillow is used to read the header (format and declared size) without decoding pixels, so a
decompression bomb is refused for the cost of parsing a few hundred bytes. Only then are the
pixels decoded; a truncated file raises instead of yielding a half-grey image (OpenCV's
imdecode would silently return partial data).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError
# Registering exactly the plugins we accept (Image.open(formats=…) only sees registered ones).
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

from ufme_ray.config import ImageLimits
from ufme_ray.vision.errors import (
    BadExifError,
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedImageError,
)

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")

# EXIF orientation -> the transpose that shows the image upright (1: upright already).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    bgr: np.ndarray  # HxWx3 uint8, EXIF orientation applied
    format: str

    @property
    def width(self) -> int:
        return int(self.bgr.shape[1])

    @property
    def height(self) -> int:
        return int(self.bgr.shape[0])


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """Decode `data` into a BGR array, or raise a typed `ImageError` saying why not.

    Raises EmptyImageError, ImageTooLargeError (bytes or declared pixels over the limits),
    UnsupportedImageError (not JPEG/PNG/WebP/BMP), CorruptImageError (truncated or damaged),
    ImageTooSmallError, BadExifError (the EXIF orientation cannot be read).
    """
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    with warnings.catch_warnings():
        # Pillow's own bomb check only warns below 2x its limit; ours is stricter and explicit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError as exc:
            raise UnsupportedImageError("not a JPEG, PNG, WebP or BMP image") from exc
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"the image declares too many pixels: {exc}") from exc
        except Exception as exc:  # a damaged header can raise anything from the format plugin
            raise CorruptImageError(f"the image header is damaged: {exc}") from exc
        width, height = image.size
        if width * height > limits.max_pixels:
            raise ImageTooLargeError(
                f"the image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
            )
        if min(width, height) < limits.min_side_px:
            raise ImageTooSmallError(
                f"the image is {width}x{height}; each side must be at least {limits.min_side_px} px"
            )
        try:
            image.load()
        except Exception as exc:  # truncated/corrupt streams raise OSError, SyntaxError, ValueError, …
            raise CorruptImageError(f"the {image.format} data is truncated or corrupt: {exc}") from exc
    # Phone cameras' multi-picture JPEGs open as "MPO"; the first picture is the photo.
    image_format = "JPEG" if image.format == "MPO" else image.format
    return DecodedImage(bgr=_to_bgr(_apply_exif_orientation(image)), format=image_format)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """The image upright, or BadExifError: a face served sideways would be matched (or refused) wrongly."""
    try:
        with warnings.catch_warnings():
            # Pillow reads a damaged EXIF block as empty, or in part, and only warns: the image would
            # pass unrotated. A JPEG's block was read so already at open (for its DPI), and that
            # reading is cached: the raw block is parsed again here, warnings as errors.
            warnings.simplefilter("error")
            raw = image.info.get("exif")
            if isinstance(raw, bytes):
                Image.Exif().load(raw)
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # damaged EXIF raises anything from the TIFF parser, or one of its warnings
        raise BadExifError(f"the EXIF orientation cannot be read: {exc}") from exc
    # 0 is outside the EXIF range but some cameras write it for "unknown"; like Pillow, it means upright.
    if orientation in (0, 1):
        return image
    if orientation not in _UPRIGHT:
        raise BadExifError(f"the EXIF orientation is {orientation!r}, not one of 1-8")
    return image.transpose(_UPRIGHT[orientation])


def _to_bgr(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: keep the top 8 bits instead of letting a cast clip to white.
        grey = np.asarray(image, dtype=np.uint32)
        shift = 8 if image.mode.startswith("I;16") or grey.max(initial=0) > 255 else 0
        grey8 = (grey >> shift).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey8[:, :, None], 3, axis=2))
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_image_file(path: str, limits: ImageLimits) -> DecodedImage:
    """Read and decode an image file with the same limits as a request body."""
    with open(path, "rb") as handle:
        data = handle.read(limits.max_bytes + 1)
    return decode_image(data, limits)
