"""``detect_video_pipeline``: ``preprocess_video``, ``detector`` and ``postprocess`` in one process.

The video counterpart of :mod:`camdet.triton_models.portable.pipeline`: on a GPU the
portable ``detect_video`` ensemble is this one model. It is ``preprocess_video`` itself
(the same per-camera decoder pool, sequence batching and request checks, built from that
model's config) whose letterboxed frames go straight to the detector and postprocess in
this process, instead of crossing to two other processes as 2.4 MB GPU tensors.
A request whose camera has no frame out yet is answered with ``frame_pts`` -1 and no
detections, as the ensemble of three answers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from camdet.serving.portable import PIPELINE_STEPS
from camdet.steps.postprocess.detections import Thresholds
from camdet.steps.video.pool import VideoRequestError
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
    instance_device,
    load_config,
    parameter,
    step_args,
)
from camdet.triton_models.portable.pipeline import (
    DetectAndAnswer,
    apply_cuda_schedule,
    gathering,
    overlapped,
    shifted,
)
from camdet.triton_models.portable.stages import Batch, Stages
from camdet.triton_models.postprocess import IMAGE, RAW, SIZE
from camdet.triton_models.preprocess_video import NO_FRAME, AccessUnit, read
from camdet.triton_models.preprocess_video import TritonPythonModel as PreprocessVideo


@dataclass
class _Units:
    """A batch's work between the stages: access units, then decoded frames."""

    units: list[AccessUnit | VideoRequestError]
    thresholds: dict[int, Thresholds]
    owners: list[tuple[int, int]] = field(default_factory=list)
    frame_pts: dict[int, int] = field(default_factory=dict)
    images: Any = None
    sizes: Any = None

    @property
    def count(self) -> int:
        """The batch's access units (each gives at most one frame)."""
        return len(self.units)

    @staticmethod
    def join(works: list[_Units], offsets: list[int]) -> _Units:
        """Several batches' reads as one; ``offsets``: each one's first request index.

        A camera's units stay in the order Triton handed them over.
        """
        return _Units(
            [unit for work in works for unit in work.units],
            shifted([work.thresholds for work in works], offsets),
        )


class TritonPythonModel(PreprocessVideo):
    """Decode each camera's access unit, detect on the batch's frames, one response each.

    As :mod:`~camdet.triton_models.portable.pipeline`: ``execute`` reads the access units
    and returns; a decode stage (the cameras' decoders, in parallel, each in order) and a
    detect-and-answer stage overlap consecutive batches. A camera's units are decoded in
    the order Triton's sequence batcher handed them over, since one stage thread takes
    the batches one after another.
    """

    def initialize(self, args: dict[str, str]) -> None:
        """Open ``preprocess_video`` with its own config; the detector and postprocess too."""
        config = load_config(args)
        pre, det, post = (step_args(args, parameter(config, key)) for key in PIPELINE_STEPS)
        apply_cuda_schedule(args["model_name"], config, instance_device(args))
        super().initialize(pre)
        self.device = torch.device("cpu" if self.device_id is None else f"cuda:{self.device_id}")
        self.stats = DeviceStats(args["model_name"])
        self.answering = DetectAndAnswer(det, post, self.device, self.stats)
        self.post = self.answering.post
        device = self.device if self.device_id is not None else None
        gather = gathering(config, _Units.join, self.max_batch)
        self.stages = Stages(
            args["model_name"], [self._decode, self._detect], device, overlapped(config), gather
        )

    def execute(self, requests: list) -> None:
        """Read each request's access unit and hand the batch on; each is answered by its sender."""
        batch = Batch([r.get_response_sender() for r in requests])
        with self.stages.reading(batch), self.stats.phase("inputs"):
            units = [read(request) for request in requests]
            thresholds = {  # read() checked the parameters: these cannot fail
                i: self.post.thresholds_of(unit.parameters)
                for i, unit in enumerate(units)
                if not isinstance(unit, VideoRequestError)
            }
            batch.work = _Units(units, thresholds)
        if batch.work is not None:
            self.stages.submit(batch)

    def finalize(self) -> None:
        """Answer the batches in flight, then close the decoders."""
        self.stages.close()
        self.answering.close()
        super().finalize()

    def _decode(self, batch: Batch) -> None:
        """Stage 1: decode and letterbox; a refused unit or a frame not out yet is answered."""
        work: _Units = batch.work
        with self.stats.phase("preprocess"):
            answers, work.images, work.sizes = self.decode(work.units)
        for i, answer in enumerate(answers):
            if isinstance(answer, VideoRequestError):
                batch.answer(i, error_response(str(answer)))
            elif answer is None:
                batch.answer(i, self._answer(self.post.no_detections(), NO_FRAME))
            else:
                work.owners.append((i, 1))
                work.frame_pts[i] = answer.pts

    def _detect(self, batch: Batch) -> None:
        """Stage 2: detector, postprocess, and each request's response."""
        work: _Units = batch.work
        images, sizes = (torch.as_tensor(x).to(self.device) for x in (work.images, work.sizes))
        raw, host = self.answering(
            batch,
            images,
            sizes,
            [work.thresholds[i] for i, _ in work.owners],
            work.owners,
            lambda i, tensors: self._answer(tensors, work.frame_pts[i]),
        )
        self.stats.record(
            {SIZE: [sizes], IMAGE: [images], RAW: [raw]}, {k: [v] for k, v in host.items()}
        )

    def _answer(self, tensors: list[pb_utils.Tensor], pts: int) -> pb_utils.InferenceResponse:
        """A response of the detections ``tensors`` of the frame ``pts`` (-1: none)."""
        return pb_utils.InferenceResponse([*tensors, *self.frame_tensors(pts)])
