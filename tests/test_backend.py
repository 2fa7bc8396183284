"""hetc.backend: the onnx.backend.base interface over the real pipeline and simulator."""
from __future__ import annotations

import gc
import unittest
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetc.backend as backend
from hetc.errors import ModelError, OptionError, ShapeError, ValidationError
from hetc.ir import EXPORT_IR_VERSION

FAST = {"time_limit_s": 1.0, "num_workers": 1}


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def conv_relu_add() -> onnx.ModelProto:
    """y = Relu(Conv(x, w) + b) and z = x + 1: two outputs, listed in an order unlike their production."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    nodes = [helper.make_node("Add", ["x", "one"], ["z"]),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]),
                   helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 8, 8])], [w, one])


def numpy_conv_relu(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # 1,3,8,8,3,3
    return np.maximum(np.einsum("bchwij,ocij->bohw", windows, w), 0)


def test_prepare_compiles_once_and_run_returns_outputs_in_graph_order():
    model = conv_relu_add()
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0])
    with backend.prepare(model, target="edge-soc", **FAST) as rep:
        assert len(rep.compiled) == 1  # static inputs: compiled in prepare
        assert (rep.compiled[0].directory / "manifest.json").is_file()
        outputs = rep.run([x])
        again = rep.run({"x": x})
    assert len(outputs) == 2
    np.testing.assert_allclose(outputs[0], numpy_conv_relu(x, w), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["z"], x + 1, rtol=0, atol=0)
    np.testing.assert_array_equal(outputs.y, again[0])
    assert len(rep.compiled) == 1


def test_dynamic_batch_compiles_lazily_per_input_shape():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])
    model = _model([helper.make_node("Sigmoid", ["x"], ["y"])], [x], [y])
    rep = backend.prepare(model, **FAST)
    assert rep.compiled == []
    for batch in (2, 3, 2):
        data = np.linspace(-3, 3, batch * 5, dtype=np.float32).reshape(batch, 5)
        (out,) = rep.run([data])
        np.testing.assert_allclose(out, 1 / (1 + np.exp(-data)), rtol=1e-6)
    assert [c.bundle.inputs[0]["shape"] for c in rep.compiled] == [[2, 5], [3, 5]]
    rep.close()


def test_bundle_directory_is_removed_on_close_and_on_garbage_collection():
    rep = backend.prepare(conv_relu_add(), **FAST)
    directory = rep.compiled[0].directory
    assert directory.is_dir()
    rep.close()
    assert not directory.exists()
    with pytest.raises(OptionError, match="closed"):
        _closed_rep().run([np.zeros(2, np.float32)])  # a lazily compiled model cannot compile once closed
    rep = backend.prepare(conv_relu_add(), **FAST)
    directory = rep.compiled[0].directory
    del rep
    gc.collect()
    assert not Path(directory).exists()


def _closed_rep() -> backend.HetcBackendRep:
    model = _model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    rep = backend.prepare(model, **FAST)
    rep.close()
    return rep


def test_run_model_and_run_node():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    model = _model([helper.make_node("Abs", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                            [2, 2])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    np.testing.assert_array_equal(backend.run_model(model, [x], **FAST)[0], np.abs(x))
    node = helper.make_node("Transpose", ["a"], ["b"], perm=[1, 0])
    np.testing.assert_array_equal(backend.run_node(node, [x], **FAST)[0], x.T)
    node = helper.make_node("Add", ["a", "c"], ["s"])
    np.testing.assert_array_equal(backend.run_node(node, {"a": x, "c": x}, **FAST)["s"], x + x)


def test_devices_and_user_errors():
    assert backend.supports_device("CPU") and backend.supports_device("cpu")
    assert not backend.supports_device("CUDA")
    with pytest.raises(OptionError, match="device='CPU'"):
        backend.prepare(conv_relu_add(), device="CUDA")
    with pytest.raises(OptionError, match="unknown prepare"):
        backend.prepare(conv_relu_add(), shceduler="heft")
    rep = backend.prepare(conv_relu_add(), **FAST)
    with pytest.raises(ValidationError, match="pass them in this order"):
        rep.run([])
    with pytest.raises(ValidationError, match="not inputs of the model"):
        rep.run({"x": np.zeros((1, 3, 8, 8), np.float32), "q": np.zeros(1)})
    with pytest.raises(ModelError, match="given as a list, but the model's input is a tensor"):
        rep.run([[np.zeros(1)]])
    rep.close()


def test_other_targets_and_schedulers():
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = {}
    for target, scheduler in (("cpu-only", "cpsat"), ("edge-soc", "single:npu"), ("edge-soc", "heft")):
        with backend.prepare(conv_relu_add(), target=target, scheduler=scheduler, **FAST) as rep:
            outputs[target, scheduler] = rep.run([x])[0]
            devices = {t.engine for t in rep.compiled[0].result.schedule.tasks if t.kind == "compute"}
            if scheduler == "single:npu":
                assert devices == {"npu"}
    reference = outputs["cpu-only", "cpsat"]
    for out in outputs.values():
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5)


def test_onnx_backend_test_runner_drives_hetc():
    """ONNX's own unittest runner, unmodified, on a few official cases through hetc."""
    from onnx.backend.test import BackendTest

    class FastBackend(backend.HetcBackend):
        @classmethod
        def prepare(cls, model, device="CPU", **kwargs):
            return super().prepare(model, device, **{**FAST, **kwargs})

    runner = BackendTest(FastBackend, __name__)
    for name in ("test_relu", "test_gemm_default_no_bias", "test_maxpool_2d_pads", "test_where_example",
                 "test_reduce_mean_keepdims_example"):
        runner.include(f"^{name}_cpu$")
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(case)
                               for case in runner.test_cases.values())
    result = unittest.TextTestRunner(verbosity=0, stream=open("/dev/null", "w")).run(suite)
    assert result.testsRun - len(result.skipped) == 5  # the runner skips the cases not included
    assert result.wasSuccessful(), result.failures + result.errors


def test_integer_input_that_decides_a_shape_is_frozen_per_value():
    """Range's length comes from the value of input 'n': compiled once per value seen."""
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["len"])
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    model = _model([helper.make_node("Range", ["zero", "n", "one"], ["r"]),
                    helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
                    helper.make_node("Mul", ["rf", "x"], ["y"])], [n, x], [y], [zero, one])
    with backend.prepare(model, **FAST) as rep:
        assert rep.compiled == []
        for length in (4, 6, 4):
            (out,) = rep.run([np.array(length, np.int64), np.array(2.0, np.float32)])
            np.testing.assert_array_equal(out, 2.0 * np.arange(length, dtype=np.float32))
        assert rep.frozen_inputs == ["n"]
        assert len(rep.compiled) == 2 and all(c.frozen == ("n",) for c in rep.compiled)
    # A float input deciding a shape cannot be frozen: still a data-dependent-shape error.
    x_float = helper.make_tensor_value_info("n", TensorProto.FLOAT, [2])
    data = helper.make_tensor_value_info("d", TensorProto.FLOAT, [6])
    model = _model([helper.make_node("Cast", ["n"], ["s"], to=TensorProto.INT64),
                    helper.make_node("Reshape", ["d", "s"], ["y"])], [x_float, data],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    with pytest.raises(ShapeError, match="data-dependent"):
        backend.run_model(model, [np.array([2.0, 3.0], np.float32), np.zeros(6, np.float32)], **FAST)
    # NonZero's result size depends on its input's values by definition: a host tensor of run-time shape.
    model = _model([helper.make_node("NonZero", ["n"], ["y"])], [helper.make_tensor_value_info("n", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, [1, "k"])])
    (out,) = backend.run_model(model, [np.array([1.0, 0.0, 2.0], np.float32)], **FAST)
    np.testing.assert_array_equal(out, [[0, 2]])
