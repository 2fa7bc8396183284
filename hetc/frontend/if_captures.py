"""An If whose branches read outer values, made to run in a session with no outer scope.

The CPU runs If and Loop whole, each as a one-node model (hetc.sim.kernels.cpu). ONNX gives an If no input but
its condition, so the values its branches read from the enclosing graph (graph inputs, weights, earlier
results: what every torch export with data-dependent control flow reads) cannot reach that model. A Loop can
carry any value: the If becomes the body of a Loop of one iteration, ``carry_captured_values`` then turns
every captured value (the condition included) into an explicit loop-carried input, and a Reshape drops the
Loop's iteration axis from each result. The results are the If's, bit for bit: the same If runs once.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from hetc.ir import Graph, Node, Value, dtype_to_onnx
from hetc.ir.onnx_export import make_attribute

WRAPPED_SUFFIX = "__if_scan"


def wrap_capturing_if(graph: Graph, node: Node) -> bool:
    """Replace ``node``, an If whose branches read values of ``graph`` that are not small constants (those
    were embedded into the branches), by a one-iteration Loop around it; True if it did. An If with a host
    value among its results stays: a Loop's per-iteration results must be tensors."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
        return False
    if not [name for name in node.outer_scope_names() if name in graph.values]:
        return False
    if any(v.host is not None or v.shape is None for v in node.outputs):
        return False
    prefix = node.name or f"If_{node.id}"
    inner = helper.make_node("If", [node.inputs[0].name], [f"{v.name}{WRAPPED_SUFFIX}" for v in node.outputs],
                             name=prefix)
    inner.attribute.extend(make_attribute(k, v) for k, v in sorted(node.attrs.items()))
    body = helper.make_graph(
        [inner, helper.make_node("Identity", [f"{prefix}_cond_in"], [f"{prefix}_cond_out"])], f"{prefix}_once",
        [helper.make_tensor_value_info(f"{prefix}_iteration", TensorProto.INT64, []),
         helper.make_tensor_value_info(f"{prefix}_cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(f"{prefix}_cond_out", TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(f"{v.name}{WRAPPED_SUFFIX}", dtype_to_onnx(v.dtype), list(v.shape))
           for v in node.outputs])
    trip_count = Value(f"{prefix}_trip_count", "int64", (), const=np.array(1, dtype=np.int64))
    stacked = [Value(f"{v.name}{WRAPPED_SUFFIX}", v.dtype, (1, *v.shape)) for v in node.outputs]
    next_id = max(n.id for n in graph.nodes) + 1
    loop = Node(next_id, "Loop", f"{prefix}_loop", [trip_count, None], stacked, {"body": body})
    reshapes = [Node(next_id + 1 + i, "Reshape", f"{prefix}_result{i}",
                     [s, Value(f"{s.name}_shape", "int64", (len(v.shape),),
                               const=np.array(v.shape, dtype=np.int64))], [v])
                for i, (s, v) in enumerate(zip(stacked, node.outputs))]
    index = graph.nodes.index(node)
    graph.nodes[index:index + 1] = [loop, *reshapes]
    return True

