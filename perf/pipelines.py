"""The three ways of turning an encoded frame into detections that the bench compares.

- **ours**: the JPEG goes to the ``detect`` ensemble, the server does everything
  (:class:`EnsembleClient`).
- **naive**: what users build first; the client decodes and letterboxes with OpenCV,
  uploads the raw FP16 tensor to the ``detector`` model alone and runs NMS itself
  (:class:`NaiveClient`).
- **bare**: no server at all; decode, the project's letterbox, a detector runner and the
  project's postprocessing in one in-process loop (:class:`BareLoop`).

All three use the same thresholds (the ``postprocess`` config defaults) and return
:class:`FrameDetections`, so tests compare them frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from camdet.client.detect import ENSEMBLE, INPUT, parse_result, requested_outputs
from camdet.perf.runners import DetectorRunner
from camdet.perf.transport import GrpcTransport, InputTransport
from tritonclient.utils import triton_to_np_dtype

DETECTOR = "detector"
"""The detector step model, which the naive pipeline calls directly."""


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame, as plain arrays.

    Attributes:
        boxes: ``[n, 4]`` float32 xyxy in original frame pixels.
        scores: ``[n]`` float32, descending.
        class_ids: ``[n]`` int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def decode_frame(data: bytes) -> np.ndarray:
    """Decode a JPEG/PNG to ``[H, W, 3]`` uint8 RGB with OpenCV.

    Raises:
        ValueError: If OpenCV cannot decode the bytes.
    """
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("OpenCV cannot decode the frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def letterbox_frame(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """The client-side preprocessing: OpenCV decode + the project's reference letterbox.

    Returns:
        ``([3, 640, 640]`` FP16 in [0, 1], ``(height, width)`` of the original frame, px).
    """
    from camdet.geometry import letterbox_image, to_model_input

    image = decode_frame(data)
    return to_model_input(letterbox_image(image)), (image.shape[0], image.shape[1])


def postprocess_raw(raw: object, sizes: Sequence[tuple[int, int]]) -> list[FrameDetections]:
    """The project's postprocessing (decode, NMS, back to original pixels) on the client.

    Args:
        raw: ``[B, 4 + nc, A]`` head output (numpy or torch).
        sizes: ``(height, width)`` of each original frame, pixels.

    Returns:
        One :class:`FrameDetections` per frame, with the server's default thresholds.
    """
    import torch

    from camdet.postprocess import postprocess

    # Responses are read-only numpy views: copy rather than alias them into torch.
    raw = raw if isinstance(raw, torch.Tensor) else torch.tensor(np.asarray(raw))
    frames = postprocess(raw, torch.tensor(list(sizes), dtype=torch.int32))
    return [
        FrameDetections(
            f.boxes.cpu().numpy(),
            f.scores.cpu().numpy(),
            f.class_ids.cpu().numpy().astype(np.int64),
        )
        for f in frames
    ]


class EnsembleClient:
    """ours: one JPEG per request to the ``detect`` ensemble."""

    def __init__(
        self, client: grpcclient.InferenceServerClient, transport: InputTransport | None = None
    ) -> None:
        self.client = client
        self.transport = transport or GrpcTransport()
        self.outputs = requested_outputs()

    def detect(self, data: bytes) -> FrameDetections:
        """Send one encoded frame; the server decodes, detects and runs NMS.

        Raises:
            tritonclient.utils.InferenceServerException: The server's error.
        """
        tensor = self.transport.tensor(INPUT, np.frombuffer(data, dtype=np.uint8)[None])
        found = parse_result(self.client.infer(ENSEMBLE, [tensor], outputs=self.outputs))
        return FrameDetections(
            np.array([d.box for d in found], dtype=np.float32).reshape(-1, 4),
            np.array([d.score for d in found], dtype=np.float32),
            np.array([d.class_id for d in found], dtype=np.int64),
        )


class NaiveClient:
    """naive: OpenCV letterbox on the client, raw FP16 to ``detector``, NMS on the client.

    Tensor names and the input dtype come from the server's own detector config.
    """

    def __init__(
        self, client: grpcclient.InferenceServerClient, transport: InputTransport | None = None
    ) -> None:
        config = client.get_model_config(DETECTOR, as_json=True)["config"]
        self.client = client
        self.transport = transport or GrpcTransport()
        self.input_name = config["input"][0]["name"]
        self.input_dtype = np.dtype(triton_to_np_dtype(config["input"][0]["data_type"][5:]))
        self.output_name = config["output"][0]["name"]
        self.outputs = [grpcclient.InferRequestedOutput(self.output_name)]

    def detect(self, data: bytes) -> FrameDetections:
        """Preprocess here, infer the detector alone on the server, postprocess here."""
        image, size = letterbox_frame(data)
        tensor = self.transport.tensor(self.input_name, image[None].astype(self.input_dtype))
        result = self.client.infer(DETECTOR, [tensor], outputs=self.outputs)
        return postprocess_raw(result.as_numpy(self.output_name), [size])[0]


class BareLoop:
    """bare: decode, letterbox, detector runner and postprocessing in this process."""

    def __init__(self, runner: DetectorRunner, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.runner = runner
        self.batch_size = batch_size

    def detect_batch(self, frames: Sequence[bytes]) -> list[FrameDetections]:
        """Run one batch of encoded frames through the whole pipeline."""
        prepared = [letterbox_frame(data) for data in frames]
        images = np.stack([image for image, _ in prepared])
        return postprocess_raw(self.runner(images), [size for _, size in prepared])

    def detect(self, frames: Sequence[bytes]) -> list[FrameDetections]:
        """Run any number of frames, ``batch_size`` at a time, in order."""
        found: list[FrameDetections] = []
        for start in range(0, len(frames), self.batch_size):
            found += self.detect_batch(frames[start : start + self.batch_size])
        return found
