"""The three ways of turning an encoded frame into detections that the bench compares.

- **ours**: the JPEG goes to the ``detect`` ensemble, the server does everything
  (:class:`EnsembleClient`).
- **naive**: what users build first; the client decodes and letterboxes with OpenCV,
  uploads the raw FP16 tensor to the ``detector`` model alone and runs NMS itself
  (:class:`NaiveClient`).
- **bare**: no server at all; decode, the project's letterbox, a detector runner and the
  project's postprocessing in one in-process loop (:class:`BareLoop`).

Compressed camera video has its own client: **video** sends each H.264/HEVC access unit
undecoded to the ``detect_video`` ensemble, one Triton sequence per camera
(:class:`VideoClient`), as ``camdet ingest`` does.

All three use the same thresholds (the ``postprocess`` config defaults) and return
:class:`FrameDetections`, so tests compare them frame by frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tritonclient.grpc as grpcclient
from camdet.perf.transport import GrpcTransport, InputTransport
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from camdet.contract import (
    ENSEMBLE,
    INPUT,
    NO_FRAME,
    VIDEO_ENSEMBLE,
    Detection,
    FrameDetections,
    detection_colors,
    parse_result,
    parse_video_result,
    requested_outputs,
    video_inputs,
    video_outputs,
)
from camdet.runtime.runners import DetectorRunner

DETECTOR = "detector"
"""The detector step model, which the naive pipeline calls directly."""


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


def postprocess_raw(
    raw: object, sizes: Sequence[tuple[int, int]], images: object = None
) -> list[FrameDetections]:
    """The project's postprocessing (decode, NMS, back to original pixels) on the client.

    Args:
        raw: ``[B, 4 + nc, A]`` head output: numpy (postprocessed without torch, as on a
            CPU server) or torch (with torch, on its device, as on a GPU server).
        sizes: ``(height, width)`` of each original frame, pixels.
        images: ``[B, 3, H, W]`` the detector's input (numpy or torch), for the boxes'
            colours as the server's ``postprocess`` reads them; None: no colours.

    Returns:
        One :class:`FrameDetections` per frame, with the server's default thresholds.
    """
    if isinstance(raw, np.ndarray) and (images is None or isinstance(images, np.ndarray)):
        # The CPU path (numpy, as the server's CPU postprocess gets it): no torch.
        from camdet.steps.postprocess.host import postprocess_host
        from camdet.steps.postprocess.thresholds import Thresholds

        settings = [Thresholds()] * len(raw)
        batch = postprocess_host(raw, np.array(list(sizes), np.int32), settings, images=images)
        return batch.frames()
    import torch

    from camdet.steps.postprocess.detections import postprocess

    # Responses are read-only numpy views: copy rather than alias them into torch.
    raw = raw if isinstance(raw, torch.Tensor) else torch.tensor(np.asarray(raw))
    if images is not None and not isinstance(images, torch.Tensor):
        images = torch.from_numpy(np.asarray(images))
    if images is not None:
        images = images.to(raw.device)
    frames = postprocess(raw, torch.tensor(list(sizes), dtype=torch.int32), images=images)
    return [f.numpy() for f in frames]


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
        return as_arrays(parse_result(self.client.infer(ENSEMBLE, [tensor], outputs=self.outputs)))


def as_arrays(found: Sequence[Detection]) -> FrameDetections:
    """A response's detections as :class:`FrameDetections`."""
    return FrameDetections(
        np.array([d.box for d in found], dtype=np.float32).reshape(-1, 4),
        np.array([d.score for d in found], dtype=np.float32),
        np.array([d.class_id for d in found], dtype=np.int64),
        detection_colors(found),
    )


class VideoClient:
    """video: one camera's access units, in decode order, as a ``detect_video`` sequence.

    The first request starts the sequence (it must carry a keyframe); each frame id is
    the camera's running request count, so it keeps increasing when the clip loops.
    :meth:`close` ends the sequence, which frees the camera's decoder on the server.

    Args:
        client: gRPC client of the server.
        correlation_id: The camera's sequence id, unique among the server's cameras.
        codec: ``"h264"`` or ``"hevc"``.
    """

    def __init__(
        self, client: grpcclient.InferenceServerClient, correlation_id: int, codec: str = "h264"
    ) -> None:
        self.client = client
        self.correlation_id = correlation_id
        self.codec = codec
        self.outputs = video_outputs()
        self._requests = 0
        self._started = False

    def detect(self, access_unit: bytes) -> FrameDetections | None:
        """Send one access unit; the detections of the frame it returns, or None.

        None means the decoder kept the frame for a later response (a camera with
        B-frames); a B-frame-free stream gets each access unit's own frame back.

        Raises:
            tritonclient.utils.InferenceServerException: The server's error.
        """
        frame_pts, found = self._infer(access_unit, self._requests, end=False)
        self._requests += 1
        self._started = True
        return None if frame_pts == NO_FRAME else as_arrays(found)

    def close(self) -> None:
        """End the sequence with an empty flush (its frames, if any, are not awaited)."""
        if self._started:
            with contextlib.suppress(InferenceServerException):  # idle expiry frees it too
                self._infer(b"", NO_FRAME, end=True)
            self._started = False

    def _infer(self, data: bytes, pts: int, end: bool) -> tuple[int, list[Detection]]:
        response = self.client.infer(
            VIDEO_ENSEMBLE,
            video_inputs(data, pts),
            outputs=self.outputs,
            sequence_id=self.correlation_id,
            sequence_start=not self._started,
            sequence_end=end,
            parameters={"codec": self.codec},
        )
        return parse_video_result(response)


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
        return postprocess_raw(result.as_numpy(self.output_name), [size], image[None])[0]


Preprocess = Callable[[Sequence[bytes]], tuple[Any, list[tuple[int, int]]]]
"""Encoded frames -> (``[B, 3, 640, 640]`` FP16 images, ``(height, width)`` per frame)."""


def opencv_preprocess(frames: Sequence[bytes]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The bare loop's default preprocessing: :func:`letterbox_frame` frame by frame."""
    prepared = [letterbox_frame(data) for data in frames]
    return np.stack([image for image, _ in prepared]), [size for _, size in prepared]


class DaliPreprocess:
    """The production ``preprocess/1/dali.py`` run in this process, batch by batch.

    On the CPU (``device_id`` None) it returns numpy; on a GPU, torch CUDA tensors, which
    a GPU detector runner takes as they are.
    """

    name = "dali"

    def __init__(
        self, dali_py: Path, batch_size: int, device_id: int | None = None, num_threads: int = 1
    ) -> None:
        from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module

        module = load_pipeline_module(dali_py)
        self.pipe = build_pipeline(module, batch_size, num_threads, device_id)

    def __call__(self, frames: Sequence[bytes]) -> tuple[Any, list[tuple[int, int]]]:
        """Decode and letterbox one batch (at most the pipeline's batch size)."""
        from camdet.steps.preprocess.pipeline import run_batch

        images, sizes = run_batch(self.pipe, [np.frombuffer(f, dtype=np.uint8) for f in frames])
        images, sizes = images.as_tensor(), np.array(sizes.as_tensor())
        if hasattr(images, "__dlpack_device__") and images.__dlpack_device__()[0] == 2:
            import torch

            images = torch.from_dlpack(images).clone()  # DALI reuses its buffers
        else:
            images = np.array(images)
        return images, [(int(h), int(w)) for h, w in sizes]


class BareLoop:
    """bare: decode, letterbox, detector runner and postprocessing in this process."""

    def __init__(
        self,
        runner: DetectorRunner,
        batch_size: int = 1,
        preprocess: Preprocess = opencv_preprocess,
        preprocess_name: str = "opencv",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.runner = runner
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.preprocess_name = preprocess_name

    def detect_batch(self, frames: Sequence[bytes]) -> list[FrameDetections]:
        """Run one batch of encoded frames through the whole pipeline."""
        images, sizes = self.preprocess(frames)
        return postprocess_raw(self.runner(images), sizes, images)

    def detect(self, frames: Sequence[bytes]) -> list[FrameDetections]:
        """Run any number of frames, ``batch_size`` at a time, in order."""
        found: list[FrameDetections] = []
        for start in range(0, len(frames), self.batch_size):
            found += self.detect_batch(frames[start : start + self.batch_size])
        return found
