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

from camdet.postprocess import BatchDetections, Thresholds, postprocess_flat
from camdet.triton_models.common import (
    error_response,
    instance_device,
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
        if instance_device(args) is None:
            # Small per-batch tensor ops: torch's thread pool costs more than it saves and
            # competes with the detector for the cores (perf/RESULTS.md: 20-50 ms -> ~4 ms).
            torch.set_num_threads(1)
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
            self.input_device = raw.device
            raws.append(raw)
            sizes.append(_to_torch(pb_utils.get_input_tensor_by_name(request, SIZE)))
            thresholds += [setting] * raw.shape[0]
            owners.append((i, raw.shape[0]))
        if raws:
            batch = postprocess_flat(
                torch.cat(raws), torch.cat(sizes).to(raws[0].device), thresholds
            )
            self._respond(batch, owners, responses)
        return responses

    def _respond(
        self,
        batch: BatchDetections,
        owners: list[tuple[int, int]],
        responses: list[pb_utils.InferenceResponse | None],
    ) -> None:
        """Fill each owner request's response with its frames' detections."""
        boxes = batch.boxes.to(self.torch_dtypes[BOXES])
        scores = batch.scores.to(self.torch_dtypes[SCORES])
        class_ids = batch.class_ids.to(self.torch_dtypes[CLASS_IDS])
        # One device-to-host copy for the whole batch: the labels are host strings.
        labels = self.labels[batch.class_ids.cpu().numpy()]
        starts = np.cumsum([0, *batch.counts])
        frame = 0
        for i, frames in owners:
            first, last = starts[frame], starts[frame + frames]
            counts = batch.counts[frame : frame + frames]
            tensors = (boxes[first:last], scores[first:last], class_ids[first:last])
            responses[i] = pb_utils.InferenceResponse(
                self._outputs(*tensors, labels[first:last], counts)
            )
            frame += frames
        self._report_devices(batch.boxes)

    def _thresholds(self, request: pb_utils.InferenceRequest) -> Thresholds:
        params = request_parameters(request)
        return Thresholds(
            float(params.get("confidence_threshold", self.defaults.confidence)),
            float(params.get("iou_threshold", self.defaults.iou)),
            int(params.get("max_detections", self.defaults.max_detections)),
        )

    def _outputs(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        class_ids: torch.Tensor,
        labels: np.ndarray,
        counts: list[int],
    ) -> list[pb_utils.Tensor]:
        """One request's output tensors; several frames are padded to a common count."""
        if len(counts) == 1:  # one frame per request: views of the batch, no copy
            padded = (boxes[None], scores[None], class_ids[None], labels[None])
        else:
            padded = _pad(boxes, scores, class_ids, labels, counts)
        return [
            pb_utils.Tensor.from_dlpack(BOXES, padded[0]),
            pb_utils.Tensor.from_dlpack(SCORES, padded[1]),
            pb_utils.Tensor.from_dlpack(CLASS_IDS, padded[2]),
            pb_utils.Tensor(LABELS, padded[3]),
            pb_utils.Tensor(COUNT, np.array([[c] for c in counts], dtype=self.dtypes[COUNT])),
        ]

    def _report_devices(self, output: torch.Tensor) -> None:
        if not self.reported_device:
            pb_utils.Logger.log_info(
                f"postprocess: inputs on {self.input_device}, outputs on {output.device}"
            )
            self.reported_device = True


def _pad(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    labels: np.ndarray,
    counts: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Stack several frames' detections, padded to the largest count (class id -1)."""
    rows, width = len(counts), max(counts)
    out_boxes = boxes.new_zeros((rows, width, 4))
    out_scores = scores.new_zeros((rows, width))
    out_ids = class_ids.new_full((rows, width), -1)
    out_labels = np.full((rows, width), b"", dtype=np.object_)
    start = 0
    for row, n in enumerate(counts):
        out_boxes[row, :n] = boxes[start : start + n]
        out_scores[row, :n] = scores[start : start + n]
        out_ids[row, :n] = class_ids[start : start + n]
        out_labels[row, :n] = labels[start : start + n]
        start += n
    return out_boxes, out_scores, out_ids, out_labels
