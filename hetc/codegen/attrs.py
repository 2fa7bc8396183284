"""Node attributes as plain JSON, and back.

Every attribute becomes ``{"type": T, "value": V}`` so that decoding never has to guess (a list of ints and
a list of floats that happen to be whole numbers must stay distinct). Tensors are stored as base64 ``.npy``
(dtype and shape included), GraphProto bodies as base64 serialised protobuf.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from hetc.errors import BundleError


def _strings_tensor(array: np.ndarray) -> dict[str, Any]:
    """A tensor of strings (object dtype: no .npy without pickling): its shape and items, bytes items as
    base64 (``bytes: true``) so that either kind comes back as it was."""
    items = array.reshape(-1).tolist()
    if all(isinstance(x, bytes) for x in items) and items:
        return {"shape": list(array.shape), "bytes": True,
                "items": [base64.b64encode(x).decode("ascii") for x in items]}
    return {"shape": list(array.shape), "items": [str(x) for x in items]}


def _strings_from(value: dict[str, Any]) -> np.ndarray:
    items = [base64.b64decode(x) for x in value["items"]] if value.get("bytes") else list(value["items"])
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(value["shape"])


def _npy_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _npy_from_b64(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def _is_graph(value: Any) -> bool:
    return type(value).__name__ == "GraphProto"


def _float(x: float) -> float | str:
    # JSON has no NaN/Infinity; keep them as strings Python's float() reads back.
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def encode_attr(value: Any) -> dict[str, Any]:
    """One attribute value as a tagged JSON object."""
    if isinstance(value, (bool, np.bool_)):
        return {"type": "int", "value": int(value)}
    if isinstance(value, (int, np.integer)):
        return {"type": "int", "value": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"type": "float", "value": _float(value)}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, bytes):
        return {"type": "bytes", "value": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "US":
            return {"type": "string_tensor", "value": _strings_tensor(value)}
        return {"type": "tensor", "value": _npy_b64(value)}
    if _is_graph(value):
        return {"type": "graph", "value": base64.b64encode(value.SerializeToString()).decode("ascii")}
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items:
            return {"type": "ints", "value": []}
        first = items[0]
        if isinstance(first, np.ndarray):
            return {"type": "tensors", "value": [_npy_b64(a) for a in items]}
        if _is_graph(first):
            return {"type": "graphs",
                    "value": [base64.b64encode(g.SerializeToString()).decode("ascii") for g in items]}
        if all(isinstance(x, (int, np.integer, bool, np.bool_)) for x in items):
            return {"type": "ints", "value": [int(x) for x in items]}
        if all(isinstance(x, (int, float, np.integer, np.floating)) for x in items):
            return {"type": "floats", "value": [_float(x) for x in items]}
        if all(isinstance(x, str) for x in items):
            return {"type": "strings", "value": items}
        if all(isinstance(x, bytes) for x in items):
            return {"type": "bytess", "value": [base64.b64encode(x).decode("ascii") for x in items]}
    raise BundleError(f"cannot serialise attribute value of type {type(value).__name__}: {value!r:.60}; "
                      "hetc bundles store ints, floats, strings, tensors, graphs and lists of them")


def decode_attr(tagged: dict[str, Any]) -> Any:
    """The plain Python value of a tagged attribute (as the IR holds it)."""
    kind, value = tagged["type"], tagged["value"]
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "string":
        return value
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "tensor":
        return _npy_from_b64(value)
    if kind == "string_tensor":
        return _strings_from(value)
    if kind in ("graph", "graphs"):
        from onnx import GraphProto
        def parse(text: str) -> GraphProto:
            g = GraphProto()
            g.ParseFromString(base64.b64decode(text))
            return g
        return parse(value) if kind == "graph" else [parse(v) for v in value]
    if kind == "ints":
        return [int(x) for x in value]
    if kind == "floats":
        return [float(x) for x in value]
    if kind == "strings":
        return list(value)
    if kind == "bytess":
        return [base64.b64decode(x) for x in value]
    if kind == "tensors":
        return [_npy_from_b64(v) for v in value]
    raise BundleError(f"unknown attribute type '{kind}' in a program; the bundle was written by a newer hetc")


def encode_attrs(attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: encode_attr(attrs[name]) for name in sorted(attrs)}


def decode_attrs(encoded: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: decode_attr(tagged) for name, tagged in encoded.items()}
