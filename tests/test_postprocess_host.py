"""The torch-free CPU postprocess gives the torch path's detections (issue #25, item 4).

Both paths run on the demo detector's real head output for synthetic scenes (ONNX Runtime,
FP16 as served), with per-frame thresholds that differ within the batch. Boxes, scores,
class ids, labels' ids, the kept set and its order must be equal; boxes to 1e-4 px (they
are in fact bit-identical: the same float32 operations in the same order).

Colours: ONNX Runtime's ``RoiAlign`` equals torchvision's ``roi_align`` in float32 to 1e-6.
The torch path reads FP16 images with its box corners rounded to FP16 (0.25 px steps from
256 px, 0.5 px from 512 px) and sums the 64 samples in FP16, so against it the CPU path's
float32 colours differ by up to :data:`FP16_COLOR_TOLERANCE` for the scenes' detections
(measured 2.5e-3 to 4.8e-3: about one step of an 8-bit channel, far below what the
tracker's colour cue tells apart), and by up to :data:`FP16_JUNK_COLOR_TOLERANCE` for the
frame that keeps every anchor (measured 0.058: boxes of a few pixels, where a quarter-pixel
shift of a corner moves the samples onto other pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from camdet.geometry import letterbox_image, to_model_input
from camdet.runtime.runners import OnnxRuntimeRunner
from camdet.scenes import render_frame
from camdet.steps.postprocess.host import HostDetections, postprocess_host
from camdet.steps.postprocess.thresholds import Thresholds

torch = pytest.importorskip("torch", reason="the torch path is the reference (camdet[gpu])")
detections = pytest.importorskip("camdet.steps.postprocess.detections")

FP16_COLOR_TOLERANCE = 1e-2
"""Largest colour difference to the torch path's FP16 ``roi_align`` (see the docstring)."""
FP16_JUNK_COLOR_TOLERANCE = 0.1
"""The same for the frame of every anchor (confidence 0), tiny boxes included."""

SIZES = [(720, 1280), (480, 640), (1080, 1920), (600, 600), (1280, 720), (0, 0)]
"""Original frame sizes (height, width), px; 0 x 0 is a video placeholder (no detections)."""

SETTINGS = [
    Thresholds(),
    Thresholds(0.01, 0.7, 300),  # many candidates, many equal FP16 scores
    Thresholds(0.05, 0.45, 7),  # another IoU in the same batch; top-k cuts the list
    Thresholds(0.25, 0.7, 0),
    Thresholds(0.0, 1.0, 30000),  # every anchor a candidate; IoU 1 suppresses nothing
    Thresholds(),
]


@pytest.fixture(scope="module")
def batch(repository: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(raw [B, 4 + nc, A] FP16, sizes [B, 2] int32, images [B, 3, H, W] FP16)``."""
    rng = np.random.default_rng(25)
    images = []
    for height, width in SIZES:
        frame = render_frame(rng, max(width, 32), max(height, 32)).image
        images.append(to_model_input(letterbox_image(frame)))
    images = np.stack(images)
    runner = OnnxRuntimeRunner(repository / "detector" / "1" / "model.onnx", threads=1)
    raw = np.asarray(runner(images)).astype(np.float16)  # the detector config's FP16
    return raw, np.array(SIZES, np.int32), images


def _torch_path(raw: np.ndarray, sizes: np.ndarray, images: np.ndarray) -> object:
    return detections.postprocess_flat(
        torch.from_numpy(raw), torch.from_numpy(sizes), SETTINGS, images=torch.from_numpy(images)
    )


def _assert_same_detections(host: HostDetections, reference: object) -> None:
    assert host.counts == reference.counts
    assert np.array_equal(host.class_ids, reference.class_ids.numpy())
    assert np.array_equal(host.scores, reference.scores.numpy())  # same set, same order
    np.testing.assert_allclose(host.boxes, reference.boxes.numpy(), rtol=0, atol=1e-4)


def test_cpu_path_equals_torch_path_on_real_detections(batch: tuple) -> None:
    raw, sizes, images = batch
    host = postprocess_host(raw, sizes, SETTINGS, images=images)
    reference = _torch_path(raw, sizes, images)
    _assert_same_detections(host, reference)
    assert sum(host.counts) > 100, host.counts  # the comparison has substance
    assert host.counts[3] == 0 and host.counts[5] == 0  # max_detections 0, placeholder
    assert host.counts[2] == 7
    starts = np.cumsum([0, *host.counts])
    for frame, setting in enumerate(SETTINGS):
        rows = slice(starts[frame], starts[frame + 1])
        tolerance = FP16_JUNK_COLOR_TOLERANCE if setting.confidence == 0 else FP16_COLOR_TOLERANCE
        difference = np.abs(host.colors[rows] - reference.colors.numpy()[rows])
        assert difference.max(initial=0) <= tolerance, (frame, difference.max())


def test_colors_equal_roi_align_in_float32(batch: tuple) -> None:
    raw, sizes, images = batch
    images32 = images.astype(np.float32)
    host = postprocess_host(raw, sizes, SETTINGS, images=images32)
    reference = _torch_path(raw, sizes, images32)
    _assert_same_detections(host, reference)
    np.testing.assert_allclose(host.colors, reference.colors.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_cpu_path_equals_torch_path_on_random_heads(seed: int) -> None:
    """Boxes left of and above the input (negative coordinates), ties, several classes."""
    rng = np.random.default_rng(seed)
    frames, classes, anchors = 3, int(rng.integers(1, 6)), 3000
    raw = np.zeros((frames, 4 + classes, anchors), np.float32)
    raw[:, :2] = rng.uniform(-40, 680, (frames, 2, anchors))
    raw[:, 2:4] = rng.uniform(1, 200, (frames, 2, anchors))
    raw[:, 4:] = rng.random((frames, classes, anchors)) ** 4
    raw = raw.astype(np.float16)
    sizes = np.array([[720, 1280], [480, 640], [1080, 1920]], np.int32)
    settings = [Thresholds(0.1, 0.5, 300), Thresholds(0.3, 0.7, 50), Thresholds(0.1, 0.5, 5)]
    host = postprocess_host(raw, sizes, settings)
    reference = detections.postprocess_flat(
        torch.from_numpy(raw), torch.from_numpy(sizes), settings
    )
    _assert_same_detections(host, reference)
    assert host.colors is None


def test_empty_batch_and_no_candidates() -> None:
    empty = postprocess_host(np.zeros((0, 6, 100), np.float16), np.zeros((0, 2)), [])
    assert empty.counts == [] and empty.boxes.shape == (0, 4)
    images = np.zeros((1, 3, 64, 64), np.float16)
    none = postprocess_host(
        np.zeros((1, 6, 100), np.float16), np.array([[64, 64]]), [Thresholds()], images=images
    )
    assert none.counts == [0] and none.colors.shape == (0, 3)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="4 \\+ nc >= 5 rows"):
        postprocess_host(np.zeros((1, 4, 10)), np.array([[1, 1]]), [Thresholds()])
    with pytest.raises(ValueError, match="batch of 1 with 2 sizes and 1 thresholds"):
        postprocess_host(np.zeros((1, 6, 10)), np.zeros((2, 2)), [Thresholds()])


def test_the_served_copy_to_the_host_equals_the_flat_detections(batch: tuple) -> None:
    # postprocess_to_host drops what max_detections cuts on the host (fewer GPU waits).
    raw, sizes, images = batch
    args = (torch.from_numpy(raw), torch.from_numpy(sizes), SETTINGS)
    served = detections.postprocess_to_host(*args, torch.from_numpy(images))
    reference = _torch_path(raw, sizes, images)
    assert served.counts == reference.counts
    assert served.counts[2] == 7  # top-k cut the list of that frame
    assert np.array_equal(served.class_ids, reference.class_ids.numpy())
    assert np.array_equal(served.scores, reference.scores.numpy())
    assert np.array_equal(served.boxes, reference.boxes.numpy())
    assert np.array_equal(served.colors, reference.colors.numpy())
