"""Requests to the detect ensemble: concurrent sends and the bad request parameters."""

from __future__ import annotations

import math
import queue

import tritonclient.grpc as grpcclient

from camdet.contract import ENSEMBLE, frame_input, requested_outputs

HUGE = "1" + "0" * 30  # the 31-digit value that once failed every frame of its batch
KNOWN = "(known: confidence_threshold, iou_threshold, max_detections)"
# Each bad parameter and the exact reason its request gets.
BAD_PARAMETERS = [
    ({"max_detections": HUGE}, f"max_detections must be an integer, got str '{HUGE}'"),
    ({"max_detections": 1e30}, "max_detections must be in [0, 30000], got 1e+30"),
    ({"max_detections": -1}, "max_detections must be in [0, 30000], got -1"),
    ({"max_detections": 30001}, "max_detections must be in [0, 30000], got 30001"),
    ({"max_detections": 2.5}, "max_detections must be an integer, got 2.5"),
    ({"max_detections": math.inf}, "max_detections must be a finite number, got inf"),
    ({"confidence_threshold": math.nan}, "confidence_threshold must be a finite number, got nan"),
    ({"confidence_threshold": 1.0}, "confidence_threshold must be in [0, 1), got 1.0"),
    ({"confidence_threshold": "0.5"}, "confidence_threshold must be a number, got str '0.5'"),
    ({"confidence_threshold": True}, "confidence_threshold must be a number, got bool True"),
    ({"iou_threshold": 0}, "iou_threshold must be in (0, 1], got 0"),
    ({"iou_threshold": -math.inf}, "iou_threshold must be a finite number, got -inf"),
    ({"codec": "h264"}, f"unknown request parameter 'codec' {KNOWN}"),  # detect_video's
    ({"confidence_treshold": 0.5}, f"unknown request parameter 'confidence_treshold' {KNOWN}"),
]  # fmt: skip


def send_concurrently(
    client: grpcclient.InferenceServerClient,
    payloads: list[bytes],
    parameters: dict | list[dict | None] | None = None,
    timeout_s: float = 120.0,
    model: str = ENSEMBLE,
    outputs: tuple[str, ...] | None = None,
) -> list:
    """Send every payload at once (so the server batches them); (result, error) in order.

    ``parameters``: one dict for every request, or one (or None) per payload. ``outputs``:
    the ensemble's by default (name them when ``model`` is a step).
    """
    each = parameters if isinstance(parameters, list) else [parameters] * len(payloads)
    requested = (
        requested_outputs()
        if outputs is None
        else [grpcclient.InferRequestedOutput(name) for name in outputs]
    )
    answers: queue.Queue = queue.Queue()
    for index, (data, params) in enumerate(zip(payloads, each, strict=True)):
        client.async_infer(
            model,
            frame_input(data),
            callback=lambda result, error, i=index: answers.put((i, result, error)),
            outputs=requested,
            parameters=params,
        )
    got = dict((i, (r, e)) for i, r, e in (answers.get(timeout=timeout_s) for _ in payloads))
    return [got[i] for i in range(len(payloads))]
