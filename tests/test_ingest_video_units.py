"""H.264/HEVC pass-through on the client, without a server: demux -> Annex-B access units.

Every check decodes the access units with a fresh PyAV decoder fed only those bytes and
compares with decoding the source file itself: same frame count, same pixels. Sources are
real: MP4 files of the synthetic scenes and GStreamer's RTSP server on loopback (parameter
sets only in the SDP).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from camdet.client.accounting import Accounting
from camdet.client.backoff import BackoffPolicy
from camdet.client.bench_video import compare, report
from camdet.client.config import CameraConfig
from camdet.client.demux import AccessUnit
from camdet.client.reader import CameraReader, CapturedFrame, FrameBuffer
from camdet.client.sequence import sequence_id, sequence_ids
from camdet.client.sources import AvSource, SourceFrame, open_source

from camdet.steps.video.annexb import inspect_access_unit
from tests.helpers.clips import CLIP_FPS, CLIP_HEIGHT, CLIP_WIDTH, make_clips, transcode_clip
from tests.helpers.rtsp import RtspServer, require_gst_rtsp, rtsp_mounts

FRAMES = 30  # three GOPs of the 10 fps clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory):
    """H.264 without B-frames (what cameras send) and HEVC with B-frames (the hard case)."""
    h264 = make_clips(tmp_path_factory.mktemp("video_clips"), [41], frames=FRAMES)[0]
    return {"h264": h264, "hevc": transcode_clip(h264, "hevc", bframes=2)}


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def decode_units(units: list[AccessUnit]) -> list[np.ndarray]:
    """Decode access units with a decoder that knows nothing but their bytes."""
    decoder = av.CodecContext.create(units[0].codec, "r")
    frames = [f for u in units for f in decoder.decode(av.Packet(u.data))]
    frames += decoder.decode(None)
    return [f.to_ndarray(format="rgb24") for f in frames]


def session_units(source: AvSource) -> list[SourceFrame]:
    frames = list(source.session())
    assert all(f.video is not None and f.pixels is None for f in frames)
    return frames


def assert_same_as_file(units: list[AccessUnit], path: Path) -> None:
    reference = decoded(path)
    keyframes = [i for i, u in enumerate(units) if u.keyframe]
    assert keyframes == list(range(0, FRAMES, CLIP_FPS))
    for start in keyframes[:2]:  # a decoder may join at any keyframe
        frames = decode_units(units[start:])
        assert len(frames) == len(reference) - start
        assert all(np.array_equal(a, b) for a, b in zip(frames, reference[start:], strict=True))
    for unit in units:
        assert unit.data.startswith(b"\x00\x00\x00\x01")
        # The server's own check: keyframes carry every parameter set in band.
        assert inspect_access_unit(unit.data, unit.codec).keyframe == unit.keyframe
        assert (unit.width, unit.height) == (CLIP_WIDTH, CLIP_HEIGHT)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_mp4_packets_become_self_contained_access_units(clips, codec: str) -> None:
    clip = clips[codec]
    frames = session_units(AvSource(str(clip.path), {}, live=False))
    assert [f.position for f in frames] == list(range(FRAMES))
    assert {f.video.codec for f in frames} == {codec}
    assert_same_as_file([f.video for f in frames], clip.path)


def test_rtsp_streams_become_self_contained_access_units(clips) -> None:
    require_gst_rtsp()
    with RtspServer(rtsp_mounts(clips)) as rtsp:
        for codec in ("h264", "hevc"):
            camera = CameraConfig(codec, rtsp.url(f"/{codec}"))
            frames = session_units(open_source(camera))
            assert_same_as_file([f.video for f in frames], clips[codec].path)


def test_decode_on_client_keeps_the_decoding_path(clips) -> None:
    camera = CameraConfig("old", str(clips["h264"].path), pace=False, decode_on_client=True)
    frames = list(open_source(camera).session())
    assert len(frames) == FRAMES and all(f.video is None for f in frames)
    assert np.array_equal(frames[3].rgb(), decoded(clips["h264"].path)[3])


def test_access_units_are_never_decimated(clips) -> None:
    camera = CameraConfig("cam", str(clips["h264"].path), fps=2, pace=False)
    accounting = Accounting([camera.id])
    loop = asyncio.new_event_loop()
    buffer = FrameBuffer(FRAMES, drop_oldest=False, loop=loop)
    reader = CameraReader(camera, open_source(camera), buffer, accounting, BackoffPolicy())
    reader.start()
    assert reader.join(30)
    loop.close()
    held = buffer.take_all()
    assert [f.position for f in held] == list(range(FRAMES))  # fps=2 would keep 3
    assert accounting.snapshot()[camera.id].captured == FRAMES


def unit_frame(index: int, keyframe: bool) -> CapturedFrame:
    unit = AccessUnit(b"\x00\x00\x00\x01\x65", keyframe, "h264", 64, 64)
    return CapturedFrame("cam", index, 0, index, None, 0.0, 0.0, None, None, unit)


def test_realtime_buffer_drops_whole_rests_of_gops() -> None:
    loop = asyncio.new_event_loop()
    buffer = FrameBuffer(1, drop_oldest=True, loop=loop, video_capacity=3)
    gop = 5
    left_out = []
    for index in range(3 * gop):
        left_out += buffer.put(unit_frame(index, index % gop == 0))
    loop.close()
    held = [f.index for f in buffer.take_all()]
    dropped = sorted(f.index for f in left_out)
    # Nobody reads: each GOP keeps its first 3 frames until the next keyframe replaces them.
    assert dropped == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14]
    assert held == [10, 11, 12]
    # Every dropped run ends right before a keyframe: the rest still decodes.
    for index in dropped:
        assert index + 1 in dropped or (index + 1) % gop == 0


def test_capacity_buffer_never_drops_access_units() -> None:
    loop = asyncio.new_event_loop()
    buffer = FrameBuffer(2, drop_oldest=False, loop=loop, video_capacity=2)
    assert buffer.put(unit_frame(0, True)) == [] and buffer.put(unit_frame(1, False)) == []
    blocked = threading.Thread(target=buffer.put, args=(unit_frame(2, False),), daemon=True)
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()  # back-pressure, not a drop
    assert [f.index for f in buffer.take_all()] == [0, 1]
    blocked.join(5)
    assert [f.index for f in buffer.take_all()] == [2]
    loop.close()


def test_sequence_ids_are_stable_nonzero_and_unique() -> None:
    ids = sequence_ids(f"cam{i}" for i in range(1000))
    assert len(set(ids.values())) == 1000
    assert all(0 < v < 2**63 for v in ids.values())  # tritonclient sends int64
    assert ids["cam7"] == sequence_id("cam7")


def test_benchmark_compares_both_paths_on_the_same_clip(clips) -> None:
    through, decoded = compare(clips["h264"].path, repeats=1)
    assert through.frames == decoded.frames == 2 * FRAMES
    assert decoded.cpu_s > through.cpu_s
    assert "decode / pass-through" in report(through, decoded)
