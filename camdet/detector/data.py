"""Synthetic training and evaluation frames, letterboxed exactly as production does.

Frames come from :func:`camdet.scenes.render_frame`, go through the project's own
:func:`camdet.geometry.letterbox_image`, and their boxes through
:func:`camdet.geometry.boxes_to_input`, so the network never sees a transform the serving
path does not apply.

Seeds. Every frame has its own generator, ``numpy.random.default_rng([stream, seed, ...])``:

* training: ``[TRAIN_STREAM=0, run_seed, worker_id, frame_index]``;
* validation during training: ``[VAL_STREAM=1, run_seed, frame_index]``;
* held-out evaluation: ``[EVAL_STREAM=2, eval_seed, frame_index]``.

The leading stream word differs, so no evaluation frame is ever a training frame whatever
the seeds (``SeedSequence`` hashes the whole entropy list).

Render size. Training renders each frame at a reduced native size with the same aspect
ratio (at most :data:`TRAIN_RENDER_OVERSAMPLE` times the letterboxed size) instead of the
full 1080p: the scene generator sizes objects relative to the frame, so the letterboxed
content matches, while the loader runs several times faster. The JPEG step then acts at a
coarser scale than on a real 1080p frame, i.e. training sees slightly stronger artifacts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from camdet import scenes
from camdet.geometry import INPUT_SIZE, boxes_to_input, letterbox_image

TRAIN_STREAM, VAL_STREAM, EVAL_STREAM = 0, 1, 2
"""Leading seed words that keep training, validation and evaluation frames apart."""

FRAME_SIZES: tuple[tuple[int, int, float], ...] = (
    (1280, 720, 0.35),
    (1920, 1080, 0.35),
    (640, 360, 0.05),
    (640, 480, 0.05),
    (1024, 768, 0.04),
    (1440, 1080, 0.04),
    (720, 1280, 0.04),
    (1080, 1920, 0.03),
    (720, 720, 0.03),
    (1080, 1080, 0.02),
)
"""Native camera frame sizes ``(width, height, probability)``: mostly 16:9, some 4:3,
portrait and square."""

JPEG_QUALITY_RANGE: tuple[int, int] = (35, 95)
"""Inclusive range of the random JPEG quality of a compressed training frame."""

UNCOMPRESSED_PROBABILITY: float = 0.1
"""Share of training frames left without JPEG artifacts."""

TRAIN_RENDER_OVERSAMPLE: float = 1.5
"""Largest ratio of the training render size to the letterboxed size of the frame."""


@dataclass(frozen=True)
class Sample:
    """One letterboxed frame with its ground truth.

    Attributes:
        image: ``[3, S, S]`` uint8 RGB letterboxed input (S = 640).
        labels: ``[N]`` int64 class ids.
        boxes: ``[N, 4]`` float32 xyxy boxes in letterboxed input pixels.
    """

    image: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


@dataclass(frozen=True)
class Batch:
    """A padded batch; pin and move it with :meth:`to`.

    Attributes:
        images: ``[B, 3, S, S]`` uint8 RGB letterboxed inputs.
        labels: ``[B, M]`` int64 class ids, -1 on padding.
        boxes: ``[B, M, 4]`` float32 xyxy in input pixels, zeros on padding.
        mask: ``[B, M]`` bool, True on real boxes.
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    mask: torch.Tensor

    def pin_memory(self) -> Batch:
        """Page-locked copy, so the host-to-device copy can overlap compute."""
        return Batch(*(t.pin_memory() for t in self._tensors()))

    def to(self, device: torch.device | str) -> Batch:
        """Copy to ``device`` (asynchronously when pinned)."""
        return Batch(*(t.to(device, non_blocking=True) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.images, self.labels, self.boxes, self.mask


def frame_rng(stream: int, seed: int, *index: int) -> np.random.Generator:
    """Generator of one frame (see the module docstring for the streams)."""
    return np.random.default_rng([stream, seed, *index])


def letterbox_sample(frame: scenes.Frame) -> Sample:
    """Letterbox a rendered frame and map its boxes into input pixels.

    Args:
        frame: Rendered frame (``image [H, W, 3]`` uint8 RGB, boxes in its pixels).

    Returns:
        The network input and ground truth in input pixels.
    """
    height, width = frame.image.shape[:2]
    image = letterbox_image(frame.image)
    boxes = boxes_to_input(frame.boxes, height, width)
    return Sample(
        image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        labels=torch.as_tensor(frame.class_ids, dtype=torch.int64),
        boxes=torch.from_numpy(boxes),
    )


def training_render_size(width: int, height: int, oversample: float) -> tuple[int, int]:
    """Reduced render size of a ``width`` x ``height`` camera frame, same aspect ratio.

    Args:
        width: Native frame width in pixels.
        height: Native frame height in pixels.
        oversample: Render size over letterboxed size (>= 1); never above native.

    Returns:
        ``(width, height)`` to render at, in pixels.
    """
    gain = INPUT_SIZE / max(width, height)
    scale = min(1.0, gain * oversample)
    return max(round(width * scale), 1), max(round(height * scale), 1)


def render_training_sample(rng: np.random.Generator) -> Sample:
    """Draw a camera size and JPEG quality, render at reduced size and letterbox.

    Args:
        rng: The frame's generator (its draws decide everything about the frame).

    Returns:
        One training sample.
    """
    probabilities = np.array([p for _, _, p in FRAME_SIZES])
    width, height, _ = FRAME_SIZES[
        rng.choice(len(FRAME_SIZES), p=probabilities / probabilities.sum())
    ]
    oversample = rng.uniform(1.0, TRAIN_RENDER_OVERSAMPLE)
    render_width, render_height = training_render_size(width, height, oversample)
    quality = None
    if rng.random() >= UNCOMPRESSED_PROBABILITY:
        quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    frame = scenes.render_frame(rng, width=render_width, height=render_height, jpeg_quality=quality)
    return letterbox_sample(frame)


def collate(samples: list[Sample]) -> Batch:
    """Stack samples and pad their boxes to the largest count of the batch.

    Args:
        samples: Samples with equal image shapes.

    Returns:
        The padded batch (``M`` = largest box count, at least 1).
    """
    most = max(1, max(len(s.labels) for s in samples))
    labels = torch.full((len(samples), most), -1, dtype=torch.int64)
    boxes = torch.zeros(len(samples), most, 4, dtype=torch.float32)
    for row, sample in enumerate(samples):
        labels[row, : len(sample.labels)] = sample.labels
        boxes[row, : len(sample.labels)] = sample.boxes
    images = torch.stack([s.image for s in samples])
    return Batch(images=images, labels=labels, boxes=boxes, mask=labels >= 0)


class TrainingFrames(IterableDataset):
    """Endless stream of padded training batches, each worker on its own seeds.

    Use with ``DataLoader(dataset, batch_size=None, num_workers=...)``: batching happens
    inside the workers, so only finished uint8 batches cross process boundaries.
    """

    def __init__(self, seed: int, batch_size: int) -> None:
        super().__init__()
        self.seed, self.batch_size = seed, batch_size

    def __iter__(self) -> Iterator[Batch]:
        """Yield batches forever; frame ``i`` of worker ``w`` uses ``[0, seed, w, i]``."""
        info = get_worker_info()
        worker = 0 if info is None else info.id
        index = 0
        while True:
            samples = []
            for _ in range(self.batch_size):
                samples.append(
                    render_training_sample(frame_rng(TRAIN_STREAM, self.seed, worker, index))
                )
                index += 1
            yield collate(samples)


class ValidationFrames(Dataset):
    """Fixed validation frames drawn like training frames, from :data:`VAL_STREAM`."""

    def __init__(self, seed: int, count: int) -> None:
        self.seed, self.count = seed, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Sample:
        """Render validation frame ``index`` (``[1, seed, index]``)."""
        return render_training_sample(frame_rng(VAL_STREAM, self.seed, index))


@dataclass(frozen=True)
class EvalSample:
    """A held-out frame: network input, original size and ground truth in original pixels.

    Attributes:
        image: ``[3, S, S]`` uint8 RGB letterboxed input.
        size: ``(height, width)`` of the original frame in pixels.
        labels: ``[N]`` int64 class ids.
        boxes: ``[N, 4]`` float32 xyxy boxes in original frame pixels.
    """

    image: torch.Tensor
    size: tuple[int, int]
    labels: np.ndarray
    boxes: np.ndarray


class EvalFrames(Dataset):
    """Held-out frames at full native size, from :data:`EVAL_STREAM` (never trained on)."""

    def __init__(
        self, seed: int, count: int, width: int, height: int, jpeg_quality: int | None
    ) -> None:
        self.seed, self.count = seed, count
        self.width, self.height, self.jpeg_quality = width, height, jpeg_quality

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> EvalSample:
        """Render held-out frame ``index`` (``[2, seed, index]``) at the native size."""
        rng = frame_rng(EVAL_STREAM, self.seed, index)
        frame = scenes.render_frame(
            rng, width=self.width, height=self.height, jpeg_quality=self.jpeg_quality
        )
        return EvalSample(
            image=letterbox_sample(frame).image,
            size=(self.height, self.width),
            labels=np.asarray(frame.class_ids, dtype=np.int64),
            boxes=np.asarray(frame.boxes, dtype=np.float32),
        )


def worker_init(_: int) -> None:
    """Keep OpenCV single-threaded inside loader workers (one worker per core)."""
    cv2.setNumThreads(1)


def recommended_workers(cpu_count: int | None) -> int:
    """Loader workers for this machine: all cores but one for the training process."""
    return max(1, (cpu_count or 2) - 1)
