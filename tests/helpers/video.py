"""Video test inputs: scene clips as access units, broken units, gRPC helpers, BT.601 colours."""

from __future__ import annotations

import functools
import queue

import cv2
import numpy as np
import tritonclient.grpc as grpcclient

from camdet.contract import VIDEO_ENSEMBLE
from camdet.scenes import Frame
from camdet.scenes.video import EncodedUnit, scene_clip

ENSEMBLE = VIDEO_ENSEMBLE
OUTPUTS = ("boxes", "scores", "class_ids", "labels", "num_detections", "frame_pts")


@functools.cache
def clip(
    seed: int, frames: int, width: int = 320, height: int = 240, codec: str = "h264", **kw
) -> tuple[list[Frame], list[EncodedUnit]]:
    """A scene clip, rendered and encoded once per session (see :func:`scene_clip`)."""
    return scene_clip(seed, frames, width, height, codec, **kw)


def _bits_ue(value: int) -> str:
    code = f"{value + 1:b}"
    return "0" * (len(code) - 1) + code


def huge_keyframe(width: int, height: int) -> bytes:
    """A keyframe whose H.264 SPS declares ``width`` x ``height`` (multiples of 16).

    Baseline-profile SPS written bit by bit (ITU-T H.264 7.3.2.1.1), then a PPS and an IDR
    slice header that no decoder is meant to reach: the server must refuse the size first.
    """
    bits = "01000010" + "00000000" + "00110011"  # profile 66, constraints, level 5.1
    bits += _bits_ue(0) + _bits_ue(0) + _bits_ue(2) + _bits_ue(1) + "0"
    bits += _bits_ue(width // 16 - 1) + _bits_ue(height // 16 - 1) + "1" + "1" + "0" + "0"
    bits += "1"
    bits += "0" * (-len(bits) % 8)
    sps = bytes([0x67]) + int(bits, 2).to_bytes(len(bits) // 8, "big")
    start = b"\x00\x00\x00\x01"
    return start + sps + start + b"\x68\xce\x38\x80" + start + b"\x65\x88\x84\x00\x33\xff"


def video_inputs(data: bytes, pts: int) -> list[grpcclient.InferInput]:
    """The two inputs of one request: ``video_chunk`` ``[1, n]`` and ``pts`` ``[1, 1]``."""
    chunk = grpcclient.InferInput("video_chunk", [1, len(data)], "UINT8")
    chunk.set_data_from_numpy(np.frombuffer(data, np.uint8).reshape(1, -1))
    stamp = grpcclient.InferInput("pts", [1, 1], "INT64")
    stamp.set_data_from_numpy(np.array([[pts]], dtype=np.int64))
    return [chunk, stamp]


def send(
    client: grpcclient.InferenceServerClient,
    camera: int,
    data: bytes,
    pts: int,
    start: bool = False,
    end: bool = False,
    codec: str | None = "h264",
    model: str = ENSEMBLE,
    outputs: tuple[str, ...] = OUTPUTS,
) -> grpcclient.InferResult:
    """One synchronous request of camera ``camera``'s sequence."""
    return client.infer(
        model,
        video_inputs(data, pts),
        outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
        sequence_id=camera,
        sequence_start=start,
        sequence_end=end,
        parameters={"codec": codec} if start and codec else None,
    )


def send_interleaved(
    client: grpcclient.InferenceServerClient,
    streams: dict[int, list[EncodedUnit]],
    parameters: dict[int, dict[int, dict]] | None = None,
) -> dict[int, list]:
    """Send the cameras' access units round by round, each round all at once.

    Every camera has one request in flight per round (a sequence is ordered), so a
    round's requests reach the model together and are batched across cameras.
    ``parameters[camera][index]`` are request parameters for that access unit (the
    first one of each camera also carries its codec).

    Returns:
        Per camera, ``(result, error)`` per access unit, in order.
    """
    results: dict[int, list] = {camera: [] for camera in streams}
    rounds = max(len(units) for units in streams.values())
    for index in range(rounds):
        answers: queue.Queue = queue.Queue()
        active = [c for c, units in streams.items() if index < len(units)]
        for camera in active:
            units = streams[camera]
            client.async_infer(
                ENSEMBLE,
                video_inputs(units[index].data, units[index].pts),
                callback=lambda result, error, c=camera, q=answers: q.put((c, result, error)),
                outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS],
                sequence_id=camera,
                sequence_start=index == 0,
                sequence_end=index == len(units) - 1,
                parameters=_unit_parameters(parameters, camera, index),
            )
        got = dict((c, (r, e)) for c, r, e in (answers.get(timeout=120) for _ in active))
        for camera in active:
            results[camera].append(got[camera])
    return results


def _unit_parameters(
    parameters: dict[int, dict[int, dict]] | None, camera: int, index: int
) -> dict | None:
    given = ((parameters or {}).get(camera) or {}).get(index, {})
    merged = {"codec": "h264", **given} if index == 0 else given
    return merged or None


def as_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


def reference_rgb(frame) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 -> RGB by the textbook formula (chroma upsampled)."""
    planes = frame.to_ndarray(format="yuv420p")
    height, width = frame.height, frame.width
    y = planes[:height].astype(np.float32)
    u = planes[height : height + height // 4].reshape(height // 2, width // 2)
    v = planes[height + height // 4 :].reshape(height // 2, width // 2)
    u, v = (cv2.resize(c.astype(np.float32), (width, height)) - 128 for c in (u, v))
    y = (y - 16) * 255 / 219
    r = y + 1.402 * 255 / 224 * v
    g = y - (0.299 * 1.402 / 0.587) * 255 / 224 * v - (0.114 * 1.772 / 0.587) * 255 / 224 * u
    b = y + 1.772 * 255 / 224 * u
    return np.clip(np.stack([r, g, b], -1) + 0.5, 0, 255).astype(np.uint8)
