"""``camdet doctor``'s local checks: Python, numpy, GPU stack, DALI, TensorRT, repository.

Every function returns a :class:`~camdet.doctor.checks.Check` (or several); checks that need a
GPU return a skip, with the reason, on a machine without one.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from camdet.doctor.checks import Check, CheckFunction, failed, passed, skipped, warned
from camdet.doctor.gpu import JPEG_BATCH, NVDEC_FRAMES, probe_jpeg, probe_nvdec

SUPPORTED_PYTHONS = ((3, 11), (3, 12))
# Data-centre GPUs with the A100-style hardware JPEG decoder that nvJPEG drives for
# DALI's "mixed" decoder (hw_decoder_load); elsewhere nvJPEG decodes with CUDA cores.
_HW_JPEG_GPUS = ("A100", "A800", "A30", "H100", "H200", "H800", "GH200", "B200", "GB200")
_MIN_HW_SPEEDUP = 1.3
"""Hardware-path over CUDA-path JPEG throughput below which the hardware decoder is taken
to be unused (an H100 measured ~4.6x at batch 64, 1080p)."""
_MAX_DECODE_DIFF = 3.0
"""Mean absolute difference, 8-bit levels, above which a GPU decode is not the CPU's
frame (IDCT rounding and chroma upsampling differ by about one level)."""
_NO_GPU = "no CUDA GPU here (torch sees none): GPU checks run on the GPU machine"


def local_checks(repository: Path) -> Iterator[tuple[str, CheckFunction]]:
    """The local checks by name, in report order."""
    yield "python", check_python
    yield "numpy", check_numpy
    yield "gpu", check_gpu
    yield "dali", check_dali
    yield "dali-backend", check_dali_backend
    yield "nvjpeg-hw", partial(check_jpeg_hardware, repository)
    yield "nvdec", check_nvdec
    yield "mps", check_mps
    yield "tensorrt", check_tensorrt
    yield "plan", partial(check_plan, repository)
    yield "repository", partial(check_repository, repository)


def check_python() -> Check:
    """Python 3.11 or 3.12 (the versions the portable server has a backend stub for)."""
    version = sys.version_info[:2]
    text = f"Python {sys.version.split()[0]} at {sys.executable}"
    if version in SUPPORTED_PYTHONS:
        return passed("python", text)
    return failed(
        "python", text, "use Python 3.11 or 3.12: the portable server has stubs for those"
    )


def check_numpy() -> Check:
    """Numpy 1.x as the portable server's models will see it (numpy 2 breaks the stub)."""
    from camdet.serving.launch import ServerError, check_stub_numpy

    try:
        version = check_stub_numpy(Path(sys.executable).parent)
    except ServerError as error:
        message = str(error)
        detail, _, fix = message.partition(" Fix: ")
        return failed("numpy", detail, fix or "pip install 'numpy<2'")
    return passed("numpy", f"numpy {version} (the portable server's Python-backend stub needs 1.x)")


def _nvidia_smi(*query: str) -> list[str]:
    """Rows of an ``nvidia-smi --query-gpu`` (empty without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return []
    command = ["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return result.stdout.strip().splitlines() if result.returncode == 0 else []


def check_gpu() -> Check:
    """GPUs, driver and CUDA as the driver and torch see them."""
    from camdet.serving.launch import has_cuda_gpu

    rows = _nvidia_smi("name", "driver_version", "compute_cap")
    if not has_cuda_gpu():
        if rows:
            return failed(
                "gpu",
                f"nvidia-smi lists {rows} but torch sees no CUDA device",
                "install a torch build for this driver's CUDA (pip install torch --index-url "
                "https://download.pytorch.org/whl/cu12x) or update the driver",
            )
        return skipped("gpu", _NO_GPU)
    import torch

    cuda = torch.version.cuda
    return passed("gpu", f"{'; '.join(rows) or torch.cuda.get_device_name(0)}; torch CUDA {cuda}")


def check_dali() -> Check:
    """DALI imports (the portable preprocess runs its pipeline through DALI's Python API)."""
    try:
        import nvidia.dali as dali
    except ImportError as error:
        return failed(
            "dali",
            f"cannot import nvidia.dali: {error}",
            "pip install nvidia-dali-cuda120 (CPU machines too: the wheel runs on the CPU)",
        )
    return passed("dali", f"DALI {dali.__version__}")


def check_dali_backend() -> Check:
    """Which runs the portable server's ``preprocess``: Triton's DALI backend or the stand-in.

    Both are correct (the tests compare them); the backend is the production model as it
    is, and it fails a whole batch for one frame its decoder refuses (validate guards it).
    """
    from camdet.serving.backends import dali_backend_status
    from camdet.serving.server import dali_backend

    backend, line = dali_backend_status()
    if backend is None:
        return passed("dali-backend", line)
    if dali_backend() is None:
        return passed("dali-backend", f"{line}; not used: CAMDET_DALI_BACKEND=0")
    return passed("dali-backend", f"preprocess runs on Triton's DALI backend: {line}")


def check_jpeg_hardware(repository: Path) -> Check:
    """Whether DALI decodes JPEGs on this GPU, and with its hardware JPEG decoder."""
    from camdet.serving.launch import has_cuda_gpu

    if not has_cuda_gpu():
        return skipped("nvjpeg-hw", _NO_GPU)
    import torch

    name = torch.cuda.get_device_name(0)
    frame = repository / "preprocess" / "warmup" / "frame_1280x720.jpg"
    try:
        probe = probe_jpeg(frame)
    except RuntimeError as error:
        return failed(
            "nvjpeg-hw",
            f"DALI cannot decode JPEGs on {name}: {str(error).strip().splitlines()[0]}",
            "DALI for CUDA 12 needs nvJPEG and nvImageCodec for CUDA 12 on LD_LIBRARY_PATH "
            "(pip install nvidia-dali-cuda120 pulls them in)",
        )
    rates = (
        f"{probe.hardware_fps:.0f} frames/s with hw_decoder_load=1.0, "
        f"{probe.cuda_fps:.0f} on CUDA cores ({probe.size[1]}x{probe.size[0]}, "
        f"batch {JPEG_BATCH}); mean |GPU - CPU decode| {probe.mean_abs_diff:.2f} levels"
    )
    if probe.mean_abs_diff > _MAX_DECODE_DIFF:
        return warned(
            "nvjpeg-hw",
            f"{name} decodes unlike the CPU: {rates}",
            "CAMDET_JPEG_FANCY_UPSAMPLING=1 (the default) matches libjpeg-turbo's chroma",
        )
    has_hardware = any(model in name for model in _HW_JPEG_GPUS)
    if has_hardware and probe.speedup >= _MIN_HW_SPEEDUP:
        return passed("nvjpeg-hw", f"{name}: hardware JPEG decoder in use: {rates}")
    if has_hardware:
        return warned(
            "nvjpeg-hw",
            f"{name} has a hardware JPEG decoder but it is not faster here: {rates}",
            "check that nvJPEG/nvImageCodec for CUDA 12 are the ones DALI loads; "
            "CAMDET_HW_DECODER_LOAD=0 if the hardware path fails",
        )
    return warned(
        "nvjpeg-hw",
        f"{name} has no hardware JPEG decoder: nvJPEG decodes on CUDA cores: {rates}",
        "expected on this GPU; set CAMDET_HW_DECODER_LOAD=0 to skip the hardware path",
    )


def check_nvdec() -> Check:
    """NVDEC for ``preprocess_video``: the driver's libnvcuvid, PyNvVideoCodec, a decode."""
    from camdet.serving.launch import has_cuda_gpu
    from camdet.steps.video.decoders import VideoDecodeError

    if not has_cuda_gpu():
        return skipped("nvdec", _NO_GPU + "; video decodes with PyAV on the CPU")
    try:
        ctypes.CDLL("libnvcuvid.so.1")
    except OSError as error:
        return failed(
            "nvdec",
            f"the driver's NVDEC library is missing: {error}",
            "in Docker, add the 'video' capability (docker/compose.yaml has it)",
        )
    try:
        version = importlib.metadata.version("PyNvVideoCodec")
    except importlib.metadata.PackageNotFoundError:
        return warned(
            "nvdec",
            "libnvcuvid loads, PyNvVideoCodec is not installed: video decodes with PyAV",
            "pip install PyNvVideoCodec",
        )
    fix = "update the driver (NVDEC H.264 needs the driver's libnvcuvid) or set kind: KIND_CPU"
    try:
        probe = probe_nvdec()
    except VideoDecodeError as error:
        return failed("nvdec", f"NVDEC refused an H.264 clip: {error}", fix)
    detail = (
        f"PyNvVideoCodec {version}: NVDEC decoded {probe.frames} of {NVDEC_FRAMES} H.264 "
        f"frames; mean |NVDEC - PyAV| {probe.mean_abs_diff:.2f} levels"
    )
    if probe.frames != NVDEC_FRAMES or not probe.mean_abs_diff <= _MAX_DECODE_DIFF:
        return failed("nvdec", detail, fix)
    return passed("nvdec", detail)


def check_mps() -> Check:
    """The private CUDA MPS daemon that the portable GPU server starts (``CAMDET_MPS``).

    Starts one as ``camdet serve`` would and runs a CUDA client through it: on an H100 the
    pipeline processes gave 1,752 frames/s with it against 1,360 without
    (perf/RESULTS.md, session 9).
    """
    from camdet.serving import mps
    from camdet.serving.launch import has_cuda_gpu

    if not has_cuda_gpu():
        return skipped("mps", _NO_GPU)
    try:
        choice = mps.setting()
    except mps.MpsError as error:
        return failed("mps", str(error), "set CAMDET_MPS to auto, 1 or 0 (or unset it)")
    if choice == "0":
        return skipped("mps", "CAMDET_MPS=0: the portable GPU server runs without MPS")
    slower = "the portable GPU server runs without MPS, its processes taking turns on the GPU"
    binary = mps.control_binary()
    if binary is None:
        return warned(
            "mps",
            f"{mps.CONTROL} not found: {slower}",
            "install the NVIDIA driver's compute utilities (in Docker: the 'compute' capability)",
        )
    try:
        mps.start(binary).stop()
    except (mps.MpsError, OSError) as error:
        return warned("mps", f"a private MPS daemon could not serve a CUDA client: {error}", slower)
    return passed("mps", f"a private MPS daemon ({binary}) served a CUDA client")


def check_tensorrt() -> Check:
    """TensorRT's Python package (build_engine.py; the NGC containers have it)."""
    try:
        import tensorrt
    except ImportError:
        return skipped(
            "tensorrt",
            "TensorRT is not installed here: the portable server runs ONNX; plans are "
            "built and served in the NGC containers (docker/README.md)",
        )
    return passed("tensorrt", f"TensorRT {tensorrt.__version__}")


def check_plan(repository: Path) -> Check:
    """Whether the detector's TensorRT plan and its sidecar fit this TensorRT and GPU."""
    from camdet.serving.launch import container_binary, has_cuda_gpu
    from camdet.serving.server import container_plan_problems

    plan = repository / "detector" / "1" / "model.plan"
    if not has_cuda_gpu():
        return skipped("plan", _NO_GPU + "; plans only load on the GPU that built them")
    if not plan.is_file() and container_binary() is None:
        return skipped("plan", f"no plan at {plan} and no container tritonserver: portable mode")
    problems = container_plan_problems(repository)
    if problems:
        return failed(
            "plan",
            "; ".join(problems),
            "rebuild: python build_engine.py build (docker compose up rebuilds it)",
        )
    return passed("plan", f"{plan} matches this TensorRT and GPU (sidecar)")


def check_repository(repository: Path) -> list[Check]:
    """The repository parses, its ensembles are consistent, and portable == production."""
    from camdet.contract import ENSEMBLE, VIDEO_ENSEMBLE
    from camdet.serving.launch import has_cuda_gpu
    from camdet.serving.portable import generate_portable_repository
    from camdet.serving.repository import contract, ensemble_problems, read_repository

    fix = "pytest tests/test_repository.py shows each problem; fix the config.pbtxt named"
    production = read_repository(repository)
    if ENSEMBLE not in production:
        return [failed("repository", f"no {ENSEMBLE!r} ensemble in {repository}", fix)]
    ensembles = [e for e in (ENSEMBLE, VIDEO_ENSEMBLE) if e in production]
    problems = [p for e in ensembles for p in ensemble_problems(production, e)]
    if problems:
        return [failed("repository", "; ".join(problems), fix)]
    checks = [passed("repository", f"{len(production)} models, ensembles {ensembles} consistent")]
    with tempfile.TemporaryDirectory(prefix="camdet-doctor-") as tmp:
        portable_root = generate_portable_repository(
            repository, Path(tmp) / "portable", gpu=has_cuda_gpu()
        )
        portable = read_repository(portable_root)
    differ = sorted(
        name
        for name in production
        if name not in portable or contract(portable[name]) != contract(production[name])
    )
    if differ:
        checks.append(
            failed("contracts", f"portable and production contracts differ: {differ}", fix)
        )
    else:
        checks.append(passed("contracts", "portable and production contracts are identical"))
    return checks
