"""QDQ lowering: float ops between DequantizeLinear and QuantizeLinear become integer ops, as an NPU compiler
lowers a quantized model.

A QDQ model (onnxruntime's quantizer, QNN, most exporters) writes every quantized op as
``DQ(x_q) [, DQ(w_q), DQ(b_q)] -> op -> [Relu | Clip] -> Q``. The rules below (hetc.passes.patterns) anchor at
the float op's output, read only by the Q (through a Relu or Clip), and rewrite the op in place:

| float op | integer op (inputs as the standard ops take them) |
|---|---|
| Conv | QLinearConv, bias int32 at scale ``x_scale * w_scale`` |
| Gemm (transA 0, alpha = beta = 1) | Reshape to 1x1 -> QLinearConv -> Reshape (a fully connected layer as a 1x1 convolution keeps the int32 bias, which QLinearMatMul has no input for) |
| MatMul | QLinearMatMul (``b`` per column or per tensor) |
| Add, Mul | com.microsoft QLinearAdd, QLinearMul |
| Concat | Concat of the integers when every input has the output's scale and zero point, else com.microsoft QLinearConcat |
| AveragePool, GlobalAveragePool | com.microsoft QLinearAveragePool, QLinearGlobalAveragePool |
| data movement (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, MaxPool, GlobalMaxPool, DepthToSpace, SpaceToDepth, Resize nearest) | the same op on the integers, when the input's scale and zero point equal the output's |

Per-tensor or per-channel weights (axis = output channel), int8 or uint8, symmetric or asymmetric. A Relu or
Clip between the op and the Q becomes a clamp on the quantized value (``Q(max(y, 0)) = max(Q(y), zp)``,
``Q(clip(y, lo, hi)) = clip(Q(y), Q(lo), Q(hi))``, exact since rounding and saturation are monotonic): nothing
when the clamp is the type's own range (the quantizer's usual choice), else an integer Clip. Weights stay int8
constants (the DequantizeLinear that read them is left unread and swept by dead-code elimination).

What does not match stays float with its Q/DQ, and ``explain_unlowered`` says why (the passes stage prints it).
Each integer op computes what onnxruntime's kernel computes; onnxruntime's QDQ evaluation (dequantise, compute in
float, quantise) can differ from it by one unit of the output step where the float sum lands near a rounding
tie: hetc.validate.integer judges that.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hetc.ir import Graph, Node, Value
from hetc.passes.patterns import Match, Rule, match_at, pattern, run_rules
from hetc.passes.rewrite import unique_name

DQ, Q = "DequantizeLinear", "QuantizeLinear"
CONTRIB = "com.microsoft"
INTEGER_TYPES = frozenset({"int8", "uint8"})
DATA_MOVEMENT = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "MaxPool",
                           "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "Resize", "Identity"})
_CONTRIB_POOLS = {"AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool"}
_CONTRIB_BINARY = {"Add": "QLinearAdd", "Mul": "QLinearMul"}
_POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")
QDQ_NOTE = "hetc.qdq"   # graph.metadata key of the lowering's one-line summary
_ids = itertools.count(1 << 30)   # ids of inserted nodes: unique until optimize() renumbers


@dataclass(frozen=True)
class Quant:
    """How a tensor is quantized: ``q`` (the integers), its scale and zero-point values (None: omitted) and
    the constants behind them, ``axis`` for a per-channel scale."""

    q: Value
    scale: Value
    zero_point: Value | None
    scale_array: np.ndarray
    zero_array: np.ndarray
    axis: int

    @property
    def per_tensor(self) -> bool:
        return self.scale_array.size == 1

    def same_as(self, other: "Quant") -> bool:
        return (self.per_tensor and other.per_tensor and self.q.dtype == other.q.dtype
                and float(self.scale_array.reshape(-1)[0]) == float(other.scale_array.reshape(-1)[0])
                and int(self.zero_array.reshape(-1)[0]) == int(other.zero_array.reshape(-1)[0]))


def _const(v: Value | None) -> np.ndarray | None:
    return None if v is None or not v.is_const else np.asarray(v.const)


def dequantized(value: Value | None) -> Quant | str:
    """The quantisation of ``value`` when a DequantizeLinear with constant parameters produced it, else why not."""
    node = value.producer if value is not None else None
    if node is None or node.op_type != DQ or node.domain != "":
        return f"input '{value.name if value is not None else ''}' does not come from a DequantizeLinear"
    if node.attrs.get("block_size", 0):
        return f"{DQ} '{node.name}' quantizes in blocks; the integer ops take one scale per tensor or channel"
    q, scale, zero = (list(node.inputs) + [None, None])[:3]
    scale_array, zero_array = _const(scale), _const(zero)
    if scale_array is None or (zero is not None and zero_array is None):
        return f"{DQ} '{node.name}' has a scale or zero point computed at run time"
    if zero_array is None:
        zero_array = np.zeros(scale_array.shape, np.dtype(q.dtype) if q.dtype in INTEGER_TYPES else np.int32)
    axis = int(node.attrs.get("axis", 1))
    return Quant(q, scale, zero, scale_array.astype(np.float32), zero_array, axis % max(len(q.shape), 1))


def quantized(match: Match) -> Quant | str:
    """The quantisation of the match's output: its QuantizeLinear must be per tensor."""
    node = match.nodes["q"]
    scale, zero = match.captured["ys"], match.captured.get("yz")
    scale_array, zero_array = _const(scale), _const(zero)
    if scale_array is None or (zero is not None and zero_array is None):
        return f"{Q} '{node.name}' has a scale or zero point computed at run time"
    if scale_array.size != 1:
        return f"{Q} '{node.name}' quantizes per channel; integer ops write one scale per tensor"
    out = node.outputs[0]
    if out.dtype not in INTEGER_TYPES:
        return f"{Q} '{node.name}' writes {out.dtype}; the integer ops write int8 or uint8"
    if zero_array is None:
        zero_array = np.zeros((), np.dtype(out.dtype))
    return Quant(out, scale, zero, scale_array.astype(np.float32), zero_array, 0)


@dataclass
class Lowering:
    """What a rule's builder writes: the op (type, domain, inputs, attributes) replacing the float op, the
    integer Clip bounds after it (None: no clamp needed), and Reshapes around it (Gemm as a 1x1 convolution)."""

    op_type: str
    domain: str
    inputs: list[Value | None]
    attrs: dict
    clamp: tuple[int, int] | None = None
    reshape_in: tuple[int, ...] | None = None
    reshape_out: tuple[int, ...] | None = None


def _type_range(dtype: str) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def _clamp(match: Match, out: Quant) -> tuple[int, int] | None:
    """The integer bounds a Relu or Clip in the match becomes, None when they are the type's whole range."""
    act = match.nodes.get("r")
    if act is None:
        return None
    low, high = _type_range(out.q.dtype)
    scale, zero = float(out.scale_array.reshape(-1)[0]), int(out.zero_array.reshape(-1)[0])
    if act.op_type == "Relu":
        bounds = (0.0, None)
    else:
        bounds = tuple(match.captured.get(k) if match.captured.get(k) is not None else act.attrs.get(k)
                       for k in ("min", "max"))
    quantize = lambda v: int(np.clip(np.round(np.float32(v) / np.float32(scale)) + zero, low, high))  # noqa: E731
    q_low = low if bounds[0] is None else quantize(bounds[0])
    q_high = high if bounds[1] is None else quantize(bounds[1])
    return None if (q_low, q_high) == (low, high) else (q_low, q_high)


def _plan(match: Match) -> Lowering | str:
    """The lowering of the match (the float op is the anchor's producer), or why there is none."""
    op = match.anchor.producer
    if op is None or op.domain != "" or len(op.outputs) != 1:
        return "the QuantizeLinear's input is not a standard one-output op"
    out = quantized(match)
    if isinstance(out, str):
        return out
    planner = _PLANNERS.get(op.op_type) or (_plan_data_movement if op.op_type in DATA_MOVEMENT else None)
    if planner is None:
        return f"{op.op_type} has no integer form in hetc's QDQ lowering"
    lowering = planner(op, out)
    if isinstance(lowering, str):
        return lowering
    lowering.clamp = _clamp(match, out)
    return lowering


def _activation_input(op: Node, index: int = 0) -> Quant | str:
    x = dequantized(op.inputs[index])
    if isinstance(x, str):
        return x
    if not x.per_tensor:
        return f"{op.op_type} '{op.name}' reads an activation quantized per channel"
    if x.q.dtype not in INTEGER_TYPES:
        return f"{op.op_type} '{op.name}' reads {x.q.dtype} activations; the integer ops take int8 or uint8"
    return x


def _zero_point(quant: Quant, like: Value) -> Value:
    """The quantisation's zero-point value, made explicit when the DequantizeLinear omitted it."""
    if quant.zero_point is not None:
        return quant.zero_point
    return _new_const(f"{like.name}_zero_point", quant.zero_array.astype(np.dtype(like.dtype)))


def _new_const(name: str, array: np.ndarray) -> Value:
    from hetc.ir import dtype_from_numpy

    array = np.asarray(array)
    return Value(name, dtype_from_numpy(array.dtype), tuple(array.shape), const=array)


def _weight(op: Node, channels: int, axis: int) -> Quant | str:
    w = dequantized(op.inputs[1])
    if isinstance(w, str):
        return w
    if not w.q.is_const:
        return f"{op.op_type} '{op.name}' has a weight computed at run time"
    if w.q.dtype not in INTEGER_TYPES:
        return f"{op.op_type} '{op.name}' has {w.q.dtype} weights; the integer ops take int8 or uint8"
    if not w.per_tensor and (w.axis != axis or w.scale_array.size != channels):
        return f"{op.op_type} '{op.name}' quantizes its weight along axis {w.axis}, not the output channels"
    return w


def _bias(op: Node, x: Quant, w: Quant, channels: int) -> Value | None | str:
    """The int32 bias at scale x_scale * w_scale: the quantizer's own when its scale is that product, else the
    float bias rounded to it."""
    b = op.inputs[2] if len(op.inputs) > 2 else None
    if b is None:
        return None
    product = (x.scale_array.reshape(-1)[0] * w.scale_array.reshape(-1)).astype(np.float32)
    source = dequantized(b)
    if isinstance(source, Quant) and source.q.is_const and source.q.dtype == "int32":
        if not source.zero_array.any() and np.allclose(source.scale_array.reshape(-1), product, rtol=1e-6, atol=0):
            return source.q
        values = (source.q.const.astype(np.float64) - source.zero_array) * source.scale_array
    elif b.is_const:
        values = np.asarray(b.const, np.float64)
    else:
        return f"{op.op_type} '{op.name}' has a bias computed at run time"
    values = np.broadcast_to(values.reshape(-1), (channels,))
    rounded = np.round(values / product.astype(np.float64))
    if np.abs(rounded).max(initial=0) >= 2 ** 31:
        return f"{op.op_type} '{op.name}' has a bias beyond int32 at scale x_scale * w_scale"
    return _new_const(f"{b.name}_int32", rounded.astype(np.int32))


def _same_type(op: Node, x: Quant, out: Quant) -> str | None:
    if x.q.dtype != out.q.dtype:
        return (f"{op.op_type} '{op.name}' reads {x.q.dtype} and writes {out.q.dtype}; onnxruntime's integer "
                "kernels write the input's type")
    return None


def _conv_inputs(x: Quant, w: Quant, out: Quant, w_q: Value, bias: Value | None) -> list[Value | None]:
    w_zero = w.zero_point if w.zero_point is not None else _new_const(
        f"{w.q.name}_zero_point", np.zeros(w.scale_array.shape, np.dtype(w.q.dtype)))
    return [x.q, x.scale, _zero_point(x, x.q), w_q, w.scale, w_zero, out.scale, _zero_point(out, out.q), bias]


def _plan_conv(op: Node, out: Quant) -> Lowering | str:
    x = _activation_input(op)
    if isinstance(x, str):
        return x
    channels = op.outputs[0].shape[1]
    w = _weight(op, channels, 0)
    if isinstance(w, str):
        return w
    bias = _bias(op, x, w, channels)
    if isinstance(bias, str):
        return bias
    mismatch = _same_type(op, x, out)
    if mismatch:
        return mismatch
    return Lowering("QLinearConv", "", _conv_inputs(x, w, out, w.q, bias), dict(op.attrs))


def _plan_gemm(op: Node, out: Quant) -> Lowering | str:
    """Gemm as a 1x1 QLinearConv on [N, K, 1, 1]: the weight transposed (when transB = 0) to [M, K, 1, 1]."""
    if op.attrs.get("transA", 0) or op.attrs.get("alpha", 1.0) != 1.0 or op.attrs.get("beta", 1.0) != 1.0:
        return f"Gemm '{op.name}' has transA, alpha or beta: not a plain fully connected layer"
    x = _activation_input(op)
    if isinstance(x, str):
        return x
    trans_b = int(op.attrs.get("transB", 0))
    n, m = op.outputs[0].shape
    w = _weight(op, m, 0 if trans_b else 1)
    if isinstance(w, str):
        return w
    bias = _bias(op, x, w, m)
    if isinstance(bias, str):
        return bias
    mismatch = _same_type(op, x, out)
    if mismatch:
        return mismatch
    matrix = w.q.const if trans_b else w.q.const.T
    w_q = _new_const(f"{w.q.name}_1x1", np.ascontiguousarray(matrix).reshape(m, -1, 1, 1))
    inputs = _conv_inputs(x, w, out, w_q, bias)
    return Lowering("QLinearConv", "", inputs, {"kernel_shape": [1, 1]}, reshape_in=(n, x.q.shape[1], 1, 1),
                    reshape_out=(n, m))


def _plan_matmul(op: Node, out: Quant) -> Lowering | str:
    a = _activation_input(op)
    if isinstance(a, str):
        return a
    b = dequantized(op.inputs[1])
    if isinstance(b, str):
        return b
    if b.q.dtype not in INTEGER_TYPES:
        return f"MatMul '{op.name}' reads {b.q.dtype}; QLinearMatMul takes int8 or uint8"
    if not b.per_tensor and (not b.q.is_const or len(b.q.shape) != 2 or b.axis != 1):
        return f"MatMul '{op.name}' quantizes b along axis {b.axis}; QLinearMatMul takes one scale per column"
    mismatch = _same_type(op, a, out)
    if mismatch:
        return mismatch
    b_zero = b.zero_point if b.zero_point is not None else _new_const(
        f"{b.q.name}_zero_point", np.zeros(b.scale_array.shape, np.dtype(b.q.dtype)))
    inputs = [a.q, a.scale, _zero_point(a, a.q), b.q, b.scale, b_zero, out.scale, _zero_point(out, out.q)]
    return Lowering("QLinearMatMul", "", inputs, {})


def _plan_binary(op: Node, out: Quant) -> Lowering | str:
    a, b = _activation_input(op, 0), _activation_input(op, 1)
    for side in (a, b):
        if isinstance(side, str):
            return side
    if len({a.q.dtype, b.q.dtype, out.q.dtype}) != 1:
        return f"{op.op_type} '{op.name}' mixes int8 and uint8"
    inputs = [a.q, a.scale, _zero_point(a, a.q), b.q, b.scale, _zero_point(b, b.q), out.scale,
              _zero_point(out, out.q)]
    return Lowering(_CONTRIB_BINARY[op.op_type], CONTRIB, inputs, {})


def _plan_concat(op: Node, out: Quant) -> Lowering | str:
    parts = [_activation_input(op, i) for i in range(len(op.inputs))]
    for part in parts:
        if isinstance(part, str):
            return part
    if any(p.q.dtype != out.q.dtype for p in parts):
        return f"Concat '{op.name}' mixes int8 and uint8"
    if all(p.same_as(out) for p in parts):
        return Lowering("Concat", "", [p.q for p in parts], dict(op.attrs))
    inputs = [out.scale, _zero_point(out, out.q)]
    for p in parts:
        inputs += [p.q, p.scale, _zero_point(p, p.q)]
    return Lowering("QLinearConcat", CONTRIB, inputs, dict(op.attrs))


def _plan_pool(op: Node, out: Quant) -> Lowering | str:
    x = _activation_input(op)
    if isinstance(x, str):
        return x
    mismatch = _same_type(op, x, out)
    if mismatch:
        return mismatch
    attrs = {k: v for k, v in op.attrs.items() if k in _POOL_ATTRS}
    if op.op_type == "GlobalAveragePool":
        attrs["channels_last"] = 0
    inputs = [x.q, x.scale, _zero_point(x, x.q), out.scale, _zero_point(out, out.q)]
    return Lowering(_CONTRIB_POOLS[op.op_type], CONTRIB, inputs, attrs)


def _plan_data_movement(op: Node, out: Quant) -> Lowering | str:
    x = _activation_input(op)
    if isinstance(x, str):
        return x
    mode = op.attrs.get("mode", "nearest")
    if op.op_type == "Resize" and (mode.decode() if isinstance(mode, bytes) else str(mode)) != "nearest":
        return f"Resize '{op.name}' interpolates ({op.attrs.get('mode')}): not data movement"
    if not x.same_as(out):
        return (f"{op.op_type} '{op.name}' changes the quantisation (scale {x.scale_array.reshape(-1)[0]:.6g} -> "
                f"{out.scale_array.reshape(-1)[0]:.6g}): not pure data movement")
    return Lowering(op.op_type, "", [x.q, *op.inputs[1:]], dict(op.attrs))


_PLANNERS: dict[str, Callable[[Node, Quant], Lowering | str]] = {
    "Conv": _plan_conv, "Gemm": _plan_gemm, "MatMul": _plan_matmul, "Add": _plan_binary, "Mul": _plan_binary,
    "Concat": _plan_concat, "AveragePool": _plan_pool, "GlobalAveragePool": _plan_pool,
}


def _build(graph: Graph, match: Match) -> list[Node]:
    """Rewrite the float op in place as its integer op writing the Q's output (through the clamp and the
    Reshapes); the driver removes the matched Q (and Relu/Clip)."""
    plan = _plan(match)
    assert isinstance(plan, Lowering)
    op, out = match.anchor.producer, match.output
    added: list[Node] = []
    inputs = list(plan.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    for value in inputs:   # constants the plan made (zero points, int32 biases, 1x1 weights) get unique names
        if value is not None and value.is_const and graph.values.get(value.name) is not value:
            value.name = unique_name(graph, value.name)
            graph.values[value.name] = value
    if plan.reshape_in is not None:
        flat = Value(unique_name(graph, f"{inputs[0].name}_4d"), inputs[0].dtype, plan.reshape_in)
        shape = _new_const(unique_name(graph, f"{op.name}_shape_in"), np.asarray(plan.reshape_in, np.int64))
        added.append(Node(next(_ids), "Reshape", f"{op.name}_to_1x1", [inputs[0], shape], [flat]))
        inputs[0] = flat
    result = out
    if plan.reshape_out is not None or plan.clamp is not None:
        result = Value(unique_name(graph, f"{out.name}_int"), out.dtype,
                       (*plan.reshape_out, 1, 1) if plan.reshape_out is not None else out.shape)
    op.op_type, op.domain, op.inputs, op.attrs, op.outputs = plan.op_type, plan.domain, inputs, plan.attrs, [result]
    if plan.domain == CONTRIB:
        graph.opset.setdefault(CONTRIB, 1)
    if plan.reshape_out is not None:
        target = out if plan.clamp is None else Value(unique_name(graph, f"{out.name}_2d"), out.dtype, out.shape)
        shape = _new_const(unique_name(graph, f"{op.name}_shape_out"), np.asarray(plan.reshape_out, np.int64))
        added.append(Node(next(_ids), "Reshape", f"{op.name}_from_1x1", [result, shape], [target]))
        result = target
    if plan.clamp is not None:
        low, high = (_new_const(unique_name(graph, f"{out.name}_{k}"), np.asarray(v, np.dtype(out.dtype)))
                     for k, v in zip(("min", "max"), plan.clamp))
        added.append(Node(next(_ids), "Clip", f"{op.name}_clamp", [result, low, high], [out]))
    return added


def _lowerable(match: Match) -> bool:
    return isinstance(_plan(match), Lowering)


_Q_TOKENS = ["?ys", "?yz?"]
QDQ_RULES: list[Rule] = [
    Rule("op -> Q", pattern(("QuantizeLinear", ["x", *_Q_TOKENS], "q")), _lowerable, _build),
    Rule("op -> Relu -> Q", pattern(("Relu", ["x"], "r"), ("QuantizeLinear", ["r", *_Q_TOKENS], "q")),
         _lowerable, _build),
    Rule("op -> Clip -> Q", pattern(("Clip", ["x", "#min?", "#max?"], "r"),
                                    ("QuantizeLinear", ["r", *_Q_TOKENS], "q")), _lowerable, _build),
]


def run_lower_qdq(graph: Graph) -> int:
    """Lower in place; returns the number of rewrites. Records what stayed float in ``graph.metadata``
    (``QDQ_NOTE``) for the build to print."""
    if not any(n.op_type == Q and n.domain == "" for n in graph.nodes):
        return 0
    count = sum(run_rules(graph, QDQ_RULES).values())
    kept = explain_unlowered(graph)
    graph.metadata[QDQ_NOTE] = summarize(count, kept)
    return count



def explain_unlowered(graph: Graph) -> dict[str, str]:
    """Float ops that a QuantizeLinear reads (directly or through a Relu/Clip), by node name, with why each
    stays float."""
    outputs = {v.name for v in graph.outputs}
    reasons: dict[str, str] = {}
    for node in graph.nodes:
        if node.op_type in (Q, DQ) or len(node.outputs) != 1 or node.domain != "":
            continue
        value = node.outputs[0]
        readers = value.consumers
        if not any(r.op_type == Q or (r.op_type in ("Relu", "Clip") and any(c.op_type == Q for c in
                                                                           r.outputs[0].consumers))
                   for r in readers):
            continue
        why = None
        for rule in QDQ_RULES:
            match = match_at(rule.pattern, value, outputs)
            if match is not None:
                plan = _plan(match)
                why = plan if isinstance(plan, str) else None
                break
        name = node.name or value.name
        reasons[name] = why or f"{node.op_type} '{name}': its output is read by more than its QuantizeLinear " \
                                "(or is a graph output), so the float value must exist"
    return reasons


def summarize(lowered: int, kept: dict[str, str]) -> str:
    """One line for the build: how many QDQ groups became integer ops and why the others stayed float."""
    if not kept:
        return f"int8: {lowered} QDQ groups lowered to integer ops"
    first = "; ".join(list(kept.values())[:3])
    return f"int8: {lowered} QDQ groups lowered to integer ops, {len(kept)} kept float ({first})"


def lower_qdq(graph: Graph) -> Graph:
    """A copy of ``graph`` with its QDQ groups lowered."""
    result = graph.copy()
    run_lower_qdq(result)
    return result
