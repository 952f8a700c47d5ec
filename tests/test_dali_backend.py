"""The production ``preprocess`` model served by Triton's real DALI backend (issue #22).

The backend is built by ``docker/build_dali_backend.sh`` (``camdet backends build dali``)
for the Triton 2.51 server of ``nvidia-pytriton``; without it these tests skip. The model
is the production folder as it is, except that without a GPU its instances are CPU
instances and the same ``1/dali.py`` graph is served serialized for the CPU
(``1/model.dali``, :func:`camdet.serving.backends.serialize_dali_pipeline`): DALI refuses
to serialize the ``device_id=0`` pipeline where there is no CUDA.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from camdet.serving.backends import (
    add_dali_backend,
    dali_backend_status,
    serialize_dali_pipeline,
)
from camdet.serving.launch import has_cuda_gpu, portable_backend_dir, portable_launch
from camdet.serving.ports import Ports
from camdet.serving.repository import PRODUCTION_REPOSITORY, read_config, write_config
from camdet.serving.server import TritonServer
from camdet.steps.preprocess.runner import BatchPreprocessor
from tests.helpers.images import bad_huffman_table, encode

BACKEND, BACKEND_LINE = dali_backend_status()
pytestmark = pytest.mark.skipif(
    BACKEND is None, reason=f"needs the DALI backend built for this DALI: {BACKEND_LINE}"
)

MODEL = "preprocess"
DALI_PY = PRODUCTION_REPOSITORY / MODEL / "1" / "dali.py"
# Ragged camera frames: landscape, portrait, odd sizes, PNG and JPEG, all in one batch.
BATCH_WINDOW_US = 1_000_000
"""The test copy's ``max_queue_delay_microseconds`` (see :func:`_serve_copy`)."""
SIZES = [(720, 1280), (480, 640), (1080, 1920), (500, 333), (37, 91), (640, 640)]
# What the DALI backend answers every request of a batch that holds one frame its decoder
# refuses (measured here: DALI 2.4, dali_backend r26.06, CPU instance): the whole batch
# fails, each request with the same error, which names the bad frame's place in the batch:
#   Runtime error: Critical error in pipeline:
#   Error in CPU operator `nvidia.dali.fn.decoders.image`,
#   which was used in the pipeline definition with the following traceback:
#
#     File ".../preprocess/1/dali.py", line 61, in preprocess
#       images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB, ...)
#
#   encountered:
#
#   Failed to decode sample #2 :
#   Current pipeline object is no longer valid.
# (#2: the bad frame's place in the batch, which is the requests' order of arrival.)
BATCH_ERROR = (
    "Runtime error: Critical error in pipeline:",
    "operator `nvidia.dali.fn.decoders.image`",  # CPU here; MIXED on a GPU
    "Failed to decode sample #",
    "Current pipeline object is no longer valid.",
)


def frames() -> list[bytes]:
    """One encoded frame per size (every third a PNG), seeded."""
    rng = np.random.default_rng(22)
    out = []
    for index, (height, width) in enumerate(SIZES):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out.append(encode(image, ".png" if index % 3 == 1 else ".jpg"))
    return out


def refused_jpeg() -> bytes:
    """A JPEG whose Huffman table is destroyed: right magic bytes, the decoder refuses it."""
    return bad_huffman_table(encode(np.full((48, 64, 3), 128, np.uint8)))


def _serve_copy(source: Path, repository: Path, gpu: bool) -> None:
    """The production model folder, with CPU instances and ``model.dali`` without a GPU.

    The batcher waits up to :data:`BATCH_WINDOW_US` for a preferred batch size, so that the
    requests a test sends together run as one batch (the production 500 us forms batches
    from whatever has arrived, which on a shared 2-core machine splits them at random).
    """
    target = repository / MODEL
    shutil.copytree(source, target)
    config = read_config(target / "config.pbtxt")
    config.dynamic_batching.max_queue_delay_microseconds = BATCH_WINDOW_US
    if not gpu:
        for group in config.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
            group.count = 1
            del group.gpus[:]
        serialize_dali_pipeline(target)
    write_config(config, target / "config.pbtxt")


@pytest.fixture(scope="module")
def dali_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The portable Triton 2.51 serving the production ``preprocess`` with the DALI backend."""
    assert BACKEND is not None
    workdir = tmp_path_factory.mktemp("dali-backend")
    repository = workdir / "repository"
    _serve_copy(PRODUCTION_REPOSITORY / MODEL, repository, has_cuda_gpu())
    ports = Ports.free()
    launch = portable_launch(repository, ports, workdir)
    add_dali_backend(portable_backend_dir(workdir), BACKEND)
    with TritonServer(launch, ports, log_path=workdir / "tritonserver.log") as running:
        yield running
    assert not running.is_running(), "tritonserver still running after stop"


@pytest.fixture(scope="module")
def client(dali_server: TritonServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(dali_server.grpc_url) as connection:
        yield connection


@pytest.fixture(scope="module")
def stand_in() -> BatchPreprocessor:
    """The Python stand-in's runner on the same ``1/dali.py``, on the server's device."""
    device = 0 if has_cuda_gpu() else None
    return BatchPreprocessor(DALI_PY, max_batch_size=64, num_threads=2, device_id=device)


def _host(tensor: object) -> np.ndarray:
    """A stand-in output on the host (torch on a GPU, numpy on the CPU)."""
    return tensor.cpu().numpy() if hasattr(tensor, "cpu") else np.asarray(tensor)


def _input(frame: bytes) -> grpcclient.InferInput:
    data = np.frombuffer(frame, np.uint8)[None]
    tensor = grpcclient.InferInput("encoded_image", list(data.shape), "UINT8")
    tensor.set_data_from_numpy(data)
    return tensor


def send_concurrently(
    client: grpcclient.InferenceServerClient, payloads: list[bytes]
) -> list[object]:
    """Send every payload at once; results (InferResult or exception) in order."""
    results: list[object] = [None] * len(payloads)
    pending = threading.Semaphore(0)

    def callback(index: int):
        def finish(result: object, error: object) -> None:
            results[index] = error if error is not None else result
            pending.release()

        return finish

    for index, payload in enumerate(payloads):
        client.async_infer(MODEL, [_input(payload)], callback=callback(index))
    for _ in payloads:
        assert pending.acquire(timeout=120), "requests unanswered after 120 s"
    return results


def send_as_one_batch(client: grpcclient.InferenceServerClient, payloads: list[bytes]) -> list:
    """:func:`send_concurrently`, checked to have run as one batch (one more execution)."""
    before = _executions(client)
    results = send_concurrently(client, payloads)
    ran = _executions(client) - before
    assert ran == 1, f"{len(payloads)} requests ran as {ran} batches, not one"
    return results


def _executions(client: grpcclient.InferenceServerClient) -> int:
    """Executions (batches) of the model so far, failed ones included."""
    return client.get_inference_statistics(MODEL).model_stats[0].execution_count


def test_served_by_the_dali_backend(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config(MODEL).config
    assert config.backend == "dali"
    assert client.is_model_ready(MODEL)


def test_same_tensors_as_the_stand_in_for_a_ragged_batch(
    client: grpcclient.InferenceServerClient, stand_in: BatchPreprocessor
) -> None:
    payloads = frames()
    results = send_as_one_batch(client, payloads)

    expected = stand_in.run([np.frombuffer(p, np.uint8)[None] for p in payloads])
    assert expected.errors == {}
    images, sizes = (_host(output) for output in expected.outputs)
    for index, result in enumerate(results):
        assert isinstance(result, grpcclient.InferResult), f"frame {index}: {result}"
        image = result.as_numpy("preprocessed_image")
        assert image.dtype == np.float16 and image.shape == (1, 3, 640, 640)
        np.testing.assert_array_equal(image, images[index : index + 1], f"frame {index}")
        np.testing.assert_array_equal(result.as_numpy("original_size"), sizes[index : index + 1])
        assert result.as_numpy("original_size").tolist() == [list(SIZES[index])]


def test_a_refused_frame_fails_its_whole_batch(
    client: grpcclient.InferenceServerClient, stand_in: BatchPreprocessor
) -> None:
    """Measured: the DALI backend fails every request of the batch, the good ones too.

    (The stand-in retries such a batch request by request, so only the bad frame fails:
    with the DALI backend it is ``validate``'s header checks that keep bad frames out of
    preprocess batches.)
    """
    good = frames()[:4]
    payloads = [good[0], good[1], refused_jpeg(), good[2], good[3]]
    results = send_as_one_batch(client, payloads)
    errors = [r for r in results if isinstance(r, InferenceServerException)]
    assert len(errors) == len(payloads), [type(r).__name__ for r in results]
    messages = {e.message() for e in errors}
    assert len(messages) == 1, messages  # every request gets the same error
    (message,) = messages
    for part in BATCH_ERROR:
        assert part in message, message

    # The stand-in, on the same batch: only the refused frame's request fails.
    answered = stand_in.run([np.frombuffer(p, np.uint8)[None] for p in payloads])
    assert sorted(answered.errors) == [2]

    # The backend's pipeline survives: the next batch of good frames is answered.
    again = send_concurrently(client, good)
    assert all(isinstance(r, grpcclient.InferResult) for r in again), again


@pytest.fixture(scope="module")
def ensemble(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[grpcclient.InferenceServerClient]:
    """``camdet serve``'s portable server where the backend is built: the whole repository.

    The suite serves the Python stand-in (tests/conftest.py sets ``CAMDET_DALI_BACKEND=0``);
    this server is what a user who built the backend gets, in the three-step arrangement
    that calls ``preprocess`` (on a GPU, ``camdet serve`` runs ``detect`` as one
    ``detect_pipeline`` process unless ``CAMDET_PIPELINES=0``).
    """
    from camdet.serving.server import serve

    workdir = tmp_path_factory.mktemp("dali-ensemble")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("CAMDET_DALI_BACKEND", raising=False)
        with (
            serve(
                PRODUCTION_REPOSITORY,
                Ports.free(),
                portable=True,
                workdir=workdir,
                pipelines=False,
            ) as running,
            grpcclient.InferenceServerClient(running.grpc_url) as connection,
        ):
            yield connection


# On a GPU the reference server answers through detect_pipeline, whose detector CUDA graph
# for its batch size may pick other FP16 kernels than a batch of one (tests/test_pipeline.py).
BOX_TOLERANCE = 1.0 if has_cuda_gpu() else 1e-3
"""Pixels between the DALI backend's ensemble and the stand-in's, per box coordinate."""


def test_serve_runs_the_ensemble_on_the_dali_backend_as_on_the_stand_in(
    ensemble: grpcclient.InferenceServerClient, server: TritonServer
) -> None:
    from camdet.contract import detect
    from camdet.scenes import render_frame

    assert ensemble.get_model_config(MODEL).config.backend == "dali"
    rng = np.random.default_rng(31)
    payloads = [encode(render_frame(rng, w, h).image) for w, h in [(1280, 720), (720, 1280)] * 3]
    found = 0
    with grpcclient.InferenceServerClient(server.grpc_url) as reference:
        for payload in payloads:
            got, expected = detect(ensemble, payload), detect(reference, payload)
            assert [d.label for d in got] == [d.label for d in expected]
            boxes = [d.box for d in got], [d.box for d in expected]
            np.testing.assert_allclose(*boxes, atol=BOX_TOLERANCE)
            found += len(got)
    assert found > 10


def test_validate_keeps_a_refused_frame_from_failing_its_dali_batch(
    ensemble: grpcclient.InferenceServerClient,
) -> None:
    # The DALI backend fails a whole batch for one frame its decoder refuses (above);
    # through the ensemble, validate refuses that frame first, alone.
    from tests.helpers.triton import send_concurrently as send_frames

    good = frames()
    payloads = [good[0], refused_jpeg(), good[2], good[3]]
    answers = send_frames(ensemble, payloads)
    assert answers[1][0] is None and "invalid image" in answers[1][1].message()
    for result, error in (answers[0], answers[2], answers[3]):
        assert error is None
        assert result.as_numpy("num_detections") is not None
