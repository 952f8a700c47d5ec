"""ModelOpt precision conversion and the input size setting, run with ONNX Runtime on the CPU.

The 500-frame accuracy numbers are recorded once by ``python -m camdet.detector.precision_eval``
(MODEL_CARD.md); here a few frames prove each conversion is a working detector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from camdet.constants import parse_input_size
from camdet.engine.contract import Precision
from camdet.engine.errors import PrecisionConversionError
from camdet.engine.files import file_sha256
from camdet.engine.precision import convert_onnx, set_io_dtype
from camdet.geometry import letterbox_image, to_model_input
from camdet.scenes import render_frame
from tests.helpers.onnx_models import yolo_onnx
from tests.helpers.paths import DEMO_ONNX


def _frames(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = [render_frame(rng, 1280, 720).image for _ in range(count)]
    return np.stack([to_model_input(letterbox_image(i, 640), np.float32) for i in images])


def _run(path: Path, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    result = session.run(None, {inp.name: images.astype(dtype)})[0]
    return result.astype(np.float32), [inp.type, out.type]


@pytest.fixture(scope="module")
def conversions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo detector converted to each precision once, as build_engine.py does."""
    work = tmp_path_factory.mktemp("precision")
    source = work / "model.onnx"
    source.write_bytes(DEMO_ONNX.read_bytes())
    before = file_sha256(source)
    paths = {
        p.value: convert_onnx(
            source,
            work / f"{p.value}.onnx",
            p,
            "TYPE_FP16",
            calibration=lambda: _frames(8, seed=1),
        ).path
        for p in Precision
    }
    assert file_sha256(source) == before, "ModelOpt must not rewrite the source file"
    return paths


@pytest.mark.slow
def test_each_precision_is_a_detector_with_fp16_io(conversions: dict[str, Path]) -> None:
    images = _frames(2, seed=2)
    reference = _run(DEMO_ONNX, images)[0]
    scores = reference[:, 4:].max(axis=1)
    confident = scores > 0.5
    assert confident.sum() > 20, "the frames hold objects the detector finds"
    for name, path in conversions.items():
        out, io_types = _run(path, images)
        assert io_types == ["tensor(float16)", "tensor(float16)"], name
        assert out.shape == reference.shape == (2, 8, 8400)
        # Boxes in input pixels and scores of confident anchors: FP16 I/O rounds boxes to
        # 0.25-0.5 px; INT8 moves them by a few pixels at most.
        box_error = np.abs(out[:, :4] - reference[:, :4]).transpose(0, 2, 1)[confident]
        score_error = np.abs(out[:, 4:].max(axis=1) - scores)[confident]
        limits = {"fp32": (0.5, 1e-3), "fp16": (1.5, 0.01), "int8": (8.0, 0.1)}[name]
        assert np.median(box_error) < limits[0], (name, np.median(box_error))
        assert np.median(score_error) < limits[1], (name, np.median(score_error))


@pytest.mark.slow
def test_int8_is_explicit_qdq_and_fp16_is_autocast(conversions: dict[str, Path]) -> None:
    ops = {
        name: {n.op_type for n in onnx.load(str(path)).graph.node}
        for name, path in conversions.items()
    }
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops["int8"]
    assert not {"QuantizeLinear", "DequantizeLinear"} & (ops["fp16"] | ops["fp32"])
    fp16 = onnx.load(str(conversions["fp16"]))
    halves = [i for i in fp16.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > len(fp16.graph.initializer) // 2, "AutoCast stored the weights in FP16"


def test_converted_file_is_reused_and_int8_needs_frames(tmp_path: Path) -> None:
    source = yolo_onnx(tmp_path / "head.onnx")
    out = tmp_path / "fp32.onnx"
    first = convert_onnx(source, out, Precision.FP32, "TYPE_FP16")
    again = convert_onnx(source, out, Precision.FP32, "TYPE_FP16")
    assert (first.reused, again.reused, again.sha256) == (False, True, first.sha256)
    with pytest.raises(PrecisionConversionError, match="INT8 needs calibration frames"):
        convert_onnx(source, tmp_path / "int8.onnx", Precision.INT8, "TYPE_FP16")


def test_set_io_dtype_casts_both_ways(tmp_path: Path) -> None:
    source = yolo_onnx(tmp_path / "head.onnx")
    model = set_io_dtype(onnx.load(str(source)), "TYPE_FP16")
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "half.onnx"))
    images = _frames(1)
    half, io_types = _run(tmp_path / "half.onnx", images)
    assert io_types == ["tensor(float16)", "tensor(float16)"]
    np.testing.assert_allclose(half, _run(source, images)[0], atol=2e-3)
    back = set_io_dtype(model, "TYPE_FP32")
    assert back.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_parse_input_size() -> None:
    assert parse_input_size("640x384") == (384, 640)
    assert parse_input_size("640") == (640, 640)
    with pytest.raises(ValueError, match="multiples of 32"):
        parse_input_size("640x360")
    with pytest.raises(ValueError, match="not WIDTHxHEIGHT"):
        parse_input_size("wide")


@pytest.mark.slow
def test_640x384_reaches_the_dali_graph_and_postprocess(repository: Path) -> None:
    """One setting, CAMDET_INPUT_SIZE, sizes the production DALI graph and the inverse."""
    script = f"""
import json, numpy as np, cv2, torch
from camdet.constants import INPUT_SHAPE
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch
from camdet.geometry import letterbox_image, to_model_input
from camdet.steps.postprocess.detections import postprocess
frame = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
ok, jpeg = cv2.imencode(".png", frame[..., ::-1])
module = load_pipeline_module({str(repository / "preprocess/1/dali.py")!r})
pipe = build_pipeline(module, batch_size=1, num_threads=1, device_id=None)
image, size = run_batch(pipe, [np.frombuffer(jpeg.tobytes(), np.uint8)])
image = np.array(image.as_tensor())[0]
ref = to_model_input(letterbox_image(frame)).astype(np.float32)
head = torch.zeros(1, 5, 5040); head[0, :4, 0] = torch.tensor([320.0, 192.0, 64.0, 36.0])
head[0, 4, 0] = 0.9
det = postprocess(head, torch.tensor([[1080, 1920]]))[0]
print(json.dumps({{"shape": list(INPUT_SHAPE), "dali": list(image.shape),
    "diff": float(np.abs(image.astype(np.float32) - ref).mean() * 255),
    "box": det.boxes[0].tolist()}}))
"""
    env = dict(os.environ, CAMDET_INPUT_SIZE="640x384")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["shape"] == [384, 640]
    assert result["dali"] == [3, 384, 640]
    assert result["diff"] < 0.5
    # center (320, 192) in input pixels is the frame's center; 64x36 px -> 192x108 px
    np.testing.assert_allclose(result["box"], [864.0, 486.0, 1056.0, 594.0], atol=0.01)
