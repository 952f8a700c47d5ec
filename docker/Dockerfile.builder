# syntax=docker/dockerfile:1
# Builds the detector's TensorRT plan with build_engine.py, inside the NGC TensorRT
# image of the same release as the server (docker/Dockerfile), so both have the same
# TensorRT. 26.10 (TensorRT 11) is the newest NGC release; build_engine.py builds strongly
# typed networks from ModelOpt-converted ONNX files, which TensorRT 10 and 11 both build.
ARG NGC_VERSION=26.10
FROM nvcr.io/nvidia/tensorrt:${NGC_VERSION}-py3

ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# build_engine.py needs onnx (contract checks), tritonclient (config.pbtxt parsing),
# typer and rich (CLI), ModelOpt and ONNX Runtime (FP16 AutoCast, INT8 Q/DQ calibration:
# camdet's "precision" extra, without ModelOpt's [onnx] extra and its onnx~=1.21 pin),
# and camdet.geometry's letterbox for the calibration frames, which imports OpenCV and
# torch: torch's CPU wheel is enough, nothing runs on it here.
RUN python3 -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        torch==2.14.1 \
    && python3 -m pip install --no-cache-dir \
        onnx==1.23.2 \
        "tritonclient[grpc]==2.73.0" \
        typer==0.29.2 \
        rich==15.0.0 \
        opencv-python-headless==4.11.0.86 \
        onnxruntime==1.32.0 \
        nvidia-modelopt==0.47.0 \
        onnx-graphsurgeon==0.6.1 \
        onnxconverter-common==1.16.0 \
        onnxscript==0.7.2 \
        onnxslim==0.1.98 \
        polygraphy==0.53.6 \
        ml_dtypes==0.5.4 \
        lief==1.0.0 \
        cppimport==26.4.17

WORKDIR /opt/camdet
COPY . .
# Fails the image build (not the first engine build) if TensorRT is not major 10 or 11,
# or ModelOpt's ONNX conversion cannot import.
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && python3 -c "import sys, tensorrt, modelopt.onnx.autocast, modelopt.onnx.quantization; from camdet.engine.network import tensorrt_version_problem; sys.exit(tensorrt_version_problem(tensorrt.__version__))"

CMD ["python3", "build_engine.py", "--help"]
