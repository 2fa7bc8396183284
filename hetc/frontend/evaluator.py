"""Evaluation of one node on constant inputs, used by constant folding (and by the frontend, which folds
only what it needs to make shapes static).

Order of attempts: an exact numpy kernel (fast, covers weight generation and shape arithmetic), then a
cached single-node onnxruntime session (the semantics the validator compares against), then
``onnx.reference`` for what onnxruntime lacks or refuses (e.g. an op newer than the opsets it loads), with
a warning naming the op, since the folded value then comes from a different runtime than the validator's.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import onnx
from onnx import helper

from hetc.ir import Node, dtype_to_onnx
from hetc.ir.dtypes import dtype_from_numpy
from hetc.ir.onnx_export import EXPORT_IR_VERSION, make_attribute
from hetc.frontend.numpy_kernels import run_numpy_kernel
from hetc.frontend.opsets import runtime_opsets

# Ops whose result is not a function of their inputs (or that are training-only): never folded.
NONDETERMINISTIC_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
    "Dropout",
})
# Ops computed from the input's static shape alone, so they fold even when the input is not constant.
SHAPE_OPS = frozenset({"Shape", "Size"})

_SESSION_CACHE_SIZE = 256
_sessions: "OrderedDict[bytes, object]" = OrderedDict()


class EvaluationError(Exception):
    """A node could not be evaluated on constants (internal: callers decide whether that matters)."""


def is_foldable(node: Node) -> bool:
    """Whether folding ``node`` is allowed at all (its inputs must still be constant, or static for
    SHAPE_OPS). A node producing a host value never folds: host values are never constants (a constant
    lives in the DRAM image, which has no room for a sequence or a string)."""
    return (not node.has_subgraph and node.op_type not in NONDETERMINISTIC_OPS
            and not any(v.host is not None for v in node.outputs))


def evaluate_shape_op(node: Node) -> np.ndarray | None:
    """Shape/Size of a value whose shape is static; None if the shape is not (yet) static."""
    source = node.inputs[0] if node.inputs else None
    shape = source.shape if source is not None else None
    if source is not None and source.host is not None and source.host.static_shape is None:
        return None   # a sequence, or a tensor whose shape is known at run time only
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
    rank = len(shape)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
    start, end = (max(0, min(rank, x + rank if x < 0 else x)) for x in (start, end))
    return np.array(shape[start:end], dtype=np.int64)


def evaluate(node: Node, inputs: list[np.ndarray | None], opset: dict[str, int]) -> list[np.ndarray]:
    """The outputs of ``node`` applied to constant ``inputs`` (None for an omitted optional input)."""
    if node.op_type in SHAPE_OPS and node.domain in ("", "ai.onnx"):
        result = evaluate_shape_op(node)
        if result is not None:
            return [result]
    outputs = run_numpy_kernel(node, inputs, opset.get("", 0))
    if outputs is not None:
        return outputs
    try:
        model, feeds = _single_node_model(node, inputs, opset)
    except Exception as error:  # noqa: BLE001 - e.g. an attribute onnx.helper cannot re-encode
        raise EvaluationError(f"{node.op_type} cannot be expressed as a one-node model: {_first_line(error)}") from error
    try:
        return _run_onnxruntime(model, feeds)
    except Exception as ort_error:  # noqa: BLE001 - any runtime refusal means "try the reference"
        try:
            arrays = _run_reference(model, feeds)
        except Exception as ref_error:  # noqa: BLE001
            raise EvaluationError(f"{node.op_type} could not be evaluated: onnxruntime said "
                                  f"'{_first_line(ort_error)}', onnx.reference said "
                                  f"'{_first_line(ref_error)}'") from ref_error
        warnings.warn(f"constant folding: onnxruntime cannot run {node.op_type} (opset "
                      f"{_default_version(model)}): {_first_line(ort_error)}; folded with onnx.reference "
                      "instead", RuntimeWarning, stacklevel=2)
        return arrays


def _default_version(model: onnx.ModelProto) -> int | str:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _single_node_model(node: Node, inputs: list[np.ndarray | None],
                       opset: dict[str, int]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    # Generic value names make equal nodes (same op, attributes and input types) share a cached session.
    in_names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    out_names = [f"out{i}" for i in range(len(node.outputs))]
    proto = helper.make_node(node.op_type, in_names, out_names, domain=node.domain or None)
    proto.attribute.extend(make_attribute(k, v) for k, v in sorted(node.attrs.items()))
    graph_inputs = [helper.make_tensor_value_info(name, dtype_to_onnx(dtype_from_numpy(a.dtype)), a.shape)
                    for name, a in zip(in_names, inputs) if a is not None]
    # An output type the frontend has not inferred yet is left for the runtime to infer.
    graph_outputs = [helper.make_tensor_value_info(name, dtype_to_onnx(v.dtype), None) if v.dtype
                     else helper.make_empty_tensor_value_info(name) for name, v in zip(out_names, node.outputs)]
    opsets = runtime_opsets(node.op_type, node.domain, node.attrs, dict(opset))
    opsets.setdefault(node.domain or "", 1)
    model = helper.make_model(
        helper.make_graph([proto], "fold", graph_inputs, graph_outputs),
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    model.ir_version = EXPORT_IR_VERSION
    feeds = {name: a for name, a in zip(in_names, inputs) if a is not None}
    return model, feeds


def _run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort  # imported lazily: most folds never need it

    key = model.SerializeToString()
    session = _sessions.get(key)
    if session is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(key, options, providers=["CPUExecutionProvider"])
        _sessions[key] = session
        if len(_sessions) > _SESSION_CACHE_SIZE:
            _sessions.popitem(last=False)
    else:
        _sessions.move_to_end(key)
    return [np.asarray(a) for a in session.run(None, feeds)]


def _run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return [np.asarray(a) for a in ReferenceEvaluator(model).run(None, feeds)]
