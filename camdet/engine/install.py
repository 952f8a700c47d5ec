"""Bring a YOLO ONNX model into a model repository: ``camdet model add``.

The file is checked before anything is written (opset, one input ``[B, 3, H, W]`` with a
dynamic batch, one output ``[B, 4 + nc, N]`` with ``nc`` = the number of labels; NMS
exports, YOLOv5's layout and a transposed head are refused by name). Then, in a scratch
copy of the repository's configs, the ONNX tensors get the config's names
(``images``/``output0``, which the ensembles map), the labels file is written one class a
line, and the dims of ``detector``, ``preprocess``, ``preprocess_video`` and
``postprocess`` (its image input) are set from the input size setting
(``CAMDET_INPUT_SIZE``) and the class count. Only when the contract
checks pass there (:func:`camdet.engine.onnx_checks.validate_inputs` and the ensembles'
maps) are the files moved into the repository, each by an atomic rename.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from camdet.engine.contract import (
    BOX_ROWS,
    expected_anchors,
    input_shape,
    load_model_config,
    read_labels,
)
from camdet.engine.errors import ContractError
from camdet.engine.files import atomic_write
from camdet.engine.onnx_checks import validate_inputs

logger = logging.getLogger(__name__)

IMAGE_MODELS = ("preprocess", "preprocess_video", "postprocess")
"""Models with a ``preprocessed_image`` tensor of the detector's input size: the
preprocessors' output, and ``postprocess``'s input (it reads the boxes' colours there)."""

_IMAGE_DIMS_RE = re.compile(r"dims:\s*\[\s*3\s*,\s*\d+\s*,\s*\d+\s*\]")
_HEAD_DIMS_RE = re.compile(r"dims:\s*\[\s*\d+\s*,\s*\d+\s*\]")


@dataclass(frozen=True)
class RepositoryModel:
    """The detector a repository serves.

    Attributes:
        name: Model folder, e.g. ``detector``.
        onnx: Its ONNX file.
        labels: Class names from ``postprocess/labels.txt``.
        input_dims: Per-sample input dims from the config, ``(3, H, W)``.
        output_dims: Per-sample output dims, ``(4 + nc, N)``.
        has_plan: A TensorRT plan is present.
    """

    name: str
    onnx: Path
    labels: list[str]
    input_dims: tuple[int, ...]
    output_dims: tuple[int, ...]
    has_plan: bool


def describe_model(repository: Path, name: str = "detector") -> RepositoryModel:
    """What detector ``repository`` serves, from its config, labels and files.

    Raises:
        ContractError: If the config or labels cannot be read.
    """
    repository = Path(repository)
    config = load_model_config(repository / name / "config.pbtxt")
    labels = read_labels(repository / "postprocess" / "labels.txt")
    return RepositoryModel(
        name=name,
        onnx=repository / name / "1" / "model.onnx",
        labels=labels,
        input_dims=tuple(config.input[0].dims) if config.input else (),
        output_dims=tuple(config.output[0].dims) if config.output else (),
        has_plan=(repository / name / "1" / "model.plan").is_file(),
    )


def _renamed_onnx(onnx_path: Path, input_name: str, output_name: str) -> bytes:
    """The ONNX file with its single input and output renamed to the config's names."""
    import onnx

    model = onnx.load(str(onnx_path))
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        return model.SerializeToString()  # validate_inputs names the problem
    for value, new in ((inputs[0], input_name), (model.graph.output[0], output_name)):
        old, value.name = value.name, new
        for node in model.graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]
    return model.SerializeToString()


def _set_dims(text: str, pattern: re.Pattern[str], dims: tuple[int, ...], path: Path) -> str:
    new, count = pattern.subn("dims: [ " + ", ".join(map(str, dims)) + " ]", text)
    if count == 0:
        raise ContractError(f"cannot update {path}", [f"no dims line matching {dims}"])
    return new


def _stage(repository: Path, scratch: Path, name: str) -> None:
    # Configs, labels and warm-up files only: the weights stay where they are.
    shutil.copytree(repository, scratch, ignore=shutil.ignore_patterns("*.onnx", "*.plan"))


def _write_staged(
    scratch: Path, name: str, onnx_bytes: bytes, labels: list[str]
) -> dict[str, bytes]:
    height, width = input_shape()
    image = (3, height, width)
    head = (BOX_ROWS + len(labels), expected_anchors((height, width)))
    files: dict[str, bytes] = {
        f"{name}/1/model.onnx": onnx_bytes,
        "postprocess/labels.txt": ("\n".join(labels) + "\n").encode(),
    }
    detector = scratch / name / "config.pbtxt"
    text = _set_dims(detector.read_text(), _IMAGE_DIMS_RE, image, detector)
    files[f"{name}/config.pbtxt"] = _set_dims(text, _HEAD_DIMS_RE, head, detector).encode()
    for model in IMAGE_MODELS:
        path = scratch / model / "config.pbtxt"
        if path.is_file():
            files[f"{model}/config.pbtxt"] = _set_dims(
                path.read_text(), _IMAGE_DIMS_RE, image, path
            ).encode()
    for relative, data in files.items():
        target = scratch / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return files


def _check_staged(scratch: Path, name: str) -> None:
    from camdet.serving.repository import ensemble_problems, read_repository

    config = scratch / name / "config.pbtxt"
    validate_inputs(scratch / name / "1" / "model.onnx", config, scratch / "postprocess/labels.txt")
    configs = read_repository(scratch)
    problems = [
        p
        for ensemble, c in configs.items()
        if c.platform == "ensemble"
        for p in ensemble_problems(configs, ensemble)
    ]
    if problems:
        raise ContractError("the repository's ensembles disagree after the change", problems)


def add_model(
    repository: Path, onnx_path: Path, labels_path: Path, name: str = "detector"
) -> RepositoryModel:
    """Check ``onnx_path`` and ``labels_path`` and install them as detector ``name``.

    Args:
        repository: The production model repository.
        onnx_path: A YOLOv8/YOLO11-layout ONNX export (dynamic batch, no NMS).
        labels_path: Class names, one per line (spaces inside a name are kept).
        name: The detector model's folder; the ensembles name it as a step.

    Returns:
        What the repository serves now.

    Raises:
        ContractError: With every problem, before anything in ``repository`` changes.
    """
    repository = Path(repository)
    config_path = repository / name / "config.pbtxt"
    config = load_model_config(config_path)
    if config.platform != "tensorrt_plan" or len(config.input) != 1 or len(config.output) != 1:
        raise ContractError(
            f"cannot add a model as {name!r}",
            [f"{config_path} is not a one-input, one-output tensorrt_plan detector"],
        )
    labels = read_labels(labels_path)
    onnx_bytes = _renamed_onnx(onnx_path, config.input[0].name, config.output[0].name)
    with tempfile.TemporaryDirectory(prefix="camdet-model-add-") as tmp:
        scratch = Path(tmp) / "repository"
        _stage(repository, scratch, name)
        files = _write_staged(scratch, name, onnx_bytes, labels)
        _check_staged(scratch, name)
    for relative, data in files.items():
        atomic_write(repository / relative, data)
        logger.info("wrote %s", repository / relative)
    plan = repository / name / "1" / "model.plan"
    if plan.is_file():
        logger.warning("%s is now stale: build_engine.py check || build rebuilds it", plan)
    return describe_model(repository, name)
