"""Build the detector's TensorRT plan from its ONNX export: a library, one idea a module.

- :mod:`~camdet.engine.contract`: what ``detector/config.pbtxt`` and the labels say.
- :mod:`~camdet.engine.onnx_checks`, :mod:`~camdet.engine.layout`: the ONNX file against it.
- :mod:`~camdet.engine.config_edit`: batch profiles and rewriting a config's batching.
- :mod:`~camdet.engine.precision`, :mod:`~camdet.engine.calibration`: FP16/INT8 conversion
  with ModelOpt on frames through the project's letterbox (no TensorRT needed).
- :mod:`~camdet.engine.network`, :mod:`~camdet.engine.builder`,
  :mod:`~camdet.engine.progress`, :mod:`~camdet.engine.inspection`: the strongly typed
  TensorRT build (TensorRT 10 and 11) and what the plan holds.
- :mod:`~camdet.engine.sidecar`: ``model.plan.json`` and whether a plan is stale.
- :mod:`~camdet.engine.install`: ``camdet model add``, a YOLO ONNX file into a repository.

``build_engine.py`` at the repository root is the command line over this package; the
server imports :mod:`camdet.engine.sidecar` for its stale-plan check. Errors are typed
(:mod:`~camdet.engine.errors`); nothing here exits the process.
"""
