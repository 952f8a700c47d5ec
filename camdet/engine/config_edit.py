"""The batch profile asked for on the command line, and rewriting a config's batching."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from camdet.engine.contract import (
    BatchProfile,
    DetectorContract,
    derive_profile,
    load_model_config,
    model_config_pb2_module,
)
from camdet.engine.errors import ContractError
from camdet.engine.files import atomic_write

logger = logging.getLogger(__name__)


def requested_profile(
    contract: DetectorContract, max_batch: int | None, opt_batch: int | None
) -> BatchProfile:
    """The profile asked for on the command line, defaulting to the config's.

    Args:
        contract: The config's contract.
        max_batch: Requested MAX batch, or ``None`` for the config's.
        opt_batch: Requested OPT batch, or ``None`` (the derived OPT, capped at ``max_batch``).
    """
    derived = contract.profile
    new_max = max_batch if max_batch is not None else derived.max
    new_opt = opt_batch if opt_batch is not None else min(derived.opt, new_max)
    return BatchProfile(1, new_opt, new_max)


def profile_mismatch(
    requested: BatchProfile, contract: DetectorContract, config_path: Path
) -> str | None:
    """Why ``requested`` disagrees with the config, or ``None`` if it agrees."""
    derived = contract.profile
    if requested == derived:
        return None
    return (
        f"requested profile {requested} disagrees with {config_path} (max_batch_size "
        f"{contract.max_batch_size}, preferred_batch_size {list(contract.preferred_batch_sizes)} "
        f"-> {derived}); pass --update-config to rewrite the config's batch settings"
    )


def preferred_sizes_for(profile: BatchProfile, current: Sequence[int]) -> list[int]:
    """Preferred batch sizes that make :func:`derive_profile` give back ``profile``.

    The current sizes up to OPT are kept and OPT is added, so OPT is the largest.
    """
    return sorted({p for p in current if p <= profile.opt} | {profile.opt})


_MAX_BATCH_RE = re.compile(r"^(\s*max_batch_size\s*:\s*)\d+", re.MULTILINE)
_PREFERRED_LIST_RE = re.compile(r"preferred_batch_size\s*:\s*\[[^\]]*\]")
_PREFERRED_SCALAR_RE = re.compile(r"^[ \t]*preferred_batch_size\s*:\s*\d+[ \t]*\n", re.MULTILINE)
_DYNAMIC_BATCHING_RE = re.compile(r"^([ \t]*)dynamic_batching\s*\{[ \t]*\n", re.MULTILINE)


def _set_preferred(text: str, sizes: Sequence[int]) -> str:
    listing = "preferred_batch_size: [ " + ", ".join(str(s) for s in sizes) + " ]"
    if _PREFERRED_LIST_RE.search(text):
        return _PREFERRED_LIST_RE.sub(listing, text, count=1)
    text = _PREFERRED_SCALAR_RE.sub("", text)
    match = _DYNAMIC_BATCHING_RE.search(text)
    if match:
        indent = match.group(1) + "  "
        return text[: match.end()] + f"{indent}{listing}\n" + text[match.end() :]
    return text.rstrip("\n") + f"\ndynamic_batching {{\n  {listing}\n}}\n"


def update_config_batching(config_path: Path, profile: BatchProfile) -> list[int]:
    """Rewrite a config's ``max_batch_size`` and ``preferred_batch_size`` for ``profile``.

    Only those two settings change; comments and layout are kept. The result is parsed
    back and must derive ``profile`` exactly before it replaces the file.

    Args:
        config_path: The ``config.pbtxt`` to rewrite in place.
        profile: The profile the config must describe afterwards.

    Returns:
        The new preferred batch sizes.

    Raises:
        ContractError: If the file has no ``max_batch_size`` line or the rewrite does not
            round-trip.
    """
    from google.protobuf import text_format

    text = Path(config_path).read_text()
    config = load_model_config(config_path)
    sizes = preferred_sizes_for(profile, config.dynamic_batching.preferred_batch_size)
    new_text, count = _MAX_BATCH_RE.subn(rf"\g<1>{profile.max}", text, count=1)
    if count != 1:
        raise ContractError(f"cannot update {config_path}", ["it has no max_batch_size line"])
    new_text = _set_preferred(new_text, sizes)
    check = text_format.Parse(new_text, model_config_pb2_module().ModelConfig())
    got = derive_profile(check.max_batch_size, check.dynamic_batching.preferred_batch_size)
    if got != profile:
        raise ContractError(
            f"cannot update {config_path}", [f"the rewritten config derives {got}, not {profile}"]
        )
    atomic_write(Path(config_path), new_text.encode())
    logger.info(
        "rewrote %s: max_batch_size %d, preferred_batch_size %s", config_path, profile.max, sizes
    )
    return sizes


def ensemble_batch_warnings(repository: Path, model_name: str, max_batch: int) -> list[str]:
    """Ensembles whose ``max_batch_size`` would exceed the detector's new one.

    Triton requires an ensemble's ``max_batch_size`` to be at most that of each step.
    """
    warnings = []
    for path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = load_model_config(path)
        except ContractError:
            continue  # another model's broken config is Triton's to report, not ours
        steps = {step.model_name for step in config.ensemble_scheduling.step}
        if (
            config.platform == "ensemble"
            and model_name in steps
            and config.max_batch_size > max_batch
        ):
            warnings.append(
                f"ensemble {config.name!r} has max_batch_size {config.max_batch_size} > "
                f"{model_name} max_batch_size {max_batch}; lower it in {path} (Triton requires "
                "an ensemble's max_batch_size to be at most each step's)"
            )
    return warnings
