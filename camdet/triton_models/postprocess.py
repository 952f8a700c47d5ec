"""``postprocess``: YOLO head -> per-frame detections, in torch on the inputs' device.

Inputs arrive by DLPack (``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``), so on a GPU server the
head output and the letterboxed images never leave the GPU; the whole batch goes through
one NMS call, each box's mean colour is read from its image (the tracker's appearance cue,
:func:`camdet.steps.postprocess.detections.box_colors`), and only the final boxes,
scores, class ids and colours are copied to the host, once per batch, for Triton to send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from camdet.constants import INPUT_SHAPE
from camdet.engine.contract import expected_anchors
from camdet.steps.postprocess.detections import BatchDetections, Thresholds, postprocess_flat
from camdet.triton_models.common import (
    DeviceStats,
    checked_parameters,
    error_response,
    guarded_execute,
    instance_device,
    join_on,
    load_config,
    output_dtype,
    parameter,
)

RAW, SIZE, IMAGE = "raw_detections", "original_size", "preprocessed_image"
BOXES, SCORES, CLASS_IDS, LABELS, COUNT = "boxes", "scores", "class_ids", "labels", "num_detections"
COLORS = "colors"


def _to_torch(tensor: pb_utils.Tensor) -> torch.Tensor:
    return torch.from_dlpack(tensor.to_dlpack())


class TritonPythonModel:
    """Decode, NMS and rescale a batch of requests at once."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read defaults, labels and output dtypes from the config; warm up on the device."""
        device_id = instance_device(args)
        self.device = torch.device("cpu" if device_id is None else f"cuda:{device_id}")
        if device_id is None:
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
        self.dtypes = {
            n: output_dtype(config, n) for n in (BOXES, SCORES, CLASS_IDS, COUNT, COLORS)
        }
        raw = pb_utils.get_input_config_by_name(config, RAW)
        self.raw_dtype = torch.from_numpy(
            np.zeros(0, pb_utils.triton_string_to_numpy(raw["data_type"]))
        ).dtype
        self.stats = DeviceStats(args["model_name"])
        self._warm_up()

    def _warm_up(self) -> None:
        """Run the whole postprocess once on this instance's device, as the detector feeds it.

        The first CUDA call of each kernel (and torchvision's NMS library load) costs far
        more than a batch; pay it here, not on the first camera's first frame: a head of
        the served input size, in the config's dtype (CUDA loads kernels per dtype).
        """
        generator = torch.Generator().manual_seed(0)
        anchors = expected_anchors(INPUT_SHAPE)
        head = torch.rand((1, 4 + len(self.labels), anchors), generator=generator) * 320
        head[:, 4:] /= 320
        sizes = torch.tensor([[720, 1280]], dtype=torch.int32)
        head = head.to(self.device, self.raw_dtype)
        images = torch.rand((1, 3, *INPUT_SHAPE), generator=generator).to(self.device)
        postprocess_flat(head, sizes.to(self.device), [self.defaults], images=images.half())

    @guarded_execute
    def execute(self, requests: list) -> list:
        """One response per request; bad thresholds fail only their own request."""
        responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        with self.stats.phase("inputs"):
            raws, sizes, images, thresholds, owners = self._collect(requests, responses)
        if raws:
            with self.stats.phase("compute"):
                batch = postprocess_flat(
                    join_on(raws, self.device),
                    join_on(sizes, self.device),
                    thresholds,
                    images=join_on(images, self.device),
                )
                host = self._to_host(batch)
            with self.stats.phase("outputs"):
                self._respond(host, batch.counts, owners, responses)
            self.stats.record(
                {RAW: raws, SIZE: sizes, IMAGE: images}, {k: [v] for k, v in host.items()}
            )
        return responses

    def _collect(
        self, requests: list, responses: list[pb_utils.InferenceResponse | None]
    ) -> tuple[list, list, list, list[Thresholds], list[tuple[int, int]]]:
        """Each valid request's tensors and thresholds; bad ones get their error response."""
        raws, sizes, images, thresholds, owners = [], [], [], [], []
        for i, request in enumerate(requests):
            try:
                setting = self._thresholds(request)
            except ValueError as exc:  # RequestParameterError, before the batch is joined
                responses[i] = error_response(f"bad request parameters: {exc}")
                continue
            raws.append(_to_torch(pb_utils.get_input_tensor_by_name(request, RAW)))
            sizes.append(_to_torch(pb_utils.get_input_tensor_by_name(request, SIZE)))
            images.append(_to_torch(pb_utils.get_input_tensor_by_name(request, IMAGE)))
            thresholds += [setting] * raws[-1].shape[0]
            owners.append((i, raws[-1].shape[0]))
        return raws, sizes, images, thresholds, owners

    def _to_host(self, batch: BatchDetections) -> dict[str, np.ndarray]:
        """The batch's final detections on the host, in one device-to-host copy.

        Only these few bytes per frame leave the GPU; Triton sends them from host memory
        anyway, so returning host arrays saves one small GPU buffer per output and request.
        """
        flat = torch.cat(
            (
                batch.boxes,
                batch.scores[:, None],
                batch.class_ids[:, None].to(batch.boxes.dtype),
                batch.colors.to(batch.boxes.dtype),
            ),
            dim=1,
        )
        flat = flat.cpu().numpy()
        class_ids = flat[:, 5].astype(np.int64)
        return {
            BOXES: flat[:, :4].astype(self.dtypes[BOXES]),
            SCORES: flat[:, 4].astype(self.dtypes[SCORES]),
            CLASS_IDS: class_ids.astype(self.dtypes[CLASS_IDS]),
            LABELS: self.labels[class_ids],
            COLORS: flat[:, 6:9].astype(self.dtypes[COLORS]),
        }

    def _respond(
        self,
        host: dict[str, np.ndarray],
        counts: list[int],
        owners: list[tuple[int, int]],
        responses: list[pb_utils.InferenceResponse | None],
    ) -> None:
        """Fill each owner request's response with its frames' detections."""
        starts = np.cumsum([0, *counts])
        frame = 0
        for i, frames in owners:
            first, last = starts[frame], starts[frame + frames]
            part = {name: array[first:last] for name, array in host.items()}
            responses[i] = pb_utils.InferenceResponse(
                self._outputs(part, counts[frame : frame + frames])
            )
            frame += frames

    def _thresholds(self, request: pb_utils.InferenceRequest) -> Thresholds:
        params = checked_parameters(request)
        return Thresholds(
            params.get("confidence_threshold", self.defaults.confidence),
            params.get("iou_threshold", self.defaults.iou),
            params.get("max_detections", self.defaults.max_detections),
        )

    def _outputs(self, part: dict[str, np.ndarray], counts: list[int]) -> list[pb_utils.Tensor]:
        """One request's output tensors; several frames are padded to a common count."""
        if len(counts) == 1:  # one frame per request: views of the batch, no copy
            padded = {name: array[None] for name, array in part.items()}
        else:
            padded = _pad(part, counts)
        count = np.array([[c] for c in counts], dtype=self.dtypes[COUNT])
        return [
            *(pb_utils.Tensor(name, padded[name]) for name in (BOXES, SCORES, CLASS_IDS, LABELS)),
            pb_utils.Tensor(COUNT, count),
            pb_utils.Tensor(COLORS, padded[COLORS]),
        ]


_PAD_VALUES = {BOXES: 0, SCORES: 0, CLASS_IDS: -1, LABELS: b"", COLORS: 0}


def _pad(part: dict[str, np.ndarray], counts: list[int]) -> dict[str, np.ndarray]:
    """Stack several frames' detections, padded to the largest count (class id -1)."""
    rows, width = len(counts), max(counts)
    padded = {
        name: np.full((rows, width, *array.shape[1:]), _PAD_VALUES[name], dtype=array.dtype)
        for name, array in part.items()
    }
    start = 0
    for row, n in enumerate(counts):
        for name, array in part.items():
            padded[name][row, :n] = array[start : start + n]
        start += n
    return padded
