"""Thin gRPC clients of the camdet ensemble (installed as ``camdet.client``).

Clients do no preprocessing and no NMS: they send encoded frames and receive final
detections in original pixels. H.264/HEVC cameras are never decoded on the client: their
packets pass through as Annex-B access units to the ``detect_video`` ensemble, one Triton
sequence per camera (``decode_on_client`` keeps the old decode + JPEG path for servers
without it). JPEG cameras go to ``detect`` as they are.

Camera ingest follows the data flow, one module per step:

- :mod:`~camdet.client.config`: camera lists (YAML/TOML) and command-line cameras;
- :mod:`~camdet.client.sources`: RTSP/RTSPS, files, image folders, MJPEG over HTTP, USB;
- :mod:`~camdet.client.demux`: H.264/HEVC packets -> self-contained Annex-B access units;
- :mod:`~camdet.client.reader`: per-camera reader threads, bounded buffers, reconnects;
- :mod:`~camdet.client.servers`: server URLs, health, camera assignment, fail-over;
- :mod:`~camdet.contract`: the request/response mapping of both ensembles;
- :mod:`~camdet.client.streamer`: the event loop that sends frames and correlates answers;
- :mod:`~camdet.client.sequence`: a camera's ``detect_video`` sequence (start, resync, end);
- :mod:`~camdet.client.accounting`: captured = answered + dropped + failed + in flight;
- :mod:`~camdet.client.tracks`: per-camera track ids (ByteTrack) and count-line crossings;
- :mod:`~camdet.client.sinks`: JSON Lines, annotated MP4s, callbacks;
- :mod:`~camdet.client.metrics` and :mod:`~camdet.client.report`: Prometheus, tables;
- :mod:`~camdet.client.cli`: ``camdet ingest``;
- :mod:`~camdet.client.bench_video`: client CPU per frame, pass-through vs decode + JPEG.

Embedding::

    from camdet.client.config import CameraConfig
    from camdet.client.sinks import CallbackSink
    from camdet.client.streamer import BackgroundIngest, Ingest

    cameras = [CameraConfig("gate", "rtsp://10.0.0.5/stream1", fps=5)]
    ingest = Ingest(cameras, ["localhost:8001"], [CallbackSink(print)])
    with BackgroundIngest(ingest):
        ...  # results arrive in the callback; leaving the block drains and stops
"""
