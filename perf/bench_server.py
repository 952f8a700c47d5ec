"""The server a bench run measures: the one at ``--url``, or one started from a tuned copy.

The ``--instances``/``--queue-delay-us``/``--param``/``--preferred-batch`` overrides are
applied to a copy of the repository (:func:`tuned_repository`): the production configs
stay untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from camdet.perf.bench_config import BenchConfig, Tuning
from camdet.perf.load import ServerProbe

logger = logging.getLogger(__name__)


def tuned_repository(source: Path, destination: Path, tuning: Tuning, gpu: bool) -> Path:
    """Copy ``source`` to ``destination`` (replaced) with ``tuning`` applied to its configs.

    Only scheduling fields change (instances, queue delay, preferred batches, config
    parameters) and optionally the detector's ONNX; tensor contracts stay as they are.

    Raises:
        KeyError: If an override names a model that is not in the repository.
    """
    from camdet.serving.repository import read_config, write_config

    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))
    named = [tuning.instances, tuning.queue_delay_us, tuning.preferred_batch, tuning.parameters]
    for model in sorted({m for overrides in named for m in overrides}):
        path = destination / model / "config.pbtxt"
        if not path.exists():
            raise KeyError(f"no model {model!r} in {source}")
        config = read_config(path)
        _apply_tuning(config, model, tuning, gpu)
        write_config(config, path)
        logger.info("tuned %s: %s", model, path)
    if tuning.detector_onnx is not None:
        shutil.copyfile(tuning.detector_onnx, destination / "detector" / "1" / "model.onnx")
    return destination


def _apply_tuning(config: Any, model: str, tuning: Tuning, gpu: bool) -> None:
    """Apply ``tuning``'s overrides of ``model`` to its parsed ``ModelConfig``."""
    from tritonclient.grpc import model_config_pb2 as mc

    if model in tuning.instances:
        for group in config.instance_group:
            group.count = tuning.instances[model]
            if group.kind == mc.ModelInstanceGroup.KIND_GPU and not gpu:
                group.kind = mc.ModelInstanceGroup.KIND_CPU
                del group.gpus[:]
    if model in tuning.queue_delay_us:
        config.dynamic_batching.max_queue_delay_microseconds = tuning.queue_delay_us[model]
    if model in tuning.preferred_batch:
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(tuning.preferred_batch[model])
    for key, value in tuning.parameters.get(model, {}).items():
        config.parameters[key].string_value = value


@contextlib.contextmanager
def bench_server(config: BenchConfig) -> Iterator[ServerProbe]:
    """The server to measure: the one at ``config.url``, or one started here."""
    if config.url is not None:
        yield ServerProbe(config.url)
        return
    from camdet.serving.launch import has_cuda_gpu
    from camdet.serving.server import Ports, serve

    workdir = config.out_dir / "server"
    repository = config.repository
    if not config.tuning.is_empty():
        repository = tuned_repository(
            repository, workdir / "tuned_repository", config.tuning, has_cuda_gpu()
        )
    portable = {"auto": None, "portable": True, "container": False}[config.server_mode]
    with contextlib.ExitStack() as stack:
        with _environment(config.server_env):  # seen by the server process only
            server = stack.enter_context(
                serve(repository, Ports.free(), portable=portable, workdir=workdir)
            )
        logger.info("server ready on %s, log %s", server.grpc_url, server.log_path)
        yield ServerProbe(server.grpc_url, server.process.pid if server.process else None)


@contextlib.contextmanager
def _environment(overrides: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
