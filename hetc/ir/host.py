"""Host value types: the ONNX types a value held by the host CPU in its own heap may have.

A *device tensor* (a plain ``Value``) has a dtype, a static shape and a byte layout; it is planned in a memory
and moved by DMA. A *host value* has none of that: it is a Python object the host CPU keeps outside every
planned memory, and only CPU tasks touch it. Sequences, optionals, string tensors and tensors whose shape is
known only at run time (the outputs of Unique and everything computed from them) are host values.

``HostType`` is the ONNX type such a value carries, enough to print it, write it into an ONNX model
(``to_type_proto``) and read it back from the bundle (``str``/``parse_host_type`` round-trip):

    tensor(string)[2,3]      a string tensor of static shape
    tensor(float32)[?]       a rank-1 float tensor whose length is known at run time
    tensor(int64)            a tensor of unknown rank
    seq(tensor(float32)[2,3])
    optional(seq(tensor(int64)[?]))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from hetc.ir.dtypes import dtype_from_onnx, dtype_to_onnx, np_dtype

Dims = tuple[int | None, ...]

_KINDS = ("tensor", "sequence", "optional")
_SPELLING = {"sequence": "seq", "optional": "optional"}


@dataclass(frozen=True)
class HostType:
    """The ONNX type of a host value: a tensor (element dtype, partial shape) or a sequence/optional of one."""

    kind: str                          # "tensor" | "sequence" | "optional"
    dtype: str | None = None           # tensor: IR element dtype; None when ONNX leaves it open
    shape: Dims | None = None          # tensor: dims, None for a dim known at run time; None: unknown rank
    elem: "HostType | None" = None     # sequence/optional: the element type (None: unknown)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown host type kind '{self.kind}'")

    # ------------------------------------------------------------------ queries
    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape of a tensor type whose every dim is known, else None."""
        if self.kind != "tensor" or self.shape is None or any(d is None for d in self.shape):
            return None
        return tuple(int(d) for d in self.shape)  # type: ignore[arg-type]

    @property
    def element_dtype(self) -> str | None:
        """The dtype of the innermost tensor."""
        if self.kind == "tensor":
            return self.dtype
        return self.elem.element_dtype if self.elem is not None else None

    def numel(self) -> int:
        """Elements of a static tensor type (1 otherwise): what the cost model counts for it."""
        shape = self.static_shape
        return math.prod(shape) if shape is not None else 1

    # ------------------------------------------------------------------ text form
    def __str__(self) -> str:
        if self.kind == "tensor":
            text = f"tensor({self.dtype or '?'})"
            if self.shape is not None:
                text += "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"
            return text
        inner = str(self.elem) if self.elem is not None else "?"
        return f"{_SPELLING[self.kind]}({inner})"

    # ------------------------------------------------------------------ ONNX
    def to_type_proto(self) -> onnx.TypeProto:
        if self.kind == "tensor":
            shape = None if self.shape is None else [d if d is not None else None for d in self.shape]
            proto = helper.make_tensor_type_proto(dtype_to_onnx(self.dtype) if self.dtype else 0, shape)
            return proto
        inner = self.elem.to_type_proto() if self.elem is not None else onnx.TypeProto()
        if self.kind == "sequence":
            return helper.make_sequence_type_proto(inner)
        return helper.make_optional_type_proto(inner)

    def value_info(self, name: str) -> onnx.ValueInfoProto:
        return helper.make_value_info(name, self.to_type_proto())


def tensor_host_type(dtype: str | None, shape: Dims | None) -> HostType:
    return HostType("tensor", dtype=dtype, shape=None if shape is None else tuple(shape))


def host_type_from_proto(proto: onnx.TypeProto) -> HostType | None:
    """The HostType of an ONNX type; None for a kind hetc does not hold (maps, sparse tensors) or an empty
    proto."""
    kind = proto.WhichOneof("value")
    if kind == "tensor_type":
        tensor = proto.tensor_type
        dtype = dtype_from_onnx(tensor.elem_type) if tensor.elem_type else None
        shape = (tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
                 if tensor.HasField("shape") else None)
        return HostType("tensor", dtype=dtype, shape=shape)
    if kind == "sequence_type":
        elem = proto.sequence_type.elem_type
        return HostType("sequence", elem=host_type_from_proto(elem) if elem.WhichOneof("value") else None)
    if kind == "optional_type":
        elem = proto.optional_type.elem_type
        return HostType("optional", elem=host_type_from_proto(elem) if elem.WhichOneof("value") else None)
    return None


def parse_host_type(text: str) -> HostType:
    """The inverse of ``str(HostType)``; ValueError on malformed text."""
    parsed, rest = _parse(text.strip())
    if rest:
        raise ValueError(f"trailing text '{rest}' in host type '{text}'")
    return parsed


def _parse(text: str) -> tuple[HostType, str]:
    for spelling, kind in (("seq(", "sequence"), ("optional(", "optional")):
        if text.startswith(spelling):
            body = text[len(spelling):]
            if body.startswith("?)"):
                return HostType(kind), body[2:]
            elem, rest = _parse(body)
            if not rest.startswith(")"):
                raise ValueError(f"missing ')' in host type near '{rest}'")
            return HostType(kind, elem=elem), rest[1:]
    if not text.startswith("tensor("):
        raise ValueError(f"not a host type: '{text}'")
    close = text.index(")")
    dtype_text = text[len("tensor("):close]
    rest = text[close + 1:]
    shape: Dims | None = None
    if rest.startswith("["):
        end = rest.index("]")
        dims = rest[1:end]
        shape = tuple(None if d == "?" else int(d) for d in dims.split(",")) if dims else ()
        rest = rest[end + 1:]
    return HostType("tensor", dtype=None if dtype_text == "?" else dtype_text, shape=shape), rest


# ---------------------------------------------------------------------------------------------- Python values
def conform_host_value(obj: Any, host: HostType, name: str) -> Any:
    """``obj`` in the canonical form of a value of type ``host`` — a list of arrays for a sequence, None or
    the element for an optional, an ``object`` array of ``str`` for a string tensor, an array of the dtype
    otherwise — or a ValueError saying what is wrong. Shapes inside a sequence are not checked: ONNX types
    a sequence's elements loosely (inference often fixes a shape the elements do not keep, and runtimes do
    not check it)."""
    if host.kind == "optional":
        return None if obj is None else conform_host_value(obj, host.elem, name) if host.elem is not None else obj
    if host.kind == "sequence":
        if not isinstance(obj, (list, tuple)):
            raise ValueError(f"'{name}' must be a list of arrays (a {host}), not {type(obj).__name__}")
        elem = _any_shape(host.elem) if host.elem is not None else None
        return [conform_host_value(x, elem, name) if elem is not None else x for x in obj]
    if obj is None or (isinstance(obj, (list, tuple)) and host.dtype != "string"):
        raise ValueError(f"'{name}' must be an array (a {host}), not {type(obj).__name__}")
    array = np.asarray(obj)
    if host.dtype == "string":
        if array.dtype.kind not in "OUS":
            raise ValueError(f"'{name}' must hold strings (a {host}), not {array.dtype}")
        array = np.vectorize(_text, otypes=[object])(array) if array.size else array.astype(object)
    elif host.dtype is not None and array.dtype != np_dtype(host.dtype):
        raise ValueError(f"'{name}' is {array.dtype}, its type is {host}; convert it")
    if host.shape is not None and (len(array.shape) != len(host.shape) or any(
            d is not None and d != a for d, a in zip(host.shape, array.shape))):
        raise ValueError(f"'{name}' has shape {list(array.shape)}, its type is {host}")
    return array


def _any_shape(host: HostType) -> HostType:
    if host.kind == "tensor":
        return HostType("tensor", dtype=host.dtype)
    return HostType(host.kind, elem=_any_shape(host.elem) if host.elem is not None else None)


def _text(x: Any) -> str:
    return x.decode("utf-8", errors="surrogateescape") if isinstance(x, bytes) else str(x)


def describe_host_value(obj: Any) -> str:
    """A short description of a host object for messages and reports: ``list[3]``, ``None``, ``string[2]``."""
    if obj is None:
        return "None"
    if isinstance(obj, (list, tuple)):
        return f"list[{len(obj)}]"
    array = np.asarray(obj)
    return f"{'string' if array.dtype == object else array.dtype}[{'x'.join(map(str, array.shape)) or '()'}]"
