"""Norms and attention from their decomposed forms (hetc.passes.normalization, hetc.passes.attention): every
rule fires on the forms exporters write and keeps ONNX's numerics (written back to ONNX at the model's opset,
on the CPU path at the op's own opset, on the NPU/DSP kernels); the conditions that must stop a rule do; the
online-softmax attention kernel agrees with onnxruntime's Attention for any key tile."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.frontend import import_model
from hetc.ir import EXPORT_IR_VERSION, to_onnx
from hetc.ir.fused import composite_parts, is_composite, node_label
from hetc.passes import optimize
from hetc.passes.attention import COMPOSITE_RULES, fuse_composites
from hetc.sim.kernels.attention import online_softmax_attention
from hetc.sim.kernels.dispatch import run_kernel
from hetc.target import load_target
from hetc.target.cost import node_bytes, node_flops, node_work

vi = helper.make_tensor_value_info
F = TensorProto.FLOAT


def _model(nodes: list, inputs: list[tuple[str, list[int]]], y_shape: list[int], inits: dict[str, np.ndarray],
           opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "composite", [vi(n, F, s) for n, s in inputs], [vi("y", F, y_shape)],
                              initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


def _reduce_mean(x: str, out: str, opset: int) -> onnx.NodeProto:
    if opset >= 18:
        return helper.make_node("ReduceMean", [x, "axes"], [out])
    return helper.make_node("ReduceMean", [x], [out], axes=[-1])


def _square(x: str, out: str, pow_form: bool) -> onnx.NodeProto:
    return helper.make_node("Pow", [x, "two"], [out]) if pow_form else helper.make_node("Mul", [x, x], [out])


def _divide(num: str, den: str, out: str, form: str) -> list[onnx.NodeProto]:
    if form == "div":
        return [helper.make_node("Div", [num, den], [out])]
    if form == "reciprocal":
        return [helper.make_node("Reciprocal", [den], [out + "_r"]), helper.make_node("Mul", [out + "_r", num], [out])]
    return [helper.make_node("Div", ["one", den], [out + "_r"]), helper.make_node("Mul", [num, out + "_r"], [out])]


def _norm_params(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    return {"two": _f32(2.0), "one": _f32(1.0), "eps": _f32(1e-5), "axes": np.array([-1], np.int64),
            "gamma": (1 + 0.1 * rng.standard_normal(size)).astype(np.float32),
            "beta": (0.1 * rng.standard_normal(size)).astype(np.float32)}


def layer_norm(rng: np.random.Generator, opset: int = 17, pow_form: bool = True, divide: str = "div",
               affine: str = "both") -> onnx.ModelProto:
    """x[2,5,16] -> the decomposed layer norm over the last axis -> y; the residual stream reads x too."""
    nodes = [_reduce_mean("x", "mu", opset), helper.make_node("Sub", ["x", "mu"], ["d"]), _square("d", "sq", pow_form),
             _reduce_mean("sq", "var", opset), helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]), *_divide("d", "sd", "n", divide)]
    last = "n"
    if affine in ("both", "scale"):
        nodes.append(helper.make_node("Mul", ["gamma", "n"], ["g"]))
        last = "g"
    if affine == "both":
        nodes.append(helper.make_node("Add", ["g", "beta"], ["b"]))
        last = "b"
    nodes.append(helper.make_node("Add", [last, "x"], ["y"]))   # a residual: x stays read outside the norm
    return _model(nodes, [("x", [2, 5, 16])], [2, 5, 16], _norm_params(rng, 16), opset)


def rms_norm(rng: np.random.Generator, opset: int = 17, pow_form: bool = True, divide: str = "reciprocal",
             weight: bool = True) -> onnx.ModelProto:
    """x[1,7,32] -> Llama's RMSNorm (x * rsqrt(mean(x^2) + eps) * w) -> y; x also feeds a residual Add."""
    nodes = [_square("x", "sq", pow_form), _reduce_mean("sq", "ms", opset),
             helper.make_node("Add", ["ms", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             *_divide("x", "sd", "n", divide)]
    if weight:
        nodes.append(helper.make_node("Mul", ["n", "gamma"], ["g"]))
    nodes.append(helper.make_node("Add", ["g" if weight else "n", "x"], ["y"]))
    return _model(nodes, [("x", [1, 7, 32])], [1, 7, 32], _norm_params(rng, 32), opset)


def attention(rng: np.random.Generator, opset: int = 17, scale: str = "mul", mask: str = "none",
              gqa: bool = False, q_len: int = 6, kv_len: int = 6) -> onnx.ModelProto:
    """Q[1,4,q_len,8], K and V [1,kv,kv_len,8] (kv = 2 with grouped-query heads repeated, else 4) ->
    MatMul(Q, K^T) -> scale -> mask -> Softmax -> MatMul(., V) -> y."""
    heads, kv_heads, size = 4, 2 if gqa else 4, 8
    inits: dict[str, np.ndarray] = {"scale": _f32(1 / math.sqrt(size)), "root": _f32(math.sqrt(size)),
                                    "ax": np.array([2], np.int64),
                                    "es": np.array([1, kv_heads, heads // kv_heads, kv_len, size], np.int64),
                                    "rs": np.array([1, heads, kv_len, size], np.int64)}
    nodes, k, v, q = [], "k", "v", "q"
    if gqa:
        for t in ("k", "v"):
            unsqueeze = (helper.make_node("Unsqueeze", [t, "ax"], [t + "u"]) if opset >= 13
                         else helper.make_node("Unsqueeze", [t], [t + "u"], axes=[2]))
            nodes += [unsqueeze, helper.make_node("Expand", [t + "u", "es"], [t + "e"]),
                      helper.make_node("Reshape", [t + "e", "rs"], [t + "r"])]
        k, v = "kr", "vr"
    if scale == "q":
        nodes.append(helper.make_node("Mul", ["q", "scale"], ["qs"]))
        q = "qs"
    nodes += [helper.make_node("Transpose", [k], ["kt"], perm=[0, 1, 3, 2]), helper.make_node("MatMul", [q, "kt"], ["s"])]
    last = "s"
    if scale in ("mul", "div"):
        nodes.append(helper.make_node("Mul", ["s", "scale"], ["s2"]) if scale == "mul"
                     else helper.make_node("Div", ["s", "root"], ["s2"]))
        last = "s2"
    offset = kv_len - q_len
    if mask in ("causal", "lower-right"):
        shift = 1 if mask == "causal" else 1 + offset
        inits["m"] = np.triu(np.full((q_len, kv_len), -1e9, np.float32), shift)
    elif mask == "float":
        inits["m"] = rng.standard_normal((1, 1, q_len, kv_len)).astype(np.float32)
    elif mask == "where":
        inits["c"], inits["ninf"] = np.tril(np.ones((q_len, kv_len), bool)), _f32(-np.inf)
    if mask in ("causal", "lower-right", "float"):
        nodes.append(helper.make_node("Add", ["m", last], ["s3"]))
        last = "s3"
    elif mask == "where":
        nodes.append(helper.make_node("Where", ["c", last, "ninf"], ["s3"]))
        last = "s3"
    nodes += [helper.make_node("Softmax", [last], ["p"], axis=3 if opset < 13 else -1),
              helper.make_node("MatMul", ["p", v], ["y"])]
    inputs = [("q", [1, heads, q_len, size]), ("k", [1, kv_heads, kv_len, size]), ("v", [1, kv_heads, kv_len, size])]
    return _model(nodes, inputs, [1, heads, q_len, size], inits, opset)


# rule name -> [(model builder, op of the one composite node, attributes it must carry)]
def gelu(rng: np.random.Generator, opset: int = 17, form: str = "erf") -> onnx.ModelProto:
    """A decomposed Gelu as exporters write it (erf: x / sqrt 2; tanh: with Pow(x, 3)), then a residual Add."""
    inits = {"one": _f32(1.0), "half": _f32(0.5), "r": rng.standard_normal((4, 16)).astype(np.float32)}
    if form == "erf":
        inits["sqrt2"] = _f32(math.sqrt(2.0))
        nodes = [helper.make_node("Div", ["x", "sqrt2"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
                 helper.make_node("Add", ["b", "one"], ["c"])]
    else:
        inits.update(three=_f32(3.0), k=_f32(0.044715), s=_f32(math.sqrt(2.0 / math.pi)))
        nodes = [helper.make_node("Pow", ["x", "three"], ["p"]), helper.make_node("Mul", ["p", "k"], ["q"]),
                 helper.make_node("Add", ["x", "q"], ["t0"]), helper.make_node("Mul", ["t0", "s"], ["t1"]),
                 helper.make_node("Tanh", ["t1"], ["t2"]), helper.make_node("Add", ["t2", "one"], ["c"])]
    nodes += [helper.make_node("Mul", ["x", "c"], ["d"]), helper.make_node("Mul", ["d", "half"], ["g"]),
              helper.make_node("Add", ["g", "r"], ["y"])]
    return _model(nodes, [("x", [4, 16])], [4, 16], inits, opset)


CASES: dict[str, list[tuple]] = {
    "Gelu erf form": [(lambda r, o=o: gelu(r, o), "Gelu", {"approximate": "none"}) for o in (13, 20)],
    "Gelu tanh form": [(lambda r: gelu(r, 17, "tanh"), "Gelu", {"approximate": "tanh"})],
    "LayerNormalization": [(lambda r, o=o, p=p, d=d: layer_norm(r, o, p, d), "LayerNormalization", {})
                           for o, p, d in ((13, True, "div"), (17, False, "reciprocal"), (18, True, "one-over"))],
    "LayerNormalization without bias": [(lambda r: layer_norm(r, affine="scale"), "LayerNormalization", {})],
    "LayerNormalization without affine": [(lambda r: layer_norm(r, 18, affine="none"), "LayerNormalization", {})],
    "RMSNormalization": [(lambda r, o=o, p=p, d=d: rms_norm(r, o, p, d), "RMSNormalization", {})
                         for o, p, d in ((13, True, "reciprocal"), (18, False, "div"), (23, True, "one-over"))],
    "RMSNormalization without weight": [(lambda r: rms_norm(r, weight=False), "RMSNormalization", {})],
    "scaled dot-product attention": [
        (lambda r: attention(r), "Attention", {}),
        (lambda r: attention(r, 13, "div", "causal"), "Attention", {"is_causal": 1}),
        (lambda r: attention(r, 17, "q", "float", gqa=True), "Attention", {}),
        (lambda r: attention(r, 18, "none", "where", gqa=True), "Attention", {"is_causal": 1}),
        (lambda r: attention(r, 23, "mul", "causal", gqa=True), "Attention", {"is_causal": 1}),
        # decode: one query against the cache; its causal mask (lower-right) is no upper-left triangle
        (lambda r: attention(r, 17, "mul", "lower-right", gqa=True, q_len=3, kv_len=9), "Attention", {}),
    ],
}
FLAT = [(rule, i, build, op, attrs) for rule, cases in CASES.items() for i, (build, op, attrs) in enumerate(cases)]


def test_every_rule_has_a_case() -> None:
    assert {rule.name for rule in COMPOSITE_RULES} == set(CASES)


def _feeds(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _run_alone(node, graph, feeds: dict[str, np.ndarray], device: str) -> np.ndarray:
    arrays = [None if v is None else feeds[v.name] if v.const is None else np.asarray(v.const) for v in node.inputs]
    spec = [(node.outputs[0].dtype, node.outputs[0].shape)]
    (got,) = run_kernel(device, node.op_type, node.domain, node.attrs, arrays, spec, graph.opset)
    return got


@pytest.mark.parametrize("rule,index,build,op,attrs", FLAT, ids=[f"{r}-{i}" for r, i, *_ in FLAT])
def test_rule_fuses_and_keeps_onnx_numerics(rule: str, index: int, build, op: str, attrs: dict) -> None:
    rng = np.random.default_rng(23 + index)
    model = build(rng)
    feeds = _feeds(model, rng)
    expected = _ort(model, feeds)
    graph = optimize(import_model(model))
    composites = [n for n in graph.nodes if is_composite(n)]
    assert [n.op_type for n in composites] == [op], [node_label(n) for n in graph.nodes]
    node = composites[0]
    assert attrs.items() <= node.attrs.items() and composite_parts(node)
    if op == "Attention":   # the grouped-query heads are read unrepeated
        assert node.inputs[1].name == "k" and node.inputs[2].name == "v"
    # written back at the model's opset (decomposed below the op's opset), and one node on each device kind
    np.testing.assert_allclose(_ort(to_onnx(graph), feeds), expected, rtol=1e-5, atol=1e-5)
    # the residual Add after a norm is the composite's epilogue: one node either way
    assert len(graph.nodes) == 1 and node_label(node) == (op if op == "Attention" else f"{op}+Add")
    for device in ("cpu", "npu", "dsp"):
        got = _run_alone(node, graph, feeds, device)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=device)


def _composites(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in fuse_composites(import_model(model)).nodes if is_composite(n)]


def test_a_norm_over_another_axis_is_left_alone() -> None:
    model = layer_norm(np.random.default_rng(1), opset=13)
    for node in model.graph.node:
        if node.op_type == "ReduceMean":
            node.attribute[0].ints[:] = [1]
    assert _composites(model) == []


def test_a_norm_whose_intermediate_is_read_elsewhere_is_left_alone() -> None:
    model = rms_norm(np.random.default_rng(2))
    model.graph.output.append(vi("ms", F, [1, 7, 1]))
    assert _composites(model) == []


def test_a_mask_that_is_not_a_causal_triangle_stays_an_input() -> None:
    graph = optimize(import_model(attention(np.random.default_rng(3), mask="lower-right", q_len=3, kv_len=9)))
    (node,) = graph.nodes
    assert "is_causal" not in node.attrs and node.inputs[3].is_const


def test_a_soft_where_fill_is_not_attention() -> None:
    model = attention(np.random.default_rng(4), mask="where")
    for init in model.graph.initializer:
        if init.name == "ninf":
            init.CopyFrom(numpy_helper.from_array(_f32(-5.0), "ninf"))
    assert _composites(model) == []


def test_scores_read_elsewhere_are_not_attention() -> None:
    model = attention(np.random.default_rng(5))
    model.graph.output.append(vi("s2", F, [1, 4, 6, 6]))
    assert _composites(model) == []


def test_repeated_heads_read_elsewhere_stay_repeated() -> None:
    model = attention(np.random.default_rng(6), gqa=True)
    model.graph.output.append(vi("kr", F, [1, 4, 6, 8]))
    (node,) = [n for n in fuse_composites(import_model(model)).nodes if is_composite(n)]
    assert node.inputs[1].name == "kr" and node.inputs[1].shape[1] == 4


@pytest.mark.parametrize("tile", [1, 5, 16, 64])
@pytest.mark.parametrize("case", ["causal", "mask", "bool", "decode"])
def test_online_softmax_matches_onnxruntime_attention_for_any_key_tile(case: str, tile: int) -> None:
    rng = np.random.default_rng(7)
    q_len, kv_len = (1, 37) if case == "decode" else (24, 24)
    q = rng.standard_normal((2, 6, q_len, 16)).astype(np.float32)
    k, v = (rng.standard_normal((2, 2, kv_len, 16)).astype(np.float32) for _ in range(2))
    mask = {"mask": rng.standard_normal((1, 1, q_len, kv_len)).astype(np.float32),
            "bool": rng.random((q_len, kv_len)) > 0.3}.get(case)
    if mask is not None and mask.dtype == np.bool_:
        mask[:, 0] = True   # every query keeps a key
    causal = case == "causal"
    node = helper.make_node("Attention", ["q", "k", "v"] + (["m"] if mask is not None else []), ["y"],
                            is_causal=int(causal), scale=0.3)
    inputs = [vi("q", F, q.shape), vi("k", F, k.shape), vi("v", F, v.shape)]
    feeds = {"q": q, "k": k, "v": v}
    if mask is not None:
        inputs.append(vi("m", TensorProto.BOOL if mask.dtype == np.bool_ else F, mask.shape))
        feeds["m"] = mask
    model = helper.make_model(helper.make_graph([node], "a", inputs, [vi("y", F, None)]),
                              opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = EXPORT_IR_VERSION
    expected = _ort(model, feeds)
    got = online_softmax_attention(q, k, v, mask, 0.3, causal, tile)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_attention_cost_prices_its_softmax_on_the_vector_unit_and_moves_no_scores() -> None:
    graph = optimize(import_model(attention(np.random.default_rng(8), gqa=True, q_len=64, kv_len=64)))
    (node,) = graph.nodes
    work = node_work(node)
    scores = 4 * 64 * 64
    assert node_flops(node) == 2 * scores * (8 + 8) + work.epilogue[0][1]
    assert work.epilogue[0][0] == "softmax" and work.epilogue[0][1] > scores * 10
    assert node_bytes(node) == sum(v.nbytes for v in node.inputs) + node.outputs[0].nbytes
    target = load_target("edge-soc")
    assert target.supports(node, "dsp") and not target.supports(node, "npu")
    assert str(target.supports(node, "npu")) == (
        "Attention (fused from Unsqueeze, Expand, Reshape, Unsqueeze, Expand, Reshape, Transpose, MatMul, Mul, "
        "Softmax, MatMul): Attention is not in npu's op list")


@pytest.mark.parametrize("target,device,kind", [("edge-soc", "dsp", "dsp"), ("multi-npu", "npu0", "npu"),
                                                ("cpu-only", "cpu", "cpu")])
def test_a_decomposed_attention_builds_as_one_kernel_and_validates(target: str, device: str, kind: str) -> None:
    from hetc.api import validate
    rng = np.random.default_rng(9)
    model = attention(rng, mask="causal", gqa=True, q_len=16, kv_len=16)
    result = validate(model, target=target, scheduler=f"single:{device}")
    assert result.validation.passed
    kernels = [ins.kernel for p in result.bundle.programs.values() for ins in p.instructions
               if ins.kind == "compute"]
    assert set(kernels) == {f"{kind}.Attention"}     # the fused kernel, never the decomposed ops
    assert len(kernels) == 1 or kind == "npu"          # multi-npu may cut it by heads across its cores


def test_a_gamma_that_broadcasts_along_another_axis_stays_outside_the_norm() -> None:
    rng = np.random.default_rng(10)
    model = layer_norm(rng, affine="scale")
    for init in model.graph.initializer:
        if init.name == "gamma":   # (5, 1): one scale per row, not per normalised element
            init.CopyFrom(numpy_helper.from_array(np.linspace(0.5, 1.5, 5, dtype=np.float32).reshape(5, 1), "gamma"))
    graph = fuse_composites(import_model(model))
    (norm,) = [n for n in graph.nodes if is_composite(n)]
    assert np.all(norm.inputs[1].const == 1) and "Mul" in [n.op_type for n in graph.nodes]
    feeds = _feeds(model, rng)
    np.testing.assert_allclose(_ort(to_onnx(graph), feeds), _ort(model, feeds), rtol=1e-5, atol=1e-5)
