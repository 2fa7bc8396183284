"""Closing the shapes ONNX's whole-model inference left open.

Whole-model inference (with data propagation) already resolves most shape arithmetic. What remains is
usually a shape computed from constants it cannot see through (e.g. a Reshape target built from weights
by ConstantOfShape, or ops its data propagation does not cover). For each such node, in topological
order, the frontend folds exactly the constant producers it needs, then re-infers that one node with the
constant data in hand; if all its inputs are constant it folds the node itself. If/Loop/Scan nodes are
re-inferred with their bodies, or an If with a constant condition replaced by its branch (see
``hetc.frontend.subgraphs``); a few outputs ONNX never types get their shape from ``_SHAPE_RULES``. A shape
that still depends on runtime data is a ShapeError.

An If whose condition is only known at run time keeps its branches, but each branch is specialised to the
static types of the values it reads: a branch is imported like a model of its own (``static_graph``), so the
Ifs nested in it whose condition these types fix (a rank or size test, typically) are replaced by the branch
they take. Otherwise the branch not taken, which need not be valid for these shapes, stays inside, and no
runtime accepts the If (onnxruntime type-checks every branch when it builds a session). A branch that is still
invalid once specialised (an operator's inference rejects the shapes it gets) cannot run on these inputs:
onnxruntime fails when the If takes it. The If is then replaced by its other branch, as if its condition were
constant, with an ``InvalidBranchWarning``: every input the model computes outputs for gets the same outputs.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetc.errors import HetcError, ShapeError
from hetc.frontend.builder import build_graph, is_static, set_type, tensor_type_of, type_proto_of
from hetc.ir import Graph, Node, Value, tensor_host_type
from hetc.ir.dtypes import dtype_from_numpy
from hetc.ir.onnx_export import make_attribute
from hetc.frontend.evaluator import SHAPE_OPS, EvaluationError, evaluate, evaluate_shape_op, is_foldable
from hetc.frontend.inference import infer_shapes
from hetc.frontend.runtime_types import RuntimeTypingError, runtime_output_types
from hetc.frontend.subgraphs import (MAX_EMBEDDED_ELEMENTS, ConstantBranch, embed_constants, infer_subgraph_outputs,
                                     inline_branch)

# Suffix the importer gives to optional outputs a node omits before one it uses.
OMITTED_SUFFIX = "__omitted"
_FAILED = object()  # memo marker: this value cannot be computed at compile time


class ShapesRejected(ShapeError):
    """An operator's shape inference rejects the (static) types its inputs have: the node cannot run."""


class InvalidBranchWarning(UserWarning):
    """An If branch cannot run on the model's static shapes; the If is compiled as its other branch."""


class ShapeResolver:
    """Folds on demand and re-infers nodes until every value of ``graph`` has a static shape."""

    def __init__(self, graph: Graph, ir_version: int):
        self.graph = graph
        self.ir_version = ir_version
        self.graph_outputs = {v.name for v in graph.outputs}
        self.known: dict[str, object] = {}  # value name -> array, or _FAILED
        self.runtime_refusals: dict[int, str] = {}  # node id -> why onnxruntime could not type it
        self.folded: set[int] = set()  # ids of nodes replaced by constants
        self.runtime = _runtime_values(graph)

    def run(self) -> None:
        for node in self.graph.topo_order():
            if node.id in self.folded:
                continue
            if all(is_static(v) for v in node.outputs):
                self._take_constant_branch(node)  # static outputs, yet the branch not taken may not run
                continue
            self._resolve(node)
        embedded = [self._embed_captured_constants(n) for n in self.graph.nodes if n.has_subgraph]
        if self.folded:
            self._drop_folded()
        elif any(embedded):
            self.graph.relink()
        for value in self.graph.inputs:
            if not is_static(value):
                raise ShapeError(f"input '{value.name}' has no usable type or shape; fix it with "
                                 f"--shape {value.name}=<dims>")

    # ------------------------------------------------------------------ one node
    def _resolve(self, node: Node) -> None:
        data = {v.name: self._materialize(v) for v in node.present_inputs}
        constant = {name: a for name, a in data.items() if a is not _FAILED}
        if len(constant) == len(data) and self._fold(node):
            return
        self._infer(node, constant)
        if node.op_type in _SHAPE_RULES and not all(is_static(v) for v in node.outputs):
            _SHAPE_RULES[node.op_type](node)
        if all(is_static(v) for v in node.outputs):
            return
        if _runtime_typed(node, self.graph) and self._type_from_runtime(node, constant):
            return
        if _held_by_host(node, self.graph):
            for value in node.outputs:
                if not is_static(value) and value.dtype is not None:
                    value.host = tensor_host_type(value.dtype, value.shape)
        if all(is_static(v) or v.host is not None for v in node.outputs):
            return
        sources = _runtime_sources(node, self.runtime)
        raise _unresolved(node, next(v for v in node.outputs if not is_static(v)), sources,
                          self.runtime_refusals.get(node.id, ""))

    def _type_from_runtime(self, node: Node, constant: dict[str, object]) -> bool:
        """Type a node ONNX has no schema for (a contrib or custom-domain operator) by running it in
        onnxruntime (hetc.frontend.runtime_types); False, with the reason kept for the error, if it cannot."""
        try:
            types = runtime_output_types(node, self.graph.opset, constant, self.ir_version)  # type: ignore[arg-type]
        except RuntimeTypingError as why:
            self.runtime_refusals[node.id] = str(why)
            return False
        for value, (dtype, shape) in zip(node.outputs, types):
            value.dtype, value.shape = dtype, shape
        return True

    def _fold(self, node: Node) -> bool:
        """Replace ``node`` by constants (or, for a graph output, only learn its shapes)."""
        arrays = self._evaluate(node)
        if arrays is None:
            return False
        for value, array in zip(node.outputs, arrays):
            self.known[value.name] = array
            value.dtype = value.dtype or dtype_from_numpy(array.dtype)
            value.shape = tuple(array.shape)
        if not self.graph_outputs.intersection(v.name for v in node.outputs):
            for value, array in zip(node.outputs, arrays):
                value.const = np.asarray(array)
            self.folded.add(node.id)
        return True

    def _evaluate(self, node: Node) -> list[np.ndarray] | None:
        if not is_foldable(node):
            return None
        inputs = [None if v is None else self.known.get(v.name, v.const) for v in node.inputs]
        try:
            arrays = evaluate(node, inputs, self.graph.opset)  # type: ignore[arg-type]
        except EvaluationError:
            return None
        return arrays if len(arrays) >= len(node.outputs) else None

    def _materialize(self, value: Value) -> object:
        """The compile-time content of ``value``, folding its producers as needed; _FAILED if none."""
        if value.const is not None:
            return value.const
        if value.name in self.known:
            return self.known[value.name]
        if value.name in self.runtime:
            return _FAILED  # decided without walking up: activations can be thousands of nodes deep
        self.known[value.name] = _FAILED  # also breaks cycles through malformed graphs
        producer = value.producer
        if producer is None or not is_foldable(producer):
            return _FAILED
        if producer.op_type in SHAPE_OPS and evaluate_shape_op(producer) is not None:
            self._fold(producer)
            return self.known[value.name]
        if all(self._materialize(v) is not _FAILED for v in producer.present_inputs):
            self._fold(producer)
        return self.known[value.name]

    def _infer(self, node: Node, constant: dict[str, np.ndarray]) -> None:
        if node.has_subgraph:
            self._infer_subgraph_node(node, constant)
            return
        try:
            schema = onnx.defs.get_schema(node.op_type, self.graph.opset.get(node.domain, 1), node.domain)
        except onnx.defs.SchemaError:
            return
        proto = helper.make_node(node.op_type, [v.name if v is not None else "" for v in node.inputs],
                                 [v.name for v in node.outputs], domain=node.domain or None)
        proto.attribute.extend(make_attribute(k, a) for k, a in node.attrs.items())
        types = {v.name: type_proto_of(v) for v in node.present_inputs}
        data = {name: numpy_helper.from_array(np.asarray(a)) for name, a in constant.items()
                if np.asarray(a).dtype != object}
        opsets = [helper.make_opsetid(d, v) for d, v in self.graph.opset.items()]
        try:
            inferred = onnx.shape_inference.infer_node_outputs(schema, proto, types, data,
                                                               opset_imports=opsets, ir_version=self.ir_version)
        except Exception as error:  # noqa: BLE001 - InferenceError and friends from the C++ side
            label = f"node #{node.id} {node.op_type}" + (f" '{node.name}'" if node.name else "")
            raise ShapesRejected(f"shape inference failed: {label}: {str(error).strip().splitlines()[0]}") from error
        for value in node.outputs:
            if value.name in inferred:
                set_type(value, inferred[value.name])

    def _infer_subgraph_node(self, node: Node, constant: dict[str, np.ndarray]) -> None:
        """See hetc.frontend.subgraphs: inline an If whose condition is constant (raises ConstantBranch for
        the importer), else infer the node alone now that its inputs and captured values are known."""
        self._take_constant_branch(node)
        data = dict(constant)
        for name in node.outer_scope_names():
            if name in self.graph.values:
                array = self._materialize(self.graph.values[name])
                if array is not _FAILED:
                    data[name] = array
        data = {name: a for name, a in data.items() if np.asarray(a).dtype != object}
        if node.op_type == "If" and node.domain == "":
            self._specialize_branches(node, data)
        inferred = infer_subgraph_outputs(node, self.graph.values, data, self.graph.opset, self.ir_version)
        for value in node.outputs:
            if value.name not in inferred:
                continue
            if inferred[value.name].WhichOneof("value") != "tensor_type":
                set_type(value, inferred[value.name])
                continue
            dtype, shape = tensor_type_of(value.name, inferred[value.name])
            value.dtype = value.dtype or dtype
            if shape is not None and all(d is not None for d in shape):
                value.shape = shape
            if value.host is not None:
                value.host = tensor_host_type(value.dtype, value.shape)

    def _take_constant_branch(self, node: Node) -> None:
        """Raise ConstantBranch if ``node`` is an If whose condition is known at compile time."""
        if node.op_type != "If" or node.domain != "":
            return
        condition = self._materialize(node.inputs[0])
        if condition is not _FAILED:
            branch = "then_branch" if bool(np.asarray(condition).reshape(-1)[0]) else "else_branch"
            raise ConstantBranch(node.id, branch)

    def _specialize_branches(self, node: Node, data: dict[str, np.ndarray]) -> None:
        """Replace each branch of the If ``node`` by ``specialized_branch`` of it, given the static types of
        the outer values the branches read and the data of the small constant ones; unchanged if one of those
        values has no static type yet."""
        inputs, initializers = [], []
        for name in node.outer_scope_names():
            value = self.graph.values.get(name)
            if value is None:
                return
            array = data.get(name)
            if array is not None and np.asarray(array).size <= MAX_EMBEDDED_ELEMENTS:
                initializers.append(numpy_helper.from_array(np.asarray(array), name))
            elif value.host is not None or is_static(value):
                inputs.append(helper.make_value_info(name, type_proto_of(value)))
            else:
                return
        rejected = {}
        for key, other in (("then_branch", "else_branch"), ("else_branch", "then_branch")):
            try:
                node.attrs[key] = specialized_branch(node.attrs[key], inputs, initializers, self.graph.opset,
                                                     self.ir_version)
            except ShapesRejected as why:
                rejected[key] = (other, str(why))
        if len(rejected) == 1:
            (key, (other, why)), = rejected.items()
            label = f"If node #{node.id}" + (f" '{node.name}'" if node.name else "")
            warnings.warn(f"{label}: its {key} cannot run on these input shapes ({why}), so onnxruntime fails "
                          f"whenever the If takes it; hetc compiles the If as its {other}", InvalidBranchWarning,
                          stacklevel=2)
            raise ConstantBranch(node.id, other)

    def _embed_captured_constants(self, node: Node) -> bool:
        """Move the small compile-time constants ``node``'s bodies read from the outer scope into the bodies
        (see hetc.frontend.subgraphs.embed_constants); True if any moved."""
        constants = {}
        for name in node.outer_scope_names():
            value = self.graph.values.get(name)
            if value is None or value.host is not None or value.shape is None or None in value.shape:
                continue
            if int(np.prod(value.shape, dtype=np.int64)) > MAX_EMBEDDED_ELEMENTS:
                continue
            array = self._materialize(value)
            if array is not _FAILED and np.asarray(array).dtype != object:
                constants[name] = np.asarray(array)
        if constants:
            node.attrs = {k: embed_constants(a, constants) for k, a in node.attrs.items()}
        return bool(constants)

    # ------------------------------------------------------------------ clean-up
    def _drop_folded(self) -> None:
        """Remove folded nodes, then producers that only fed them (a local dead-code elimination: nodes
        that were dead in the model itself stay, the import is faithful)."""
        graph = self.graph
        candidates = {v.producer.id for n in graph.nodes if n.id in self.folded
                      for v in n.present_inputs if v.producer is not None}
        graph.nodes = [n for n in graph.nodes if n.id not in self.folded]
        graph.relink()
        while candidates:
            dead = {n.id for n in graph.nodes if n.id in candidates and not any(
                v.consumers or v.name in self.graph_outputs for v in n.outputs)}
            if not dead:
                break
            candidates = {v.producer.id for n in graph.nodes if n.id in dead
                          for v in n.present_inputs if v.producer is not None}
            graph.nodes = [n for n in graph.nodes if n.id not in dead]
            graph.relink()


def _runtime_values(graph: Graph) -> set[str]:
    """Names of values that depend on runtime data (so can never be folded): graph inputs and everything
    computed from them, except through Shape/Size, and whatever a node that may not fold produces."""
    runtime = {v.name for v in graph.inputs}
    for node in graph.topo_order():
        shape_only = node.op_type in SHAPE_OPS and node.domain == ""
        if not is_foldable(node) or (not shape_only and any(v.name in runtime for v in node.present_inputs)):
            runtime.update(v.name for v in node.outputs)
    return runtime


def _runtime_sources(node: Node, runtime: set[str]) -> list[str]:
    """The graph inputs whose values (not just shapes) flow into ``node``."""
    sources: set[str] = set()
    seen: set[str] = set()
    stack = [v for v in node.present_inputs if v.name in runtime]
    while stack:
        value = stack.pop()
        if value.name in seen:
            continue
        seen.add(value.name)
        producer = value.producer
        if producer is None:
            sources.add(value.name)
        elif not (producer.op_type in SHAPE_OPS and producer.domain == ""):
            stack.extend(v for v in producer.present_inputs if v.name in runtime)
    return sorted(sources)


def _runtime_typed(node: Node, graph: Graph) -> bool:
    """Whether onnxruntime may type ``node``'s open outputs: an operator ONNX has no schema for, or one of
    another domain than ONNX's own (com.microsoft, ai.onnx.ml...), whose exporter may have declared an output
    partly open that its inference leaves so."""
    if node.domain not in ("", "ai.onnx"):
        return True
    try:
        onnx.defs.get_schema(node.op_type, graph.opset.get(node.domain, 1), node.domain)
    except onnx.defs.SchemaError:
        return True
    return False


def _unresolved(node: Node, value: Value, sources: list[str], runtime_refusal: str = "") -> ShapeError:
    """The error for an output whose shape import could not close, by the most likely cause."""
    label = f"node #{node.id} {node.op_type}" + (f" '{node.name}'" if node.name else "")
    position = node.outputs.index(value)
    if value.name.endswith(f"{OMITTED_SUFFIX}{position}"):
        return ShapeError(f"unsupported optional output: {label} omits its optional output #{position} but "
                          "uses a later one, and ONNX cannot type the omitted one; hetc needs every output typed")
    if value.dtype is None:
        why = f"; {runtime_refusal}" if runtime_refusal else ""
        return ShapeError(f"unknown output type: {label} gives '{value.name}' a type shape inference cannot "
                          f"determine (custom or unknown operator?){why}; hetc needs every type")
    if node.has_subgraph:
        return ShapeError(f"unresolved subgraph output: {label} produces '{value.name}' whose shape ONNX shape "
                          "inference cannot determine through the node's subgraph; hetc needs static shapes "
                          "(export the model with the loop unrolled or the branch chosen)")
    dims = "unknown rank" if value.shape is None else "dims " + ", ".join(
        str(i) for i, d in enumerate(value.shape) if d is None)
    cause = ("data computed from input " + ", ".join(f"'{s}'" for s in sources)) if sources else "runtime data"
    return ShapeError(f"data-dependent shape: {label} produces '{value.name}' whose shape is not known before "
                      f"run time ({dims}): it depends on {cause}, or on an operator shape inference cannot "
                      "see through; hetc needs static shapes, and a --shape/--dim override cannot fix this")


# Ops whose output *size* depends on the values of a data tensor: an output whose shape stays open is a host
# tensor of run-time shape (as is any open output of a node that reads a host value).
DATA_DEPENDENT_OPS = frozenset({"Unique", "NonZero", "Compress", "NonMaxSuppression", "StringSplit"})
# Control flow whose outputs may be shaped by the data: an If whose branches return different shapes, a Loop
# whose trip count or condition is computed at run time, a Scan over a run-time-shaped input. The CPU runs
# them (hetc.sim's control-flow kernels), so their open outputs are host tensors too.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


def _held_by_host(node: Node, graph: Graph) -> bool:
    """Whether the open outputs of ``node`` may be host tensors rather than a shape error."""
    if node.domain == "" and (node.op_type in DATA_DEPENDENT_OPS or node.op_type in CONTROL_FLOW_OPS):
        return True
    read = node.present_inputs + [graph.values[n] for n in node.outer_scope_names() if n in graph.values] \
        if node.has_subgraph else node.present_inputs
    return any(v.host is not None for v in read)


def _dropout_mask_shape(node: Node) -> None:
    # ONNX's Dropout inference types the optional mask but leaves its shape open: it is the data's.
    if len(node.outputs) > 1 and node.outputs[1].shape is None and node.inputs[0] is not None:
        node.outputs[1].shape = node.inputs[0].shape


def _attention_present_shapes(node: Node) -> None:
    """Attention's present_key/present_value (outputs 1, 2): ONNX types them only when past_key/past_value
    are given, yet a model may omit them and use qk_matmul_output (3), leaving them untyped. Their shape is
    the spec's (batch, kv_num_heads, past_sequence + kv_sequence, head_size), their type that of K/V."""
    for output, source, past in ((1, 1, 4), (2, 2, 5)):
        if len(node.outputs) <= output or is_static(node.outputs[output]) or len(node.inputs) <= source:
            continue
        kv = node.inputs[source]
        if kv is None or not is_static(kv) or len(kv.shape) not in (3, 4):
            continue
        if len(kv.shape) == 4:
            batch, heads, sequence, head_size = kv.shape
        else:  # (batch, sequence, heads * head_size)
            heads = node.attrs.get("kv_num_heads", 0)
            if not heads or kv.shape[2] % heads:
                continue
            batch, sequence, head_size = kv.shape[0], kv.shape[1], kv.shape[2] // heads
        cache = node.inputs[past] if len(node.inputs) > past else None
        past_sequence = 0
        if cache is not None:
            if not is_static(cache) or len(cache.shape) != 4:
                continue
            past_sequence = cache.shape[2]
        node.outputs[output].dtype = node.outputs[output].dtype or kv.dtype
        node.outputs[output].shape = (batch, heads, past_sequence + sequence, head_size)


# Outputs whose shape ONNX's inference leaves open although it follows from the input shapes alone.
_SHAPE_RULES = {"Dropout": _dropout_mask_shape, "Attention": _attention_present_shapes}


def make_static(graph: Graph, ir_version: int) -> None:
    """Resolve every open shape of a freshly built graph in place, or raise ShapeError."""
    ShapeResolver(graph, ir_version).run()


# Bound on the If nodes inlined for one import (each inlined branch may hold further Ifs).
_MAX_INLINED_BRANCHES = 256


def static_graph(work: onnx.ModelProto, strict: bool = True) -> Graph:
    """Infer, build and make static; an If whose condition turns out constant is replaced by its branch in
    ``work`` and the import starts again (see hetc.frontend.subgraphs). ``strict``: see ``infer_shapes``."""
    for _ in range(_MAX_INLINED_BRANCHES):
        graph = build_graph(infer_shapes(work, strict), work.graph.initializer)
        try:
            make_static(graph, work.ir_version)
            return graph
        except ConstantBranch as choice:
            inline_branch(work.graph, choice.index, choice.branch)
    raise ShapeError(f"more than {_MAX_INLINED_BRANCHES} If nodes with a constant condition; hetc stops "
                     "inlining their branches here: simplify the model (e.g. with onnx-simplifier)")


def specialized_branch(branch: onnx.GraphProto, outer: list[onnx.ValueInfoProto],
                       constants: list[onnx.TensorProto], opset: dict[str, int], ir_version: int) -> onnx.GraphProto:
    """``branch`` (of an If kept in the graph) with the Ifs nested in it whose condition the static types of
    the outer values it reads (``outer``) and the data of ``constants`` fix replaced by the branch they take,
    recursively: the branch is imported as a model of its own. Exact whatever the import then meets (a shape
    it cannot close stops it, keeping what it inlined so far); ``branch`` itself if nothing changed.
    ShapesRejected if an operator of the branch (once specialised) rejects the shapes it gets."""
    if not any(n.op_type == "If" and n.domain in ("", "ai.onnx") for n in branch.node):
        return branch
    graph = helper.make_graph(list(branch.node), branch.name, list(outer), list(branch.output),
                              list(branch.initializer) + list(constants))
    graph.sparse_initializer.extend(branch.sparse_initializer)
    work = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])
    work.ir_version = ir_version
    try:
        imported = static_graph(work, strict=False)
    except ShapesRejected:
        raise
    except HetcError:
        imported = None
    if imported is not None:  # keep the specialisation of the Ifs that stay (their bodies, recursively)
        for node in imported.nodes:
            if node.has_subgraph and node.id < len(work.graph.node):
                proto = work.graph.node[node.id]
                del proto.attribute[:]
                proto.attribute.extend(make_attribute(k, a) for k, a in node.attrs.items())
    if len(work.graph.node) == len(branch.node) and imported is None:
        return branch
    specialized = onnx.GraphProto()
    specialized.CopyFrom(branch)
    outer_constants = {t.name for t in constants}
    del specialized.node[:], specialized.initializer[:], specialized.value_info[:], specialized.sparse_initializer[:]
    specialized.node.extend(work.graph.node)
    specialized.initializer.extend(t for t in work.graph.initializer if t.name not in outer_constants)
    specialized.sparse_initializer.extend(work.graph.sparse_initializer)
    return specialized
