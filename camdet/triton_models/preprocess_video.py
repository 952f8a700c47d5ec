"""``preprocess_video``: per-camera decode (NVDEC or PyAV) + the shared DALI letterbox.

Thin adapter: :mod:`camdet.steps.video.pool` keeps the cameras, :mod:`camdet.steps.video.decoders`
decodes, :mod:`camdet.steps.video.letterbox` letterboxes every frame of the batch in one DALI run.
A request the pool refuses fails alone; the others of the batch get their frames.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from camdet.constants import PAD_VALUE, PIXEL_SCALE
from camdet.steps.parameters import RequestParameterError
from camdet.steps.video.decoders import DecodedFrame, NvDecoder, PyAVDecoder
from camdet.steps.video.letterbox import VideoLetterbox
from camdet.steps.video.pool import DecoderPool, PoolLimits, VideoRequestError
from camdet.triton_models.common import (
    checked_parameters,
    error_response,
    guarded_execute,
    instance_device,
    load_config,
    output_dtype,
    parameter,
)

CHUNK, PTS = "video_chunk", "pts"
IMAGE, SIZE, FRAME_PTS = "preprocessed_image", "original_size", "frame_pts"
DAMAGED = "damaged"
NO_FRAME = -1
"""``frame_pts`` of a response that carries no frame (the decoder holds all it has)."""


class TritonPythonModel:
    """One decoder per camera (sequence), frames letterboxed in one batch."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read limits and dtypes from the config, open the pool and build the pipeline."""
        config = load_config(args)
        self.device_id = instance_device(args)
        idle_us = int(config["sequence_batching"]["max_sequence_idle_microseconds"])
        limits = PoolLimits(
            max_cameras=int(parameter(config, "max_cameras")),
            max_pixels=int(parameter(config, "max_pixels")),
            max_side=int(parameter(config, "max_side")),
            max_queued_frames=int(parameter(config, "max_queued_frames")),
            idle_timeout_s=idle_us / 1e6,
        )
        nvdec = self.device_id is not None and _has_nvdec()
        self.pool = DecoderPool(
            self._decoder_factory(nvdec, parameter(config, "nvdec_latency")), limits
        )
        threads = int(parameter(config, "num_threads", str(os.cpu_count() or 1)))
        self.max_batch = int(config["max_batch_size"])
        self.letterbox = VideoLetterbox(self.max_batch, threads, self.device_id, on_gpu=nvdec)
        if nvdec:  # a PyAV instance keeps Python's interval: its decoders need the cores
            _set_switch_interval(config)
        self.dtypes = {n: output_dtype(config, n) for n in (IMAGE, SIZE, FRAME_PTS, DAMAGED)}
        image_dims = pb_utils.get_output_config_by_name(config, IMAGE)["dims"]
        # What a letterboxed frame's padding is, everywhere: a frame that is all padding.
        self.pad_image = np.full(
            [1, *image_dims], PAD_VALUE * PIXEL_SCALE, dtype=self.dtypes[IMAGE]
        )
        # A batch holds many cameras: decode them in parallel, each camera in order.
        # On NVDEC its own count: a thread waits for the decoder without the GIL; PyAV
        # decodes on the cores, as many as the letterbox's threads.
        decode_threads = int(parameter(config, "decode_threads")) if nvdec else threads
        self.decoders = ThreadPoolExecutor(decode_threads, thread_name_prefix="camdet-decode")
        self.stop = threading.Event()
        self.sweeper = threading.Thread(target=self._sweep, args=(1.0,), daemon=True)
        self.sweeper.start()
        where = f"cuda:{self.device_id} (NVDEC)" if nvdec else "cpu (PyAV)"
        pb_utils.Logger.log_info(f"preprocess_video: decoders on {where}, {limits}")
        if self.device_id is not None and not nvdec:
            pb_utils.Logger.log_warn(
                "preprocess_video: GPU instance without PyNvVideoCodec 2.2 "
                "(pip install pynvvideocodec==2.2.4): decoding with PyAV on the CPU"
            )

    def _decoder_factory(self, nvdec: bool, latency: str) -> Any:
        if not nvdec:
            return PyAVDecoder
        device = self.device_id
        return lambda codec: NvDecoder(codec, device, latency)

    def _sweep(self, period_s: float) -> None:
        """Free idle cameras' decoders even when no request arrives."""
        while not self.stop.wait(period_s):
            for camera in self.pool.expire():
                pb_utils.Logger.log_info(f"preprocess_video: camera {camera} idle, decoder freed")

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Feed each request's access unit to its camera; one response per request."""
        answers, images, sizes = self.frames(requests)
        responses, row = [], 0
        for answer in answers:
            if isinstance(answer, VideoRequestError):
                responses.append(error_response(str(answer)))
            elif answer is None:
                responses.append(self._response(self.pad_image, np.zeros((1, 2)), NO_FRAME))
            else:
                responses.append(
                    self._response(images[row : row + 1], sizes[row : row + 1], answer.pts)
                )
                row += 1
        return responses

    def frames(
        self, requests: list
    ) -> tuple[list[DecodedFrame | VideoRequestError | None], Any, Any]:
        """Decode every request's access unit and letterbox the frames that came out.

        Returns:
            Per request its frame, its error or None (no frame yet); and the frames'
            ``[N, 3, H, W]`` letterboxed images and ``[N, 2]`` (height, width) sizes, in
            request order (None when no frame came out).
        """
        return self.decode([read(request) for request in requests])

    def decode(
        self, units: list[AccessUnit | VideoRequestError]
    ) -> tuple[list[DecodedFrame | VideoRequestError | None], Any, Any]:
        """:meth:`frames` of access units already read from their requests (:func:`read`)."""
        answers = self._decode_all(units)
        frames = [a for a in answers if isinstance(a, DecodedFrame)]
        images, sizes = self.letterbox.run([f.image for f in frames]) if frames else (None, None)
        return answers, images, sizes

    def _decode_all(
        self, units: list[AccessUnit | VideoRequestError]
    ) -> list[DecodedFrame | VideoRequestError | None]:
        """Decode the batch: cameras in parallel threads, each camera's units in order."""
        answers: list[DecodedFrame | VideoRequestError | None] = list(units)
        by_camera: dict[int, list[int]] = {}
        for index, unit in enumerate(units):
            if isinstance(unit, AccessUnit):
                by_camera.setdefault(unit.camera, []).append(index)

        def decode(indices: list[int]) -> None:
            for index in indices:
                answers[index] = self._submit(units[index])

        for done in [self.decoders.submit(decode, group) for group in by_camera.values()]:
            done.result()
        return answers

    def _submit(self, unit: AccessUnit) -> DecodedFrame | VideoRequestError | None:
        try:
            return self.pool.submit(unit.camera, unit.flags, unit.codec, unit.chunk, unit.pts)
        except VideoRequestError as exc:
            return exc

    def _response(self, image: Any, size: Any, pts: int) -> pb_utils.InferenceResponse:
        tensors = [
            _tensor(IMAGE, image, self.dtypes[IMAGE]),
            _tensor(SIZE, size, self.dtypes[SIZE]),
        ]
        return pb_utils.InferenceResponse([*tensors, *self.frame_tensors(pts)])

    def frame_tensors(self, pts: int) -> list[pb_utils.Tensor]:
        """``damaged`` and ``frame_pts`` of a response about frame ``pts`` (-1: no frame)."""
        return [
            # A damaged access unit is refused, never concealed: no answered frame is.
            pb_utils.Tensor(DAMAGED, np.zeros((1, 1), dtype=self.dtypes[DAMAGED])),
            pb_utils.Tensor(FRAME_PTS, np.array([[pts]], dtype=self.dtypes[FRAME_PTS])),
        ]

    def finalize(self) -> None:
        """Stop the sweeper and the decode threads, and free every decoder."""
        self.stop.set()
        self.decoders.shutdown(wait=True)
        self.pool.close()


@dataclass(frozen=True)
class AccessUnit:
    """One request's access unit, read from the request in the model's own thread."""

    camera: int
    flags: int
    codec: str | None
    chunk: np.ndarray
    pts: int
    parameters: dict[str, Any]
    """All of the request's parameters, checked (its thresholds too)."""


def read(request: Any) -> AccessUnit | VideoRequestError:
    """The request's access unit and sequence fields (Triton objects stay in one thread).

    The access unit is copied out of the request, whose tensors are freed when
    ``execute`` returns (the overlapped ``detect_video_pipeline`` decodes it later).
    """
    # One pass over the inputs (pb_utils.get_input_tensor_by_name walks them per name).
    inputs = {tensor.name(): tensor for tensor in request.inputs()}
    chunk, pts = inputs[CHUNK].as_numpy(), inputs[PTS].as_numpy()
    if chunk.shape[0] != 1:
        return VideoRequestError(f"one access unit per request, got a batch of {chunk.shape[0]}")
    try:
        # All of them, here: a bad threshold found only by postprocess would cost a decode.
        parameters = checked_parameters(request)
    except RequestParameterError as exc:
        return VideoRequestError(f"bad request parameters: {exc}")
    return AccessUnit(
        request.correlation_id(),
        request.flags(),
        parameters.get("codec"),
        np.array(chunk[0]),
        int(pts.reshape(-1)[0]),
        parameters,
    )


def _set_switch_interval(config: dict) -> None:
    """Python's GIL switch interval, from the parameter ``gil_switch_interval_ms`` if set.

    A decode thread gives the GIL back while NVDEC decodes and needs it again after
    each wait; under 192 cameras py-spy found 45 % of their samples waiting for it
    (perf/RESULTS.md, session 16). A shorter interval did not serve more frames: 0.5 ms
    gave 1,757 frames/s where Python's 5 ms gave 1,813 on the same card (session 17),
    so the production config leaves it out. A portable GPU server's
    ``CAMDET_GIL_SWITCH_MS`` sets it, for such measurements (:mod:`camdet.serving.portable`).
    """
    value = parameter(config, "gil_switch_interval_ms", "")
    if value:
        sys.setswitchinterval(float(value) / 1000)


def _has_nvdec() -> bool:
    """Whether PyNvVideoCodec imports and the driver's NVDEC library loads.

    A container started without the ``video`` driver capability has the package but no
    ``libnvcuvid``: its cameras then decode with PyAV instead of failing every batch.
    """
    try:
        import PyNvVideoCodec  # noqa: F401

        ctypes.CDLL("libnvcuvid.so.1")
    except (ImportError, OSError) as error:
        pb_utils.Logger.log_warn(f"preprocess_video: no NVDEC ({error}); decoding with PyAV")
        return False
    return True


def _tensor(name: str, data: Any, dtype: np.dtype) -> pb_utils.Tensor:
    """An output tensor from numpy (host) or torch (GPU, by DLPack, no copy).

    Told apart without importing torch, which a CPU install does not have.
    """
    if isinstance(data, np.ndarray):
        return pb_utils.Tensor(name, np.ascontiguousarray(data, dtype=dtype))
    return pb_utils.Tensor.from_dlpack(name, data.contiguous())
