"""onnxruntime sessions, the shared pixel-to-tensor preprocessing, and the base of the per-face models.

Each per-face model (quality, liveness, morph, embedder) owns one session and splits its work in
two so a serving layer can batch across requests:
- `crop(image_bgr, face)`: cheap, pure NumPy/OpenCV, returns the model-ready uint8 crop;
- `run(crops)`: one session call for N crops, returns N scores (or vectors).

Sessions run on the execution providers the settings ask for the model's stage
(`RuntimeSettings.providers_for`), less those this onnxruntime lacks; each model reports what its
session got (`providers`), since onnxruntime itself falls back to CPU when a provider fails to start.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ufme_ray import execution_providers
from ufme_ray.config import RuntimeSettings
from ufme_ray.execution_providers import Provider
from ufme_ray.models.manifest import ModelSpec, Preprocess
from ufme_ray.models.store import resolve_model_path
from ufme_ray.vision.errors import ModelLoadError

logger = logging.getLogger(__name__)


def load_session(
    model_dir: Path, spec: ModelSpec, runtime: RuntimeSettings, *, dynamic_batch: bool = False,
    dynamic_size: bool = False,
) -> ort.InferenceSession:
    """An onnxruntime session for `spec`, its file found (and checksum-verified) in model_dir, on the
    providers its stage asks for that this onnxruntime has (CPU always last).

    dynamic_batch rewrites a graph exported with a fixed batch of 1 so that N crops run in one
    call; see `make_batch_dynamic`. dynamic_size lets a graph exported for one image size take any
    (`make_size_dynamic`). Raises the store's ModelMissingError, ModelCorruptError or
    UnverifiableModelError (all `ufme_ray.models.errors.ModelsError`), or ModelLoadError.
    """
    path = resolve_model_path(model_dir, spec, verify=runtime.verify_checksums)
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if runtime.spin_threads else "0")
    options.log_severity_level = 3  # onnxruntime warns about shape hints we rewrite on purpose
    asked = runtime.providers_for(spec.kind)
    providers = _session_providers(spec.name, asked)
    try:
        model: str | bytes = str(path)
        if dynamic_batch or dynamic_size:
            graph = onnx.load(str(path))
            if dynamic_batch:
                make_batch_dynamic(graph)
            if dynamic_size:
                make_size_dynamic(graph, spec.preprocess.layout)
            model = graph.SerializeToString()
        session = ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelLoadError(f"cannot load model {spec.name} from {path}: {exc}") from exc
    got, asked_names = session.get_providers(), execution_providers.names(asked)
    # onnxruntime itself drops a provider that fails to start (no visible device, missing CUDA
    # libraries), saying so only on stdout ("EP Error"): what the session got is the truth.
    failed = [name for name in execution_providers.names(providers) if name not in got]
    if failed:
        logger.warning(
            "model %s: providers %s (asked %s; onnxruntime could not start %s)", spec.name, got, asked_names, failed
        )
    else:
        logger.info("model %s: providers %s (asked %s)", spec.name, got, asked_names)
    return session


def _session_providers(model: str, asked: list[Provider]) -> list[str | tuple[str, dict]]:
    """`asked` less what this onnxruntime lacks, CPU last, in the form `InferenceSession` takes;
    one warning naming the model when something asked for is skipped."""
    available = ort.get_available_providers()
    chosen = execution_providers.choose(asked, available)
    skipped = [name for name in execution_providers.names(asked) if name not in available]
    if skipped:
        logger.warning(
            "model %s: execution providers %s are not available in this onnxruntime (it has %s); falling back to %s",
            model, skipped, available, execution_providers.names(chosen),
        )
    if execution_providers.NVIDIA & set(execution_providers.names(chosen)):
        _preload_cuda_libraries()
    return [p if isinstance(p, str) else (p[0], dict(p[1])) for p in chosen]


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels of onnxruntime-gpu[cuda,cudnn], which the Linux
    loader does not search; where they are absent, libraries on the loader's path are used."""
    ort.preload_dlls()


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Make a graph exported with batch size 1 accept any batch size.

    Exporters often freeze dim 0 of inputs/outputs to 1 and flatten with Reshape([1, -1]).
    Marking dim 0 symbolic and turning a constant leading 1 of every Reshape target into 0
    ("copy the input's dim 0") keeps the maths identical (tests compare N=1 and N>1 outputs).
    """
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]  # stale intermediate shapes would pin the batch again
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    constants = {node.output[0]: node.attribute[0].t for node in model.graph.node if node.op_type == "Constant"}
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        target = initializers.get(node.input[1])
        if target is None:
            target = constants.get(node.input[1])
        if target is None:
            continue
        shape = numpy_helper.to_array(target).copy()
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            shape[0] = 0
            target.CopyFrom(numpy_helper.from_array(shape, target.name))
    return model


def make_size_dynamic(model: onnx.ModelProto, layout: str) -> onnx.ModelProto:
    """Let a fully convolutional graph exported for one image size (YuNet 2023mar: 640x640) take any.

    Its operators do not depend on the size (convolutions, pooling, Resize by scale, Reshape to
    [1, -1, C]); only the declared shapes pin it. The input's height and width and every output
    dim become symbolic, and the stale intermediate shapes go. Graphs already dynamic are unchanged.
    """
    spatial = (2, 3) if layout == "nchw" else (1, 2)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for index, name in zip(spatial, ("height", "width")):
        dims[index].dim_param = name
    for output in model.graph.output:
        for index, dim in enumerate(output.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dim.dim_param = f"{output.name}_{index}"
    del model.graph.value_info[:]
    return model


def to_tensor(crops: list[np.ndarray], preprocess: Preprocess) -> np.ndarray:
    """Stack BGR uint8 crops (already at preprocess.size) into the network's float32 input.

    Channel order and layout are views of the uint8 stack; one pass casts them into the contiguous
    float32 input, and mean and std apply in place (skipped when they change nothing). Three fewer
    float passes than casting first: 7.7 -> 0.7 ms for YuNet's 640x640 input (2-core dev machine).
    """
    batch = np.stack(crops)
    if preprocess.colour == "rgb":
        batch = batch[..., ::-1]
    channels = (1, 3, 1, 1) if preprocess.layout == "nchw" else (3,)
    if preprocess.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    tensor = np.ascontiguousarray(batch, dtype=np.float32)
    if any(preprocess.mean):
        tensor -= np.asarray(preprocess.mean, dtype=np.float32).reshape(channels)
    if any(value != 1 for value in preprocess.std):
        tensor /= np.asarray(preprocess.std, dtype=np.float32).reshape(channels)
    return tensor


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class OnnxModel:
    """A per-face model of manifest kind `expected_kind` on one session; subclasses add crop and run."""

    expected_kind: str

    def __init__(self, spec: ModelSpec, session: ort.InferenceSession):
        if spec.kind != self.expected_kind:
            raise ValueError(f"model {spec.name} is a {spec.kind}, not a {self.expected_kind}")
        self.spec = spec
        self.session = session
        self._input_name = session.get_inputs()[0].name

    @property
    def providers(self) -> dict[str, list[str]]:
        """Model name -> the execution providers its session got, most preferred first."""
        return {self.spec.name: self.session.get_providers()}

    def _infer(self, crops: list[np.ndarray]) -> np.ndarray:
        """The first output for a batch of crops."""
        return self.session.run(None, {self._input_name: to_tensor(crops, self.spec.preprocess)})[0]


class ScoreModel(OnnxModel):
    """A model that gives one float32 score per crop; subclasses read it off the raw output."""

    def run(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.float32)
        return self._scores(self._infer(crops)).astype(np.float32)

    def _scores(self, outputs: np.ndarray) -> np.ndarray:
        """One score per row of `outputs` (the first output; dim 0 is the batch)."""
        raise NotImplementedError
