"""ONNX -> IR: the public entry points of the frontend."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from hetc.errors import ModelError, ShapeError
from hetc.frontend.builder import is_static
from hetc.frontend.contrib import lower_contrib_ops
from hetc.frontend.functions import spell_out_referenced_defaults
from hetc.frontend.loader import (check_model, convert_opset, inline_functions, load_external_data,
                                  read_model_file)
from hetc.frontend.overrides import apply_overrides, require_static_inputs
from hetc.frontend.prelu import check_slopes, per_channel_slopes
from hetc.frontend.static_shapes import OMITTED_SUFFIX, static_graph
from hetc.frontend.subgraphs import carry_captured_values, loop_capturing_if
from hetc.ir import Graph, Value, tensor_host_type


def load_onnx(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None,
              dims: dict[str, int] | None = None) -> Graph:
    """Read an ONNX file (external data next to it) and import it; see ``import_model``."""
    path = Path(path)
    model = read_model_file(path)
    graph = import_model(model, shapes=shapes, dims=dims, base_dir=path.parent)
    graph.metadata.setdefault("source", str(path))
    return graph


def import_model(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None,
                 dims: dict[str, int] | None = None, base_dir: str | Path | None = None) -> Graph:
    """A Graph with static shapes everywhere, computing what ``model`` computes.

    ``shapes`` replaces the whole shape of named graph inputs, ``dims`` gives a size to a symbolic
    dimension wherever it appears. ``model`` itself is left untouched. Nodes are numbered 0..n-1 in
    topological order; ONNX node and value names are kept (a nameless node becomes ``<op>_<id>``).
    """
    if not isinstance(model, onnx.ModelProto):
        raise ModelError(f"import_model expects an onnx.ModelProto, not {type(model).__name__}; "
                         "use load_onnx(path) for a file")
    work = onnx.ModelProto()
    work.CopyFrom(model)
    load_external_data(work, base_dir)
    check_model(work)
    work = inline_functions(work)
    per_channel_slopes(work)
    work = convert_opset(work)
    work = lower_contrib_ops(work)
    spell_out_referenced_defaults(work.graph, {o.domain: o.version for o in work.opset_import})
    _promote_initializers(work)
    _name_omitted_outputs(work.graph)
    apply_overrides(work.graph, shapes, dims)
    require_static_inputs(work.graph)
    graph = static_graph(work)
    _loop_capturing_ifs(graph)
    if any([carry_captured_values(n, graph.values) for n in graph.nodes if n.has_subgraph]):
        graph.relink()
    check_slopes(graph)
    _finish(graph)
    return graph


def _loop_capturing_ifs(graph: Graph) -> None:
    """Replace each If that reads run-time outer values by a one-trip Loop carrying them (see
    hetc.frontend.subgraphs.loop_capturing_if): the CPU runs control flow in a session without outer scope."""
    nodes, next_id, changed = [], max((n.id for n in graph.nodes), default=-1) + 1, False
    for node in graph.nodes:
        replacement = loop_capturing_if(node, graph.values, graph.opset) if node.has_subgraph else None
        if replacement is None:
            nodes.append(node)
            continue
        for new in replacement:
            new.id, next_id = next_id, next_id + 1
        nodes.extend(replacement)
        changed = True
    if changed:
        graph.nodes = nodes
        graph.relink()


def _promote_initializers(model: onnx.ModelProto) -> None:
    """Treat initializers as constants: IR < 4 lists them among the inputs (as overridable defaults);
    hetc compiles for fixed weights, and shape inference only sees constants that are not inputs."""
    initialized = {t.name for t in model.graph.initializer}
    kept = [v for v in model.graph.input if v.name not in initialized]
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)
    model.ir_version = max(model.ir_version, 4)


def _name_omitted_outputs(graph: onnx.GraphProto) -> None:
    """Drop trailing omitted optional outputs; name the ones in the middle so every IR output is a Value."""
    for index, node in enumerate(graph.node):
        if all(node.output):
            continue
        names = list(node.output)
        while names and not names[-1]:
            names.pop()
        del node.output[:]
        node.output.extend(n or f"{node.name or node.op_type}_{index}{OMITTED_SUFFIX}{i}" for i, n in enumerate(names))


def _close_host_value(value: Value) -> None:
    """Settle a host value's type: a host tensor's type takes its final dtype and (partial) shape; ``shape``
    keeps the static shape when every dim is known (a string tensor usually), else ``()``."""
    if value.host.kind == "tensor":
        shape = None if value.shape is None else tuple(None if d is None else int(d) for d in value.shape)
        value.host = tensor_host_type(value.dtype, shape)
    static = value.host.static_shape
    value.shape = static if static is not None else ()
    value.dtype = value.host.element_dtype or ""
    value.const = None


def _finish(graph: Graph) -> None:
    """Renumber nodes in topological order, name nameless nodes, and make dims plain ints."""
    for index, node in enumerate(graph.nodes):
        node.id = index
        node.name = node.name or f"{node.op_type}_{index}"
    for value in graph.values.values():
        if value.host is not None:
            _close_host_value(value)
            continue
        if not is_static(value):
            raise ShapeError(f"value '{value.name}' has no static shape after import; "
                             "fix the model's shapes or give overrides with --shape/--dim")
        value.shape = tuple(int(d) for d in value.shape)
        if value.const is not None:
            value.const = np.asarray(value.const)
