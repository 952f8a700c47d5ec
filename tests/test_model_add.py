"""``camdet model add/list``: real ONNX files into a scratch repository, refusals by name."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from camdet.cli.main import app
from camdet.engine.contract import load_model_config, read_labels
from camdet.engine.errors import ContractError
from camdet.engine.install import add_model, describe_model
from camdet.serving.repository import ensemble_problems, find_repository, read_repository
from tests.helpers.onnx_models import yolo_onnx
from tests.helpers.paths import PRODUCTION

runner = CliRunner()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A scratch copy of the production repository, weights included."""
    target = tmp_path / "model_repository"
    shutil.copytree(PRODUCTION, target, ignore=shutil.ignore_patterns("*.plan"))
    return target


def _labels(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(names) + "\n\n")
    return path


def _digests(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file()
    }


def test_add_installs_model_labels_and_dims(repo: Path, tmp_path: Path) -> None:
    onnx_path = yolo_onnx(tmp_path / "m.onnx", num_classes=3, input_name="x", output_name="y")
    labels = _labels(tmp_path, "person", "traffic light", "stop sign")
    added = add_model(repo, onnx_path, labels)
    assert added.labels == ["person", "traffic light", "stop sign"]
    assert (repo / "postprocess/labels.txt").read_text() == "person\ntraffic light\nstop sign\n"
    assert added.output_dims == (7, 8400)
    assert list(load_model_config(repo / "detector/config.pbtxt").output[0].dims) == [7, 8400]
    model = onnx.load(str(repo / "detector/1/model.onnx"))
    assert [model.graph.input[0].name, model.graph.output[0].name] == ["images", "output0"]
    session = ort.InferenceSession(
        str(repo / "detector/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    out = session.run(None, {"images": np.zeros((2, 3, 640, 640), np.float32)})[0]
    assert out.shape == (2, 7, 8400)
    configs = read_repository(repo)
    assert ensemble_problems(configs) == [] and ensemble_problems(configs, "detect_video") == []
    assert describe_model(repo) == added


def _nms_export(path: Path) -> Path:
    """A graph ending in ONNX NonMaxSuppression, as NMS-inside exports do."""
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 8400, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4, 8400])
    out = helper.make_tensor_value_info("selected", TensorProto.INT64, ["n", 3])
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"])
    graph = helper.make_graph([node], "nms", [boxes, scores], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def _transposed(path: Path, rows: int, anchors: int) -> Path:
    """A real head [batch, anchors, rows]: YOLOv5's layout or a transposed YOLOv8 one."""
    cols = helper.make_tensor("w", TensorProto.FLOAT, [rows, 3, 1, 1], np.ones(rows * 3) * 0.1)
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, -1, rows])
    nodes = [
        helper.make_node("AveragePool", ["images"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["p", "w"], ["c"]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["r"]),
        helper.make_node("Slice", ["r", "start", "end", "axis"], ["output0"]),
    ]
    consts = [
        helper.make_tensor("start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("end", TensorProto.INT64, [1], [anchors]),
        helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", anchors, rows])],
        [cols, shape, *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    run = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert run.run(None, {"images": np.zeros((1, 3, 640, 640), np.float32)})[0].shape == (
        1,
        anchors,
        rows,
    )
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda p: _nms_export(p),
            "the ONNX file was exported with NMS inside (operators ['NonMaxSuppression']); "
            "camdet runs NMS in postprocess, so export without it: re-export with `yolo export "
            "model=MODEL.pt format=onnx opset=17 dynamic=True` (no nms=True)",
        ),
        (
            lambda p: _transposed(p, 5 + 4, 3 * 8400),
            "ONNX output 'output0': output [batch, 25200, 9] is YOLOv5's anchor-based layout "
            "[batch, 3 x 8400 anchors, 5 + 4] (objectness column), which camdet does not decode; "
            "export the same weights as YOLOv5u, or a YOLOv8/YOLO11 model (anchor-free head "
            "[batch, 4 + nc, anchors])",
        ),
        (
            lambda p: _transposed(p, 4 + 4, 8400),
            "ONNX output 'output0': output [batch, 8400, 8] is the YOLO head transposed; camdet "
            "expects [batch, 4 + nc, anchors] = [batch, 8, 8400]: drop the final Transpose",
        ),
    ],
    ids=["nms", "yolov5", "transposed"],
)
def test_foreign_layouts_are_refused_by_name(
    repo: Path, tmp_path: Path, make, expected: str
) -> None:
    before = _digests(repo)
    with pytest.raises(ContractError) as caught:
        add_model(repo, make(tmp_path / "m.onnx"), _labels(tmp_path, "a", "b", "c", "d"))
    assert caught.value.problems == [expected]
    assert _digests(repo) == before, "nothing in the repository changes on a refusal"


def test_old_opset_static_batch_and_label_count(repo: Path, tmp_path: Path) -> None:
    old = yolo_onnx(tmp_path / "old.onnx")
    model = onnx.load(str(old))
    model.opset_import[0].version = 11
    onnx.save(model, str(old))
    with pytest.raises(ContractError) as caught:
        add_model(repo, old, _labels(tmp_path, "a", "b", "c", "d"))
    assert caught.value.problems == [
        "ONNX opset 11 is older than 13; re-export with `yolo export model=MODEL.pt "
        "format=onnx opset=17 dynamic=True`"
    ]
    static = yolo_onnx(tmp_path / "static.onnx", batch=1, num_classes=2)
    with pytest.raises(ContractError) as caught:
        add_model(repo, static, _labels(tmp_path, "a", "b", "c"))
    assert any("static batch dimension 1" in p for p in caught.value.problems)
    assert (
        "ONNX output 'output0' has 6 rows = 4 box + 2 class scores, but the labels file lists "
        "3 classes"
    ) in caught.value.problems


def test_labels_keep_spaces_and_refuse_duplicates(tmp_path: Path) -> None:
    assert read_labels(_labels(tmp_path, " traffic light ", "fire hydrant")) == [
        "traffic light",
        "fire hydrant",
    ]
    with pytest.raises(ContractError, match=r"lists \['car'\] more than once"):
        read_labels(_labels(tmp_path, "car", "bus", "car"))


def test_cli_add_and_list(repo: Path, tmp_path: Path) -> None:
    onnx_path = yolo_onnx(tmp_path / "m.onnx", num_classes=2)
    labels = _labels(tmp_path, "fire hydrant", "dog")
    added = runner.invoke(
        app, ["model", "add", str(onnx_path), "--labels", str(labels), "--repository", str(repo)]
    )
    assert added.exit_code == 0, added.output
    assert added.stdout.splitlines()[0] == (
        f"model repository: {repo} (from --repository / CAMDET_MODEL_REPOSITORY); "
        "input size 640x640"
    )
    listed = runner.invoke(app, ["model", "list", "--repository", str(repo)])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[1:] == [
        f"detector: {repo / 'detector/1/model.onnx'} (no TensorRT plan)",
        "  input [batch, 3, 640, 640]",
        "  output [batch, 6, 8400]",
        "  2 classes: fire hydrant, dog",
    ]
    bad = runner.invoke(
        app, ["model", "add", str(onnx_path), "--labels", str(_labels(tmp_path, "x"))]
    )
    assert bad.exit_code == 1
    assert "has 6 rows = 4 box + 2 class scores, but the labels file lists 1 classes" in (
        bad.stderr
    )


def test_repository_lookup_order(tmp_path: Path) -> None:
    from camdet.serving.repository import PRODUCTION_REPOSITORY

    assert find_repository(None, tmp_path) == (PRODUCTION_REPOSITORY, "the installed camdet's")
    local = tmp_path / "model_repository" / "detector"
    local.mkdir(parents=True)
    (local / "config.pbtxt").write_text('name: "detector"\n')
    assert find_repository(None, tmp_path) == (
        (tmp_path / "model_repository").resolve(),
        "found in the current directory",
    )
    assert find_repository(tmp_path / "x", tmp_path) == (
        tmp_path / "x",
        "from --repository / CAMDET_MODEL_REPOSITORY",
    )
