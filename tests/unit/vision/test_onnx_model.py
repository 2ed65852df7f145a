"""Sessions: batched runs equal one-by-one runs; a missing or corrupt file is refused by the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ufme_ray.models.errors import ModelCorruptError, ModelMissingError
from ufme_ray.models.manifest import Preprocess, packaged_manifest
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.onnx_model import load_session, to_tensor

YUNET = packaged_manifest().get("yunet_2023mar")


def test_batched_inference_equals_one_by_one(pipeline, faces_dir: Path):
    """The batch-dynamic graph rewrite must not change a single output."""
    images = [read_image_file(str(p), pipeline.settings.image).bgr for p in sorted(faces_dir.glob("lfw/A*/*_0001.jpg"))]
    located = [(img, pipeline.detector.detect(img)[0]) for img in images]
    assert len(located) >= 4
    for stage in (pipeline.embedder, pipeline.liveness, pipeline.quality):
        crops = [stage.crop(img, face) for img, face in located]
        batched = stage.run(crops)
        single = np.concatenate([stage.run([crop]) for crop in crops])
        assert np.allclose(batched, single, atol=1e-5)


def test_a_missing_file_says_how_to_fetch_it(settings, tmp_path: Path):
    with pytest.raises(ModelMissingError, match="`ufme-ray models pull yunet_2023mar`"):
        load_session(tmp_path, YUNET, settings.runtime)


def test_a_corrupt_file_is_never_loaded(settings, tmp_path: Path):
    path = Path(shutil.copyfile(settings.model_dir / YUNET.file, tmp_path / YUNET.file))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ModelCorruptError, match="sha256"):
        load_session(tmp_path, YUNET, settings.runtime)


@pytest.mark.parametrize(("spin", "entry"), [(False, "0"), (True, "1")])
def test_idle_threads_spin_only_when_the_settings_say(settings, spin: bool, entry: str):
    """onnxruntime spins by default; the chain's five sessions then take each other's cores."""
    session = load_session(settings.model_dir, YUNET, settings.runtime.model_copy(update={"spin_threads": spin}))
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == entry


def test_a_size_dynamic_graph_computes_what_the_fixed_one_does(settings):
    """YuNet 2023mar is exported for 640x640; rewritten, it takes 640x480 and its 640x640 outputs are unchanged."""
    fixed = load_session(settings.model_dir, YUNET, settings.runtime)
    dynamic = load_session(settings.model_dir, YUNET, settings.runtime, dynamic_size=True)
    assert fixed.get_inputs()[0].shape == [1, 3, 640, 640]
    assert dynamic.get_inputs()[0].shape == [1, 3, "height", "width"]
    frame = np.random.default_rng(3).integers(0, 256, (1, 3, 640, 640)).astype(np.float32)
    for a, b in zip(fixed.run(None, {"input": frame}), dynamic.run(None, {"input": frame})):
        assert np.array_equal(a, b)
    cls_8 = dynamic.run(["cls_8"], {"input": frame[:, :, :480]})[0]
    assert cls_8.shape == (1, (480 // 8) * (640 // 8), 1)


def _reference_tensor(crops: list[np.ndarray], preprocess: Preprocess) -> np.ndarray:
    """The definition: float32 pixels in `colour` order, `(pixel - mean) / std`, in `layout`."""
    batch = np.stack(crops).astype(np.float32)
    if preprocess.colour == "rgb":
        batch = batch[..., ::-1]
    batch = (batch - np.float32(preprocess.mean)) / np.float32(preprocess.std)
    return batch.transpose(0, 3, 1, 2) if preprocess.layout == "nchw" else batch


@pytest.mark.parametrize("colour", ["rgb", "bgr"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize(("mean", "std"), [((0, 0, 0), (1, 1, 1)), ((127.5, 127.5, 127.5), (128, 128, 128)), ((104, 117, 123), (58.4, 57.1, 57.4))])
def test_to_tensor_is_the_definition_bit_for_bit(colour, layout, mean, std):
    rng = np.random.default_rng(7)
    crops = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(3)]
    preprocess = Preprocess(size=(4, 5), colour=colour, mean=mean, std=std, layout=layout)
    tensor = to_tensor(crops, preprocess)
    assert tensor.dtype == np.float32 and tensor.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(tensor, _reference_tensor(crops, preprocess))
