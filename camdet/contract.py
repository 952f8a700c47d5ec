"""The wire contract of camdet: model, ensemble and tensor names, defaults, ``Detection``.

The client, the benchmarks, the doctor and the Triton models import their names from
here; ``model_repository/*/config.pbtxt`` owns dtypes and dims (tests tie the two).
tritonclient's gRPC module is imported only by the functions that build requests, so the
Python-backend models can read the names without it.

``detect`` takes one encoded frame per request (``encoded_image``, UINT8 ``[1, bytes]``)
and answers that frame's detections. Per-request thresholds travel as request parameters
(``confidence_threshold``, ``iou_threshold``, ``max_detections``).

``detect_video`` takes one H.264/HEVC access unit per request (``video_chunk``, UINT8
``[1, bytes]``, Annex-B; 0 bytes flush the decoder) with the client's id of the frame
(``pts``, INT64 ``[1, 1]``) and the ``codec`` request parameter, as one Triton sequence per
camera. Its decoder lags behind on streams with B-frames, so a response carries the
detections of the frame whose id it echoes in ``frame_pts`` (INT64 ``[1, 1]``; -1: no
frame came out yet), with the same outputs as ``detect``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tritonclient.grpc as grpcclient

ENSEMBLE = "detect"
INPUT = "encoded_image"
OUTPUTS = ("boxes", "scores", "class_ids", "labels", "num_detections", "damaged", "colors")
VIDEO_ENSEMBLE = "detect_video"
VIDEO_INPUT = "video_chunk"
PTS_INPUT = "pts"
FRAME_PTS_OUTPUT = "frame_pts"
NO_FRAME = -1
"""``frame_pts`` of a response that carries no frame (the decoder has none ready)."""
DEFAULT_URL = os.environ.get("CAMDET_URL", "localhost:8001")
"""gRPC endpoint of the server; ``CAMDET_URL`` overrides ``localhost:8001``."""
STEP_BATCHES_METRIC = "camdet_step_batches_total"
"""Per-step batches by the devices of their tensors (``DeviceStats`` in triton_models)."""
STEP_SECONDS_METRIC = "camdet_step_seconds_total"
"""Per-step seconds by phase of ``execute`` (reading inputs, computing, answering)."""


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        box: (x1, y1, x2, y2) in original frame pixels.
        score: Class score in [0, 1].
        class_id: Class index.
        label: Class name from the server's labels file.
        track_id: Id of the object's track in its camera, stable while the object is
            followed (see :mod:`camdet.client.tracks`); None: tracking off, or no
            confirmed track yet (an object's first frame, a weak detection).
        color: Mean (R, G, B) in [0, 1] of the central half of the box, which the server
            reads from the frame: the tracker's appearance cue. None when the response
            has no ``colors`` (a request that did not ask for it). Not in :meth:`as_dict`.
    """

    box: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str
    track_id: int | None = None
    color: tuple[float, float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (box rounded to 0.1 px, score to 1e-4; ``track_id`` if any)."""
        record = {
            "box": [round(v, 1) for v in self.box],
            "score": round(self.score, 4),
            "class_id": self.class_id,
            "label": self.label,
        }
        if self.track_id is not None:
            record["track_id"] = self.track_id
        return record


def detection_colors(detections: Sequence[Detection]) -> np.ndarray | None:
    """``[N, 3]`` float32 colours of the detections, or None if any lacks one."""
    if any(d.color is None for d in detections):
        return None
    return np.array([d.color for d in detections], dtype=np.float32).reshape(-1, 3)


@dataclass(frozen=True)
class FrameDetections:
    """Detections of one frame as numpy arrays: a response, a bare loop's, a cached clip's.

    Attributes:
        boxes: ``[n, 4]`` float32 xyxy in original frame pixels.
        scores: ``[n]`` float32 confidences, descending.
        class_ids: ``[n]`` int64 class indices.
        colors: ``[n, 3]`` float32 mean RGB in ``[0, 1]`` of each box's centre
            (the server's ``colors`` output,
            :func:`camdet.steps.postprocess.detections.box_colors`), or None.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    colors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model's ``config.pbtxt``, without the batch dimension.

    Attributes:
        name: Tensor name shared by the config, the ONNX graph and the plan.
        data_type: Config type, e.g. ``TYPE_FP16``.
        dims: Per-sample dims, e.g. ``(3, 640, 640)``; -1 where variable.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]

    @classmethod
    def of(cls, tensor: Any) -> TensorSpec:
        """The spec of a config's ``ModelInput`` or ``ModelOutput`` message."""
        from tritonclient.grpc import model_config_pb2

        return cls(
            tensor.name, model_config_pb2.DataType.Name(tensor.data_type), tuple(tensor.dims)
        )


def frame_input(encoded: bytes) -> list[grpcclient.InferInput]:
    """The ensemble inputs for one encoded frame (JPEG or PNG bytes)."""
    import tritonclient.grpc as grpcclient

    data = np.frombuffer(encoded, dtype=np.uint8)[None]
    tensor = grpcclient.InferInput(INPUT, list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return [tensor]


def requested_outputs() -> list[grpcclient.InferRequestedOutput]:
    """All ensemble outputs."""
    import tritonclient.grpc as grpcclient

    return [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]


def video_inputs(access_unit: bytes, pts: int) -> list[grpcclient.InferInput]:
    """The ``detect_video`` inputs for one access unit (``b""``: flush) and its frame id."""
    import tritonclient.grpc as grpcclient

    data = np.frombuffer(access_unit, dtype=np.uint8)[None]
    chunk = grpcclient.InferInput(VIDEO_INPUT, list(data.shape), "UINT8")
    chunk.set_data_from_numpy(data)
    frame_id = grpcclient.InferInput(PTS_INPUT, [1, 1], "INT64")
    frame_id.set_data_from_numpy(np.array([[pts]], dtype=np.int64))
    return [chunk, frame_id]


def video_outputs() -> list[grpcclient.InferRequestedOutput]:
    """All ``detect_video`` outputs."""
    import tritonclient.grpc as grpcclient

    return [grpcclient.InferRequestedOutput(n) for n in (*OUTPUTS, FRAME_PTS_OUTPUT)]


def parse_video_result(result: grpcclient.InferResult) -> tuple[int, list[Detection]]:
    """``(frame_pts, detections)`` of a ``detect_video`` response.

    ``frame_pts`` is :data:`NO_FRAME` (and the detections empty) when the response
    carries no frame.
    """
    frame_pts = int(result.as_numpy(FRAME_PTS_OUTPUT).reshape(-1)[0])
    if frame_pts == NO_FRAME:
        return NO_FRAME, []
    return frame_pts, parse_result(result)


def threshold_parameters(
    confidence: float | None = None, iou: float | None = None, max_detections: int | None = None
) -> dict[str, float | int]:
    """Request parameters overriding the server's default thresholds (None keeps them)."""
    params = {
        "confidence_threshold": confidence,
        "iou_threshold": iou,
        "max_detections": max_detections,
    }
    return {k: v for k, v in params.items() if v is not None}


def is_damaged(result: grpcclient.InferResult) -> bool:
    """Whether the server flagged the frame as damaged (decoded with concealed errors).

    Such a frame is answered - most of its detections are still worth having - and its
    ``damaged`` output says so (README, "The tensor contract").
    """
    flag = result.as_numpy("damaged")
    return bool(flag is not None and flag.any())


def parse_result(result: grpcclient.InferResult) -> list[Detection]:
    """Detections of the (single) frame of a response."""
    count = int(result.as_numpy("num_detections").reshape(-1)[0])
    boxes = result.as_numpy("boxes").reshape(-1, 4)[:count]
    scores = result.as_numpy("scores").reshape(-1)[:count]
    class_ids = result.as_numpy("class_ids").reshape(-1)[:count]
    labels = result.as_numpy("labels").reshape(-1)[:count]
    colors = result.as_numpy("colors")
    # Absent when the request did not ask for it: the tracker then goes by motion alone.
    colors = [None] * count if colors is None else colors.reshape(-1, 3)[:count]
    return [
        Detection(
            tuple(map(float, b)),
            float(s),
            int(c),
            lbl.decode() if isinstance(lbl, bytes) else str(lbl),
            color=None if k is None else tuple(map(float, k)),
        )
        for b, s, c, lbl, k in zip(boxes, scores, class_ids, labels, colors, strict=True)
    ]


def detect(
    client: grpcclient.InferenceServerClient,
    encoded: bytes,
    parameters: dict[str, float | int] | None = None,
    timeout_s: float | None = None,
) -> list[Detection]:
    """Send one encoded frame through the ensemble and return its detections.

    Raises:
        tritonclient.utils.InferenceServerException: With the server's error text, e.g.
            for an invalid image.
    """
    result = client.infer(
        ENSEMBLE,
        frame_input(encoded),
        outputs=requested_outputs(),
        parameters=parameters or None,
        client_timeout=timeout_s,
    )
    return parse_result(result)
