import numpy as np
import pytest
import torch

from camdet.geometry import (
    INPUT_SHAPE,
    PAD_VALUE,
    boxes_to_input,
    letterbox_image,
    letterbox_params,
    scale_boxes_to_original,
)

SIZES = [(720, 1280), (1080, 1920), (480, 640), (1920, 1080), (1024, 1024), (517, 333), (3, 2000)]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_letterbox_fits_and_centers(height: int, width: int) -> None:
    size_h, size_w = INPUT_SHAPE  # the one input size setting (CAMDET_INPUT_SIZE)
    box = letterbox_params(height, width)
    assert box.new_width == size_w or box.new_height == size_h
    assert box.new_width <= size_w and box.new_height <= size_h
    assert box.new_width == round(width * box.gain) and box.new_height == round(height * box.gain)
    # centered: the two pads differ by at most one pixel, the extra one at bottom/right
    right = size_w - box.new_width - box.left
    bottom = size_h - box.new_height - box.top
    assert right - box.left in (0, 1)
    assert bottom - box.top in (0, 1)


def test_letterbox_image_pads_with_114() -> None:
    image = np.full((720, 1280, 3), 7, dtype=np.uint8)
    out = letterbox_image(image, 640)
    assert out.shape == (640, 640, 3)
    assert (out[:140] == PAD_VALUE).all() and (out[500:] == PAD_VALUE).all()
    assert (out[140:500] == 7).all()
    out = letterbox_image(image, (384, 640))  # the 16:9 input: 12 rows of pad, not 140
    assert out.shape == (384, 640, 3)
    assert (out[:12] == PAD_VALUE).all() and (out[372:] == PAD_VALUE).all()
    assert (out[12:372] == 7).all()
    assert letterbox_image(image).shape == (*INPUT_SHAPE, 3)


def test_ultralytics_reference_values() -> None:
    # 1280x720 -> 640x360 with 140 px above and below, as ultralytics' LetterBox places it.
    box = letterbox_params(720, 1280, 640)
    assert (box.new_width, box.new_height, box.left, box.top) == (640, 360, 0, 140)
    box = letterbox_params(480, 641, 640)
    assert (box.new_width, box.new_height, box.left, box.top) == (640, 479, 0, 80)
    # 640x384: 16:9 fills the width; 4:3 and portrait frames fill the height
    box = letterbox_params(1080, 1920, (384, 640))
    assert (box.new_width, box.new_height, box.left, box.top) == (640, 360, 0, 12)
    box = letterbox_params(480, 640, (384, 640))
    assert (box.new_width, box.new_height, box.left, box.top) == (512, 384, 64, 0)
    box = letterbox_params(1920, 1080, (384, 640))
    assert (box.new_width, box.new_height, box.left, box.top) == (216, 384, 212, 0)


@pytest.mark.parametrize("size", [(640, 640), (384, 640)], ids=["640x640", "640x384"])
@pytest.mark.parametrize(("height", "width"), SIZES[:-1])
def test_boxes_round_trip(height: int, width: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, width * 0.8, 50)
    y1 = rng.uniform(0, height * 0.8, 50)
    w, h = rng.uniform(1, width * 0.2, 50), rng.uniform(1, height * 0.2, 50)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1)
    boxes = np.minimum(boxes, [width, height, width, height]).astype(np.float32)
    there = torch.from_numpy(boxes_to_input(boxes, height, width, size))
    back = scale_boxes_to_original(there, torch.tensor([[height, width]] * 50), size)
    np.testing.assert_allclose(
        back.numpy(), boxes, atol=1e-3 * max(height, width) / min(size) + 1e-3
    )


def test_scale_boxes_clips_to_frame() -> None:
    boxes = torch.tensor([[-50.0, 100.0, 700.0, 600.0]])
    out = scale_boxes_to_original(boxes, torch.tensor([720, 1280]), 640)
    assert out.tolist() == [[0.0, 0.0, 1280.0, 720.0]]


def test_rejects_empty_frame() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        letterbox_params(0, 10)
