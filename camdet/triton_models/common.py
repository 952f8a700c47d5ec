"""Helpers shared by the Python-backend models (run inside Triton's Python backend stub).

The config (``args["model_config"]``) is the only source of tensor names, dtypes and
parameters; these helpers read it so the models never re-type a contract.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from camdet.contract import STEP_BATCHES_METRIC, STEP_SECONDS_METRIC
from camdet.steps.parameters import KNOWN_PARAMETERS, check_request_parameters


def load_config(args: dict[str, str]) -> dict[str, Any]:
    """Parse the model config JSON handed to ``initialize``."""
    return json.loads(args["model_config"])


def step_args(args: dict[str, str], model: str) -> dict[str, str]:
    """``initialize`` arguments for a sibling model of the repository, run in this process.

    The one-process ``*_pipeline`` models run the code of the steps they replace with
    those steps' own configs (:mod:`camdet.triton_models.portable.pipeline`), read from
    the repository here, so no contract is written twice.

    Args:
        args: This model's ``initialize`` arguments.
        model: The sibling model's name (its folder beside this model's).

    Returns:
        ``args`` with the sibling's ``model_config`` (Triton's JSON form), folder, name and
        highest version.
    """
    from google.protobuf import json_format

    from camdet.serving.repository import read_config

    folder = Path(args["model_repository"]).parent / model
    config = json_format.MessageToDict(
        read_config(folder / "config.pbtxt"), preserving_proto_field_name=True
    )
    for tensor in [*config.get("input", []), *config.get("output", [])]:
        # protobuf's JSON writes int64 as strings; Triton's hands models numbers.
        tensor["dims"] = [int(d) for d in tensor.get("dims", [])]
    versions = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return {
        **args,
        "model_config": json.dumps(config),
        "model_repository": str(folder),
        "model_name": model,
        "model_version": str(max(versions)),
    }


def parameter(config: dict[str, Any], key: str, default: str | None = None) -> str:
    """Read a string parameter of the config.

    Raises:
        KeyError: If the parameter is missing and no default is given.
    """
    params = config.get("parameters", {})
    if key in params:
        return params[key]["string_value"]
    if default is None:
        raise KeyError(f"config parameter {key!r} is required")
    return default


def output_dtype(config: dict[str, Any], name: str) -> np.dtype:
    """Numpy dtype of an output, as the config declares it."""
    out = pb_utils.get_output_config_by_name(config, name)
    if out is None:
        raise KeyError(f"config has no output {name!r}")
    return np.dtype(pb_utils.triton_string_to_numpy(out["data_type"]))


def tensor_names(config: dict[str, Any], kind: str) -> list[str]:
    """Names of the config's ``"input"`` or ``"output"`` tensors, in config order."""
    return [t["name"] for t in config[kind]]


def error_response(message: str) -> pb_utils.InferenceResponse:
    """A response that fails its own request, a client's fault, with ``message``.

    The client sees gRPC ``INVALID_ARGUMENT`` (HTTP 400) and ``message``, one line that
    says what was wrong with what it sent; the other requests of the batch are unaffected.
    """
    error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    return pb_utils.InferenceResponse(error=error)


def internal_error_response(model: str, exc: BaseException) -> pb_utils.InferenceResponse:
    """A response for a server fault: gRPC ``INTERNAL``, no traceback, no server paths."""
    message = f"internal error in model '{model}' ({type(exc).__name__}); see the server log"
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))


def guarded_execute(execute: Callable[[Any, list], list]) -> Callable[[Any, list], list]:
    """Wrap a model's ``execute``: an exception fails the batch as ``INTERNAL``, tersely.

    Left to the Python backend, an exception escaping ``execute`` reaches every client of
    the batch as ``INTERNAL`` with a Python traceback and the server's file paths. Here
    the traceback goes to the server log and each request gets a one-line error.
    """

    @functools.wraps(execute)
    def run(model: Any, requests: list) -> list:
        try:
            return execute(model, requests)
        except Exception as exc:
            name = type(model).__module__.rsplit(".", 1)[-1]
            pb_utils.Logger.log_error(
                f"{name}: batch of {len(requests)} failed:\n{traceback.format_exc()}"
            )
            return [internal_error_response(name, exc) for _ in requests]

    return run


def checked_parameters(
    request: pb_utils.InferenceRequest, known: tuple[str, ...] = KNOWN_PARAMETERS
) -> dict[str, Any]:
    """The request's parameters (``parameters=`` of tritonclient's ``infer``), each checked.

    Args:
        request: The request.
        known: The parameter names its ensemble takes (:mod:`camdet.steps.parameters`).

    Returns:
        A dict of its own, which the caller may change.

    Raises:
        camdet.steps.parameters.RequestParameterError: For an unknown parameter or a
            value of the wrong type or out of range (answer it with :func:`error_response`).
    """
    return dict(_checked(request.parameters(), known))


@functools.lru_cache(maxsize=1024)
def _checked(raw: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The parameters of a request's JSON text, checked; remembered by that text.

    A camera sends the same text with every frame: a repeat costs a lookup instead of a
    JSON parse and the checks, which py-spy found in 15 % of the GIL-holding samples of a
    video pipeline's stub at 192 cameras (perf/RESULTS.md, session 16; throughput did not
    measurably change without them, session 18). A bad text raises every time (an
    exception is not remembered).
    """
    return check_request_parameters(json.loads(raw) if raw else {}, known)


def instance_device(args: dict[str, str]) -> int | None:
    """CUDA device id of this instance, or None for a CPU instance.

    A GPU instance's stub process also makes it torch's current device: code that uses
    "the current device" (stream capture, DLPack hand-offs, libraries' default streams)
    then works on the instance's GPU rather than on GPU 0.
    """
    if args.get("model_instance_kind") != "GPU":
        return None
    device_id = int(args["model_instance_device_id"])
    import torch

    torch.cuda.set_device(device_id)
    return device_id


def join_on(tensors: list, device: object) -> object:
    """Concatenate request tensors (torch, along dim 0) into one tensor on ``device``.

    A batch's inputs may sit on different devices (the config's warm-up sample, or
    requests that fell back to CPU shared memory when the Python backend's CUDA pool was
    full), so each is moved where the model runs. Inputs that share a device are joined
    first and moved once: one copy per batch instead of one per request.
    """
    import torch

    if len({t.device for t in tensors}) == 1:
        return torch.cat(tensors).to(device)
    return torch.cat([t.to(device) for t in tensors])


def device_name(tensor: object) -> str:
    """Where a tensor lives, as torch names it (``"cpu"``, ``"cuda:0"``); numpy is ``"cpu"``."""
    device = getattr(tensor, "device", None)
    return "cpu" if device is None else str(device)


class DeviceStats:
    """Per-batch debug statistic of one step: which devices its tensors were on.

    A Prometheus counter on Triton's metrics endpoint (``/metrics``, port 8002),
    ``camdet_step_batches_total{model, inputs, outputs}``: one increment per executed
    batch, labelled with where each input and output tensor of the batch was, e.g.
    ``inputs="original_size:cpu,raw_detections:cuda:0"`` (a tensor whose requests sat on
    several devices reads ``cpu+cuda:0``). On a GPU server a ``cpu`` where ``cuda:0`` is
    expected is a host round trip (e.g. the Python backend's CUDA memory pool ran out).
    Tests read it after load.

    Args:
        model: The model's name (``args["model_name"]``).
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.family = pb_utils.MetricFamily(
            name=STEP_BATCHES_METRIC,
            description="Batches executed per camdet step, by the devices of inputs and outputs",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.counters: dict[tuple[str, str], Any] = {}
        self.seconds_family = pb_utils.MetricFamily(
            name=STEP_SECONDS_METRIC,
            description="Seconds spent per camdet step and phase of execute()",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.seconds: dict[str, Any] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to ``camdet_step_seconds_total{model, phase=name}``.

        Triton's statistics time ``execute`` as a whole; the phases say which part of it
        (reading request tensors, computing, building responses) costs, on the machine
        that serves. GPU work is timed where the block waits for it.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            counter = self.seconds.get(name)
            if counter is None:
                labels = {"model": self.model, "phase": name}
                counter = self.seconds[name] = self.seconds_family.Metric(labels=labels)
            counter.increment(time.perf_counter() - start)

    def record(self, inputs: dict[str, list[object]], outputs: dict[str, list[object]]) -> None:
        """Count one batch: its tensors by name (each name: the requests' tensors)."""
        key = (_devices(inputs), _devices(outputs))
        counter = self.counters.get(key)
        if counter is None:
            labels = {"model": self.model, "inputs": key[0], "outputs": key[1]}
            counter = self.counters[key] = self.family.Metric(labels=labels)
        counter.increment(1)


def _devices(tensors: dict[str, list[object]]) -> str:
    return ",".join(
        f"{name}:{'+'.join(sorted({device_name(t) for t in parts}))}"
        for name, parts in sorted(tensors.items())
    )
