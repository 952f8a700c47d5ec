"""A decoder's refusal in words, from DALI's exception text.

DALI's message quotes the pipeline's source line and, for nvImageCodec, ends in a bare
status number (``nvImageCodec failure: '#17'``) or in nothing at all; clients get one
line in words instead.
"""

from __future__ import annotations

import re

_NO_REASON = re.compile(r"Failed to decode sample #\d+ ?:?$")
_CODEC_STATUS = re.compile(r"nvImageCodec failure: '#(\d+)'")

NVIMGCODEC_STATUS = {
    1: "not initialized",
    2: "invalid parameter",
    3: "bad code stream",
    4: "code stream unsupported",
    5: "allocator failure",
    6: "execution failed",
    7: "architecture mismatch",
    8: "internal error",
    9: "implementation unsupported",
    10: "missing dependencies",
    11: "codec extension not initialized",
    12: "invalid parameter in a codec extension",
    13: "bad code stream in a codec extension",
    14: "code stream unsupported by a codec extension",
    15: "allocator failure in a codec extension",
    16: "architecture mismatch in a codec extension",
    17: "internal error in a codec extension",
    18: "not implemented by a codec extension",
    19: "incomplete bit stream",
    20: "execution failed in a codec extension",
    21: "CUDA call failed in a codec extension",
}
"""``nvimgcodecStatus_t`` (nvimgcodec.h, nvImageCodec 0.9) in words."""


def decode_failure(first_bytes: bytes, exc: Exception) -> str:
    """A one-line refusal of a frame that passed ``validate`` but did not decode.

    Args:
        first_bytes: The frame's first bytes (to name the format).
        exc: DALI's exception.
    """
    kind = "PNG" if first_bytes[:4] == b"\x89PNG" else "JPEG"
    return (
        f"cannot decode image: the {kind} image data is corrupt or uses a feature the "
        f"decoder does not support ({dali_error_summary(exc)})"
    )


def dali_error_summary(exc: Exception) -> str:
    """The decoder's reason inside a DALI error, without DALI's source quotes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Critical error", "Current pipeline"))]
    # "images = fn.decoders.image(...) encountered: <reason>": keep the reason only.
    reason = (useful[-1] if useful else str(exc)).rpartition("encountered:")[2].strip()
    status = _CODEC_STATUS.search(reason)
    if status:
        code = int(status.group(1))
        return f"nvImageCodec: {NVIMGCODEC_STATUS.get(code, 'unknown status')} (status {code})"
    if not reason or _NO_REASON.search(reason):
        return "the decoder gave no reason"
    return reason
