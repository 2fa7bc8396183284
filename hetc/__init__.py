"""hetc: compile ONNX models for a heterogeneous CPU + NPU + DSP chip.

    import hetc
    result = hetc.compile("models/tiny_cnn.onnx", "bundle/", target="edge-soc", validate=True)
    sim = hetc.simulate("bundle/")
"""
from __future__ import annotations

import sys
import types
from typing import Any

from hetc.errors import HetcError
from hetc.version import __version__

_API = {"compile", "simulate", "validate", "validate_bundle", "load_bundle", "BuildOptions", "BuildResult"}


def __getattr__(name: str) -> Any:
    # The API pulls in onnxruntime, OR-Tools and matplotlib; import it on first use so `hetc --version`
    # and `import hetc.ir` stay fast.
    if name in _API:
        from hetc import api
        return getattr(api, name)
    raise AttributeError(f"module 'hetc' has no attribute '{name}'")


class _Package(types.ModuleType):
    """The package object: importing the subpackage ``hetc.validate`` would otherwise rebind the name
    ``hetc.validate`` from the API function to that subpackage, for every later caller."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return  # the subpackage stays importable (`from hetc.validate import ...` reads sys.modules)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["__version__", "HetcError", *sorted(_API)]
