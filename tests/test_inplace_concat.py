"""The model's own Concat, Split and Slice as alias ops (hetc.passes.alias_ops): a Concat whose output is a
graph output writes its inputs in place (a KV cache appends the new rows into the cache, the caller's past rows
lie in the first rows of each head), Split and Slice read views; the numbers equal onnxruntime's, and a part
written at a wrong offset is caught by the race detector."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.codegen import emit
from hetc.errors import SimulationError
from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION
from hetc.ir.tiles import ASSEMBLE, REGION, is_alias
from hetc.memory import plan_memory
from hetc.passes import optimize
from hetc.passes.alias_ops import alias_ops, concat_copy_reason
from hetc.pipeline import BuildOptions, build
from hetc.sim.simulate import simulate
from test_memory_planner import make_target
from tiling_helpers import hand_schedule, he_weights, onnxruntime_outputs

PAST, NEW = (1, 2, 3, 4), (1, 2, 1, 4)        # [batch, heads, rows, width]: one new row per head


def kv_model(extra_reader: bool = False) -> onnx.ModelProto:
    """new = Relu(x @ W) reshaped to one row per head; present = Concat(past, new) on the row axis; an
    optional second reader of past (Softmax) that runs while the new rows are written."""
    rng = np.random.default_rng(3)
    w = he_weights(rng, (8, 8)).T.copy()
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Relu", ["h"], ["hr"], name="act"),
             helper.make_node("Reshape", ["hr", "shape"], ["new"], name="heads"),
             helper.make_node("Concat", ["past", "new"], ["present"], name="append", axis=2)]
    outputs = [helper.make_tensor_value_info("present", TensorProto.FLOAT, (1, 2, 4, 4))]
    if extra_reader:
        nodes.append(helper.make_node("Softmax", ["past"], ["probs"], name="reader", axis=-1))
        outputs.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, PAST))
    graph = helper.make_graph(
        nodes, "kv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 8)),
                      helper.make_tensor_value_info("past", TensorProto.FLOAT, PAST)], outputs,
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(NEW, np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def kv_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((1, 8)).astype(np.float32),
            "past": rng.standard_normal(PAST).astype(np.float32)}


def planned(model: onnx.ModelProto, placement: dict[str, str], durations: dict[str, int] | None = None):
    graph = alias_ops(optimize(import_model(model)))
    target = make_target()
    schedule = hand_schedule(graph, target, placement, durations=durations)
    plan = plan_memory(graph, schedule, target)
    plan.verify(target)
    return graph, target, plan


def test_the_kv_cache_concat_becomes_an_assemble_and_past_lies_in_present():
    graph, target, plan = planned(kv_model(), {"proj": "npu", "act": "npu", "heads": "npu"})
    (node,) = [n for n in graph if is_alias(n)]
    assert node.op_type == ASSEMBLE
    present, past, new = (plan.buffer(f"{v}@dram") for v in ("present", "past", "new"))
    row = 4 * 4
    assert past.alias_of == new.alias_of == "present@dram"
    assert past.offset == present.offset and new.offset == present.offset + 3 * row
    assert past.strides == new.strides == (2 * 4 * row, 4 * row, row, 4)   # rows of each head's 4
    bundle = emit(graph, plan, target)
    (binding,) = [b for b in bundle.inputs if b["name"] == "past"]
    assert binding["strides"] == list(past.strides)   # the caller writes past into each head's first rows
    # only the new rows travel to DRAM; past is never copied
    moved = [t for t in plan.schedule.tasks if t.kind == "transfer"]
    assert not any(t.value == "past" for t in moved)
    assert sum(t.bytes for t in moved if t.dst == "dram") == 2 * row
    (expected,) = onnxruntime_outputs(kv_model(), kv_inputs())
    np.testing.assert_allclose(simulate(bundle, kv_inputs()).outputs["present"], expected, rtol=1e-5, atol=1e-6)


def test_a_new_row_written_over_the_past_a_reader_is_reading_is_a_race():
    model = kv_model(extra_reader=True)
    placement = {"proj": "npu", "act": "npu", "heads": "npu"}
    graph, target, plan = planned(model, placement, durations={"reader": 50_000})
    good = simulate(emit(graph, plan, target), kv_inputs()).outputs
    for got, want in zip((good["present"], good["probs"]), onnxruntime_outputs(model, kv_inputs())):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The new rows' DMA lands one row early, over the last past row of each head, while the CPU reads past.
    bad = replace(plan, buffers=tuple(replace(b, offset=b.offset - 16) if b.id == "new@dram" else b
                                      for b in plan.buffers))
    assert bad.violations(target) == []          # inside present, same group: only the timing can tell
    with pytest.raises(SimulationError, match="data race"):
        simulate(emit(graph, bad, target), kv_inputs())


def _concat_graph(**change):
    """a = Relu(x), b = Relu(x); y = Concat(a, b) [+ variations]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3))
    inputs, nodes = [x], [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["x"], ["b"])]
    parts = change.get("parts", ["a", "b"])
    nodes.append(helper.make_node("Concat", parts, ["y"], axis=0))
    rows = 2 * len(parts)
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, (rows, 3))]
    if change.get("second"):
        nodes.append(helper.make_node("Concat", ["b", "x"], ["z"], axis=0))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, (4, 3)))
    if change.get("inner"):
        nodes.append(helper.make_node("Relu", ["y"], ["yy"]))
        outputs = [helper.make_tensor_value_info("yy", TensorProto.FLOAT, (rows, 3))]
    inits = [numpy_helper.from_array(np.ones((2, 3), np.float32), "c")]
    model = helper.make_model(helper.make_graph(nodes, "c", inputs, outputs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return import_model(model)


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"parts": ["a", "x"]}, None),                                   # a graph input: the caller writes it there
    ({"inner": True}, "not a graph output"),
    ({"parts": ["a", "c"]}, "constant"),
    ({"parts": ["a", "a"]}, "appears twice"),
    ({"second": True}, "feeds another Concat"),
])
def test_which_concat_writes_its_inputs_in_place(change, reason):
    graph = _concat_graph(**change)
    (concat,) = [n for n in graph if n.op_type == "Concat" and n.outputs[0].name == "y"]
    found = concat_copy_reason(graph, concat)
    assert (found is None) if reason is None else (reason in found)
    rewritten = alias_ops(graph)
    ops = {n.outputs[0].name: n.op_type for n in rewritten}
    assert ops["y"] == (ASSEMBLE if reason is None else "Concat")
    assert (rewritten is graph) == (reason is not None)   # nothing to rewrite: no copy


def test_split_and_slice_become_regions_and_compute_the_same():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Split", ["r", "sizes"], ["s0", "s1"], axis=1),
             helper.make_node("Slice", ["r", "st", "en", "ax"], ["sl"]),
             helper.make_node("Slice", ["r", "st", "en", "ax", "step2"], ["strided"]),
             helper.make_node("Add", ["s0", "sl"], ["y0"]), helper.make_node("Mul", ["s1", "s1"], ["y1"]),
             helper.make_node("Relu", ["strided"], ["y2"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("sizes", [2, 4]), ("st", [-4]), ("en", [-2]), ("ax", [1]), ("step2", [2]))]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
            (("y0", (3, 2, 5)), ("y1", (3, 4, 5)), ("y2", (3, 1, 5)))]
    model = helper.make_model(helper.make_graph(
        nodes, "views", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (3, 6, 5))], outs, inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    graph = alias_ops(optimize(import_model(model)))
    regions = {n.outputs[0].name: (n.attrs["starts"], n.attrs["ends"]) for n in graph if n.op_type == REGION}
    assert regions == {"s0": ([0, 0, 0], [3, 2, 5]), "s1": ([0, 2, 0], [3, 6, 5]), "sl": ([0, 2, 0], [3, 4, 5])}
    assert [n.op_type for n in graph if n.outputs[0].name == "strided"] == ["Slice"]   # step 2: a copy
    target = make_target()
    plan = plan_memory(graph, hand_schedule(graph, target, {"Relu_0": "npu"}), target)
    plan.verify(target)
    x = {"x": rng.standard_normal((3, 6, 5)).astype(np.float32)}
    got = simulate(emit(graph, plan, target), x).outputs
    for name, want in zip(("y0", "y1", "y2"), onnxruntime_outputs(model, x)):
        np.testing.assert_allclose(got[name], want, rtol=1e-6)


def test_gpt_decoder_appends_only_the_new_rows_to_its_kv_cache():
    result = build("models/gpt_decoder.onnx", BuildOptions(target="edge-soc", validate=True, weights="random",
                                                          time_limit_s=2))
    assert result.validation.passed
    graph, schedule = result.graph, result.plan.schedule
    # (other Assembles join the parts of nodes the tiler spread over the NPU, DSP and CPU)
    assembles = [n for n in graph if is_alias(n) and n.op_type == ASSEMBLE
                 and n.outputs[0].name.startswith(("present_", "past_"))]
    assert sorted(n.outputs[0].name for n in assembles) == sorted(
        f"present_{kind}_{i}" for kind in ("key", "value") for i in range(4))
    transfers = [t for t in schedule.tasks if t.kind == "transfer"]
    # the attention reads past where it runs (its own local Concat), nothing writes past anywhere in DRAM
    assert not any(t.value.startswith("past_") and t.dst == result.target.dram for t in transfers)
    locals_ = [n for n in graph if n.op_type == "Concat" and n.outputs[0].name.startswith("present_")]
    assert len(locals_) == 8 and all(n.outputs[0].name.endswith("__local") for n in locals_)
    parts = {n.inputs[1].name for n in assembles}
    new_rows = 8 * 32 * 4 * 4                     # 8 tokens x 32 wide x float32 x 4 heads, per tensor
    written = [t.bytes for t in transfers if t.value in parts and t.dst == result.target.dram]
    assert written and all(b == new_rows for b in written)
    assert not any(t.value.startswith("present_") and t.dst == result.target.dram for t in transfers)


def test_a_split_output_written_in_place_elsewhere_is_not_a_view():
    # A buffer lies in one other at most: a Split output that is a part of an in-place Concat (or of a tile's
    # one-part Assemble to DRAM, as in YOLOv8's C2f blocks on multi-npu) keeps its own bytes.
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Split", ["r", "sizes"], ["s0", "s1"], axis=1),
             helper.make_node("Relu", ["s0"], ["t"]),
             helper.make_node("Concat", ["t", "s1"], ["y"], axis=1)]
    sizes = numpy_helper.from_array(np.array([2, 4], np.int64), "sizes")
    model = helper.make_model(helper.make_graph(
        nodes, "split_into_concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (3, 6, 5))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (3, 6, 5))], [sizes]),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    graph = alias_ops(optimize(import_model(model)))
    ops = {n.outputs[0].name: n.op_type for n in graph}
    assert ops["y"] == ASSEMBLE and ops["s0"] == "Split"   # (a node is keyed by its first output)
    target = make_target()
    plan = plan_memory(graph, hand_schedule(graph, target, {}), target)
    plan.verify(target)
    x = {"x": np.random.default_rng(1).standard_normal((3, 6, 5)).astype(np.float32)}
    np.testing.assert_allclose(simulate(emit(graph, plan, target), x).outputs["y"],
                               onnxruntime_outputs(model, x)[0], rtol=1e-6)
