"""The torch rendering of the detector ONNX (used on GPUs) equals ONNX Runtime's."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from camdet.runtime.torch_graphs import GraphRunner, load_detector, load_onnx_as_torch


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
    beyond = torch.rand(9, 3, 640, 640, device=device).half()  # above the largest graph
    with torch.inference_mode():
        torch.testing.assert_close(runner(beyond), module(beyond), atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
def test_cuda_graphs_of_the_16_9_export(onnx_16_9: Path) -> None:
    device = torch.device("cuda:0")
    module = load_detector(onnx_16_9, device, half=True, image_shape=(384, 640))
    runner = GraphRunner(module, (3, 384, 640), [1, 4], torch.float16, device)
    assert sorted(runner.graphs) == [1, 4]
    images = torch.rand(3, 3, 384, 640, device=device).half()
    with torch.inference_mode():
        eager = module(images)
    torch.testing.assert_close(runner(images), eager, atol=1e-2, rtol=1e-2)
    assert eager.shape == (3, 8, 5040)


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


@pytest.fixture(scope="module")
def onnx_16_9(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo weights exported for 640x384 (a 16:9 camera's letterbox)."""
    import os
    import subprocess
    import sys

    from camdet.detector.model import DEMO_WEIGHTS

    out = tmp_path_factory.mktemp("export") / "detector-640x384.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "camdet.detector.export", str(DEMO_WEIGHTS), "--out", str(out)],
        env={**os.environ, "CAMDET_INPUT_SIZE": "640x384"},  # read when camdet is imported
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_torch_runner_takes_the_image_size_of_its_onnx(onnx_path: Path, onnx_16_9: Path) -> None:
    from camdet.runtime.runners import TorchRunner, onnx_image_shape

    assert onnx_image_shape(onnx_path) == (640, 640)
    assert onnx_image_shape(onnx_16_9) == (384, 640)
    # On the CPU, as the FP32 reference is (on a GPU the runner would default to FP16 CUDA).
    runner = TorchRunner(onnx_16_9, threads=1, device="cpu")
    assert runner.image_shape == (384, 640)
    raw = runner(np.random.default_rng(0).random((2, 3, 384, 640), np.float32))
    expected = ort.InferenceSession(str(onnx_16_9)).run(
        None, {"images": np.random.default_rng(0).random((2, 3, 384, 640), np.float32)}
    )[0]
    assert tuple(raw.shape) == expected.shape == (2, 8, 5040)  # 4 box + 4 classes, 5040 anchors
    np.testing.assert_allclose(raw.numpy(), expected, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("runner", ["onnxruntime", "torch"])
def test_speed_measures_both_input_sizes_with_either_runner(
    onnx_path: Path, onnx_16_9: Path, runner: str
) -> None:
    import torch

    from camdet.detector.precision_eval import speed

    report = speed([onnx_path, onnx_16_9], batch=2, rounds=2, threads=1, runner=runner)
    # The torch runner takes the GPU where there is one (the H100 ran these, session 12).
    on_gpu = runner == "torch" and torch.cuda.is_available()
    assert report["runner"] == runner and report["device"] == ("cuda" if on_gpu else "cpu")
    files = report["files"]
    assert files[str(onnx_path)]["input_shape"] == [3, 640, 640]
    assert files[str(onnx_16_9)]["input_shape"] == [3, 384, 640]
    for measured in files.values():
        assert len(measured["rounds"]) == 2 and measured["images_per_s"] > 0


def test_the_16_9_demo_export_runs_as_the_native_module(onnx_16_9: Path) -> None:
    from camdet.detector.model import Detector

    # Probed at its own size: at 640x640 the export's 5040-anchor constants cannot run.
    module = load_detector(onnx_16_9, torch.device("cpu"), half=False, image_shape=(384, 640))
    assert isinstance(module, Detector)


def test_onnxruntime_runner_takes_torch_tensors(onnx_path: Path) -> None:
    from camdet.runtime.runners import OnnxRuntimeRunner

    images = torch.rand(2, 3, 640, 640, generator=torch.Generator().manual_seed(1))
    runner = OnnxRuntimeRunner(onnx_path, threads=1)
    np.testing.assert_array_equal(runner(images), runner(images.numpy()))  # a GPU DALI's output
