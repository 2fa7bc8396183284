"""hetc: compile ONNX models for a heterogeneous CPU + NPU + DSP chip.

    import hetc
    result = hetc.compile("models/tiny_cnn.onnx", "bundle/", target="edge-soc", validate=True)
    sim = hetc.simulate("bundle/")
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from hetc.errors import HetcError  # noqa: E402

_API = {"compile", "simulate", "validate", "validate_bundle", "load_bundle", "BuildOptions", "BuildResult"}


def __getattr__(name: str) -> Any:
    # The API pulls in onnxruntime, OR-Tools and matplotlib; import it on first use so `hetc --version`
    # and `import hetc.ir` stay fast.
    if name in _API:
        from hetc import api
        return getattr(api, name)
    raise AttributeError(f"module 'hetc' has no attribute '{name}'")


__all__ = ["__version__", "HetcError", *sorted(_API)]
