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

from collections import Counter
from collections.abc import Iterable
from typing import Annotated

import numpy as np
import typer
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


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf decoder-refusals`` alone, for ``python -m camdet.perf.decoder_refusals``."""


@app.command()
def decoder_refusals(
    inputs: Annotated[int, typer.Option(help="Fuzz inputs per seed.")] = 3000,
    seeds: Annotated[str, typer.Option(help="Comma-separated fuzz seeds.")] = "0,1,2",
    device: Annotated[
        int | None, typer.Option(help="CUDA device of the DALI pipeline.", show_default="CPU")
    ] = None,
) -> None:
    """Does any frame that passes validate make the decoder refuse it?

    Exit 1 if the decoder refused any input that validate let through.
    """
    outcomes: Counter = Counter()
    for seed in (int(s) for s in seeds.split(",")):
        outcomes += classify(fuzz_inputs(inputs, seed), device)
    for (kind, outcome), count in sorted(outcomes.items()):
        print(f"{kind:16s} {outcome:24s} {count:6d}")
    missed = sum(n for (_, outcome), n in outcomes.items() if outcome == REFUSED_BY_DECODER)
    print(f"validated but refused by the decoder: {missed} of {sum(outcomes.values())}")
    raise typer.Exit(int(missed > 0))


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.decoder_refusals")
