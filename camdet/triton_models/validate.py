"""``validate``: refuse bad encoded frames alone, before they can fail a DALI batch."""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils

from camdet.image_check import ImageCheckError, check_encoded_image
from camdet.triton_models.common import error_response, load_config, parameter, tensor_names


class TritonPythonModel:
    """Pass each request's encoded frame through unchanged, or fail that request."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read tensor names and size limits from the config."""
        config = load_config(args)
        (self.input_name,) = tensor_names(config, "input")
        (self.output_name,) = tensor_names(config, "output")
        self.max_pixels = int(parameter(config, "max_pixels"))
        self.max_side = int(parameter(config, "max_side"))

    def execute(self, requests: list) -> list:
        """Check every frame of every request; one response per request."""
        return [self._check(request) for request in requests]

    def _check(self, request: pb_utils.InferenceRequest) -> pb_utils.InferenceResponse:
        frames = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        try:
            # [batch, bytes]: one encoded frame per row (one row per camera request).
            for frame in frames:
                check_encoded_image(frame.tobytes(), self.max_pixels, self.max_side)
        except ImageCheckError as exc:
            return error_response(f"invalid image: {exc}")
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(self.output_name, np.ascontiguousarray(frames))]
        )
