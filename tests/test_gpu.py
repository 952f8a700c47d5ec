"""The GPU path on a CUDA machine: tensors stay on the GPU, results equal the CPU's.

Run on the GPU machine with ``pytest -m gpu`` (skipped with the reason elsewhere).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from camdet.client.detect import detect

from camdet.geometry import letterbox_image, to_model_input
from camdet.postprocess import postprocess
from camdet.scenes import encode_jpeg, render_frame
from camdet.torch_runner import load_onnx_as_torch

pytestmark = [pytest.mark.gpu, pytest.mark.server]


@pytest.fixture(scope="module")
def client(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


def test_every_step_keeps_tensors_on_the_gpu(server, client) -> None:
    frame = render_frame(np.random.default_rng(0), 1920, 1080)
    assert detect(client, encode_jpeg(frame.image, 90))
    log = server.log_path.read_text()
    assert "preprocess: DALI pipeline on cuda:0" in log
    assert "'preprocessed_image': 'cuda:0'" in log
    assert "detector: input on cuda:0, output on cuda:0" in log
    assert "postprocess: inputs on cuda:0, outputs on cuda:0" in log


def cpu_reference(repository, jpegs: list[bytes]) -> list:
    """OpenCV decode + letterbox, FP32 detector on the CPU, the same postprocessing."""
    module = load_onnx_as_torch(
        repository / "detector/1/model.onnx", torch.device("cpu"), half=False
    )
    images, sizes = [], []
    for data in jpegs:
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        images.append(to_model_input(letterbox_image(rgb), np.float32))
        sizes.append(rgb.shape[:2])
    with torch.inference_mode():
        raw = module(torch.from_numpy(np.stack(images)))
    return postprocess(raw, torch.tensor(sizes))


def test_gpu_results_equal_cpu_results(repository, client) -> None:
    rng = np.random.default_rng(7)
    jpegs = [encode_jpeg(render_frame(rng, 1920, 1080).image, 90) for _ in range(16)]
    expected = cpu_reference(repository, jpegs)
    box_err, score_err, compared = [], [], 0
    for data, ref in zip(jpegs, expected, strict=True):
        got = detect(client, data)
        strong = ref.scores > 0.35  # away from the threshold, both sides must agree
        compared += int(strong.sum())
        for box, score, cls in zip(
            ref.boxes[strong], ref.scores[strong], ref.class_ids[strong], strict=True
        ):
            same = [d for d in got if d.class_id == int(cls)]
            assert same, "a CPU detection has no GPU detection of its class"
            best = min(same, key=lambda d: float(torch.tensor(d.box).sub(box).abs().max()))
            box_err.append(float(torch.tensor(best.box).sub(box).abs().max()))
            score_err.append(abs(best.score - float(score)))
    print(
        f"compared {compared} detections: box error max {max(box_err):.2f} px, "
        f"p99 {np.percentile(box_err, 99):.2f} px; score error max {max(score_err):.4f}"
    )
    assert compared > 30
    assert max(box_err) <= 1.0
    assert max(score_err) <= 0.01
