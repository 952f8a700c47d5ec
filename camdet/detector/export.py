"""Export trained weights to ONNX in ultralytics' layout, then verify the file.

    python -m camdet.detector.export WEIGHTS --out model.onnx [--input-size 640x384]

The graph has ultralytics' names: input ``images`` float32 ``[batch, 3, H, W]``
(dynamic batch; ``H x W`` the input size, default ``CAMDET_INPUT_SIZE``) and output
``output0`` float32 ``[batch, 4 + nc, N]`` (N = 8400 at 640x640, 5040 at 640x384: the
head is anchor-free, so the same weights serve any multiple of 32). BatchNorms are
folded into the convolutions first. The file is checked with ``onnx.checker`` and, where
onnxruntime is installed, its outputs are compared with torch's at batch 1 and 3.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from camdet.constants import INPUT_SHAPE, format_input_size, parse_input_size
from camdet.detector.model import Detector, load_weights

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "output0"
DEFAULT_OPSET = 17
STRIDES = (8, 16, 32)


def num_anchors(shape: tuple[int, int] = INPUT_SHAPE) -> int:
    """Anchors of an input of ``(height, width)``: 80^2 + 40^2 + 20^2 = 8400 at 640x640."""
    return sum((shape[0] // s) * (shape[1] // s) for s in STRIDES)


class ExportCheckError(RuntimeError):
    """The exported file does not have the promised contract or numbers."""


def export_onnx(
    model: Detector, path: Path, opset: int = DEFAULT_OPSET, shape: tuple[int, int] = INPUT_SHAPE
) -> None:
    """Write ``model`` as ONNX with a dynamic batch dimension and static ``[4 + nc, N]``.

    Args:
        model: The detector (any mode; it is fused and put in eval mode here).
        path: Destination ``.onnx`` file.
        opset: ONNX opset (>= 17).
        shape: Input ``(height, width)`` in pixels; the anchors are traced for it.
    """
    import onnx

    model = model.float().cpu().fuse()
    dummy = torch.zeros(1, 3, *shape)
    model(dummy)  # builds the anchor buffers, so the traced graph holds them as constants
    # The TorchScript exporter: the dynamo one needs onnxscript, which is not installed
    # everywhere this runs; for this plain conv net both give the same graph. Its
    # deprecation and tracer warnings (anchors become constants: intended, the spatial
    # size is fixed) would only bury the check results.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    # The exporter names the static output dims symbolically; pin them so consumers
    # (TensorRT profiles, Triton's config checks) read [batch, 4 + nc, N].
    graph = onnx.load(str(path))
    dims = graph.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(dims[1:], (4 + model.num_classes, num_anchors(shape)), strict=True):
        dim.Clear()
        dim.dim_value = value
    onnx.save(graph, str(path))


def check_onnx(path: Path, num_classes: int, shape: tuple[int, int] = INPUT_SHAPE) -> None:
    """Validate the graph and its I/O contract.

    Args:
        path: The exported file.
        num_classes: Expected class rows.
        shape: Input ``(height, width)`` it was exported for.

    Raises:
        ExportCheckError: If names, dtypes or shapes differ from the contract.
    """
    import onnx

    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    expected = {
        INPUT_NAME: ["batch", 3, *shape],
        OUTPUT_NAME: ["batch", 4 + num_classes, num_anchors(shape)],
    }
    for value in [*graph.graph.input, *graph.graph.output]:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        if value.name not in expected or shape != expected[value.name]:
            raise ExportCheckError(
                f"{value.name}: shape {shape}, expected {expected.get(value.name)}"
            )
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            raise ExportCheckError(f"{value.name}: element type {tensor.elem_type}, expected FLOAT")


def compare_with_torch(
    path: Path,
    model: Detector,
    batch_sizes: tuple[int, ...] = (1, 3),
    atol: float = 1e-3,
    shape: tuple[int, int] = INPUT_SHAPE,
) -> float:
    """Run the file with onnxruntime (CPU) and torch on the same random inputs.

    Args:
        path: The exported file.
        model: The fp32 detector it came from.
        batch_sizes: Batches to try (exercises the dynamic dimension).
        atol: Largest accepted absolute difference (input pixels for boxes, scores).
        shape: Input ``(height, width)`` in pixels.

    Returns:
        The largest absolute difference seen.

    Raises:
        ExportCheckError: If a difference exceeds ``atol`` or a shape differs.
    """
    from camdet.runtime.sessions import onnx_session

    session = onnx_session(path)
    model = model.float().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in batch_sizes:
        images = torch.rand(batch, 3, *shape, generator=generator)
        (onnx_out,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
        with torch.no_grad():
            torch_out = model(images).numpy()
        if onnx_out.shape != torch_out.shape or onnx_out.dtype != np.float32:
            raise ExportCheckError(f"batch {batch}: onnxruntime {onnx_out.shape} {onnx_out.dtype}")
        worst = max(worst, float(np.abs(onnx_out - torch_out).max()))
    if worst > atol:
        raise ExportCheckError(f"onnxruntime and torch differ by {worst:.3g} > {atol}")
    return worst


def export_weights(
    weights: Path,
    out: Path,
    opset: int = DEFAULT_OPSET,
    compare: bool = True,
    shape: tuple[int, int] = INPUT_SHAPE,
) -> None:
    """Export a weights file to ONNX and verify it.

    Args:
        weights: File written by :func:`camdet.detector.model.save_weights`.
        out: Destination ``.onnx`` file.
        opset: ONNX opset (>= 17).
        compare: Also compare onnxruntime with torch (needs onnxruntime).
        shape: Input ``(height, width)`` in pixels.
    """
    if opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    model = load_weights(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out, opset, shape)
    check_onnx(out, model.num_classes, shape)
    logger.info("wrote %s (%.1f MB), contract checked", out, out.stat().st_size / 1e6)
    if compare:
        worst = compare_with_torch(out, load_weights(weights), shape=shape)
        logger.info("onnxruntime vs torch at batch 1 and 3: max abs diff %.2e", worst)


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
"""``camdet detector export`` alone, for ``python -m camdet.detector.export``."""


@app.command()
def export(
    weights: Annotated[
        Path, typer.Argument(help="Weights written by camdet.detector.train.", exists=True)
    ],
    out: Annotated[Path, typer.Option(help="Destination .onnx file.")],
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = DEFAULT_OPSET,
    compare: Annotated[
        bool,
        typer.Option("--compare/--no-compare", help="Compare onnxruntime's outputs with torch's."),
    ] = True,
    input_size: Annotated[
        str, typer.Option(help="WIDTHxHEIGHT of the graph's input (CAMDET_INPUT_SIZE).")
    ] = format_input_size(INPUT_SHAPE),
) -> None:
    """Export trained weights to ONNX in ultralytics' layout, then verify the file."""
    try:
        shape = parse_input_size(input_size)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--input-size") from error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    export_weights(weights, out, opset, compare=compare, shape=shape)


if __name__ == "__main__":
    app(prog_name="python -m camdet.detector.export")
