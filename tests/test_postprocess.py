import pytest
import torch
from torchvision.ops import batched_nms

from camdet.geometry import scale_boxes_to_original
from camdet.steps.postprocess.detections import Thresholds, postprocess, postprocess_batch

NC = 4


def random_head(batch: int, anchors: int = 8400, seed: int = 0) -> torch.Tensor:
    """A head output with clustered boxes so that NMS has real work."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(batch, 2, 20, generator=g) * 600 + 20
    pick = torch.randint(0, 20, (batch, anchors), generator=g)
    xy = (
        torch.gather(centers, 2, pick[:, None].expand(-1, 2, -1))
        + torch.randn(batch, 2, anchors, generator=g) * 4
    )
    wh = torch.rand(batch, 2, anchors, generator=g) * 60 + 10
    scores = torch.rand(batch, NC, anchors, generator=g) ** 3
    return torch.cat([xy, wh, scores], 1)


def canonical(boxes: torch.Tensor, scores: torch.Tensor, cls: torch.Tensor) -> tuple:
    """Order detections by score, then by box, so that exact score ties compare equal."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), boxes[i].tolist()))
    return boxes[order], scores[order], cls[order]


def assert_same(got, expected: tuple) -> None:
    for a, b in zip(
        canonical(got.boxes, got.scores, got.class_ids), canonical(*expected), strict=True
    ):
        torch.testing.assert_close(a, b)


def reference(raw: torch.Tensor, sizes: torch.Tensor, t: Thresholds) -> list[tuple]:
    """Per-image loop with torchvision's batched_nms, as ultralytics does it."""
    out = []
    for frame, size in zip(raw, sizes, strict=False):
        pred = frame.T
        scores, cls = pred[:, 4:].max(1)
        keep = scores > t.confidence
        xywh, scores, cls = pred[keep, :4], scores[keep], cls[keep]
        xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        kept = batched_nms(xyxy, scores, cls, t.iou)[: t.max_detections]
        out.append((scale_boxes_to_original(xyxy[kept], size), scores[kept], cls[kept]))
    return out


@pytest.mark.parametrize(
    "thresholds", [Thresholds(), Thresholds(0.5, 0.45, 20), Thresholds(0.01, 0.9, 300)]
)
def test_matches_torchvision_per_image_reference(thresholds: Thresholds) -> None:
    raw = random_head(5)
    sizes = torch.tensor([[720, 1280], [1080, 1920], [480, 640], [1920, 1080], [640, 640]])
    ours = postprocess(raw, sizes, thresholds.confidence, thresholds.iou, thresholds.max_detections)
    for got, expected in zip(ours, reference(raw, sizes, thresholds), strict=True):
        assert len(got.scores) > 0
        assert_same(got, expected)


def test_per_frame_thresholds_in_one_batch() -> None:
    raw = random_head(3)
    sizes = torch.tensor([[720, 1280]] * 3)
    settings = [Thresholds(0.25, 0.7, 300), Thresholds(0.6, 0.5, 5), Thresholds(0.9, 0.7, 300)]
    ours = postprocess_batch(raw, sizes, settings)
    for frame, setting, got in zip(raw, settings, ours, strict=True):
        (expected,) = reference(frame[None], sizes[:1], setting)
        assert_same(got, expected)
    assert len(ours[1].scores) == 5


def test_fp16_head_gives_the_same_detections() -> None:
    # A sparse head whose scores are distinct in FP16, so that no tie decides the result.
    raw = torch.zeros(2, 4 + NC, 8400)
    anchors = torch.randperm(8400, generator=torch.Generator().manual_seed(1))[:60]
    raw[:, :4, anchors] = random_head(2, 60)[:, :4]
    raw[:, 4 + anchors % NC, anchors] = 0.3 + 0.01 * torch.arange(60.0)
    sizes = torch.tensor([[720, 1280], [720, 1280]])
    ours = postprocess(raw.half(), sizes)
    for got, expected in zip(ours, reference(raw.half().float(), sizes, Thresholds()), strict=True):
        assert len(got.scores) > 10
        assert_same(got, expected)
        assert got.boxes.dtype == torch.float32


def test_empty_input_and_nothing_above_threshold() -> None:
    sizes = torch.tensor([[720, 1280], [1080, 1920]])
    for raw in (torch.zeros(2, 4 + NC, 8400), torch.zeros(2, 4 + NC, 0)):
        out = postprocess(raw, sizes)
        assert [len(d.scores) for d in out] == [0, 0]
        assert out[0].boxes.shape == (0, 4)
    assert postprocess(torch.zeros(0, 4 + NC, 8400), torch.zeros(0, 2)) == []


def test_boxes_clipped_to_original_frame() -> None:
    raw = torch.zeros(1, 4 + NC, 1)
    raw[0, :5, 0] = torch.tensor([630.0, 320.0, 100.0, 400.0, 0.9])  # overhangs right and pad
    (det,) = postprocess(raw, torch.tensor([[720, 1280]]))
    assert det.boxes.tolist() == [[1160.0, 0.0, 1280.0, 720.0]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 1.5}, "confidence_threshold must be in"),
        ({"iou": 0.0}, "iou_threshold must be in"),
        ({"max_detections": -1}, r"max_detections must be in \[0, 30000\], got -1"),
        ({"max_detections": 10**30}, r"max_detections must be in \[0, 30000\], got 1000000"),
        ({"max_detections": 2.5}, "max_detections must be an integer, got 2.5"),
        ({"confidence": float("nan")}, "confidence_threshold must be a finite number, got nan"),
    ],
)
def test_threshold_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(**kwargs)


def test_placeholder_frame_of_size_zero_gets_no_detections() -> None:
    raw = random_head(2)
    sizes = torch.tensor([[0, 0], [720, 1280]])
    empty, full = postprocess(raw, sizes)
    assert len(empty.scores) == 0
    assert len(full.scores) > 0 and torch.isfinite(full.boxes).all()


def test_each_box_gets_the_mean_colour_of_its_centre() -> None:
    """The tracker's appearance cue: a box's centre half, from the letterboxed images."""
    images = torch.full((2, 3, 640, 640), 114 / 255, dtype=torch.float16)
    images[0, :, 100:200, 100:300] = torch.tensor([0.9, 0.1, 0.2])[:, None, None]
    # Frame 1: a ring of red around a blue centre; only the centre half counts.
    images[1, :, 300:400, 300:400] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    images[1, :, 325:375, 325:375] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    raw = torch.zeros(2, 4 + NC, 2)
    raw[0, :5, 0] = torch.tensor([200.0, 150.0, 200.0, 100.0, 0.9])  # the box of frame 0's
    raw[1, :5, 0] = torch.tensor([350.0, 350.0, 100.0, 100.0, 0.9])  # the ring's box
    sizes = torch.tensor([[640, 640], [640, 640]])
    first, second = postprocess(raw, sizes, images=images)
    # FP16 images, averaged in FP16 (as on the server): within 0.01.
    torch.testing.assert_close(first.colors, torch.tensor([[0.9, 0.1, 0.2]]), atol=1e-2, rtol=0)
    torch.testing.assert_close(second.colors, torch.tensor([[0.0, 0.0, 1.0]]), atol=1e-2, rtol=0)
    assert first.colors.dtype == torch.float32
    # Without the images there are no colours.
    assert postprocess(raw, sizes)[0].colors is None
    with pytest.raises(ValueError, match="batch of 2 with 1 images"):
        postprocess(raw, sizes, images=images[:1])
