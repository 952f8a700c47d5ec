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

from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from camdet.serving.portable import PIPELINE_STEPS
from camdet.steps.video.pool import VideoRequestError
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
    guarded_execute,
    load_config,
    parameter,
    step_args,
)
from camdet.triton_models.portable.pipeline import Detector
from camdet.triton_models.postprocess import IMAGE, RAW, SIZE, Postprocessor
from camdet.triton_models.preprocess_video import NO_FRAME
from camdet.triton_models.preprocess_video import TritonPythonModel as PreprocessVideo


class TritonPythonModel(PreprocessVideo):
    """Decode each camera's access unit, detect on the batch's frames, one response each."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open ``preprocess_video`` with its own config; the detector and postprocess too."""
        config = load_config(args)
        pre, det, post = (step_args(args, parameter(config, key)) for key in PIPELINE_STEPS)
        super().initialize(pre)
        self.device = torch.device("cpu" if self.device_id is None else f"cuda:{self.device_id}")
        self.detector = Detector(det, self.device)
        self.post = Postprocessor(load_config(post), Path(post["model_repository"]), self.device)
        self.post.warm_up()
        self.stats = DeviceStats(args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Feed each request's access unit to its camera; one response per request."""
        with self.stats.phase("preprocess"):
            answers, images, sizes = self.frames(requests)
        responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        owners, thresholds, frame_pts = [], [], {}
        for i, (request, answer) in enumerate(zip(requests, answers, strict=True)):
            if isinstance(answer, VideoRequestError):
                responses[i] = error_response(str(answer))
            elif answer is None:
                responses[i] = self._answer(self.post.no_detections(), NO_FRAME)
            else:  # its parameters were checked when its access unit was read
                owners.append((i, 1))
                thresholds.append(self.post.thresholds(request))
                frame_pts[i] = answer.pts
        if owners:
            images, sizes = (torch.as_tensor(x).to(self.device) for x in (images, sizes))
            with self.stats.phase("detector"):
                raw = self.detector(images)
            with self.stats.phase("postprocess"):
                host, counts = self.post.detect(raw, sizes, images, thresholds)
            with self.stats.phase("outputs"):
                for i, tensors in self.post.outputs(host, counts, owners).items():
                    responses[i] = self._answer(tensors, frame_pts[i])
            self.stats.record(
                {SIZE: [sizes], IMAGE: [images], RAW: [raw]}, {k: [v] for k, v in host.items()}
            )
        return responses

    def _answer(self, tensors: list[pb_utils.Tensor], pts: int) -> pb_utils.InferenceResponse:
        """A response of the detections ``tensors`` of the frame ``pts`` (-1: none)."""
        return pb_utils.InferenceResponse([*tensors, *self.frame_tensors(pts)])
