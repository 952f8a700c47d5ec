"""camdet.engine.inspection, network and progress: engine I/O, layer summary, parser errors."""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import Progress

from camdet.engine import contract as contracts
from camdet.engine import errors, inspection, network, onnx_checks
from camdet.engine.progress import PhaseTracker
from tests.helpers.fake_tensorrt import TRT10_DETAILED


def _io(
    input_dtype: str = "HALF", output_shape: list[int] | None = None, opt: int = 64
) -> list[inspection.IoTensor]:
    profile = contracts.BatchProfile(1, opt, 64).shapes((3, 640, 640))
    return [
        inspection.IoTensor("images", True, input_dtype, profile, [opt, 3, 640, 640]),
        inspection.IoTensor("output0", False, "HALF", None, output_shape or [opt, 8, 8400]),
    ]


def test_check_engine_io(paths: dict[str, Path]) -> None:
    contract = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"]).contract
    profile = contract.profile
    assert inspection.check_engine_io(_io(), contract, profile) == []
    assert inspection.check_engine_io(_io("FLOAT", [64, 8, 8500]), contract, profile) == [
        "engine input 'images' is FLOAT, the config says TYPE_FP16",
        "engine output 'output0' has shape [64, 8, 8500] at OPT, expected [64, 8, 8400]",
    ]
    problems = inspection.check_engine_io(_io(opt=16), contract, profile)
    assert problems[0] == (
        "engine input 'images' has shape [16, 3, 640, 640] at OPT, expected [64, 3, 640, 640]"
    )
    assert problems[-1].startswith("engine profile 0 is {'min': [1, 3, 640, 640], 'opt': [16,")


def test_summarize_engine_information() -> None:
    summary = inspection.summarize_engine_information(json.dumps(TRT10_DETAILED))
    assert summary == inspection.LayerSummary(
        4,
        {"FP16": 1, "INT8": 1, "FP32": 1, "other": 1},
        {"Reformat": 2, "CaskConvolution": 1, "NoOp": 1},
    )
    trt11 = {
        "Layers": [
            {"LayerType": "CaskConvolution", "Outputs": [{"DataType": "Half", "Format": "kLINEAR"}]}
        ]
    }
    assert inspection.summarize_engine_information(json.dumps(trt11)).by_precision == {"FP16": 1}
    names_only = {"Layers": ["conv1", "conv2"], "Bindings": ["images", "output0"]}
    assert inspection.summarize_engine_information(
        json.dumps(names_only)
    ) == inspection.LayerSummary(2, {"unknown": 2}, {})


class _FakeParserError:
    def node(self) -> int:
        return 12

    def node_name(self) -> str:
        return "/model.22/dfl/Softmax"

    def node_operator(self) -> str:
        return "Softmax"

    def desc(self) -> str:
        return "Unsupported axis"

    def code(self) -> str:
        return "ErrorCode.UNSUPPORTED_NODE"


def test_describe_parser_error() -> None:
    assert network.describe_parser_error(_FakeParserError()) == (
        "node 12 (/model.22/dfl/Softmax: Softmax): Unsupported axis [ErrorCode.UNSUPPORTED_NODE]"
    )
    err = errors.OnnxParseError("TensorRT's ONNX parser rejected m.onnx", ["a", "b"])
    assert str(err) == "TensorRT's ONNX parser rejected m.onnx:\n  - a\n  - b"


def test_phase_tracker() -> None:
    with Progress(disable=True) as progress:
        tracker = PhaseTracker(progress)
        tracker.start("Building engine", None, 3)
        tracker.start("Tactic timing", "Building engine", 10)
        names = [task.description for task in progress.tasks]
        assert names == ["Building engine", "  Tactic timing"]
        tracker.step("Tactic timing", 4)
        assert progress.tasks[1].completed == 5
        tracker.finish("Tactic timing")
        tracker.step("gone", 1)  # unknown phases are ignored, never raised into TensorRT
        assert [task.description for task in progress.tasks] == ["Building engine"]
