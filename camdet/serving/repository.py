"""Reading, checking and writing Triton model repositories (``config.pbtxt`` files).

Every config is parsed into ``tritonclient.grpc.model_config_pb2.ModelConfig`` with
``google.protobuf.text_format``, so a typo fails here rather than in the server.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import triton_to_np_dtype

from camdet.contract import ENSEMBLE, TensorSpec

PRODUCTION_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
"""The production repository of a source checkout (editable install)."""

LOCAL_REPOSITORY = "model_repository"
"""A folder of this name in the current directory is served before the installed one."""


def find_repository(explicit: Path | None, cwd: Path | None = None) -> tuple[Path, str]:
    """The repository to serve, and why that one.

    Order: ``--repository``/``CAMDET_MODEL_REPOSITORY``; else ``./model_repository`` when
    it holds a detector config (a project folder made with ``camdet model add``); else the
    installed camdet's :data:`PRODUCTION_REPOSITORY`.

    Args:
        explicit: The option's value, or ``None`` when not given.
        cwd: Directory to look in (default: the current one).

    Returns:
        The repository and a few words saying where it came from.
    """
    if explicit is not None:
        return Path(explicit), "from --repository / CAMDET_MODEL_REPOSITORY"
    local = (cwd or Path.cwd()) / LOCAL_REPOSITORY
    if (local / "detector" / "config.pbtxt").is_file():
        return local.resolve(), "found in the current directory"
    return PRODUCTION_REPOSITORY, "the installed camdet's"


def read_config(path: Path) -> mc.ModelConfig:
    """Parse one ``config.pbtxt``.

    Raises:
        text_format.ParseError: If the text is not a valid ModelConfig.
    """
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def write_config(config: mc.ModelConfig, path: Path) -> None:
    """Write a ModelConfig as ``config.pbtxt`` text."""
    Path(path).write_text(text_format.MessageToString(config))


def read_repository(root: Path) -> dict[str, mc.ModelConfig]:
    """Parse every model of a repository, keyed by folder name."""
    return {p.parent.name: read_config(p) for p in sorted(Path(root).glob("*/config.pbtxt"))}


def contract(config: mc.ModelConfig) -> dict[str, object]:
    """The externally visible contract of a model: tensors and batching limit."""

    def specs(tensors) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec.of(t) for t in tensors)

    return {
        "max_batch_size": config.max_batch_size,
        "inputs": specs(config.input),
        "outputs": specs(config.output),
    }


def ensemble_problems(configs: dict[str, mc.ModelConfig], name: str = ENSEMBLE) -> list[str]:
    """Cross-check an ensemble's input/output maps against its step models.

    Returns:
        One sentence per inconsistency (empty when consistent): unknown step models,
        unknown step tensors, intermediates consumed before being produced, ensemble
        outputs nobody produces, mismatched dtypes between producer and consumer.
    """
    ensemble = configs[name]
    dtypes = {t.name: t.data_type for t in ensemble.input}
    problems: list[str] = []
    for step in ensemble.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"step model {step.model_name!r} is not in the repository")
        else:
            problems += _step_problems(step, model, dtypes)
    for out in ensemble.output:
        if out.name not in dtypes:
            problems.append(f"ensemble output {out.name!r} is produced by no step")
        elif dtypes[out.name] != out.data_type:
            problems.append(
                f"ensemble output {out.name!r} is {_dtype(out.data_type)}, "
                f"its step gives {_dtype(dtypes[out.name])}"
            )
    return problems


def _step_problems(
    step: mc.ModelEnsembling.Step, model: mc.ModelConfig, dtypes: dict[str, int]
) -> list[str]:
    """Check one ensemble step; record the dtypes of the tensors it produces."""
    inputs = {t.name: t.data_type for t in model.input}
    outputs = {t.name: t.data_type for t in model.output}
    problems = []
    for key, value in step.input_map.items():
        if key not in inputs:
            problems.append(f"{step.model_name} has no input {key!r}")
        elif value not in dtypes:
            problems.append(f"{step.model_name}.{key} reads {value!r} before anything produces it")
        elif dtypes[value] != inputs[key]:
            problems.append(
                f"{step.model_name}.{key} expects {_dtype(inputs[key])}, "
                f"{value!r} is {_dtype(dtypes[value])}"
            )
    for key, value in step.output_map.items():
        if key not in outputs:
            problems.append(f"{step.model_name} has no output {key!r}")
        else:
            dtypes[value] = outputs[key]
    return problems


def _dtype(value: int) -> str:
    return mc.DataType.Name(value)


def _itemsize(data_type: int) -> int | None:
    """Bytes per element of a config data type; None for strings and unknown types."""
    dtype = triton_to_np_dtype(mc.DataType.Name(data_type).removeprefix("TYPE_"))
    return None if dtype is None or dtype is np.object_ else np.dtype(dtype).itemsize


def gpu_tensor_bytes_per_frame(configs: dict[str, mc.ModelConfig]) -> int:
    """Bytes of the fixed-size tensors that GPU models of a repository hand over, per frame.

    The sum, over models with GPU instances (Triton's default kind where a GPU exists), of
    every input and output whose dims are all known; variable-size tensors (encoded
    frames, detections) are small or live on the host.
    """
    total = 0
    for config in configs.values():
        groups = config.instance_group
        if groups and all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in groups):
            continue
        for tensor in [*config.input, *config.output]:
            itemsize = _itemsize(tensor.data_type)
            if all(d >= 0 for d in tensor.dims) and itemsize is not None:
                total += math.prod(tensor.dims) * itemsize
    return total


def cuda_pool_bytes(configs: dict[str, mc.ModelConfig], batches_in_flight: int = 4) -> int:
    """Bytes of Triton's CUDA memory pool per GPU (``--cuda-memory-pool-byte-size``).

    The Python backend passes GPU tensors between processes through this pool; when it is
    full, it silently falls back to CPU shared memory - a host round trip, and a batch whose
    tensors sit on different devices. Sized for ``batches_in_flight`` full batches of every
    GPU tensor at once (at least Triton's 64 MiB default): 4 batches of 64 is 256 cameras
    each with one frame in flight.
    """
    frames = batches_in_flight * max((c.max_batch_size for c in configs.values()), default=1)
    return max(64 << 20, frames * gpu_tensor_bytes_per_frame(configs))
