"""Every config parses, the ensemble is consistent, the portable contract is production's."""

import importlib.util
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from camdet.engine.contract import expected_anchors, read_labels
from camdet.geometry import INPUT_SHAPE
from camdet.serving.portable import generate_portable_repository
from camdet.serving.repository import (
    ENSEMBLE,
    contract,
    ensemble_problems,
    read_config,
    read_repository,
)
from camdet.steps.postprocess import detections as pp

VIDEO_ENSEMBLE = "detect_video"
MODELS = {"validate", "preprocess", "detector", "postprocess", ENSEMBLE}
MODELS |= {"preprocess_video", VIDEO_ENSEMBLE}


@pytest.fixture(scope="module")
def production(repository: Path) -> dict[str, mc.ModelConfig]:
    return read_repository(repository)


@pytest.fixture(scope="module", params=[False, True], ids=["cpu", "gpu"])
def portable(
    repository: Path, tmp_path_factory: pytest.TempPathFactory, request
) -> dict[str, mc.ModelConfig]:
    out = tmp_path_factory.mktemp("portable") / "repo"
    return read_repository(generate_portable_repository(repository, out, gpu=request.param))


def test_every_config_parses_with_its_folder_name(repository: Path) -> None:
    configs = {p.parent.name: read_config(p) for p in repository.glob("*/config.pbtxt")}
    assert set(configs) == MODELS
    for folder, config in configs.items():
        assert config.name == folder


def test_production_runtimes(production: dict[str, mc.ModelConfig]) -> None:
    assert production["preprocess"].backend == "dali"
    assert production["detector"].platform == "tensorrt_plan"
    assert production["postprocess"].backend == "python"
    assert production["postprocess"].parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    assert production[ENSEMBLE].platform == "ensemble"


def test_ensemble_maps_are_consistent(production: dict[str, mc.ModelConfig]) -> None:
    assert ensemble_problems(production) == []
    assert ensemble_problems(production, VIDEO_ENSEMBLE) == []


def test_video_model_contract_extends_the_image_one(production) -> None:
    """preprocess_video's frames are preprocess's; detect_video answers as detect does."""
    video, image = contract(production["preprocess_video"]), contract(production["preprocess"])
    assert video["outputs"][:2] == image["outputs"]
    assert [t.name for t in video["outputs"][2:]] == ["damaged", "frame_pts"]
    assert [t.name for t in video["inputs"]] == ["video_chunk", "pts"]
    assert video["inputs"][0].data_type == image["inputs"][0].data_type
    ensembles = contract(production[VIDEO_ENSEMBLE]), contract(production[ENSEMBLE])
    assert ensembles[0]["outputs"][:-1] == ensembles[1]["outputs"]
    assert ensembles[0]["outputs"][-1] == video["outputs"][-1]
    assert ensembles[0]["inputs"] == video["inputs"]
    steps = [s.model_name for s in production[VIDEO_ENSEMBLE].ensemble_scheduling.step]
    assert steps == ["preprocess_video", "detector", "postprocess"]


def test_video_model_sequence_batching(production: dict[str, mc.ModelConfig]) -> None:
    config = production["preprocess_video"]
    assert config.backend == "python" and config.HasField("sequence_batching")
    batching = config.sequence_batching
    assert batching.HasField("oldest") and not batching.control_input
    assert batching.max_sequence_idle_microseconds > 0
    # A camera beyond max_cameras must reach the model (clear error), not Triton's backlog.
    max_cameras = int(config.parameters["max_cameras"].string_value)
    assert batching.oldest.max_candidate_sequences > max_cameras
    assert max(batching.oldest.preferred_batch_size) <= config.max_batch_size
    for key in ("max_pixels", "max_side", "max_queued_frames"):
        assert int(config.parameters[key].string_value) > 0


def test_inconsistent_ensemble_is_reported(production: dict[str, mc.ModelConfig]) -> None:
    broken = {k: mc.ModelConfig.FromString(v.SerializeToString()) for k, v in production.items()}
    step = broken[ENSEMBLE].ensemble_scheduling.step[2]
    step.input_map["images"] = "no_such_tensor"
    assert ensemble_problems(broken) == [
        "detector.images reads 'no_such_tensor' before anything produces it"
    ]
    broken[VIDEO_ENSEMBLE].ensemble_scheduling.step[0].output_map["frame_pts"] = "pts_out"
    assert ensemble_problems(broken, VIDEO_ENSEMBLE) == [
        "ensemble output 'frame_pts' is produced by no step"
    ]


def test_portable_contracts_equal_production(production, portable) -> None:
    # With a GPU, the one-process pipelines come on top (tests/test_pipeline.py).
    pipelines = {"detect_pipeline", "detect_video_pipeline"}
    assert set(portable) - pipelines == set(production)
    for name in production:
        assert contract(portable[name]) == contract(production[name]), name
    assert ensemble_problems(portable) == []
    assert ensemble_problems(portable, VIDEO_ENSEMBLE) == []
    assert portable["preprocess"].backend == portable["detector"].backend == "python"
    assert portable["preprocess_video"] == production["preprocess_video"] or (
        portable["preprocess_video"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    )
    assert (
        portable["preprocess_video"].sequence_batching
        == production["preprocess_video"].sequence_batching
    )


def test_portable_repository_files(repository: Path, tmp_path: Path) -> None:
    out = generate_portable_repository(repository, tmp_path / "repo", gpu=False)
    assert (out / "preprocess/1/dali.py").read_text() == (
        repository / "preprocess/1/dali.py"
    ).read_text()
    assert "camdet.triton_models.portable.preprocess" in (out / "preprocess/1/model.py").read_text()
    assert (
        "camdet.triton_models.portable.detector_onnx" in (out / "detector/1/model.py").read_text()
    )
    assert (
        "camdet.triton_models.preprocess_video" in (out / "preprocess_video/1/model.py").read_text()
    )
    gpu = generate_portable_repository(repository, tmp_path / "gpu", gpu=True)
    assert (
        "camdet.triton_models.portable.detector_torch" in (gpu / "detector/1/model.py").read_text()
    )
    assert (out / "detector/1/model.onnx").read_bytes() == (
        repository / "detector/1/model.onnx"
    ).read_bytes()
    kinds = {g.kind for c in read_repository(out).values() for g in c.instance_group}
    assert kinds <= {mc.ModelInstanceGroup.KIND_CPU}


def test_letterbox_constant_matches_configs(production: dict[str, mc.ModelConfig]) -> None:
    image = next(o for o in production["preprocess"].output if o.name == "preprocessed_image")
    video = next(o for o in production["preprocess_video"].output if o.name == image.name)
    assert list(image.dims) == list(video.dims) == [3, *INPUT_SHAPE]
    assert list(production["detector"].input[0].dims) == [3, *INPUT_SHAPE]
    assert production["detector"].output[0].dims[1] == expected_anchors(INPUT_SHAPE)


def test_dali_pipeline_batch_size_matches_config(repository: Path, production) -> None:
    spec = importlib.util.spec_from_file_location(
        "dali_pipeline", repository / "preprocess/1/dali.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert production["preprocess"].max_batch_size == module.MAX_BATCH_SIZE


def test_postprocess_defaults_match_library(production: dict[str, mc.ModelConfig]) -> None:
    params = production["postprocess"].parameters
    assert float(params["confidence_threshold"].string_value) == pp.DEFAULT_CONFIDENCE
    assert float(params["iou_threshold"].string_value) == pp.DEFAULT_IOU
    assert int(params["max_detections"].string_value) == pp.DEFAULT_MAX_DETECTIONS


def test_labels_match_the_detector_head(repository: Path, production) -> None:
    """Whatever model the repository serves: one label per class row of its head."""
    from camdet.engine.onnx_checks import validate_inputs

    labels = read_labels(repository / "postprocess/labels.txt")  # lines: "traffic light" is one
    rows = production["detector"].output[0].dims[0]
    assert rows == 4 + len(labels)
    checked = validate_inputs(
        repository / "detector/1/model.onnx",
        repository / "detector/config.pbtxt",
        repository / "postprocess/labels.txt",
    )
    assert checked.report.output_shape == ["batch", rows, expected_anchors(INPUT_SHAPE)]


def test_batch_limits_agree(production: dict[str, mc.ModelConfig]) -> None:
    sizes = {c.max_batch_size for c in production.values()}
    assert sizes == {64}
    for name in ("preprocess", "detector", "postprocess"):
        preferred = production[name].dynamic_batching.preferred_batch_size
        assert max(preferred) <= production[name].max_batch_size


def test_warmup_files_match_their_declared_size(repository: Path, production) -> None:
    for name, config in production.items():
        for warmup in config.model_warmup:
            for tensor in warmup.inputs.values():
                if tensor.input_data_file:
                    data = (repository / name / "warmup" / tensor.input_data_file).read_bytes()
                    assert list(tensor.dims) == [len(data)], (name, warmup.name)


def test_container_mode_refuses_a_missing_plan(tmp_path: Path) -> None:
    from camdet.serving.server import container_plan_problems

    assert container_plan_problems(tmp_path) == [
        f"no TensorRT plan at {tmp_path}/detector/1/model.plan: "
        "build it with build_engine.py (docker/README.md)"
    ]


def test_portable_cpu_detector_runs_one_single_thread_session_per_core(
    repository: Path, tmp_path: Path
) -> None:
    import os

    cpu = read_repository(generate_portable_repository(repository, tmp_path / "cpu", gpu=False))
    groups = [(g.count, g.kind) for g in cpu["detector"].instance_group]
    assert groups == [(os.cpu_count(), mc.ModelInstanceGroup.KIND_CPU)]
    assert cpu["detector"].parameters["intra_op_threads"].string_value == "1"
    gpu = read_repository(generate_portable_repository(repository, tmp_path / "gpu", gpu=True))
    assert "intra_op_threads" not in gpu["detector"].parameters


def test_dali_threads_set_the_gpu_jpeg_pipelines_threads_only(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from camdet.serving import portable

    def threads(gpu: bool) -> dict[str, str]:
        configs = read_repository(
            generate_portable_repository(repository, tmp_path / str(gpu), gpu=gpu)
        )
        return {n: c.parameters["num_threads"].string_value for n, c in configs.items()
                if "num_threads" in c.parameters}  # fmt: skip

    production = threads(False)
    assert production == {"preprocess": "4", "preprocess_video": "4"}
    monkeypatch.setattr(portable, "DALI_THREADS", "2")
    # The stand-in preprocess and detect_pipeline, which runs its config; not the video
    # decoders (preprocess_video, detect_video_pipeline).
    assert threads(True) == {
        "preprocess": "2",
        "detect_pipeline": "2",
        "preprocess_video": "4",
        "detect_video_pipeline": "4",
    }
    assert threads(False) == production  # a CPU server keeps its tuned threads
