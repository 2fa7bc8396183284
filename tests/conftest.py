"""Shared fixtures: the real models that ship inside the onnx wheel, and the ones in models/."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))
REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"


def light_model_path(name: str) -> Path:
    """Path of one of onnx's light models, e.g. ``light_model_path("resnet50")``."""
    return LIGHT_DIR / f"light_{name}.onnx"


@pytest.fixture(params=LIGHT_MODELS)
def light_model(request: pytest.FixtureRequest) -> Path:
    return light_model_path(request.param)
