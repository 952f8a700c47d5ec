"""Where the repository's files are, seen from the tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = REPO / "model_repository"
DEMO_ONNX = PRODUCTION / "detector" / "1" / "model.onnx"
