"""int8 variants of the detector and the embedder: onnxruntime static quantization, calibrated on photos.

Static quantization fixes each activation's int8 range from calibration inputs, so those inputs
must be what inference feeds the session: the detector's letterboxed frame and the embedder's
ArcFace-aligned crop (landmarks from the fp32 detector), both through the same `to_tensor`.
The result is a QDQ graph (QuantizeLinear/DequantizeLinear pairs that onnxruntime's CPU provider
fuses into int8 kernels) written beside the fp32 file and recorded in the folder's local manifest
(`ufme_ray.models.variants`), so it is checksum-verified on load like any packaged model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from ufme_ray.config import ImageLimits, UfmeSettings
from ufme_ray.models.manifest import ModelManifest, ModelSpec
from ufme_ray.models.store import resolve_model_path
from ufme_ray.models.variants import CalibrationPhotos, Variant, record_variant, variant_file, variant_name
from ufme_ray.vision.detector import FaceDetector, letterbox
from ufme_ray.vision.embedder import embedder_crop
from ufme_ray.vision.errors import ImageError, QuantizeError
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.onnx_model import load_session, to_tensor

logger = logging.getLogger(__name__)

QUANTIZABLE_KINDS = ("detector", "embedder")
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
MIN_OPSET = 13


# Activations as uint8 or int8; weights are int8 either way.
Activations = Literal["uint8", "int8"]
ACTIVATION_TYPES: dict[str, QuantType] = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
# uint8 by default: it is onnxruntime's fast int8 path on x86-64 (VPMADDUBSW; VNNI where the CPU has
# it). scripts/bench_int8_formats.py, on an avx512_vnni CPU: MobileFaceNet 2.14x faster than fp32
# with uint8 activations, 0.93x with int8 ones (S8S8, onnxruntime's general advice, the fast path
# on ARM). x86 CPUs without VNNI may saturate in U8S8: compare on your machine with
# scripts/eval_accuracy.py before serving a variant.


def recipe(activations: Activations) -> str:
    """What `quantize_model` does, as the local manifest records it. Weights get one scale per output
    channel: on LFW that kept MobileFaceNet's embeddings at a mean cosine of 0.992 to fp32
    (per-tensor, measured with int8 activations: 0.93, and 1.3-1.7 points of TAR@FAR=1e-3 lost).
    MinMax ranges: the histogram calibrators keep every activation of every input in memory."""
    kind = "U8S8" if activations == "uint8" else "S8S8"
    return f"onnxruntime {ort.__version__} quantize_static QDQ {kind}, per-channel weights, MinMax ranges"


def check_quantizable(spec: ModelSpec) -> None:
    """Raise QuantizeError unless `spec` is an fp32 detector or embedder (the kinds with int8 variants)."""
    if spec.kind not in QUANTIZABLE_KINDS or spec.variant_of is not None:
        what = f"a variant of {spec.variant_of}" if spec.variant_of else f"a {spec.kind}"
        raise QuantizeError(f"model {spec.name} is {what}: only fp32 detectors and embedders get int8 variants")


def calibration_photos(folders: Sequence[Path], count: int | None = None) -> list[Path]:
    """Every photo under `folders` (recursively, sorted); `count` of them spread evenly over the list.

    Spreading (rather than taking the first `count`) keeps every identity folder represented when
    the list is capped. Raises QuantizeError when no photo is found.
    """
    photos = sorted(
        path for folder in folders for path in Path(folder).rglob("*") if path.suffix.lower() in PHOTO_SUFFIXES
    )
    if not photos:
        raise QuantizeError(f"no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) under {', '.join(map(str, folders))}")
    if count is not None and count < len(photos):
        photos = [photos[int(i)] for i in np.linspace(0, len(photos) - 1, count).round()]
    return photos


def photo_list_sha256(photos: Sequence[Path]) -> str:
    """sha256 over "name<TAB>sha256 of the bytes" lines, sorted: the same photos give the same hash
    wherever the folder lives."""
    lines = sorted(f"{path.parent.name}/{path.name}\t{_sha256(path)}" for path in photos)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _decoded(photos: Sequence[Path], desc: str) -> Iterator[np.ndarray]:
    """Each photo's BGR pixels, decoded as a request would be, with a progress bar."""
    limits = ImageLimits()
    # disable=None: tqdm switches itself off when stderr is not a terminal.
    for path in tqdm(photos, desc=desc, unit="photo", disable=None):
        try:
            yield read_image_file(str(path), limits).bgr
        except ImageError as exc:
            raise QuantizeError(f"calibration photo {path}: {exc}") from exc


def detector_inputs(spec: ModelSpec, photos: Sequence[Path]) -> Iterator[np.ndarray]:
    """The (1, 3, H, W) tensor `FaceDetector.detect` feeds its session, one per photo."""
    for image in _decoded(photos, f"calibrating {spec.name}"):
        canvas, _ = letterbox(image, spec.preprocess.size)
        yield to_tensor([canvas], spec.preprocess)


def embedder_inputs(spec: ModelSpec, detector: FaceDetector, photos: Sequence[Path]) -> Iterator[np.ndarray]:
    """The (1, 3, 112, 112) tensor of every face `detector` finds, as `FaceEmbedder.run` builds it."""
    for image in _decoded(photos, f"calibrating {spec.name}"):
        for face in detector.detect(image):
            yield to_tensor([embedder_crop(spec, image, face)], spec.preprocess)


class _CountingReader(CalibrationDataReader):
    """Hands onnxruntime's calibrator one input at a time (never all in memory) and counts them."""

    def __init__(self, input_name: str, tensors: Iterator[np.ndarray]):
        self._input_name = input_name
        self._tensors = tensors
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._tensors, None)
        if tensor is None:
            return None
        self.count += 1
        return {self._input_name: tensor}


def calibration_detector(settings: UfmeSettings, manifest: ModelManifest) -> FaceDetector:
    """The configured detector at fp32: it finds the faces an embedder is calibrated on."""
    spec = manifest.get(settings.models.detector, "detector")
    score_min = settings.thresholds.detection_min
    return FaceDetector(
        spec,
        load_session(settings.model_dir, spec, settings.runtime),
        settings.detection,
        spec.default_threshold if score_min is None else score_min,
    )


def _save_with_opset(source: Path, target: Path) -> None:
    """Copy the graph at `source` to `target`, converted to opset MIN_OPSET if older.

    Per-channel scales need DequantizeLinear's `axis` (opset 13); onnxruntime's quantizer writes it
    whatever the graph's opset, and YuNet and SCRFD are exported at opset 11.
    """
    model = onnx.load(str(source))
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, MIN_OPSET)
    onnx.save(model, str(target))


def quantize_graph(
    base_path: Path,
    out_path: Path,
    tensors: Iterator[np.ndarray],
    *,
    activation_type: QuantType,
    quant_format: QuantFormat = QuantFormat.QDQ,
) -> int:
    """Write the int8 graph of the fp32 graph at `base_path` to `out_path`, its activation ranges
    taken on `tensors` (the session's inputs); returns how many there were (0: nothing written).
    QDQ is `recipe`'s format; scripts/bench_int8_formats.py also times QOperator."""
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quantize.") as work:
        upgraded, prepared = Path(work) / "upgraded.onnx", Path(work) / "prepared.onnx"
        _save_with_opset(base_path, upgraded)
        # Shape inference and graph fusions first, as onnxruntime advises: ranges are then taken on
        # the tensors the int8 kernels will actually see. ONNX's own shape inference suffices for
        # these graphs; the symbolic one would add sympy to the dependencies.
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
        input_name = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        reader = _CountingReader(input_name, tensors)
        try:
            quantize_static(
                str(prepared),
                str(out_path),
                reader,
                quant_format=quant_format,
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except ValueError:  # onnxruntime's "No data is collected."
            if reader.count:
                raise
    return reader.count


def quantize_model(
    model_dir: Path,
    spec: ModelSpec,
    photos: Sequence[Path],
    out_dir: Path,
    detector: FaceDetector | None = None,
    activations: Activations = "uint8",
) -> Variant:
    """Build `spec`'s int8 variant in `out_dir` from its verified fp32 file in `model_dir`, with
    `activations` as `recipe` says; record it.

    `detector` (fp32) finds the faces an embedder is calibrated on. Blocks for one fp32 inference
    per calibration input. Raises QuantizeError (kind without a variant, no usable input), the
    store's ModelMissingError / ModelCorruptError, and OSError when `out_dir` cannot be written.
    """
    check_quantizable(spec)
    if spec.kind == "embedder" and detector is None:
        raise ValueError("an embedder is calibrated on the faces a detector finds: pass the detector")
    base_path = resolve_model_path(model_dir, spec, verify=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    file = variant_file(spec, "int8")
    tensors = detector_inputs(spec, photos) if spec.kind == "detector" else embedder_inputs(spec, detector, photos)
    # The work folder sits in out_dir so the final rename is atomic (same file system).
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{file}.") as work:
        quantized = Path(work) / file
        count = quantize_graph(base_path, quantized, tensors, activation_type=ACTIVATION_TYPES[activations])
        if not count:
            raise QuantizeError(f"{spec.name}: the {len(photos)} calibration photos gave no input")
        os.chmod(quantized, 0o644)
        os.replace(quantized, out_dir / file)
    target = out_dir / file
    variant = Variant(
        name=variant_name(spec.name, "int8"),
        base=spec.name,
        base_sha256=spec.sha256,
        precision="int8",
        file=file,
        sha256=_sha256(target),
        bytes=target.stat().st_size,
        method=recipe(activations),
        calibration=CalibrationPhotos(photos=len(photos), inputs=count, photos_sha256=photo_list_sha256(photos)),
        created=datetime.now(timezone.utc).replace(microsecond=0),
    )
    record_variant(out_dir, variant)
    logger.info("%s: wrote %s (%d bytes) from %d inputs", variant.name, target, variant.bytes, count)
    return variant
