"""Composite fused nodes written back as the plain ONNX ops of an opset older than the op they stand for.

A composite node (hetc.ir.fused, ``COMPOSITE_SINCE``) means exactly its standard op: LayerNormalization-17,
RMSNormalization-23, Gelu-20, Attention-23 (4-D Q, K, V; grouped-query heads from the shapes; an optional additive
float or boolean mask; ``is_causal`` with the upper-left alignment of the spec; ``scale``). ``to_onnx`` of a
model whose opset predates the op writes it with the ops that opset has: the same arithmetic a decomposed
exporter writes, so onnxruntime checks the rewrite, not hetc's kernels.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.ir.dtypes import np_dtype


class _Writer:
    """Appends ONNX nodes and initializers with names unique under ``prefix``."""

    def __init__(self, prefix: str, dtype: str, opset: int) -> None:
        self.prefix, self.dtype, self.opset = prefix, dtype, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, array: np.ndarray) -> str:
        name = f"{self.prefix}_c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, value: float) -> str:
        return self.const(np.asarray(value, dtype=np_dtype(self.dtype)))

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or f"{self.prefix}_s{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}_s{len(self.nodes)}", **attrs))
        return out

    def reduce_mean_last(self, x: str) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(np.array([-1], np.int64))], keepdims=1)
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)

    def reduce_sum(self, x: str, axis: int, keepdims: int) -> str:
        if self.opset >= 13:
            return self.op("ReduceSum", [x, self.const(np.array([axis], np.int64))], keepdims=keepdims)
        return self.op("ReduceSum", [x], axes=[axis], keepdims=keepdims)

    def unsqueeze(self, x: str, axis: int) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.const(np.array([axis], np.int64))])
        return self.op("Unsqueeze", [x], axes=[axis])


def decompose(op_type: str, attrs: dict[str, Any], inputs: list[str], output: str, dtype: str, opset: int,
              prefix: str, specs: list[tuple[str, tuple[int, ...]] | None]
              ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``op_type`` (a composite op) on ``inputs`` (of dtypes and shapes ``specs``) into ``output`` as ops of
    ``opset``."""
    w = _Writer(prefix, dtype, opset)
    if op_type in ("LayerNormalization", "RMSNormalization"):
        if int(attrs.get("axis", -1)) != -1:
            raise ValueError(f"internal: a composite {op_type} normalises the last axis only")
        _norm(w, op_type == "LayerNormalization", inputs, output, float(attrs.get("epsilon", 1e-5)))
    elif op_type == "Attention":
        _attention(w, attrs, inputs, output, specs)
    elif op_type == "TopKGate":
        _topk_gate(w, attrs, inputs, output)
    elif op_type == "Gelu":
        _gelu(w, attrs, inputs[0], output)
    else:
        raise ValueError(f"internal: {op_type} is no composite op")
    return w.nodes, w.inits


def _gelu(w: _Writer, attrs: dict[str, Any], x: str, output: str) -> None:
    """Gelu as the steps of the epilogue part of the same name (hetc.ir.fused.part_steps, its one statement)."""
    from hetc.ir.fused import EpiloguePart, part_steps   # (fused imports this module)

    approximate = attrs.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    steps = part_steps(EpiloguePart("Gelu", (("approximate", approximate),)), w.opset)
    outs: list[str] = []
    for k, (op, step_attrs, operands) in enumerate(steps):
        ins = [x if o == "x" else outs[o] if isinstance(o, int) else w.scalar(float(o)) for o in operands]
        outs.append(w.op(op, ins, output if k == len(steps) - 1 else None, **step_attrs))


def _norm(w: _Writer, centred: bool, inputs: list[str], output: str, epsilon: float) -> None:
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 and inputs[2] else None
    d = w.op("Sub", [x, w.reduce_mean_last(x)]) if centred else x
    var = w.reduce_mean_last(w.op("Mul", [d, d]))
    normal = w.op("Div", [d, w.op("Sqrt", [w.op("Add", [var, w.scalar(epsilon)])])])
    w.op("Mul", [normal, scale], None if bias else output)
    if bias:
        w.op("Add", [w.nodes[-1].output[0], bias], output)


def _attention(w: _Writer, attrs: dict[str, Any], inputs: list[str], output: str,
               specs: list[tuple[str, tuple[int, ...]] | None]) -> None:
    q, k, v = inputs[:3]
    mask = inputs[3] if len(inputs) > 3 and inputs[3] else None
    shapes = [spec[1] if spec else () for spec in specs]
    (_, q_heads, q_len, head), (_, kv_heads, kv_len, _) = shapes[0], shapes[1]
    if q_heads != kv_heads:   # grouped-query heads: each K/V head serves q_heads / kv_heads query heads
        k, v = (_repeat_heads(w, t, shape, q_heads) for t, shape in ((k, shapes[1]), (v, shapes[2])))
    scale = float(attrs.get("scale", 1.0 / np.sqrt(head)))
    scores = w.op("Mul", [w.op("MatMul", [q, w.op("Transpose", [k], perm=[0, 1, 3, 2])]), w.scalar(scale)])
    if int(attrs.get("is_causal", 0)):
        causal = np.triu(np.full((q_len, kv_len), -np.inf, np_dtype(w.dtype)), 1)
        scores = w.op("Add", [scores, w.const(causal)])
    if mask is not None:   # a boolean mask says which keys a query may attend to, a float one is added
        if specs[3] is not None and specs[3][0] == "bool":
            scores = w.op("Where", [mask, scores, w.scalar(-np.inf)])
        else:
            scores = w.op("Add", [scores, mask])
    probs = w.op("Softmax", [scores], axis=-1 if w.opset >= 13 else 3)
    w.op("MatMul", [probs, v], output)


def _repeat_heads(w: _Writer, x: str, shape: tuple[int, ...], q_heads: int) -> str:
    batch, heads, length, size = shape
    group = q_heads // heads
    expanded = w.op("Expand", [w.unsqueeze(x, 2), w.const(np.array([batch, heads, group, length, size], np.int64))])
    return w.op("Reshape", [expanded, w.const(np.array([batch, q_heads, length, size], np.int64))])


def _topk_gate(w: _Writer, attrs: dict[str, Any], inputs: list[str], output: str) -> None:
    """A router's gates from its logits [rows, experts] (or from ``x @ W`` when it has two inputs): the
    softmax, zero but for each row's top ``k``, renormalised to sum to one (hetc.passes.router matched exactly
    these ops)."""
    k, experts = int(attrs["k"]), int(attrs["experts"])
    logits = w.op("MatMul", inputs[:2]) if len(inputs) > 1 and inputs[1] else inputs[0]
    probs = w.op("Softmax", [logits], axis=-1 if w.opset >= 13 else 1)
    w.nodes.append(helper.make_node("TopK", [probs, w.const(np.array([k], np.int64))],
                                    [f"{w.prefix}_topv", f"{w.prefix}_topi"], name=f"{w.prefix}_s{len(w.nodes)}",
                                    axis=-1))
    hot = w.op("OneHot", [f"{w.prefix}_topi", w.const(np.array([experts], np.int64)),
                          w.const(np.array([0, 1], np_dtype(w.dtype)))], axis=-1)
    mask = w.reduce_sum(hot, 1, keepdims=0)
    gated = w.op("Mul", [probs, mask])
    w.op("Div", [gated, w.reduce_sum(gated, -1, keepdims=1)], output)
