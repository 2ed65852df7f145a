"""onnxruntime sessions and the shared pixel-to-tensor preprocessing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ufme_ray.config import RuntimeSettings
from ufme_ray.vision.errors import ModelLoadError
from ufme_ray.vision.manifest import ModelSpec, Preprocess
from ufme_ray.vision.model_store import resolve_model_path

logger = logging.getLogger(__name__)


def load_session(
    model_dir: Path, spec: ModelSpec, runtime: RuntimeSettings, *, dynamic_batch: bool = False
) -> ort.InferenceSession:
    """An onnxruntime CPU session for `spec`, its file found (and checksum-verified) in model_dir.

    dynamic_batch rewrites a graph exported with a fixed batch of 1 so that N crops run in one
    call; see `make_batch_dynamic`. Raises ModelMissingError/ModelCorruptError (model_store) or
    ModelLoadError.
    """
    path = resolve_model_path(model_dir, spec, verify=runtime.verify_checksums)
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # onnxruntime warns about shape hints we rewrite on purpose
    try:
        model: str | bytes = str(path)
        if dynamic_batch:
            model = make_batch_dynamic(onnx.load(str(path))).SerializeToString()
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelLoadError(f"cannot load model {spec.name} from {path}: {exc}") from exc


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


def to_tensor(crops: list[np.ndarray], preprocess: Preprocess) -> np.ndarray:
    """Stack BGR uint8 crops (already at preprocess.size) into the network's float32 input."""
    batch = np.stack(crops).astype(np.float32)
    if preprocess.colour == "rgb":
        batch = batch[..., ::-1]
    batch = (batch - np.asarray(preprocess.mean, dtype=np.float32)) / np.asarray(preprocess.std, dtype=np.float32)
    if preprocess.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
