"""Unit tests of the synthetic scene generator (CPU only, a few seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from camdet import scenes
from camdet.cli.scenes import app, parse_size

SIZES = [(640, 360), (1280, 720), (640, 480), (360, 640), (512, 512)]


def _frames(count: int, width: int, height: int, seed: int = 0) -> list[scenes.Frame]:
    return [
        scenes.render_frame(np.random.default_rng([seed, i]), width, height) for i in range(count)
    ]


def _clip_polygon_to_frame(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman clip against the frame rectangle (valid for concave subjects)."""
    edges = [(0, 0.0, 1), (0, float(width), -1), (1, 0.0, 1), (1, float(height), -1)]
    points = list(polygon)
    for axis, limit, sign in edges:
        inside = [sign * (p[axis] - limit) >= 0 for p in points]
        clipped = []
        for i, point in enumerate(points):
            prev, prev_inside = points[i - 1], inside[i - 1]
            if inside[i] != prev_inside:
                t = (limit - prev[axis]) / (point[axis] - prev[axis])
                clipped.append(prev + t * (point - prev))
            if inside[i]:
                clipped.append(point)
        points = clipped
        if not points:
            return np.zeros((0, 2))
    return np.array(points)


def _check_visibility_rules(frame: scenes.Frame) -> None:
    """Re-derive truncation and occlusion by painting the frame's polygons in order."""
    height, width = frame.image.shape[:2]
    owner = np.full((height, width), -1)
    own_pixels = []
    for index, polygon in enumerate(frame.polygons):
        clipped = _clip_polygon_to_frame(polygon, width, height)
        in_frame = (
            scenes.polygon_area(clipped) / scenes.polygon_area(polygon) if len(clipped) else 0
        )
        assert in_frame >= scenes.MIN_IN_FRAME_FRACTION - 1e-6
        raster = scenes.rasterize(polygon, width, height)
        assert raster is not None
        window = owner[raster.window]
        window[raster.mask] = index
        own_pixels.append(int(raster.mask.sum()))
    visible = np.bincount(owner.ravel() + 1, minlength=len(own_pixels) + 1)[1:]
    for index, pixels in enumerate(own_pixels):
        assert visible[index] > 0
        assert visible[index] >= scenes.MIN_UNOCCLUDED_FRACTION * pixels - 1


def test_classes_and_category_ids() -> None:
    assert len(scenes.CLASSES) == 4
    assert len(set(scenes.CLASSES)) == 4
    for class_id in range(4):
        category_id = scenes.class_id_to_category_id(class_id)
        assert category_id == class_id + 1
        assert scenes.category_id_to_class_id(category_id) == class_id
    with pytest.raises(ValueError, match="class_id must be in"):
        scenes.class_id_to_category_id(4)
    with pytest.raises(ValueError, match="class_id must be in"):
        scenes.category_id_to_class_id(0)
    assert [c["id"] for c in scenes.coco_categories()] == [1, 2, 3, 4]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_render_frame_is_deterministic(width: int, height: int) -> None:
    first = scenes.render_frame(np.random.default_rng(7), width, height)
    second = scenes.render_frame(np.random.default_rng(7), width, height)
    other = scenes.render_frame(np.random.default_rng(8), width, height)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.boxes.tobytes() == second.boxes.tobytes()
    assert np.array_equal(first.class_ids, second.class_ids)
    assert first.image.tobytes() != other.image.tobytes()


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_frame_layout_and_box_validity(width: int, height: int) -> None:
    smallest, largest = scenes.size_range(width, height)
    for frame in _frames(12, width, height):
        assert frame.image.shape == (height, width, 3)
        assert frame.image.dtype == np.uint8
        assert frame.boxes.dtype == np.float32 and frame.boxes.shape == (len(frame.boxes), 4)
        assert frame.class_ids.dtype == np.int64 and frame.class_ids.shape == (len(frame.boxes),)
        assert len(frame.boxes) <= scenes.MAX_OBJECTS
        assert len(frame.polygons) == len(frame.boxes)
        x1, y1, x2, y2 = frame.boxes.T
        assert np.all((x1 >= 0) & (y1 >= 0) & (x2 <= width) & (y2 <= height))
        assert np.all((x2 - x1 > 1) & (y2 - y1 > 1))
        assert np.all((frame.class_ids >= 0) & (frame.class_ids < len(scenes.CLASSES)))
        for box, polygon in zip(frame.boxes, frame.polygons, strict=True):
            full = scenes.polygon_box(polygon)
            np.testing.assert_allclose(box, scenes.clip_boxes(full[None], width, height)[0])
            longer = float(np.max(full[2:] - full[:2]))
            assert smallest - 1e-6 <= longer <= largest + 1e-6


def test_object_counts_and_classes_vary() -> None:
    frames = _frames(80, 320, 240, seed=3)
    counts = [len(frame.boxes) for frame in frames]
    assert min(counts) == 0
    assert max(counts) >= 9
    seen = np.concatenate([frame.class_ids for frame in frames])
    assert set(seen.tolist()) == {0, 1, 2, 3}
    truncated = sum(
        int(np.any(frame.boxes[:, :2] == 0) or np.any(frame.boxes[:, 2:] == (320, 240)))
        for frame in frames
    )
    assert truncated > 0


@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 360), (240, 320)])
def test_truncation_and_occlusion_rules_static(width: int, height: int) -> None:
    for frame in _frames(40, width, height, seed=11):
        _check_visibility_rules(frame)


def test_truncation_and_occlusion_rules_sequence() -> None:
    sequence = scenes.SceneSequence(5, 320, 240, num_objects=12)
    hidden = 0
    for index in range(0, 400, 4):
        frame = sequence.frame(index)
        _check_visibility_rules(frame)
        hidden += len(sequence) - len(frame.boxes)
    # A crowded scene must sometimes hide objects, or the rule was never exercised.
    assert hidden > 0


@pytest.mark.parametrize("class_id", range(4))
def test_box_is_tight_on_flat_background(class_id: int) -> None:
    rng = np.random.default_rng(class_id)
    for _ in range(20):
        image = np.full((200, 240, 3), 100, dtype=np.uint8)
        size = rng.uniform(8, 120)
        shape = scenes.unit_shape(rng, class_id, rng.uniform(0.5, 2.0), size)
        shape = scenes.rotate(shape, rng.uniform(0, 2 * math.pi))
        polygon = shape * scenes.fit_scale(shape, size) + rng.uniform(70, 130, size=2)
        scenes.draw_shape(image, polygon, (230, 20, 60))
        changed = np.any(image != 100, axis=2)
        rows, cols = np.nonzero(changed)
        drawn = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        np.testing.assert_allclose(drawn, scenes.polygon_box(polygon), atol=1.0)
        # Coverage anti-aliasing: the painted amount equals the polygon's area.
        coverage = (image[:, :, 0].astype(float) - 100) / (230 - 100)
        area = scenes.polygon_area(polygon)
        perimeter = np.linalg.norm(np.diff(polygon, axis=0, append=polygon[:1]), axis=1).sum()
        assert abs(coverage.sum() - area) <= 0.2 * perimeter + 2


def test_axis_aligned_box_has_exact_edges() -> None:
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    polygon = np.array([[5.0, 7.0], [15.0, 7.0], [15.0, 20.0], [5.0, 20.0]])
    scenes.draw_shape(image, polygon, (255, 255, 255))
    ys, xs = np.nonzero(image[:, :, 0] > 127)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (5, 15, 7, 20)


def test_sequence_is_deterministic_and_smooth() -> None:
    sequence = scenes.SceneSequence(21, 480, 270, num_objects=(4, 6))
    again = scenes.SceneSequence(21, 480, 270, num_objects=(4, 6))
    assert 4 <= len(sequence) <= 6
    # Random access equals in-order access, and a second instance agrees byte for byte.
    late = sequence.frame(57)
    for index in range(0, 60):
        sequence.frame(index)
    assert late.image.tobytes() == again.frame(57).image.tobytes()
    assert late.boxes.tobytes() == sequence.frame(57).boxes.tobytes()
    classes = {i: obj.class_id for i, obj in enumerate(sequence.objects)}
    previous: dict[int, np.ndarray] = {}
    for index in range(60):
        frame = sequence.frame(index)
        assert frame.track_ids is not None
        current = {}
        for track_id, class_id, box in zip(
            frame.track_ids, frame.class_ids, frame.boxes, strict=True
        ):
            assert classes[int(track_id)] == class_id
            center = (box[:2] + box[2:]) / 2
            if track_id in previous and not _touches_border(box, 480, 270):
                assert np.linalg.norm(center - previous[track_id]) < 20
            current[int(track_id)] = center
        previous = current


def _touches_border(box: np.ndarray, width: int, height: int) -> bool:
    return bool(box[0] <= 0 or box[1] <= 0 or box[2] >= width or box[3] >= height)


def test_sequence_objects_move() -> None:
    sequence = scenes.SceneSequence(2, 640, 360, num_objects=5)
    start = {
        int(t): p.mean(axis=0)
        for t, p in zip(sequence.frame(0).track_ids, sequence.frame(0).polygons, strict=True)
    }
    later = sequence.frame(90)
    moved = [
        np.linalg.norm(polygon.mean(axis=0) - start[int(track_id)])
        for track_id, polygon in zip(later.track_ids, later.polygons, strict=True)
        if int(track_id) in start
    ]
    assert moved and max(moved) > 5


def test_sequence_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 32x32"):
        scenes.SceneSequence(0, 16, 16)
    with pytest.raises(ValueError, match="num_objects"):
        scenes.SceneSequence(0, 64, 64, num_objects=(5, 2))
    with pytest.raises(ValueError, match="frame index"):
        scenes.SceneSequence(0, 64, 64).frame(-1)


def test_pick_color_keeps_distance() -> None:
    rng = np.random.default_rng(0)
    avoid = rng.integers(0, 256, size=(6, 3))
    for _ in range(20):
        color = np.array(scenes.pick_color(rng, avoid))
        assert np.linalg.norm(avoid - color, axis=1).min() >= scenes.MIN_COLOR_DISTANCE


def test_jpeg_round_trip() -> None:
    smooth = np.zeros((48, 64, 3), dtype=np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    smooth[..., 1] = np.linspace(0, 255, 48, dtype=np.uint8)[:, None]
    decoded = scenes.decode_jpeg(scenes.encode_jpeg(smooth, 95))
    assert decoded.shape == smooth.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - smooth).mean() < 2
    image = scenes.render_frame(np.random.default_rng(1), 320, 240).image
    error = scenes.decode_jpeg(scenes.encode_jpeg(image, 90)).astype(float) - image
    assert 10 * np.log10(255**2 / np.mean(error**2)) > 25
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert scenes.decode_jpeg(scenes.encode_jpeg(red)).mean(axis=(0, 1)).argmax() == 0
    with pytest.raises(ValueError, match="JPEG quality"):
        scenes.encode_jpeg(image, 0)
    with pytest.raises(ValueError, match="not a decodable image"):
        scenes.decode_jpeg(b"not a jpeg")


def test_render_frame_with_jpeg_artifacts() -> None:
    clean = scenes.render_frame(np.random.default_rng(4), 320, 240)
    lossy = scenes.render_frame(np.random.default_rng(4), 320, 240, jpeg_quality=30)
    assert np.array_equal(clean.boxes, lossy.boxes)
    difference = np.abs(clean.image.astype(int) - lossy.image)
    assert 0 < difference.mean() < 15


def test_coco_round_trip_and_self_evaluation(tmp_path: Path) -> None:
    frames = _frames(10, 320, 240, seed=5)
    names = [f"{i}.jpg" for i in range(len(frames))]
    coco_dict = scenes.to_coco(frames, names)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco_dict))
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == list(range(1, 11))
    assert len(coco.getAnnIds()) == sum(len(f.boxes) for f in frames)
    for frame, (boxes, class_ids) in zip(frames, scenes.coco_targets(coco_dict), strict=True):
        np.testing.assert_allclose(boxes, frame.boxes, atol=2e-3)
        assert np.array_equal(class_ids, frame.class_ids)
    annotation = coco.loadAnns(coco.getAnnIds())[0]
    assert annotation["iscrowd"] == 0
    assert annotation["area"] == pytest.approx(
        annotation["bbox"][2] * annotation["bbox"][3], abs=1e-2
    )
    # The truth scored against itself must be perfect, or ids/categories are inconsistent.
    detections = [dict(a, score=1.0) for a in coco_dict["annotations"]]
    evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_to_coco_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="file names"):
        scenes.to_coco(_frames(2, 64, 64), ["a.jpg"])


def test_write_image_dataset(tmp_path: Path) -> None:
    json_path = scenes.write_image_dataset(
        tmp_path / "ds", 4, seed=9, sizes=((320, 240), (240, 320))
    )
    coco = COCO(str(json_path))
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        decoded = scenes.decode_jpeg((json_path.parent / info["file_name"]).read_bytes())
        assert decoded.shape == (info["height"], info["width"], 3)
    # Image i is reproducible on its own from default_rng([seed, i]).
    rng = np.random.default_rng([9, 2])
    size = ((320, 240), (240, 320))[int(rng.integers(2))]
    expected = scenes.render_frame(rng, *size)
    boxes, _ = scenes.coco_targets(json.loads(json_path.read_text()))[2]
    np.testing.assert_allclose(boxes, expected.boxes, atol=2e-3)


def test_write_clip_decodes_to_annotated_frames(tmp_path: Path) -> None:
    clip = tmp_path / "cam0.mp4"
    json_path = scenes.write_clip(clip, seed=3, num_frames=25, width=320, height=240, fps=10)
    assert json_path == tmp_path / "cam0.json"
    with av.open(str(clip)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(clip)) as container:
        keyframes = [i for i, f in enumerate(container.decode(video=0)) if f.key_frame]
    assert len(decoded) == 25
    assert all(image.shape == (240, 320, 3) for image in decoded)
    assert keyframes == [0, 10, 20]
    coco = json.loads(json_path.read_text())
    assert len(coco["images"]) == 25
    assert [image["frame_index"] for image in coco["images"]] == list(range(25))
    assert coco["info"]["fps"] == 10
    COCO(str(json_path))
    sequence = scenes.SceneSequence(3, 320, 240)
    for index in (0, 24):
        expected = sequence.frame(index)
        boxes, _ = scenes.coco_targets(coco)[index]
        np.testing.assert_allclose(boxes, expected.boxes, atol=2e-3)
        # H.264 at the default quality stays close to the rendered frame.
        assert np.abs(decoded[index].astype(int) - expected.image).mean() < 10


def test_write_clip_rejects_odd_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even frame size"):
        scenes.write_clip(tmp_path / "odd.mp4", 0, 2, 321, 240)


def test_letterboxed_size() -> None:
    assert scenes.letterboxed_size(1920, 1080) == (640, 360)
    assert scenes.letterboxed_size(1080, 1920) == (360, 640)
    assert scenes.letterboxed_size(640, 480) == (640, 480)


def test_parse_size() -> None:
    assert parse_size("1920x1080") == (1920, 1080)
    for text in ("1920", "ax1", "0x10", "1x2x3"):
        with pytest.raises(Exception, match=r"WIDTHxHEIGHT|positive"):
            parse_size(text)


def test_cli_images_and_clips(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["images", str(tmp_path / "img"), "-n", "3", "--size", "320x240", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "img").glob("*.jpg"))) == 3
    assert (tmp_path / "img" / "annotations.json").exists()
    result = runner.invoke(
        app,
        ["clips", str(tmp_path / "clips"), "--clips", "2", "--frames", "5", "--size", "160x120"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "clip_000.json",
        "clip_000.mot.txt",
        "clip_000.mp4",
        "clip_001.json",
        "clip_001.mot.txt",
        "clip_001.mp4",
    ]
    # --tracking: the pillar is in the MOT file as id 0, conf 0, in every frame.
    tracking = ["clips", str(tmp_path / "tracking"), "--frames", "4", "--size", "320x180"]
    result = runner.invoke(app, [*tracking, "--tracking"])
    assert result.exit_code == 0, result.output
    rows = [r.split(",") for r in (tmp_path / "tracking" / "clip_000.mot.txt").read_text().split()]
    assert sorted(int(r[0]) for r in rows if r[1] == "0" and float(r[6]) == 0) == [1, 2, 3, 4]
    plain = (tmp_path / "clips" / "clip_000.mot.txt").read_text().split()
    assert all(r.split(",")[1] != "0" for r in plain)
    result = runner.invoke(app, ["clips", str(tmp_path / "bad"), "--size", "161x120"])
    assert result.exit_code == 2
    assert "even frame size" in result.output
    result = runner.invoke(app, ["images", str(tmp_path / "bad"), "--size", "16x16"])
    assert result.exit_code == 2
    assert "at least 32x32" in result.output


def test_in_frame_fraction() -> None:
    square = np.array([[-5.0, 10.0], [5.0, 10.0], [5.0, 20.0], [-5.0, 20.0]])
    assert scenes.in_frame_fraction(square, 100, 100) == pytest.approx(0.5)
    assert scenes.in_frame_fraction(square + np.array([50.0, 0.0]), 100, 100) == 1.0
    assert scenes.in_frame_fraction(square - (10, 0), 100, 100) == 0.0
    corner = square - (0, 15)
    assert scenes.in_frame_fraction(corner, 100, 100) == pytest.approx(0.25)
