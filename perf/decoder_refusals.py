"""Issue #12: does any frame that passes ``validate`` make the decoder refuse it?

    python -m camdet.perf.decoder_refusals --inputs 3000 --seeds 0,1,2

The production DALI backend decodes a batch at once and fails every request of the batch
when its decoder refuses one frame, so ``validate`` (:func:`camdet.steps.validate.image_check.
check_encoded_image`) must refuse, by its headers, every frame the decoder would. This
sends the memory fuzz's inputs (:mod:`camdet.perf.fuzz_inputs`) through both, one frame
at a time: ``validate``'s checks, then the production ``preprocess/1/dali.py`` pipeline
(on the CPU, or the GPU with ``--device 0``). It prints, per kind of input, how many
``validate`` refused, how many decoded and how many the decoder refused although
``validate`` let them through, and exits 1 when there is any of the last.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from camdet.perf.fuzz_inputs import FuzzInput, fuzz_inputs

from camdet.serving.repository import PRODUCTION_REPOSITORY, read_config
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch
from camdet.steps.validate.image_check import ImageCheckError, check_encoded_image

VALIDATE_CONFIG = PRODUCTION_REPOSITORY / "validate" / "config.pbtxt"

REFUSED_BY_VALIDATE = "refused by validate"
DECODED = "decoded"
REFUSED_BY_DECODER = "refused by the decoder"


def validate_limits() -> dict[str, int]:
    """``max_pixels`` and ``max_side`` as the production ``validate`` config sets them."""
    parameters = read_config(VALIDATE_CONFIG).parameters
    return {key: int(parameters[key].string_value) for key in ("max_pixels", "max_side")}


def classify(items: Iterable[FuzzInput], device_id: int | None = None) -> Counter:
    """``{(kind, outcome): count}`` of the inputs (request-parameter inputs skipped)."""
    module = load_pipeline_module(PRODUCTION_REPOSITORY / "preprocess" / "1" / "dali.py")
    pipe = build_pipeline(module, batch_size=1, num_threads=1, device_id=device_id)
    limits = validate_limits()
    outcomes: Counter = Counter()
    for item in items:
        if item.parameters is not None:
            continue
        try:
            check_encoded_image(item.data, **limits)
        except ImageCheckError:
            outcomes[item.kind, REFUSED_BY_VALIDATE] += 1
            continue
        try:
            run_batch(pipe, [np.frombuffer(item.data, np.uint8)])
        except RuntimeError:
            outcomes[item.kind, REFUSED_BY_DECODER] += 1
        else:
            outcomes[item.kind, DECODED] += 1
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    """Classify the fuzz inputs; 1 if the decoder refused any that validate let through."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=3000, help="fuzz inputs per seed")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated fuzz seeds")
    parser.add_argument("--device", type=int, default=None, help="CUDA device (default CPU)")
    args = parser.parse_args(argv)
    outcomes: Counter = Counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        outcomes += classify(fuzz_inputs(args.inputs, seed), args.device)
    for (kind, outcome), count in sorted(outcomes.items()):
        print(f"{kind:16s} {outcome:24s} {count:6d}")
    missed = sum(n for (_, outcome), n in outcomes.items() if outcome == REFUSED_BY_DECODER)
    print(f"validated but refused by the decoder: {missed} of {sum(outcomes.values())}")
    return int(missed > 0)


if __name__ == "__main__":
    raise SystemExit(main())
