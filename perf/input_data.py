"""perf_analyzer input-data JSON made from real frames, for the ensemble and each step.

The format is perf_analyzer's "Real Input Data" (``docs/input_data.md`` of
triton-inference-server/perf_analyzer): ``{"data": [entry, ...]}`` where each entry maps
every model input to its tensor for one request of batch 1. A tensor is a flat list, a
``{"b64": ...}`` object (little-endian bytes, row-major), or ``{"content": <either>,
"shape": [...]}``; ``shape`` excludes the batch dimension and is what lets variable-sized
inputs such as an encoded JPEG (``dims: [-1]``) differ from one entry to the next.

Every tensor here is ``{"content": {"b64": ...}, "shape": [...]}``:

- ``detect``, ``validate``, ``preprocess``: the JPEG bytes (UINT8, shape ``[bytes]``);
- ``detector``: the letterboxed FP16 ``[3, 640, 640]`` of those frames (the project's
  OpenCV reference letterbox);
- ``postprocess``: the detector's FP16 head output on them, the INT32 original size and
  the letterboxed frame (for the boxes' colours).

The step inputs are produced by walking the ensemble's ``input_map``/``output_map`` with a
reference implementation of each step, and every document is checked against the JSON
Schema of the documented format (:data:`INPUT_DATA_SCHEMA`) and against the model
configs (names, dtypes, fixed dims, byte counts). Our own bench and the locustfile read
their frames from the ensemble's file, so all load generators send the same bytes.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from camdet.perf.frames import EncodedFrame
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import triton_to_np_dtype

from camdet.runtime.runners import DetectorRunner

logger = logging.getLogger(__name__)

SCHEMA_FILE = "input_data.schema.json"
"""Name of the schema file written beside the documents."""

_FLAT = {"type": "array", "items": {"type": ["number", "string", "boolean"]}}
_B64 = {
    "type": "object",
    "properties": {
        "b64": {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": "^[A-Za-z0-9+/]*={0,2}$",
        }
    },
    "required": ["b64"],
    "additionalProperties": False,
}

INPUT_DATA_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://github.com/triton-inference-server/perf_analyzer/docs/input_data.md",
    "title": "perf_analyzer real input data (--input-data FILE.json)",
    "description": (
        "data: one entry per request (or, for sequence models, one array of entries per "
        "stream); an entry maps each input name to a tensor: a flat row-major list, "
        "{b64} little-endian bytes, or {content, shape} with shape excluding the batch "
        "dimension. validation_data: the expected outputs, aligned with data."
    ),
    "type": "object",
    "properties": {
        "data": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [
                    {"$ref": "#/$defs/entry"},
                    {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/entry"}},
                ]
            },
        },
        "validation_data": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
    },
    "required": ["data"],
    "additionalProperties": False,
    "$defs": {
        "entry": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"$ref": "#/$defs/tensor"},
        },
        "tensor": {
            "oneOf": [
                {"$ref": "#/$defs/flat"},
                {"$ref": "#/$defs/b64"},
                {
                    "type": "object",
                    "properties": {
                        "content": {"oneOf": [{"$ref": "#/$defs/flat"}, {"$ref": "#/$defs/b64"}]},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    },
                    "required": ["content"],
                    "additionalProperties": False,
                },
            ]
        },
        "flat": _FLAT,
        "b64": _B64,
    },
}
"""JSON Schema (draft 2020-12) of perf_analyzer's documented input-data format."""

StepFunction = Callable[..., tuple[np.ndarray, ...]]
"""Reference of one step: its inputs in config order -> its outputs in config order
(one sample each, no batch dimension)."""


def reference_steps(runner: DetectorRunner | None) -> dict[str, StepFunction]:
    """CPU reference implementations of the ensemble's steps, keyed by model name.

    Args:
        runner: Runs the detector; without one the ``postprocess`` inputs cannot be made.
    """
    import torch
    from camdet.perf.pipelines import letterbox_frame

    def preprocess(encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image, size = letterbox_frame(encoded.tobytes())
        return image, np.array(size, dtype=np.int32)

    steps: dict[str, StepFunction] = {
        # checked_image, damaged: the reference frames are intact.
        "validate": lambda encoded: (encoded, np.zeros(1, dtype=bool)),
        "preprocess": preprocess,
    }
    if runner is not None:
        # The torch runner answers with a CUDA tensor on a GPU machine: copy it to the host.
        steps["detector"] = lambda images: (torch.as_tensor(runner(images[None]))[0].cpu().numpy(),)
    return steps


def numpy_dtype(data_type: int) -> np.dtype:
    """Numpy dtype of a ``ModelConfig`` data type (``TYPE_FP16`` -> float16)."""
    return np.dtype(triton_to_np_dtype(mc.DataType.Name(data_type).removeprefix("TYPE_")))


def tensor_json(array: np.ndarray) -> dict[str, Any]:
    """``{"content": {"b64": ...}, "shape": [...]}`` of one sample (little-endian bytes)."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {
        "content": {"b64": base64.b64encode(little.tobytes()).decode("ascii")},
        "shape": list(array.shape),
    }


def step_samples(
    frames: Sequence[bytes],
    configs: dict[str, mc.ModelConfig],
    steps: dict[str, StepFunction],
    ensemble: str = "detect",
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every model's inputs for each frame, found by walking the ensemble's maps.

    Args:
        frames: Encoded frames (the ensemble input).
        configs: The repository's configs by model name.
        steps: Reference step functions (:func:`reference_steps`).
        ensemble: The ensemble's name.

    Returns:
        ``{model: [{input_name: array}, ...]}`` for the ensemble and each step model whose
        inputs could be produced, one dict per frame, cast to the configs' dtypes.
    """
    samples: dict[str, list[dict[str, np.ndarray]]] = {}
    for data in frames:
        (ensemble_input,) = configs[ensemble].input
        tensors = {ensemble_input.name: np.frombuffer(data, dtype=np.uint8)}
        samples.setdefault(ensemble, []).append(dict(tensors))
        for step in configs[ensemble].ensemble_scheduling.step:
            _run_step(configs[step.model_name], step, tensors, steps, samples)
    return samples


def _run_step(
    config: mc.ModelConfig,
    step: mc.ModelEnsembling.Step,
    tensors: dict[str, np.ndarray],
    steps: dict[str, StepFunction],
    samples: dict[str, list[dict[str, np.ndarray]]],
) -> None:
    """Record one step's inputs and, if it has a reference, add its outputs to ``tensors``."""
    if not all(step.input_map[t.name] in tensors for t in config.input):
        return
    inputs = {
        t.name: tensors[step.input_map[t.name]].astype(numpy_dtype(t.data_type), copy=False)
        for t in config.input
    }
    samples.setdefault(step.model_name, []).append(inputs)
    function = steps.get(step.model_name)
    if function is None:
        return
    outputs = function(*inputs.values())
    for tensor, value in zip(config.output, outputs, strict=True):
        if tensor.name in step.output_map:
            tensors[step.output_map[tensor.name]] = np.asarray(value).astype(
                numpy_dtype(tensor.data_type), copy=False
            )


def input_data_document(samples: Sequence[dict[str, np.ndarray]]) -> dict[str, Any]:
    """The perf_analyzer document of one model: one data entry per sample."""
    return {"data": [{name: tensor_json(a) for name, a in sample.items()} for sample in samples]}


def schema_problems(document: dict[str, Any]) -> list[str]:
    """Where ``document`` breaks :data:`INPUT_DATA_SCHEMA` (needs ``jsonschema``).

    Returns:
        One line per violation, with its JSON path; empty when valid.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        INPUT_DATA_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{error.json_path}: {error.message[:200]}" for error in validator.iter_errors(document)
    ]


def contract_problems(
    document: dict[str, Any], config: mc.ModelConfig, sequence: bool | None = None
) -> list[str]:
    """Where ``document`` disagrees with the model's config.

    ``sequence`` says whether the model takes sequences (its data may be streams: arrays
    of entries); by default, whether the config has ``sequence_batching`` (an ensemble
    over a sequence model, like ``detect_video``, must say so).

    Checks, per entry: exactly the config's inputs; a shape of the config's rank whose
    fixed dims match; b64 content of ``prod(shape) * itemsize`` bytes (non-string types).

    Returns:
        One sentence per problem; empty when consistent.
    """
    if sequence is None:
        sequence = config.HasField("sequence_batching")
    problems = []
    for index, item in enumerate(document.get("data", [])):
        if isinstance(item, dict):
            problems += _entry_problems(item, f"data[{index}]", config)
        elif not sequence:
            problems.append(f"data[{index}] is a stream; {config.name} is not a sequence model")
        else:
            for step, entry in enumerate(item):
                problems += _entry_problems(entry, f"data[{index}][{step}]", config)
    return problems


def _entry_problems(entry: dict[str, Any], where: str, config: mc.ModelConfig) -> list[str]:
    """Problems of one request's entry against the config's inputs."""
    specs = {t.name: t for t in config.input}
    if set(entry) != set(specs):
        return [f"{where} has {sorted(entry)}, {config.name} takes {sorted(specs)}"]
    return [
        f"{where}.{name}: {p}"
        for name, tensor in entry.items()
        for p in _tensor_problems(tensor, specs[name])
    ]


def _tensor_problems(tensor: Any, spec: mc.ModelInput) -> list[str]:
    if not isinstance(tensor, dict) or "shape" not in tensor:
        return ["no explicit shape"]
    shape, dims = list(tensor["shape"]), list(spec.dims)
    if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape, strict=True)):
        return [f"shape {shape} does not fit the config dims {dims}"]
    content = tensor.get("content")
    if spec.data_type == mc.TYPE_STRING or not isinstance(content, dict):
        return []
    size = len(base64.b64decode(content["b64"], validate=True))
    expected = math.prod(shape) * numpy_dtype(spec.data_type).itemsize
    return [] if size == expected else [f"{size} bytes for shape {shape}, expected {expected}"]


def write_input_data(
    out_dir: Path,
    frames: Sequence[EncodedFrame],
    repository: Path,
    runner: DetectorRunner | None = None,
    max_tensor_frames: int = 4,
    models: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write ``<model>.json`` for the ensemble and each step, plus the schema, checked.

    Args:
        out_dir: Destination folder (created).
        frames: The encoded frames (all of them go to the encoded-input models).
        repository: The production model repository (its configs define the contracts).
        runner: Runs the detector to make the ``postprocess`` inputs (no ``postprocess``
            document without one).
        max_tensor_frames: Frames for models with decoded inputs (``detector``,
            ``postprocess``: 2.4 MB of FP16 per frame before base64).
        models: Only these models (default: every model reachable from the ensemble).

    Returns:
        The written documents by model name.

    Raises:
        ValueError: If a generated document breaks the schema or its model's contract.
    """
    from camdet.contract import ENSEMBLE
    from camdet.serving.repository import read_repository

    configs = read_repository(repository)
    samples = step_samples([f.data for f in frames], configs, reference_steps(runner), ENSEMBLE)
    for name, rows in samples.items():
        if not _is_encoded_input(configs[name]):
            del rows[max_tensor_frames:]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SCHEMA_FILE).write_text(json.dumps(INPUT_DATA_SCHEMA, indent=2) + "\n")
    written = {}
    for name, rows in samples.items():
        if models is not None and name not in models:
            continue
        document = input_data_document(rows)
        problems = _schema_problems_if_possible(document) + contract_problems(
            document, configs[name]
        )
        if problems:
            raise ValueError(f"input data of {name} is invalid: " + "; ".join(problems[:5]))
        written[name] = out_dir / f"{name}.json"
        written[name].write_text(json.dumps(document))
        logger.info("wrote %s: %d entries", written[name], len(rows))
    return written


def _schema_problems_if_possible(document: dict[str, Any]) -> list[str]:
    """:func:`schema_problems`, or none with a warning where jsonschema is missing."""
    try:
        return schema_problems(document)
    except ImportError:
        logger.warning("jsonschema is not installed: schema check skipped (configs checked)")
        return []


def _is_encoded_input(config: mc.ModelConfig) -> bool:
    return [numpy_dtype(t.data_type) for t in config.input] == [np.dtype(np.uint8)]


def read_encoded_frames(path: Path, input_name: str = "encoded_image") -> list[bytes]:
    """The encoded frames of an ensemble input-data document, in order.

    This is how our bench and the locustfile load their frames, so they send exactly
    what perf_analyzer sends.

    Raises:
        ValueError: If an entry lacks ``input_name`` as b64 content.
    """
    document = json.loads(Path(path).read_text())
    frames = []
    for index, entry in enumerate(document["data"]):
        tensor = entry.get(input_name) if isinstance(entry, dict) else None
        content = tensor.get("content", tensor) if isinstance(tensor, dict) else None
        if not isinstance(content, dict) or "b64" not in content:
            raise ValueError(f"{path}: data[{index}] has no b64 {input_name!r}")
        frames.append(base64.b64decode(content["b64"]))
    return frames


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf input-data`` alone, for ``python -m camdet.perf.input_data``."""


@app.command()
def input_data(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("perf-data"),
    repository: Annotated[
        Path | None,
        typer.Option(
            envvar="CAMDET_MODEL_REPOSITORY",
            help="Model repository whose configs the documents must fit.",
            show_default="model_repository/",
        ),
    ] = None,
    frames: Annotated[int, typer.Option(help="Synthetic frames.")] = 16,
    sizes: Annotated[str, typer.Option(help="Camera sizes WxH,...")] = "1280x720,1920x1080",
    seed: Annotated[int, typer.Option(help="Scene seed.")] = 0,
    tensor_frames: Annotated[int, typer.Option(help="Frames of the decoded steps.")] = 4,
    runner: Annotated[
        str, typer.Option(help="Detector runner of the postprocess inputs: onnxruntime, torch.")
    ] = "onnxruntime",
    check: Annotated[
        Path | None, typer.Option(help="Only check this document against --model's config.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model of the --check document.")] = "detect",
) -> None:
    """perf_analyzer input-data JSON from real frames, for the ensemble and each step.

    Checked against the documented format and the model configs; with --check, only
    check a document (exit 1 if it is invalid).
    """
    from camdet.perf.frames import parse_size, synthetic_frames

    from camdet.runtime.runners import RUNNERS, make_runner
    from camdet.serving.repository import PRODUCTION_REPOSITORY, read_config

    if runner not in RUNNERS:
        raise typer.BadParameter(f"one of {', '.join(sorted(RUNNERS))}", param_hint="--runner")
    repository = repository or PRODUCTION_REPOSITORY
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if check is not None:
        document = json.loads(check.read_text())
        config = read_config(repository / model / "config.pbtxt")
        problems = schema_problems(document) + contract_problems(document, config)
        for problem in problems:
            print(problem)
        print(f"{check}: {'INVALID' if problems else 'valid'} for {model}")
        raise typer.Exit(1 if problems else 0)
    encoded = synthetic_frames(frames, tuple(parse_size(s) for s in sizes.split(",")), seed)
    detector = make_runner(runner, repository / "detector" / "1" / "model.onnx")
    written = write_input_data(out, encoded, repository, detector, tensor_frames)
    for name, path in written.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.input_data")
