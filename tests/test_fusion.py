"""Epilogue fusion: every rule of the table fires on its pattern and keeps ONNX's numerics (exported back to
ONNX, on the CPU path and on hetc's NPU/DSP kernels); the conditions that must stop a rule do; capability, cost,
labels and a whole build treat a fused node as one kernel that knows its parts."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, Graph, to_onnx
from hetc.ir.fused import FUSED_DOMAIN, base_node, epilogue_of, node_label
from hetc.passes import EPILOGUE_RULES, fuse_epilogues, optimize
from hetc.passes.fusion import run_fuse_epilogues
from hetc.passes.patterns import run_rules
from hetc.sim.kernels.dispatch import run_kernel
from hetc.target import load_target
from hetc.target.cost import node_bytes, node_flops

vi = helper.make_tensor_value_info
F = TensorProto.FLOAT


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)


def _model(nodes: list, x_shape: list[int], y_shape: list[int], inits: dict[str, np.ndarray],
           opset: int = 17, extra_inputs: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fusion", [vi("x", F, x_shape)] + (extra_inputs or []), [vi("y", F, y_shape)],
                              initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _scalar(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _conv(tail: list, rng: np.random.Generator, bias: bool = True) -> onnx.ModelProto:
    """x[1,4,8,8] -> Conv 3x3 (8 channels, pads 1) -> tail (which reads "c" and writes "y")."""
    inits = {"w": _weights(rng, (8, 4, 3, 3), 36)}
    if bias:
        inits["b"] = _weights(rng, (8,), 8)
    conv = helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], pads=[1, 1, 1, 1])
    return _model([conv, *tail], [1, 4, 8, 8], [1, 8, 8, 8], {**inits, "zero": _scalar(0), "six": _scalar(6)})


def _matmul(tail: list, rng: np.random.Generator, opset: int = 17, extra: dict | None = None) -> onnx.ModelProto:
    """x[2,5,16] -> MatMul [16,12] -> tail (reads "c", writes "y")."""
    inits = {"w": _weights(rng, (16, 12), 16), "bias": _weights(rng, (12,), 12), **(extra or {})}
    return _model([helper.make_node("MatMul", ["x", "w"], ["c"]), *tail], [2, 5, 16], [2, 5, 12], inits, opset)


def _gelu_erf(x: str, div: bool, half_first: bool) -> list:
    scale = (helper.make_node("Div", [x, "sqrt2"], ["a"]) if div else helper.make_node("Mul", [x, "inv_sqrt2"], ["a"]))
    head = [scale, helper.make_node("Erf", ["a"], ["b"]), helper.make_node("Add", ["one", "b"], ["u"])]
    if half_first:
        return head + [helper.make_node("Mul", [x, "half"], ["h"]), helper.make_node("Mul", ["h", "u"], ["y"])]
    return head + [helper.make_node("Mul", [x, "u"], ["d"]), helper.make_node("Mul", ["d", "half"], ["y"])]


def _gelu_tanh(x: str, half_first: bool) -> list:
    head = [helper.make_node("Pow", [x, "three"], ["p"]), helper.make_node("Mul", ["p", "k"], ["q"]),
            helper.make_node("Add", [x, "q"], ["r"]), helper.make_node("Mul", ["r", "s2pi"], ["s"]),
            helper.make_node("Tanh", ["s"], ["t"]), helper.make_node("Add", ["t", "one"], ["u"])]
    if half_first:
        return head + [helper.make_node("Mul", [x, "half"], ["h"]), helper.make_node("Mul", ["h", "u"], ["y"])]
    return head + [helper.make_node("Mul", [x, "u"], ["v"]), helper.make_node("Mul", ["v", "half"], ["y"])]


GELU_CONSTANTS = {"sqrt2": _scalar(math.sqrt(2)), "inv_sqrt2": _scalar(1 / math.sqrt(2)), "one": _scalar(1.0),
                  "half": _scalar(0.5), "three": _scalar(3.0), "k": _scalar(0.044715),
                  "s2pi": _scalar(math.sqrt(2 / math.pi))}


def _bias_gelu(rng: np.random.Generator, **form: bool) -> onnx.ModelProto:
    return _matmul([helper.make_node("Add", ["c", "bias"], ["cb"]), *_gelu_erf("cb", **form)], rng,
                   extra=GELU_CONSTANTS)


# rule name -> (model builder, label of the one fused node it must leave)
CASES: dict[str, list[tuple]] = {
    "bias Add packed into the weight": [
        (lambda r: _matmul([helper.make_node("Add", ["bias", "c"], ["y"])], r), "MatMul+Add"),
        (lambda r: _matmul([helper.make_node("Add", ["c", "bias_row"], ["r"]), helper.make_node("Relu", ["r"], ["y"])],
                           r, extra={"bias_row": _weights(r, (1, 12), 12)}), "MatMul+Add+Relu"),
    ],
    "bias or residual Add": [   # a bias per row and column is no row of the weight
        (lambda r: _matmul([helper.make_node("Add", ["wide_bias", "c"], ["y"])], r,
                           extra={"wide_bias": _weights(r, (5, 12), 12)}), "MatMul+Add"),
        (lambda r: _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Add", ["c", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
                          [1, 4, 6, 6], [1, 4, 6, 6], {"w": _weights(r, (4, 4, 3, 3), 36)}), "Conv+Add+Relu"),
    ],
    "two-input Sum as Add": [(lambda r: _model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                                                helper.make_node("Sum", ["x", "c"], ["s"]),
                                                helper.make_node("Relu", ["s"], ["y"])],
                                               [1, 4, 6, 6], [1, 4, 6, 6], {"w": _weights(r, (4, 4, 3, 3), 36)}),
                              "Conv+Add+Relu")],
    "scale Mul": [(lambda r: _matmul([helper.make_node("Mul", ["c", "scale"], ["m"]),
                                      helper.make_node("Add", ["m", "mask"], ["y"])], r,
                                     extra={"scale": _scalar(0.25),
                                            "mask": np.triu(np.full((5, 12), -1e4, np.float32), 1)}),
                   "MatMul+Mul+Add")],
    "Relu": [(lambda r: _conv([helper.make_node("Relu", ["c"], ["y"])], r), "Conv+Relu")],
    "Clip (Relu6)": [(lambda r: _conv([helper.make_node("Clip", ["c", "zero", "six"], ["y"])], r, bias=False),
                      "Conv+Clip"),
                     (lambda r: _conv([helper.make_node("Clip", ["c", "", "six"], ["y"])], r), "Conv+Clip")],
    "LeakyRelu": [(lambda r: _model([helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=1),
                                     helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2)],
                                    [3, 16], [3, 10], {"w": _weights(r, (10, 16), 16), "b": _weights(r, (10,), 10)}),
                   "Gemm+LeakyRelu")],
    "Sigmoid": [(lambda r: _model([helper.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2]),
                                   helper.make_node("Sigmoid", ["c"], ["y"])],
                                  [1, 4, 5, 5], [1, 3, 11, 11], {"w": _weights(r, (4, 3, 3, 3), 36)}),
                 "ConvTranspose+Sigmoid")],
    "SiLU x*Sigmoid(x)": [(lambda r: _conv([helper.make_node("Sigmoid", ["c"], ["s"]),
                                            helper.make_node("Mul", ["s", "c"], ["y"])], r), "Conv+SiLU")],
    "HardSwish": [(lambda r: _conv([helper.make_node("HardSwish", ["c"], ["y"])], r), "Conv+HardSwish")],
    "Gelu op": [(lambda r: _matmul([helper.make_node("Gelu", ["c"], ["y"], approximate="tanh")], r, opset=20),
                 "MatMul+Gelu")],
    # the pipeline makes a decomposed Gelu a composite first (hetc.passes.fusion.GELU_RULES), then fuses that
    "Gelu composite": [(lambda r: _bias_gelu(r, div=False, half_first=True), "MatMul+Add+Gelu")],
    "Gelu erf form": [(lambda r, d=d, h=h: _bias_gelu(r, div=d, half_first=h), "MatMul+Add+Gelu")
                      for d in (True, False) for h in (True, False)],
    "Gelu tanh form": [(lambda r, h=h: _matmul(_gelu_tanh("c", h), r, extra=GELU_CONSTANTS), "MatMul+Gelu")
                       for h in (True, False)],
}
FLAT = [(rule, i, build, label) for rule, cases in CASES.items() for i, (build, label) in enumerate(cases)]


def test_every_rule_has_a_case() -> None:
    assert {rule.name for rule in EPILOGUE_RULES} == set(CASES)


def _inputs(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("rule,index,build,label", FLAT, ids=[f"{r}-{i}" for r, i, _, _ in FLAT])
def test_rule_fuses_and_keeps_onnx_numerics(rule: str, index: int, build, label: str) -> None:
    rng = np.random.default_rng(17 + index)
    model = build(rng)
    feeds = _inputs(model, rng)
    expected = _ort(model, feeds)
    graph = optimize(import_model(model))
    fused = [n for n in graph.nodes if n.domain == FUSED_DOMAIN]
    assert [node_label(n) for n in fused] == [label] and len(graph.nodes) == 1
    node = fused[0]
    np.testing.assert_allclose(_ort(to_onnx(graph), feeds), expected, rtol=1e-5, atol=1e-5)
    arrays = [None if v is None else feeds[v.name] if v.const is None else np.asarray(v.const) for v in node.inputs]
    spec = [(node.outputs[0].dtype, node.outputs[0].shape)]
    for device in ("cpu", "npu", "dsp"):   # the CPU path runs the original nodes; NPU/DSP one fused kernel
        (got,) = run_kernel(device, node.op_type, node.domain, node.attrs, arrays, spec, graph.opset)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=device)


def _fused_count(model: onnx.ModelProto) -> int:
    return sum(n.domain == FUSED_DOMAIN for n in fuse_epilogues(import_model(model)).nodes)


def test_a_base_output_with_another_reader_is_not_fused() -> None:
    model = _conv([helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Add", ["r", "c"], ["y"])],
                  np.random.default_rng(1))
    assert _fused_count(model) == 0


def test_a_base_output_that_is_a_graph_output_is_not_fused() -> None:
    model = _conv([helper.make_node("Relu", ["c"], ["y"])], np.random.default_rng(2))
    model.graph.output.append(vi("c", F, [1, 8, 8, 8]))
    assert _fused_count(model) == 0


def test_an_add_that_broadcasts_the_result_larger_is_not_fused() -> None:
    rng = np.random.default_rng(3)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "big"], ["y"])],
                   [1, 16], [3, 12], {"w": _weights(rng, (16, 12), 16), "big": _weights(rng, (3, 12), 12)})
    assert _fused_count(model) == 0


def test_a_gelu_with_a_wrong_constant_is_not_fused() -> None:
    model = _matmul(_gelu_erf("c", div=True, half_first=False), np.random.default_rng(4),
                    extra={**GELU_CONSTANTS, "half": _scalar(0.6)})
    graph = fuse_epilogues(import_model(model))
    assert [n.op_type for n in graph.nodes].count("Erf") == 1 and all(n.domain == "" for n in graph.nodes)


def test_an_elementwise_op_without_a_base_producer_is_left_alone() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [2, 3], [2, 3], {})
    assert run_rules(import_model(model), EPILOGUE_RULES) == {r.name: 0 for r in EPILOGUE_RULES}


def _conv_clip_nodes() -> tuple[Graph, Graph]:
    model = _conv([helper.make_node("Clip", ["c", "zero", "six"], ["y"])], np.random.default_rng(5))
    graph = import_model(model)
    return graph, fuse_epilogues(graph)


def test_fused_cost_is_one_launch_with_both_ops_work_and_no_intermediate_traffic() -> None:
    target = load_target("edge-soc")
    plain, fused = _conv_clip_nodes()
    conv, clip = plain.nodes
    (node,) = fused.nodes
    assert node_flops(node) == node_flops(conv) + node_flops(clip)
    assert node_bytes(node) == node_bytes(conv)   # x, w, b in; y out; the Conv's output never leaves
    npu = target.devices["npu"]
    separate = target.cost(conv, "npu") + target.cost(clip, "npu")
    assert target.cost(node, "npu") <= separate - npu.launch_ns
    assert target.cost(node, "npu") >= target.cost(conv, "npu")


def test_capability_quotes_the_part_a_device_lacks() -> None:
    target = load_target("edge-soc")
    graph = fuse_epilogues(import_model(_bias_gelu(np.random.default_rng(6), div=True, half_first=False)))
    (node,) = graph.nodes
    assert [p.op for p in epilogue_of(node)] == ["Add", "Gelu"]
    reason = target.supports(node, "npu")
    assert not reason
    assert str(reason).startswith("MatMul+Add+Gelu: epilogue part Gelu: ") and "not in npu's op list" in str(reason)
    assert target.supports(node, "dsp")
    _, conv_clip = _conv_clip_nodes()
    assert target.supports(conv_clip.nodes[0], "npu") and not target.supports(conv_clip.nodes[0], "dsp")


def test_pipeline_counts_fusions_and_export_restores_the_original_ops() -> None:
    plain, _ = _conv_clip_nodes()
    stats: dict = {}
    graph = optimize(plain, stats)
    assert stats["fuse_epilogues"]["changed"] == 1
    # the Conv's bias travels in its weight (PACK_RULES): Slices and Reshapes cut the two apart again
    assert [n.op_type for n in to_onnx(graph).graph.node] == ["Slice", "Slice", "Reshape", "Reshape", "Conv", "Clip"]
    assert run_fuse_epilogues(graph) == 0   # nothing left to fuse


@pytest.mark.parametrize("device", ["npu", "cpu"])
def test_a_fused_build_runs_one_kernel_and_validates_against_the_original_model(device: str) -> None:
    from hetc.api import validate
    rng = np.random.default_rng(8)
    model = _conv([helper.make_node("Clip", ["c", "zero", "six"], ["y"])], rng)
    result = validate(model, target="edge-soc", scheduler=f"single:{device}")
    assert result.validation.passed
    kernels = [ins.kernel for p in result.bundle.programs.values() for ins in p.instructions
               if ins.kind == "compute"]
    assert kernels == [f"{device}.Conv+Clip"]


def test_a_part_the_npu_lacks_stays_apart_where_the_target_says_so() -> None:
    """``fusion_check``: MatMul+Add runs on edge-soc's NPU and DSP, MatMul+Add+Gelu on the DSP only, so the Gelu
    stays a composite of its own (the projection keeps the NPU); a target whose NPU has Gelu, and one with
    no accelerator, fuse it. The numerics stay onnxruntime's either way."""
    from pathlib import Path

    from hetc.target import target_from_toml_text
    from hetc.target.lowering import fusion_check

    rng = np.random.default_rng(8)
    model = _bias_gelu(rng, div=True, half_first=False)
    feeds = _inputs(model, rng)
    text = (Path(__file__).resolve().parent.parent / "hetc/target/presets/edge-soc.toml").read_text()
    # (a Gelu part needs the ops of its steps: hetc.ir.fused.part_ops)
    gelu_npu = target_from_toml_text(text.replace('"Relu", "LeakyRelu"', '"Gelu", "Erf", "Div", "Relu", "LeakyRelu"', 1))
    expected = {"edge-soc": ["MatMul+Add", "Gelu"], "cpu-only": ["MatMul+Add+Gelu"], "gelu npu": ["MatMul+Add+Gelu"]}
    for name, target in (("edge-soc", load_target("edge-soc")), ("cpu-only", load_target("cpu-only")),
                         ("gelu npu", gelu_npu)):
        graph = optimize(import_model(model), fusion_check=fusion_check(target))
        assert [node_label(n) for n in graph.nodes] == expected[name], name
        np.testing.assert_allclose(_ort(to_onnx(graph), feeds), _ort(model, feeds), rtol=1e-5, atol=1e-5)
    (matmul, _) = optimize(import_model(model), fusion_check=fusion_check(load_target("edge-soc"))).nodes
    assert load_target("edge-soc").supports(matmul, "npu")


def test_a_matmul_bias_becomes_the_last_row_of_its_weight() -> None:
    """One constant holds weight and bias (one DMA brings both); the FLOPs and the base op's view are the
    unpacked ones, the bytes are the same, and the constant bias is gone."""
    rng = np.random.default_rng(9)
    model = _matmul([helper.make_node("Add", ["c", "bias"], ["y"])], rng)
    plain = import_model(model)
    (node,) = optimize(plain).nodes
    assert [p.text() for p in epilogue_of(node)] == ["Add from='weight'"] and len(node.inputs) == 2
    packed = node.inputs[1]
    w, b = (np.asarray(v.const) for v in (plain.values["w"], plain.values["bias"]))
    np.testing.assert_array_equal(packed.const, np.concatenate([w, b[None]]))
    assert base_node(node).inputs[1].shape == (16, 12)
    matmul, add = plain.nodes
    assert node_flops(node) == node_flops(matmul) + node_flops(add)
    assert node_bytes(node) == node_bytes(matmul) + plain.values["bias"].nbytes   # b once, with w


def test_a_bias_another_node_reads_or_a_weight_of_two_matmuls_is_not_packed() -> None:
    rng = np.random.default_rng(10)
    shared_bias = _matmul([helper.make_node("Add", ["c", "bias"], ["r"]),
                           helper.make_node("Add", ["r", "bias"], ["y"])], rng)
    assert [p.text() for p in epilogue_of(optimize(import_model(shared_bias)).nodes[0])] == ["Add", "Add"]
    shared_weight = _matmul([helper.make_node("Add", ["c", "bias"], ["r"]),
                             helper.make_node("MatMul", ["x", "w"], ["c2"]),
                             helper.make_node("Add", ["r", "c2"], ["y"])], rng)
    graph = optimize(import_model(shared_weight))
    assert all(not p.packed for n in graph.nodes for p in epilogue_of(n))


def test_a_conv_bias_travels_in_its_weight_and_keeps_onnx_numerics() -> None:
    """PACK_RULES: each output channel's row holds its weights then its bias; the base op, capability and cost
    see the Conv as it was, every engine runs it (the CPU through ONNX's Slice and Reshape) to onnxruntime's
    numbers, and a tile of output channels takes its rows whole."""
    rng = np.random.default_rng(11)
    model = _conv([helper.make_node("Relu", ["c"], ["y"])], rng)
    feeds = _inputs(model, rng)
    expected = _ort(model, feeds)
    plain = import_model(model)
    stats: dict = {}
    (node,) = optimize(plain, stats).nodes
    assert stats["pack_biases"]["changed"] == 1 and node_label(node) == "Conv+Relu" and len(node.inputs) == 2
    w, b = (np.asarray(plain.values[n].const) for n in ("w", "b"))
    np.testing.assert_array_equal(node.inputs[1].const, np.concatenate([w.reshape(8, -1), b[:, None]], axis=1))
    base = base_node(node)
    assert [v.shape for v in base.inputs] == [(1, 4, 8, 8), (8, 4, 3, 3), (8,)] and "packed_bias" not in base.attrs
    target = load_target("edge-soc")
    conv, relu = plain.nodes
    assert node_flops(node) == node_flops(conv) + node_flops(relu) and node_bytes(node) == node_bytes(conv)
    assert target.cost(node, "npu") < target.cost(conv, "npu") + target.cost(relu, "npu")
    np.testing.assert_allclose(_ort(to_onnx(optimize(plain)), feeds), expected, rtol=1e-5, atol=1e-5)
    arrays = [feeds["x"], np.asarray(node.inputs[1].const)]
    for device in ("cpu", "npu", "dsp"):
        (got,) = run_kernel(device, node.op_type, node.domain, node.attrs, arrays,
                            [(node.outputs[0].dtype, node.outputs[0].shape)], plain.opset)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=device)


def test_a_conv_weight_or_bias_another_node_reads_is_not_packed() -> None:
    rng = np.random.default_rng(12)
    twice = _model([helper.make_node("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1]),
                    helper.make_node("Conv", ["x", "w", "b"], ["c2"], pads=[1, 1, 1, 1]),
                    helper.make_node("Add", ["c1", "c2"], ["y"])],
                   [1, 4, 8, 8], [1, 8, 8, 8], {"w": _weights(rng, (8, 4, 3, 3), 36), "b": _weights(rng, (8,), 8)})
    stats: dict = {}
    optimize(import_model(twice), stats)
    assert stats["pack_biases"]["changed"] == 0


def test_every_pack_rule_has_a_test() -> None:
    from hetc.passes.fusion import PACK_RULES
    assert [r.name for r in PACK_RULES] == ["Conv bias packed into the weight"]   # (the tests above)


def test_biases_are_packed_only_where_a_device_has_weights_copied_in() -> None:
    """cpu-only computes in DRAM (nothing copied: a packed weight would only be cut apart on every run);
    edge-soc's NPU and DSP have their own memories, unless the build is for the CPU alone."""
    from hetc.target.lowering import packs_biases
    assert not packs_biases(load_target("cpu-only"))
    assert packs_biases(load_target("edge-soc")) and not packs_biases(load_target("edge-soc"), ["cpu"])
    rng = np.random.default_rng(13)
    for build in (lambda r: _conv([helper.make_node("Relu", ["c"], ["y"])], r),
                  lambda r: _matmul([helper.make_node("Add", ["c", "bias"], ["y"])], r)):
        (node,) = optimize(import_model(build(rng)), pack_biases=False).nodes
        assert "packed_bias" not in node.attrs and not any(p.packed for p in epilogue_of(node))
        assert len(node.inputs) == 3   # the weight and the bias apart
