"""``validate``: refuse bad encoded frames alone, before they can fail a DALI batch.

It also checks each request's parameters (the first Python step of ``detect``), so a bad
parameter fails its request here, alone, and flags frames whose image data is damaged
but still decodable (:mod:`camdet.steps.validate.jpeg_damage`): those are answered, with ``damaged``
true, and counted on the metrics endpoint.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import triton_python_backend_utils as pb_utils

from camdet.steps.parameters import IMAGE_PARAMETERS, RequestParameterError
from camdet.steps.validate.image_check import ImageCheckError, check_encoded_image
from camdet.steps.validate.jpeg_damage import find_damage
from camdet.triton_models.common import (
    checked_parameters,
    error_response,
    guarded_execute,
    load_config,
    output_dtype,
    parameter,
    tensor_names,
)

DAMAGED = "damaged"
DAMAGED_FRAMES_METRIC = "camdet_damaged_frames_total"


class Checked(NamedTuple):
    """A request that passed :meth:`FrameChecks.check`."""

    frames: np.ndarray
    """``[N, bytes]`` UINT8 encoded frames (a view of the request's input)."""
    damaged: np.ndarray
    """``[N, 1]`` ``damaged`` flags."""
    parameters: dict[str, Any]
    """Its parameters, checked (:func:`camdet.triton_models.common.checked_parameters`)."""


class FrameChecks:
    """``validate``'s checks of one request.

    This model runs them, and so does a ``*_pipeline`` model that takes ``validate`` into
    its own process (:func:`camdet.serving.portable.add_pipelines`).

    Args:
        config: The ``validate`` model config (tensor names, ``max_pixels``, ``max_side``).
        model_name: The label of its damaged-frame count (``validate``'s own name).
    """

    def __init__(self, config: dict, model_name: str) -> None:
        (self.input_name,) = tensor_names(config, "input")
        self.output_name = next(n for n in tensor_names(config, "output") if n != DAMAGED)
        self.damaged_dtype = output_dtype(config, DAMAGED)
        self.max_pixels = int(parameter(config, "max_pixels"))
        self.max_side = int(parameter(config, "max_side"))
        # The family must outlive its metric (the backend refuses to count otherwise).
        self.damage_family = pb_utils.MetricFamily(
            name=DAMAGED_FRAMES_METRIC,
            description="Frames answered although their image data is damaged (concealed)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.damaged_frames = self.damage_family.Metric(labels={"model": model_name})

    def check(self, request: pb_utils.InferenceRequest) -> Checked | str:
        """The request's frames, ``damaged`` flags and parameters, or why it is refused.

        Returns:
            :class:`Checked`, or the error text the request's response carries.
        """
        try:
            parameters = checked_parameters(request, IMAGE_PARAMETERS)
        except RequestParameterError as exc:
            return f"bad request parameters: {exc}"
        frames = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        damaged = np.zeros((len(frames), 1), dtype=self.damaged_dtype)
        try:
            # [batch, bytes]: one encoded frame per row (one row per camera request).
            for row, frame in enumerate(frames):
                damaged[row] = self._is_damaged(frame.tobytes())
        except ImageCheckError as exc:
            return f"invalid image: {exc}"
        return Checked(frames, damaged, parameters)

    def _is_damaged(self, data: bytes) -> bool:
        """Check one frame (raises ImageCheckError); log and count concealable damage."""
        info = check_encoded_image(data, self.max_pixels, self.max_side)
        damage = find_damage(data) if info.format == "jpeg" else None
        if damage is None:
            return False
        self.damaged_frames.increment(1)
        pb_utils.Logger.log_verbose(f"validate: damaged JPEG answered: {damage}")
        return True


class TritonPythonModel:
    """Pass each request's encoded frame through unchanged, or fail that request."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read tensor names and size limits from the config; register the damage count."""
        self.checks = FrameChecks(load_config(args), args["model_name"])

    @guarded_execute
    def execute(self, requests: list) -> list:
        """Check every frame and the parameters of every request; one response per request."""
        return [self._check(request) for request in requests]

    def _check(self, request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        checked = self.checks.check(request)
        if isinstance(checked, str):
            return error_response(checked)
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(self.checks.output_name, np.ascontiguousarray(checked.frames)),
                pb_utils.Tensor(DAMAGED, checked.damaged),
            ]
        )
