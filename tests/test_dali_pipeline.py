"""The production DALI pipeline (1/dali.py) run on the CPU equals the reference letterbox."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from camdet.geometry import letterbox_image, letterbox_params, to_model_input
from camdet.scenes import render_frame
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch
from tests.helpers.images import encode

SIZES = [(1280, 720), (1920, 1080), (640, 480), (1080, 1920), (1024, 1024), (333, 517)]


@pytest.fixture(scope="module")
def pipeline(repository: Path):
    module = load_pipeline_module(repository / "preprocess/1/dali.py")
    return build_pipeline(module, batch_size=8, num_threads=2, device_id=None)


def run(pipe, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    image, size = run_batch(pipe, [np.frombuffer(e, np.uint8) for e in encoded])
    return np.array(image.as_tensor()), np.array(size.as_tensor())


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_pipeline_equals_reference_letterbox(pipeline, ext: str) -> None:
    rng = np.random.default_rng(3)
    frames = [render_frame(rng, w, h).image for w, h in SIZES]
    encoded = [encode(f, ext, 95) for f in frames]
    images, sizes = run(pipeline, encoded)
    assert images.dtype == np.float16 and images.shape == (len(SIZES), 3, 640, 640)
    assert sizes.dtype == np.int32
    assert sizes.tolist() == [[h, w] for w, h in SIZES]
    for got, data in zip(images, encoded, strict=True):
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        expected = to_model_input(letterbox_image(decoded)).astype(np.float32)
        diff = np.abs(got.astype(np.float32) - expected) * 255
        # Bilinear resizes of DALI and OpenCV differ by rounding only; the pad is exact.
        assert diff.mean() < 0.5, diff.mean()
        assert np.percentile(diff, 99.9) <= 3.0
        box = letterbox_params(*decoded.shape[:2])
        pad = np.ones((640, 640), dtype=bool)
        pad[box.top : box.top + box.new_height, box.left : box.left + box.new_width] = False
        assert (got[:, pad] == np.float16(114 / 255)).all()


def test_pipeline_accepts_partial_batches(pipeline) -> None:
    frame = render_frame(np.random.default_rng(0), 1280, 720).image
    images, sizes = run(pipeline, [encode(frame)])
    assert images.shape == (1, 3, 640, 640) and sizes.tolist() == [[720, 1280]]


_CLASSIC = """
import sys
from pathlib import Path

import numpy as np

from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch

pipe = build_pipeline(load_pipeline_module(Path(sys.argv[1])), 8, 2, None)
frames = [np.fromfile(f, np.uint8) for f in sys.argv[3:]]
np.save(sys.argv[2], np.array(run_batch(pipe, frames)[0].as_tensor()))
print("dynamic", pipe.exec_dynamic)
"""


def _run_with(code: str, repository: Path, args: list[Path], **variables: str) -> str:
    """Run ``code`` on the production ``dali.py`` in a new Python with ``variables`` set.

    The measurement variables are read when ``dali.py`` and the pipeline module are
    imported, hence a process of their own. ``code`` gets the ``dali.py`` path, then
    ``args``; returns its stdout (asserting it succeeded).
    """
    dali_py = repository / "preprocess/1/dali.py"
    result = subprocess.run(
        [sys.executable, "-c", code, str(dali_py), *map(str, args)],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_classic_executor_letterboxes_as_the_default_one(
    repository: Path, pipeline, tmp_path: Path
) -> None:
    """``CAMDET_DALI_EXEC_DYNAMIC=0`` (a measurement variable, read at import) builds DALI's
    classic executor, and its frames equal the default executor's."""
    rng = np.random.default_rng(5)
    encoded = [encode(render_frame(rng, w, h).image, ".jpg", 90) for w, h in SIZES[:3]]
    expected, _ = run(pipeline, encoded)
    files = [tmp_path / f"frame-{i}.jpg" for i in range(len(encoded))]
    for file, data in zip(files, encoded, strict=True):
        file.write_bytes(data)
    out = tmp_path / "classic.npy"
    stdout = _run_with(_CLASSIC, repository, [out, *files], CAMDET_DALI_EXEC_DYNAMIC="0")

    assert "dynamic False" in stdout
    assert np.array_equal(np.load(out), expected)


_DECODER_CORES = """
import os, re, sys
from pathlib import Path
import numpy as np
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch
module = load_pipeline_module(sys.argv[1])
pipe = build_pipeline(module, batch_size=2, num_threads=2, device_id=0)
run_batch(pipe, [np.fromfile(sys.argv[2], np.uint8)] * 2)
for task in Path(f"/proc/{os.getpid()}/task").iterdir():
    if re.match(r"\\[DALI\\]\\[TP\\d+\\]Mix", (task / "comm").read_text()):
        print(len(os.sched_getaffinity(int(task.name))))
print("all", len(os.sched_getaffinity(0)))
"""


@pytest.mark.gpu
def test_the_mixed_decoders_threads_may_use_every_core_when_not_affine(
    repository: Path, tmp_path: Path
) -> None:
    """``CAMDET_DALI_AFFINE=0`` (a measurement variable) leaves the ``mixed`` decoder's pool
    threads on every core the process may use. DALI's default pins them to NVML's CPUs of
    the GPU, which on the H100 hosts are all of them too (session 15), so only the
    unpinned case has an outcome to assert everywhere."""
    frame = tmp_path / "frame.jpg"
    frame.write_bytes(encode(render_frame(np.random.default_rng(1), 1280, 720).image, ".jpg", 90))
    stdout = _run_with(_DECODER_CORES, repository, [frame], CAMDET_DALI_AFFINE="0")

    words = stdout.split()  # cores per decoder thread, then "all" and the process's
    cores, total = [int(w) for w in words[:-2]], int(words[-1])
    assert cores, f"no mixed-decoder threads found: {stdout!r}"
    assert cores == [total] * len(cores)
