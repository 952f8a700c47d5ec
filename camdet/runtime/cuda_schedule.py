"""How a process's host threads wait for its GPU: the primary CUDA context's scheduling flag.

CUDA's default (``auto``) spins a waiting thread while the process has fewer contexts
than the machine has cores. Each stage thread of a served pipeline and each of DALI's own
threads then spins on its syncs: free in a process alone on a machine, possibly not on a
GPU server whose cores also run the gRPC front end, the clients and the other pipelines'
processes (on an H100 under 256 cameras DALI's mixed-stage threads used ~5 cores,
perf/RESULTS.md session 8). ``yield`` and ``blocking-sync`` give the core back while
waiting. Set before anything in the process creates the context (torch, DALI), or on the
active context (``cuCtxSetFlags``, CUDA 12.1+), as in a Python-backend stub, whose own
code creates it before the model's ``initialize``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

SCHEDULES = {"auto": 0, "spin": 1, "yield": 2, "blocking-sync": 4}
"""``CU_CTX_SCHED_*`` by name."""

_NAMES = {value: name for name, value in SCHEDULES.items()}


def driver() -> tuple[ctypes.CDLL, int]:
    """The CUDA driver library, initialised, and ``cuInit``'s ``CUresult`` (0: fine).

    Raises:
        OSError: No CUDA driver on this machine.
    """
    cuda = ctypes.CDLL("libcuda.so.1")
    return cuda, cuda.cuInit(0)


def schedule_of(device_id: int) -> tuple[str, bool]:
    """The primary context's scheduling flag on ``device_id`` and whether it is active.

    An active context is asked itself (``cuCtxGetFlags``): a flag set on it with
    ``cuCtxSetFlags`` need not show in the device's record of the primary context.

    Raises:
        OSError: No CUDA driver on this machine.
    """
    cuda, _ = driver()
    flags, active = ctypes.c_uint(), ctypes.c_int()
    cuda.cuDevicePrimaryCtxGetState(device_id, ctypes.byref(flags), ctypes.byref(active))
    if active.value:
        _in_context(cuda, device_id, lambda: cuda.cuCtxGetFlags(ctypes.byref(flags)))
    return _NAMES.get(flags.value & 7, f"{flags.value & 7:#x}"), bool(active.value)


def set_schedule(device_id: int, schedule: str) -> str:
    """Give ``device_id``'s primary context the scheduling flag ``schedule``.

    Args:
        device_id: CUDA device.
        schedule: A key of :data:`SCHEDULES`.

    Returns:
        The flag in force afterwards, in words (for the log).

    Raises:
        ValueError: ``schedule`` is not a known name.
        RuntimeError: The driver refused the flag.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"CUDA schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    cuda, _ = driver()
    _, active = schedule_of(device_id)
    flags = SCHEDULES[schedule]
    if active:  # e.g. a Python-backend stub, whose own code made it before the model's
        # cuDevicePrimaryCtxSetFlags refuses an active context (CUresult 708).
        _in_context(cuda, device_id, lambda: cuda.cuCtxSetFlags(ctypes.c_uint(flags)))
    else:
        _check(cuda.cuDevicePrimaryCtxSetFlags_v2(device_id, flags), f"flags {flags}")
    now, _ = schedule_of(device_id)
    return f"{now} (context {'already active' if active else 'not created yet'})"


def _in_context(cuda: ctypes.CDLL, device_id: int, call: Callable[[], int]) -> None:
    """Run a driver ``call`` with the device's primary context current on this thread.

    The ``_v2`` entry points are the ones ``cuda.h`` maps these names to: the unversioned
    symbols are the CUDA 3 ABI, whose ``cuCtxPushCurrent`` refused the primary context
    (CUresult 201) on the H100.
    """
    context = ctypes.c_void_p()
    _check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device_id), "retain")
    try:
        _check(cuda.cuCtxPushCurrent_v2(context), "push")
        try:
            _check(call(), "context call")
        finally:
            cuda.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
    finally:
        cuda.cuDevicePrimaryCtxRelease_v2(device_id)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"CUDA driver call ({what}) returned CUresult {status}")
