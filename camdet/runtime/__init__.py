"""The detector run in this process, outside Triton.

One runner abstraction (:mod:`.runners`) over ONNX Runtime and torch with CUDA graphs
(:mod:`.torch_graphs`).
"""
