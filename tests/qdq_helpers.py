"""Shared by the QDQ tests: tools/make_models.py as a module (its QDQ builders and the on-demand cache), and
the other tools the tests check."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from conftest import REPO


def make_models() -> ModuleType:
    """tools/make_models.py, imported once."""
    return tool("make_models")


def tool(name: str) -> ModuleType:
    """tools/<name>.py as a module, imported once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
