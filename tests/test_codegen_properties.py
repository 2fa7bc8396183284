"""Property tests: on random DAGs with random placements, the emitted semaphores are sufficient and minimal,
the simulation finds no race and computes what onnxruntime computes."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetc.codegen import Wait, emit
from hetc.ir import Graph, Node, Value, to_onnx
from hetc.sim import random_inputs, simulate
from handplan import plan_by_hand

from test_codegen import unordered, without_instruction
from test_sim_support import fixed_duration, reference, toy_target

TARGET = toy_target()


@st.composite
def placed_dags(draw: st.DrawFn) -> tuple[Graph, dict[int, str]]:
    """Relu/Add/Mul nodes over [1, 8] float tensors, each reading one or two earlier values."""
    n = draw(st.integers(2, 9))
    x = Value("x", "float32", (1, 8))
    values = [x]
    nodes = []
    for i in range(n):
        out = Value(f"v{i}", "float32", (1, 8))
        a = values[draw(st.integers(0, len(values) - 1))]
        if draw(st.booleans()):
            nodes.append(Node(i, "Relu", f"relu{i}", [a], [out]))
        else:
            b = values[draw(st.integers(0, len(values) - 1))]
            nodes.append(Node(i, draw(st.sampled_from(["Add", "Mul"])), f"op{i}", [a, b], [out]))
        values.append(out)
    consumed = {v.name for node in nodes for v in node.inputs}
    outputs = [v for v in values[1:] if v.name not in consumed] or [values[-1]]
    graph = Graph.build("dag", nodes, [x], outputs, {"": 17})
    placement = {}
    for node in graph.nodes:
        devices = ["cpu", "dsp"] + (["npu"] if node.op_type != "Mul" else [])   # the toy NPU has no Mul
        placement[node.id] = draw(st.sampled_from(devices))
    return graph, placement


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(placed_dags(), st.booleans())
def test_random_dags(case: tuple[Graph, dict[int, str]], reuse: bool) -> None:
    graph, placement = case
    plan = plan_by_hand(graph, TARGET, placement, fixed_duration, reuse=reuse)
    bundle = emit(graph, plan, TARGET)
    assert unordered(bundle, plan) == []
    for engine, program in bundle.programs.items():
        for pc, ins in enumerate(program.instructions):
            if isinstance(ins, Wait):
                assert unordered(without_instruction(bundle, engine, pc), plan), f"redundant {engine}[{pc}]"
    inputs = random_inputs(bundle, seed=0)
    result = simulate(bundle, inputs)   # raises on a race or a deadlock
    expected = reference(to_onnx(graph), inputs)
    for (name, got), want in zip(result.outputs.items(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
