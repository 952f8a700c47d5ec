"""What ``detector/config.pbtxt`` and ``postprocess/labels.txt`` say the detector is.

The config is the contract: tensor names, I/O types, per-sample dims and the batching from
which the one optimization profile is derived:

    min = 1,  opt = the largest preferred_batch_size (max_batch_size if none),
    max = max_batch_size.

One profile, not one per preferred size: Triton's TensorRT backend runs every instance
on profile 0 unless ``instance_group.profile`` names others, each extra profile costs
build time and engine memory, and a batch of any size in [1, max] is valid in one
profile anyway. The opt shape is where the tactics are timed; under camera load the
dynamic batcher fills the largest preferred batch, which is where GPU time goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from camdet.contract import TensorSpec
from camdet.engine.errors import ContractError, ProfileMismatchError

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

HEAD_STRIDES: tuple[int, ...] = (8, 16, 32)
"""Strides of the three YOLO detection scales; each gives (H / s) x (W / s) anchors."""

BOX_ROWS = 4
"""Rows of the head before the class scores: cx, cy, w, h."""

IO_DATA_TYPES = ("TYPE_FP16", "TYPE_FP32")
"""Config data types the detector's input and output may have."""


class Precision(StrEnum):
    """Precision the engine computes in (its I/O types always come from the config).

    The ONNX file is converted to it before TensorRT sees it (:mod:`camdet.engine.precision`),
    so the network is strongly typed: ``fp16`` by ModelOpt AutoCast, ``int8`` by ModelOpt's
    post-training quantization (explicit Q/DQ nodes), ``fp32`` as exported.
    """

    FP16 = "fp16"
    FP32 = "fp32"
    INT8 = "int8"


@dataclass(frozen=True)
class BatchProfile:
    """MIN/OPT/MAX batch size of the engine's optimization profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ProfileMismatchError(
                f"batch profile needs 1 <= min <= opt <= max, got "
                f"min={self.min} opt={self.opt} max={self.max}"
            )

    def __str__(self) -> str:
        return f"min={self.min} opt={self.opt} max={self.max}"

    def shapes(self, dims: Sequence[int]) -> dict[str, list[int]]:
        """Full MIN/OPT/MAX shapes of a tensor whose per-sample dims are ``dims``."""
        return {
            "min": [self.min, *dims],
            "opt": [self.opt, *dims],
            "max": [self.max, *dims],
        }


def derive_profile(max_batch_size: int, preferred: Sequence[int]) -> BatchProfile:
    """The profile a config's batching asks for (the rule is in the module docstring).

    Args:
        max_batch_size: The config's ``max_batch_size``.
        preferred: The config's ``dynamic_batching.preferred_batch_size``.

    Returns:
        ``min=1``, ``opt=max(preferred)`` (or ``max_batch_size``), ``max=max_batch_size``.
    """
    return BatchProfile(1, max(preferred) if preferred else max_batch_size, max_batch_size)


@dataclass(frozen=True)
class DetectorContract:
    """What the config says the detector is.

    Attributes:
        name: Model name in the config.
        input: The image input.
        output: The raw head output.
        max_batch_size: The config's ``max_batch_size``.
        preferred_batch_sizes: The dynamic batcher's preferred sizes.
        num_classes: Classes in the labels file.
    """

    name: str
    input: TensorSpec
    output: TensorSpec
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    num_classes: int

    @property
    def profile(self) -> BatchProfile:
        """The optimization profile this config asks for."""
        return derive_profile(self.max_batch_size, self.preferred_batch_sizes)

    def profile_record(self, profile: BatchProfile) -> dict[str, Any]:
        """The profile as stored in the sidecar: input name and full shapes."""
        return {"input": self.input.name, **profile.shapes(self.input.dims)}


def model_config_pb2_module() -> ModuleType:
    """Triton's ``model_config_pb2``, imported when first needed."""
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def input_shape() -> tuple[int, int]:
    """``(height, width)`` of the detector input: ``CAMDET_INPUT_SIZE`` via camdet.constants."""
    from camdet.constants import INPUT_SHAPE

    return INPUT_SHAPE


def input_size_setting() -> str:
    """The input size as ``CAMDET_INPUT_SIZE`` spells it, for messages."""
    from camdet.constants import format_input_size

    return format_input_size(input_shape())


def expected_anchors(size: int | tuple[int, int], strides: Sequence[int] = HEAD_STRIDES) -> int:
    """Anchors of a YOLO head on an input of ``(height, width)`` (or a square side).

    Returns:
        ``sum((height / s) * (width / s))`` over the strides, e.g. 8400 at 640x640.
    """
    height, width = (size, size) if isinstance(size, int) else size
    return sum((height // s) * (width // s) for s in strides)


def anchor_terms(shape: tuple[int, int], strides: Sequence[int] = HEAD_STRIDES) -> str:
    """How :func:`expected_anchors` adds up, for messages: ``(640/8)^2 + ...``."""
    height, width = shape
    if height == width:
        return " + ".join(f"({height}/{s})^2" for s in strides)
    return " + ".join(f"({height}/{s})({width}/{s})" for s in strides)


def load_model_config(path: Path) -> ModelConfig:
    """Parse a ``config.pbtxt`` into ``ModelConfig``.

    Raises:
        ContractError: If the file is missing or not valid ModelConfig text.
    """
    from google.protobuf import text_format

    pb2 = model_config_pb2_module()
    try:
        return text_format.Parse(Path(path).read_text(), pb2.ModelConfig())
    except FileNotFoundError as err:
        raise ContractError(f"cannot read {path}", [f"{path} does not exist"]) from err
    except text_format.ParseError as err:
        raise ContractError(f"cannot parse {path}", [str(err)]) from err


def parse_labels(text: str) -> list[str]:
    """Class names, one per line: surrounding whitespace is dropped, inner spaces kept.

    ``traffic light`` is one class; blank lines are skipped.
    """
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_labels(path: Path) -> list[str]:
    """Class names of a labels file (see :func:`parse_labels`).

    Raises:
        ContractError: If the file is missing, lists no class, or lists one twice.
    """
    try:
        labels = parse_labels(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ContractError(f"cannot read {path}", [f"{path} does not exist"]) from err
    if not labels:
        raise ContractError(f"cannot read {path}", [f"{path} lists no class"])
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ContractError(f"cannot read {path}", [f"{path} lists {twice} more than once"])
    return labels


def _config_tensor(tensors: Sequence[Any], kind: str, problems: list[str]) -> TensorSpec | None:
    if len(tensors) != 1:
        problems.append(f"config has {len(tensors)} {kind}s, the detector takes exactly one")
        return None
    spec = TensorSpec.of(tensors[0])
    if spec.data_type not in IO_DATA_TYPES:
        problems.append(
            f"config {kind} {spec.name!r} is {spec.data_type}, expected TYPE_FP16 or TYPE_FP32"
        )
    return spec


def _check_config_batching(config: ModelConfig, problems: list[str]) -> None:
    if config.max_batch_size < 1:
        problems.append(
            f"config max_batch_size is {config.max_batch_size}; the engine needs a batch "
            "dimension, so it must be >= 1"
        )
    preferred = list(config.dynamic_batching.preferred_batch_size)
    bad = [p for p in preferred if not 1 <= p <= config.max_batch_size]
    if bad:
        problems.append(
            f"config preferred_batch_size {preferred} has sizes outside "
            f"[1, max_batch_size={config.max_batch_size}]: {bad}"
        )


def _check_config_shapes(
    inp: TensorSpec | None, out: TensorSpec | None, num_classes: int, problems: list[str]
) -> None:
    height, width = input_shape()
    if inp is not None and inp.dims != (3, height, width):
        problems.append(
            f"config input {inp.name!r} dims are {list(inp.dims)}, expected [3, {height}, "
            f"{width}] (CAMDET_INPUT_SIZE {input_size_setting()})"
        )
    want = (BOX_ROWS + num_classes, expected_anchors((height, width)))
    if out is not None and out.dims != want:
        problems.append(
            f"config output {out.name!r} dims are {list(out.dims)}, expected {list(want)} "
            f"= [4 + {num_classes} classes, anchors]"
        )


def detector_contract(
    config: ModelConfig, num_classes: int
) -> tuple[DetectorContract | None, list[str]]:
    """Read the detector's contract from its config and check the config itself.

    Args:
        config: The parsed ``detector/config.pbtxt``.
        num_classes: Classes in the labels file.

    Returns:
        The contract (``None`` if the config lacks a single input/output) and the
        config's problems.
    """
    problems: list[str] = []
    if config.platform != "tensorrt_plan":
        problems.append(f"config platform is {config.platform!r}, expected 'tensorrt_plan'")
    inp = _config_tensor(config.input, "input", problems)
    out = _config_tensor(config.output, "output", problems)
    _check_config_batching(config, problems)
    _check_config_shapes(inp, out, num_classes, problems)
    if inp is None or out is None or config.max_batch_size < 1:
        return None, problems
    contract = DetectorContract(
        name=config.name,
        input=inp,
        output=out,
        max_batch_size=config.max_batch_size,
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
        num_classes=num_classes,
    )
    return contract, problems
