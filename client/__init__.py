"""Thin gRPC clients of the camdet ensemble (installed as ``camdet.client``).

Clients do no preprocessing and no NMS: they send encoded frames and receive final
detections in original pixels.
"""
