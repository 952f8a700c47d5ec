"""Persistent per-camera H.264/HEVC decoders: PyAV on the CPU, NVDEC on the GPU.

A decoder is fed one Annex-B access unit at a time, with the client's pts, and returns
the frames that became ready, as RGB ``[H, W, 3]`` uint8 (a numpy array on the CPU, a
torch CUDA tensor on the GPU) with the pts of the access unit each came from. Both run in
low-delay mode: a stream without B-frames gets each access unit's own frame back at
once; a stream with B-frames gets its frames in display order, a few access units late.
Restarting a decoder costs ~0.1 s on NVDEC, which is why each camera keeps its own.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


class VideoDecodeError(RuntimeError):
    """The decoder refused an access unit (corrupt or truncated data)."""


class DecoderUnavailableError(VideoDecodeError):
    """The GPU had no decoder for a camera (all of its decoders open, or out of memory).

    The server's limit, not the stream's fault; the camera's next keyframe tries again.
    """


CUDA_ERROR_OUT_OF_MEMORY = 2
"""``CUresult`` that NVDEC returns when a decoder's surfaces do not fit in GPU memory, and
also when the card has no decoder left (an H100: ~280 at 1080p H.264, perf/RESULTS.md)."""


@dataclass
class DecodedFrame:
    """One decoded frame.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB, pixels of the camera frame; numpy on the CPU,
            a torch CUDA tensor on the GPU (owned: the decoder's buffers are not reused).
        pts: The client's pts of the access unit the frame was coded in.
    """

    image: Any
    pts: int


class Decoder(Protocol):
    """What the per-camera pool needs from a decoder."""

    def decode(self, access_unit: np.ndarray, pts: int) -> list[DecodedFrame]:
        """Decode one Annex-B access unit (``[n]`` uint8); frames that became ready."""
        ...

    def flush(self) -> list[DecodedFrame]:
        """Return every frame still held; the decoder is finished afterwards."""
        ...

    def close(self) -> None:
        """Release the decoder's memory now."""
        ...


def open_decoder(codec: str, device_id: int | None) -> Decoder:
    """A decoder for ``codec`` on the CPU (``device_id`` None) or on that CUDA device."""
    if device_id is None:
        return PyAVDecoder(codec)
    return NvDecoder(codec, device_id)


class PyAVDecoder:
    """FFmpeg's software decoder through PyAV, RGB conversion with swscale."""

    def __init__(self, codec: str) -> None:
        """Open the decoder.

        Args:
            codec: ``"h264"`` or ``"hevc"`` (FFmpeg decoder names).
        """
        import av

        self._av = av
        self.context = av.CodecContext.create(codec, "r")
        # Frame threading holds one frame per thread before output; slice threading
        # keeps the one-in-one-out latency of B-frame-free camera streams.
        self.context.thread_type = "SLICE"
        # Report damaged slices as errors instead of concealing them, so the pool can
        # fail that frame and resynchronize at the next keyframe.
        self.context.options = {"err_detect": "explode"}

    def decode(self, access_unit: np.ndarray, pts: int) -> list[DecodedFrame]:
        """Decode one access unit.

        Raises:
            VideoDecodeError: FFmpeg found the data invalid.
        """
        packet = self._av.Packet(access_unit.tobytes())
        packet.pts = pts
        return self._frames(packet)

    def flush(self) -> list[DecodedFrame]:
        """Drain the frames FFmpeg holds (B-frame reordering)."""
        return self._frames(None)

    def _frames(self, packet: Any) -> list[DecodedFrame]:
        try:
            frames = self.context.decode(packet)
        except (self._av.error.InvalidDataError, ValueError) as exc:
            raise VideoDecodeError(_first_line(exc)) from exc
        return [DecodedFrame(_to_rgb(frame), int(frame.pts)) for frame in frames]

    def close(self) -> None:
        """Drop the codec context (FFmpeg frees it with the object)."""
        self.context = None


def _to_rgb(frame: Any) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB with the stream's own matrix (BT.601 when unsignalled)."""
    import cv2

    # 1 = AVCOL_SPC_BT709. swscale's fast BT.601 path is ~1.3/255 darker on average than
    # the exact conversion (which NVDEC and the JPEG path match); OpenCV's is exact.
    if frame.format.name == "yuv420p" and frame.colorspace != 1 and frame.width % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    colorspace = "ITU709" if frame.colorspace == 1 else None
    return frame.to_ndarray(format="rgb24", src_colorspace=colorspace)


class NvDecoder:
    """NVDEC through PyNvVideoCodec 2.2, frames converted to RGB on the GPU.

    One ``CreateDecoder`` per camera, kept across requests (measured on the H100:
    656 frames/s for one stream, ~3,800 for 8-32 streams, against ~280 for a decoder per
    segment). ``DisplayDecodeLatencyType.LOW`` with ``ENDOFPICTURE`` packets gives each
    access unit's frame back from the same ``Decode`` call for B-frame-free streams.
    """

    def __init__(self, codec: str, device_id: int, latency: str = "LOW") -> None:
        """Create the hardware decoder.

        Args:
            codec: ``"h264"`` or ``"hevc"``.
            device_id: CUDA device ordinal.
            latency: ``DisplayDecodeLatencyType`` name: ``"LOW"`` (display order, no
                delay without B-frames) or ``"NATIVE"`` (for streams with B-frames).
        """
        import PyNvVideoCodec as nvc  # noqa: N813 (NVIDIA's documented alias)
        import torch

        self._nvc, self._torch = nvc, torch
        self.device = torch.device("cuda", device_id)
        self.stream = torch.cuda.Stream(self.device)
        codecs = {"h264": nvc.cudaVideoCodec.H264, "hevc": nvc.cudaVideoCodec.HEVC}
        # PyNvVideoCodec 2.2 raises PyNvVCException (NVDEC and CUDA errors, out of memory
        # among them) and PyNvVCExceptionUnsupported; neither is a RuntimeError.
        names = ("PyNvVCException", "PyNvVCExceptionUnsupported")
        self.errors = (RuntimeError, *(getattr(nvc, n) for n in names if hasattr(nvc, n)))
        self.low_latency = latency != "NATIVE"
        try:
            self.decoder = nvc.CreateDecoder(
                gpuid=device_id,
                codec=codecs[codec],
                cudacontext=0,
                cudastream=self.stream.cuda_stream,
                usedevicememory=True,
                outputColorType=nvc.OutputColorType.RGB,
                latency=getattr(nvc.DisplayDecodeLatencyType, latency),
            )
        except self.errors as exc:
            raise self._error(exc) from exc

    def decode(self, access_unit: np.ndarray, pts: int) -> list[DecodedFrame]:
        """Decode one access unit on the GPU.

        Raises:
            VideoDecodeError: PyNvVideoCodec raised (NVDEC conceals most bitstream
                damage; the pool's structural checks catch what it does not report).
        """
        data = np.ascontiguousarray(access_unit, dtype=np.uint8)
        packet = self._nvc.PacketData()
        packet.bsl_data = data.ctypes.data
        packet.bsl = data.size
        packet.pts = pts
        if self.low_latency:
            packet.decode_flag = self._nvc.VideoPacketFlag.ENDOFPICTURE
        return self._decode(packet)

    def flush(self) -> list[DecodedFrame]:
        """An empty packet ends the stream: NVDEC hands out what it still holds."""
        packet = self._nvc.PacketData()
        packet.bsl = 0
        return self._decode(packet)

    def _decode(self, packet: Any) -> list[DecodedFrame]:
        try:
            frames = self.decoder.Decode(packet)
            # The decoder reuses its surfaces: copy each frame out before the next call.
            with self._torch.cuda.stream(self.stream):
                out = [
                    DecodedFrame(self._torch.from_dlpack(f).clone(), int(f.getPTS()))
                    for f in frames
                ]
        except self.errors as exc:
            raise self._error(exc) from exc
        # DALI reads the copies on its own stream.
        self.stream.synchronize()
        return out

    def close(self) -> None:
        """Destroy the NVDEC session (its surfaces go with it)."""
        self.decoder = None

    def _error(self, exc: Exception) -> VideoDecodeError:
        """:func:`nvdec_error`, with the device's free memory when it ran out."""
        if isinstance(exc, self._torch.cuda.OutOfMemoryError):  # copying the frame out
            error: VideoDecodeError = DecoderUnavailableError(
                f"GPU out of memory for a decoded frame ({_first_line(exc)})"
            )
        else:
            error = nvdec_error(exc)
        if not isinstance(error, DecoderUnavailableError):
            return error
        try:
            free, total = self._torch.cuda.mem_get_info(self.device)
        except RuntimeError:  # the context itself may be what failed
            return error
        return DecoderUnavailableError(
            f"{error} ({free >> 20} of {total >> 20} MiB free on {self.device})"
        )


def nvdec_error(exc: Exception) -> VideoDecodeError:
    """PyNvVideoCodec's exception as one line of our error classes.

    :class:`DecoderUnavailableError` for NVDEC's out of memory (which is also its answer
    when the card has no decoder left), :class:`VideoDecodeError` otherwise.

    PyNvVideoCodec's text spans lines and ends with its source location, e.g.
    ``HandleVideoSequence : / Error code : 2 / Error Type : m_api.cuvidCreateDecoder(...)
    returned error 2 / at .../NvDecoder.cpp:430`` (seen on an H100 with 128 cameras
    beside other servers, perf/RESULTS.md session 10).
    """
    text = re.sub(r"\s+at \S+:\d+$", "", " ".join(str(exc).split()))
    failed = re.search(r"(cuvid\w+)\(.*\) returned error (\d+)", text)
    if failed and int(failed.group(2)) == CUDA_ERROR_OUT_OF_MEMORY:
        # NVDEC answers out of memory also when the card's decoders are all open with
        # memory to spare: an H100 opens ~280 1080p H.264 decoders at once, from one
        # process or four, with 68-72 of its 80 GB free (perf/RESULTS.md, session 12).
        return DecoderUnavailableError(
            f"NVDEC opened no decoder ({failed.group(1)} returned CUDA_ERROR_OUT_OF_MEMORY): "
            f"too many decoders open on this GPU, or too little memory"
        )
    return VideoDecodeError(text or type(exc).__name__)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
