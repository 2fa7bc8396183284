"""Shape overrides: ``--shape x=1x3x224x224`` replaces a graph input's whole shape, ``--dim batch=1``
resolves a symbolic dimension everywhere it appears. Afterwards every graph input must be static."""
from __future__ import annotations

import re
from typing import Iterable

import onnx

from hetc.errors import ShapeError

_SHAPE_TEXT = re.compile(r"^\s*([^=]+?)\s*=\s*(\d+(?:\s*[xX,]\s*\d+)*)?\s*$")
_DIM_TEXT = re.compile(r"^\s*([^=]+?)\s*=\s*(\d+)\s*$")


def parse_shape_overrides(texts: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``["x=1x3x224x224", "s="]`` -> ``{"x": (1, 3, 224, 224), "s": ()}`` (an empty shape is a scalar)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        match = _SHAPE_TEXT.match(text)
        if match is None:
            raise ShapeError(f"malformed shape override '{text}'; write NAME=DIMxDIMx..., "
                             "e.g. --shape x=1x3x224x224")
        dims = match.group(2) or ""
        shapes[match.group(1)] = tuple(int(d) for d in re.split(r"\s*[xX,]\s*", dims) if d != "")
    return shapes


def parse_dim_overrides(texts: Iterable[str]) -> dict[str, int]:
    """``["batch=1"]`` -> ``{"batch": 1}``."""
    dims: dict[str, int] = {}
    for text in texts:
        match = _DIM_TEXT.match(text)
        if match is None:
            raise ShapeError(f"malformed dimension override '{text}'; write NAME=SIZE, e.g. --dim batch=1")
        dims[match.group(1)] = int(match.group(2))
    return dims


def runtime_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (older IR versions list weights as inputs too)."""
    initialized = {t.name for t in graph.initializer}
    return [v for v in graph.input if v.name not in initialized]


def apply_overrides(graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...]] | None,
                    dims: dict[str, int] | None) -> None:
    """Rewrite the declared shapes of ``graph`` in place."""
    inputs = {v.name: v for v in runtime_inputs(graph)}
    for name, shape in (shapes or {}).items():
        if name not in inputs:
            raise ShapeError(f"--shape names unknown input '{name}'; the model's inputs are "
                             f"{', '.join(repr(n) for n in inputs) or 'none'}")
        tensor_type = inputs[name].type.tensor_type
        if tensor_type.HasField("shape") and len(tensor_type.shape.dim) != len(shape):
            raise ShapeError(f"--shape {name}={_format(shape)} has rank {len(shape)} but input '{name}' "
                             f"has rank {len(tensor_type.shape.dim)} ({_describe(tensor_type.shape)}); "
                             "give one size per dimension")
        if any(d < 0 for d in shape):
            raise ShapeError(f"--shape {name}={_format(shape)} has a negative size")
        tensor_type.ClearField("shape")
        tensor_type.shape.SetInParent()
        for size in shape:
            tensor_type.shape.dim.add().dim_value = size
    if shapes:
        _forget_derived_shapes(graph)
    if dims:
        _resolve_symbols(graph, dims)


def _forget_derived_shapes(graph: onnx.GraphProto) -> None:
    """Drop the shapes the model declares for outputs and intermediates: they were derived from the old
    input shapes and would contradict what shape inference derives from the new ones."""
    del graph.value_info[:]
    for info in graph.output:
        if info.type.HasField("tensor_type"):
            info.type.tensor_type.ClearField("shape")


def _resolve_symbols(graph: onnx.GraphProto, dims: dict[str, int]) -> None:
    seen: set[str] = set()
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not info.type.HasField("tensor_type"):
            continue
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                seen.add(dim.dim_param)
                if dim.dim_param in dims:
                    dim.dim_value = dims[dim.dim_param]  # setting the oneof clears dim_param
    unknown = sorted(set(dims) - seen)
    if unknown:
        raise ShapeError(f"--dim names unknown dimension {', '.join(repr(u) for u in unknown)}; the model's "
                         f"symbolic dimensions are {', '.join(repr(s) for s in sorted(seen)) or 'none'}")


def is_static_dim(dim: onnx.TensorShapeProto.Dimension) -> bool:
    """A dimension with a size. Some exporters (old paddle2onnx) write -1 as the size of a dynamic dimension,
    and onnxruntime accepts any size there, so a negative size is dynamic too."""
    return dim.HasField("dim_value") and dim.dim_value >= 0


def require_static_inputs(graph: onnx.GraphProto) -> None:
    """Raise a ShapeError naming the first dynamic input dimension and the override that fixes it."""
    for info in runtime_inputs(graph):
        if not info.type.HasField("tensor_type"):
            continue  # non-tensor inputs are reported when the IR is built
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            raise ShapeError(f"input '{info.name}' has no declared shape; fix it with "
                             f"--shape {info.name}=1x3x224x224 (one size per dimension)")
        dims = tensor_type.shape.dim
        for index, dim in enumerate(dims):
            if is_static_dim(dim):
                continue
            example = "x".join(str(d.dim_value) if is_static_dim(d) else "1" for d in dims)
            if dim.dim_param:
                raise ShapeError(f"input '{info.name}' has a dynamic dimension '{dim.dim_param}' (dim {index}); "
                                 f"fix it with --dim {dim.dim_param}=1 or --shape {info.name}={example}")
            raise ShapeError(f"input '{info.name}' has an unnamed dynamic dimension (dim {index}); "
                             f"fix it with --shape {info.name}={example}")


def _format(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _describe(shape: onnx.TensorShapeProto) -> str:
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim)
