"""``detect_pipeline``: ``preprocess``, ``detector`` and ``postprocess`` in one process.

On a GPU the portable ``detect`` ensemble is this model alone, which runs ``validate``'s
checks first (``CAMDET_PIPELINE_VALIDATE=0``: ``validate`` -> this model;
:func:`camdet.serving.portable.generate_portable_repository`). As three Python-backend
models, each frame's 2.4 MB letterboxed image crossed process boundaries twice and the
head output once: 869 frames/s at 256 cameras on an H100, against 1,494 for this model
(perf/RESULTS.md, session 7). Here one process
decodes a batch with the production ``dali.py``, runs the detector (torch FP16 with CUDA
graphs; ONNX Runtime on a CPU) and postprocesses on the same device; only the final
detections reach the host. Within an instance a decode thread and a detect-and-answer
thread overlap consecutive batches (:mod:`camdet.triton_models.portable.stages`), each
request answered by its own response sender.

Each step runs its own code with its own config, read from the repository
(:func:`~camdet.triton_models.common.step_args`): the tensor contracts, thresholds, labels
and batch sizes are the ones of ``preprocess``, ``detector`` and ``postprocess``, and
errors read as they do there (a frame the decoder refuses fails alone, a bad threshold
fails its request).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from camdet.serving.portable import PIPELINE_STEPS, VALIDATE_STEP
from camdet.steps.postprocess.detections import Thresholds
from camdet.triton_models.common import (
    DeviceStats,
    error_response,
    instance_device,
    load_config,
    output_dtype,
    parameter,
    step_args,
    tensor_names,
)
from camdet.triton_models.portable.detector_torch import graph_runner, torch_dtype
from camdet.triton_models.portable.preprocess import preprocessor
from camdet.triton_models.portable.stages import Batch, Gather, Stages
from camdet.triton_models.postprocess import IMAGE, RAW, SIZE, Postprocessor
from camdet.triton_models.validate import DAMAGED, FrameChecks


class Detector:
    """The ``detector`` step in this process: ``[B, 3, H, W]`` FP16 -> ``[B, 4 + nc, A]``.

    torch with CUDA graphs on a GPU (what the portable ``detector`` runs there), ONNX
    Runtime on the CPU (likewise), cast to the detector config's output dtype as the
    served step's response would be.

    Args:
        args: The ``detector`` model's ``initialize`` arguments (:func:`step_args`).
        device: This instance's device.
    """

    def __init__(self, args: dict[str, str], device: torch.device) -> None:
        config = load_config(args)
        (output,) = tensor_names(config, "output")
        self.output_dtype = torch_dtype(output_dtype(config, output))
        self.device = device
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        if device.type == "cuda":
            self.run = graph_runner(config, path, device)
        else:
            from camdet.runtime.runners import OnnxRuntimeRunner

            threads = int(parameter(config, "intra_op_threads", str(os.cpu_count() or 1)))
            self.run = OnnxRuntimeRunner(path, threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Run one batch of letterboxed frames on this device."""
        raw = self.run(images if self.device.type == "cuda" else images.numpy())
        return torch.as_tensor(raw, device=self.device).to(self.output_dtype)


SEND_THREADS = int(os.environ.get("CAMDET_SEND_THREADS", "4"))
"""Threads that send one batch's responses at once (``CAMDET_SEND_THREADS``; 1: one
after another, as before). A response sender waits until the server has taken its
response (a round trip between this process and tritonserver, without the GIL), so
sending them one after another made the detect stage wait for each round trip in turn."""


class DetectAndAnswer:
    """The last stage of both ``*_pipeline`` models: detector, postprocess, the responses.

    Args:
        det: The ``detector`` model's ``initialize`` arguments (:func:`step_args`).
        post: The ``postprocess`` model's.
        device: This instance's device.
        stats: The pipeline model's phase counters.
    """

    def __init__(
        self, det: dict[str, str], post: dict[str, str], device: torch.device, stats: DeviceStats
    ) -> None:
        self.detector = Detector(det, device)
        self.post = Postprocessor(load_config(post), Path(post["model_repository"]), device)
        self.post.warm_up()
        self.stats = stats
        self.senders = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="answer")

    def __call__(
        self,
        batch: Batch,
        images: torch.Tensor,
        sizes: torch.Tensor,
        thresholds: list[Thresholds],
        owners: list[tuple[int, int]],
        respond: Callable[[int, list[pb_utils.Tensor]], pb_utils.InferenceResponse],
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Detect on a batch's frames and answer each owner request.

        Args:
            batch: The batch whose requests are answered.
            images: ``[B, 3, H, W]`` FP16 letterboxed frames, on the device.
            sizes: ``[B, 2]`` INT32 (height, width) of the original frames, pixels.
            thresholds: One per frame.
            owners: ``(request index, frames)`` in batch order.
            respond: A request's response from its index and detection tensors.

        Returns:
            The ``[B, 4 + nc, A]`` head output and the batch's detections on the host.
        """
        if images.is_cuda:  # made on the decode stage's stream, freed after use on this one
            images.record_stream(torch.cuda.current_stream())
        with self.stats.phase("detector"):
            raw = self.detector(images)
        with self.stats.phase("postprocess"):
            host, counts = self.post.detect(raw, sizes, images, thresholds)
        with self.stats.phase("outputs"):
            tensors = self.post.outputs(host, counts, owners)
            batch.answer_all({i: respond(i, t) for i, t in tensors.items()}, self.senders)
        return raw, host

    def close(self) -> None:
        """Stop the sending threads (after the last batch was answered)."""
        self.senders.shutdown(wait=True)


@dataclass
class _Frames:
    """A batch's work between the stages: what ``execute`` read, then what was decoded."""

    frames: list[np.ndarray]
    owners: list[tuple[int, int]]
    thresholds: list[Thresholds]
    damaged: dict[int, np.ndarray]
    """``[N, 1]`` ``damaged`` flags by request index (with ``validate`` taken in)."""
    images: torch.Tensor | None = None
    sizes: torch.Tensor | None = None

    @property
    def count(self) -> int:
        """The batch's frames (a request may hold several)."""
        return sum(n for _, n in self.owners)

    @staticmethod
    def join(works: list[_Frames], offsets: list[int]) -> _Frames:
        """Several batches' reads as one; ``offsets``: each one's first request index."""
        return _Frames(
            [frame for work in works for frame in work.frames],
            [(i + o, n) for work, o in zip(works, offsets, strict=True) for i, n in work.owners],
            [setting for work in works for setting in work.thresholds],
            shifted([work.damaged for work in works], offsets),
        )


class TritonPythonModel:
    """Decode, detect and postprocess a batch of encoded frames, one response each.

    ``execute`` reads the requests and returns; a decode thread and a detect-and-answer
    thread (:class:`~camdet.triton_models.portable.stages.Stages`) overlap consecutive
    batches, and each request is answered by its own response sender.
    """

    def initialize(self, args: dict[str, str]) -> None:
        """Build the three steps from their own configs, on this instance's device."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        pre, det, post = (step_args(args, parameter(config, key)) for key in PIPELINE_STEPS)
        check = parameter(config, VALIDATE_STEP, "")
        self.checks = FrameChecks(load_config(step_args(args, check)), check) if check else None
        device_id = instance_device(args)
        apply_cuda_schedule(args["model_name"], config, device_id)
        self.device = torch.device("cpu" if device_id is None else f"cuda:{device_id}")
        pre_config = load_config(pre)
        self.pre_outputs = tensor_names(pre_config, "output")
        self.preprocessor = preprocessor(pre, pre_config, device_id)
        self.stats = DeviceStats(args["model_name"])
        self.answering = DetectAndAnswer(det, post, self.device, self.stats)
        self.post = self.answering.post
        if device_id is not None and os.environ.get("CAMDET_PROBE_JPEG") == "1":
            _log_jpeg_probe(args["model_name"], Path(pre["model_repository"]), device_id)
        overlap = overlapped(config)
        gather = gathering(config, _Frames.join, int(pre_config["max_batch_size"]))
        self.stages = Stages(
            args["model_name"],
            [self._decode, self._detect],
            self.device if device_id is not None else None,
            overlap,
            gather,
        )
        pb_utils.Logger.log_info(
            f"{args['model_name']}: one process on {self.device}, overlap {overlap}, "
            f"gather {gather is not None}"
        )

    def execute(self, requests: list) -> None:
        """Read the requests, hand the batch to the stages; each is answered by its sender."""
        batch = Batch([r.get_response_sender() for r in requests])
        with self.stages.reading(batch), self.stats.phase("inputs"):
            batch.work = self._collect(requests, batch)
        if batch.work is not None and batch.work.frames:  # None: reading failed, all answered
            self.stages.submit(batch)

    def finalize(self) -> None:
        """Answer the batches in flight, then stop the stage threads."""
        self.stages.close()
        self.answering.close()

    def _decode(self, batch: Batch) -> None:
        """Stage 1: decode and letterbox; a frame the decoder refuses fails its request."""
        work: _Frames = batch.work
        with self.stats.phase("preprocess"):
            result = self.preprocessor.run(work.frames)
        kept, kept_thresholds = [], []
        for k, (i, n) in enumerate(work.owners):
            if k in result.errors:
                batch.answer(i, error_response(result.errors[k]))
            else:
                kept.append((i, n))
                kept_thresholds += [work.thresholds[k]] * n
        work.owners, work.thresholds = kept, kept_thresholds
        if kept:
            outputs = dict(zip(self.pre_outputs, result.outputs, strict=True))
            work.images, work.sizes = (torch.as_tensor(outputs[n]) for n in (IMAGE, SIZE))

    def _detect(self, batch: Batch) -> None:
        """Stage 2: detector, postprocess, and each request's response."""
        work: _Frames = batch.work
        images, sizes = work.images, work.sizes
        raw, host = self.answering(
            batch,
            images,
            sizes,
            work.thresholds,
            work.owners,
            lambda i, tensors: pb_utils.InferenceResponse(
                [*tensors, pb_utils.Tensor(DAMAGED, work.damaged[i])] if work.damaged else tensors
            ),
        )
        inputs = {self.input_name: work.frames, SIZE: [sizes], IMAGE: [images], RAW: [raw]}
        self.stats.record(inputs, {k: [v] for k, v in host.items()})

    def _collect(self, requests: list, batch: Batch) -> _Frames:
        """Each valid request's frames (copied: requests are freed when ``execute`` returns).

        With ``validate`` taken in, its checks come first, as its step would: a request it
        refuses is answered with its error and never reaches the decoder.
        """
        frames, owners, thresholds, damaged = [], [], [], {}
        for i, request in enumerate(requests):
            if self.checks is not None:  # its parameters are checked there, once
                checked = self.checks.check(request)
                if isinstance(checked, str):
                    batch.answer(i, error_response(checked))
                    continue
                encoded, damaged[i] = checked.frames, checked.damaged
                setting = self.post.thresholds_of(checked.parameters)
            else:
                encoded = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                try:
                    setting = self.post.thresholds(request)
                except ValueError as exc:  # RequestParameterError
                    batch.answer(i, error_response(f"bad request parameters: {exc}"))
                    continue
            frames.append(np.array(encoded))
            owners.append((i, len(encoded)))
            thresholds.append(setting)
        return _Frames(frames, owners, thresholds, damaged)


def apply_cuda_schedule(model: str, config: dict, device_id: int | None) -> None:
    """Set the config's ``cuda_schedule`` (default ``auto``: CUDA's own, left alone).

    Called first in ``initialize``. The stub has made the CUDA context by then (on the
    H100 the driver refused to change an active primary context's flags, CUresult 708),
    so :func:`~camdet.runtime.cuda_schedule.set_schedule` sets it on the active context.
    """
    schedule = parameter(config, "cuda_schedule", "auto")
    if device_id is None or schedule == "auto":
        return
    from camdet.runtime.cuda_schedule import set_schedule

    pb_utils.Logger.log_info(f"{model}: CUDA schedule {set_schedule(device_id, schedule)}")


def overlapped(config: dict) -> bool:
    """Whether the config asks for overlapping stages (parameter ``overlap``, default yes)."""
    return parameter(config, "overlap", "yes") != "no"


def shifted(by_request: list[dict[int, Any]], offsets: list[int]) -> dict[int, Any]:
    """Several batches' per-request values as one, keyed by the joined batch's indices.

    Args:
        by_request: Per batch, values by its own request index.
        offsets: Per batch, its first request's index in the joined batch.
    """
    return {
        index + offset: value
        for values, offset in zip(by_request, offsets, strict=True)
        for index, value in values.items()
    }


def gathering(
    config: dict, join: Callable[[list, list[int]], Any], max_frames: int
) -> Gather | None:
    """The first stage's gathering, unless the config says ``gather: "no"`` (default yes).

    Args:
        config: The pipeline model's config.
        join: The model's works of several batches as one (:class:`Gather`).
        max_frames: The first step's largest batch, frames.
    """
    if parameter(config, "gather", "yes") == "no":
        return None
    return Gather(lambda work: work.count, join, max_frames)


def _log_jpeg_probe(model: str, preprocess_dir: Path, device_id: int) -> None:
    """Log ``camdet doctor``'s hardware-JPEG-decoder probe, run inside this stub.

    ``CAMDET_PROBE_JPEG=1`` (perf/RESULTS.md, sessions 4-7: DALI's decode took several
    times longer per frame in a stub than in a plain process; the doctor finds the
    hardware decoder in use in a plain process, so this asks the same in the stub).
    """
    from camdet.doctor.gpu import probe_jpeg, process_facts

    frame = next(iter(sorted((preprocess_dir / "warmup").glob("*.jpg"))), None)
    if frame is None:
        return
    probe = probe_jpeg(frame, device_id)
    pb_utils.Logger.log_info(
        f"{model}: JPEG probe in this stub: {probe.hardware_fps:.0f} frames/s with "
        f"hw_decoder_load=1.0, {probe.cuda_fps:.0f} on CUDA cores (x{probe.speedup:.1f}, "
        f"{probe.size[1]}x{probe.size[0]}); {process_facts(device_id)}"
    )
