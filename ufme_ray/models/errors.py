"""Typed errors of `ufme_ray.models`: an unknown model name, and every way a model file can fail."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the manifest imports UnknownModelError from here
    from ufme_ray.models.manifest import ModelSpec


class ModelsError(Exception):
    """Base of every error raised by `ufme_ray.models`."""


class UnknownModelError(ModelsError, ValueError):
    """A model name the manifest does not list, or one of another kind than asked for."""


def quantize_command(base: str) -> str:
    """The CLI command that builds (or rebuilds) the int8 variant of model `base`."""
    return f"ufme-ray models quantize --models {base} --photos <folder of face photos>"


def pull_command(spec: ModelSpec, replace: bool = False) -> str:
    """The CLI command that installs `spec`: a pull (`--from` placeholder when it has no upstream,
    `--force` to `replace` a corrupt file), or the quantize that builds a local variant."""
    if spec.variant_of is not None:
        return quantize_command(spec.variant_of)
    mirror = "" if spec.urls else " --from <url|folder|s3://…>"
    return f"ufme-ray models pull {spec.name}{mirror}{' --force' if replace else ''}"


class ModelStoreError(ModelsError):
    """Base of every error about a model file: missing, corrupt, unverifiable or not downloadable."""


class ModelMissingError(ModelStoreError):
    """A model file is not in the model folder."""

    def __init__(self, spec: ModelSpec, path: Path):
        self.name, self.path = spec.name, path
        super().__init__(
            f"model {spec.name}: file {spec.file} not found in {path.parent} (the model folder, set by "
            f"model_dir / UFME_MODEL_DIR); fetch it with `{pull_command(spec)}`"
        )


class ModelCorruptError(ModelStoreError):
    """A model file is present but its sha256 differs from the manifest's."""

    def __init__(self, spec: ModelSpec, path: Path, actual_sha256: str):
        self.name, self.path = spec.name, path
        self.expected_sha256, self.actual_sha256 = spec.sha256, actual_sha256
        super().__init__(
            f"model {spec.name}: {path} is corrupt: sha256 {actual_sha256}, expected {spec.sha256}; "
            f"replace it with `{pull_command(spec, replace=True)}`"
        )


class UnverifiableModelError(ModelStoreError):
    """The manifest lists the model without a sha256, so no file of it can be trusted."""

    def __init__(self, spec: ModelSpec):
        self.name = spec.name
        super().__init__(
            f"model {spec.name} has no sha256 in the manifest: its file cannot be verified, so it is "
            "neither downloaded nor loaded with checksum verification on"
        )


class NoUpstreamError(ModelStoreError):
    """The model has no upstream URL and no mirror was given."""

    def __init__(self, spec: ModelSpec):
        self.name = spec.name
        super().__init__(
            f"{spec.name} has no upstream ONNX file: {spec.distribution}; pull it from a mirror with --from"
        )


class DownloadError(ModelStoreError):
    """Fetching a model file from `url` failed (network, missing object, truncated body, …)."""

    def __init__(self, name: str, url: str, reason: str):
        self.name, self.url, self.reason = name, url, reason
        super().__init__(f"model {name}: download from {url} failed: {reason}")


class HttpStatusError(DownloadError):
    """The HTTP server answered `url` with an error status."""

    def __init__(self, name: str, url: str, status: int):
        self.status = status
        super().__init__(name, url, f"HTTP {status}")


class ChecksumMismatchError(ModelStoreError):
    """A downloaded file's sha256 or byte size differs from the manifest's; the file was discarded."""

    def __init__(self, spec: ModelSpec, url: str, actual_sha256: str, actual_bytes: int):
        self.name, self.url = spec.name, url
        self.expected_sha256, self.actual_sha256 = spec.sha256, actual_sha256
        self.expected_bytes, self.actual_bytes = spec.bytes, actual_bytes
        size = f", {actual_bytes} bytes (expected {spec.bytes})" if spec.bytes not in (None, actual_bytes) else ""
        super().__init__(
            f"model {spec.name}: checksum mismatch for {url}: sha256 {actual_sha256}, "
            f"expected {spec.sha256}{size}; the download was discarded"
        )


class LocalManifestError(ModelStoreError):
    """The model folder's local manifest (models.local.yaml) cannot be read or is invalid."""


class VariantMissingError(ModelStoreError):
    """Settings ask for a precision whose variant of a model is not recorded in the model folder."""

    def __init__(self, base: str, precision: str, model_dir: Path):
        self.name, self.precision = base, precision
        super().__init__(
            f"runtime.precision is {precision}, but {model_dir}/models.local.yaml records no {precision} variant "
            f"of {base}; build one with `{quantize_command(base)}`, or set runtime.precision: fp32"
        )
