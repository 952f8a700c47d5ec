"""``camdet doctor``'s server checks: readiness, per-model readiness, a smoke benchmark.

The benchmark sends one synthetic camera frame (a JPEG with known objects) through the
``detect`` ensemble from a few concurrent requesters for ``bench_s`` seconds and reports
frames per second and latency; any failed request fails the check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from camdet.doctor.checks import (
    Check,
    CheckFunction,
    DoctorOptions,
    failed,
    passed,
    skipped,
    warned,
)

BENCH_CONCURRENCY = 4
_TIMEOUT_S = 10.0


def server_checks(
    options: DoctorOptions,
) -> Iterator[tuple[str, CheckFunction]]:
    """The server checks by name: skipped, with the reason, when no URL is given."""
    if options.url is None:
        reason = "no --url: give a running server's gRPC host:port to check it"
        yield "server", lambda: skipped("server", reason)
        return
    yield "server", partial(check_server, options)
    yield "benchmark", partial(smoke_benchmark, options)


def _client(options: DoctorOptions) -> grpcclient.InferenceServerClient:
    assert options.url is not None

    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    return grpcclient.InferenceServerClient(
        options.url,
        ssl=options.tls,
        root_certificates=text(options.root_certificates),
        private_key=text(options.private_key),
        certificate_chain=text(options.certificate_chain),
    )


def check_server(options: DoctorOptions) -> list[Check]:
    """The server is ready, and so is every model of the repository it should serve."""
    from camdet.serving.repository import read_repository

    expected = sorted(read_repository(options.repository))
    with _client(options) as client:
        try:
            ready = client.is_server_ready(client_timeout=_TIMEOUT_S)
        except InferenceServerException as error:
            return [
                failed(
                    "server",
                    f"no server answers at {options.url}: {error.message()}",
                    "start it (camdet serve / docker compose up) or fix --url, --tls",
                )
            ]
        if not ready:
            return [failed("server", f"{options.url} is live but not ready", "see its log")]
        states = {m: client.is_model_ready(m, client_timeout=_TIMEOUT_S) for m in expected}
    not_ready = [m for m, ok in states.items() if not ok]
    checks = [passed("server", f"{options.url} is ready")]
    if not_ready:
        checks.append(
            failed(
                "models",
                f"not ready: {not_ready} (ready: {[m for m, ok in states.items() if ok]})",
                "the server log names each model's load error",
            )
        )
    else:
        checks.append(passed("models", f"all {len(expected)} models ready: {', '.join(expected)}"))
    return checks


def _frame() -> bytes:
    import numpy as np

    from camdet.scenes import encode_jpeg, render_frame

    return encode_jpeg(render_frame(np.random.default_rng(0), 640, 360).image)


def smoke_benchmark(options: DoctorOptions) -> Check:
    """``bench_s`` seconds of frames through ``detect``: throughput, latency, no failures."""
    from camdet.contract import detect

    if options.bench_s <= 0:
        return skipped("benchmark", "--bench-seconds 0")
    frame = _frame()
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + options.bench_s

    def requester() -> None:
        with _client(options) as client:
            while time.monotonic() < deadline:
                start = time.monotonic()
                try:
                    detect(client, frame, timeout_s=_TIMEOUT_S)
                except InferenceServerException as error:
                    with lock:
                        errors.append(error.message())
                    continue
                with lock:
                    latencies.append(time.monotonic() - start)

    threads = [threading.Thread(target=requester) for _ in range(BENCH_CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _bench_verdict(options.bench_s, sorted(latencies), errors)


def _bench_verdict(seconds: float, latencies: list[float], errors: list[str]) -> Check:
    if errors:
        return failed(
            "benchmark",
            f"{len(errors)} of {len(errors) + len(latencies)} requests failed: {errors[0]}",
            "the server log says why",
        )
    if not latencies:
        return failed("benchmark", f"no answer within {seconds:g} s", "the server log says why")
    p50 = latencies[len(latencies) // 2] * 1000.0
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000.0
    detail = (
        f"{len(latencies) / seconds:.1f} frames/s at concurrency {BENCH_CONCURRENCY}, "
        f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms, 0 failed"
    )
    if len(latencies) < BENCH_CONCURRENCY:
        return warned("benchmark", detail, "very slow: check the server's CPU/GPU load")
    return passed("benchmark", detail)
