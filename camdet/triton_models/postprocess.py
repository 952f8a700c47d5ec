"""``postprocess``: YOLO head -> per-frame detections, on the instance's device.

On a GPU instance (torch, imported only there) inputs arrive by DLPack
(``FORCE_CPU_ONLY_INPUT_TENSORS: "no"``), so the head output and the letterboxed images
never leave the GPU; the whole batch goes through one NMS call, each box's mean colour is
read from its image (the tracker's appearance cue,
:func:`camdet.steps.postprocess.detections.box_colors`), and only the final boxes,
scores, class ids and colours are copied to the host, once per batch, for Triton to send.
On a CPU instance the same postprocess runs without torch
(:mod:`camdet.steps.postprocess.host`: numpy, OpenCV's NMS, ONNX Runtime's RoiAlign), so a
CPU server needs no torch install; both give the same detections.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import triton_python_backend_utils as pb_utils

from camdet.constants import INPUT_SHAPE
from camdet.engine.contract import expected_anchors
from camdet.steps.postprocess.host import BoxColors, HostDetections, postprocess_host
from camdet.steps.postprocess.thresholds import Thresholds
from camdet.steps.preprocess.heap import give_back_heap
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

if TYPE_CHECKING:
    import torch

RAW, SIZE, IMAGE = "raw_detections", "original_size", "preprocessed_image"
BOXES, SCORES, CLASS_IDS, LABELS, COUNT = "boxes", "scores", "class_ids", "labels", "num_detections"
COLORS = "colors"


def _to_torch(tensor: pb_utils.Tensor) -> torch.Tensor:
    import torch

    return torch.from_dlpack(tensor.to_dlpack())


def _to_numpy(tensor: pb_utils.Tensor) -> np.ndarray:
    return tensor.as_numpy()


def is_cpu(device: torch.device | str) -> bool:
    """Whether ``device`` (a torch device or its name, e.g. ``"cpu"``) is the CPU."""
    return getattr(device, "type", str(device).split(":")[0]) == "cpu"


class Postprocessor:
    """The postprocess of one config, on one device: thresholds in, responses out.

    Shared by this model and the one-process GPU ``pipeline`` model
    (:mod:`camdet.triton_models.portable.pipeline`), which hands it the detector's output
    without a process crossing. On the CPU it runs the torch-free postprocess
    (:func:`~camdet.steps.postprocess.host.postprocess_host`), on a GPU the torch one.

    Args:
        config: The ``postprocess`` model config (Triton's JSON form).
        model_dir: The ``postprocess`` model folder (holds the labels file).
        device: Where the batch is computed: a ``torch.device``, or ``"cpu"`` (no torch).
    """

    def __init__(self, config: dict[str, Any], model_dir: Path, device: torch.device | str) -> None:
        self.device = device
        self.on_cpu = is_cpu(device)
        self.colors = BoxColors() if self.on_cpu else None
        self.defaults = Thresholds(
            float(parameter(config, "confidence_threshold")),
            float(parameter(config, "iou_threshold")),
            int(parameter(config, "max_detections")),
        )
        label_file = pb_utils.get_output_config_by_name(config, CLASS_IDS)["label_filename"]
        self.labels = np.array(
            [line.strip().encode() for line in (model_dir / label_file).read_text().splitlines()],
            dtype=np.object_,
        )
        self.dtypes = {
            n: output_dtype(config, n) for n in (BOXES, SCORES, CLASS_IDS, COUNT, COLORS)
        }
        raw = pb_utils.get_input_config_by_name(config, RAW)
        self.raw_dtype = np.dtype(pb_utils.triton_string_to_numpy(raw["data_type"]))

    def warm_up(self) -> None:
        """Run the whole postprocess once on this device, as the detector feeds it.

        The first CUDA call of each kernel (and torchvision's NMS library load; on the CPU
        the colour session's build) costs far more than a batch; pay it here, not on the
        first camera's first frame: a head of the served input size, in the config's dtype
        (CUDA loads kernels per dtype).
        """
        rng = np.random.default_rng(0)
        head = rng.random((1, 4 + len(self.labels), expected_anchors(INPUT_SHAPE)), np.float32)
        head[:, :4] *= 320
        sizes = np.array([[720, 1280]], dtype=np.int32)
        images = rng.random((1, 3, *INPUT_SHAPE), np.float32).astype(np.float16)
        if self.on_cpu:
            self.detect(head.astype(self.raw_dtype), sizes, images, [self.defaults])
            return
        import torch

        from camdet.steps.postprocess.detections import postprocess_flat

        head_t, sizes_t, images_t = (
            torch.from_numpy(a).to(self.device)
            for a in (head.astype(self.raw_dtype), sizes, images)
        )
        postprocess_flat(head_t, sizes_t, [self.defaults], images=images_t)

    def thresholds(self, request: pb_utils.InferenceRequest) -> Thresholds:
        """The request's thresholds (its parameters over the config's defaults).

        Raises:
            camdet.steps.parameters.RequestParameterError: For a bad parameter.
        """
        return self.thresholds_of(checked_parameters(request))

    def thresholds_of(self, params: dict[str, Any]) -> Thresholds:
        """Thresholds from parameters already checked (``checked_parameters``' result)."""
        return Thresholds(
            params.get("confidence_threshold", self.defaults.confidence),
            params.get("iou_threshold", self.defaults.iou),
            params.get("max_detections", self.defaults.max_detections),
        )

    def detect(
        self,
        raw: torch.Tensor | np.ndarray,
        sizes: torch.Tensor | np.ndarray,
        images: torch.Tensor | np.ndarray,
        thresholds: list[Thresholds],
    ) -> tuple[dict[str, np.ndarray], list[int]]:
        """A batch's final detections on the host, and each frame's count.

        Args:
            raw: ``[B, 4 + nc, A]`` head output: torch on this device, or, on the CPU,
                numpy (torch CPU tensors are read as numpy there).
            sizes: ``[B, 2]`` INT32 (height, width) of the original frames, pixels.
            images: ``[B, 3, H, W]`` FP16 letterboxed frames in [0, 1] (the colours).
            thresholds: One per frame.
        """
        if self.on_cpu:
            host = postprocess_host(
                np.asarray(raw),
                np.asarray(sizes),
                thresholds,
                images=np.asarray(images),
                colors=self.colors,
            )
            # The colours' float32 copy of the batch (5 MB a frame) was freed; glibc would
            # keep its pages for good (issue #12: RSS after a fuzz), so hand them back.
            give_back_heap()
            return self._host_outputs(host), host.counts
        from camdet.steps.postprocess.detections import postprocess_to_host

        host = postprocess_to_host(raw, sizes, thresholds, images)
        return self._host_outputs(host), host.counts

    def _host_outputs(self, batch: HostDetections) -> dict[str, np.ndarray]:
        """A batch's detections on the host (either device's), in the config's output dtypes."""
        return {
            BOXES: batch.boxes.astype(self.dtypes[BOXES], copy=False),
            SCORES: batch.scores.astype(self.dtypes[SCORES], copy=False),
            CLASS_IDS: batch.class_ids.astype(self.dtypes[CLASS_IDS]),
            LABELS: self.labels[batch.class_ids],
            COLORS: batch.colors.astype(self.dtypes[COLORS], copy=False),
        }

    def outputs(
        self, host: dict[str, np.ndarray], counts: list[int], owners: list[tuple[int, int]]
    ) -> dict[int, list[pb_utils.Tensor]]:
        """Each owner request's output tensors, by request index.

        Args:
            host: The batch's detections (:meth:`detect`).
            counts: Detections per frame of the batch.
            owners: ``(request index, frames)`` in batch order.
        """
        starts = np.cumsum([0, *counts])
        tensors, frame = {}, 0
        for i, frames in owners:
            first, last = starts[frame], starts[frame + frames]
            part = {name: array[first:last] for name, array in host.items()}
            tensors[i] = self._tensors(part, counts[frame : frame + frames])
            frame += frames
        return tensors

    def no_detections(self) -> list[pb_utils.Tensor]:
        """The output tensors of one frame without detections (or without a frame)."""
        empty = {
            BOXES: np.zeros((0, 4), self.dtypes[BOXES]),
            SCORES: np.zeros(0, self.dtypes[SCORES]),
            CLASS_IDS: np.zeros(0, self.dtypes[CLASS_IDS]),
            LABELS: self.labels[:0],
            COLORS: np.zeros((0, 3), self.dtypes[COLORS]),
        }
        return self._tensors(empty, [0])

    def _tensors(self, part: dict[str, np.ndarray], counts: list[int]) -> list[pb_utils.Tensor]:
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


class TritonPythonModel:
    """Decode, NMS and rescale a batch of requests at once."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read defaults, labels and output dtypes from the config; warm up on the device."""
        device_id = instance_device(args)
        device: torch.device | str = "cpu"
        if device_id is not None:
            import torch

            device = torch.device(f"cuda:{device_id}")
        self.post = Postprocessor(load_config(args), Path(args["model_repository"]), device)
        self.post.warm_up()
        self.stats = DeviceStats(args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """One response per request; bad thresholds fail only their own request."""
        responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        with self.stats.phase("inputs"):
            raws, sizes, images, thresholds, owners = self._collect(requests, responses)
        if raws:
            with self.stats.phase("compute"):
                host, counts = self.post.detect(
                    self._join(raws), self._join(sizes), self._join(images), thresholds
                )
            with self.stats.phase("outputs"):
                for i, tensors in self.post.outputs(host, counts, owners).items():
                    responses[i] = pb_utils.InferenceResponse(tensors)
            self.stats.record(
                {RAW: raws, SIZE: sizes, IMAGE: images}, {k: [v] for k, v in host.items()}
            )
        return responses

    def _join(self, parts: list) -> Any:
        """The requests' tensors as one batch on the postprocess's device."""
        return np.concatenate(parts) if self.post.on_cpu else join_on(parts, self.post.device)

    def _collect(
        self, requests: list, responses: list[pb_utils.InferenceResponse | None]
    ) -> tuple[list, list, list, list[Thresholds], list[tuple[int, int]]]:
        """Each valid request's tensors and thresholds; bad ones get their error response."""
        raws, sizes, images, thresholds, owners = [], [], [], [], []
        for i, request in enumerate(requests):
            try:
                setting = self.post.thresholds(request)
            except ValueError as exc:  # RequestParameterError, before the batch is joined
                responses[i] = error_response(f"bad request parameters: {exc}")
                continue
            # A CPU instance's inputs are host tensors (Triton places CPU instances' inputs
            # in CPU memory): numpy views, no torch.
            read = _to_numpy if self.post.on_cpu else _to_torch
            raws.append(read(pb_utils.get_input_tensor_by_name(request, RAW)))
            sizes.append(read(pb_utils.get_input_tensor_by_name(request, SIZE)))
            images.append(read(pb_utils.get_input_tensor_by_name(request, IMAGE)))
            thresholds += [setting] * raws[-1].shape[0]
            owners.append((i, raws[-1].shape[0]))
        return raws, sizes, images, thresholds, owners


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
