"""How a process's host threads wait for its GPU: the primary CUDA context's scheduling flag.

CUDA's default (``auto``) spins a waiting thread while the process has fewer contexts
than the machine has cores. Every stage thread of a served pipeline and each of DALI's
own threads then spins on its syncs, which is free in a process alone on a machine and
not on a GPU server whose cores also run the gRPC front end, the clients and other
pipelines' processes. ``yield`` and ``blocking-sync`` give the core back while waiting.
Set before anything in the process creates the context (torch, DALI); the driver keeps
the flag for the context it creates then.
"""

from __future__ import annotations

import ctypes

SCHEDULES = {"auto": 0, "spin": 1, "yield": 2, "blocking-sync": 4}
"""``CU_CTX_SCHED_*`` by name."""

_NAMES = {value: name for name, value in SCHEDULES.items()}


def _driver() -> ctypes.CDLL:
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuInit(0)
    return cuda


def schedule_of(device_id: int) -> tuple[str, bool]:
    """The primary context's scheduling flag on ``device_id`` and whether it is active.

    Raises:
        OSError: No CUDA driver on this machine.
    """
    flags, active = ctypes.c_uint(), ctypes.c_int()
    _driver().cuDevicePrimaryCtxGetState(device_id, ctypes.byref(flags), ctypes.byref(active))
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
    status = _driver().cuDevicePrimaryCtxSetFlags(device_id, SCHEDULES[schedule])
    if status != 0:
        raise RuntimeError(f"cuDevicePrimaryCtxSetFlags({schedule}) returned CUresult {status}")
    now, active = schedule_of(device_id)
    return f"{now} (context {'already active' if active else 'not created yet'})"
