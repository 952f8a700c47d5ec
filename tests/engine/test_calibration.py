"""camdet.engine.calibration: INT8 calibration frames from a folder or synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from camdet.constants import INPUT_SHAPE
from camdet.engine import builder, calibration, errors, onnx_checks
from camdet.engine import contract as contracts
from camdet.geometry import letterbox_image, to_model_input
from tests.helpers.engine import random_rgb


def test_calibration_array_from_a_folder(tmp_path: Path) -> None:
    frames = {
        "a.png": random_rgb(720, 1280, 1),
        "b.png": random_rgb(480, 640, 2),
        "c.png": random_rgb(1080, 608, 3),
    }
    for name, rgb in frames.items():
        assert cv2.imwrite(str(tmp_path / name), rgb[..., ::-1])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    source = calibration.CalibrationSource(tmp_path, frames=10)
    assert source.available() == 4
    batch = calibration.calibration_array(source.frames_rgb())
    assert batch.shape == (3, 3, *INPUT_SHAPE), "the unreadable file is skipped"
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    for got, name in zip(batch, ("a.png", "b.png", "c.png"), strict=True):
        np.testing.assert_array_equal(
            got, to_model_input(letterbox_image(frames[name]), np.float32)
        )
    with pytest.raises(errors.CalibrationError, match="no readable frame"):
        calibration.calibration_array(iter(()))


def test_synthetic_calibration_frames() -> None:
    frames = list(calibration.CalibrationSource(None, frames=2, seed=3).frames_rgb())
    assert [f.shape for f in frames] == [(1080, 1920, 3), (720, 1280, 3)]
    assert all(f.dtype == np.uint8 for f in frames)
    assert calibration.calibration_array(iter(frames)).shape == (2, 3, *INPUT_SHAPE)


def test_synthetic_frames_without_scenes_fail_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "camdet.scenes", None)
    with pytest.raises(
        errors.CalibrationError, match=r"synthetic calibration needs camdet\.scenes"
    ):
        calibration.synthetic_frames(4, seed=0)


def test_int8_without_frames_is_refused_before_converting(
    tmp_path: Path, paths: dict[str, Path]
) -> None:
    request = builder.BuildRequest(
        onnx=paths["onnx"],
        config=paths["config"],
        labels=paths["labels"],
        precision=contracts.Precision.INT8,
        calibration=calibration.CalibrationSource(tmp_path / "frames", frames=100),
        timing_cache=tmp_path / "cache" / "timing.cache",
    )
    inputs = onnx_checks.validate_inputs(paths["onnx"], paths["config"], paths["labels"])
    kept = request.converted_onnx_for(inputs.onnx_sha256)
    assert kept == tmp_path / "cache" / f"detector-{inputs.onnx_sha256[:16]}-640x640-int8.onnx"
    with pytest.raises(errors.CalibrationError) as caught:
        builder.convert_for_build(request, inputs)
    assert str(caught.value) == (
        "INT8 needs at least 8 calibration frames and up to 100 frames from "
        f"{tmp_path / 'frames'} gives 0; "
        f"no kept conversion at {kept}"
    )
    assert not kept.exists()
