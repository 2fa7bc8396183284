"""Re-anchoring: judging an output that misses the rule end to end from hetc's own values at a few cut nodes.

The ratio rule (hetc.validate.compare) compares hetc's output with references computed from the model's
inputs. Two kinds of node make that comparison fail on honest float32 builds, because a difference far below
any defect upstream of them becomes a large one after them:

- a *step* (``STEP_OPS``: rounding in a quantizer, a Floor, a comparison, a Cast to an integer): a last-ulp
  difference in its input (hetc's Sigmoid and onnxruntime's differ by an ulp, both 1-2 ulps from the exact
  value) flips a rounding, and the output moves by a whole quantisation step;
- an output's *producer* whose float32 error in onnxruntime happens to be far below what the problem's
  conditioning allows: a Softmax of equal logits, where onnxruntime's logits are all equal (its errors cancel)
  while any other legitimate summation order gives each logit its own last-ulp error.

An output that fails the rule (numerically: not missing, not misshapen, no NaN) is then judged piecewise at the
cut nodes (every step of the top-level graph, and the producer of each such output, looked for behind data
movement). The simulator records what each cut node read and wrote (``probe``: hetc.sim ``probes``). The
output passes when all of these pass, each by the rule (ratio or fixed tolerance, as for an output):

1. each cut node's float inputs: hetc's against the references of the model in which every cut node's outputs
   are hetc's own (the *cut model*): everything upstream of a cut computes what it should;
2. each cut node's outputs: hetc's against the node alone run by the references on hetc's own inputs to it
   (integers exactly): the node itself computes what it should from what it was given;
3. the failing output: hetc's against the cut model's references: everything downstream computes what it
   should from hetc's values at the cuts.

A defect anywhere shows in one of the three (a wrong channel upstream in 1, a wrong kernel or offset at the cut
in 2, a dropped partial sum downstream in 3); what no longer counts is float32 noise amplified by a cut node,
which no rule can tell from a different, equally legitimate float32 evaluation order.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import helper

from hetc.validate.compare import OutputComparison, Tolerance, compare_value

Probe = Callable[[frozenset[str]], Mapping[str, np.ndarray]]

# Ops whose output is a step function of a float input (an integer or a rounded value).
STEP_OPS = frozenset({"Floor", "Ceil", "Round", "Sign", "QuantizeLinear", "DynamicQuantizeLinear", "ArgMax",
                      "ArgMin", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal",
                      # com.microsoft ops quantizing a float input inside
                      "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"})
# Ops that only move or relabel data: an output's producer is looked for behind them.
_DATA_MOVEMENT = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Dropout"})
_INTEGER_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16,
                            onnx.TensorProto.UINT16, onnx.TensorProto.INT32, onnx.TensorProto.UINT32,
                            onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL})


def is_step(node: onnx.NodeProto) -> bool:
    if node.op_type == "Cast":
        return any(a.name == "to" and a.i in _INTEGER_TYPES for a in node.attribute)
    return node.op_type in STEP_OPS


def cut_nodes(model: onnx.ModelProto, outputs: list[str]) -> list[onnx.NodeProto]:
    """Every step of the top-level graph, and the producer of each of ``outputs`` (behind data movement), in
    graph order; nodes with subgraphs are never cut (their bodies read the enclosing scope)."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    chosen = {id(n) for n in model.graph.node if is_step(n)}
    for name in outputs:
        node = producer.get(name)
        while node is not None and node.op_type in _DATA_MOVEMENT and node.input:
            node = producer.get(node.input[0])
        if node is not None:
            chosen.add(id(node))
    return [n for n in model.graph.node if id(n) in chosen and node_is_cuttable(n) and n.op_type != "Constant"]


def node_is_cuttable(node: onnx.NodeProto) -> bool:
    return not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def reanchor(model: onnx.ModelProto, rows: tuple[OutputComparison, ...], actual: Mapping[str, Any],
             inputs: Mapping[str, np.ndarray], tolerance: Tolerance, probe: Probe
             ) -> tuple[tuple[OutputComparison, ...], tuple[OutputComparison, ...]]:
    """(output rows, anchor rows): the rows of outputs that failed the rule numerically re-judged piecewise
    (module doc), and the comparisons at the cuts that decided them (empty when nothing was re-judged)."""
    failing = [r.name for r in rows if not r.passed and not r.note]   # a note: missing, misshapen, NaN...
    if not failing:
        return rows, ()
    constants = _constant_values(model)
    nodes = cut_nodes(model, failing)
    wanted = frozenset(v for n in nodes for v in (*n.input, *n.output) if v and v not in constants)
    probed = dict(probe(wanted)) if wanted else {}
    nodes = [n for n in nodes if all(v in probed for v in (*n.input, *n.output) if v and v not in constants)]
    if not nodes:
        return rows, ()
    try:
        anchors = _check_cut_inputs_and_outputs(model, nodes, probed, actual, inputs, tolerance, failing, constants)
    except Exception as error:  # noqa: BLE001 - a cut model the references refuse: the rule's verdict stands
        why = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        return tuple(replace(r, note=f"not re-anchored: {why}") if r.name in failing else r for r in rows), ()
    ok = all(a.passed for a in anchors)
    names = ", ".join(sorted({n.op_type for n in nodes}))
    judged = []
    for row in rows:
        if row.name not in failing:
            judged.append(row)
        elif ok:
            judged.append(replace(row, passed=True, note=f"passes from hetc's own values at {len(nodes)} cut "
                                                       f"node(s) ({names}); see the cut checks"))
        else:
            first = next(a for a in anchors if not a.passed)
            judged.append(replace(row, note=f"fails from hetc's own values at the cuts too, first at {first.name}"))
    return tuple(judged), anchors


def _check_cut_inputs_and_outputs(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
                                  probed: Mapping[str, np.ndarray], actual: Mapping[str, Any],
                                  inputs: Mapping[str, np.ndarray], tolerance: Tolerance, failing: list[str],
                                  constants: Mapping[str, np.ndarray]) -> tuple[OutputComparison, ...]:
    from hetc.validate.exact import exact_outputs
    from hetc.validate.reference import reference_outputs

    cut_outputs = {o for n in nodes for o in n.output if o}
    graph_inputs = {i.name for i in model.graph.input}
    checked_inputs = list(dict.fromkeys(
        v for n in nodes for v in n.input
        if v and v not in constants and v not in cut_outputs and v not in graph_inputs
        and np.asarray(probed[v]).dtype.kind == "f"))
    rows: list[OutputComparison] = []
    downstream = [name for name in failing if name not in cut_outputs]
    if checked_inputs or downstream:
        cut = _cut_model(model, nodes, probed, checked_inputs + downstream)
        feeds = {**inputs, **{o: probed[o] for o in cut_outputs}}
        expected = reference_outputs(cut, feeds)
        exact = exact_outputs(cut, feeds).outputs
        for v in checked_inputs:
            rows.append(compare_value(f"{v} (input of a cut node)", probed[v], expected[v], tolerance, exact.get(v)))
        for name in downstream:
            rows.append(compare_value(f"{name} (from hetc's values at the cuts)", actual[name], expected[name],
                                      tolerance, exact.get(name)))
    for name in failing:
        if name in cut_outputs:   # the output is a cut node's: what the node wrote must arrive unchanged
            rows.append(_moved_unchanged(name, actual[name], probed[name]))
    for node in nodes:
        single = _single_node_model(model, node, probed, constants)
        feeds = {v: probed[v] for v in node.input if v and v not in constants}
        expected = reference_outputs(single, feeds)
        floats = any(np.asarray(probed[o]).dtype.kind == "f" for o in node.output if o)
        exact = exact_outputs(single, feeds).outputs if floats else {}
        for o in node.output:
            if o:
                rows.append(compare_value(f"{o} ({node.op_type} on hetc's inputs)", probed[o], expected[o],
                                          tolerance, exact.get(o)))
    return tuple(rows)


def _moved_unchanged(name: str, actual: Any, written: np.ndarray) -> OutputComparison:
    actual, written = np.asarray(actual), np.asarray(written)
    same = actual.shape == written.shape and actual.dtype == written.dtype and np.array_equal(
        actual, written, equal_nan=written.dtype.kind == "f")
    error = 0.0 if same else (float(np.nanmax(np.abs(actual.astype(np.float64) - written.astype(np.float64))))
                              if actual.shape == written.shape else float("inf"))
    return OutputComparison(f"{name} (as its cut node wrote it)", tuple(written.shape), str(written.dtype), error,
                            error, 1.0 if same else 0.0, same, "" if same else "differs from what its node wrote")


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant outputs: what a cut node reads that no compute writes."""
    values = {t.name: t for t in model.graph.initializer}
    values.update({n.output[0]: n for n in model.graph.node if n.op_type == "Constant"})
    return values   # type: ignore[return-value]


def _value_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    array = np.asarray(value)
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape))


def _cut_model(model: onnx.ModelProto, nodes: list[onnx.NodeProto], probed: Mapping[str, np.ndarray],
               outputs: list[str]) -> onnx.ModelProto:
    """``model`` with the cut nodes' outputs as graph inputs (fed with hetc's values) and ``outputs`` its only
    outputs."""
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    graph = cut.graph
    removed = {tuple(n.output) for n in nodes}
    kept = [n for n in graph.node if tuple(n.output) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    cut_outputs = {o for n in nodes for o in n.output if o}
    infos = [v for v in graph.value_info if v.name not in cut_outputs]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    graph.input.extend(_value_info(o, probed[o]) for n in nodes for o in n.output if o)
    original = {o.name: o for o in graph.output}
    del graph.output[:]
    graph.output.extend(original[name] if name in original else onnx.ValueInfoProto(name=name) for name in outputs)
    return cut


def _single_node_model(model: onnx.ModelProto, node: onnx.NodeProto, probed: Mapping[str, np.ndarray],
                       constants: Mapping[str, Any]) -> onnx.ModelProto:
    """``node`` alone: its computed inputs as graph inputs, the initializers and Constants it reads kept."""
    initializers, constant_nodes, graph_inputs = [], [], []
    for v in node.input:
        if not v:
            continue
        source = constants.get(v)
        if isinstance(source, onnx.TensorProto):
            initializers.append(source)
        elif isinstance(source, onnx.NodeProto):
            constant_nodes.append(source)
        elif v not in {i.name for i in graph_inputs}:
            graph_inputs.append(_value_info(v, probed[v]))
    outputs = [_value_info(o, probed[o]) for o in node.output if o]
    graph = helper.make_graph([*constant_nodes, node], f"cut_{node.op_type}", graph_inputs, outputs, initializers)
    single = helper.make_model(graph, opset_imports=list(model.opset_import))
    single.ir_version = 9
    return single
