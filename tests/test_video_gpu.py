"""NVDEC (PyNvVideoCodec 2.2) decoders and the GPU letterbox; run with ``pytest -m gpu``."""

from __future__ import annotations

import numpy as np
import pytest

from camdet.steps.video.decoders import NvDecoder, PyAVDecoder
from camdet.steps.video.letterbox import VideoLetterbox
from camdet.steps.video.pool import SEQUENCE_START, DecoderPool, PoolLimits, VideoRequestError
from tests.helpers.video import as_array, clip, reference_rgb

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_nvdec_answers_each_access_unit_with_its_frame_in_bt601_colours(codec: str) -> None:
    import av

    _, units = clip(71, 10, 640, 360, codec, gop=5)
    nvdec, context = NvDecoder(codec, 0), av.CodecContext.create(codec, "r")
    for unit in units:
        (frame,) = nvdec.decode(as_array(unit.data), 1000 + unit.pts)
        assert frame.pts == 1000 + unit.pts
        assert frame.image.is_cuda and frame.image.shape == (360, 640, 3)
        (yuv,) = context.decode(av.Packet(unit.data))
        rgb = frame.image.cpu().numpy().astype(np.float32)
        assert np.abs(rgb - reference_rgb(yuv)).mean() <= 1.0  # 1/255 on average
    assert nvdec.flush() == []


def test_nvdec_b_frames_come_in_display_order_with_native_latency() -> None:
    _, units = clip(72, 8, 320, 240, gop=8, bframes=2)
    nvdec = NvDecoder("h264", 0, latency="NATIVE")
    got = [f.pts for u in units for f in nvdec.decode(as_array(u.data), u.pts)]
    got += [f.pts for f in nvdec.flush()]
    assert got == list(range(8))


def test_gpu_letterbox_equals_cpu_letterbox_of_the_same_pixels() -> None:
    _, units = clip(73, 1, 1280, 720)
    (frame,) = NvDecoder("h264", 0).decode(as_array(units[0].data), 0)
    gpu_images, gpu_sizes = VideoLetterbox(4, 2, 0).run([frame.image])
    cpu_images, cpu_sizes = VideoLetterbox(4, 2, None).run([frame.image.cpu().numpy()])
    diff = np.abs(gpu_images.cpu().numpy().astype(np.float32) - cpu_images.astype(np.float32))
    assert diff.mean() * 255 < 0.5 and np.asarray(gpu_sizes).tolist() == cpu_sizes.tolist()


def test_pool_on_nvdec_matches_pyav_and_refuses_garbage() -> None:
    _, units = clip(74, 6, 320, 240, gop=3)
    limits = PoolLimits(4, 1 << 24, 8192, 8, 30.0)
    pools = {
        "nvdec": DecoderPool(lambda codec: NvDecoder(codec, 0), limits),
        "pyav": DecoderPool(PyAVDecoder, limits),
    }
    for pool in pools.values():
        pts = [
            pool.submit(1, SEQUENCE_START * (i == 0), "h264", as_array(u.data), u.pts).pts
            for i, u in enumerate(units)
        ]
        assert pts == list(range(6))
        with pytest.raises(VideoRequestError, match="corrupt access unit"):
            pool.submit(1, 0, None, as_array(b"\x00\x00\x00\x01" + b"\xff" * 40), 6)
