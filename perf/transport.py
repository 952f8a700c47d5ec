"""How a request's input tensor reaches the server: in the gRPC message or in shared memory.

A camera thread has one request in flight at a time, so it owns one input region and
rewrites it before each request. Outputs always come back in the gRPC response (they are
small: a frame's detections). System shared memory works for any client on the server's
host; CUDA shared memory needs ``cuda-python`` and a GPU (the NGC containers have both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

TRANSPORTS = ("none", "system", "cuda")
"""Values of ``--shm``: plain gRPC, system shared memory, CUDA shared memory."""


class InputTransport(Protocol):
    """Builds the input tensor of one request and releases its resources at the end."""

    def tensor(self, name: str, array: np.ndarray) -> grpcclient.InferInput:
        """The request input ``name`` holding ``array`` (shape includes the batch)."""
        ...

    def close(self) -> None:
        """Unregister and free whatever :meth:`tensor` used."""
        ...


UNREGISTER_TIMEOUT_S = 10.0
"""How long to retry unregistering a region the server still holds."""


def unregister_when_released(unregister: Callable[[str], object], name: str) -> None:
    """Unregister region ``name``, retrying while the server still holds it.

    The server may keep a region referenced for a moment after the response that read
    it arrived (while the ensemble releases the request), and refuses to unregister it
    meanwhile ("currently in use").

    Raises:
        InferenceServerException: Any other error, or "in use" after
            :data:`UNREGISTER_TIMEOUT_S`.
    """
    deadline = time.monotonic() + UNREGISTER_TIMEOUT_S
    while True:
        try:
            unregister(name)
            return
        except InferenceServerException as exc:
            if "in use" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class GrpcTransport:
    """Tensor bytes inside the gRPC request (the default, and the only remote option)."""

    def tensor(self, name: str, array: np.ndarray) -> grpcclient.InferInput:
        """The input with its data in the message."""
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        return tensor

    def close(self) -> None:
        """Nothing to release."""


class SystemShmTransport:
    """Tensor bytes in a POSIX shared-memory region registered with the server."""

    def __init__(self, client: grpcclient.InferenceServerClient, tag: str, byte_size: int) -> None:
        """Create and register one region of ``byte_size`` bytes.

        Args:
            client: The client whose server reads the region (same host).
            tag: Unique among this process's regions (e.g. the camera index).
            byte_size: Largest tensor the region will hold, in bytes.
        """
        import tritonclient.utils.shared_memory as shm

        self._shm = shm
        self._client = client
        self.name = f"camdet-{os.getpid()}-{tag}"
        self.byte_size = byte_size
        self._handle = shm.create_shared_memory_region(self.name, f"/{self.name}", byte_size)
        client.register_system_shared_memory(self.name, f"/{self.name}", byte_size)

    def tensor(self, name: str, array: np.ndarray) -> grpcclient.InferInput:
        """Copy ``array`` into the region and point the input at it."""
        array = np.ascontiguousarray(array)
        self._shm.set_shared_memory_region(self._handle, [array])
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_shared_memory(self.name, array.nbytes)
        return tensor

    def close(self) -> None:
        """Unregister the region from the server and unlink it."""
        unregister_when_released(self._client.unregister_system_shared_memory, self.name)
        self._shm.destroy_shared_memory_region(self._handle)


class CudaShmTransport:
    """Tensor bytes in GPU memory shared with the server by a CUDA IPC handle."""

    def __init__(
        self,
        client: grpcclient.InferenceServerClient,
        tag: str,
        byte_size: int,
        device_id: int = 0,
    ) -> None:
        """Allocate and register one region of ``byte_size`` bytes on ``device_id``.

        Raises:
            RuntimeError: From tritonclient when ``cuda-python`` is not installed.
        """
        import tritonclient.utils.cuda_shared_memory as cudashm

        self._cudashm = cudashm
        self._client = client
        self.name = f"camdet-cuda-{os.getpid()}-{tag}"
        self._handle = cudashm.create_shared_memory_region(self.name, byte_size, device_id)
        client.register_cuda_shared_memory(
            self.name, cudashm.get_raw_handle(self._handle), device_id, byte_size
        )

    def tensor(self, name: str, array: np.ndarray) -> grpcclient.InferInput:
        """Copy ``array`` to the GPU region and point the input at it."""
        array = np.ascontiguousarray(array)
        self._cudashm.set_shared_memory_region(self._handle, [array])
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_shared_memory(self.name, array.nbytes)
        return tensor

    def close(self) -> None:
        """Unregister the region from the server and free it."""
        unregister_when_released(self._client.unregister_cuda_shared_memory, self.name)
        self._cudashm.destroy_shared_memory_region(self._handle)


def make_transport(
    kind: str, client: grpcclient.InferenceServerClient, tag: str, byte_size: int
) -> InputTransport:
    """The transport named ``kind`` (one of :data:`TRANSPORTS`).

    Raises:
        ValueError: For an unknown kind.
    """
    if kind == "none":
        return GrpcTransport()
    if kind == "system":
        return SystemShmTransport(client, tag, byte_size)
    if kind == "cuda":
        return CudaShmTransport(client, tag, byte_size)
    raise ValueError(f"unknown shared memory kind {kind!r}; choose one of {TRANSPORTS}")
