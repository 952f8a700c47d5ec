"""The served ``preprocess`` model against the bare DALI pipeline, in one run.

    python -m camdet.perf.preprocess_ratio --input-data perf-data/preprocess.json --out r.json

Both decode and letterbox the same JPEG frames with the same production
``preprocess/1/dali.py``: *bare* feeds full batches to the pipeline in this process
(DALI's ceiling on this machine); *served* is perf_analyzer driving the ``preprocess``
model alone over gRPC at ``--concurrency`` requests of one frame each (the server's
dynamic batcher batches them). The ratio served/bare is the cost of serving: request
handling, batching and moving tensors between processes. Measurements alternate bare,
served, bare, so drift on the machine shows as a spread of the two bare numbers.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from camdet.perf import perf_analyzer
from camdet.perf.input_data import read_encoded_frames

from camdet.serving.repository import PRODUCTION_REPOSITORY
from camdet.steps.preprocess.pipeline import build_pipeline, load_pipeline_module, run_batch

logger = logging.getLogger(__name__)


def bare_images_per_s(
    frames: Sequence[bytes], batch: int, seconds: float, device_id: int | None
) -> float:
    """Images/s of the production pipeline fed full batches in this process."""
    module = load_pipeline_module(PRODUCTION_REPOSITORY / "preprocess" / "1" / "dali.py")
    pipe = build_pipeline(module, batch, num_threads=4, device_id=device_id)
    samples = [np.frombuffer(frames[i % len(frames)], np.uint8) for i in range(batch)]
    for _ in range(3):  # decoder and kernel start-up, outside the measurement
        run_batch(pipe, samples)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        outputs = run_batch(pipe, samples)
        done += batch
    # The last batch's results must exist before the clock stops.
    np.array(outputs[1].as_tensor())
    return done / (time.perf_counter() - start)


def served_images_per_s(
    url: str, input_data: Path, concurrency: int, seconds: float, out: Path
) -> float:
    """Images/s of the served ``preprocess`` model measured by perf_analyzer."""
    csv = out / f"preprocess_c{concurrency}.csv"
    done = perf_analyzer.run(
        [
            "-m", "preprocess", "-u", url, "-i", "grpc", "-b", "1",
            "--input-data", str(input_data),
            "--concurrency-range", str(concurrency),
            "--measurement-interval", str(int(seconds * 1000)),
            "-f", str(csv),
        ],
        timeout_s=seconds * 10 + 60,
    )  # fmt: skip
    rows = perf_analyzer.read_csv(csv) if csv.exists() else []
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"perf_analyzer failed:\n{done.stdout[-2000:]}")
    return float(rows[0]["Inferences/Second"])


def measure(
    url: str,
    input_data: Path,
    out: Path,
    batch: int = 64,
    concurrency: int = 128,
    seconds: float = 8.0,
    device_id: int | None = 0,
) -> dict[str, object]:
    """Bare, served, bare; the report with the ratio to the mean of the two bare runs."""
    frames = read_encoded_frames(input_data)
    bare = [bare_images_per_s(frames, batch, seconds, device_id)]
    served = served_images_per_s(url, input_data, concurrency, seconds, out)
    bare.append(bare_images_per_s(frames, batch, seconds, device_id))
    ratio = served / float(np.mean(bare))
    return {
        "bare_batch": batch,
        "bare_images_per_s": bare,
        "served_concurrency": concurrency,
        "served_images_per_s": served,
        "served_over_bare": ratio,
    }


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet perf preprocess-ratio`` alone, for ``python -m camdet.perf.preprocess_ratio``."""


@app.command()
def preprocess_ratio(
    input_data: Annotated[
        Path, typer.Option(help="perf_analyzer input data of preprocess (preprocess.json).")
    ],
    url: Annotated[
        str | None,
        typer.Option(help="gRPC endpoint of a running server.", show_default="start one"),
    ] = None,
    batch: Annotated[int, typer.Option(help="Bare batch size.")] = 64,
    concurrency: Annotated[int, typer.Option(help="Served requests in flight.")] = 128,
    seconds: Annotated[float, typer.Option(help="Seconds per measurement.")] = 8.0,
    cpu: Annotated[bool, typer.Option("--cpu", help="Bare pipeline on the CPU.")] = False,
    out: Annotated[Path, typer.Option(help="JSON report path.")] = Path("preprocess_ratio.json"),
) -> None:
    """The served preprocess model against the bare DALI pipeline, in one run.

    Starts a portable server unless --url is given, measures, prints and writes the report.
    """
    logging.basicConfig(level=logging.INFO)
    device_id = None if cpu else 0
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    if url:
        report = measure(url, input_data, folder, batch, concurrency, seconds, device_id)
    else:
        from camdet.serving.server import Ports, serve

        with (
            tempfile.TemporaryDirectory() as tmp,
            serve(PRODUCTION_REPOSITORY, Ports.free(), portable=True, workdir=Path(tmp)) as server,
        ):
            report = measure(
                server.grpc_url, input_data, folder, batch, concurrency, seconds, device_id
            )
    print(json.dumps(report, indent=2))
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    app(prog_name="python -m camdet.perf.preprocess_ratio")
