"""Views cost nothing where the memory planner aliases them, and a Reshape of a Split's output becomes a Region of
a Reshape of the Split's input (hetc.passes.view_regions), so that it is aliased too."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from hetc.ir import Node
from hetc.ir.tiles import REGION, TILE_DOMAIN, is_alias
from hetc.passes.view_regions import VIEW_REGION_RULES, rebased_region
from hetc.pipeline import BuildOptions, build
from hetc.target import load_target
from hetc.target.ops import is_view, view_copy_reason
from target_helpers import node, val


def _region(base_shape: tuple[int, ...], axis: int, start: int, end: int) -> Node:
    x = val("x", base_shape)
    shape = list(base_shape)
    shape[axis] = end - start
    starts, ends = [0] * len(base_shape), list(base_shape)
    starts[axis], ends[axis] = start, end
    return Node(1, REGION, "region", [x], [val("r", tuple(shape))], {"starts": starts, "ends": ends}, TILE_DOMAIN)


def _view_of(region: Node, shape: tuple[int, ...]) -> Node:
    return node("Reshape", [region.outputs[0], val("s", (len(shape),), "int64", const=True)], [val("y", shape)])


def test_gpt_heads_of_a_qkv_split_are_regions_of_one_view() -> None:
    # [1, 8, 384] split into Q, K, V of [1, 8, 128], each viewed as 4 heads of 32: the base as 12 heads.
    for k in range(3):
        rebased = rebased_region(_region((1, 8, 384), 2, 128 * k, 128 * (k + 1)),
                                 _view_of(_region((1, 8, 384), 2, 128 * k, 128 * (k + 1)), (1, 8, 4, 32)))
        assert rebased == ((1, 8, 12, 32), (0, 0, 4 * k, 0), (1, 8, 4 * (k + 1), 32))


def test_no_rebase_where_the_view_changes_the_axes_before_the_cut() -> None:
    region = _region((2, 8, 384), 2, 0, 128)
    assert rebased_region(region, _view_of(region, (16, 128))) is None       # merges the axes before the cut
    assert rebased_region(region, _view_of(region, (2, 8, 2, 64))) == ((2, 8, 6, 64), (0, 0, 0, 0), (2, 8, 2, 64))
    unaligned = _region((1, 8, 96), 2, 16, 48)                                 # 32 elements from element 16
    assert rebased_region(unaligned, _view_of(unaligned, (1, 8, 1, 32))) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.data())
def test_a_rebased_region_names_the_same_elements(base_dims: list[int], data: st.DataObject) -> None:
    """Whenever the rule applies, X viewed then cut equals X cut then viewed, element for element."""
    base = tuple(d * data.draw(st.sampled_from([1, 2, 4])) for d in base_dims)
    axis = data.draw(st.integers(0, len(base) - 1))
    start = data.draw(st.integers(0, base[axis] - 1))
    end = data.draw(st.integers(start + 1, base[axis]))
    region = _region(base, axis, start, end)
    tail = (end - start) * math.prod(base[axis + 1:])
    split = data.draw(st.sampled_from([d for d in range(1, tail + 1) if tail % d == 0]))
    shape = (*base[:axis], split, tail // split)
    rebased = rebased_region(region, _view_of(region, shape))
    x = np.arange(math.prod(base)).reshape(base)
    cut = tuple(slice(start, end) if k == axis else slice(None) for k in range(len(base)))
    if rebased is not None:
        viewed, lo, hi = rebased
        assert np.array_equal(x.reshape(viewed)[tuple(map(slice, lo, hi))], x[cut].reshape(shape))


def test_views_are_free_where_aliased_and_a_copy_where_not() -> None:
    target = load_target("edge-soc")
    computed = node("Relu", [val("a", (1, 8, 384))], [val("x", (1, 8, 384))])
    view = node("Reshape", [computed.outputs[0], val("s", (4,), "int64", const=True)], [val("y", (1, 8, 12, 32))])
    computed.outputs[0].producer = computed
    assert view_copy_reason(view) is None
    assert all(target.cost(view, d) == 0 for d in target.devices)
    region = _region((1, 8, 384), 2, 0, 128)
    region.outputs[0].producer = region
    copy = _view_of(region, (1, 8, 4, 32))
    assert "region of another tensor" in view_copy_reason(copy)
    for name, device in target.devices.items():   # a copy kernel: a launch and the bytes in and out
        bandwidth = target.memories[device.memory].bandwidth
        assert target.cost(copy, name) == device.launch_ns + (2 * 4096 + 32) / bandwidth   # x, y, the shape


def _gpt_heads_model() -> onnx.ModelProto:
    """x @ W_qkv, split into Q, K, V, each reshaped into heads and transposed; scores Q.K^T; seeded weights."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 192)) / 8).astype(np.float32)
    shape = helper.make_tensor("heads", TensorProto.INT64, [4], [1, 8, 4, 16])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv"]),
             helper.make_node("Split", ["qkv"], ["q", "k", "v"], axis=2, num_outputs=3)]
    for name in "qkv":
        nodes += [helper.make_node("Reshape", [name, "heads"], [f"{name}4"]),
                  helper.make_node("Transpose", [f"{name}4"], [f"{name}t"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Transpose", ["kt"], ["ktt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qt", "ktt"], ["scores"]),
              helper.make_node("MatMul", ["scores", "vt"], ["out"])]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 16])],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel()), shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def test_reshaped_split_heads_are_viewed_in_place_and_validate() -> None:
    result = build(_gpt_heads_model(), BuildOptions(target="edge-soc", validate=True))
    assert result.summary["validation"]["passed"]
    views = [n for n in result.graph if is_view(n)]
    assert len(views) == 1 and views[0].outputs[0].shape == (1, 8, 12, 16)   # one view of the base
    assert sum(is_alias(n) and n.op_type == REGION for n in result.graph) == 3
    copies = [ins for program in result.bundle.programs.values() for ins in program.instructions
              if getattr(ins, "op", None) == "Reshape" and len(ins.inplace) < len(ins.outputs)]
    assert copies == []


def _halves_viewed(op: str) -> onnx.ModelProto:
    """Relu(a) split into two halves along axis 1, each viewed by ``op`` and read by a Relu."""
    views = {"Reshape": ((2, 3, 2, 2), {}), "Flatten": ((2, 12), {"axis": 1}),
             "Squeeze": ((2, 3, 4), {}), "Unsqueeze": ((2, 3, 4, 1, 1), {})}
    out_shape, attrs = views[op]
    base = (2, 6, 4, 1) if op == "Squeeze" else (2, 6, 4)
    operand = {"Reshape": ("shape", list(out_shape)), "Squeeze": ("axes", [3]), "Unsqueeze": ("axes", [3, 4])}
    extra = [helper.make_tensor(operand[op][0], TensorProto.INT64, [len(operand[op][1])], operand[op][1])] \
        if op in operand else []
    nodes = [helper.make_node("Relu", ["a"], ["x"]),
             helper.make_node("Split", ["x"], ["h0", "h1"], axis=1, num_outputs=2)]
    for k in range(2):
        nodes += [helper.make_node(op, [f"h{k}", *[t.name for t in extra]], [f"v{k}"], **attrs),
                  helper.make_node("Relu", [f"v{k}"], [f"y{k}"])]
    graph = helper.make_graph(nodes, op, [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(base))],
                              [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, list(out_shape))
                               for k in range(2)], extra)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


@pytest.mark.parametrize("op", [rule.pattern.nodes[1].op for rule in VIEW_REGION_RULES])
def test_every_view_rule_rebases_and_validates(op: str) -> None:
    result = build(_halves_viewed(op), BuildOptions(target="edge-soc", validate=True))
    assert result.summary["validation"]["passed"]
    views = [n for n in result.graph if is_view(n)]
    assert len(views) == 1 and all(view_copy_reason(n) is None for n in views)   # one view of the base
    assert sum(is_alias(n) and n.op_type == REGION for n in result.graph) == 2
