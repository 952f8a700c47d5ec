"""The torch rendering of the detector ONNX (used on GPUs) equals ONNX Runtime's."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from camdet.torch_runner import GraphRunner, load_detector, load_onnx_as_torch


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
    module = load_detector(onnx_path, device, half=True)
    runner = GraphRunner(module, (3, 640, 640), [1, 8], torch.float16, device)
    assert sorted(runner.graphs) == [1, 8]
    images = torch.rand(5, 3, 640, 640, device=device).half()
    with torch.inference_mode():
        eager = module(images)
    graphed = runner(images)
    assert graphed.shape[0] == 5
    torch.testing.assert_close(graphed, eager, atol=1e-2, rtol=1e-2)


def test_demo_onnx_runs_as_the_native_module(onnx_path: Path) -> None:
    from camdet.detector.model import Detector

    module = load_detector(onnx_path, torch.device("cpu"), half=False)
    assert isinstance(module, Detector)


def test_other_onnx_runs_as_converted(tmp_path: Path) -> None:
    class Head(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = torch.nn.functional.avg_pool2d(x, 8).mean(1).flatten(1)  # [B, 6400]
            scores = torch.cat([pooled, pooled[:, :2000]], 1)
            return torch.stack(
                [
                    scores * 640,
                    scores * 640,
                    scores * 9 + 5,
                    scores * 9 + 5,
                    scores,
                    1 - scores,
                    scores,
                    scores,
                ],
                1,
            )

    path = tmp_path / "other.onnx"
    torch.onnx.export(
        Head(),
        torch.zeros(1, 3, 640, 640),
        path,
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    module = load_detector(path, torch.device("cpu"), half=False)
    images = torch.rand(2, 3, 640, 640)
    expected = ort.InferenceSession(str(path)).run(None, {"images": images.numpy()})[0]
    np.testing.assert_allclose(module(images).numpy(), expected, atol=1e-3)
