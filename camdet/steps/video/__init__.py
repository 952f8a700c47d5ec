"""``preprocess_video``: per-camera H.264/HEVC decode and the shared letterbox.

Annex-B access units (:mod:`.annexb`), decoders (NVDEC/PyAV), their pool and letterbox.
"""
