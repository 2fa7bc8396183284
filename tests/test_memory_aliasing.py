"""The in-place rule (hetc.memory.aliasing): views share storage, elementwise ops overwrite dying inputs."""
from __future__ import annotations

import numpy as np

from hetc.ir import Graph, Node, Value
from hetc.memory import plan_memory
from test_memory_planner import chain_graph, list_schedule, make_target


def _plan(graph: Graph, placement: dict[int, str]):
    target = make_target()
    plan = plan_memory(graph, list_schedule(graph, target, placement), target)
    plan.verify(target)
    return plan


def _f32(name: str, shape=(1, 1024)) -> Value:
    return Value(name, "float32", shape)


def test_views_share_their_input_storage():
    plan = _plan(chain_graph(["Conv", "Reshape", "Flatten", "Softmax"]), {0: "npu", 1: "npu", 2: "npu", 3: "npu"})
    assert plan.buffer("v1@sram").alias_of == "v0@sram"
    assert plan.buffer("v2@sram").alias_of == "v0@sram"      # the owner of the whole group, not v1
    assert plan.buffer("v1@sram").offset == plan.buffer("v0@sram").offset
    assert plan.buffer("v3@sram").alias_of is None            # Softmax is not elementwise


def test_elementwise_overwrites_an_input_that_dies_there():
    plan = _plan(chain_graph(["Conv", "Relu", "Sigmoid"]), {0: "npu", 1: "npu", 2: "npu"})
    assert plan.buffer("v1@sram").alias_of == "v0@sram"
    assert plan.buffer("v2@sram").alias_of == "v0@sram"
    assert plan.details["aliases"] >= 2


def test_graph_inputs_and_constants_are_never_overwritten_or_viewed():
    x, w = _f32("x"), Value("w", "float32", (1, 1024), const=np.ones((1, 1024), np.float32))
    a, b, c = _f32("a"), _f32("b"), _f32("c")
    nodes = [Node(0, "Relu", "relu", [x], [a]),              # x is a graph input: not overwritten
             Node(1, "Reshape", "view", [w], [b]),           # w is a constant: the read-only region stays so
             Node(2, "Add", "add", [a, b], [c])]
    graph = Graph.build("g", nodes, [x], [c], {"": 17})
    plan = _plan(graph, {})
    assert plan.buffer("a@dram").alias_of is None
    assert plan.buffer("b@dram").alias_of is None
    assert plan.buffer("c@dram").alias_of == "a@dram"         # a dies at Add: the output may take it over


def test_identity_from_graph_input_to_graph_output_keeps_two_addresses():
    x, y = _f32("x"), _f32("y")
    graph = Graph.build("g", [Node(0, "Identity", "id", [x], [y])], [x], [y], {"": 17})
    plan = _plan(graph, {})
    assert plan.buffer("y@dram").alias_of is None
    assert plan.buffer("y@dram").offset != plan.buffer("x@dram").offset


def test_no_overwrite_while_another_consumer_still_needs_the_input():
    x, a, b, c, d = (_f32(n) for n in "xabcd")
    nodes = [Node(0, "Conv", "conv", [x], [a]),
             Node(1, "Relu", "relu", [a], [b]),             # a is still needed by node 2
             Node(2, "Softmax", "sm", [a], [c]),
             Node(3, "Add", "add", [b, c], [d])]
    graph = Graph.build("g", nodes, [x], [d], {"": 17})
    plan = _plan(graph, {n.id: "npu" for n in nodes})
    assert plan.buffer("b@sram").alias_of is None
    assert plan.buffer("d@sram").alias_of in {"b@sram", "c@sram"}   # both die at Add


def test_no_overwrite_of_a_value_a_dma_is_still_copying_out():
    # a is a graph output too: its copy to DRAM does not precede Relu, so Relu must not overwrite it
    x, a, b = _f32("x"), _f32("a"), _f32("b")
    graph = Graph.build("g", [Node(0, "Conv", "conv", [x], [a]), Node(1, "Relu", "relu", [a], [b])],
                        [x], [a, b], {"": 17})
    plan = _plan(graph, {0: "npu", 1: "npu"})
    assert plan.buffer("b@sram").alias_of is None


def test_broadcast_input_is_not_overwritten():
    x, s, a, b = _f32("x"), _f32("s", (1, 1)), _f32("a", (1, 1)), _f32("b")
    nodes = [Node(0, "Relu", "r", [s], [a]), Node(1, "Mul", "mul", [x, a], [b])]
    graph = Graph.build("g", nodes, [x, s], [b], {"": 17})
    plan = _plan(graph, {})
    assert plan.buffer("b@dram").alias_of is None               # x is a graph input, a has another shape


def test_in_place_output_that_is_a_graph_output_lives_to_the_end():
    plan = _plan(chain_graph(["Softmax", "Relu"]), {})
    assert plan.buffer("v1@dram").alias_of == "v0@dram"
    assert plan.buffer("v1@dram").end_ns == plan.schedule.makespan_ns
