# syntax=docker/dockerfile:1
# Builds the detector's TensorRT plan with build_engine.py, inside the NGC TensorRT
# image of the same release as the server (docker/Dockerfile), so both have the same
# TensorRT. 26.05 ships TensorRT 10, the last major version with the builder API used.
ARG NGC_VERSION=26.05
FROM nvcr.io/nvidia/tensorrt:${NGC_VERSION}-py3

ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# build_engine.py needs onnx (contract checks), tritonclient (config.pbtxt parsing),
# typer and rich (CLI), and for INT8 calibration camdet.geometry's letterbox, which
# imports OpenCV and torch: torch's CPU wheel is enough, nothing runs on it here.
RUN python3 -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 \
    && python3 -m pip install --no-cache-dir \
        onnx==1.23.2 \
        "tritonclient[grpc]==2.73.0" \
        typer==0.29.2 \
        rich==15.0.0 \
        opencv-python-headless==4.11.0.86

WORKDIR /opt/camdet
COPY . .
# Fails the image build (not the first engine build) if TensorRT is not major 10.
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && python3 -c "import sys, tensorrt, build_engine; sys.exit(build_engine.tensorrt_version_problem(tensorrt.__version__))"

CMD ["python3", "build_engine.py", "--help"]
