"""Typed errors of :mod:`camdet.engine`; the command lines print them and exit 1."""

from __future__ import annotations

from collections.abc import Sequence


class BuildEngineError(Exception):
    """Base of every error camdet.engine raises on purpose."""


class ProblemsError(BuildEngineError):
    """Several independent problems, all reported together.

    Attributes:
        problems: One sentence per problem.
    """

    def __init__(self, summary: str, problems: Sequence[str]) -> None:
        self.summary = summary
        self.problems = list(problems)
        super().__init__(summary + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class ContractError(ProblemsError):
    """The ONNX file, the detector's config.pbtxt and the labels file disagree."""


class OnnxParseError(ProblemsError):
    """TensorRT's ONNX parser rejected the file; ``problems`` lists each parser error."""


class EngineContractError(ProblemsError):
    """The built engine's tensors disagree with the config (nothing was written)."""


class ProfileMismatchError(BuildEngineError):
    """The requested batch profile disagrees with the config and may not rewrite it."""


class TensorRTUnavailableError(BuildEngineError):
    """TensorRT cannot be imported here, or is a major version this builder cannot use."""


class EngineBuildError(BuildEngineError):
    """TensorRT returned no plan."""


class CalibrationError(BuildEngineError):
    """INT8 calibration has no usable data."""


class GpuQueryError(BuildEngineError):
    """The GPU's name and compute capability could not be read."""


class SidecarError(BuildEngineError):
    """A plan's sidecar JSON is missing fields or unreadable."""


class PrecisionConversionError(BuildEngineError):
    """ModelOpt could not convert the ONNX file to the requested precision."""
