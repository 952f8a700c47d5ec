"""The torch rendering of the detector ONNX (used on GPUs) equals ONNX Runtime's."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from camdet.torch_runner import GraphRunner, load_onnx_as_torch


@pytest.fixture(scope="module")
def onnx_path(repository: Path) -> Path:
    return repository / "detector/1/model.onnx"


def test_onnx2torch_matches_onnxruntime_on_cpu(onnx_path: Path) -> None:
    module = load_onnx_as_torch(onnx_path, torch.device("cpu"), half=False)
    runner = GraphRunner(module, (3, 640, 640), [1, 4], torch.float32, torch.device("cpu"))
    images = torch.rand(3, 3, 640, 640, generator=torch.Generator().manual_seed(0))
    expected = ort.InferenceSession(str(onnx_path)).run(None, {"images": images.numpy()})[0]
    got = runner(images).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-3)


@pytest.mark.gpu
def test_cuda_graphs_match_eager_fp16(onnx_path: Path) -> None:
    device = torch.device("cuda:0")
    module = load_onnx_as_torch(onnx_path, device, half=True)
    runner = GraphRunner(module, (3, 640, 640), [1, 8], torch.float16, device)
    images = torch.rand(5, 3, 640, 640, device=device).half()
    with torch.inference_mode():
        eager = module(images)
    graphed = runner(images)
    assert graphed.shape[0] == 5
    torch.testing.assert_close(graphed, eager, atol=1e-2, rtol=1e-2)
