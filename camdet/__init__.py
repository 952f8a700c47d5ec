"""camdet: real-time object detection for many cameras, served by NVIDIA Triton."""
