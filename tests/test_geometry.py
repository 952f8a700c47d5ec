import numpy as np
import pytest
import torch

from camdet.geometry import (
    INPUT_SIZE,
    PAD_VALUE,
    boxes_to_input,
    letterbox_image,
    letterbox_params,
    scale_boxes_to_original,
)

SIZES = [(720, 1280), (1080, 1920), (480, 640), (1920, 1080), (1024, 1024), (517, 333), (3, 2000)]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_letterbox_fits_and_centers(height: int, width: int) -> None:
    box = letterbox_params(height, width)
    assert max(box.new_width, box.new_height) == INPUT_SIZE
    assert box.new_width == round(width * box.gain) and box.new_height == round(height * box.gain)
    # centered: the two pads differ by at most one pixel, the extra one at bottom/right
    right = INPUT_SIZE - box.new_width - box.left
    bottom = INPUT_SIZE - box.new_height - box.top
    assert right - box.left in (0, 1)
    assert bottom - box.top in (0, 1)


def test_letterbox_image_pads_with_114() -> None:
    image = np.full((720, 1280, 3), 7, dtype=np.uint8)
    out = letterbox_image(image)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE, 3)
    assert (out[:140] == PAD_VALUE).all() and (out[500:] == PAD_VALUE).all()
    assert (out[140:500] == 7).all()


def test_ultralytics_reference_values() -> None:
    # 1280x720 -> 640x360 with 140 px above and below, as ultralytics' LetterBox places it.
    box = letterbox_params(720, 1280)
    assert (box.new_width, box.new_height, box.left, box.top) == (640, 360, 0, 140)
    box = letterbox_params(480, 641)
    assert (box.new_width, box.new_height, box.left, box.top) == (640, 479, 0, 80)


@pytest.mark.parametrize(("height", "width"), SIZES[:-1])
def test_boxes_round_trip(height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    x1 = rng.uniform(0, width * 0.8, 50)
    y1 = rng.uniform(0, height * 0.8, 50)
    w, h = rng.uniform(1, width * 0.2, 50), rng.uniform(1, height * 0.2, 50)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1)
    boxes = np.minimum(boxes, [width, height, width, height]).astype(np.float32)
    there = torch.from_numpy(boxes_to_input(boxes, height, width))
    back = scale_boxes_to_original(there, torch.tensor([[height, width]] * 50))
    np.testing.assert_allclose(
        back.numpy(), boxes, atol=1e-3 * max(height, width) / INPUT_SIZE + 1e-3
    )


def test_scale_boxes_clips_to_frame() -> None:
    boxes = torch.tensor([[-50.0, 100.0, 700.0, 600.0]])
    out = scale_boxes_to_original(boxes, torch.tensor([720, 1280]))
    assert out.tolist() == [[0.0, 0.0, 1280.0, 720.0]]


def test_rejects_empty_frame() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        letterbox_params(0, 10)
