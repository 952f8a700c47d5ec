"""TensorRT glue of the builder: version gate, logger, strongly typed ONNX parse, I/O, profile.

TensorRT is imported lazily (:func:`import_tensorrt`): everything else in
:mod:`camdet.engine` runs without it. Only API common to TensorRT 10 and 11 is used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from camdet.engine.contract import BatchProfile, DetectorContract
from camdet.engine.errors import (
    EngineBuildError,
    EngineContractError,
    OnnxParseError,
    TensorRTUnavailableError,
)
from camdet.engine.inspection import TRT_DTYPE_NAMES
from camdet.engine.sidecar import NEEDS_TENSORRT

logger = logging.getLogger(__name__)

SUPPORTED_TENSORRT_MAJORS = (10, 11)
"""Majors whose Python API this builder uses: strongly typed networks, no precision flags."""


def tensorrt_version_problem(version: str) -> str | None:
    """Why this TensorRT version cannot run the builder (``None`` if it can)."""
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) in SUPPORTED_TENSORRT_MAJORS:
        return None
    return (
        f"TensorRT {version} is not supported: build_engine.py builds strongly typed "
        f"networks with the TensorRT {' and '.join(map(str, SUPPORTED_TENSORRT_MAJORS))} "
        "Python API; build in an NGC release that ships one of them (see docker/README.md)"
    )


def import_tensorrt() -> ModuleType:
    """Import TensorRT 10 or 11.

    Raises:
        TensorRTUnavailableError: If it is missing or of another major version.
    """
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailableError(f"cannot import tensorrt ({err}): {NEEDS_TENSORRT}") from err
    problem = tensorrt_version_problem(trt.__version__)
    if problem:
        raise TensorRTUnavailableError(problem)
    return trt


def make_trt_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps the errors it saw."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }

    class LoggingTrtLogger(trt.ILogger):
        """TensorRT messages as ``logging`` records of logger ``<module>.tensorrt``."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self._log = logging.getLogger(f"{__name__}.tensorrt")

        def log(self, sev: Any, msg: str) -> None:
            """Forward one message."""
            level = levels.get(sev, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            self._log.log(level, "%s", msg)

    return LoggingTrtLogger()


def describe_parser_error(error: Any) -> str:
    """One line for a TensorRT ``IParserError``: node, operator, description, code."""
    where = f"node {error.node()}"
    name, operator = error.node_name(), error.node_operator()
    if name or operator:
        where += f" ({name or '?'}: {operator or '?'})"
    return f"{where}: {error.desc()} [{error.code()}]"


def parse_onnx(trt: ModuleType, builder: Any, trt_logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """Parse the ONNX file into a new strongly typed network.

    ``STRONGLY_TYPED`` makes TensorRT 10 take every tensor's type from the file, as
    TensorRT 11 always does (it accepts and ignores the flag), so both build the same
    network from the converted ONNX file.

    Returns:
        ``(network, parser)``; keep the parser alive until the build: it owns the weights.

    Raises:
        OnnxParseError: Listing every parser error.
    """
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [describe_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok or errors:
        raise OnnxParseError(
            f"TensorRT's ONNX parser rejected {onnx_path}",
            errors or ["parse_from_file returned False without reporting an error"],
        )
    return network, parser


def check_network_io(trt: ModuleType, network: Any, contract: DetectorContract) -> None:
    """Check the parsed network's I/O names and types against the config; linear layout.

    A strongly typed network takes its I/O types from the ONNX file (they cannot be set
    here), so the converted file must already carry the config's types: with FP16 in
    the config the engine takes preprocess's FP16 CHW tensor and returns FP16 to
    postprocess directly, no cast and no reformat at the boundaries.

    Raises:
        EngineContractError: If a name or type differs from the config.
    """
    pairs = [
        ([network.get_input(i) for i in range(network.num_inputs)], contract.input),
        ([network.get_output(i) for i in range(network.num_outputs)], contract.output),
    ]
    problems = [
        f"network tensors {[t.name for t in tensors]} differ from the config's [{spec.name!r}]"
        for tensors, spec in pairs
        if [t.name for t in tensors] != [spec.name]
    ]
    problems += [
        f"network {t.name!r} is {t.dtype.name}, the config says {spec.data_type}"
        for tensors, spec in pairs
        for t in tensors[:1]
        if not problems and t.dtype.name != TRT_DTYPE_NAMES[spec.data_type]
    ]
    if problems:
        raise EngineContractError("the parsed network disagrees with the config", problems)
    for tensors, spec in pairs:
        tensor = tensors[0]
        tensor.allowed_formats = 1 << int(trt.TensorFormat.LINEAR)
        logger.info(
            "network %s %r: shape %s, dtype %s, linear format",
            "input" if tensor.is_network_input else "output",
            tensor.name,
            list(tensor.shape),
            spec.data_type,
        )


def add_profile(
    builder: Any, config: Any, contract: DetectorContract, profile: BatchProfile
) -> None:
    """Add the one optimization profile and log its MIN/OPT/MAX shapes.

    Raises:
        EngineBuildError: If TensorRT rejects the profile.
    """
    shapes = profile.shapes(contract.input.dims)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(contract.input.name, shapes["min"], shapes["opt"], shapes["max"])
    if config.add_optimization_profile(opt_profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {shapes}")
    logger.info(
        "profile 0 input %r: MIN %s OPT %s MAX %s",
        contract.input.name,
        shapes["min"],
        shapes["opt"],
        shapes["max"],
    )
