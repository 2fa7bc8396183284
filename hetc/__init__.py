"""hetc: compile ONNX models for a heterogeneous CPU + NPU + DSP chip."""
from __future__ import annotations

__version__ = "0.1.0"

from hetc.errors import HetcError  # noqa: E402

__all__ = ["__version__", "HetcError"]
