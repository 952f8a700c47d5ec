"""``postprocess``: YOLO head -> per-frame detections, in torch on the inputs' device.

Inputs arrive by DLPack (``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``), so on a GPU server the
head output never leaves the GPU; the whole batch goes through one NMS call and only the
final boxes, scores and class ids are handed back (by DLPack) for Triton to send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from camdet.postprocess import Detections, Thresholds, postprocess_batch
from camdet.triton_models.common import (
    error_response,
    load_config,
    output_dtype,
    parameter,
    request_parameters,
)

RAW, SIZE = "raw_detections", "original_size"
BOXES, SCORES, CLASS_IDS, LABELS, COUNT = "boxes", "scores", "class_ids", "labels", "num_detections"


def _to_torch(tensor: pb_utils.Tensor) -> torch.Tensor:
    return torch.from_dlpack(tensor.to_dlpack())


class TritonPythonModel:
    """Decode, NMS and rescale a batch of requests at once."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read defaults, labels and output dtypes from the config."""
        config = load_config(args)
        self.defaults = Thresholds(
            float(parameter(config, "confidence_threshold")),
            float(parameter(config, "iou_threshold")),
            int(parameter(config, "max_detections")),
        )
        label_file = pb_utils.get_output_config_by_name(config, CLASS_IDS)["label_filename"]
        model_dir = Path(args["model_repository"])
        self.labels = np.array(
            [line.strip().encode() for line in (model_dir / label_file).read_text().splitlines()],
            dtype=np.object_,
        )
        self.dtypes = {n: output_dtype(config, n) for n in (BOXES, SCORES, CLASS_IDS, COUNT)}
        self.torch_dtypes = {
            n: torch.from_numpy(np.zeros(0, dtype=d)).dtype for n, d in self.dtypes.items()
        }
        self.reported_device = False

    def execute(self, requests: list) -> list:
        """One response per request; bad thresholds fail only their own request."""
        responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        raws, sizes, thresholds, owners = [], [], [], []
        for i, request in enumerate(requests):
            try:
                setting = self._thresholds(request)
            except (TypeError, ValueError) as exc:
                responses[i] = error_response(f"bad request parameters: {exc}")
                continue
            raw = _to_torch(pb_utils.get_input_tensor_by_name(request, RAW))
            raws.append(raw)
            sizes.append(_to_torch(pb_utils.get_input_tensor_by_name(request, SIZE)))
            thresholds += [setting] * raw.shape[0]
            owners.append((i, raw.shape[0]))
        if raws:
            self._report_device(raws[0])
            frames = postprocess_batch(
                torch.cat(raws), torch.cat(sizes).to(raws[0].device), thresholds
            )
            start = 0
            for i, count in owners:
                responses[i] = pb_utils.InferenceResponse(
                    self._outputs(frames[start : start + count])
                )
                start += count
        return responses

    def _thresholds(self, request: pb_utils.InferenceRequest) -> Thresholds:
        params = request_parameters(request)
        return Thresholds(
            float(params.get("confidence_threshold", self.defaults.confidence)),
            float(params.get("iou_threshold", self.defaults.iou)),
            int(params.get("max_detections", self.defaults.max_detections)),
        )

    def _outputs(self, frames: list[Detections]) -> list[pb_utils.Tensor]:
        """Pad the frames of one request to a common count (one frame per request is usual)."""
        width = max(len(f.scores) for f in frames)
        device = frames[0].boxes.device
        boxes = torch.zeros((len(frames), width, 4), dtype=self.torch_dtypes[BOXES], device=device)
        scores = torch.zeros((len(frames), width), dtype=self.torch_dtypes[SCORES], device=device)
        class_ids = torch.full(
            (len(frames), width), -1, dtype=self.torch_dtypes[CLASS_IDS], device=device
        )
        labels = np.full((len(frames), width), b"", dtype=np.object_)
        for row, frame in enumerate(frames):
            n = len(frame.scores)
            boxes[row, :n] = frame.boxes
            scores[row, :n] = frame.scores
            class_ids[row, :n] = frame.class_ids.to(class_ids.dtype)
            labels[row, :n] = self.labels[frame.class_ids.cpu().numpy()]
        counts = np.array([[len(f.scores)] for f in frames], dtype=self.dtypes[COUNT])
        return [
            pb_utils.Tensor.from_dlpack(BOXES, boxes),
            pb_utils.Tensor.from_dlpack(SCORES, scores),
            pb_utils.Tensor.from_dlpack(CLASS_IDS, class_ids),
            pb_utils.Tensor(LABELS, labels),
            pb_utils.Tensor(COUNT, counts),
        ]

    def _report_device(self, tensor: torch.Tensor) -> None:
        if not self.reported_device:
            pb_utils.Logger.log_info(f"postprocess: inputs on {tensor.device}")
            self.reported_device = True
