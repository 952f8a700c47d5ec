"""Multi-object tracking per camera: stable ids, measured against the scenes' exact truth.

- :mod:`~camdet.tracking.kalman`: the constant-velocity box motion model;
- :mod:`~camdet.tracking.bytetrack`: ByteTrack association (``lap``);
- :mod:`~camdet.tracking.lines`: counting tracks that cross a line;
- :mod:`~camdet.tracking.evaluate`: IDF1, MOTA and identity switches (``motmetrics``) of
  the real detector plus tracker on rendered clips: ``python -m camdet.tracking.evaluate``.

The tracker runs in the ingest client, one per camera (:mod:`camdet.client.tracks`); see
:mod:`camdet.tracking.evaluate` and the model card for why.
"""
