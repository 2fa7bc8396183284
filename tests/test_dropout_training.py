"""Training-mode Dropout (issue 8): the NPU/DSP kernels implement inference only, so a Dropout whose
training_mode may be true runs on the CPU, is no view, and a seeded one draws onnx.reference's mask."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from hetc.errors import ModelError
from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION
from hetc.passes import optimize
from hetc.pipeline import BuildOptions, build
from hetc.sim import simulate
from hetc.sim.kernels import run_on_cpu
from hetc.sim.kernels.cpu import onnxruntime_deviates
from hetc.target import load_target, working_set_bytes
from hetc.target.ops import dropout_may_train, is_view
from hetc.validate import compare, reference_outputs

vi = helper.make_tensor_value_info
SHAPE = (8, 64)


def _dropout_model(training: bool | None, seed: int | None = 0, ratio: float = 0.3,
                   mask: bool = True) -> onnx.ModelProto:
    """x -> Relu -> Dropout(ratio, training_mode) -> (y, mask if ``mask``); training_mode is a graph input
    when ``training`` is None, else a constant."""
    attrs = {} if seed is None else {"seed": seed}
    outputs = ["y", "mask"] if mask else ["y"]
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("Dropout", ["h", "ratio", "train"], outputs, **attrs)]
    inputs = [vi("x", TensorProto.FLOAT, list(SHAPE))]
    initializers = [onnx.numpy_helper.from_array(np.array(ratio, dtype=np.float32), "ratio")]
    if training is None:
        inputs.append(vi("train", TensorProto.BOOL, []))
    else:
        initializers.append(onnx.numpy_helper.from_array(np.array(training), "train"))
    graph = helper.make_graph(nodes, "dropout", inputs,
                              [vi("y", TensorProto.FLOAT, list(SHAPE)),
                               vi("mask", TensorProto.BOOL, list(SHAPE))][:len(outputs)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _dropout_node(training: bool | None):
    graph = import_model(_dropout_model(training, mask=False))   # (no bool mask, which the NPU refuses)
    return next(n for n in graph.nodes if n.op_type == "Dropout")


def test_training_dropout_is_refused_on_the_accelerators_with_a_reason():
    target = load_target("edge-soc")
    node = _dropout_node(None)
    assert dropout_may_train(node) and not is_view(node)
    for device in ("npu", "dsp"):
        reason = target.supports(node, device)
        assert not reason and "training mode" in str(reason) and "'train'" in str(reason)
    assert target.supports(node, "cpu")
    # Not a view: its output is counted apart from its input (and the 4-byte ratio, 1-byte flag).
    assert working_set_bytes(node) == 2 * node.inputs[0].nbytes + 4 + 1


def test_constant_false_training_mode_keeps_the_inference_kernel():
    node = _dropout_node(False)
    assert not dropout_may_train(node) and is_view(node)
    assert load_target("edge-soc").supports(node, "npu")


@pytest.mark.parametrize("training", [False, True])
def test_pass_removes_inference_dropout_and_keeps_a_training_one(training):
    graph = optimize(import_model(_dropout_model(training, mask=False)))
    assert graph.op_histogram() == ({"Relu": 1, "Dropout": 1} if training else {"Relu": 1})


def test_seeded_training_dropout_on_the_cpu_draws_the_reference_mask():
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    inputs = [x, np.array(0.4, dtype=np.float32), np.array(True)]
    outputs = [("float32", SHAPE), ("bool", SHAPE)]
    assert onnxruntime_deviates("Dropout", "", {"seed": 5}, inputs, outputs)
    assert not onnxruntime_deviates("Dropout", "", {}, inputs, outputs)   # unseeded: onnxruntime draws
    y, mask = run_on_cpu("Dropout", "", {"seed": 5}, inputs, outputs, {"": 13})
    mask_want = np.random.RandomState(5).uniform(0, 1, SHAPE) >= 0.4
    np.testing.assert_array_equal(mask, mask_want)
    np.testing.assert_allclose(y, mask_want * x / np.float32(0.6), rtol=1e-6)
    assert 0 < mask.sum() < mask.size


def test_training_dropout_compiles_to_the_cpu_and_validates_against_onnx_reference():
    model = _dropout_model(None, seed=0)
    result = build(model, BuildOptions(target="edge-soc", time_limit_s=1.0, num_workers=1))
    row = next(r for r in result.placement if r["op"] == "Dropout")
    assert row["device"] == "cpu"
    assert "dsp: Dropout: hetc's DSP kernels do not implement training mode" in row["refused"]
    # The planner's elementwise rule lets y overwrite the Relu output dying at the Dropout (safe: the CPU
    # computes into a fresh array and the simulator copies it over), but the write is no byte-preserving one.
    by_id = {b.id: b for b in result.plan.buffers}
    assert any(b.value == "y" and b.alias_of and by_id[b.alias_of].value == "h" for b in result.plan.buffers)
    compute = next(i for p in result.bundle.programs.values() for i in p.instructions
                   if getattr(i, "op", None) == "Dropout")
    assert compute.inplace == ()

    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    evaluator = ReferenceEvaluator(model)
    for training in (True, False):
        feeds = {"x": x, "train": np.array(training)}
        sim = simulate(result.bundle, feeds, functional=True)
        want = dict(zip(["y", "mask"], evaluator.run(None, feeds)))
        np.testing.assert_array_equal(sim.outputs["mask"], want["mask"])
        np.testing.assert_allclose(sim.outputs["y"], want["y"], rtol=1e-6, atol=0)
        assert compare(sim.outputs, want).passed
        if training:
            assert 0 < want["mask"].sum() < want["mask"].size
        else:
            np.testing.assert_array_equal(sim.outputs["y"], np.maximum(x, 0))


def test_graph_runner_oracle_runs_a_training_dropout_on_the_cpu():
    from hetc.sim.kernels.graph_runner import run_graph

    model = _dropout_model(None, seed=3)
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    feeds = {"x": x, "train": np.array(True)}
    got = run_graph(import_model(model), feeds, device_kind="npu")
    for name, want in zip(["y", "mask"], ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=0)


def test_opset6_training_dropout_with_a_mask_is_refused_at_import():
    """Before opset 7, is_test=0 meant training; the conversion to opset 7 (hetc's oldest) refuses it, so the
    IR never holds a pre-7 training Dropout."""
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], is_test=0)
    graph = helper.make_graph([node], "g", [vi("x", TensorProto.FLOAT, [4])],
                              [vi("y", TensorProto.FLOAT, [4]), vi("mask", TensorProto.BOOL, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = EXPORT_IR_VERSION
    with pytest.raises(ModelError, match="is_test"):
        import_model(model)


def test_validation_takes_a_seeded_training_dropout_reference_from_onnx_reference(tmp_path):
    model = _dropout_model(None, seed=3)
    result = build(model, BuildOptions(target="edge-soc", time_limit_s=1.0, num_workers=1))
    feeds = {"x": np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32), "train": np.array(True)}
    sim = simulate(result.bundle, feeds, functional=True)
    with pytest.warns(RuntimeWarning, match="draws seeded random numbers"):
        expected = reference_outputs(model, feeds)
    np.testing.assert_array_equal(expected["mask"], sim.outputs["mask"])
    assert compare(sim.outputs, expected).passed
