"""The project's scripts as ``camdet`` subcommand groups: ``detector``, ``track``, ``perf``.

Each script is a module with its own typer ``app``, run as ``python -m MODULE`` too (the
commands in README.md, perf/README.md and the model card); here they are named, and
imported only when one runs (:mod:`camdet.cli.lazy`).
"""

from __future__ import annotations

from camdet.cli.lazy import Script, lazy_group

detector_app = lazy_group(
    {
        "train": Script("camdet.detector.train", "Train the demo detector on synthetic frames."),
        "export": Script(
            "camdet.detector.export", "Export trained weights to ONNX and verify the file."
        ),
        "evaluate": Script(
            "camdet.detector.evaluate", "COCO mAP of the detector on held-out synthetic frames."
        ),
        "precision": Script(
            "camdet.detector.precision_eval",
            "mAP of the FP32/FP16/INT8 conversions, and detector images/s.",
        ),
    },
    help="Train, export and evaluate the demo detector.",
)

track_app = lazy_group(
    {
        "evaluate": Script(
            "camdet.tracking.evaluate",
            "IDF1, MOTA and identity switches of the detector plus ByteTrack on rendered clips.",
        ),
    },
    help="The tracker's quality on rendered clips.",
)

perf_app = lazy_group(
    {
        "input-data": Script(
            "camdet.perf.input_data",
            "perf_analyzer input-data JSON from real frames for the ensemble and each step.",
        ),
        "video-input-data": Script(
            "camdet.perf.video_input_data",
            "perf_analyzer input data for detect_video: one stream of access units a camera.",
        ),
        "soak": Script(
            "camdet.perf.soak", "Many cameras at a fixed rate for a long time: failures, RSS."
        ),
        "memory-fuzz": Script(
            "camdet.perf.memory_fuzz", "Does the server's RSS come back after bad inputs?"
        ),
        "decoder-refusals": Script(
            "camdet.perf.decoder_refusals",
            "Does the decoder refuse any frame that validate lets through?",
        ),
        "video-throughput": Script(
            "camdet.perf.video_throughput", "Decode throughput of the per-camera decoders."
        ),
        "gpu-parity": Script(
            "camdet.perf.gpu_parity",
            "Where GPU results differ from CPU results, step by step, and the mAP it costs.",
        ),
        "multi-gpu": Script(
            "camdet.perf.multi_gpu",
            "One server on GPU 0 vs one per GPU vs one on every GPU, one run.",
        ),
    },
    help="Measurements beyond `camdet bench`: input data, soak, fuzz, parity, several GPUs.",
)
