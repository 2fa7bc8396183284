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

Packed bias. A MatMul's bias Add may read its operand from the weight itself: the part ``Add from='weight'``
(``EpiloguePart.packed``; a K tile's partial-sum Add may come before it) says the weight input holds one row
more than the base op reads, the bias. Weight and bias are then one constant, so one DMA brings both where two copies each paid
a DMA's latency (hetc.passes.fusion writes it; ``operands`` is the one statement of how a kernel reads it).

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
from typing import Any, Callable, Union

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
    return {k: v for k, v in attrs.items() if k not in (EPILOGUE_ATTR, PARTS_ATTR)}


def base_input_count(n_inputs: int, parts: list[EpiloguePart]) -> int:
    return n_inputs - sum(p.binary for p in parts)


def has_packed_bias(parts: list[EpiloguePart]) -> bool:
    return any(part.packed for part in parts)


def _last_row(weight: Any) -> tuple[Any, Any]:
    return weight[:-1], weight[-1]


def operands(parts: list[EpiloguePart], inputs: list[Any],
             split_rows: Callable[[Any], tuple[Any, Any]] = _last_row) -> tuple[list[Any], list[Any]]:
    """A fused node's inputs as (the base op's inputs, each epilogue part's operand in part order, None for a
    unary part's): the one statement of where a part's operand comes from. A packed bias is the weight's last
    row, and the base op reads the rows before it: ``split_rows(weight)`` gives (rows before, last row); the
    default slices an array."""
    count = base_input_count(len(inputs), parts)
    base, extra = list(inputs[:count]), iter(inputs[count:])
    packed_row = None
    if has_packed_bias(parts):
        base[PACKED_WEIGHT_INPUT], packed_row = split_rows(base[PACKED_WEIGHT_INPUT])
    return base, [packed_row if part.packed else next(extra) if part.binary else None for part in parts]


def base_node(node: Node) -> Node:
    """The base op of a fused node as a plain node (its own inputs, the fused output): what capability and
    the FLOP formulas judge. ``node`` itself when it is not fused. A packed weight is seen without its bias
    row."""
    if not is_fused(node):
        return node
    parts = epilogue_of(node)
    count = base_input_count(len(node.inputs), parts)
    inputs = list(node.inputs[:count])
    if has_packed_bias(parts):
        w = inputs[PACKED_WEIGHT_INPUT]
        assert w is not None
        inputs[PACKED_WEIGHT_INPUT] = Value(w.name, w.dtype, (w.shape[0] - 1, *w.shape[1:]),
                                            const=None if w.const is None else np.asarray(w.const)[:-1])
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
    base_inputs, part_operands = operands(
        parts, list(input_names), lambda weight: _sliced_rows(weight, opset, f"{prefix}_packed", nodes, inits))
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


def _sliced_rows(weight: str, opset: int, prefix: str, nodes: list[onnx.NodeProto],
                 inits: list[onnx.TensorProto]) -> tuple[str, str]:
    """Slice nodes (appended to ``nodes``) splitting a packed weight into its rows before the last and its last
    row; the names of the two."""
    names = [f"{prefix}_w", f"{prefix}_b"]
    for name, (start, end) in zip(names, ((0, -1), (-1, np.iinfo(np.int64).max))):
        if opset < 10:   # Slice's bounds are attributes before opset 10
            node = helper.make_node("Slice", [weight], [name], name=name, starts=[start], ends=[end], axes=[0])
        else:
            bounds = [f"{name}_{k}" for k in ("starts", "ends", "axes")]
            inits += [numpy_helper.from_array(np.array([v], dtype=np.int64), n)
                      for n, v in zip(bounds, (start, end, 0))]
            node = helper.make_node("Slice", [weight, *bounds], [name], name=name)
        nodes.append(node)
    return names[0], names[1]
