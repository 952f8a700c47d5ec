"""CPU tests of the demo detector: layout, loss, assignment, data, training CLI, ONNX export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from camdet import scenes
from camdet.detector import data, evaluate, export, loss, model
from camdet.geometry import INPUT_SIZE, letterbox_params

TINY = model.DetectorConfig(width=0.125, depth=0.33)
"""Half the width of n: same code paths, a fraction of the CPU time."""


def _shapes_batch(size: int, seed: int = 0) -> data.Batch:
    """Two frames of flat shapes on grey, with their exact boxes (no scene generator)."""
    rng = np.random.default_rng(seed)
    images, labels, boxes = [], [], []
    for _ in range(2):
        image = np.full((size, size, 3), 114, dtype=np.uint8)
        frame_labels, frame_boxes = [], []
        for cls in range(3):
            w, h = rng.integers(size // 8, size // 3, size=2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            color = [(220, 40, 40), (40, 220, 40), (40, 40, 220)][cls]
            cv2.rectangle(image, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), color, -1)
            frame_labels.append(cls)
            frame_boxes.append([x, y, x + w, y + h])
        images.append(torch.from_numpy(image.transpose(2, 0, 1).copy()))
        labels.append(torch.tensor(frame_labels))
        boxes.append(torch.tensor(frame_boxes, dtype=torch.float32))
    samples = [data.Sample(i, lab, b) for i, lab, b in zip(images, labels, boxes, strict=True)]
    return data.collate(samples)


# ---------------------------------------------------------------- model / export layout


def test_size_matches_yolov8n() -> None:
    net = model.Detector(model.DetectorConfig(num_classes=80))
    # YOLOv8n has 3,157,200 parameters, 16 of them its frozen DFL projection, which is
    # a constant here.
    assert model.count_parameters(net) == 3_157_184
    assert 8.0 < model.count_gflops(net) < 9.0


def test_export_mode_layout_and_anchor_order() -> None:
    net = model.Detector().eval()
    with torch.no_grad():
        # A box head that puts all DFL mass on bin 0 predicts zero-size boxes at the anchors.
        for branch in net.head.box:
            branch[-1].weight.zero_()
            branch[-1].bias.copy_(torch.tensor([100.0] + [0.0] * 15).repeat(4))
        out = net(torch.rand(2, 3, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (2, 4 + model.NUM_CLASSES, 8400)
    assert out.dtype == torch.float32
    centers = out[0, :2].T
    # Stride 8 first, row-major, at cell centers; then stride 16 and 32.
    assert centers[0].tolist() == pytest.approx([4.0, 4.0], abs=1e-3)
    assert centers[1].tolist() == pytest.approx([12.0, 4.0], abs=1e-3)
    assert centers[80].tolist() == pytest.approx([4.0, 12.0], abs=1e-3)
    assert centers[6400].tolist() == pytest.approx([8.0, 8.0], abs=1e-3)
    assert centers[8000].tolist() == pytest.approx([16.0, 16.0], abs=1e-3)
    assert centers[-1].tolist() == pytest.approx([624.0, 624.0], abs=1e-3)
    assert out[:, 2:4].abs().max() < 1e-3
    scores = out[:, 4:]
    assert ((scores >= 0) & (scores <= 1)).all()


def test_training_mode_returns_raw_levels() -> None:
    net = model.Detector(TINY).train()
    levels = net(torch.rand(1, 3, 320, 320))
    assert [tuple(level.shape) for level in levels] == [
        (1, 4 * model.REG_MAX + 4, 40, 40),
        (1, 4 * model.REG_MAX + 4, 20, 20),
        (1, 4 * model.REG_MAX + 4, 10, 10),
    ]


# --------------------------------------------------------------------------- assignment


def _assignment_case(seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    points, strides = model.make_anchors([(80, 80), (40, 40), (20, 20)], model.STRIDES)
    points = points * strides
    count = 6
    wh = 16 + torch.rand(2, count, 2, generator=gen) * 250
    xy = torch.rand(2, count, 2, generator=gen) * (INPUT_SIZE - wh)
    gt_boxes = torch.cat((xy, xy + wh), dim=-1)
    gt_labels = torch.randint(0, 4, (2, count), generator=gen)
    gt_mask = torch.ones(2, count, dtype=torch.bool)
    gt_mask[1, 4:] = False
    pred_scores = torch.rand(2, len(points), 4, generator=gen) * 0.1
    jitter = torch.randn(2, len(points), 4, generator=gen) * 8
    pred_boxes = torch.cat((points - 20, points + 20), dim=-1).expand(2, -1, -1) + jitter
    return pred_scores, pred_boxes, points, gt_labels, gt_boxes, gt_mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assignment_gives_every_box_positives_inside_it(seed: int) -> None:
    pred_scores, pred_boxes, points, gt_labels, gt_boxes, gt_mask = _assignment_case(seed)
    out = loss.assign(pred_scores, pred_boxes, points, gt_labels, gt_boxes, gt_mask)
    for b in range(2):
        for m in range(gt_boxes.shape[1]):
            mine = out.fg_mask[b] & (out.gt_index[b] == m)
            if not gt_mask[b, m]:
                assert not mine.any()
                continue
            assert 1 <= mine.sum() <= 10
            inside = loss.anchors_in_boxes(points, gt_boxes[b : b + 1, m : m + 1])[0, 0]
            assert inside[mine].all()
            assert (out.boxes[b, mine] == gt_boxes[b, m]).all()
            assert (out.scores[b, mine].argmax(-1) == gt_labels[b, m]).all()
    assert (out.scores.sum(-1)[~out.fg_mask] == 0).all()
    assert out.scores.max() <= 1.0


def test_assignment_gives_a_shared_anchor_to_the_box_it_overlaps_most() -> None:
    points = torch.tensor([[100.0, 100.0]])
    pred_boxes = torch.tensor([[[80.0, 80.0, 120.0, 120.0]]])
    gt_boxes = torch.tensor([[[0.0, 0.0, 200.0, 200.0], [78.0, 78.0, 122.0, 122.0]]])
    out = loss.assign(
        torch.full((1, 1, 4), 0.5),
        pred_boxes,
        points,
        torch.tensor([[0, 1]]),
        gt_boxes,
        torch.ones(1, 2, dtype=torch.bool),
    )
    assert out.fg_mask.tolist() == [[True]]
    assert out.gt_index.tolist() == [[1]]


def test_assignment_without_boxes() -> None:
    out = loss.assign(
        torch.rand(1, 5, 4),
        torch.rand(1, 5, 4),
        torch.rand(5, 2),
        torch.zeros(1, 0, dtype=torch.long),
        torch.zeros(1, 0, 4),
        torch.zeros(1, 0, dtype=torch.bool),
    )
    assert not out.fg_mask.any()
    assert out.scores.sum() == 0


def test_complete_iou_of_identical_boxes_is_one() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 6.0, 9.0]])
    assert loss.complete_iou(boxes, boxes).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    shifted = boxes + torch.tensor([100.0, 0.0, 100.0, 0.0])
    assert (loss.complete_iou(boxes, shifted) < 0).all()


# ------------------------------------------------------------------------------ training


def test_training_steps_overfit_a_fixed_batch() -> None:
    torch.manual_seed(0)
    net = model.Detector(TINY).train()
    criterion = loss.DetectionLoss(net.num_classes)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batch = _shapes_batch(256)
    images = batch.images.float() / 255
    history = []
    for _ in range(30):
        total, _ = criterion(net(images), batch.labels, batch.boxes, batch.mask)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert all(np.isfinite(history))
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5])


def test_ema_tracks_the_model() -> None:
    from camdet.detector.train import ModelEma

    net = torch.nn.Linear(2, 2)
    ema = ModelEma(net, decay=0.5, tau=1e-9)
    with torch.no_grad():
        net.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(net)
    assert torch.allclose(ema.module.weight, (before + net.weight) / 2)


def test_lr_schedule_warms_up_then_decays() -> None:
    from camdet.detector.train import TrainConfig, lr_factor

    cfg = TrainConfig(out=Path("."), minutes=1.0, warmup_steps=10, final_lr_fraction=0.1)
    assert lr_factor(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_factor(100, 0.0, cfg) == pytest.approx(1.0)
    assert lr_factor(100, 0.5, cfg) == pytest.approx(0.55)
    assert lr_factor(100, 1.0, cfg) == pytest.approx(0.1)


@pytest.mark.slow
def test_train_cli_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "camdet.detector.train",
        "--out",
        str(out),
        "--minutes",
        "0.1",
        "--batch",
        "2",
        "--workers",
        "1",
        "--val-batches",
        "1",
        "--log-every",
        "1",
        "--imgsz-check",
    ]
    subprocess.run(command, check=True, cwd=Path(__file__).parents[1], timeout=300)
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] >= 1
    assert record["images_seen"] == 2 * record["steps"]
    assert record["config"]["seed"] == 0
    for name in ("best.pt", "last.pt"):
        assert (out / name).stat().st_size < 16e6
        reloaded = model.load_weights(out / name)
        assert reloaded(torch.zeros(1, 3, 640, 640)).shape == (1, 8, 8400)


# ---------------------------------------------------------------------------------- data


def test_training_render_size_keeps_aspect_and_never_upsamples() -> None:
    assert data.training_render_size(1920, 1080, 1.0) == (640, 360)
    assert data.training_render_size(1920, 1080, 1.5) == (960, 540)
    assert data.training_render_size(640, 360, 1.5) == (640, 360)
    assert data.training_render_size(1080, 1920, 1.0) == (360, 640)


def test_letterbox_sample_maps_boxes_into_input_pixels() -> None:
    frame = scenes.render_frame(np.random.default_rng(3), 1280, 720)
    sample = data.letterbox_sample(frame)
    box = letterbox_params(720, 1280)
    assert sample.image.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert sample.image.dtype == torch.uint8
    expected = frame.boxes * box.gain + np.array([box.left, box.top, box.left, box.top])
    np.testing.assert_allclose(sample.boxes.numpy(), expected, rtol=1e-5, atol=1e-3)
    assert sample.labels.tolist() == frame.class_ids.tolist()


def test_seed_streams_are_disjoint_and_reproducible() -> None:
    train = data.frame_rng(data.TRAIN_STREAM, 0, 0, 5).integers(1 << 62, size=4)
    again = data.frame_rng(data.TRAIN_STREAM, 0, 0, 5).integers(1 << 62, size=4)
    held_out = data.frame_rng(data.EVAL_STREAM, 0, 0, 5).integers(1 << 62, size=4)
    assert train.tolist() == again.tolist()
    assert train.tolist() != held_out.tolist()


def test_training_frames_pad_batches() -> None:
    stream = iter(data.TrainingFrames(seed=0, batch_size=3))
    batch = next(stream)
    assert batch.images.shape == (3, 3, INPUT_SIZE, INPUT_SIZE)
    assert batch.labels.shape == batch.mask.shape == batch.boxes.shape[:2]
    assert (batch.labels[~batch.mask] == -1).all()
    assert (batch.boxes[batch.mask] >= 0).all() and (batch.boxes[batch.mask] <= INPUT_SIZE).all()


# ---------------------------------------------------------------------------- evaluation


def test_perfect_detections_score_map_one() -> None:
    frames = [scenes.render_frame(np.random.default_rng(i), 320, 240) for i in range(3)]
    truth = [
        data.EvalSample(torch.empty(0), (240, 320), f.class_ids, f.boxes)
        for f in frames
        if len(f.boxes)
    ]
    ground_truth = evaluate.ground_truth_coco(truth)
    detections = [
        evaluate.Detections(
            torch.from_numpy(s.boxes), torch.ones(len(s.boxes)), torch.from_numpy(s.labels)
        )
        for s in truth
    ]
    image_ids = [image["id"] for image in ground_truth["images"]]
    category_ids = [category["id"] for category in ground_truth["categories"]]
    results = evaluate.coco_detections(detections, image_ids, category_ids)
    scores = evaluate.score_coco(ground_truth, results)
    assert scores.map50 == pytest.approx(1.0)
    assert scores.map50_95 == pytest.approx(1.0)


# -------------------------------------------------------------------------------- export


def test_onnx_round_trip(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    model.save_weights(model.Detector(), weights)
    path = tmp_path / "model.onnx"
    export.export_weights(weights, path)

    graph = onnx.load(str(path))
    assert graph.opset_import[0].version >= 17
    (inp,), (out,) = graph.graph.input, graph.graph.output
    assert (inp.name, out.name) == ("images", "output0")
    assert (
        inp.type.tensor_type.elem_type == out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = model.load_weights(weights)
    for batch in (1, 3):
        images = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE)
        (got,) = session.run(["output0"], {"images": images.numpy()})
        with torch.no_grad():
            want = reference(images).numpy()
        assert got.shape == (batch, 8, 8400) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_export_check_rejects_a_wrong_contract(tmp_path: Path) -> None:
    path = tmp_path / "wrong.onnx"
    net = model.Detector(model.DetectorConfig(num_classes=2))
    export.export_onnx(net, path)
    with pytest.raises(export.ExportCheckError, match=r"output0: shape \['batch', 6, 8400\]"):
        export.check_onnx(path, num_classes=4)


# ---------------------------------------------------------------------- committed model

COMMITTED_ONNX = Path(__file__).parents[1] / "model_repository" / "detector" / "1" / "model.onnx"


def test_committed_onnx_is_the_demo_weights() -> None:
    export.check_onnx(COMMITTED_ONNX, num_classes=len(scenes.CLASSES))
    worst = export.compare_with_torch(COMMITTED_ONNX, model.load_weights(model.DEMO_WEIGHTS))
    assert worst < 1e-3


def test_committed_onnx_meets_the_accuracy_targets_on_fresh_frames() -> None:
    # Fresh held-out 1080p frames, the project's letterbox and postprocessing, pycocotools.
    frames = data.EvalFrames(seed=777, count=40, width=1920, height=1080, jpeg_quality=90)
    result = evaluate.evaluate(evaluate.onnx_predictor(COMMITTED_ONNX), frames, batch=4)
    assert result.objects > 150
    assert result.scores.map50 >= 0.90
    assert result.scores.map50_95 >= 0.70
