"""Work of one node: arithmetic operations (``node_flops``) and bytes it must touch (``node_bytes``).

Conventions (docs/targets.md, "Cost model"):
* a multiply-accumulate is 2 operations, any other add, multiply, compare or select is 1;
* a division or square root is ``DIV_OPS`` operations and a transcendental (exp, log, tanh, erf, sin...) is
  ``TRANSCENDENTAL_OPS``, the price of computing it on a vector unit without a dedicated instruction;
* an op without a formula here does ``DEFAULT_OPS_PER_ELEMENT`` per element of its largest operand;
* bytes are each distinct input read once plus each output written once, except that view ops move nothing
  (the planner aliases them in place) and Gather/Slice read only the part they keep.
"""
from __future__ import annotations

import math
from functools import cache
from typing import Callable

from hetc.ir import Node, Value, itemsize
from hetc.ir.fused import base_node, epilogue_of, is_fused, part_steps
from hetc.target.ops import is_view, view_copy_reason

# Reciprocal estimate + one Newton-Raphson step + the multiply (how SIMD units without a fast divider do it).
DIV_OPS = 4
# Range reduction and reconstruction (~2) plus a degree-5 minimax polynomial by Horner (5 FMAs = 10 ops).
TRANSCENDENTAL_OPS = 12
# Anything without a formula below: one operation per element of its largest operand.
DEFAULT_OPS_PER_ELEMENT = 1

T, D = TRANSCENDENTAL_OPS, DIV_OPS

# Operations per output element of the pointwise ops, for an n-input op (n only matters for the variadic ones).
_PER_ELEMENT: dict[str, Callable[[int], int]] = {
    # activations
    "Relu": lambda n: 1, "LeakyRelu": lambda n: 2, "PRelu": lambda n: 2, "Clip": lambda n: 2,
    "ThresholdedRelu": lambda n: 2, "Shrink": lambda n: 3, "HardSigmoid": lambda n: 4, "HardSwish": lambda n: 5,
    "Sigmoid": lambda n: T + 1 + D, "Swish": lambda n: T + 2 + D, "Tanh": lambda n: T, "Erf": lambda n: T,
    "Elu": lambda n: T + 2, "Selu": lambda n: T + 3, "Celu": lambda n: T + 3 + D, "Gelu": lambda n: T + 4,
    "Softplus": lambda n: 2 * T + 1, "Softsign": lambda n: 2 + D, "Mish": lambda n: 3 * T + 2,
    # elementwise arithmetic
    "Add": lambda n: 1, "Sub": lambda n: 1, "Mul": lambda n: 1, "Div": lambda n: D, "Neg": lambda n: 1,
    "Abs": lambda n: 1, "Reciprocal": lambda n: D, "Sqrt": lambda n: D, "Exp": lambda n: T, "Log": lambda n: T,
    "Pow": lambda n: 2 * T + 1, "Sin": lambda n: T, "Cos": lambda n: T, "Tan": lambda n: T, "Floor": lambda n: 1,
    "Ceil": lambda n: 1, "Round": lambda n: 1, "Sign": lambda n: 1, "Mod": lambda n: D + 2,
    "Max": lambda n: max(n - 1, 1), "Min": lambda n: max(n - 1, 1), "Sum": lambda n: max(n - 1, 1),
    "Mean": lambda n: n, "Where": lambda n: 1, "Equal": lambda n: 1, "Less": lambda n: 1, "Greater": lambda n: 1,
    "LessOrEqual": lambda n: 1, "GreaterOrEqual": lambda n: 1, "And": lambda n: 1, "Or": lambda n: 1,
    "Xor": lambda n: 1, "Not": lambda n: 1, "IsNaN": lambda n: 1, "IsInf": lambda n: 1, "Cast": lambda n: 1,
    "CastLike": lambda n: 1, "QuantizeLinear": lambda n: 3, "DequantizeLinear": lambda n: 2,
    # normalisations, per element of the input
    "BatchNormalization": lambda n: 2,        # per-channel scale and shift, folded ahead of time
    "InstanceNormalization": lambda n: 8,     # mean 1, variance 3, normalise 2, affine 2
    "LayerNormalization": lambda n: 8, "GroupNormalization": lambda n: 8, "RMSNormalization": lambda n: 5,
    "MeanVarianceNormalization": lambda n: 6, "LpNormalization": lambda n: 3,
    # softmax: max 1, subtract 1, exp T, sum 1, scale 1
    "Softmax": lambda n: 4 + T, "LogSoftmax": lambda n: 4 + T, "Hardmax": lambda n: 2,
    # reductions, per input element
    "ReduceSum": lambda n: 1, "ReduceMean": lambda n: 1, "ReduceMax": lambda n: 1, "ReduceMin": lambda n: 1,
    "ReduceProd": lambda n: 1, "ReduceL1": lambda n: 2, "ReduceL2": lambda n: 2, "ReduceSumSquare": lambda n: 2,
    "ReduceLogSum": lambda n: 1, "ReduceLogSumExp": lambda n: T + 2, "ArgMax": lambda n: 1, "ArgMin": lambda n: 1,
    "CumSum": lambda n: 1,
}
# Ops whose per-element count applies to the input rather than the output (reductions, normalisations).
_PER_INPUT_ELEMENT = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax",
                                "ArgMin", "BatchNormalization", "InstanceNormalization", "LayerNormalization",
                                "GroupNormalization", "RMSNormalization", "MeanVarianceNormalization"})
# Pure data movement: no arithmetic, only bytes.
_NO_ARITHMETIC = frozenset({"Concat", "Split", "Slice", "Transpose", "Reshape", "Flatten", "Squeeze",
                            "Unsqueeze", "Identity", "Gather", "GatherElements", "GatherND", "Scatter",
                            "ScatterElements", "ScatterND", "Pad", "Dropout", "Expand", "Tile", "DepthToSpace",
                            "SpaceToDepth", "Shape", "Size", "ConstantOfShape", "Constant", "Range", "OneHot",
                            "NonZero", "ReverseSequence", "Compress", "Trilu", "EyeLike"})


@cache
def _itemsize(dtype: str) -> float:
    return itemsize(dtype)


def value_nbytes(v: Value) -> int:
    """``v.nbytes``, with the per-dtype item size memoised (this runs for every operand of every cost query).
    A host value has no bytes in any planned memory: 0."""
    if v.host is not None:
        return 0
    return math.ceil(math.prod(v.shape) * _itemsize(v.dtype))


def _shape(node: Node, index: int) -> tuple[int, ...]:
    v = node.inputs[index] if index < len(node.inputs) else None
    return v.shape if v is not None else ()


def _has_input(node: Node, index: int) -> bool:
    return index < len(node.inputs) and node.inputs[index] is not None


def _out_numel(node: Node) -> int:
    return node.outputs[0].numel if node.outputs else 0


def _largest_numel(node: Node) -> int:
    return max((v.numel for v in [*node.present_inputs, *node.outputs]), default=0)


def _conv(node: Node) -> int:
    # Y[n, m, *out] = sum over (c in group, *kernel) of X * W: one MAC per weight element per output element.
    w = _shape(node, 1)
    macs = _out_numel(node) * math.prod(w[1:])
    return 2 * macs + (_out_numel(node) if _has_input(node, 2) else 0)


def _conv_transpose(node: Node) -> int:
    # Every input element scatters into (M / group) x kernel outputs: W is [C, M / group, *kernel].
    x, w = _shape(node, 0), _shape(node, 1)
    macs = math.prod(x) * math.prod(w[1:])
    return 2 * macs + (_out_numel(node) if _has_input(node, 2) else 0)


def _gemm(node: Node) -> int:
    a = _shape(node, 0)
    k = a[0] if node.attr("transA", 0) else a[-1]
    mn = _out_numel(node)
    return 2 * mn * k + (mn if _has_input(node, 2) else 0)


def _matmul(node: Node) -> int:
    # Batched and broadcast: each output element is a K-long dot product (A 1-D: K = len(A)).
    return 2 * _out_numel(node) * _shape(node, 0)[-1]


def _einsum(node: Node) -> int:
    # Each output element sums over the product of the contracted index sizes; one MAC per term.
    equation = str(node.attr("equation", "")).replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if "..." in equation or len(terms) != len(node.present_inputs):
        return 2 * _largest_numel(node)
    sizes: dict[str, int] = {}
    for term, v in zip(terms, node.present_inputs):
        sizes.update(zip(term, v.shape))
    out_letters = set(rhs) if "->" in equation else {c for c in lhs if lhs.count(c) == 1 and c.isalpha()}
    contracted = math.prod(sizes[c] for c in sizes if c not in out_letters)
    return 2 * _out_numel(node) * contracted * max(len(terms) - 1, 1)


def _recurrent(node: Node) -> int:
    # X [seq, batch, input], W [dirs, gates*hidden, input], R [dirs, gates*hidden, hidden]: two GEMMs per step
    # plus the gate nonlinearities (a sigmoid or tanh per gate element).
    x, w, r = _shape(node, 0), _shape(node, 1), _shape(node, 2)
    if len(x) != 3 or len(w) != 3 or len(r) != 3:
        return DEFAULT_OPS_PER_ELEMENT * _largest_numel(node)
    seq, batch, dirs, gate_rows = x[0], x[1], w[0], w[1]
    matmuls = 2 * seq * batch * dirs * gate_rows * (w[2] + r[2])
    return matmuls + seq * batch * dirs * gate_rows * (T + 2)


def _pool(node: Node) -> int:
    kernel = math.prod(node.attr("kernel_shape", []) or [1])
    per_output = kernel + (D if node.op_type == "AveragePool" else 0)
    return _out_numel(node) * per_output * (2 if node.op_type == "LpPool" else 1)


def _global_pool(node: Node) -> int:
    return math.prod(_shape(node, 0)) + (D * _out_numel(node) if node.op_type == "GlobalAveragePool" else 0)


def _lrn(node: Node) -> int:
    # square 1, window sum `size`, scale and bias 2, power 2T (exp of a log), divide D.
    size = int(node.attr("size", 1))
    return math.prod(_shape(node, 0)) * (1 + size + 2 + 2 * T + D)


def _resize(node: Node) -> int:
    # Interpolation over the axes that change size: 2^d taps for linear, 4^d for cubic, one MAC per tap.
    x, y = _shape(node, 0), node.outputs[0].shape
    resized = sum(1 for a, b in zip(x, y) if a != b)
    taps = {"linear": 2, "cubic": 4}.get(str(node.attr("mode", "nearest")), 0) ** resized
    return 2 * _out_numel(node) * taps if taps > 1 else 0


def _topk(node: Node) -> int:
    # A heap selection: n log2(k) compares.
    k = node.outputs[0].shape[node.attr("axis", -1)] if node.outputs and node.outputs[0].shape else 1
    return math.prod(_shape(node, 0)) * max(1, math.ceil(math.log2(k + 1)))


def _attention_dims(node: Node) -> tuple[int, int, int, int, int, int]:
    """(batch, query heads, query length, head size, key length, value head size) of an Attention, whose
    inputs are 4-D (batch, heads, length, size) or 3-D (batch, length, heads x size, with the head counts in
    ``q_num_heads`` and ``kv_num_heads``)."""
    q, v = _shape(node, 0), _shape(node, 2)
    if len(q) == 4:
        return q[0], q[1], q[2], q[3], v[2], v[3]
    q_heads, kv_heads = int(node.attr("q_num_heads", 1)), int(node.attr("kv_num_heads", 1))
    return q[0], q_heads, q[1], q[2] // q_heads, v[1], v[2] // kv_heads


def _attention_softmax(node: Node) -> int:
    # Per score: scale 1, mask 1, the online softmax's running max 1, subtract 1, exp T, sum 1 (rescaling
    # the accumulator once per key tile is negligible); one 1/sum per output element.
    batch, q_heads, q_len, _, kv_len, _ = _attention_dims(node)
    return batch * q_heads * q_len * kv_len * (5 + T) + _out_numel(node)


def _router_projection(node: Node) -> int:
    """A TopKGate's MatMul x @ W when it took the router's projection (two inputs), else 0."""
    return 2 * _out_numel(node) * _shape(node, 0)[-1] if _has_input(node, 1) else 0


def _attention(node: Node) -> int:
    # Q.K^T and P.V, 2 operations per multiply-accumulate, then the softmax.
    batch, q_heads, q_len, head, kv_len, v_head = _attention_dims(node)
    return 2 * batch * q_heads * q_len * kv_len * (head + v_head) + _attention_softmax(node)


_FORMULAS: dict[str, Callable[[Node], int]] = {
    "Attention": _attention,
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul,
    "MatMulInteger": _matmul, "Einsum": _einsum, "LSTM": _recurrent, "GRU": _recurrent, "RNN": _recurrent,
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool, "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool, "GlobalLpPool": _global_pool, "LRN": _lrn, "Resize": _resize,
    "Upsample": _resize, "TopK": _topk,
    # a router fused whole (hetc.passes.router): its softmax, the top-k selection, then mask and renormalise
    # (and the projection x @ W before, when it took the MatMul: ``_router_projection``)
    "TopKGate": lambda n: _out_numel(n) * (4 + T + max(1, math.ceil(math.log2(n.attr("k") + 1))) + 3 + D)
    + _router_projection(n),
    # quantised variants: X, x_scale, x_zero_point, W, ... (W at index 3)
    "QLinearConv": lambda n: 2 * _out_numel(n) * math.prod(_shape(n, 3)[1:]),
    "ConvInteger": lambda n: 2 * _out_numel(n) * math.prod(_shape(n, 1)[1:]),   # (input 2 is a zero point)
    # onnxruntime's contrib integer ops (com.microsoft): QGemm's A at 0 (bias C at 6), QLinearAdd's two FMAs
    "QGemm": lambda n: 2 * _out_numel(n) * (_shape(n, 0)[0] if n.attr("transA", 0) else _shape(n, 0)[-1]),
    "QLinearAdd": lambda n: 4 * _out_numel(n),
    "QLinearGlobalAveragePool": _global_pool,
    "QLinearMatMul": lambda n: 2 * _out_numel(n) * _shape(n, 0)[-1],
}


def node_flops(node: Node) -> int:
    """Arithmetic operations one execution of ``node`` performs (see the module docstring for the model).

    A node touching a host value counts none: its work depends on run-time contents (a sequence's length, a
    Unique's result size) the compiler does not know, so it is priced at the CPU's per-op overhead plus the
    bytes of its device-tensor operands."""
    if any(v.host is not None for v in node.outputs) or any(
            v is not None and v.host is not None for v in node.inputs):
        return 0
    if is_fused(node):
        return node_flops(base_node(node)) + _epilogue_flops(node)
    formula = _FORMULAS.get(node.op_type)
    if formula is not None:
        return int(formula(node))
    per_element = _PER_ELEMENT.get(node.op_type)
    if per_element is not None:
        n = len(node.present_inputs)
        numel = math.prod(_shape(node, 0)) if node.op_type in _PER_INPUT_ELEMENT else _out_numel(node)
        return int(numel * per_element(n))
    if node.op_type in _NO_ARITHMETIC:
        return 0
    return DEFAULT_OPS_PER_ELEMENT * _largest_numel(node)


def epilogue_flops(node: Node) -> list[tuple[str, int]]:
    """A fused node's epilogue parts with the operations each does: its steps, per output element (their
    intermediates never leave the registers, so ``node_bytes`` has nothing to add for them)."""
    return [(part.op, _out_numel(node) * sum(_PER_ELEMENT[op](len(operands))
                                             for op, _attrs, operands in part_steps(part, 11)))
            for part in epilogue_of(node)]


def class_shares(node: Node) -> list[tuple[str, int]]:
    """Operations of ``node`` (included in ``node_flops``) that run at another op's efficiency than its own
    class's: an epilogue part's at the part's, an Attention's softmax at Softmax's (the matrix products
    run on the MAC array, the exponentials on the vector unit), a router's projection at MatMul's."""
    shares = epilogue_flops(node)
    if node.op_type == "Attention" and len(_shape(node, 0)) == 4:
        shares.insert(0, ("Softmax", _attention_softmax(node)))
    if node.op_type == "TopKGate" and _router_projection(node):
        shares.insert(0, ("MatMul", _router_projection(node)))
    return shares


def _epilogue_flops(node: Node) -> int:
    return sum(flops for _op, flops in epilogue_flops(node))


def _distinct(values: list[Value]) -> list[Value]:
    seen: dict[int, Value] = {}
    for v in values:
        seen.setdefault(id(v), v)
    return list(seen.values())


def node_bytes(node: Node) -> int:
    """Bytes ``node`` reads and writes in its device's home memory."""
    if is_view(node) and view_copy_reason(node) is None:   # aliased: it moves nothing
        return 0
    outputs = sum(value_nbytes(v) for v in node.outputs)
    if node.op_type in ("Gather", "Slice"):
        # Only the gathered rows / the kept window are read; parameters (indices, starts...) are read whole.
        parameters = sum(value_nbytes(v) for v in _distinct(node.present_inputs[1:]))
        return 2 * outputs + parameters
    return sum(value_nbytes(v) for v in _distinct(node.present_inputs)) + outputs
