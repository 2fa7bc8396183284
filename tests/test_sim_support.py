"""Small models, a small target and hand-made plans shared by the codegen, bundle and simulator tests
(plus tests that the hand-made plans themselves are valid, so the other tests stand on solid ground)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetc.codegen import Bundle, emit
from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, Graph
from hetc.memory.artifact import MemoryPlan
from handplan import plan_by_hand
from hetc.target import Target, target_from_toml_text

REPO = Path(__file__).resolve().parent.parent

# A deliberately simple chip: round numbers so hand-computed times are easy to check.
TOY_TOML = """
name = "toy"
description = "cpu + npu + dsp with round numbers, for back-end tests"
sync_ns = 100
priority = ["npu", "dsp", "cpu"]

[memories.dram]
kind = "dram"
size = "64MiB"
bandwidth = {dram_bw}
alignment = 64

[memories.npu_sram]
size = "1MiB"
bandwidth = 100.0
alignment = 64

[memories.dsp_tcm]
size = "1MiB"
bandwidth = 100.0
alignment = 64

[devices.cpu]
kind = "cpu"
memory = "dram"
launch_ns = 1000
peak = {{ float32 = 10.0 }}
efficiency.default = 1.0

[devices.npu]
kind = "npu"
memory = "npu_sram"
launch_ns = 200
peak = {{ float32 = 100.0 }}
efficiency.default = 1.0
ops = ["Conv", "Gemm", "Relu", "Add", "Flatten", "Reshape", "MaxPool"]
dtypes = ["float32"]

[devices.dsp]
kind = "dsp"
memory = "dsp_tcm"
launch_ns = 100
peak = {{ float32 = 50.0 }}
efficiency.default = 1.0
ops = ["Relu", "Add", "Mul", "Sigmoid", "Gemm", "Flatten", "Reshape"]
dtypes = ["float32"]

[[dma]]
name = "dma_npu"
memories = ["dram", "npu_sram"]
bandwidth = 10.0
latency_ns = 100

[[dma]]
name = "dma_dsp"
memories = ["dram", "dsp_tcm"]
bandwidth = 10.0
latency_ns = 100

[[dma]]
name = "dma_npu_dsp"
memories = ["npu_sram", "dsp_tcm"]
bandwidth = 10.0
latency_ns = 50
"""


def toy_target(dram_bw: float = 1000.0) -> Target:
    return target_from_toml_text(TOY_TOML.format(dram_bw=dram_bw), "toy")


def fixed_duration(node, device: str) -> int:
    """A cost that depends only on the node and device, so golden listings do not move with the cost model."""
    return 1000 + 10 * (node.id % 7) + {"cpu": 500, "npu": 0, "dsp": 200}[device]


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def mixed_model() -> onnx.ModelProto:
    """x -> Conv -> Relu -> Flatten -> Gemm -> Sigmoid, plus a side branch Mul(x_flat) -> Add: uses every
    device of the toy target, a DMA between scratchpads, weights, an in-place Flatten and a residual."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32), "fw")
    scale = numpy_helper.from_array(np.full((1, 16), 0.5, np.float32), "scale")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw"], ["g"], name="gemm"),
        helper.make_node("Sigmoid", ["g"], ["s"], name="sigmoid"),
        helper.make_node("Mul", ["g", "scale"], ["m"], name="mul"),
        helper.make_node("Add", ["s", "m"], ["y"], name="add"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w, b, fw, scale])


def mixed_graph() -> Graph:
    return import_model(mixed_model())


MIXED_PLACEMENT = {"conv": "npu", "relu": "npu", "flatten": "npu", "gemm": "dsp", "sigmoid": "cpu", "mul": "dsp",
                   "add": "cpu"}


def mixed_plan(target: Target | None = None, reuse: bool = True) -> tuple[Graph, Target, MemoryPlan]:
    target = target or toy_target()
    graph = mixed_graph()
    placement = {n.id: MIXED_PLACEMENT[n.name] for n in graph.nodes}
    return graph, target, plan_by_hand(graph, target, placement, fixed_duration, reuse=reuse)


def mixed_bundle(target: Target | None = None) -> Bundle:
    graph, target, plan = mixed_plan(target)
    return emit(graph, plan, target)


def mixed_inputs() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).standard_normal((1, 2, 4, 4)).astype(np.float32)}


def reference(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


# ---------------------------------------------------------------------------------------------- tests
def test_hand_plan_is_a_valid_memory_plan() -> None:
    graph, target, plan = mixed_plan()
    assert plan.violations(target) == []
    placement = {plan.schedule.task(t.id).engine for t in plan.schedule.tasks if t.kind == "compute"}
    assert placement == {"cpu", "npu", "dsp"}
    # Buffers are reused: some scratchpad bytes hold two different values over time.
    sram = [b for b in plan.buffers if b.memory == "npu_sram" and b.alias_of is None]
    assert len({b.offset for b in sram}) < len(sram)


def test_hand_plan_aliases_flatten_in_place() -> None:
    _, _, plan = mixed_plan()
    flat = [b for b in plan.buffers if b.value == "f"]
    assert flat and flat[0].alias_of == "r@npu_sram"
