"""A plain interpreter of an IR graph over ``run_kernel``: every node in topological order on one device
kind where it has a kernel (the CPU otherwise), with no timing and no memories. It is the kernel-level oracle
the functional simulator must agree with, and how whole models test the kernels."""
from __future__ import annotations

import numpy as np

from hetc.ir import Graph
from hetc.sim.kernels.dispatch import has_kernel, kernel_limitation, run_kernel
from hetc.target.ops import dropout_may_train


def run_graph(graph: Graph, inputs: dict[str, np.ndarray], device_kind: str = "npu",
              precision: str = "fp32") -> dict[str, np.ndarray]:
    """Outputs of ``graph`` on ``inputs``, each node on ``device_kind`` when it can run there."""
    values: dict[str, np.ndarray] = {v.name: v.const for v in graph.values.values() if v.const is not None}
    values.update(inputs)
    version = graph.opset.get("", graph.opset.get("ai.onnx", 0))
    for node in graph.topo_order():
        if any(v.host is not None for v in [*node.present_inputs, *node.outputs]):   # host values: the CPU
            from hetc.sim.host import node_types, run_host_node
            results = run_host_node(node.op_type, node.domain, node.attrs,
                                    [values[v.name] if v is not None else None for v in node.inputs],
                                    *node_types(node), graph.opset)
            values.update({v.name: r for v, r in zip(node.outputs, results)})
            continue
        runs_here = (has_kernel(device_kind, node.op_type) and node.domain in ("", "ai.onnx")
                     and kernel_limitation(device_kind, node.op_type, node.attrs, version) is None
                     and not dropout_may_train(node))
        results = run_kernel(device_kind if runs_here else "cpu", node.op_type, node.domain, node.attrs,
                             [values[v.name] if v is not None else None for v in node.inputs],
                             [(v.dtype, v.shape) for v in node.outputs], graph.opset,
                             precision=precision if runs_here else "fp32")
        values.update({v.name: r for v, r in zip(node.outputs, results)})
    return {v.name: values[v.name] for v in graph.outputs}
