"""``camdet ingest --view``: a live page of every camera, its detections and the server.

- :mod:`~camdet.client.view.annotate`: frames to small annotated JPEGs, for watched
  cameras only, at a capped rate and width (H.264/HEVC access units decoded here while
  watched);
- :mod:`~camdet.client.view.sink`: the :class:`~camdet.client.sinks.Sink` that does it;
- :mod:`~camdet.client.view.stats`: per-camera counters and Triton's metrics for the page;
- :mod:`~camdet.client.view.app`: the aiohttp application (page, WebSocket, key check);
- ``static/``: the page (HTML, CSS and JavaScript, no build step).

Importing this package imports nothing heavy; aiohttp is imported by ``app`` only.
"""
