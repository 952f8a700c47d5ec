"""Where GPU results differ from CPU results, step by step, and what it does to mAP.

    python -m camdet.perf.gpu_parity --frames 500 --out parity.json      # on a GPU machine

The GPU ensemble decodes with nvJPEG (DALI ``mixed``, hardware decoder where the GPU has
one), letterboxes with DALI's GPU resize and runs the detector in FP16; the CPU reference
decodes with libjpeg-turbo (OpenCV), letterboxes with OpenCV and runs the ONNX in FP32
(ONNX Runtime). Each difference is measured alone, on the same held-out 1080p JPEG frames:

1. ``decode``: RGB pixels of each JPEG decoder against OpenCV's.
2. ``letterbox``: the production ``dali.py`` on the GPU fed a lossless PNG of OpenCV's
   decoded pixels (same pixels in, so only resize and padding differ) against
   :func:`camdet.geometry.letterbox_image`.
3. ``detector``: FP16 and FP32 torch on the GPU against ONNX Runtime FP32, same input.
4. ``pipelines``: COCO mAP (pycocotools) and detection errors of every combination of
   decode path and detector precision, so a change of mAP is attributed to its cause.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import typer

from camdet.detector.data import EVAL_STREAM, frame_rng
from camdet.detector.evaluate import (
    MAP_CONFIDENCE,
    MAP_IOU,
    MAP_MAX_DETECTIONS,
    coco_detections,
    score_coco,
)
from camdet.geometry import PIXEL_SCALE, letterbox_image, to_model_input
from camdet.runtime.runners import DetectorRunner, OnnxRuntimeRunner, TorchRunner, run_detector
from camdet.scenes import Frame, encode_jpeg, render_frame, to_coco
from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.steps.postprocess.detections import Detections, postprocess
from camdet.steps.preprocess.pipeline import load_pipeline_module

Images = np.ndarray
"""``[B, 3, 640, 640]`` float32 letterboxed model input in [0, 1]."""


@dataclass(frozen=True)
class HeldOut:
    """Held-out frames as a camera sends them.

    Attributes:
        jpegs: JPEG bytes (quality 90) of each frame.
        frames: Ground truth of each frame (pixels before JPEG).
    """

    jpegs: list[bytes]
    frames: list[Frame]


def held_out(count: int, width: int, height: int, seed: int = 0) -> HeldOut:
    """The evaluation seed stream's frames (never trained on), JPEG-encoded once."""
    frames = [render_frame(frame_rng(EVAL_STREAM, seed, i), width, height) for i in range(count)]
    return HeldOut([encode_jpeg(f.image, 90) for f in frames], frames)


def decode_opencv(jpeg: bytes) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB by OpenCV (libjpeg-turbo, fancy chroma upsampling)."""
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()


def decode_dali(
    jpegs: Sequence[bytes], device: str, hw_load: float, fancy: bool = False
) -> list[np.ndarray]:
    """RGB pixels by DALI's image decoder (``cpu`` or ``mixed``, hardware share, chroma)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(batch_size=len(jpegs), num_threads=4, device_id=0, prefetch_queue_depth=1)
    def decode():
        encoded = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
        args = (
            {"hw_decoder_load": hw_load, "jpeg_fancy_upsampling": fancy}
            if device == "mixed"
            else {}
        )
        return fn.decoders.image(encoded, device=device, output_type=types.RGB, **args)

    pipe = decode()
    pipe.build()
    pipe.feed_input("jpeg", [np.frombuffer(j, np.uint8) for j in jpegs])
    (out,) = pipe.run()
    out = out.as_cpu() if hasattr(out, "as_cpu") else out
    return [np.array(out[i]) for i in range(len(jpegs))]


def letterbox_dali(encoded: Sequence[bytes], hw_load: float, fancy: bool = False) -> Images:
    """The production ``preprocess/1/dali.py`` on GPU 0: ``[B, 3, 640, 640]`` float32."""
    module = load_pipeline_module(PRODUCTION_REPOSITORY / "preprocess" / "1" / "dali.py")
    pipe = module.preprocess(
        batch_size=len(encoded),
        num_threads=4,
        device_id=0,
        decode_device="mixed",
        hw_decoder_load=hw_load,
        fancy_upsampling=fancy,
        prefetch_queue_depth=1,
    )
    pipe.build()
    pipe.feed_input("encoded_image", [np.frombuffer(e, np.uint8) for e in encoded])
    images, _ = pipe.run()
    return np.array(images.as_cpu().as_tensor()).astype(np.float32)


def letterbox_opencv(rgbs: Sequence[np.ndarray]) -> Images:
    """:func:`camdet.geometry.letterbox_image` of each frame, ``[B, 3, 640, 640]`` float32."""
    return np.stack([to_model_input(letterbox_image(rgb), np.float32) for rgb in rgbs])


def png(rgb: np.ndarray) -> bytes:
    """Lossless PNG of RGB pixels (so DALI decodes exactly these pixels)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    assert ok
    return data.tobytes()


def pixel_stats(a: np.ndarray, b: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """Mean, p99 and max absolute difference of two arrays, in units of ``1 / scale``."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64)) * scale
    return {
        "mean": float(diff.mean()),
        "p99": float(np.percentile(diff, 99)),
        "max": float(diff.max()),
    }


def onnx_cpu_detector(onnx: Path) -> DetectorRunner:
    """ONNX Runtime FP32 on the CPU: the portable CPU server's detector."""
    return OnnxRuntimeRunner(onnx)


def torch_gpu_detector(onnx: Path, half: bool) -> DetectorRunner:
    """The portable GPU server's detector (``camdet.runtime.torch_graphs``) in FP16 or FP32.

    Eager on GPU 0, without CUDA graphs: a batch runs at its own size, not padded.
    """
    return TorchRunner(onnx, device="cuda:0", half=half, batch_sizes=())


def detect(raw: torch.Tensor, sizes: torch.Tensor, confidence: float) -> list[Detections]:
    """Per-frame detections with the serving postprocess."""
    return postprocess(raw, sizes, confidence, MAP_IOU, MAP_MAX_DETECTIONS)


def detection_errors(
    reference: list[Detections], other: list[Detections], strong: float = 0.35
) -> dict[str, float]:
    """How far ``other``'s detections are from each strong reference detection.

    For every reference detection scoring above ``strong`` (away from the threshold, so
    both sides must have it), the same-class detection of ``other`` with the nearest box.

    Returns:
        ``compared``, ``missing`` (no same-class detection), box error max/p99 (pixels of
        the original frame, largest coordinate difference) and score error max/p99.
    """
    box_err, score_err, missing = [], [], 0
    for ref, got in zip(reference, other, strict=True):
        for box, score, cls in zip(ref.boxes, ref.scores, ref.class_ids, strict=True):
            if score <= strong:
                continue
            same = got.class_ids == cls
            if not same.any():
                missing += 1
                continue
            errors = (got.boxes[same] - box).abs().amax(dim=1)
            best = int(errors.argmin())
            box_err.append(float(errors[best]))
            score_err.append(abs(float(got.scores[same][best]) - float(score)))
    return {
        "compared": len(box_err),
        "missing": missing,
        "box_error_max_px": max(box_err, default=0.0),
        "box_error_p99_px": float(np.percentile(box_err, 99)) if box_err else 0.0,
        "score_error_max": max(score_err, default=0.0),
        "score_error_p99": float(np.percentile(score_err, 99)) if score_err else 0.0,
    }


def coco_map(frames: list[Frame], detections: list[Detections]) -> dict[str, float]:
    """COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools) of per-frame detections."""
    truth = to_coco(frames, [f"eval_{i:06d}" for i in range(len(frames))])
    image_ids = [image["id"] for image in truth["images"]]
    category_ids = [category["id"] for category in truth["categories"]]
    scores = score_coco(truth, coco_detections(detections, image_ids, category_ids))
    return {"map50": scores.map50, "map50_95": scores.map50_95}


def measure(count: int, width: int, height: int, hw_load: float) -> dict[str, object]:
    """Run every comparison on ``count`` held-out frames; the report as a dict."""
    data = held_out(count, width, height)
    onnx = PRODUCTION_REPOSITORY / "detector" / "1" / "model.onnx"
    reference_rgb = [decode_opencv(j) for j in data.jpegs]
    report: dict[str, object] = {"frames": count, "size": [width, height], "hw_load": hw_load}

    sample = data.jpegs[:32]
    report["decode_vs_opencv"] = {
        f"dali_{name}": pixel_stats(
            np.stack(decode_dali(sample, device, load, fancy)), np.stack(reference_rgb[:32])
        )
        for name, device, load, fancy in (
            ("cpu", "cpu", 0.0, False),
            ("mixed_cuda", "mixed", 0.0, False),
            (f"mixed_hw{hw_load}", "mixed", hw_load, False),
            ("mixed_cuda_fancy", "mixed", 0.0, True),
            (f"mixed_hw{hw_load}_fancy", "mixed", hw_load, True),
        )
    }
    report["letterbox_vs_opencv_same_pixels"] = pixel_stats(
        letterbox_dali([png(rgb) for rgb in reference_rgb[:32]], hw_load),
        letterbox_opencv(reference_rgb[:32]),
        scale=1 / PIXEL_SCALE,
    )

    inputs = {"opencv": letterbox_opencv(reference_rgb)}
    for fancy in (False, True):
        inputs[f"dali_gpu_hw{hw_load}{'_fancy' if fancy else ''}"] = np.concatenate(
            [letterbox_dali(data.jpegs[i : i + 64], hw_load, fancy) for i in range(0, count, 64)]
        )
    report["letterbox_vs_opencv_end_to_end"] = {
        name: pixel_stats(images, inputs["opencv"], scale=1 / PIXEL_SCALE)
        for name, images in inputs.items()
        if name != "opencv"
    }
    detectors = {
        "onnx_fp32_cpu": onnx_cpu_detector(onnx),
        "torch_fp32_gpu": torch_gpu_detector(onnx, half=False),
        "torch_fp16_gpu": torch_gpu_detector(onnx, half=True),
    }
    sizes = torch.tensor([f.image.shape[:2] for f in data.frames])
    reference_raw = run_detector(detectors["onnx_fp32_cpu"], inputs["opencv"])
    reference_map = detect(reference_raw, sizes, MAP_CONFIDENCE)
    reference_det = detect(reference_raw, sizes, 0.25)
    pipelines = {}
    for input_name, images in inputs.items():
        for detector_name, detector in detectors.items():
            key = f"{input_name}+{detector_name}"
            raw = reference_raw if key == "opencv+onnx_fp32_cpu" else run_detector(detector, images)
            pipelines[key] = {
                **coco_map(data.frames, detect(raw, sizes, MAP_CONFIDENCE)),
                **detection_errors(reference_det, detect(raw, sizes, 0.25)),
                "head_vs_reference": {
                    "boxes_px": pixel_stats(raw[:, :4].numpy(), reference_raw[:, :4].numpy()),
                    "scores": pixel_stats(raw[:, 4:].numpy(), reference_raw[:, 4:].numpy()),
                },
            }
    report["pipelines"] = pipelines
    report["reference_map"] = coco_map(data.frames, reference_map)
    return report


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf gpu-parity`` alone, for ``python -m camdet.perf.gpu_parity``."""


@app.command()
def gpu_parity(
    frames: Annotated[int, typer.Option(help="Held-out frames.")] = 500,
    width: Annotated[int, typer.Option(help="Frame width, pixels.")] = 1920,
    height: Annotated[int, typer.Option(help="Frame height, pixels.")] = 1080,
    hw_load: Annotated[float, typer.Option(help="Hardware JPEG decoder share.")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
) -> None:
    """Where GPU results differ from CPU results, step by step, and what it does to mAP.

    Needs a CUDA GPU (exit 2 without one). Prints the report as JSON.
    """
    if not torch.cuda.is_available():
        print("gpu_parity needs a CUDA GPU", file=sys.stderr)
        raise typer.Exit(2)
    report = measure(frames, width, height, hw_load)
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.gpu_parity")
