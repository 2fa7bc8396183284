"""Target lowerings (hetc.target.lowering): a strided convolution no accelerator takes becomes space-to-depth and
a stride-1 convolution one does, with the same numbers."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, to_onnx
from hetc.ir.fused import base_node, node_label
from hetc.passes import optimize
from hetc.target import load_target
from hetc.target.capability import kernel_support
from hetc.target.lowering import lowering_rules


def _conv_model(size: int, channels: int, kernel: int, stride: int, pads: list[int], relu: bool = True,
                seed: int = 0, opset: int = 17):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, channels, kernel, kernel)) / np.sqrt(channels * kernel * kernel)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if relu else "y"], kernel_shape=[kernel, kernel],
                              strides=[stride, stride], pads=pads)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    out = [(size + pads[i] + pads[i + 2] - kernel) // stride + 1 for i in (0, 1)]
    return _model(nodes, [1, channels, size, size], [1, 8, out[0], out[1]],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], opset)


def _model(nodes, x_shape: list[int], y_shape: list[int], initializers=(), opset: int = 17):
    """A float model from ``nodes`` with input ``x`` and output ``y``, as onnxruntime loads it."""
    graph = helper.make_graph(nodes, "lowering", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_alexnets_first_layer_runs_on_the_npu_after_lowering():
    # 11x11 stride 4 (the NPU takes strides 1-3): space-to-depth, then a 3x3 stride-1 Conv+Relu it runs
    target = load_target("edge-soc")
    graph = import_model(_conv_model(224, 3, 11, 4, [0, 0, 0, 0]))
    plain = optimize(graph)
    assert not kernel_support(target, plain.nodes[0], "npu")
    lowered = optimize(graph, lowerings=lowering_rules(target))
    conv = lowered.nodes[-1]
    assert [n.op_type for n in lowered.nodes] == ["Reshape", "Transpose", "Reshape", "Conv"]
    assert node_label(conv) == "Conv+Relu" and kernel_support(target, conv, "npu")
    assert conv.attrs["kernel_shape"] == [3, 3] and conv.inputs[0].shape == (1, 48, 56, 56)
    assert base_node(conv).inputs[1].shape == (8, 48, 3, 3)   # (its bias travels in its weight: hetc.ir.fused)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(lowered), x), _run(to_onnx(plain), x), rtol=1e-4, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(9, 30), kernel=st.integers(1, 7), stride=st.integers(4, 6),
       pads=st.lists(st.integers(0, 3), min_size=4, max_size=4), opset=st.sampled_from([9, 17]))
def test_the_lowered_graph_computes_the_same(size, kernel, stride, pads, opset):
    if size + pads[0] + pads[2] < kernel or size + pads[1] + pads[3] < kernel:
        return   # no output pixel
    model = _conv_model(size, 2, kernel, stride, pads, relu=False, opset=opset)
    graph = import_model(model)
    lowered = optimize(graph, lowerings=lowering_rules(load_target("edge-soc")))
    assert lowered.nodes[-1].attrs["strides"] == [1, 1]
    x = np.random.default_rng(size).standard_normal((1, 2, size, size)).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(lowered), x), _run(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target_name, stride", [("cpu-only", 4), ("edge-soc", 2)])
def test_nothing_is_lowered_where_no_accelerator_gains(target_name, stride):
    # the CPU runs any stride; a stride the NPU takes needs no lowering
    graph = import_model(_conv_model(32, 3, 5, stride, [1, 1, 1, 1]))
    stats: dict = {}
    lowered = optimize(graph, stats, lowerings=lowering_rules(load_target(target_name)))
    assert [n.op_type for n in lowered.nodes] == ["Conv"]
    assert stats.get("lower_for_target", {"changed": 0})["changed"] == 0


def _shuffle_model(channels: int = 12, groups: int = 3, size: int = 6, rank: int = 5):
    """ShuffleNet's channel shuffle: Reshape to [N, g, C/g, H, W] (``rank`` 4: [N, g, C/g, H*W]), swap the two
    channel axes, Reshape back."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Reshape", ["r", "split"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 1, 3, 4][:rank]),
             helper.make_node("Reshape", ["t", "back"], ["y"])]
    shape = [1, channels, size, size]
    spatial = [size, size] if rank == 5 else [size * size]
    return _model(nodes, shape, shape, [i64("split", [1, groups, channels // groups] + spatial), i64("back", shape)],
                  opset=13)


def test_a_channel_shuffle_is_lowered_to_the_npus_rank_and_computes_the_same():
    target = load_target("edge-soc")
    model = _shuffle_model()
    plain = optimize(import_model(model))
    (transpose,) = [n for n in plain.nodes if n.op_type == "Transpose"]
    assert not kernel_support(target, transpose, "npu")   # rank 5 against the NPU's max_rank 4
    lowered = optimize(import_model(model), lowerings=lowering_rules(target))
    (transpose,) = [n for n in lowered.nodes if n.op_type == "Transpose"]
    assert transpose.inputs[0].shape == (1, 3, 4, 36) and transpose.attrs["perm"] == [0, 2, 1, 3]
    assert all(kernel_support(target, n, "npu") for n in lowered.nodes)
    x = np.random.default_rng(3).standard_normal((1, 12, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_run(to_onnx(lowered), x), _run(model, x))


@pytest.mark.parametrize("perm, merged_shape, merged_perm", [
    ([0, 2, 1, 3, 4], (2, 3, 4, 30), [0, 2, 1, 3]),      # the shuffle: H and W stay together
    ([0, 1, 2, 3, 4], (720,), [0]),                       # nothing moves: one axis
    ([4, 3, 2, 1, 0], (2, 3, 4, 5, 6), [4, 3, 2, 1, 0]),  # every axis moves alone
    ([], (2, 3, 4, 5, 6), [4, 3, 2, 1, 0]),               # ONNX's default: reversed
    ([2, 3, 4, 0, 1], (6, 120), [1, 0]),                  # two runs swapped
])
def test_the_axes_a_permutation_keeps_together_merge(perm, merged_shape, merged_perm):
    from hetc.target.lowering import _merged_axes
    assert _merged_axes((2, 3, 4, 5, 6), perm) == (merged_shape, merged_perm)
    x = np.arange(720).reshape(2, 3, 4, 5, 6)
    full = np.transpose(x, perm or None)
    assert np.array_equal(np.transpose(x.reshape(merged_shape), merged_perm).reshape(full.shape), full)


def test_a_shuffle_the_npu_already_runs_is_left_alone():
    stats: dict = {}
    optimize(import_model(_shuffle_model(rank=4)), stats, lowerings=lowering_rules(load_target("edge-soc")))
    assert stats.get("lower_for_target", {"changed": 0})["changed"] == 0


def _rotate_half_model():
    """Llama's rotate_half: x split into halves, the second negated and put first."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Split", ["r"], ["a", "b"], axis=-1, num_outputs=2),
             helper.make_node("Neg", ["b"], ["nb"]),
             helper.make_node("Concat", ["nb", "a"], ["y"], axis=-1)]
    return _model(nodes, [1, 4, 16], [1, 4, 16], opset=18)


def test_a_neg_is_a_mul_by_minus_one_where_an_npu_multiplies_but_cannot_negate():
    target = load_target("multi-npu")
    model = _rotate_half_model()
    (neg,) = [n for n in optimize(import_model(model)).nodes if n.op_type == "Neg"]
    assert not kernel_support(target, neg, "npu0")
    lowered = optimize(import_model(model), lowerings=lowering_rules(target))
    assert "Neg" not in {n.op_type for n in lowered.nodes}   # the Neg reads one half of a Split: anchored there
    (mul,) = [n for n in lowered.nodes if n.op_type == "Mul"]
    assert kernel_support(target, mul, "npu0") and float(mul.inputs[1].const) == -1.0
    x = np.random.default_rng(5).standard_normal((1, 4, 16)).astype(np.float32)
    x[0, 0, 8:10] = [0.0, -0.0]                                # signed zeros flip the same way
    np.testing.assert_array_equal(_run(to_onnx(lowered), x), _run(model, x))
    ours = _run(to_onnx(lowered), x)
    assert np.signbit(ours[0, 0, :2]).tolist() == [True, False]


def test_a_neg_every_accelerator_runs_is_left_alone():
    from pathlib import Path

    from hetc.target import target_from_toml_text
    text = (Path(__file__).resolve().parent.parent / "hetc/target/presets/edge-soc.toml").read_text()
    assert text.count('"Relu", "LeakyRelu"') >= 1
    negating = target_from_toml_text(text.replace('"Relu", "LeakyRelu"', '"Neg", "Relu", "LeakyRelu"', 1))
    for target, changed in ((load_target("edge-soc"), 1), (negating, 0)):   # edge-soc's NPU cannot negate
        stats: dict = {}
        optimize(import_model(_rotate_half_model()), stats, lowerings=lowering_rules(target))
        assert stats.get("lower_for_target", {"changed": 0})["changed"] == changed


def _layer_norms_model(count: int = 1, axis: int = -1, mean_output: bool = False, bias: bool = True,
                       shape: tuple[int, ...] = (1, 8, 64), dtype=np.float32):
    """``count`` LayerNormalizations in a chain (each after a Relu), with seeded scales and biases."""
    rng = np.random.default_rng(11)
    width = shape[-1] if axis == -1 else int(np.prod(shape[axis:]))
    norm_shape = shape[axis:]
    nodes, inits, current = [], [], "x"
    for k in range(count):
        inits.append(numpy_helper.from_array((1 + 0.5 * rng.standard_normal(norm_shape)).astype(dtype),
                                             f"gamma{k}"))
        inputs = [f"r{k}", f"gamma{k}"]
        if bias:
            inits.append(numpy_helper.from_array(rng.standard_normal(norm_shape).astype(dtype), f"beta{k}"))
            inputs.append(f"beta{k}")
        out = "y" if k == count - 1 else f"n{k}"
        outputs = [out, f"mean{k}"] if mean_output else [out]
        nodes += [helper.make_node("Relu", [current], [f"r{k}"]),
                  helper.make_node("LayerNormalization", inputs, outputs, axis=axis, epsilon=1e-5)]
        current = out
    assert width > 0
    model = _model(nodes, list(shape), list(shape), inits)
    if dtype != np.float32:
        for io in (*model.graph.input, *model.graph.output):
            io.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    if mean_output:   # the Mean output read by a graph output of its own
        model.graph.output.append(helper.make_tensor_value_info(f"mean{count - 1}", TensorProto.FLOAT,
                                                                   [*shape[:-1], 1]))
    return model


def test_a_layer_norm_becomes_a_row_mean_and_an_rms_norm_where_the_npus_lack_it():
    target = load_target("multi-npu")
    model = _layer_norms_model(count=2)
    (norm, _) = [n for n in optimize(import_model(model)).nodes if n.op_type == "LayerNormalization"]
    assert not any(kernel_support(target, norm, d) for d in target.devices if d != "cpu")
    lowered = optimize(import_model(model), lowerings=lowering_rules(target))
    labels = [node_label(n) for n in lowered.nodes]
    # the bias Add is the norm's epilogue, and so is the next Relu
    assert labels == ["Relu", "MatMul", "Sub", "RMSNormalization+Add+Relu", "MatMul", "Sub", "RMSNormalization+Add"]
    assert all(kernel_support(target, n, "npu0") for n in lowered.nodes)
    columns = {n.inputs[1].name for n in lowered.nodes if n.op_type == "MatMul"}
    assert len(columns) == 1                                   # both norms read one constant column of 1/64
    x = np.random.default_rng(3).standard_normal((1, 8, 64)).astype(np.float32) * 3 + 1
    np.testing.assert_allclose(_run(to_onnx(lowered), x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_a_lowered_layer_norm_runs_on_the_npus_and_validates():
    from hetc.pipeline import BuildOptions, build

    result = build(_layer_norms_model(count=2, bias=False), BuildOptions(target="multi-npu", validate=True))
    assert result.summary["validation"]["passed"]
    devices = {result.schedule.placement[n.id] for n in result.graph if n.id in result.schedule.placement}
    assert "cpu" not in devices


@pytest.mark.parametrize("target_name, model_kwargs", [
    ("edge-soc", {}),                            # the DSP runs LayerNormalization
    ("multi-npu", {"axis": -2, "shape": (1, 4, 8, 16)}),   # over two axes: not one row's RMS
    ("multi-npu", {"mean_output": True}),        # its Mean is read: the lowered nodes do not compute it
    ("multi-npu", {"dtype": np.float16}),        # rounded three times, not once: off by several ulps
])
def test_a_layer_norm_is_left_alone_where_the_lowering_does_not_apply(target_name, model_kwargs):
    stats: dict = {}
    optimize(import_model(_layer_norms_model(**model_kwargs)), stats, lowerings=lowering_rules(load_target(target_name)))
    assert stats.get("lower_for_target", {"changed": 0})["changed"] == 0


@settings(max_examples=12, deadline=None)
@given(width=st.integers(1, 200), rows=st.integers(1, 6), offset=st.sampled_from([0.0, 3.0, -50.0]),
       epsilon=st.sampled_from([1e-5, 1e-3, 0.1]))
def test_a_lowered_layer_norm_computes_what_the_norm_does(width, rows, offset, epsilon):
    """Any width (powers of two or not: 1/d is then rounded), rows off-centre, epsilons large and small."""
    rng = np.random.default_rng(width * 7 + rows)
    inits = [numpy_helper.from_array((1 + 0.5 * rng.standard_normal(width)).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "beta")]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["y"], axis=-1, epsilon=epsilon)]
    model = _model(nodes, [rows, width], [rows, width], inits)
    lowered = optimize(import_model(model), lowerings=lowering_rules(load_target("multi-npu")))
    assert "LayerNormalization" not in {n.op_type for n in lowered.nodes}
    x = (rng.standard_normal((rows, width)) * 2 + offset).astype(np.float32)
    np.testing.assert_allclose(_run(to_onnx(lowered), x), _run(model, x), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("scheduler, lowered", [("single:cpu", False), ("single:npu0", True), ("heft", True)])
def test_a_single_device_strategy_lowers_for_that_device_alone(scheduler, lowered):
    """On the CPU alone the norm stays one kernel (its lowering is three there); on npu0 alone it must be
    lowered, since the NPU has no LayerNormalization."""
    from hetc.pipeline import BuildOptions, build

    result = build(_layer_norms_model(), BuildOptions(target="multi-npu", scheduler=scheduler, validate=True))
    assert result.summary["validation"]["passed"]
    assert ("LayerNormalization" not in {n.op_type for n in result.graph}) == lowered
