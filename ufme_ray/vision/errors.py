"""Typed errors of the vision layer: a stable `code` each; the HTTP layer decides the status."""

from __future__ import annotations


class VisionError(Exception):
    """Base of every error raised by `ufme_ray.vision`."""


class ImageError(VisionError):
    """The client sent an image we refuse; `code` is a stable machine-readable reason."""

    code = "bad_image"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class EmptyImageError(ImageError):
    code = "empty_image"


class UnsupportedImageError(ImageError):
    """Not an image at all, or a format we do not accept."""

    code = "unsupported_image_type"


class CorruptImageError(ImageError):
    """Recognised as an image, but truncated or damaged."""

    code = "corrupt_image"


class BadExifError(ImageError):
    """The EXIF orientation cannot be read: serving the image unrotated could match it sideways."""

    code = "bad_exif"


class ImageTooLargeError(ImageError):
    """Over the byte or pixel limit (decompression bombs land here before any full decode)."""

    code = "image_too_large"


class ImageTooSmallError(ImageError):
    code = "image_too_small"


class ModelLoadError(VisionError):
    """A model file could not be loaded into onnxruntime."""


class QuantizeError(VisionError):
    """An int8 variant cannot be built: a model kind without one, or unusable calibration photos."""
