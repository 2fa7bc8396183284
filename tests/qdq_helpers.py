"""Shared by the QDQ tests: tools/make_models.py as a module (its QDQ builders and the on-demand cache)."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from conftest import REPO


def make_models() -> ModuleType:
    """tools/make_models.py, imported once."""
    if "make_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("make_models", REPO / "tools" / "make_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["make_models"]
