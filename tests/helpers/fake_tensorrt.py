"""A strict stand-in for the slice of the TensorRT 10/11 Python API that camdet.engine calls.

Names and signatures come from TensorRT's API docs and samples. It proves the glue runs end
to end here - parse, I/O types, profile, precision, calibration, caches, progress,
inspection, sidecar - not that TensorRT behaves so: the tensorrt-marked tests do that.
TensorRT's builder cannot be installed without its container and a GPU.
"""

from __future__ import annotations

import json

import onnx

# The detailed engine information TensorRT 10 prints (the fake engine answers it).
TRT10_DETAILED = {
    "Layers": [
        {
            "Name": "Reformatting CopyNode for Input Tensor 0 to /model.0/conv/Conv",
            "LayerType": "Reformat",
            "Inputs": [{"Name": "images", "Format/Datatype": "Row major linear FP16 format"}],
            "Outputs": [
                {"Name": "r", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}
            ],
        },
        {
            "Name": "/model.0/conv/Conv + PWN(/model.0/act/Sigmoid)",
            "LayerType": "CaskConvolution",
            "Inputs": [
                {"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}
            ],
            "Outputs": [
                {"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}
            ],
        },
        {
            "Name": "/model.22/Concat",
            "LayerType": "Reformat",
            "Outputs": [{"Format/Datatype": "Float"}],
        },
        {
            "Name": "shape",
            "LayerType": "NoOp",
            "Outputs": [{"Format/Datatype": "N/A due to dynamic shapes"}],
        },
    ],
    "Bindings": ["images", "output0"],
}


class FakeEnum:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def fake_tensorrt_module(calls: list[str]) -> object:  # noqa: C901 - one fake module, many classes
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.16.1.11"
    dtypes = types.SimpleNamespace(HALF=FakeEnum("HALF"), FLOAT=FakeEnum("FLOAT"))
    trt.DataType = dtypes
    trt.TensorFormat = types.SimpleNamespace(LINEAR=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=FakeEnum("WORKSPACE"))
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED=FakeEnum("DETAILED"))
    # No BuilderFlag: TensorRT 11 removed the precision flags, so the build must not need them.
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.TensorIOMode = types.SimpleNamespace(INPUT=FakeEnum("INPUT"), OUTPUT=FakeEnum("OUTPUT"))
    trt.LayerInformationFormat = types.SimpleNamespace(JSON=FakeEnum("JSON"))

    class ILogger:
        Severity = types.SimpleNamespace(
            **{n: FakeEnum(n) for n in ("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")}
        )

    class IProgressMonitor:
        pass

    class Tensor:
        __slots__ = ("_dtype", "allowed_formats", "is_network_input", "name", "shape")

        def __init__(self, name: str, shape: list[int], is_input: bool, dtype: FakeEnum) -> None:
            self.name, self.shape, self.is_network_input = name, shape, is_input
            self._dtype, self.allowed_formats = dtype, 0

        @property
        def dtype(self) -> FakeEnum:  # strongly typed: read-only, from the ONNX file
            return self._dtype

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

        def get_output(self, i: int) -> Tensor:
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: ILogger) -> None:
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            for values, target, is_input in (
                (model.graph.input, self.network.inputs, True),
                (model.graph.output, self.network.outputs, False),
            ):
                for v in values:
                    dims = [d.dim_value or -1 for d in v.type.tensor_type.shape.dim]
                    dtype = {1: dtypes.FLOAT, 10: dtypes.HALF}[v.type.tensor_type.elem_type]
                    target.append(Tensor(v.name, dims, is_input, dtype))
                    calls.append(f"{v.name} {dtype.name}")
            calls.append("ops " + " ".join(sorted({n.op_type for n in model.graph.node})))
            calls.append("parse")
            return True

    class Profile:
        def set_shape(self, name: str, low: list[int], opt: list[int], high: list[int]) -> None:
            self.shapes = (name, list(low), list(opt), list(high))

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return self.blob + b"+timed"

    class Config:
        __slots__ = (
            "builder_optimization_level",
            "profiles",
            "profiling_verbosity",
            "progress_monitor",
            "timing_cache",
            "workspace",
        )

        def __init__(self) -> None:
            self.profiles, self.progress_monitor = [], None

        def set_memory_pool_limit(self, pool: FakeEnum, size: int) -> None:
            self.workspace = (pool.name, size)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(bytes(blob))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.timing_cache

    class HostMemory(bytes):
        nbytes = property(len)

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> Network:
            assert flags == 1 << 0, "STRONGLY_TYPED"
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> HostMemory:
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.step_complete("Building engine", 0)
                monitor.phase_finish("Building engine")
            state = {
                "io": [
                    (t.name, t.dtype.name, t.shape, t.is_network_input)
                    for t in network.inputs + network.outputs
                ],
                "profile": config.profiles[0].shapes,
            }
            return HostMemory(json.dumps(state).encode())

    class Context:
        def __init__(self, engine: Engine) -> None:
            self.engine, self.batch = engine, None

        def set_input_shape(self, name: str, shape: list[int]) -> bool:
            self.batch = shape[0]
            return True

        def get_tensor_shape(self, name: str) -> list[int]:
            _, _, shape, _ = self.engine.io[name]
            return [self.batch, *shape[1:]]

    class Inspector:
        def get_engine_information(self, fmt: FakeEnum) -> str:
            assert fmt.name == "JSON"
            return json.dumps(TRT10_DETAILED)

    class Engine:
        def __init__(self, state: dict) -> None:
            self.io = {t[0]: t for t in state["io"]}
            self.names = [t[0] for t in state["io"]]
            self.profile = state["profile"]

        num_io_tensors = property(lambda self: len(self.names))

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> FakeEnum:
            return trt.TensorIOMode.INPUT if self.io[name][3] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> FakeEnum:
            return getattr(dtypes, self.io[name][1])

        def get_tensor_profile_shape(self, name: str, index: int) -> list[list[int]]:
            assert (name, index) == (self.profile[0], 0)
            return self.profile[1:]

        def create_execution_context(self) -> Context:
            return Context(self)

        def create_engine_inspector(self) -> Inspector:
            return Inspector()

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            return Engine(json.loads(plan))

    for cls in (ILogger, IProgressMonitor, OnnxParser, Builder, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt
