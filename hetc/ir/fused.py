"""Fused nodes: a base op (Conv, ConvTranspose, Gemm, MatMul, BatchNormalization) followed by an *epilogue* of
pointwise parts applied to its output in registers, written by the fusion pass (hetc.passes.fusion) and run as
one kernel.

Representation. A fused node keeps the base op's ``op_type`` and attributes, takes the domain
``FUSED_DOMAIN`` (so that nothing that runs ONNX can mistake it for the plain op) and lists its parts in the
string attribute ``epilogue``, e.g. ``["Add", "Clip min=0 max=6"]``. Its inputs are the base op's inputs
followed by one extra operand per binary part (a bias, a residual, a scale or a mask), in part order; its one
output is the last part's output. Every stage reads the parts from here: capability (each part must be
supported), the cost model (base FLOPs plus the epilogue's), the NPU/DSP kernels (the base kernel, then each
part's steps), the CPU path and ``to_onnx`` (the parts expanded back into ONNX nodes), Gantt labels.

Packed bias. A constant bias may travel inside its weight, so that one DMA brings both where two copies each
paid a DMA's latency (hetc.passes.fusion writes both forms; ``operands`` is the one statement of how a kernel
reads them):

* a MatMul's bias ``Add``: the part ``Add from='weight'`` (``EpiloguePart.packed``; a K tile's partial-sum Add
  may come before it) says the weight holds one row more than the base op reads, the bias;
* a Conv's own bias input: the attribute ``packed_bias`` (``PACKED_BIAS_ATTR``, the weight's dimensions after
  the output channel) says the weight is a matrix of one row per output channel, its weights then its bias,
  and the base op has no bias input of its own.

Each part is a short list of ONNX *steps* (``part_steps``): the one statement of what the part computes, used
both to run it with hetc's kernels and to write it back as ONNX nodes for onnxruntime.

Composite nodes. A normalisation, an attention or a Gelu recognised from its decomposed form
(hetc.passes.attention, hetc.passes.fusion) is a fused node whose ``op_type`` is the standard ONNX op of the
same meaning (``COMPOSITE_SINCE``: the opset that defines it), with that op's attributes and inputs, and the
op types it was made of in the string list attribute ``parts`` (refusals and ``hetc inspect`` quote them).
Every stage judges it as that standard op (``base_node``); it stays in the fused domain because the model's
opset may predate the op, so the CPU path runs it at the op's own opset and ``to_onnx`` writes it back
decomposed (hetc.ir.composite).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.ir.dtypes import np_dtype
from hetc.ir.graph import Node, Value

FUSED_DOMAIN = "hetc.fused"
EPILOGUE_ATTR = "epilogue"
# Base ops an epilogue may follow (default domain).
FUSABLE_BASE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"})
# Parts that read one extra operand (the fused node's next extra input).
BINARY_PARTS = frozenset({"Add", "Mul"})
UNARY_PARTS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "SiLU", "HardSwish", "Gelu"})
# Composite ops (standard ONNX ops a fused node may stand for) and the default-domain opset defining each.
COMPOSITE_SINCE: dict[str, int] = {"LayerNormalization": 17, "RMSNormalization": 23, "Attention": 23,
                                   "Gelu": 20}
# Composite ops hetc defines itself (no ONNX opset has them): always written back decomposed. ``TopKGate``: a
# mixture of experts' router, Softmax -> TopK -> one-hot mask -> masked probabilities renormalised
# (hetc.passes.router, hetc.ir.composite).
HETC_COMPOSITES: frozenset[str] = frozenset({"TopKGate"})
PARTS_ATTR = "parts"
# ``Add from='weight'``: the bias is the weight's last row (see the module docstring); MatMul's weight is input 1.
PACKED_FROM = "weight"
PACKED_WEIGHT_INPUT = 1
# A Conv whose weight carries its bias: [O, *dims] weights and [O] bias as one [O, prod(dims) + 1] matrix.
PACKED_BIAS_ATTR = "packed_bias"

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# A step operand: "x" (the part's input), "e" (its extra operand), an int k (step k's output), a float (a
# scalar constant of the running dtype) or None (an omitted optional input).
Operand = Union[str, int, float, None]
Step = tuple[str, dict[str, Any], tuple[Operand, ...]]


@dataclass(frozen=True)
class EpiloguePart:
    """One part of an epilogue: ``op`` (one of BINARY_PARTS | UNARY_PARTS) and its parameters."""

    op: str
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    @property
    def packed(self) -> bool:
        """A bias Add whose operand is the base op's weight's last row (see the module docstring)."""
        return self.param("from") == PACKED_FROM

    @property
    def binary(self) -> bool:
        """The part reads an extra input of the fused node (a packed bias reads the weight instead)."""
        return self.op in BINARY_PARTS and not self.packed

    def text(self) -> str:
        """The attribute form, e.g. "Clip min=0 max=6" (``parse_part`` reads it back)."""
        return " ".join([self.op] + [f"{k}={v!r}" if isinstance(v, str) else f"{k}={float(v)!r}"
                                     for k, v in self.params])


def parse_part(text: str) -> EpiloguePart:
    op, *pairs = text.split()
    params: list[tuple[str, Any]] = []
    for pair in pairs:
        key, _, raw = pair.partition("=")
        params.append((key, raw.strip("'\"") if raw[:1] in "'\"" else float(raw)))
    if op not in BINARY_PARTS | UNARY_PARTS:
        raise ValueError(f"unknown epilogue part '{text}'")
    return EpiloguePart(op, tuple(params))


def is_fused(node: Node) -> bool:
    return node.domain == FUSED_DOMAIN


def is_composite(node: Node) -> bool:
    """A fused node standing for a standard normalisation or attention op, or one of hetc's own composites
    (see the module docstring)."""
    return is_fused(node) and (node.op_type in COMPOSITE_SINCE or node.op_type in HETC_COMPOSITES)


def composite_parts(node: Node) -> list[str]:
    """The op types a composite node was made of, in the order they ran ([] for any other node)."""
    return [str(p) for p in node.attrs.get(PARTS_ATTR, [])] if is_composite(node) else []


def epilogue_of(node: Node) -> list[EpiloguePart]:
    """The parts of a fused node's epilogue, in order ([] for any other node)."""
    if not is_fused(node):
        return []
    return [parse_part(t) for t in node.attrs.get(EPILOGUE_ATTR, [])]


def base_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in (EPILOGUE_ATTR, PARTS_ATTR, PACKED_BIAS_ATTR)}


def base_input_count(n_inputs: int, parts: list[EpiloguePart]) -> int:
    return n_inputs - sum(p.binary for p in parts)


def has_packed_bias(parts: list[EpiloguePart]) -> bool:
    return any(part.packed for part in parts)


class Splitter:
    """How a packed weight is cut into weight and bias: numpy arrays by default; ``epilogue_onnx`` cuts value
    names with ONNX nodes, ``base_node`` shapes."""

    def last_row(self, packed: Any) -> tuple[Any, Any]:
        """A MatMul's: (the rows before the last, the last row)."""
        return packed[:-1], packed[-1]

    def channel_rows(self, packed: Any, dims: tuple[int, ...]) -> tuple[Any, Any]:
        """A Conv's: (each row's weights shaped [O, *dims], each row's last element [O]); views, no copy."""
        return packed[:, :-1].reshape(-1, *dims), packed[:, -1]


def packed_dims(attrs: dict[str, Any]) -> tuple[int, ...] | None:
    """A packed Conv's weight dimensions after the output channel, or None (its bias is not packed)."""
    dims = attrs.get(PACKED_BIAS_ATTR)
    return None if dims is None else tuple(int(d) for d in dims)


def operands(parts: list[EpiloguePart], dims: tuple[int, ...] | None, inputs: list[Any],
             split: Splitter = Splitter()) -> tuple[list[Any], list[Any]]:
    """A fused node's inputs as (the base op's inputs, each epilogue part's operand in part order, None for a
    unary part's), given its ``parts`` (``epilogue_of``) and ``dims`` (``packed_dims``): the one statement of
    where a base input or a part's operand comes from. A packed MatMul bias is the weight's last row, the base
    op reading the rows before it; a packed Conv's weight gives the base op its weight and its bias."""
    count = base_input_count(len(inputs), parts)
    base, extra = list(inputs[:count]), iter(inputs[count:])
    packed_row = None
    if has_packed_bias(parts):
        base[PACKED_WEIGHT_INPUT], packed_row = split.last_row(base[PACKED_WEIGHT_INPUT])
    if dims is not None:
        base[PACKED_WEIGHT_INPUT:PACKED_WEIGHT_INPUT + 1] = split.channel_rows(base[PACKED_WEIGHT_INPUT], dims)
    return base, [packed_row if part.packed else next(extra) if part.binary else None for part in parts]


class _ShapeSplitter(Splitter):
    """Cuts a packed weight's Value into Values of the weight's and the bias's shapes (views of the constant
    when it is one)."""

    def last_row(self, packed: Value) -> tuple[Value, Value]:
        w, b = (None, None) if packed.const is None else super().last_row(np.asarray(packed.const))
        return (Value(packed.name, packed.dtype, (packed.shape[0] - 1, *packed.shape[1:]), const=w),
                Value(packed.name, packed.dtype, tuple(packed.shape[1:]), const=b))

    def channel_rows(self, packed: Value, dims: tuple[int, ...]) -> tuple[Value, Value]:
        w, b = (None, None) if packed.const is None else super().channel_rows(np.asarray(packed.const), dims)
        return (Value(packed.name, packed.dtype, (packed.shape[0], *dims), const=w),
                Value(packed.name, packed.dtype, tuple(packed.shape[:1]), const=b))


def base_node(node: Node) -> Node:
    """The base op of a fused node as a plain node (its own inputs, the fused output): what capability and
    the FLOP formulas judge. ``node`` itself when it is not fused. A packed weight is seen as the weight (and,
    a Conv's, the bias input) it holds."""
    if not is_fused(node):
        return node
    inputs, _ = operands(epilogue_of(node), packed_dims(node.attrs), list(node.inputs), _ShapeSplitter())
    return Node(node.id, node.op_type, node.name, inputs, list(node.outputs), base_attrs(node.attrs), "")


def display_op(op_type: str, domain: str, attrs: dict[str, Any]) -> str:
    """"Conv+Add+Clip" for a fused node, the op type otherwise: labels in programs, Gantt charts, errors."""
    if domain != FUSED_DOMAIN:
        return op_type
    return "+".join([op_type] + [parse_part(t).op for t in attrs.get(EPILOGUE_ATTR, [])])


def node_label(node: Node) -> str:
    return display_op(node.op_type, node.domain, node.attrs)


def part_steps(part: EpiloguePart, opset: int) -> list[Step]:
    """What ``part`` computes, as ONNX steps (see ``Operand``). ``opset`` is the default domain's version."""
    op = part.op
    if op in BINARY_PARTS:
        return [(op, {}, ("x", "e"))]
    if op == "Clip":
        low, high = part.param("min"), part.param("max")
        if opset < 11:
            attrs = {k: float(v) for k, v in (("min", low), ("max", high)) if v is not None}
            return [("Clip", attrs, ("x",))]
        return [("Clip", {}, ("x", low, high))]
    if op == "LeakyRelu":
        return [("LeakyRelu", {"alpha": float(part.param("alpha", 0.01))}, ("x",))]
    if op == "SiLU":
        return [("Sigmoid", {}, ("x",)), ("Mul", {}, ("x", 0))]
    if op == "Gelu" and part.param("approximate", "none") == "tanh":
        return [("Mul", {}, ("x", "x")), ("Mul", {}, (0, "x")), ("Mul", {}, (1, 0.044715)), ("Add", {}, ("x", 2)),
                ("Mul", {}, (3, _SQRT_2_OVER_PI)), ("Tanh", {}, (4,)), ("Add", {}, (5, 1.0)),
                ("Mul", {}, ("x", 6)), ("Mul", {}, (7, 0.5))]
    if op == "Gelu":
        return [("Div", {}, ("x", _SQRT2)), ("Erf", {}, (0,)), ("Add", {}, (1, 1.0)), ("Mul", {}, ("x", 2)),
                ("Mul", {}, (3, 0.5))]
    return [(op, {}, ("x",))]   # Relu, Sigmoid, HardSwish


def part_ops(part: EpiloguePart) -> list[str]:
    """The ONNX ops a device must run to run ``part`` (capability asks for each)."""
    return sorted({op for op, _, _ in part_steps(part, 11)})


def run_epilogue(parts: list[EpiloguePart], acc: np.ndarray, part_operands: list[np.ndarray | None], opset: int,
                 run_step: Any) -> np.ndarray:
    """Apply ``parts`` to ``acc`` (the base op's result). ``part_operands`` are ``operands``'s second half;
    ``run_step(op, attrs, inputs)`` runs one ONNX op on numpy arrays (the device's own kernel); constants take
    ``acc``'s dtype."""
    for part, e in zip(parts, part_operands, strict=True):
        x, outs = acc, []
        for op, attrs, operands in part_steps(part, opset):
            args = [x if o == "x" else e if o == "e" else None if o is None else
                    outs[o] if isinstance(o, int) else np.asarray(o, dtype=x.dtype) for o in operands]
            outs.append(run_step(op, attrs, args))
        acc = outs[-1]
    return acc


def epilogue_onnx(op_type: str, attrs: dict[str, Any], input_names: list[str], output_name: str, dtype: str,
                  opset: int, prefix: str, input_specs: list[tuple[str, tuple[int, ...]] | None] | None = None
                  ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The fused node written back as ONNX: the base node then each part's steps, with scalar constants as
    initializers. ``input_names`` are the fused node's inputs ("" for an omitted one); ``prefix`` makes the
    intermediate names unique. A composite base op the opset predates is written decomposed, for which
    ``input_specs`` (the base inputs' dtypes and shapes) must be given."""
    parts = [parse_part(t) for t in attrs.get(EPILOGUE_ATTR, [])]
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    count = base_input_count(len(input_names), parts)
    base_inputs, part_operands = operands(parts, packed_dims(attrs), list(input_names),
                                          _OnnxSplitter(opset, f"{prefix}_packed", nodes, inits))
    while base_inputs and not base_inputs[-1]:
        base_inputs = base_inputs[:-1]
    from hetc.ir.onnx_export import make_attribute   # (onnx_export imports this module)
    current = f"{prefix}_base" if parts else output_name
    if op_type in HETC_COMPOSITES or (op_type in COMPOSITE_SINCE and opset < COMPOSITE_SINCE[op_type]):
        from hetc.ir.composite import decompose   # (composite imports this module)
        decomposed, decomposed_inits = decompose(op_type, base_attrs(attrs), base_inputs, current, dtype, opset, prefix,
                                 list(input_specs or [])[:count])
        nodes, inits = nodes + decomposed, inits + decomposed_inits
    else:
        base = helper.make_node(op_type, base_inputs, [current], name=prefix)
        base.attribute.extend(make_attribute(k, v) for k, v in sorted(base_attrs(attrs).items()))
        nodes.append(base)
    for p, (part, e) in enumerate(zip(parts, part_operands)):
        steps = part_steps(part, opset)
        step_names: list[str] = []
        for s, (op, step_attrs, step_operands) in enumerate(steps):
            last = p == len(parts) - 1 and s == len(steps) - 1
            out = output_name if last else f"{prefix}_p{p}_s{s}"
            ins = []
            for k, o in enumerate(step_operands):
                if o == "x":
                    ins.append(current)
                elif o == "e":
                    ins.append(e)
                elif o is None:
                    ins.append("")
                elif isinstance(o, int):
                    ins.append(step_names[o])
                else:
                    name = f"{prefix}_p{p}_s{s}_c{k}"
                    inits.append(numpy_helper.from_array(np.asarray(o, dtype=np_dtype(dtype)), name))
                    ins.append(name)
            node = helper.make_node(op, ins, [out], name=f"{prefix}_p{p}_s{s}")
            node.attribute.extend(make_attribute(k, v) for k, v in sorted(step_attrs.items()))
            nodes.append(node)
            step_names.append(out)
        current = step_names[-1]
    return nodes, inits


class _OnnxSplitter(Splitter):
    """Cuts a packed weight's name with Slice (and Reshape) nodes appended to ``nodes``; their output names."""

    def __init__(self, opset: int, prefix: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]):
        self.opset, self.prefix, self.nodes, self.inits = opset, prefix, nodes, inits

    def _slice(self, packed: str, name: str, start: int, end: int, axis: int) -> str:
        if self.opset < 10:   # Slice's bounds are attributes before opset 10
            self.nodes.append(helper.make_node("Slice", [packed], [name], name=name, starts=[start], ends=[end],
                                               axes=[axis]))
            return name
        bounds = [f"{name}_{k}" for k in ("starts", "ends", "axes")]
        self.inits += [numpy_helper.from_array(np.array([v], dtype=np.int64), n)
                       for n, v in zip(bounds, (start, end, axis))]
        self.nodes.append(helper.make_node("Slice", [packed, *bounds], [name], name=name))
        return name

    def _reshape(self, x: str, name: str, shape: tuple[int, ...]) -> str:
        self.inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{name}_shape"))
        self.nodes.append(helper.make_node("Reshape", [x, f"{name}_shape"], [name], name=name))
        return name

    def last_row(self, packed: str) -> tuple[str, str]:
        return (self._slice(packed, f"{self.prefix}_w", 0, -1, 0),
                self._slice(packed, f"{self.prefix}_b", -1, _END, 0))

    def channel_rows(self, packed: str, dims: tuple[int, ...]) -> tuple[str, str]:
        w = self._slice(packed, f"{self.prefix}_w2d", 0, -1, 1)
        b = self._slice(packed, f"{self.prefix}_b2d", -1, _END, 1)
        return self._reshape(w, f"{self.prefix}_w", (-1, *dims)), self._reshape(b, f"{self.prefix}_b", (-1,))


_END = int(np.iinfo(np.int64).max)
